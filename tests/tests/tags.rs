//! Tags over every store and stack: memory alone, file, and memory as L1 over Redis, PostgreSQL
//! and Memcached (real servers from `tests/servers.sh`; skipped outside CI when missing).
//!
//! Two caches over the same shared tier play two processes: each has its own memory L1 and its
//! own in-process tag times. Time is a shared [`ManualClock`]: the tag freshness bound is crossed
//! by advancing it, never by sleeping. Also: fail-safe values of an invalidated tag are never
//! served, an entry computed while its tag is invalidated is stale, and old entries still read.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use cachestack::conformance::unique_namespace;
use cachestack::{
    Backend, Cache, CallStatus, ComputeOptions, Error, FileBackend, FileConfig, ManualClock, MemcachedBackend,
    MemcachedConfig, MemoryBackend, PostgresBackend, PostgresConfig, RedisBackend, RedisConfig, TieredCache, Value,
};

const FRESHNESS: Duration = Duration::from_secs(1);

/// A cache playing one process: memory L1 over `tier` (or `tier` alone), on `clock`; with its L1
/// when stacked.
fn process(tier: &Arc<dyn Backend>, stacked: bool, clock: &Arc<ManualClock>) -> (Cache, Option<Arc<MemoryBackend>>) {
    let (cache, l1) = if stacked {
        let l1 = Arc::new(MemoryBackend::with_capacity(1_000));
        let layers: Vec<Arc<dyn Backend>> = vec![l1.clone(), tier.clone()];
        (Cache::new(TieredCache::from_layers(layers).unwrap()), Some(l1))
    } else {
        (Cache::from_arc(tier.clone()), None)
    };
    (cache.with_clock(clock.clone()).with_tag_freshness(FRESHNESS), l1)
}

/// What `cache` answers for `keys` with `get`, `get_many` and `exists`, which must agree.
async fn reads(cache: &Cache, keys: &[&str]) -> Vec<Option<String>> {
    let mut one_by_one = Vec::new();
    for key in keys {
        let got = cache.get::<String>(key).await.unwrap();
        assert_eq!(cache.exists(key).await.unwrap(), got.is_some(), "exists({key:?}) disagrees with get");
        one_by_one.push(got);
    }
    assert_eq!(cache.get_many::<String>(keys).await.unwrap(), one_by_one, "get_many disagrees with get");
    one_by_one
}

/// The scenario every store and stack runs. `shared`: the two processes share `tier` (a memory
/// store alone is one process's).
async fn scenario(tier: Arc<dyn Backend>, stacked: bool, shared: bool) {
    let clock = Arc::new(ManualClock::new());
    let (a, _) = process(&tier, stacked, &clock);
    let ttl = Some(Duration::from_secs(300));
    a.set_with_tags("user:7:profile", &"Ada".to_string(), ttl, &["user:7"]).await.unwrap();
    a.set_with_tags("org:3:members", &vec![7u64, 8], ttl, &["org:3", "user:7"]).await.unwrap();
    a.set_with_tags("user:8:profile", &"Grace".to_string(), ttl, &["user:8"]).await.unwrap();
    a.set("plain", &1u32, ttl).await.unwrap();
    assert_eq!(a.get::<String>("user:7:profile").await.unwrap().as_deref(), Some("Ada"));

    // The other process reads the entry (and, stacked, keeps it in its L1).
    let b = shared.then(|| process(&tier, stacked, &clock).0);
    if let Some(b) = &b {
        assert_eq!(b.get::<String>("user:7:profile").await.unwrap().as_deref(), Some("Ada"));
        assert_eq!(b.get::<Vec<u64>>("org:3:members").await.unwrap(), Some(vec![7, 8]));
    }

    clock.advance(Duration::from_millis(10));
    a.invalidate_tag("user:7").await.unwrap();
    // The invalidating process sees it at once, in every tier; other tags and untagged entries
    // are untouched.
    assert_eq!(a.get::<String>("user:7:profile").await.unwrap(), None);
    assert_eq!(a.get::<Vec<u64>>("org:3:members").await.unwrap(), None);
    assert_eq!(a.get::<String>("user:8:profile").await.unwrap().as_deref(), Some("Grace"));
    assert_eq!(a.get::<u32>("plain").await.unwrap(), Some(1));
    // `exists` and `get_many` agree (stacked: the entry is stale in both tiers).
    let profiles = ["user:7:profile", "user:8:profile", "missing"];
    assert_eq!(reads(&a, &profiles).await, [None, Some("Grace".to_string()), None]);
    assert!(!a.exists("org:3:members").await.unwrap());
    assert!(a.exists("plain").await.unwrap());
    if stacked && shared {
        // A process with an empty L1: the stale entries are read from the shared tier only, and
        // neither `get_many` nor `exists` copies them into L1 (a current one is copied).
        let (c, l1) = process(&tier, stacked, &clock);
        let l1 = l1.unwrap();
        assert_eq!(
            c.get_many::<String>(&["user:7:profile", "user:8:profile"]).await.unwrap(),
            [None, Some("Grace".to_string())]
        );
        assert!(!c.exists("org:3:members").await.unwrap());
        assert!(l1.get("user:7:profile").await.unwrap().is_none(), "a stale entry was backfilled");
        assert!(l1.get("org:3:members").await.unwrap().is_none(), "a stale entry was backfilled");
        assert!(l1.get("user:8:profile").await.unwrap().is_some(), "a current entry is backfilled");
    }

    if let Some(b) = &b {
        // Within its freshness bound the other process may still trust the time it read...
        if stacked {
            assert_eq!(b.get::<String>("user:7:profile").await.unwrap().as_deref(), Some("Ada"));
        }
        // ...and past it, it reads the time again: a miss in every tier.
        clock.advance(FRESHNESS);
        assert_eq!(reads(b, &profiles).await, [None, Some("Grace".to_string()), None]);
        assert_eq!(b.get::<Vec<u64>>("org:3:members").await.unwrap(), None);
        assert_eq!(b.get::<String>("user:8:profile").await.unwrap().as_deref(), Some("Grace"));
    }

    // A value written after the invalidation is served, by both (through L2 past a stale L1).
    clock.advance(Duration::from_millis(10));
    a.set_with_tags("user:7:profile", &"Ada L.".to_string(), ttl, &["user:7"]).await.unwrap();
    assert_eq!(a.get::<String>("user:7:profile").await.unwrap().as_deref(), Some("Ada L."));
    if let Some(b) = &b {
        // Stacked, B's L1 still holds the stale entry: `get_many` and `exists` read past it.
        let current = b.get_many::<String>(&["user:7:profile"]).await.unwrap();
        assert_eq!(current, [Some("Ada L.".to_string())], "get_many reads past a stale L1");
        assert!(b.exists("user:7:profile").await.unwrap());
        assert_eq!(b.get::<String>("user:7:profile").await.unwrap().as_deref(), Some("Ada L."));
        // A backplane message drops the kept times: the next invalidation is seen at once.
        a.invalidate_tag("user:7").await.unwrap();
        b.forget_local_tags(&["user:7".to_string()]);
        assert_eq!(reads(b, &["user:7:profile"]).await, [None]);
    }
    // The reserved key holds the time, in the shared tier.
    let recorded = tier.get("__cachestack:tag:user:7").await.unwrap().unwrap();
    assert!(recorded.value.get::<u64>().unwrap() > 0);
    tier.clear().await.unwrap();
}

#[tokio::test]
async fn memory_alone() {
    scenario(Arc::new(MemoryBackend::with_capacity(1_000)), false, false).await;
}

#[tokio::test]
async fn memory_over_memory() {
    scenario(Arc::new(MemoryBackend::with_capacity(1_000)), true, true).await;
}

#[tokio::test]
async fn file() {
    let dir = tempfile::tempdir().unwrap();
    let tier: Arc<dyn Backend> = Arc::new(FileBackend::new(FileConfig::new(dir.path())).unwrap());
    scenario(tier.clone(), false, true).await;
    scenario(tier, true, true).await;
}

#[tokio::test]
async fn memory_over_redis() {
    let url = cachestack_tests::require_server!("CACHESTACK_TEST_REDIS_URL", "redis");
    let namespace = match std::env::var("CACHESTACK_TEST_REDIS_RUN") {
        Ok(run) if !run.is_empty() => format!("{run}-{}", unique_namespace("tags")),
        _ => unique_namespace("tags"),
    };
    let config = RedisConfig::from_url(&url).unwrap().with_namespace(namespace);
    scenario(Arc::new(RedisBackend::new(config).unwrap()), true, true).await;
}

#[tokio::test]
async fn memory_over_postgres() {
    let url = cachestack_tests::require_server!("CACHESTACK_TEST_POSTGRES_URL", "PostgreSQL");
    let config = PostgresConfig::new(&url).with_table("cachestack_test_tags").with_namespace(unique_namespace("tags"));
    scenario(Arc::new(PostgresBackend::new(config).unwrap()), true, true).await;
}

#[tokio::test]
async fn memory_over_memcached() {
    let url = cachestack_tests::require_server!("CACHESTACK_TEST_MEMCACHED_URL", "memcached");
    let config = MemcachedConfig::from_url(&url).unwrap().with_namespace(unique_namespace("tags"));
    scenario(Arc::new(MemcachedBackend::new(config).unwrap()), true, true).await;
}

/// Fail-safe: a stale value is served when the computation fails, unless one of its tags was
/// invalidated: then the failure is the answer.
#[tokio::test]
async fn a_stale_value_of_an_invalidated_tag_is_never_served() {
    let clock = Arc::new(ManualClock::new());
    let cache = Cache::new(MemoryBackend::with_capacity(100)).with_clock(clock.clone());
    let options = ComputeOptions::builder()
        .ttl(Duration::from_secs(60))
        .stale_if_error(Duration::from_secs(3600))
        .tags(["user:7"])
        .build()
        .unwrap();
    let ok = |n: u32| move || async move { Ok::<_, Error>(n) };
    let failing = || async { Err::<u32, _>(Error::config("database down")) };
    for key in ["kept", "invalidated"] {
        assert_eq!(cache.get_or_compute(key, &options, ok(1)).await.unwrap(), (1, CallStatus::Miss));
    }
    clock.advance(Duration::from_secs(61));
    // Past the TTL, a failure is answered with the stale value...
    assert_eq!(cache.get_or_compute("kept", &options, failing).await.unwrap(), (1, CallStatus::Stale));
    // ...but not once its tag is invalidated.
    cache.invalidate_tag("user:7").await.unwrap();
    let err = cache.get_or_compute("invalidated", &options, failing).await.unwrap_err();
    assert!(err.to_string().contains("database down"), "{err}");
    // Nor by stale-while-revalidate: the next call computes.
    let swr = ComputeOptions::builder()
        .ttl(Duration::from_secs(60))
        .stale_while_revalidate(Duration::from_secs(3600))
        .tags(["org:1"])
        .build()
        .unwrap();
    assert_eq!(cache.get_or_compute("swr", &swr, ok(1)).await.unwrap(), (1, CallStatus::Miss));
    clock.advance(Duration::from_secs(61));
    cache.invalidate_tag("org:1").await.unwrap();
    assert_eq!(cache.get_or_compute("swr", &swr, ok(2)).await.unwrap(), (2, CallStatus::Miss));
}

/// The rule for a write racing an invalidation: an entry's write time is taken before its value
/// is computed, so an invalidation made while the computation runs wins.
#[tokio::test]
async fn an_invalidation_during_the_computation_wins() {
    let clock = Arc::new(ManualClock::new());
    let cache = Cache::new(MemoryBackend::with_capacity(100)).with_clock(clock.clone());
    let options = ComputeOptions::builder().ttl(Duration::from_secs(60)).tags(["user:7"]).build().unwrap();
    let (inner, moved) = (cache.clone(), clock.clone());
    let racing = move || async move {
        // The data changes and its tag is invalidated while this computation runs.
        moved.advance(Duration::from_millis(5));
        inner.invalidate_tag("user:7").await?;
        moved.advance(Duration::from_millis(5));
        Ok::<_, Error>(1u32)
    };
    assert_eq!(cache.get_or_compute("k", &options, racing).await.unwrap(), (1, CallStatus::Miss));
    // What it stored is stale: the next call computes again.
    let fresh = || async { Ok::<_, Error>(2u32) };
    assert_eq!(cache.get_or_compute("k", &options, fresh).await.unwrap(), (2, CallStatus::Miss));
    assert_eq!(cache.get_or_compute("k", &options, fresh).await.unwrap(), (2, CallStatus::Hit));
}

/// The synchronous twins, and a stack's in-process L1 answering tagged hits without I/O.
#[test]
fn blocking_twins() {
    let cache = Cache::new(MemoryBackend::with_capacity(100));
    cache.set_with_tags_blocking("k", &1u8, None, &["t"]).unwrap();
    assert_eq!(cache.get_blocking::<u8>("k").unwrap(), Some(1));
    cache.invalidate_tag_blocking("t").unwrap();
    assert_eq!(cache.get_blocking::<u8>("k").unwrap(), None);
    assert!(cache.set_with_tags_blocking("k", &1u8, None, &[""]).is_err(), "empty tags are refused");
}

/// An entry in the format of earlier builds (format 1, no tags) still reads, in a byte store.
#[tokio::test]
async fn an_entry_written_in_the_previous_format_still_reads() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileBackend::new(FileConfig::new(dir.path())).unwrap();
    // Written with this build, untagged: byte for byte the previous format (version byte 1).
    store.set("old", Value::new(5u32), cachestack::Expiry::Never).await.unwrap();
    let bytes = cachestack::ValueFormat::default().seal("old", &Value::new(5u32), None).unwrap();
    assert_eq!(bytes[2], 1, "untagged entries keep format 1");
    let cache = Cache::new(store);
    cache.invalidate_tag("anything").await.unwrap();
    assert_eq!(cache.get::<u32>("old").await.unwrap(), Some(5));
}
