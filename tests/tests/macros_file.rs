//! The macros over the file backend (the default cache of this test binary): shapes, the
//! Result/Option rules, condition, ttl, namespace and version, invalidation, companions and
//! single flight, all through bytes on disk.
#![allow(clippy::unwrap_used)]

use std::fmt::Debug;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::Duration;

use cachestack::{cached, invalidate, Cache, CacheRegistry, Cacheable, FileBackend};
use cachestack_tests::sync::{spin_until, yield_until};

/// The file cache, made the default before any cached function runs.
fn files() -> &'static Cache {
    static FILES: OnceLock<(tempfile::TempDir, Cache)> = OnceLock::new();
    &FILES
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let cache = Cache::new(FileBackend::open(dir.path()).unwrap());
            CacheRegistry::global().set_default(cache.clone());
            (dir, cache)
        })
        .1
}

fn stored<V: Cacheable>(key: &str) -> Option<V> {
    files().get_blocking::<V>(key).unwrap()
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Profile {
    id: u64,
    tags: Vec<String>,
}

static RUNS: AtomicUsize = AtomicUsize::new(0);

fn run() {
    RUNS.fetch_add(1, SeqCst);
}

#[cached(ttl = "1h", key = "profile:<id>")]
fn profile(id: u64, tag: &str) -> Profile {
    run();
    Profile { id, tags: vec![tag.to_string()] }
}

#[cached]
async fn profile_async(id: u64) -> Profile {
    run();
    Profile { id, tags: vec![] }
}

#[cached]
fn generic_len<T: Cacheable + Debug>(items: Vec<T>) -> usize {
    run();
    items.len()
}

struct Shop {
    region: &'static str,
}

impl Shop {
    #[cached(namespace = "shop", version = 2, key = "<self.region>:price:<item>")]
    fn price(&self, item: &str) -> u64 {
        run();
        item.len() as u64 * 100
    }
}

#[test]
fn shapes_round_trip_through_files() {
    files();
    let before = RUNS.load(SeqCst);
    assert_eq!(profile(1, "a").tags, ["a"]);
    assert_eq!(profile(1, "ignored").tags, ["a"], "the template ignores the tag");
    assert_eq!(stored::<Profile>("profile:1").unwrap().id, 1);
    assert_eq!(generic_len(vec![1u8, 2]), 2);
    assert_eq!(generic_len(vec![1u8, 2]), 2);
    let shop = Shop { region: "eu" };
    assert_eq!(shop.price("tea"), 300);
    assert_eq!(shop.price("tea"), 300);
    assert_eq!(stored::<u64>("shop:v2:eu:price:tea"), Some(300));
    assert_eq!(RUNS.load(SeqCst) - before, 3);

    let ttl = files().get_with_ttl::<Profile>("profile:1").await_blocking().unwrap().unwrap().1.unwrap();
    assert!(ttl <= Duration::from_secs(3600) && ttl > Duration::from_secs(1800), "{ttl:?}");
}

/// Reads through the blocking bridge (the test is synchronous).
trait AwaitBlocking {
    type Output;
    fn await_blocking(self) -> Self::Output;
}

impl<F: std::future::Future + Send + 'static> AwaitBlocking for F
where
    F::Output: Send + 'static,
{
    type Output = F::Output;
    fn await_blocking(self) -> F::Output {
        cachestack::rt::block_on(self).unwrap()
    }
}

#[tokio::test]
async fn async_shapes_round_trip_through_files() {
    files();
    assert_eq!(profile_async(5).await.id, 5);
    assert_eq!(profile_async(5).await.id, 5);
    assert_eq!(profile_async_stats().hits, 1);
    let key = profile_async_key(&5);
    assert_eq!(key, "macros_file::profile_async(5)");
    assert!(files().get::<Profile>(&key).await.unwrap().is_some());
    assert!(profile_async_invalidate(&5).await.unwrap());
    assert!(files().get::<Profile>(&key).await.unwrap().is_none());
}

static RULE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(key = "rules:result:<n>")]
fn result_rule(n: u32) -> Result<u32, String> {
    RULE_RUNS.fetch_add(1, SeqCst);
    if n == 0 {
        Err("zero".into())
    } else {
        Ok(n)
    }
}

#[cached(key = "rules:cache-err:<n>", cache_err = true)]
fn cache_err_rule(n: u32) -> Result<u32, String> {
    RULE_RUNS.fetch_add(1, SeqCst);
    Err(format!("no {n}"))
}

#[cached(key = "rules:none:<n>")]
async fn none_rule(n: u32) -> Option<u32> {
    RULE_RUNS.fetch_add(1, SeqCst);
    (n > 0).then_some(n)
}

#[cached(key = "rules:no-none:<n>", cache_none = false)]
fn no_none_rule(n: u32) -> Option<u32> {
    RULE_RUNS.fetch_add(1, SeqCst);
    (n > 0).then_some(n)
}

#[cached(key = "rules:condition:<n>", condition = |v: &u32| v.is_multiple_of(2))]
fn condition_rule(n: u32) -> u32 {
    RULE_RUNS.fetch_add(1, SeqCst);
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_option_and_condition_rules_hold_on_files() {
    files();
    let sync = tokio::task::spawn_blocking(|| {
        assert!(result_rule(0).is_err());
        assert!(stored::<u32>("rules:result:0").is_none());
        assert_eq!(result_rule(3), Ok(3));
        assert_eq!(stored::<u32>("rules:result:3"), Some(3));

        assert!(cache_err_rule(1).is_err());
        assert_eq!(stored::<Result<u32, String>>("rules:cache-err:1"), Some(Err("no 1".into())));

        assert_eq!(no_none_rule(0), None);
        assert!(stored::<Option<u32>>("rules:no-none:0").is_none());

        condition_rule(3);
        condition_rule(4);
        assert!(stored::<u32>("rules:condition:3").is_none());
        assert_eq!(stored::<u32>("rules:condition:4"), Some(4));
    });
    sync.await.unwrap();
    assert_eq!(none_rule(0).await, None);
    assert_eq!(files().get::<Option<u32>>("rules:none:0").await.unwrap(), Some(None));
}

#[invalidate(key = "profile:<id>")]
fn forget_profile(id: u64) -> Result<(), String> {
    let _ = id;
    Ok(())
}

#[invalidate(key = "profile:<id>", before = true)]
async fn forget_profile_async(id: u64) {
    let _ = id;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_and_refresh_on_files() {
    files();
    tokio::task::spawn_blocking(|| {
        profile(9, "x");
        assert!(stored::<Profile>("profile:9").is_some());
        forget_profile(9).unwrap();
        assert!(stored::<Profile>("profile:9").is_none());
        assert_eq!(profile_refresh(9, "y").tags, ["y"]);
        assert_eq!(stored::<Profile>("profile:9").unwrap().tags, ["y"]);
    })
    .await
    .unwrap();
    forget_profile_async(9).await;
    assert!(files().get::<Profile>("profile:9").await.unwrap().is_none());
}

static FLIGHT_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(key = "flight")]
fn flight() -> Profile {
    FLIGHT_RUNS.fetch_add(1, SeqCst);
    spin_until(|| flight_stats().waits >= 15);
    Profile { id: 0, tags: vec!["once".into()] }
}

static ASYNC_FLIGHT_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(key = "async-flight")]
async fn async_flight() -> Profile {
    ASYNC_FLIGHT_RUNS.fetch_add(1, SeqCst);
    yield_until(|| async_flight_stats().waits >= 99).await;
    Profile { id: 1, tags: vec!["once".into()] }
}

#[test]
fn single_flight_on_files() {
    files();
    let start = Arc::new(Barrier::new(16));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                flight()
            })
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap().tags, ["once"]);
    }
    assert_eq!(FLIGHT_RUNS.load(SeqCst), 1);

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    rt.block_on(async {
        let callers: Vec<_> = (0..100).map(|_| tokio::spawn(async_flight())).collect();
        for caller in callers {
            assert_eq!(caller.await.unwrap().tags, ["once"]);
        }
    });
    assert_eq!(ASYNC_FLIGHT_RUNS.load(SeqCst), 1);
}
