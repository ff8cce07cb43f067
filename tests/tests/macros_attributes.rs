//! Every `#[cached]` attribute end to end: ttl, key templates, condition, the Result and Option
//! rules and their options, cache, namespace and version, on_cache_error (reads and writes that
//! fail), crate; and hygiene.
#![allow(clippy::unwrap_used)]

mod macros_support;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use cachestack::{cached, CacheRegistry, Error};
use cachestack_tests::errors::AppError;
use cachestack_tests::faults::{Down, Flaky};
use macros_support::{assert_ttl, register, register_memory, AsyncOnly};

// ---- ttl ------------------------------------------------------------------------------------

const TTL: Duration = Duration::from_secs(42);

#[cached(cache = "ttl-recorder", ttl = "2h30m", key = "ttl:str:<id>")]
fn ttl_string(id: u32) -> u32 {
    id
}

#[cached(cache = "ttl-recorder", ttl = "250ms", key = "ttl:ms:<id>")]
fn ttl_millis(id: u32) -> u32 {
    id
}

#[cached(cache = "ttl-recorder", ttl = Duration::from_millis(1500), key = "ttl:expr:<id>")]
fn ttl_expression(id: u32) -> u32 {
    id
}

#[cached(cache = "ttl-recorder", ttl = TTL, key = "ttl:const:<id>")]
async fn ttl_constant(id: u32) -> u32 {
    id
}

#[cached(cache = "ttl-recorder", key = "ttl:none:<id>")]
fn ttl_none(id: u32) -> u32 {
    id
}

#[tokio::test]
async fn ttl_reaches_the_backend_on_every_write() {
    let recorder = register("ttl-recorder", AsyncOnly::default());
    ttl_string(1);
    ttl_millis(1);
    ttl_expression(1);
    ttl_constant(1).await;
    ttl_none(1);
    assert_ttl(recorder.ttl_of("ttl:str:1"), Some(Duration::from_secs(9000)));
    assert_ttl(recorder.ttl_of("ttl:ms:1"), Some(Duration::from_millis(250)));
    assert_ttl(recorder.ttl_of("ttl:expr:1"), Some(Duration::from_millis(1500)));
    assert_ttl(recorder.ttl_of("ttl:const:1"), Some(TTL));
    assert_ttl(recorder.ttl_of("ttl:none:1"), None);
}

#[cached(cache = "ttl-memory", ttl = "1h", key = "hour")]
fn for_an_hour() -> u8 {
    1
}

#[test]
fn the_memory_cache_keeps_the_ttl() {
    let cache = register_memory("ttl-memory");
    for_an_hour();
    // The result is in the function's typed partition of the memory cache.
    let memory = cache.backend().as_memory().unwrap();
    let [left] = memory.front_ttls()[..] else { panic!("one entry expected") };
    let left = left.unwrap();
    assert!(left <= Duration::from_secs(3600) && left > Duration::from_secs(1800), "{left:?}");
}

// ---- key templates --------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Org {
    name: String,
}

#[derive(Debug, Clone)]
struct User {
    id: u64,
    org: Org,
}

static DESCRIBE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(key = "user:<user.id>:org:<user.org.name>")]
fn describe(user: &User) -> String {
    DESCRIBE_RUNS.fetch_add(1, SeqCst);
    format!("{} at {}", user.id, user.org.name)
}

#[cached(key = "pair:<pair.0>-<pair.1>")]
fn pair(pair: (u32, u32)) -> u32 {
    pair.0 * pair.1
}

#[cached(key = "a<<b>:<n>")]
fn angle(n: u32) -> u32 {
    n
}

#[cached(key = "constant")]
fn constant() -> String {
    "same".into()
}

#[test]
fn templates_render_fields_and_literal_angles() {
    let ada = User { id: 1, org: Org { name: "acme".into() } };
    assert_eq!(describe(&ada), "1 at acme");
    assert_eq!(describe(&ada.clone()), "1 at acme");
    assert_eq!(DESCRIBE_RUNS.load(SeqCst), 1);
    assert_eq!(describe_key(&ada), "user:1:org:acme");
    assert_eq!(pair((3, 4)), 12);
    assert_eq!(pair_key(&(3, 4)), "pair:3-4");
    assert_eq!(angle_key(&5), "a<b>:5");
    assert_eq!(constant_key(), "constant");
    assert_eq!(constant(), "same");
    assert_eq!(constant(), "same");
    assert_eq!(constant_stats().hits, 1);
}

// ---- condition ------------------------------------------------------------------------------

static BIG_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(condition = |n: &u64| *n > 10)]
fn big_only(n: u64) -> u64 {
    BIG_RUNS.fetch_add(1, SeqCst);
    n
}

static EVEN_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(condition = |r| matches!(r, Ok(n) if n % 2 == 0))]
async fn even_only(n: u32) -> Result<u32, String> {
    EVEN_RUNS.fetch_add(1, SeqCst);
    Ok(n)
}

#[tokio::test]
async fn condition_decides_what_is_stored() {
    big_only(5);
    big_only(5);
    assert_eq!(BIG_RUNS.load(SeqCst), 2);
    big_only(50);
    big_only(50);
    assert_eq!(BIG_RUNS.load(SeqCst), 3);

    even_only(3).await.unwrap();
    even_only(3).await.unwrap();
    even_only(4).await.unwrap();
    even_only(4).await.unwrap();
    assert_eq!(EVEN_RUNS.load(SeqCst), 3);
}

// ---- Result and Option ----------------------------------------------------------------------

static RESULT_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached]
fn fallible(n: u32) -> Result<u32, String> {
    RESULT_RUNS.fetch_add(1, SeqCst);
    if n == 0 {
        return Err("zero".into());
    }
    Ok(n)
}

static CACHE_ERR_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache_err = true)]
fn fallible_cached_err(n: u32) -> Result<u32, String> {
    CACHE_ERR_RUNS.fetch_add(1, SeqCst);
    if n == 0 {
        Err("zero".into())
    } else {
        Ok(n)
    }
}

type Res<T> = std::result::Result<T, String>;
static ALIAS_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached]
fn through_alias(n: u32) -> Res<u32> {
    ALIAS_RUNS.fetch_add(1, SeqCst);
    if n == 0 {
        Err("zero".into())
    } else {
        Ok(n)
    }
}

static IO_RUNS: AtomicUsize = AtomicUsize::new(0);

/// `std::io::Error` is neither `Clone` nor serde: errors need no bound since they are not cached.
#[cached]
fn read_config(name: &str) -> std::io::Result<String> {
    IO_RUNS.fetch_add(1, SeqCst);
    if name.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no name"));
    }
    Ok(format!("config {name}"))
}

#[test]
fn only_ok_is_cached_by_default() {
    assert!(fallible(0).is_err());
    assert!(fallible(0).is_err());
    assert_eq!(RESULT_RUNS.load(SeqCst), 2);
    assert_eq!(fallible(1), Ok(1));
    assert_eq!(fallible(1), Ok(1));
    assert_eq!(RESULT_RUNS.load(SeqCst), 3);

    assert!(through_alias(0).is_err());
    assert!(through_alias(0).is_err());
    assert_eq!(ALIAS_RUNS.load(SeqCst), 2);

    assert!(read_config("").is_err());
    assert!(read_config("").is_err());
    assert_eq!(read_config("a").unwrap(), "config a");
    assert_eq!(read_config("a").unwrap(), "config a");
    assert_eq!(IO_RUNS.load(SeqCst), 3);
}

#[test]
fn cache_err_caches_errors_too() {
    assert_eq!(fallible_cached_err(0), Err("zero".into()));
    assert_eq!(fallible_cached_err(0), Err("zero".into()));
    assert_eq!(CACHE_ERR_RUNS.load(SeqCst), 1);
}

static OPTION_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached]
fn find(n: u32) -> Option<u32> {
    OPTION_RUNS.fetch_add(1, SeqCst);
    (n > 0).then_some(n)
}

static NO_NONE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache_none = false)]
async fn find_no_none(n: u32) -> Option<u32> {
    NO_NONE_RUNS.fetch_add(1, SeqCst);
    (n > 0).then_some(n)
}

#[tokio::test]
async fn none_is_cached_unless_cache_none_is_false() {
    assert_eq!(find(0), None);
    assert_eq!(find(0), None);
    assert_eq!(OPTION_RUNS.load(SeqCst), 1);

    assert_eq!(find_no_none(0).await, None);
    assert_eq!(find_no_none(0).await, None);
    assert_eq!(NO_NONE_RUNS.load(SeqCst), 2);
    assert_eq!(find_no_none(2).await, Some(2));
    assert_eq!(find_no_none(2).await, Some(2));
    assert_eq!(NO_NONE_RUNS.load(SeqCst), 3);
}

// ---- cache, namespace, version ----------------------------------------------------------------

static NAMED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = "named-memory", key = "named:<n>")]
fn in_named_cache(n: u32) -> u32 {
    NAMED_RUNS.fetch_add(1, SeqCst);
    n * 2
}

#[tokio::test]
async fn cache_selects_a_registered_cache() {
    let cache = register_memory("named-memory");
    assert_eq!(in_named_cache(3), 6);
    assert_eq!(in_named_cache(3), 6);
    assert_eq!(NAMED_RUNS.load(SeqCst), 1);
    assert_eq!(cache.stats().entries, Some(1), "the result is in the registered cache");
    // Re-registering the name is seen by the function (the registry generation moved): the new
    // cache is empty, so the function runs again and fills it.
    let replacement = register_memory("named-memory");
    assert_eq!(in_named_cache(3), 6);
    assert_eq!(NAMED_RUNS.load(SeqCst), 2);
    assert_eq!(in_named_cache(3), 6);
    assert_eq!(NAMED_RUNS.load(SeqCst), 2);
    assert_eq!(replacement.stats().entries, Some(1));
}

#[cached(namespace = "users", version = 3, key = "u:<id>")]
fn versioned(id: u32) -> u32 {
    id
}

#[cached(namespace = "ns")]
fn namespaced_default(a: u8) -> u8 {
    a
}

#[cached(version = "2024-06")]
fn string_version(a: u8) -> u8 {
    a
}

#[test]
fn namespace_and_version_prefix_every_key() {
    assert_eq!(versioned_key(&1), "users:v3:u:1");
    assert_eq!(namespaced_default_key(&1), "ns:macros_attributes::namespaced_default(1)");
    assert_eq!(string_version_key(&1), "v2024-06:macros_attributes::string_version(1)");
    assert_eq!(versioned(1), 1);
    assert_eq!(versioned(1), 1);
    assert_eq!(versioned_stats().hits, 1);
}

// ---- cache failures ---------------------------------------------------------------------------

static LENIENT_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = "down-lenient")]
fn lenient(n: u32) -> Result<u32, AppError> {
    LENIENT_RUNS.fetch_add(1, SeqCst);
    Ok(n)
}

static STRICT_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = "down-strict", on_cache_error = "propagate")]
fn strict(n: u32) -> Result<u32, AppError> {
    STRICT_RUNS.fetch_add(1, SeqCst);
    Ok(n)
}

#[cached(cache = "down-strict", on_cache_error = "propagate")]
async fn strict_async(n: u32) -> Result<u32, AppError> {
    Ok(n)
}

#[cached(cache = "down-lenient")]
async fn lenient_async(n: u32) -> u32 {
    n
}

#[test]
fn a_failing_cache_is_called_through_by_default() {
    let down = register("down-lenient", Down::default());
    assert_eq!(lenient(1).unwrap(), 1);
    assert_eq!(lenient(1).unwrap(), 1);
    assert_eq!(LENIENT_RUNS.load(SeqCst), 2);
    // Each call: the read failed and the write failed.
    assert_eq!(lenient_stats().errors, 4);
    assert_eq!(down.calls.load(SeqCst), 4);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert_eq!(rt.block_on(lenient_async(2)), 2);
}

#[tokio::test]
async fn on_cache_error_propagate_returns_the_failure() {
    register("down-strict", Down::default());
    assert!(matches!(strict(1), Err(AppError::Cache(Error::BackendUnavailable { .. }))));
    // The read failed, so the body never ran.
    assert_eq!(STRICT_RUNS.load(SeqCst), 0);
    assert!(matches!(strict_async(1).await, Err(AppError::Cache(Error::BackendUnavailable { .. }))));
}

#[cached(cache = "never-registered")]
fn orphan(n: u32) -> u32 {
    n
}

#[cached(cache = "never-registered", on_cache_error = "propagate")]
fn strict_orphan(n: u32) -> Result<u32, AppError> {
    Ok(n)
}

#[test]
fn an_unknown_cache_name_is_a_cache_failure() {
    assert_eq!(orphan(1), 1);
    assert_eq!(orphan(1), 1);
    assert_eq!(orphan_stats().errors, 2);
    assert!(CacheRegistry::global().get("never-registered").is_err());
    assert!(matches!(strict_orphan(1), Err(AppError::Cache(Error::UnknownCache { .. }))));
}

static READS_FAIL_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = "flaky-reads")]
fn reads_fail(n: u32) -> u32 {
    READS_FAIL_RUNS.fetch_add(1, SeqCst);
    n
}

#[cached(cache = "flaky-reads")]
async fn reads_fail_async(n: u32) -> u32 {
    READS_FAIL_RUNS.fetch_add(1, SeqCst);
    n
}

#[test]
fn reads_that_fail_call_through_and_count_one_error_per_call() {
    let flaky = register("flaky-reads", Flaky::default());
    flaky.fail_get.store(true, SeqCst);
    assert_eq!(reads_fail(1), 1);
    assert_eq!(reads_fail(1), 1);
    assert_eq!(READS_FAIL_RUNS.load(SeqCst), 2);
    assert!(flaky.map.lock().unwrap().len() == 1, "the writes succeeded");
    let stats = reads_fail_stats();
    assert_eq!((stats.hits, stats.misses, stats.errors), (0, 2, 2));
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert_eq!(runtime.block_on(reads_fail_async(2)), 2);
    assert_eq!(reads_fail_async_stats().errors, 1);
    // Reads come back: a hit.
    flaky.fail_get.store(false, SeqCst);
    assert_eq!(reads_fail(1), 1);
    assert_eq!(reads_fail_stats().hits, 1);
}

static WRITES_FAIL_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = "flaky-writes")]
fn writes_fail(n: u32) -> u32 {
    WRITES_FAIL_RUNS.fetch_add(1, SeqCst);
    n
}

#[cached(cache = "flaky-writes", on_cache_error = "propagate")]
fn writes_fail_strict(n: u32) -> std::result::Result<u32, AppError> {
    WRITES_FAIL_RUNS.fetch_add(1, SeqCst);
    Ok(n)
}

#[cached(cache = "flaky-writes", on_cache_error = "propagate")]
async fn writes_fail_strict_async(n: u32) -> std::result::Result<u32, AppError> {
    Ok(n)
}

#[test]
fn writes_that_fail_are_ignored_or_propagated_on_request() {
    let flaky = register("flaky-writes", Flaky::default());
    flaky.fail_set.store(true, SeqCst);
    assert_eq!(writes_fail(1), 1);
    assert_eq!(writes_fail(1), 1);
    let stats = writes_fail_stats();
    assert_eq!((stats.hits, stats.misses, stats.errors), (0, 2, 2));
    assert!(matches!(writes_fail_strict(1), Err(AppError::Cache(Error::BackendUnavailable { .. }))));
    assert_eq!(WRITES_FAIL_RUNS.load(SeqCst), 3, "the body ran, then the write failed");
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert!(matches!(runtime.block_on(writes_fail_strict_async(1)), Err(AppError::Cache(_))));
    assert_eq!(writes_fail_strict_async_stats().errors, 1);
}

// ---- crate = path -----------------------------------------------------------------------------

mod reexport {
    pub use cachestack as renamed;
}

#[cached(crate = crate::reexport::renamed)]
fn through_crate_path(n: u8) -> u8 {
    n
}

#[cached(crate = "crate::reexport::renamed", key = "cp:<n>")]
async fn through_crate_string(n: u8) -> u8 {
    n
}

#[tokio::test]
async fn crate_points_generated_code_at_another_path() {
    assert_eq!(through_crate_path(1), 1);
    assert_eq!(through_crate_path(1), 1);
    assert_eq!(through_crate_path_stats().hits, 1);
    assert_eq!(through_crate_string(2).await, 2);
}

// ---- hygiene ----------------------------------------------------------------------------------

/// Generated code keeps compiling when the names it could rely on are shadowed.
mod shadowed {
    #![allow(dead_code, non_camel_case_types, clippy::all)]

    struct Option;
    struct Result;
    struct Box;
    struct String;
    struct Vec;
    struct Some;
    struct None;
    struct Ok;
    struct Err;
    struct Duration;
    mod std {}
    mod core {}
    fn drop() {}

    use cachestack::cached;

    #[cached(ttl = "1m")]
    pub fn plain(n: u32) -> u32 {
        n + 1
    }

    #[cached(key = "shadowed:<n>", condition = |v| v.is_some())]
    pub async fn asynchronous(n: u32) -> ::core::option::Option<u32> {
        ::core::option::Option::Some(n)
    }

    pub struct Thing;

    impl Thing {
        #[cached]
        pub fn method(&self, n: u32) -> ::core::result::Result<u32, ::std::string::String> {
            ::core::result::Result::Ok(n)
        }
    }
}

#[tokio::test]
async fn generated_code_is_hygienic() {
    assert_eq!(shadowed::plain(1), 2);
    assert_eq!(shadowed::plain(1), 2);
    assert_eq!(shadowed::asynchronous(3).await, Some(3));
    assert_eq!(shadowed::Thing.method(4), Ok(4));
}
