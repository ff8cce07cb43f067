//! The resilience options of `#[cached]` (`stale_if_error`, `stale_throttle`,
//! `stale_while_revalidate`, `refresh_ahead`, `timeout`, `hard_timeout`, `jitter`,
//! `lock_timeout`) and `<fn>_with_status`, through `#[cached]` functions over a memory store, a
//! memory | Redis stack and a file store.
//!
//! Time: each store's cache is registered with a `ManualClock` that the tests move by hand (it
//! decides freshness); timeouts run on the test's paused tokio clock (`start_paused`), which jumps
//! to the next timer as soon as the test's runtime has nothing to do. Bodies are held on gates the
//! test opens, so "slow" and "hung" are events, never sleeps; a call with a timeout is always one
//! whose body is held (the timeout is meant to pass). The stores check their own deadlines against
//! the real clock, which never reaches them during a test (entries live for their TTL plus an
//! hour).
//!
//! The functions of one store share its cache and clock, so the tests of one store run one at a
//! time (`serial`), each with its own keys; the stores run in parallel.
//!
//! The Redis layer needs `CACHESTACK_TEST_REDIS_URL` (`tests/servers.sh`); without it the Redis
//! cases are skipped outside CI.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cachestack::{
    cached, Backend, Cache, CacheRegistry, CallStatus, FileBackend, FileConfig, ManualClock, MemoryBackend,
    RedisBackend, RedisConfig, TieredCache, Timeout,
};
use cachestack_tests::conformance::unique_namespace;
use tokio::sync::Semaphore;

const REDIS_VAR: &str = "CACHESTACK_TEST_REDIS_URL";

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The error of the bodies under test.
#[derive(Debug, Clone, PartialEq)]
pub enum Failed {
    Dependency,
    TimedOut(Duration),
}

impl From<Timeout> for Failed {
    fn from(timeout: Timeout) -> Self {
        Failed::TimedOut(timeout.duration())
    }
}

// ------------------------------------------------------------------------------------------------
// Stores, gates
// ------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
pub enum Store {
    Memory,
    MemoryRedis,
    File,
}

/// A store's cache, registered under its name with a manual clock.
#[derive(Debug)]
pub struct Fixture {
    pub cache: Cache,
    pub clock: Arc<ManualClock>,
    redis: Option<Arc<RedisBackend>>,
    _dir: Option<tempfile::TempDir>,
}

impl Fixture {
    /// Registers the cache of `store` as `name`; `None` when its server is missing outside CI.
    fn register(store: Store, name: &str) -> Option<Fixture> {
        let clock = Arc::new(ManualClock::new());
        let (backend, redis, dir): (Arc<dyn Backend>, _, _) = match store {
            Store::Memory => (Arc::new(MemoryBackend::with_capacity(10_000)), None, None),
            Store::MemoryRedis => {
                let url = cachestack_tests::server_url(REDIS_VAR, "redis")?;
                let namespace = unique_namespace(name);
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
        let cache = Cache::from_arc(backend).with_clock(clock.clone());
        CacheRegistry::global().register(name, cache.clone());
        Some(Fixture { cache, clock, redis, _dir: dir })
    }

    /// Waits for the background work of the test, then removes its keys from the shared Redis
    /// server (on cachestack's runtime: the client's timers must not run on the paused clock).
    async fn clean_up(&self) {
        self.cache.background_idle().await;
        if let Some(redis) = self.redis.clone() {
            cachestack::rt::io("redis", async move { redis.clear().await }).await.unwrap();
        }
    }
}

/// A gate bodies wait on until the test opens it; closed again for the next phase.
#[derive(Debug, Default)]
pub struct Gate(Mutex<Option<Arc<Semaphore>>>);

impl Gate {
    pub fn close(&self) {
        *self.0.lock().unwrap() = Some(Arc::new(Semaphore::new(0)));
    }

    pub fn open(&self) {
        if let Some(semaphore) = self.0.lock().unwrap().take() {
            semaphore.add_permits(Semaphore::MAX_PERMITS / 2);
        }
    }

    pub async fn pass(&self) {
        let closed = self.0.lock().unwrap().clone();
        if let Some(semaphore) = closed {
            let _permit = semaphore.acquire().await.unwrap();
        }
    }
}

/// Runs the tests of one store one at a time (they share its cache and clock): async tests
/// `lock().await` it, sync ones `blocking_lock()` it.
type Serial = tokio::sync::Mutex<()>;

/// Yields until `condition` holds (another task on the test's runtime, or on cachestack's, gets
/// there).
async fn until(condition: impl Fn() -> bool) {
    while !condition() {
        tokio::task::yield_now().await;
    }
}

fn ok(s: &str, status: CallStatus) -> (Result<String, Failed>, CallStatus) {
    (Ok(s.to_string()), status)
}

// ------------------------------------------------------------------------------------------------
// The scenarios, once per store
// ------------------------------------------------------------------------------------------------

macro_rules! scenarios {
    ($store:ident, $kind:expr, $cache:literal) => {
        #[allow(dead_code)]
        mod $store {
            use super::*;

            static SERIAL: Serial = Serial::const_new(());

            fn fixture() -> Option<&'static Fixture> {
                static FIXTURE: OnceLock<Option<Fixture>> = OnceLock::new();
                FIXTURE.get_or_init(|| Fixture::register($kind, $cache)).as_ref()
            }

            // -- fail-safe --------------------------------------------------------------------

            static FAILING: AtomicBool = AtomicBool::new(false);
            static FAIL_RUNS: AtomicUsize = AtomicUsize::new(0);

            #[cached(cache = $cache, key = "fail-safe:<id>", ttl = "60s", stale_if_error = "1h", stale_throttle = "10s")]
            async fn fail_safe(id: u32) -> Result<String, Failed> {
                FAIL_RUNS.fetch_add(1, SeqCst);
                if FAILING.load(SeqCst) {
                    return Err(Failed::Dependency);
                }
                Ok(format!("good {id}"))
            }

            /// The body fails N times while a stale value exists: every caller gets the stale
            /// value, the body runs at most once per throttle window; past `stale_if_error`, the
            /// error.
            #[tokio::test(start_paused = true)]
            async fn fail_safe_serves_the_stale_value_and_throttles_the_body() {
                let _serial = SERIAL.lock().await;
                let Some(f) = fixture() else { return };
                assert_eq!(fail_safe_with_status(1).await, ok("good 1", CallStatus::Miss));
                f.clock.advance(secs(61));
                FAILING.store(true, SeqCst);
                FAIL_RUNS.store(0, SeqCst);
                let n = 30;
                for _ in 0..n {
                    assert_eq!(fail_safe_with_status(1).await, ok("good 1", CallStatus::Stale));
                    f.clock.advance(secs(1));
                }
                let ran = FAIL_RUNS.load(SeqCst);
                let windows = n / 10;
                assert!(ran <= 1 + windows, "the body ran {ran} times for {n} callers over {windows} throttle windows");
                assert!(ran >= windows, "the throttle ends: the body runs again in each window (ran {ran})");
                f.clock.advance(secs(3600));
                assert_eq!(fail_safe_with_status(1).await, (Err(Failed::Dependency), CallStatus::Miss));
                assert_eq!(fail_safe(1).await, Err(Failed::Dependency));
                FAILING.store(false, SeqCst);
                f.clean_up().await;
            }

            // -- stale-while-revalidate -----------------------------------------------------------

            static REVALIDATE_GATE: Gate = Gate(Mutex::new(None));
            static REVALIDATE_RUNS: AtomicUsize = AtomicUsize::new(0);

            #[cached(cache = $cache, key = "revalidate:<id>", ttl = "60s", stale_while_revalidate = "30s")]
            async fn revalidated(id: u32) -> String {
                let run = REVALIDATE_RUNS.fetch_add(1, SeqCst);
                REVALIDATE_GATE.pass().await;
                format!("v{run} of {id}")
            }

            /// 1000 concurrent callers within the window: all get the stale value at once (the
            /// refresh is held while they are answered), one background refresh replaces it.
            #[tokio::test(start_paused = true)]
            async fn one_background_refresh_for_1000_callers() {
                let _serial = SERIAL.lock().await;
                let Some(f) = fixture() else { return };
                assert_eq!(revalidated_with_status(7).await, ("v0 of 7".to_string(), CallStatus::Miss));
                f.clock.advance(secs(61));
                REVALIDATE_GATE.close();
                let before = f.cache.compute_stats();
                let callers: Vec<_> = (0..1000).map(|_| tokio::spawn(revalidated_with_status(7))).collect();
                for caller in callers {
                    assert_eq!(caller.await.unwrap(), ("v0 of 7".to_string(), CallStatus::Stale));
                }
                REVALIDATE_GATE.open();
                f.cache.background_idle().await;
                assert_eq!(REVALIDATE_RUNS.load(SeqCst), 2, "one fill, one background refresh for 1000 callers");
                assert_eq!(revalidated_with_status(7).await, ("v1 of 7".to_string(), CallStatus::Hit));
                let after = f.cache.compute_stats();
                assert_eq!(after.refreshes - before.refreshes, 1);
                assert_eq!(after.background_failures, before.background_failures);
                f.clean_up().await;
            }

            // -- refresh-ahead ----------------------------------------------------------------------

            static AHEAD_RUNS: AtomicUsize = AtomicUsize::new(0);

            #[cached(cache = $cache, key = "ahead:<id>", ttl = "100s", refresh_ahead = "80%")]
            async fn ahead(id: u32) -> String {
                format!("v{} of {id}", AHEAD_RUNS.fetch_add(1, SeqCst))
            }

            /// A key read every 5 s across 10 TTLs never misses, and is refreshed once per
            /// refresh period (80% of the 100 s TTL).
            #[tokio::test(start_paused = true)]
            async fn refresh_ahead_keeps_a_hot_key_warm() {
                let _serial = SERIAL.lock().await;
                let Some(f) = fixture() else { return };
                assert_eq!(ahead_with_status(3).await, ("v0 of 3".to_string(), CallStatus::Miss));
                let mut statuses = Vec::new();
                for _ in 0..200 {
                    f.clock.advance(secs(5));
                    statuses.push(ahead_with_status(3).await.1);
                    // Let a refresh this read started finish before the clock moves on.
                    f.cache.background_idle().await;
                }
                assert!(statuses.iter().all(|s| *s == CallStatus::Hit), "every read is a fresh hit: {statuses:?}");
                assert_eq!(AHEAD_RUNS.load(SeqCst), 1 + 1000 / 80, "one refresh every 80 s over 1000 s");
                f.clean_up().await;
            }

            // -- soft timeout -----------------------------------------------------------------------

            static SOFT_GATE: Gate = Gate(Mutex::new(None));
            static SOFT_RUNS: AtomicUsize = AtomicUsize::new(0);

            #[cached(cache = $cache, key = "soft:<id>", ttl = "60s", stale_if_error = "1h", timeout = "1s", hard_timeout = "10s")]
            async fn soft(id: u32) -> Result<String, Failed> {
                let run = SOFT_RUNS.fetch_add(1, SeqCst);
                SOFT_GATE.pass().await;
                Ok(format!("v{run} of {id}"))
            }

            /// The same key without timeouts, for the calls not meant to time out (see
            /// `hard_probe`).
            #[cached(cache = $cache, key = "soft:<id>", ttl = "60s", stale_if_error = "1h")]
            async fn soft_probe(id: u32) -> Result<String, Failed> {
                Ok(format!("probe {id}"))
            }

            /// A slow body: at the soft timeout the caller gets the stale value; the body finishes
            /// in the background and the cache then holds its value.
            #[tokio::test(start_paused = true)]
            async fn soft_timeout_answers_stale_and_the_body_finishes() {
                let _serial = SERIAL.lock().await;
                let Some(f) = fixture() else { return };
                assert_eq!(soft_probe_with_status(2).await, ok("probe 2", CallStatus::Miss));
                f.clock.advance(secs(61));
                SOFT_GATE.close();
                let started = tokio::time::Instant::now();
                assert_eq!(soft_with_status(2).await, ok("probe 2", CallStatus::Stale));
                assert_eq!(started.elapsed(), secs(1), "answered at the soft timeout (paused clock)");
                SOFT_GATE.open();
                f.cache.background_idle().await;
                assert_eq!(soft_probe_with_status(2).await, ok("v0 of 2", CallStatus::Hit));
                assert_eq!(SOFT_RUNS.load(SeqCst), 1);
                f.clean_up().await;
            }

            // -- hard timeout -----------------------------------------------------------------------

            static HARD_GATE: Gate = Gate(Mutex::new(None));

            #[cached(cache = $cache, key = "hard:<id>", ttl = "60s", hard_timeout = "2s")]
            async fn hard(id: u32) -> Result<String, Failed> {
                HARD_GATE.pass().await;
                Ok(format!("done {id}"))
            }

            /// The same key without a timeout: the paused clock jumps to the next timer while
            /// the test waits for a store on cachestack's runtime, so the calls that are not
            /// meant to time out read the key through this one.
            #[cached(cache = $cache, key = "hard:<id>", ttl = "60s", stale_if_error = "1h")]
            async fn hard_probe(id: u32) -> Result<String, Failed> {
                Ok(format!("probe {id}"))
            }

            /// No stale value and a body that does not finish: `Err(Timeout)` at the bound; the
            /// asynchronous body is cancelled with its call (nothing stored).
            #[tokio::test(start_paused = true)]
            async fn hard_timeout_returns_the_timeout_error() {
                let _serial = SERIAL.lock().await;
                let Some(f) = fixture() else { return };
                HARD_GATE.close();
                let before = f.cache.compute_stats().timeouts;
                let started = tokio::time::Instant::now();
                assert_eq!(hard_with_status(4).await, (Err(Failed::TimedOut(secs(2))), CallStatus::Miss));
                assert_eq!(started.elapsed(), secs(2), "the caller stopped waiting at the bound (paused clock)");
                assert_eq!(hard(4).await, Err(Failed::TimedOut(secs(2))));
                assert_eq!(f.cache.compute_stats().timeouts, before + 2);
                HARD_GATE.open();
                f.cache.background_idle().await;
                assert_eq!(hard_probe_with_status(4).await, ok("probe 4", CallStatus::Miss), "the cancelled body stored nothing");
                assert_eq!(hard_probe_with_status(4).await, ok("probe 4", CallStatus::Hit));
                f.clean_up().await;
            }

            // -- lock_timeout, single flight ------------------------------------------------------

            static LOCK_GATE: Gate = Gate(Mutex::new(None));
            static LOCK_RUNS: AtomicUsize = AtomicUsize::new(0);

            #[cached(cache = $cache, key = "lock:<id>", ttl = "60s", lock_timeout = "5s")]
            async fn locked(id: u32, who: &str) -> String {
                LOCK_RUNS.fetch_add(1, SeqCst);
                if who == "leader" {
                    LOCK_GATE.pass().await;
                }
                format!("{who}'s {id}")
            }

            /// A leader that hangs: its waiter runs the body itself at `lock_timeout`.
            #[tokio::test(start_paused = true)]
            async fn a_waiter_takes_over_a_hung_leader_at_lock_timeout() {
                let _serial = SERIAL.lock().await;
                let Some(f) = fixture() else { return };
                LOCK_GATE.close();
                LOCK_RUNS.store(0, SeqCst);
                let leader = tokio::spawn(async { locked_with_status(5, "leader").await });
                until(|| LOCK_RUNS.load(SeqCst) == 1).await;
                let started = tokio::time::Instant::now();
                assert_eq!(locked_with_status(5, "waiter").await, ("waiter's 5".to_string(), CallStatus::Miss));
                assert_eq!(started.elapsed(), secs(5), "the waiter gave up on the leader at lock_timeout (paused clock)");
                LOCK_GATE.open();
                assert_eq!(leader.await.unwrap(), ("leader's 5".to_string(), CallStatus::Miss));
                f.clean_up().await;
            }

            static FLIGHT_RUNS: AtomicUsize = AtomicUsize::new(0);

            #[cached(cache = $cache, key = "flight:<id>", ttl = "60s", stale_if_error = "1h")]
            async fn flight(id: u32, who: &str) -> String {
                FLIGHT_RUNS.fetch_add(1, SeqCst);
                LOCK_GATE.pass().await;
                format!("{who}'s {id}")
            }

            /// Concurrent callers of a missing key: one runs the body (`Miss`), the others wait
            /// for it and get its value (`Waited`).
            #[tokio::test(start_paused = true)]
            async fn concurrent_callers_wait_for_one_body() {
                let _serial = SERIAL.lock().await;
                let Some(f) = fixture() else { return };
                LOCK_GATE.close();
                let waiting = f.cache.compute_stats().waiting;
                let callers: Vec<_> =
                    (0..20).map(|_| tokio::spawn(async { flight_with_status(6, "leader").await })).collect();
                until(|| f.cache.compute_stats().waiting == waiting + 19).await;
                LOCK_GATE.open();
                let mut statuses = Vec::new();
                for caller in callers {
                    let (value, status) = caller.await.unwrap();
                    assert_eq!(value, "leader's 6");
                    statuses.push(status);
                }
                assert_eq!(FLIGHT_RUNS.load(SeqCst), 1, "one body for 20 callers");
                assert_eq!(statuses.iter().filter(|s| **s == CallStatus::Miss).count(), 1, "{statuses:?}");
                assert_eq!(statuses.iter().filter(|s| **s == CallStatus::Waited).count(), 19, "{statuses:?}");
                f.clean_up().await;
            }

            // -- synchronous functions --------------------------------------------------------------

            static SYNC_FAILING: AtomicBool = AtomicBool::new(false);

            #[cached(cache = $cache, key = "sync-fail-safe:<id>", ttl = "60s", stale_if_error = "1h")]
            fn sync_fail_safe(id: u32) -> Result<String, Failed> {
                if SYNC_FAILING.load(SeqCst) {
                    panic!("the dependency is down (expected in this test)");
                }
                Ok(format!("good {id}"))
            }

            /// A synchronous body that panics while a stale value exists: the stale value.
            #[test]
            fn a_sync_body_that_panics_is_answered_with_the_stale_value() {
                let _serial = SERIAL.blocking_lock();
                let Some(f) = fixture() else { return };
                assert_eq!(sync_fail_safe_with_status(8), ok("good 8", CallStatus::Miss));
                assert_eq!(sync_fail_safe_with_status(8), ok("good 8", CallStatus::Hit));
                f.clock.advance(secs(61));
                SYNC_FAILING.store(true, SeqCst);
                assert_eq!(sync_fail_safe_with_status(8), ok("good 8", CallStatus::Stale));
                SYNC_FAILING.store(false, SeqCst);
            }

            static SYNC_HARD_GATE: std::sync::LazyLock<cachestack_tests::sync::Gate> = std::sync::LazyLock::new(Default::default);

            #[cached(cache = $cache, key = "sync-hard:<id>", ttl = "60s", hard_timeout = "50ms")]
            fn sync_hard(id: u32) -> Result<String, Failed> {
                SYNC_HARD_GATE.wait();
                Ok(format!("late {id}"))
            }

            /// A synchronous body held past the hard timeout: the caller gets `Err(Timeout)`;
            /// the body goes on on another thread and stores its value.
            #[test]
            fn a_sync_hard_timeout_returns_and_the_body_stores_later() {
                let _serial = SERIAL.blocking_lock();
                let Some(f) = fixture() else { return };
                assert_eq!(sync_hard_with_status(9), (Err(Failed::TimedOut(Duration::from_millis(50))), CallStatus::Miss));
                SYNC_HARD_GATE.open();
                let cache = f.cache.clone();
                cachestack::rt::block_on(async move { cache.background_idle().await }).unwrap();
                assert_eq!(sync_hard_with_status(9), ok("late 9", CallStatus::Hit));
            }
        }
    };
}

scenarios!(memory, Store::Memory, "resilience-memory");
scenarios!(memory_redis, Store::MemoryRedis, "resilience-memory-redis");
scenarios!(file, Store::File, "resilience-file");

// ------------------------------------------------------------------------------------------------
// Shapes and companions (memory)
// ------------------------------------------------------------------------------------------------

#[allow(dead_code)]
mod shapes {
    use super::*;

    static SERIAL: Serial = Serial::const_new(());

    fn fixture() -> &'static Fixture {
        static FIXTURE: OnceLock<Fixture> = OnceLock::new();
        FIXTURE.get_or_init(|| Fixture::register(Store::Memory, "resilience-shapes").unwrap())
    }

    #[derive(Clone)]
    struct Repo {
        tenant: u32,
        loads: Arc<AtomicUsize>,
    }

    impl Repo {
        /// `&self` and a borrowed argument: the body only ever runs for its caller.
        #[cached(cache = "resilience-shapes", key = "repo:<self.tenant>:<name>", ttl = "60s", stale_if_error = "1h")]
        fn borrowed(&self, name: &str) -> Result<String, Failed> {
            self.loads.fetch_add(1, SeqCst);
            if FAILING.load(SeqCst) {
                return Err(Failed::Dependency);
            }
            Ok(format!("{name} of {}", self.tenant))
        }

        /// `self: Arc<Self>` is cloned into the background refresh.
        #[cached(
            cache = "resilience-shapes",
            key = "repo-arc:<self.tenant>:<id>",
            ttl = "60s",
            stale_while_revalidate = "30s"
        )]
        async fn revalidated(self: Arc<Self>, id: u32) -> String {
            let n = self.loads.fetch_add(1, SeqCst);
            format!("{id}#{n}")
        }
    }

    static FAILING: AtomicBool = AtomicBool::new(false);

    #[test]
    fn a_method_borrowing_self_serves_stale_values() {
        let _serial = SERIAL.blocking_lock();
        let f = fixture();
        let repo = Repo { tenant: 1, loads: Arc::default() };
        assert_eq!(repo.borrowed_with_status("a"), ok("a of 1", CallStatus::Miss));
        assert_eq!(repo.borrowed("a"), Ok("a of 1".to_string()));
        f.clock.advance(secs(61));
        FAILING.store(true, SeqCst);
        assert_eq!(repo.borrowed_with_status("a"), ok("a of 1", CallStatus::Stale));
        FAILING.store(false, SeqCst);
        assert_eq!(repo.loads.load(SeqCst), 2);
        let stats = Repo::borrowed_stats();
        assert_eq!((stats.hits, stats.misses, stats.stale), (1, 1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn an_arc_self_method_revalidates_in_the_background() {
        let _serial = SERIAL.lock().await;
        let f = fixture();
        let repo = Arc::new(Repo { tenant: 2, loads: Arc::default() });
        assert_eq!(repo.clone().revalidated_with_status(5).await, ("5#0".to_string(), CallStatus::Miss));
        f.clock.advance(secs(70));
        assert_eq!(repo.clone().revalidated_with_status(5).await, ("5#0".to_string(), CallStatus::Stale));
        f.cache.background_idle().await;
        assert_eq!(repo.clone().revalidated_with_status(5).await, ("5#1".to_string(), CallStatus::Hit));
    }

    static SYNC_RUNS: AtomicUsize = AtomicUsize::new(0);
    static SYNC_REFRESH_FAILS: AtomicBool = AtomicBool::new(false);

    #[cached(cache = "resilience-shapes", key = "sync-reval:<id>", ttl = "60s", stale_while_revalidate = "30s")]
    fn sync_revalidated(id: u32) -> Result<String, Failed> {
        let n = SYNC_RUNS.fetch_add(1, SeqCst);
        if SYNC_REFRESH_FAILS.load(SeqCst) {
            return Err(Failed::Dependency);
        }
        Ok(format!("{id}#{n}"))
    }

    /// A synchronous function's refresh runs on cachestack's runtime; a refresh that fails is
    /// counted as a background failure and the cache keeps its value.
    #[test]
    fn a_sync_function_revalidates_on_the_runtime_and_counts_background_failures() {
        let _serial = SERIAL.blocking_lock();
        let f = fixture();
        let idle = || {
            let cache = f.cache.clone();
            cachestack::rt::block_on(async move { cache.background_idle().await }).unwrap();
        };
        assert_eq!(sync_revalidated_with_status(1), ok("1#0", CallStatus::Miss));
        f.clock.advance(secs(61));
        assert_eq!(sync_revalidated_with_status(1), ok("1#0", CallStatus::Stale));
        idle();
        assert_eq!(sync_revalidated_with_status(1), ok("1#1", CallStatus::Hit));

        f.clock.advance(secs(61));
        SYNC_REFRESH_FAILS.store(true, SeqCst);
        let failures = f.cache.compute_stats().background_failures;
        assert_eq!(sync_revalidated_with_status(1), ok("1#1", CallStatus::Stale));
        idle();
        SYNC_REFRESH_FAILS.store(false, SeqCst);
        assert_eq!(f.cache.compute_stats().background_failures, failures + 1);
        assert_eq!(sync_revalidated_with_status(1), ok("1#1", CallStatus::Stale), "the value was kept");
        idle();
    }

    static COUNTED: AtomicUsize = AtomicUsize::new(0);

    #[cached(cache = "resilience-shapes", key = "cond:<n>", ttl = "60s", stale_if_error = "1h", condition = |v: &u32| v.is_multiple_of(2))]
    fn conditioned(n: u32) -> u32 {
        COUNTED.fetch_add(1, SeqCst);
        n
    }

    #[cached(cache = "resilience-shapes", key = "opt:<n>", ttl = "60s", stale_if_error = "1h", cache_none = false)]
    fn optional(n: u32) -> Option<u32> {
        COUNTED.fetch_add(1, SeqCst);
        (n > 0).then_some(n)
    }

    /// `condition` and `cache_none = false` decide what is stored, as without the options;
    /// `<fn>_refresh` runs the body and stores.
    #[test]
    fn condition_cache_none_and_refresh_apply() {
        let _serial = SERIAL.blocking_lock();
        fixture();
        COUNTED.store(0, SeqCst);
        assert_eq!(conditioned_with_status(3), (3, CallStatus::Miss));
        assert_eq!(conditioned_with_status(3), (3, CallStatus::Miss), "odd values are not stored");
        assert_eq!(conditioned_with_status(4), (4, CallStatus::Miss));
        assert_eq!(conditioned_with_status(4), (4, CallStatus::Hit));
        assert_eq!(optional_with_status(0), (None, CallStatus::Miss));
        assert_eq!(optional_with_status(0), (None, CallStatus::Miss), "None is not stored");
        assert_eq!(optional_with_status(2), (Some(2), CallStatus::Miss));
        assert_eq!(optional_with_status(2), (Some(2), CallStatus::Hit));
        let before = COUNTED.load(SeqCst);
        assert_eq!(optional_refresh(2), Some(2));
        assert_eq!(COUNTED.load(SeqCst), before + 1, "`_refresh` runs the body");
        assert_eq!(optional_with_status(2), (Some(2), CallStatus::Hit));
    }

    static JITTER_RUNS: AtomicUsize = AtomicUsize::new(0);

    #[cached(cache = "resilience-shapes", key = "jitter:<n>", ttl = "100s", jitter = "50%")]
    fn jittered(n: u32) -> usize {
        JITTER_RUNS.fetch_add(1, SeqCst) + n as usize
    }

    /// With `jitter = "50%"` every stored TTL is between 50 s and 100 s: fresh before, expired
    /// after, and not all alike.
    #[test]
    fn jitter_shortens_each_ttl_within_its_part() {
        let _serial = SERIAL.blocking_lock();
        let f = fixture();
        let keys = 0..40;
        for n in keys.clone() {
            assert_eq!(jittered_with_status(n).1, CallStatus::Miss);
        }
        f.clock.advance(secs(49));
        assert!(keys.clone().all(|n| jittered_with_status(n).1 == CallStatus::Hit), "fresh for at least 50 s");
        f.clock.advance(secs(26));
        let fresh: Vec<u32> = keys.filter(|n| jittered_with_status(*n).1 == CallStatus::Hit).collect();
        assert!(!fresh.is_empty() && fresh.len() < 40, "TTLs are spread: {} of 40 fresh at 75 s", fresh.len());
        f.clock.advance(secs(26));
        assert!(fresh.iter().all(|n| jittered_with_status(*n).1 == CallStatus::Miss), "expired after 100 s");
    }
}
