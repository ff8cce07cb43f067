//! The typed front of memory caches (issue #12): a `#[cached]` function's results live in its own
//! typed partition of a memory cache, found by the encoded arguments. Every way a key can be
//! invalidated must reach it: `#[invalidate]`, `<fn>_invalidate`, a delete by key (what a tiered
//! stack's delete does to its memory layer), a clear, the registry re-pointing the cache; and a
//! delete racing a call that is computing the key must never let the old value come back. Also:
//! TTLs, the capacity bound shared by the functions of one cache, stats, single flight, and the
//! `max_bytes` bound weighing what values really hold.
//!
//! Run on each memory engine (`fast_path.rs`: quick_cache, `fast_path_moka.rs`: moka).
//!
//! Concurrency tests synchronise on events (channels, barriers); no test asserts a wall time.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use cachestack::{
    cached, invalidate, Backend, Cache, CacheRegistry, FileBackend, FileConfig, MemoryBackend, MemoryConfig,
    RedisBackend, RedisConfig, TieredCache, Value,
};

/// What the memory cache of each test is.
#[allow(dead_code)]
pub enum Lower {
    /// The function's cache itself.
    None,
    /// L1 of a stack over a file layer (in a temporary directory).
    File,
    /// L1 of a stack over Redis (`CACHESTACK_TEST_REDIS_URL`; the tests are skipped without it
    /// outside CI).
    Redis,
}

/// True when the suite runs on stacks.
fn on_stack() -> bool {
    !matches!(super::LOWER, Lower::None)
}

/// The settings every memory cache of the suite starts from: the engine under test.
fn base() -> MemoryConfig {
    MemoryConfig { engine: super::ENGINE, ..MemoryConfig::default() }
}

/// The layer under L1, or `Some(None)` when the suite runs on memory caches alone; `None` when
/// its server is missing (the test is skipped).
fn lower(name: &str) -> Option<Option<Arc<dyn Backend>>> {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    // Each stack its own keys below (a re-pointed name gets an empty stack).
    static STACKS: AtomicUsize = AtomicUsize::new(0);
    let name = format!("{name}-{}", STACKS.fetch_add(1, SeqCst));
    match super::LOWER {
        Lower::None => Some(None),
        Lower::File => {
            let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
            Some(Some(Arc::new(FileBackend::new(FileConfig::new(dir.path()).with_namespace(&name)).unwrap())))
        }
        Lower::Redis => {
            let url = cachestack_tests::server_url("CACHESTACK_TEST_REDIS_URL", "redis")?;
            let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
            // This run's own keys, gone within the hour whatever happens to the run.
            let config = RedisConfig::from_url(&url)
                .unwrap()
                .with_namespace(format!("{name}-{}-{stamp}", std::process::id()))
                .with_default_ttl(Duration::from_secs(3600))
                .with_timeout(Duration::from_secs(5));
            Some(Some(Arc::new(RedisBackend::new(config).unwrap())))
        }
    }
}

/// A memory cache registered as `name`: the cache itself, or (on stacks) L1 of a stack
/// registered as `name`. Returns the registered cache, the memory backend and the stack.
type Registered = (Cache, Arc<MemoryBackend>, Option<Arc<TieredCache>>);

fn registered(name: &str, config: MemoryConfig) -> Option<Registered> {
    let backend = Arc::new(MemoryBackend::new(config).unwrap());
    let (cache, stack) = match lower(name)? {
        None => (Cache::from_arc(backend.clone()), None),
        Some(below) => {
            let stack = Arc::new(TieredCache::from_layers(vec![backend.clone(), below]).unwrap());
            (Cache::from_arc(stack.clone()), Some(stack))
        }
    };
    CacheRegistry::global().register(name, cache.clone());
    Some((cache, backend, stack))
}

fn memory_cache(name: &str, config: MemoryConfig) -> Option<(Cache, Arc<MemoryBackend>)> {
    registered(name, config).map(|(cache, backend, _)| (cache, backend))
}

mod stack;

fn entries(n: u64) -> MemoryConfig {
    MemoryConfig { max_entries: n, ..base() }
}

// ---- every invalidation path ------------------------------------------------------------------

static ACCOUNT_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = "fp-inval", key = "account:<id>")]
fn account(id: u64) -> String {
    ACCOUNT_RUNS.fetch_add(1, SeqCst);
    format!("account {id}")
}

#[invalidate(cache = "fp-inval", key = "account:<id>")]
fn close_account(id: u64) {
    let _ = id;
}

/// Calls `account(id)`; true when it was answered from the cache (its body did not run).
fn account_cached(id: u64) -> bool {
    let before = ACCOUNT_RUNS.load(SeqCst);
    account(id);
    ACCOUNT_RUNS.load(SeqCst) == before
}

#[tokio::test]
async fn every_invalidation_path_reaches_the_typed_partition() {
    let Some((cache, backend)) = memory_cache("fp-inval", entries(1000)) else { return };
    account(1);
    assert!(account_cached(1), "the second call is a hit");
    assert_eq!(backend.stats().details["partitions"], "1");

    // #[invalidate(key = ...)]
    close_account(1);
    assert!(!account_cached(1));
    assert!(account_cached(1));

    // <fn>_invalidate: true when an entry was cached.
    assert!(account_invalidate(&1).unwrap());
    assert!(!account_invalidate(&1).unwrap());
    assert!(!account_cached(1));

    // A delete by key through the Backend API (what a tiered stack sends to its memory layer).
    // (On a stack, the call above wrote the key through it: L1 and the layer below hold it.)
    assert_eq!(cache.delete("account:1").await.unwrap(), on_stack(), "text-keyed only on a stack");
    assert!(!account_cached(1), "the delete made the typed entry stale");

    // A clear.
    account(2);
    assert!(account_cached(1) && account_cached(2));
    cache.clear().await.unwrap();
    assert!(!account_cached(1) && !account_cached(2));

    // Other keys are not touched by a delete.
    assert!(account_cached(2));
    close_account(1);
    assert!(account_cached(2));
}

static STACKED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = "fp-l1", key = "stacked:<id>")]
fn stacked(id: u64) -> u64 {
    STACKED_RUNS.fetch_add(1, SeqCst);
    id * 10
}

#[tokio::test]
async fn a_tiered_delete_reaches_a_memory_layer_used_directly() {
    // The same memory backend is a stack's L1 and, registered alone, a function's cache.
    let l1 = Arc::new(MemoryBackend::new(MemoryConfig { max_entries: 100, ..base() }).unwrap());
    let l2: Arc<dyn Backend> = Arc::new(MemoryBackend::new(MemoryConfig { max_entries: 100, ..base() }).unwrap());
    let stack = TieredCache::from_layers(vec![l1.clone(), l2]).unwrap();
    CacheRegistry::global().register("fp-l1", Cache::from_arc(l1.clone()));
    assert_eq!(stacked(4), 40);
    assert_eq!(stacked(4), 40);
    assert_eq!(STACKED_RUNS.load(SeqCst), 1);
    stack.delete("stacked:4").await.unwrap();
    assert_eq!(stacked(4), 40);
    assert_eq!(STACKED_RUNS.load(SeqCst), 2, "the stack's delete reached the typed entry");
    stack.clear().await.unwrap();
    assert_eq!(stacked(4), 40);
    assert_eq!(STACKED_RUNS.load(SeqCst), 3, "the stack's clear reached the typed entry");
}

static REPOINT_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = "fp-repoint")]
fn repointed(id: u64) -> u64 {
    REPOINT_RUNS.fetch_add(1, SeqCst);
    id
}

#[test]
fn re_pointing_the_cache_is_seen_by_every_thread() {
    let Some((_, first)) = memory_cache("fp-repoint", entries(100)) else { return };
    repointed(1);
    repointed(1);
    assert_eq!(REPOINT_RUNS.load(SeqCst), 1);
    // Another thread resolves, and hits, the same cache.
    std::thread::spawn(|| repointed(1)).join().unwrap();
    assert_eq!(REPOINT_RUNS.load(SeqCst), 1);

    let (_, second) = memory_cache("fp-repoint", entries(100)).unwrap();
    repointed(1);
    assert_eq!(REPOINT_RUNS.load(SeqCst), 2, "the new cache is empty");
    std::thread::spawn(|| repointed(1)).join().unwrap();
    assert_eq!(REPOINT_RUNS.load(SeqCst), 2, "and now holds the result, for every thread");
    assert_eq!(second.front_ttls().len(), 1);
    assert_eq!(first.front_ttls().len(), 1, "the old cache still has its own");
}

// ---- a delete racing a fill -----------------------------------------------------------------

static VERSION: AtomicU64 = AtomicU64::new(1);

/// The body's two events: it has read the version, and it may return.
struct Gate {
    read: mpsc::Sender<()>,
    go: Mutex<mpsc::Receiver<()>>,
}

static GATE: Mutex<Option<Arc<Gate>>> = Mutex::new(None);

#[cached(cache = "fp-race")]
fn versioned(id: u64) -> u64 {
    let seen = VERSION.load(SeqCst);
    let gate = GATE.lock().unwrap().clone();
    if let Some(gate) = gate {
        gate.read.send(()).unwrap();
        gate.go.lock().unwrap().recv().unwrap();
    }
    seen * 1000 + id
}

#[test]
fn a_delete_during_a_fill_never_lets_the_old_value_back() {
    let Some(_) = memory_cache("fp-race", entries(100)) else { return };
    let (read_tx, read_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel();
    *GATE.lock().unwrap() = Some(Arc::new(Gate { read: read_tx, go: Mutex::new(go_rx) }));

    // A call misses and reads version 1 ...
    let caller = std::thread::spawn(|| versioned(7));
    read_rx.recv().unwrap();
    // ... the data changes and the key is invalidated while it computes ...
    VERSION.store(2, SeqCst);
    *GATE.lock().unwrap() = None;
    assert!(!versioned_invalidate(&7).unwrap());
    // ... then it stores what it computed from version 1.
    go_tx.send(()).unwrap();
    assert_eq!(caller.join().unwrap(), 1007, "the caller that started first gets its own result");
    // Its value must never be served: the next call computes from version 2.
    assert_eq!(versioned(7), 2007);
    assert_eq!(versioned(7), 2007);
}

static RACE_RUNS: AtomicU64 = AtomicU64::new(0);
static RACE_DATA: AtomicU64 = AtomicU64::new(0);

#[cached(cache = "fp-race-loop", key = "race:<id>")]
fn race_read(id: u64) -> u64 {
    RACE_RUNS.fetch_add(1, SeqCst);
    RACE_DATA.load(SeqCst) + id
}

#[test]
fn deletes_racing_fills_on_several_threads_never_resurrect() {
    let Some(_) = memory_cache("fp-race-loop", entries(100)) else { return };
    let rounds = 300;
    for round in 1..=rounds {
        let barrier = Barrier::new(3);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    barrier.wait();
                    race_read(1)
                });
            }
            barrier.wait();
            // A writer: changes the data, then invalidates (as #[invalidate] does after its body).
            RACE_DATA.store(round * 10, SeqCst);
            race_read_invalidate(&1).unwrap();
        });
        // Once the writer is done, nothing computed from older data may be served.
        assert_eq!(race_read(1), round * 10 + 1, "round {round}: a stale value came back");
    }
    assert!(RACE_RUNS.load(SeqCst) >= rounds);
}

// ---- time to live -----------------------------------------------------------------------------

static TTL_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = "fp-ttl", ttl = "1h", key = "hour:<id>")]
fn for_an_hour(id: u64) -> u64 {
    TTL_RUNS.fetch_add(1, SeqCst);
    id
}

static ZERO_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = "fp-ttl", ttl = Duration::ZERO, key = "zero:<id>")]
fn already_expired(id: u64) -> u64 {
    ZERO_RUNS.fetch_add(1, SeqCst);
    id
}

static SHORT_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = "fp-ttl", ttl = Duration::from_millis(20), key = "short:<id>")]
fn short_lived(id: u64) -> u64 {
    SHORT_RUNS.fetch_add(1, SeqCst);
    id
}

#[test]
fn deadlines_hold_on_the_typed_partition() {
    let Some((_, backend)) = memory_cache("fp-ttl", entries(100)) else { return };
    for_an_hour(1);
    for_an_hour(1);
    assert_eq!(TTL_RUNS.load(SeqCst), 1);
    let ttls = backend.front_ttls();
    assert_eq!(ttls.len(), 1);
    let left = ttls[0].unwrap();
    assert!(left <= Duration::from_secs(3600) && left > Duration::from_secs(1800), "{left:?}");

    // A deadline that has passed is never served.
    already_expired(1);
    already_expired(1);
    assert_eq!(ZERO_RUNS.load(SeqCst), 2);

    // An entry stops being served once its deadline passes (waits for that event, bounded).
    short_lived(1);
    let until = Instant::now() + Duration::from_secs(30);
    while SHORT_RUNS.load(SeqCst) == 1 && Instant::now() < until {
        short_lived(1);
        std::thread::yield_now();
    }
    assert_eq!(SHORT_RUNS.load(SeqCst), 2, "the entry expired and was computed again");
}

// ---- capacity, stats, single flight ---------------------------------------------------------------

#[cached(cache = "fp-bound")]
fn bound_a(id: u64) -> u64 {
    id
}

#[cached(cache = "fp-bound")]
fn bound_b(id: u64) -> String {
    id.to_string()
}

#[tokio::test]
async fn the_capacity_holds_for_all_the_functions_of_a_cache() {
    let Some((cache, backend)) = memory_cache("fp-bound", entries(200)) else { return };
    for id in 0..2000 {
        bound_a(id);
        bound_b(id);
    }
    cache.set("text", &1u8, None).await.unwrap();
    for id in 0..2000 {
        cache.set(&format!("text:{id}"), &id, None).await.unwrap();
    }
    let held = backend.len();
    assert!(held <= 200, "{held} entries held by a cache of 200");
    assert!(held >= 100, "{held}: the shares should be mostly used");
    assert!(backend.stats().evictions > 0);
}

static STATS_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = "fp-stats")]
fn counted(id: u64) -> Option<u64> {
    STATS_RUNS.fetch_add(1, SeqCst);
    id.is_multiple_of(2).then_some(id)
}

#[test]
fn stats_count_typed_hits_and_misses() {
    let Some((cache, backend)) = memory_cache("fp-stats", entries(100)) else { return };
    for _ in 0..3 {
        for id in 0..4 {
            counted(id);
        }
    }
    let stats = counted_stats();
    assert_eq!((stats.hits, stats.misses), (8, 4));
    assert_eq!(STATS_RUNS.load(SeqCst), 4, "None is cached too");
    let backend_stats = backend.stats();
    assert_eq!(backend_stats.hits, 8);
    assert_eq!(backend.front_ttls().len(), 4);
    // On a stack, the typed hits are hits of its L1.
    assert_eq!(cache.stats().layers.first().map_or(8, |l1| l1.hits), 8);
}

static FLIGHT_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = "fp-flight")]
fn flight(id: u64) -> u64 {
    FLIGHT_RUNS.fetch_add(1, SeqCst);
    std::thread::sleep(Duration::from_millis(5));
    id
}

#[test]
fn single_flight_holds_with_the_typed_partition() {
    let Some(_) = memory_cache("fp-flight", entries(100)) else { return };
    let callers = 16;
    for key in 0..5 {
        let barrier = Barrier::new(callers);
        std::thread::scope(|s| {
            for _ in 0..callers {
                s.spawn(|| {
                    barrier.wait();
                    assert_eq!(flight(key), key);
                });
            }
        });
    }
    assert_eq!(FLIGHT_RUNS.load(SeqCst), 5, "one execution per cold key");
}

// ---- text arguments, and keys that have no encoding -------------------------------------------

static TEXT_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = "fp-text")]
fn by_text(a: &str, b: String) -> String {
    TEXT_RUNS.fetch_add(1, SeqCst);
    format!("{a}|{b}")
}

static FLOAT_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = "fp-text")]
fn by_float(x: f64) -> u64 {
    FLOAT_RUNS.fetch_add(1, SeqCst);
    x as u64
}

#[tokio::test]
async fn text_arguments_are_distinct_and_other_types_keep_the_text_path() {
    let Some((cache, backend)) = memory_cache("fp-text", entries(100)) else { return };
    assert_eq!(by_text("a", "bc".into()), "a|bc");
    assert_eq!(by_text("ab", "c".into()), "ab|c");
    assert_eq!(by_text("a", "bc".into()), "a|bc");
    assert_eq!(TEXT_RUNS.load(SeqCst), 2);
    // f64 has no encoding: its results are text-keyed, readable by key.
    by_float(2.5);
    by_float(2.5);
    assert_eq!(FLOAT_RUNS.load(SeqCst), 1);
    assert_eq!(cache.get::<u64>(&by_float_key(&2.5)).await.unwrap(), Some(2));
    assert_eq!(backend.stats().details["partitions"], "1");
}

// ---- max_bytes ------------------------------------------------------------------------------------

/// Defect 8 of issue #13: a typed value weighed `size_of::<V>()`, so a cache bounded to 50 kB held
/// any number of 10 kB strings.
#[tokio::test]
async fn max_bytes_weighs_what_values_hold() {
    let cache = Cache::new(MemoryBackend::new(MemoryConfig { max_bytes: Some(50_000), ..base() }).unwrap());
    let big = "x".repeat(10_000);
    for i in 0..100 {
        cache.set(&format!("big:{i}"), &big, None).await.unwrap();
    }
    let mut held = 0;
    for i in 0..100 {
        if let Some(v) = cache.get::<String>(&format!("big:{i}")).await.unwrap() {
            held += v.len();
        }
    }
    assert!(held > 0 && held <= 50_000, "{held} bytes of strings held under max_bytes = 50000");

    // A value read from bytes holds them: weighed too.
    let bytes = Value::new(big.clone()).encoded(cachestack::Codec::Postcard).unwrap();
    let backend = cache.backend();
    for i in 0..100 {
        backend
            .set(&format!("raw:{i}"), Value::from_encoded(bytes.clone()), cachestack::Expiry::Default)
            .await
            .unwrap();
    }
    assert!(cache.stats().entries.unwrap() <= 5, "{:?}", cache.stats().entries);
}

#[cached(cache = "fp-bytes")]
fn big_text(id: u64) -> String {
    format!("{id}{}", "y".repeat(10_000))
}

#[test]
fn max_bytes_bounds_the_typed_partitions() {
    let Some((_, backend)) = memory_cache("fp-bytes", MemoryConfig { max_bytes: Some(50_000), ..base() }) else {
        return;
    };
    for id in 0..100 {
        big_text(id);
    }
    let held = backend.len();
    assert!(held > 0 && held <= 5, "{held} strings of 10 kB under max_bytes = 50000: {:?}", backend.stats());
    assert!(backend.weight() <= 50_000);
}
