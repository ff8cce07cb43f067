//! Prefix routing (`CacheRegistry::route`) through `#[cached]` / `#[invalidate]` functions that
//! name no cache and through the `Cache` API (`CacheRegistry::cache_for_key`): the longest prefix
//! wins, a function whose route depends on an argument routes each call, re-routing is seen by
//! the next call (never a stale typed-front hit), functions naming a cache are never routed, the
//! switches of the routed cache apply. Routes are process-wide, so the tests take turns.
#![allow(clippy::unwrap_used)]

mod macros_support;

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Mutex, MutexGuard, OnceLock};

use cachestack::{cached, invalidate, Cache, CacheRegistry, Error, FileBackend};
use macros_support::register_memory;

/// One test at a time, each starting with the same routes: `rt-user:` to the memory cache
/// `rt-users`, `rt-user:vip:` to the file cache `rt-vips`.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
    let guard = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    ROOT.get_or_init(|| {
        register_memory("rt-users");
        register_memory("rt-other");
        let dir = tempfile::tempdir().unwrap();
        CacheRegistry::global().register("rt-vips", Cache::new(FileBackend::open(dir.path()).unwrap()));
        dir
    });
    let registry = CacheRegistry::global();
    for (prefix, _) in registry.routes() {
        registry.unroute(&prefix);
    }
    registry.route("rt-user:", "rt-users").unwrap();
    registry.route("rt-user:vip:", "rt-vips").unwrap();
    guard
}

fn cache(name: &str) -> Cache {
    CacheRegistry::global().get(name).unwrap()
}

/// Every body execution gets a new number, so a value tells which execution computed it.
static RUNS: AtomicU64 = AtomicU64::new(0);

fn next() -> u64 {
    RUNS.fetch_add(1, SeqCst) + 1
}

/// Its literal start `rt-user:` has a route, and a longer route (`rt-user:vip:`) can be reached
/// by the argument: routed per call.
#[cached(key = "rt-user:<id>")]
fn user(id: String) -> (String, u64) {
    (id, next())
}

/// Literal start `rt-user:vip:`: always the file cache, resolved once per generation.
#[cached(key = "rt-user:vip:<id>")]
fn vip(id: u64) -> (u64, u64) {
    (id, next())
}

/// Literal start `rt-user:n:`: always `rt-users` (no longer route starts with it), so its hits
/// come from the typed front of the memory cache.
#[cached(key = "rt-user:n:<id>")]
fn numbered(id: u64) -> (u64, u64) {
    (id, next())
}

#[cached(key = "rt-user:n:<id>")]
async fn numbered_async(id: u64) -> (u64, u64) {
    (id, next())
}

/// Names its cache: routes never apply.
#[cached(cache = "rt-other", key = "rt-user:vip:<id>")]
fn named(id: u64) -> (u64, u64) {
    (id, next())
}

/// The default key (`macros_routing::plain(..)`): routable by module path.
#[cached]
fn plain(id: u64) -> (u64, u64) {
    (id, next())
}

#[invalidate(key = "rt-user:<id>")]
fn forget_user(id: String) {
    let _ = id;
}

#[invalidate(pattern = "rt-user:*")]
async fn forget_all_users() {}

#[test]
fn a_routed_prefix_stores_and_reads_in_the_named_cache() {
    let _serial = serial();
    // Written through the Cache API into the routed cache, read by the function.
    let target = CacheRegistry::global().cache_for_key("rt-user:vip:41").unwrap();
    assert!(std::sync::Arc::ptr_eq(target.backend(), cache("rt-vips").backend()));
    target.set_blocking("rt-user:vip:41", &(41u64, 0u64), None).unwrap();
    assert_eq!(vip(41), (41, 0));
    // Computed by the function, stored in the routed (file) cache under its key.
    let computed = vip(42);
    assert_eq!(cache("rt-vips").get_blocking::<(u64, u64)>("rt-user:vip:42").unwrap(), Some(computed));
    assert_eq!(CacheRegistry::global().default_cache().get_blocking::<(u64, u64)>("rt-user:vip:42").unwrap(), None);
    assert_eq!(vip(42), computed);
}

#[test]
fn the_longest_prefix_wins_per_call_when_the_argument_decides() {
    let _serial = serial();
    cache("rt-vips").set_blocking("rt-user:vip:7", &("vip:7".to_string(), 0u64), None).unwrap();
    cache("rt-users").set_blocking("rt-user:7", &("7".to_string(), 1u64), None).unwrap();
    assert_eq!(user("vip:7".into()), ("vip:7".to_string(), 0));
    assert_eq!(user("7".into()), ("7".to_string(), 1));
    // A computed value goes where its key routes.
    let computed = user("vip:8".into());
    assert_eq!(cache("rt-vips").get_blocking::<(String, u64)>("rt-user:vip:8").unwrap(), Some(computed.clone()));
    assert_eq!(user("vip:8".into()), computed);
    let other = user("8".into());
    assert_ne!(other, computed);
    assert_eq!(cache("rt-users").get_blocking::<(String, u64)>("rt-user:8").unwrap(), Some(other.clone()));
    assert_eq!(cache("rt-vips").get_blocking::<(String, u64)>("rt-user:8").unwrap(), None);
    assert_eq!(user("8".into()), other);
}

#[test]
fn rerouting_is_seen_by_the_next_call_and_never_serves_a_stale_front_hit() {
    let _serial = serial();
    let registry = CacheRegistry::global();
    let first = numbered(1);
    assert_eq!(numbered(1), first, "a hit of the typed front of rt-users");
    registry.route("rt-user:n:", "rt-other").unwrap();
    let elsewhere = numbered(1);
    assert_ne!(elsewhere, first, "rt-other does not hold it: computed again");
    assert_eq!(numbered(1), elsewhere);
    assert_eq!(registry.unroute("rt-user:n:").as_deref(), Some("rt-other"));
    assert_eq!(numbered(1), first, "back to rt-users, which still holds the first value");
    // The same from another thread, whose slot resolved before the change.
    let again = std::thread::spawn(|| numbered(1)).join().unwrap();
    assert_eq!(again, first);
}

#[test]
fn async_functions_and_pattern_invalidation_follow_the_routes() {
    let _serial = serial();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let a = numbered_async(5).await;
        assert_eq!(numbered_async(5).await, a);
        let b = vip(5);
        // `rt-user:*` reaches both routed caches.
        forget_all_users().await;
        assert_ne!(numbered_async(5).await, a);
        assert_ne!(vip(5), b);
    });
}

#[test]
fn key_invalidation_follows_the_routes() {
    let _serial = serial();
    let a = user("vip:9".into());
    let b = user("9".into());
    forget_user("vip:9".into());
    let a2 = user("vip:9".into());
    assert_ne!(a2, a);
    assert_eq!(user("9".into()), b, "only the routed key was removed");
    assert!(user_invalidate(&"9".to_string()).unwrap());
    assert_ne!(user("9".into()), b);
}

#[test]
fn a_function_naming_its_cache_is_never_routed() {
    let _serial = serial();
    let first = named(3);
    assert_eq!(named(3), first);
    assert_eq!(cache("rt-vips").get_blocking::<(u64, u64)>("rt-user:vip:3").unwrap(), None);
}

#[test]
fn default_keys_route_by_module_path() {
    let _serial = serial();
    let registry = CacheRegistry::global();
    registry.route("macros_routing::pl", "rt-vips").unwrap();
    let value = plain(1);
    assert_eq!(cache("rt-vips").get_blocking::<(u64, u64)>("macros_routing::plain(1)").unwrap(), Some(value));
    assert_eq!(plain(1), value);
    registry.unroute("macros_routing::pl");
}

#[test]
fn the_routed_caches_switches_apply() {
    let _serial = serial();
    let registry = CacheRegistry::global();
    let first = numbered(20);
    registry.disable("rt-users");
    let off = numbered(20);
    registry.enable("rt-users");
    assert_ne!(off, first, "rt-users disabled: the body ran");
    assert_eq!(numbered(20), first);
}

#[test]
fn a_route_to_an_unknown_cache_is_an_error_for_the_api_and_uncached_for_functions() {
    let _serial = serial();
    let registry = CacheRegistry::global();
    registry.route("rt-user:n:", "rt-nowhere").unwrap();
    assert!(matches!(registry.cache_for_key("rt-user:n:1"), Err(Error::UnknownCache { .. })));
    let a = numbered(30);
    assert_ne!(numbered(30), a, "no cache: every call runs the body");
    assert!(numbered_stats().errors >= 2);
    registry.unroute("rt-user:n:");
}
