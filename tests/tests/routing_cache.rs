//! `CacheRegistry::routed`: one `Cache` whose operations go to the cache each key routes to.
//! Every test builds its own registry of memory caches (`user:` -> `users`, `user:admin:` ->
//! `admins`, anything else -> the default) and checks where things landed by reading the target
//! caches directly.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use cachestack::{Cache, CacheRegistry, Error, MemoryBackend};

struct Setup {
    registry: CacheRegistry,
    routed: Cache,
    default: Cache,
    users: Cache,
    admins: Cache,
}

fn setup() -> Setup {
    let registry = CacheRegistry::new();
    let memory = || Cache::new(MemoryBackend::with_capacity(1000));
    let (default, users, admins) = (memory(), memory(), memory());
    registry.set_default(default.clone());
    registry.register("users", users.clone());
    registry.register("admins", admins.clone());
    registry.route("user:", "users").unwrap();
    registry.route("user:admin:", "admins").unwrap();
    let routed = registry.routed();
    Setup { registry, routed, default, users, admins }
}

/// Where `key` is held: "default", "users", "admins" (or several, or none).
async fn holders(s: &Setup, key: &str) -> Vec<&'static str> {
    let mut found = Vec::new();
    for (name, cache) in [("default", &s.default), ("users", &s.users), ("admins", &s.admins)] {
        if cache.exists(key).await.unwrap() {
            found.push(name);
        }
    }
    found
}

fn sorted(mut keys: Vec<String>) -> Vec<String> {
    keys.sort();
    keys
}

#[tokio::test]
async fn each_key_operation_goes_to_the_cache_its_key_routes_to() {
    let s = setup();
    let c = &s.routed;
    for (key, home) in [("user:1", "users"), ("user:admin:1", "admins"), ("order:1", "default")] {
        c.set(key, &7u32, None).await.unwrap();
        assert_eq!(holders(&s, key).await, vec![home], "set {key}");
        assert_eq!(c.get::<u32>(key).await.unwrap(), Some(7));
        assert!(c.exists(key).await.unwrap());
        assert!(c.expire(key, Some(Duration::from_secs(600))).await.unwrap());
        let left = c.ttl(key).await.unwrap().flatten().unwrap();
        assert!(left > Duration::from_secs(500) && left <= Duration::from_secs(600), "ttl {key}: {left:?}");
        assert!(c.delete(key).await.unwrap());
        assert_eq!(holders(&s, key).await, Vec::<&str>::new(), "delete {key}");

        assert!(c.set_if_absent(key, &1u32, None).await.unwrap());
        assert!(!c.set_if_absent(key, &2u32, None).await.unwrap());
        assert_eq!(holders(&s, key).await, vec![home], "set_if_absent {key}");
        c.delete(key).await.unwrap();

        let counter = format!("{key}:n");
        assert_eq!(c.incr(&counter, 2).await.unwrap(), 2);
        assert_eq!(c.incr_with_ttl(&counter, 3, Some(Duration::from_secs(60))).await.unwrap(), 5);
        assert_eq!(holders(&s, &counter).await, vec![home], "incr {counter}");

        let computed = format!("{key}:computed");
        assert_eq!(c.get_or_set_async(&computed, None, || async { 9u8 }).await.unwrap(), 9);
        assert_eq!(c.get_or_set_async(&computed, None, || async { 0u8 }).await.unwrap(), 9);
        assert_eq!(holders(&s, &computed).await, vec![home], "get_or_set {computed}");
    }
    // The counters are in their caches with the values the routed handle saw.
    assert_eq!(s.users.get::<i64>("user:1:n").await.unwrap(), Some(5));
    assert_eq!(s.admins.get::<i64>("user:admin:1:n").await.unwrap(), Some(5));
    assert_eq!(s.default.get::<i64>("order:1:n").await.unwrap(), Some(5));
}

#[tokio::test]
async fn bulk_operations_split_by_cache_and_keep_the_callers_order() {
    let s = setup();
    let c = &s.routed;
    let entries = [("user:1", &1u32), ("order:1", &2u32), ("user:admin:1", &3u32), ("user:2", &4u32)];
    c.set_many(&entries, None).await.unwrap();
    assert_eq!(s.users.get_many::<u32>(&["user:1", "user:2"]).await.unwrap(), vec![Some(1), Some(4)]);
    assert_eq!(s.admins.get::<u32>("user:admin:1").await.unwrap(), Some(3));
    assert_eq!(s.default.get::<u32>("order:1").await.unwrap(), Some(2));
    assert_eq!(s.users.keys_matching("*").await.unwrap().len(), 2, "users holds only its keys");

    let keys = ["user:admin:1", "user:2", "missing", "order:1", "user:1", "user:admin:9"];
    let found = c.get_many::<u32>(&keys).await.unwrap();
    assert_eq!(found, vec![Some(3), Some(4), None, Some(2), Some(1), None]);

    assert_eq!(c.delete_many(&["user:1", "order:1", "user:admin:1", "nothing"]).await.unwrap(), 3);
    assert_eq!(c.get_many::<u32>(&keys).await.unwrap(), vec![None, Some(4), None, None, None, None]);
}

#[tokio::test]
async fn rerouting_takes_effect_on_the_next_call() {
    let s = setup();
    let c = &s.routed;
    c.set("user:1", &1u32, None).await.unwrap();
    s.registry.route("user:", "admins").unwrap();
    assert_eq!(c.get::<u32>("user:1").await.unwrap(), None, "now read from admins");
    c.set("user:1", &2u32, None).await.unwrap();
    assert_eq!(s.admins.get::<u32>("user:1").await.unwrap(), Some(2));
    assert_eq!(s.users.get::<u32>("user:1").await.unwrap(), Some(1), "the old entry stays where it was");
    s.registry.unroute("user:");
    c.set("user:1", &3u32, None).await.unwrap();
    assert_eq!(s.default.get::<u32>("user:1").await.unwrap(), Some(3));
}

/// Pattern operations reach the caches a pattern can reach, and there only the keys that route
/// to that cache: `users` also holds `order:7` (written to it directly) and a stale
/// `user:admin:7` (unreachable, since `user:admin:` routes to `admins`).
#[tokio::test]
async fn pattern_operations_list_and_remove_only_routed_keys() {
    let s = setup();
    let c = &s.routed;
    for key in ["user:1", "user:2", "user:admin:1", "order:1"] {
        c.set(key, &1u8, None).await.unwrap();
    }
    s.users.set("order:7", &1u8, None).await.unwrap();
    s.users.set("user:admin:7", &1u8, None).await.unwrap();
    s.default.set("user:9", &1u8, None).await.unwrap();

    let everything = ["order:1", "user:1", "user:2", "user:admin:1"].map(String::from).to_vec();
    assert_eq!(sorted(c.keys_matching("*").await.unwrap()), everything);
    assert_eq!(sorted(c.keys_matching("user:*").await.unwrap()), everything[1..].to_vec());
    assert_eq!(c.keys_matching("user:admin:*").await.unwrap(), vec!["user:admin:1".to_string()]);
    assert_eq!(c.keys_matching("order:7").await.unwrap(), Vec::<String>::new());

    // Stopping the walk stops it across caches too.
    let mut batches = 0;
    c.for_each_key_matching("*", 1, |_| {
        batches += 1;
        false
    })
    .await
    .unwrap();
    assert_eq!(batches, 1);

    assert_eq!(c.delete_matching("user:*").await.unwrap(), 3);
    assert_eq!(holders(&s, "user:1").await, Vec::<&str>::new());
    assert_eq!(holders(&s, "user:admin:1").await, Vec::<&str>::new());
    assert_eq!(holders(&s, "order:7").await, vec!["users"], "not a routed key of users");
    assert_eq!(holders(&s, "user:admin:7").await, vec!["users"], "routes to admins, not users");
    assert_eq!(holders(&s, "user:9").await, vec!["default"], "routes to users, not default");
    assert_eq!(holders(&s, "order:1").await, vec!["default"], "does not match");

    // One reachable cache: the store's own delete_matching, still scoped to the pattern.
    c.set("user:admin:2", &1u8, None).await.unwrap();
    assert_eq!(c.delete_matching("user:admin:*").await.unwrap(), 1);
    assert_eq!(holders(&s, "user:admin:7").await, vec!["users"]);
}

#[tokio::test]
async fn clear_purge_flush_and_stats_cover_the_default_and_every_routed_cache() {
    let s = setup();
    let c = &s.routed;
    c.set_many(&[("user:1", &1u8), ("user:admin:1", &1u8), ("order:1", &1u8)], None).await.unwrap();
    assert_eq!(c.get::<u8>("user:1").await.unwrap(), Some(1));
    assert_eq!(c.get::<u8>("order:2").await.unwrap(), None);

    let stats = c.stats();
    assert_eq!(stats.name, "routed");
    assert_eq!(stats.layers.len(), 3, "default, users, admins");
    assert_eq!((stats.hits, stats.misses), (1, 1));
    assert_eq!(stats.writes, 3);
    assert_eq!(stats.writes, stats.layers.iter().map(|l| l.writes).sum::<u64>());

    assert_eq!(c.purge_expired().await.unwrap(), 0);
    c.flush().await.unwrap();
    c.clear().await.unwrap();
    for cache in [&s.default, &s.users, &s.admins] {
        assert!(cache.keys_matching("*").await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_route_to_an_unknown_cache_is_a_clear_error() {
    let s = setup();
    let c = &s.routed;
    s.registry.route("ghost:", "nowhere").unwrap();
    let unknown = |r: Result<(), Error>| match r {
        Err(Error::UnknownCache { name }) => assert_eq!(name, "nowhere"),
        other => panic!("expected UnknownCache, got {other:?}"),
    };
    unknown(c.set("ghost:1", &1u8, None).await);
    unknown(c.get::<u8>("ghost:1").await.map(drop));
    unknown(c.get_many::<u8>(&["user:1", "ghost:1"]).await.map(drop));
    unknown(c.keys_matching("gh*").await.map(drop));
    unknown(c.clear().await);
    // Keys routed elsewhere are unaffected.
    c.set("user:1", &1u8, None).await.unwrap();
    assert_eq!(c.keys_matching("user:*").await.unwrap(), vec!["user:1".to_string()]);
}

#[tokio::test]
async fn a_routed_cache_that_reaches_itself_is_refused() {
    let s = setup();
    s.registry.register("all", s.routed.clone());
    s.registry.route("all:", "all").unwrap();
    assert!(matches!(s.routed.get::<u8>("all:1").await, Err(Error::Config { .. })));
    s.registry.set_default(s.routed.clone());
    assert!(matches!(s.routed.set("order:1", &1u8, None).await, Err(Error::Config { .. })));
    assert!(matches!(s.routed.clear().await, Err(Error::Config { .. })));
    // Keys routed to real caches still work.
    s.routed.set("user:1", &1u8, None).await.unwrap();
    assert_eq!(s.users.get::<u8>("user:1").await.unwrap(), Some(1));
}

#[test]
fn blocking_twins_route_too() {
    let s = setup();
    let c = &s.routed;
    c.set_blocking("user:1", &1u8, None).unwrap();
    assert_eq!(s.users.get_blocking::<u8>("user:1").unwrap(), Some(1));
    assert_eq!(c.get_or_set("user:admin:1", None, || 2u8).unwrap(), 2);
    assert_eq!(s.admins.get_blocking::<u8>("user:admin:1").unwrap(), Some(2));
    assert_eq!(c.get_many_blocking::<u8>(&["user:admin:1", "user:1"]).unwrap(), vec![Some(2), Some(1)]);
    assert_eq!(c.delete_matching_blocking("user:*").unwrap(), 2);
    assert!(c.delete_blocking("user:1").is_ok_and(|present| !present));
}

/// A cache not registered in code comes from `CACHESTACK_CACHE_<NAME>`; a bad URL there is an
/// error naming the variable. (Here rather than in the runtime crate's unit tests: that crate
/// forbids `unsafe`, which `set_var` needs in edition 2024.)
#[test]
fn environment_configures_named_caches() {
    let name = "env-test-cache-42";
    let var = cachestack::registry::env_var_for(name);
    assert!(matches!(CacheRegistry::new().get(name), Err(Error::UnknownCache { .. })));
    // This variable is read by this test only.
    std::env::set_var(&var, "mem://?max_entries=7");
    let r = CacheRegistry::new();
    let cache = r.get(name).unwrap();
    assert_eq!(cache.stats().details["max_entries"], "7");
    assert_eq!(r.source(name).as_deref(), Some("mem://?max_entries=7"));
    std::env::set_var(&var, "mem://?max_entries=nope");
    let err = CacheRegistry::new().get(name).unwrap_err().to_string();
    assert!(err.contains("CACHESTACK_CACHE_ENV_TEST_CACHE_42") && err.contains("max_entries=nope"), "{err}");
    std::env::remove_var(&var);
}
