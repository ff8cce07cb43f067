//! Every supported shape of function.
use std::fmt::Debug;
use std::sync::Arc;

use cachestack::{cached, invalidate, Cacheable};

#[cached]
fn by_value(a: u64, b: String) -> String {
    format!("{a}{b}")
}

#[cached]
fn by_reference(a: &str, b: &[u8], c: &Vec<u32>) -> usize {
    a.len() + b.len() + c.len()
}

#[cached(key = "lt:<a>")]
fn with_lifetime<'a>(a: &'a str) -> String {
    a.to_string()
}

#[cached]
fn impl_trait_argument(a: impl AsRef<str> + Debug) -> usize {
    a.as_ref().len()
}

#[cached]
fn destructured((a, b): (u8, u8), [c, d]: [u8; 2], mut e: u8) -> u8 {
    e += 1;
    a + b + c + d + e
}

#[cached]
fn generic<T: Cacheable + Debug, const N: usize>(values: [T; N]) -> Vec<T> {
    values.to_vec()
}

#[cached]
fn generic_where<T>(value: T) -> T
where
    T: Cacheable + Debug,
{
    value
}

#[cached]
fn no_arguments() -> u8 {
    1
}

#[cached]
fn unit_return(n: u8) {
    let _ = n;
}

#[cached]
async fn asynchronous(a: &str, n: u32) -> Result<String, std::io::Error> {
    Ok(a.repeat(n as usize))
}

#[cached]
pub(crate) fn restricted_visibility(n: u8) -> u8 {
    n
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Repo {
    tenant: u32,
}

impl Repo {
    #[cached]
    fn method(&self, id: u64) -> u64 {
        id + u64::from(self.tenant)
    }

    #[cached(key = "<self.tenant>:<id>")]
    fn method_with_receiver_field(&self, id: u64) -> u64 {
        id
    }

    #[cached]
    fn by_value_receiver(self, id: u64) -> u64 {
        id + u64::from(self.tenant)
    }

    #[cached]
    fn arc_receiver(self: Arc<Self>, id: u64) -> u64 {
        id
    }

    #[cached]
    async fn async_method(&self, id: u64) -> Option<u64> {
        Some(id)
    }

    #[cached]
    fn constructor(tenant: u32) -> Self {
        Repo { tenant }
    }

    #[cached(in_impl)]
    fn associated(id: u64) -> u64 {
        id
    }

    #[cached]
    fn generic_method<T: Cacheable + Debug>(&self, value: T) -> T {
        value
    }

    #[invalidate(key = "<self.tenant>:<id>")]
    fn invalidating_method(&self, id: u64) {
        let _ = id;
    }
}

struct Wrapper<T>(T);

impl<T: Sync + Debug> Wrapper<T> {
    #[cached]
    fn in_generic_impl(&self, n: u8) -> String {
        format!("{:?}{n}", self.0)
    }
}

#[invalidate(key = "lt:<a>")]
async fn invalidating_async(a: &str) -> Result<(), String> {
    let _ = a;
    Ok(())
}

fn main() {
    assert_eq!(by_value(1, "a".into()), "1a");
    assert_eq!(by_reference("ab", b"c", &vec![1]), 4);
    assert_eq!(with_lifetime("x"), "x");
    assert_eq!(impl_trait_argument("abc"), 3);
    assert_eq!(destructured((1, 2), [3, 4], 5), 16);
    assert_eq!(generic([1u8, 2]), vec![1, 2]);
    assert_eq!(generic_where(7i64), 7);
    assert_eq!(no_arguments(), 1);
    unit_return(1);
    assert_eq!(restricted_visibility(2), 2);
    let repo = Repo { tenant: 1 };
    assert_eq!(repo.method(1), 2);
    assert_eq!(repo.method_with_receiver_field(1), 1);
    assert_eq!(repo.clone().by_value_receiver(1), 2);
    assert_eq!(Arc::new(repo.clone()).arc_receiver(1), 1);
    assert_eq!(Repo::constructor(2).tenant, 2);
    assert_eq!(Repo::associated(3), 3);
    assert_eq!(repo.generic_method("s".to_string()), "s");
    repo.invalidating_method(1);
    assert_eq!(Wrapper(1).in_generic_impl(2), "12");

    // The companions of each shape.
    assert!(by_value_key(&1, &"a".into()).ends_with("::by_value(1,\"a\")"));
    assert!(by_reference_invalidate("ab", b"c", &vec![1]).unwrap());
    assert_eq!(destructured_refresh((1, 2), [3, 4], 5), 16);
    assert_eq!(generic_stats().misses, 1);
    assert!(repo.method_key(&1).ends_with("::Repo::method(1)"));
    assert_eq!(Repo::method_stats().misses, 1);

    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        assert_eq!(asynchronous("a", 2).await.unwrap(), "aa");
        assert!(asynchronous_invalidate("a", &2).await.unwrap());
        assert_eq!(repo.async_method(1).await, Some(1));
        assert_eq!(repo.async_method_refresh(1).await, Some(1));
        invalidating_async("x").await.unwrap();
    });
}
