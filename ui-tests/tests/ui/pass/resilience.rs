//! Every shape of function with resilience options: borrowed arguments where the body only runs
//! for its caller, owned ones (cloned into the background computation) where it may run after;
//! methods with `&self` and `self: Arc<Self>`; `Option`, `Result` and plain returns; `condition`;
//! generics; destructuring; `<fn>_with_status` and `<fn>_refresh`.
use std::sync::Arc;

use cachestack::{cached, CallStatus, Cacheable};

#[cached(ttl = "5m", stale_if_error = "1h", stale_throttle = "30s", jitter = "10%", lock_timeout = "5s")]
fn borrowed(name: &str, ids: &[u64]) -> Result<String, cachestack::Error> {
    Ok(format!("{name}{}", ids.len()))
}

#[cached(ttl = "5m", stale_if_error = "1h", hard_timeout = "2s")]
async fn borrowed_async_hard_timeout<'a>(name: &'a str) -> Result<String, cachestack::Error> {
    Ok(name.to_string())
}

#[cached(ttl = "5m", stale_if_error = "1h", stale_while_revalidate = "30s", refresh_ahead = "80%", timeout = "200ms", hard_timeout = "2s")]
async fn owned_async(name: String, id: u64) -> Result<String, cachestack::Error> {
    Ok(format!("{name}{id}"))
}

#[cached(ttl = "5m", refresh_ahead = "4m", hard_timeout = "2s")]
fn owned_sync(name: String) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    Ok(name)
}

#[cached(ttl = "5m", stale_while_revalidate = "30s", cache_none = false)]
fn option_return((a, b): (u8, u8), mut c: u8) -> Option<u8> {
    c += 1;
    (a > 0).then_some(a + b + c)
}

#[cached(ttl = "5m", refresh_ahead = "80%", condition = |v: &u64| *v > 1)]
fn plain_with_condition(n: u64) -> u64 {
    n
}

#[cached(ttl = "5m", stale_if_error = "1h")]
fn generic<T: Cacheable + std::fmt::Debug>(value: T) -> T {
    value
}

#[derive(Clone)]
struct Repo {
    tenant: u64,
}

impl Repo {
    #[cached(ttl = "5m", stale_if_error = "1h", key = "repo:<self.tenant>:<id>")]
    fn borrowed_self(&self, id: u64) -> Result<u64, cachestack::Error> {
        Ok(self.tenant + id)
    }

    #[cached(ttl = "5m", stale_while_revalidate = "30s", key = "repo-arc:<self.tenant>:<id>")]
    async fn arc_self(self: Arc<Self>, id: u64) -> u64 {
        self.tenant * id
    }
}

fn main() {
    assert_eq!(borrowed("a", &[1, 2]).unwrap(), "a2");
    assert_eq!(borrowed_with_status("a", &[1, 2]).1, CallStatus::Hit);
    assert_eq!(owned_sync("x".into()).unwrap(), "x");
    assert_eq!(option_return((1, 2), 3), Some(7));
    assert_eq!(option_return((0, 2), 3), None);
    assert_eq!(plain_with_condition(5), 5);
    assert_eq!(plain_with_condition_refresh(5), 5);
    assert_eq!(generic(3u8), 3);
    let repo = Repo { tenant: 2 };
    assert_eq!(repo.borrowed_self(1).unwrap(), 3);
    assert_eq!(repo.borrowed_self_with_status(1).1, CallStatus::Hit);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        assert_eq!(borrowed_async_hard_timeout("n").await.unwrap(), "n");
        assert_eq!(owned_async("a".into(), 1).await.unwrap(), "a1");
        let (value, status) = owned_async_with_status("a".into(), 1).await;
        assert_eq!((value.unwrap().as_str(), status), ("a1", CallStatus::Hit));
        assert_eq!(Arc::new(repo).arc_self(3).await, 6);
    });
}
