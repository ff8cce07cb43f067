//! `Cache::get_or_compute`: fail-safe (`stale_if_error` with its throttle), revalidation in the
//! background (`stale_while_revalidate`), `refresh_ahead`, soft and hard timeouts,
//! `lock_timeout`, single flight and the call status, each through a memory store, a memory |
//! Redis stack and a file store; and the blocking twin.
//!
//! Time: freshness is decided by a `ManualClock` that each test moves by hand; timeouts run on
//! the test's paused tokio clock (`start_paused`), which jumps to the next timer as soon as the
//! test's runtime has nothing to do. Computations run on cachestack's runtime and are held on
//! gates the test opens, so "slow" and "hung" are events, never sleeps. Because the paused clock
//! jumps while the test waits for work on cachestack's runtime, a call with a timeout is always
//! one whose computation is held on a gate (the timeout is meant to pass); the other calls use
//! options without timeouts. The stores check their own
//! deadlines against the real clock: the manual clock starts at the real time and entries live
//! for their TTL plus a stale window of an hour, so no store deadline passes during a test.
//!
//! The Redis layer needs `CACHESTACK_TEST_REDIS_URL` (`tests/servers.sh`); without it the Redis
//! cases are skipped outside CI. Store I/O happens on cachestack's runtime (never on the paused
//! one), so the Redis client's own timers are real.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use cachestack::{
    Backend, Cache, CallStatus, ComputeOptions, FileBackend, FileConfig, ManualClock, MemoryBackend, RedisBackend,
    RedisConfig, RefreshAhead, TieredCache, Timeout,
};
use cachestack_tests::conformance::unique_namespace;
use tokio::sync::Semaphore;
use tokio::time::Instant;

const REDIS_VAR: &str = "CACHESTACK_TEST_REDIS_URL";

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// ------------------------------------------------------------------------------------------------
// Stores and helpers
// ------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Store {
    Memory,
    MemoryRedis,
    File,
}

struct Fixture {
    cache: Cache,
    clock: Arc<ManualClock>,
    /// The Redis layer, cleared when the test ends.
    redis: Option<Arc<RedisBackend>>,
    _dir: Option<tempfile::TempDir>,
}

/// The cache for `store`, or `None` when its server is missing outside CI (the test is skipped).
fn fixture(store: Store, tag: &str) -> Option<Fixture> {
    let clock = Arc::new(ManualClock::new());
    let (backend, redis, dir): (Arc<dyn Backend>, _, _) = match store {
        Store::Memory => (Arc::new(MemoryBackend::with_capacity(10_000)), None, None),
        Store::MemoryRedis => {
            let url = cachestack_tests::server_url(REDIS_VAR, "redis")?;
            let namespace = match std::env::var("CACHESTACK_TEST_REDIS_RUN") {
                Ok(run) if !run.is_empty() => format!("{run}-{}", unique_namespace(tag)),
                _ => unique_namespace(tag),
            };
            let config = RedisConfig::from_url(&url).unwrap().with_namespace(namespace).with_timeout(secs(5));
            let redis = Arc::new(RedisBackend::new(config).unwrap());
            let stack = TieredCache::builder()
                .layer(MemoryBackend::with_capacity(10_000))
                .layer_arc(redis.clone())
                .build()
                .unwrap();
            (Arc::new(stack), Some(redis), None)
        }
        Store::File => {
            let dir = tempfile::tempdir().unwrap();
            (Arc::new(FileBackend::new(FileConfig::new(dir.path())).unwrap()), None, Some(dir))
        }
    };
    Some(Fixture { cache: Cache::from_arc(backend).with_clock(clock.clone()), clock, redis, _dir: dir })
}

impl Fixture {
    /// Removes the test's keys from the shared Redis server (on cachestack's runtime: the
    /// client's timers must not run on the paused clock).
    async fn clean_up(self) {
        self.cache.background_idle().await;
        if let Some(redis) = self.redis {
            cachestack::rt::io("redis", async move { redis.clear().await }).await.unwrap();
        }
    }
}

/// The error of the computations under test.
#[derive(Debug, Clone, PartialEq)]
enum Failed {
    Dependency,
    TimedOut(Duration),
    /// A cache configuration error (e.g. a distributed lock on a store without one).
    Misconfigured(String),
}

impl From<cachestack::Error> for Failed {
    fn from(err: cachestack::Error) -> Self {
        Failed::Misconfigured(err.to_string())
    }
}

impl From<Timeout> for Failed {
    fn from(timeout: Timeout) -> Self {
        Failed::TimedOut(timeout.duration())
    }
}

type Served = Result<(String, CallStatus), Failed>;

async fn value(cache: &Cache, key: &str, options: &ComputeOptions, v: &str) -> Served {
    let v = v.to_string();
    cache.get_or_compute(key, options, move || async move { Ok(v) }).await
}

/// A computation that must not run (the call is answered from the cache).
async fn cached_only(cache: &Cache, key: &str, options: &ComputeOptions) -> Served {
    cache.get_or_compute(key, options, must_not_run).await
}

async fn must_not_run() -> Result<String, Failed> {
    panic!("the computation ran, but the call should be answered from the cache")
}

async fn dependency_panics() -> Result<String, Failed> {
    panic!("the dependency is down (expected in this test)")
}

/// Counts its computations; each fails.
async fn failing(cache: &Cache, key: &str, options: &ComputeOptions, runs: &Arc<AtomicUsize>) -> Served {
    let runs = runs.clone();
    cache
        .get_or_compute(key, options, move || async move {
            runs.fetch_add(1, SeqCst);
            Err::<String, _>(Failed::Dependency)
        })
        .await
}

/// A gate computations wait on until the test opens it.
fn gate() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(0))
}

fn open(gate: &Semaphore) {
    gate.add_permits(Semaphore::MAX_PERMITS / 2);
}

/// A computation that counts itself, waits for `gate`, then returns `v`.
async fn gated(
    cache: &Cache,
    key: &str,
    options: &ComputeOptions,
    v: &str,
    gate: &Arc<Semaphore>,
    runs: &Arc<AtomicUsize>,
) -> Served {
    let (v, gate, runs) = (v.to_string(), gate.clone(), runs.clone());
    cache
        .get_or_compute(key, options, move || async move {
            runs.fetch_add(1, SeqCst);
            let _permit = gate.acquire().await.unwrap();
            Ok(v)
        })
        .await
}

fn ok(s: &str, status: CallStatus) -> Served {
    Ok((s.to_string(), status))
}

/// One test per store for each scenario.
macro_rules! on_every_store {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(start_paused = true)]
            async fn memory() {
                super::$scenario(super::Store::Memory).await;
            }
            #[tokio::test(start_paused = true)]
            async fn memory_redis() {
                super::$scenario(super::Store::MemoryRedis).await;
            }
            #[tokio::test(start_paused = true)]
            async fn file() {
                super::$scenario(super::Store::File).await;
            }
        }
    )*};
}

on_every_store!(
    fail_safe,
    fail_safe_waiters,
    revalidation,
    refresh_ahead,
    soft_timeout,
    hard_timeout,
    lock_timeout,
    single_flight
);

// ------------------------------------------------------------------------------------------------
// Scenarios
// ------------------------------------------------------------------------------------------------

/// The body fails N times while a stale value exists: every caller gets the stale value, and the
/// body runs at most once per throttle window; a panic is a failure too; once `stale_if_error`
/// has passed, the caller gets the error.
async fn fail_safe(store: Store) {
    let Some(f) = fixture(store, "fail-safe") else { return };
    let throttle = secs(10);
    let options =
        ComputeOptions::builder().ttl(secs(60)).stale_if_error(secs(3600)).stale_throttle(throttle).build().unwrap();
    assert_eq!(value(&f.cache, "k", &options, "good").await, ok("good", CallStatus::Miss));

    f.clock.advance(secs(61));
    let runs = Arc::new(AtomicUsize::new(0));
    let n = 30;
    for _ in 0..n {
        assert_eq!(failing(&f.cache, "k", &options, &runs).await, ok("good", CallStatus::Stale));
        f.clock.advance(secs(1));
    }
    let ran = runs.load(SeqCst);
    let windows = n / throttle.as_secs() as usize;
    assert!(ran <= 1 + windows, "the body ran {ran} times for {n} callers over {windows} throttle windows");
    assert!(ran >= windows, "the throttle ends: the body runs again in each window (ran {ran})");

    // A panic is a failure like an `Err`.
    f.clock.advance(throttle);
    let panicked = f.cache.get_or_compute("k", &options, dependency_panics).await;
    assert_eq!(panicked, ok("good", CallStatus::Stale));

    // Past the stale window: the error.
    f.clock.advance(secs(3600));
    assert_eq!(failing(&f.cache, "k", &options, &runs).await, Err(Failed::Dependency));
    let stats = f.cache.compute_stats();
    assert_eq!(stats.stale, n as u64 + 1);
    assert_eq!(stats.failures_absorbed, ran as u64 + 1);
    f.clean_up().await;
}

/// Callers queued behind a leader whose body fails get the stale value too, without running the
/// body themselves; and waiters of a slow leader get it at the soft timeout.
async fn fail_safe_waiters(store: Store) {
    let Some(f) = fixture(store, "fail-safe-waiters") else { return };
    let fill = ComputeOptions::builder().ttl(secs(60)).stale_if_error(secs(3600)).build().unwrap();
    assert_eq!(value(&f.cache, "k", &fill, "good").await, ok("good", CallStatus::Miss));
    f.clock.advance(secs(61));

    let (gate, runs) = (gate(), Arc::new(AtomicUsize::new(0)));
    let callers: Vec<_> = (0..10)
        .map(|_| {
            let (cache, fill, gate, runs) = (f.cache.clone(), fill.clone(), gate.clone(), runs.clone());
            tokio::spawn(async move {
                cache
                    .get_or_compute("k", &fill, move || async move {
                        runs.fetch_add(1, SeqCst);
                        let _permit = gate.acquire().await.unwrap();
                        Err::<String, _>(Failed::Dependency)
                    })
                    .await
            })
        })
        .collect();
    while f.cache.compute_stats().waiting < 9 {
        tokio::task::yield_now().await;
    }
    open(&gate);
    for caller in callers {
        assert_eq!(caller.await.unwrap(), ok("good", CallStatus::Stale));
    }
    assert_eq!(runs.load(SeqCst), 1, "the waiters did not run the failing body again");

    // A slow leader: its waiters, like itself, answer stale at the soft timeout.
    f.clock.advance(secs(60));
    let slow = ComputeOptions::builder().ttl(secs(60)).stale_if_error(secs(3600)).timeout(secs(1)).build().unwrap();
    let (gate, runs) = (self::gate(), Arc::new(AtomicUsize::new(0)));
    let callers: Vec<_> = (0..5)
        .map(|_| {
            let (cache, slow, gate, runs) = (f.cache.clone(), slow.clone(), gate.clone(), runs.clone());
            tokio::spawn(async move { gated(&cache, "k", &slow, "new", &gate, &runs).await })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.await.unwrap(), ok("good", CallStatus::Stale));
    }
    open(&gate);
    f.cache.background_idle().await;
    assert_eq!(runs.load(SeqCst), 1);
    assert_eq!(cached_only(&f.cache, "k", &fill).await, ok("new", CallStatus::Hit));
    f.clean_up().await;
}

/// 1000 concurrent callers within `stale_while_revalidate`: all get the stale value at once (the
/// refresh is held on a gate while they are answered), one background refresh runs, and it
/// replaces the value.
async fn revalidation(store: Store) {
    let Some(f) = fixture(store, "revalidate") else { return };
    let options = ComputeOptions::builder().ttl(secs(60)).stale_while_revalidate(secs(30)).build().unwrap();
    assert_eq!(value(&f.cache, "k", &options, "old").await, ok("old", CallStatus::Miss));
    f.clock.advance(secs(61));

    let (gate, runs) = (gate(), Arc::new(AtomicUsize::new(0)));
    let callers: Vec<_> = (0..1000)
        .map(|_| {
            let (cache, options, gate, runs) = (f.cache.clone(), options.clone(), gate.clone(), runs.clone());
            tokio::spawn(async move { gated(&cache, "k", &options, "new", &gate, &runs).await })
        })
        .collect();
    for caller in callers {
        // Answered while the refresh is still held: nobody waited for it.
        assert_eq!(caller.await.unwrap(), ok("old", CallStatus::Stale));
    }
    open(&gate);
    f.cache.background_idle().await;
    assert_eq!(runs.load(SeqCst), 1, "one background refresh for 1000 callers");
    assert_eq!(cached_only(&f.cache, "k", &options).await, ok("new", CallStatus::Hit));
    let stats = f.cache.compute_stats();
    assert_eq!((stats.refreshes, stats.stale, stats.background_failures), (1, 1000, 0));
    f.clean_up().await;
}

/// A key read every 5 s across 10 TTLs never misses, and is refreshed once per refresh period
/// (80% of the 100 s TTL).
async fn refresh_ahead(store: Store) {
    let Some(f) = fixture(store, "refresh-ahead") else { return };
    let options = ComputeOptions::builder().ttl(secs(100)).refresh_ahead(RefreshAhead::Fraction(0.8)).build().unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let read = |runs: Arc<AtomicUsize>| {
        let cache = f.cache.clone();
        let options = options.clone();
        async move {
            cache
                .get_or_compute("k", &options, move || async move {
                    Ok::<_, Failed>(format!("v{}", runs.fetch_add(1, SeqCst)))
                })
                .await
        }
    };
    assert_eq!(read(runs.clone()).await, ok("v0", CallStatus::Miss));
    let mut statuses = Vec::new();
    for _ in 0..200 {
        f.clock.advance(secs(5));
        let (_, status) = read(runs.clone()).await.unwrap();
        statuses.push(status);
        // Let a refresh this read started finish before the clock moves on.
        f.cache.background_idle().await;
    }
    assert!(statuses.iter().all(|s| *s == CallStatus::Hit), "every read is a fresh hit: {statuses:?}");
    assert_eq!(runs.load(SeqCst), 1 + 1000 / 80, "one refresh every 80 s over 1000 s");
    assert_eq!(f.cache.compute_stats().refreshes, 1000 / 80);
    f.clean_up().await;
}

/// A slow body: at the soft timeout the caller gets the stale value; the body finishes in the
/// background and the cache then holds its value. A body that fails after its caller left is
/// counted as a background failure.
async fn soft_timeout(store: Store) {
    let Some(f) = fixture(store, "soft-timeout") else { return };
    let options = ComputeOptions::builder()
        .ttl(secs(60))
        .stale_if_error(secs(3600))
        .timeout(secs(1))
        .hard_timeout(secs(10))
        .build()
        .unwrap();
    let fill = ComputeOptions::builder().ttl(secs(60)).stale_if_error(secs(3600)).build().unwrap();
    assert_eq!(value(&f.cache, "k", &fill, "old").await, ok("old", CallStatus::Miss));
    f.clock.advance(secs(61));

    let (gate, runs) = (gate(), Arc::new(AtomicUsize::new(0)));
    let started = Instant::now();
    assert_eq!(gated(&f.cache, "k", &options, "new", &gate, &runs).await, ok("old", CallStatus::Stale));
    assert_eq!(started.elapsed(), secs(1), "answered at the soft timeout (paused clock)");
    open(&gate);
    f.cache.background_idle().await;
    assert_eq!(cached_only(&f.cache, "k", &options).await, ok("new", CallStatus::Hit));
    assert_eq!(f.cache.compute_stats().background_failures, 0);

    // Slow and then failing, with nobody waiting any more: counted.
    f.clock.advance(secs(61));
    let gate = self::gate();
    let held = gate.clone();
    let served = f
        .cache
        .get_or_compute("k", &options, move || async move {
            let _permit = held.acquire().await.unwrap();
            Err::<String, _>(Failed::Dependency)
        })
        .await;
    assert_eq!(served, ok("new", CallStatus::Stale));
    open(&gate);
    f.cache.background_idle().await;
    assert_eq!(f.cache.compute_stats().background_failures, 1);
    f.clean_up().await;
}

/// No stale value and a body that does not finish: `Err(Timeout)` at the hard timeout; the body
/// still stores its value when it finishes.
async fn hard_timeout(store: Store) {
    let Some(f) = fixture(store, "hard-timeout") else { return };
    let options = ComputeOptions::builder().ttl(secs(60)).hard_timeout(secs(2)).build().unwrap();
    let (gate, runs) = (gate(), Arc::new(AtomicUsize::new(0)));
    let started = Instant::now();
    assert_eq!(gated(&f.cache, "k", &options, "late", &gate, &runs).await, Err(Failed::TimedOut(secs(2))));
    assert_eq!(started.elapsed(), secs(2), "the caller stopped waiting at the bound (paused clock)");
    assert_eq!(f.cache.compute_stats().timeouts, 1);
    open(&gate);
    f.cache.background_idle().await;
    assert_eq!(cached_only(&f.cache, "k", &options).await, ok("late", CallStatus::Hit));
    f.clean_up().await;
}

/// A leader that hangs: without `lock_timeout` its waiter is still waiting an hour later; with it,
/// the waiter runs the body itself.
async fn lock_timeout(store: Store) {
    let Some(f) = fixture(store, "lock-timeout") else { return };
    let plain = ComputeOptions::builder().ttl(secs(60)).build().unwrap();
    let bounded = ComputeOptions::builder().ttl(secs(60)).lock_timeout(secs(5)).build().unwrap();
    let (gate, runs) = (gate(), Arc::new(AtomicUsize::new(0)));
    let leader = {
        let (cache, plain, gate, runs) = (f.cache.clone(), plain.clone(), gate.clone(), runs.clone());
        tokio::spawn(async move { gated(&cache, "k", &plain, "leader's", &gate, &runs).await })
    };
    // The leader's body has started (and hangs on the gate).
    while runs.load(SeqCst) == 0 {
        tokio::task::yield_now().await;
    }

    // Without lock_timeout: an hour later the waiter still waits.
    let unbounded = {
        let (cache, plain) = (f.cache.clone(), plain.clone());
        tokio::spawn(async move { value(&cache, "k", &plain, "waiter's").await })
    };
    while f.cache.compute_stats().waiting == 0 {
        tokio::task::yield_now().await;
    }
    tokio::time::advance(secs(3600)).await;
    assert!(!unbounded.is_finished(), "without lock_timeout a waiter of a hung leader waits on");
    unbounded.abort();

    // With it, the waiter gives up on the leader and computes itself. (Before waiters could
    // bound their wait, this call never returned.)
    let started = Instant::now();
    assert_eq!(value(&f.cache, "k", &bounded, "waiter's").await, ok("waiter's", CallStatus::Miss));
    assert_eq!(started.elapsed(), secs(5), "the waiter gave up on the leader at lock_timeout (paused clock)");

    open(&gate);
    assert_eq!(leader.await.unwrap(), ok("leader's", CallStatus::Miss));
    f.clean_up().await;
}

/// Concurrent callers of a missing key: one computes (`Miss`), the others wait for it and get its
/// value (`Waited`).
async fn single_flight(store: Store) {
    let Some(f) = fixture(store, "single-flight") else { return };
    let options = ComputeOptions::builder().ttl(secs(60)).build().unwrap();
    let (gate, runs) = (gate(), Arc::new(AtomicUsize::new(0)));
    let callers: Vec<_> = (0..20)
        .map(|_| {
            let (cache, options, gate, runs) = (f.cache.clone(), options.clone(), gate.clone(), runs.clone());
            tokio::spawn(async move { gated(&cache, "k", &options, "v", &gate, &runs).await })
        })
        .collect();
    // The leader holds the gate; wait until the 19 others are queued behind it.
    while f.cache.compute_stats().waiting < 19 {
        tokio::task::yield_now().await;
    }
    open(&gate);
    let mut statuses = Vec::new();
    for caller in callers {
        let (v, status) = caller.await.unwrap().unwrap();
        assert_eq!(v, "v");
        statuses.push(status);
    }
    assert_eq!(runs.load(SeqCst), 1);
    assert_eq!(statuses.iter().filter(|s| **s == CallStatus::Miss).count(), 1);
    assert_eq!(statuses.iter().filter(|s| **s == CallStatus::Waited).count(), 19);
    f.clean_up().await;
}

// ------------------------------------------------------------------------------------------------
// The blocking twin
// ------------------------------------------------------------------------------------------------

/// `get_or_compute_blocking` from a plain thread: miss, hit, fail-safe with a panicking body,
/// revalidation in the background, and the error past the stale window.
fn blocking(store: Store) {
    let Some(f) = fixture(store, "blocking") else { return };
    let options = ComputeOptions::builder()
        .ttl(secs(60))
        .stale_while_revalidate(secs(30))
        .stale_if_error(secs(3600))
        .build()
        .unwrap();
    let get = |v: &'static str| f.cache.get_or_compute_blocking("k", &options, move || Ok::<_, Failed>(v.to_string()));
    assert_eq!(get("one"), ok("one", CallStatus::Miss));
    assert_eq!(get("two"), ok("one", CallStatus::Hit));

    // Within stale_while_revalidate: stale at once, refreshed in the background.
    f.clock.advance(secs(61));
    assert_eq!(get("two"), ok("one", CallStatus::Stale));
    cachestack::rt::block_on({
        let cache = f.cache.clone();
        async move { cache.background_idle().await }
    })
    .unwrap();
    assert_eq!(get("three"), ok("two", CallStatus::Hit));

    // Past it, within stale_if_error: a panicking body is answered with the stale value.
    f.clock.advance(secs(120));
    let panicked = f.cache.get_or_compute_blocking("k", &options, || -> Result<String, Failed> {
        panic!("the dependency is down (expected in this test)")
    });
    assert_eq!(panicked, ok("two", CallStatus::Stale));

    f.clock.advance(secs(3600));
    assert_eq!(
        f.cache.get_or_compute_blocking("k", &options, || Err::<String, _>(Failed::Dependency)),
        Err(Failed::Dependency)
    );
    cachestack::rt::block_on(f.clean_up()).unwrap();
}

#[test]
fn blocking_memory() {
    blocking(Store::Memory);
}

#[test]
fn blocking_memory_redis() {
    blocking(Store::MemoryRedis);
}

#[test]
fn blocking_file() {
    blocking(Store::File);
}

#[test]
fn a_panic_with_no_stale_value_goes_on_in_the_caller() {
    let cache = Cache::new(MemoryBackend::with_capacity(10));
    let options = ComputeOptions::default();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        cache
            .get_or_compute_blocking("k", &options, || -> Result<u8, Failed> { panic!("boom (expected in this test)") })
    }));
    let payload = caught.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom (expected in this test)"));
}
