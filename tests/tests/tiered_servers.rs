//! Tiered stacks over real servers: memory -> Redis -> PostgreSQL. Backfill from PostgreSQL with
//! the remaining TTL, expiry in the lower layers, write-through and write-back (flush on close, a
//! delete racing a queued write), a killed middle layer (Redis wrapped in a switchable test
//! backend; the shared server is never stopped), per-layer stats, and the conformance suite.
//!
//! Servers come from `tests/servers.sh` (`CACHESTACK_TEST_REDIS_URL`,
//! `CACHESTACK_TEST_POSTGRES_URL`); without them the tests are skipped outside CI. Every test uses
//! its own namespaces (Redis keys under this run's prefix, PostgreSQL rows in the table
//! `cachestack_test_tiered`) and clears them when done. Concurrency is synchronised on events;
//! sleeps only wait for entries to expire.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cachestack::{
    Backend, BackendStats, Cache, MemoryBackend, PostgresBackend, PostgresConfig, RedisBackend, RedisConfig,
    TieredCache, Value, WriteBackConfig,
};
use cachestack_tests::conformance::{profile, unique_namespace, Harness, Profile};
use cachestack_tests::faults::Faulty;

const REDIS_VAR: &str = "CACHESTACK_TEST_REDIS_URL";
const POSTGRES_VAR: &str = "CACHESTACK_TEST_POSTGRES_URL";
const TABLE: &str = "cachestack_test_tiered";

// ------------------------------------------------------------------------------------------------
// Servers and layers
// ------------------------------------------------------------------------------------------------

/// The servers' URLs, or `None` (the test is skipped outside CI) when either is missing.
fn servers() -> Option<Servers> {
    let redis = cachestack_tests::server_url(REDIS_VAR, "redis")?;
    let postgres = cachestack_tests::server_url(POSTGRES_VAR, "PostgreSQL")?;
    sweep_old_rows(&postgres);
    Some(Servers { redis, postgres })
}

#[derive(Clone)]
struct Servers {
    redis: String,
    postgres: String,
}

/// The Redis namespace for `namespace` in this test run: prefixed with `CACHESTACK_TEST_REDIS_RUN`
/// (set by `tests/servers.sh`, which removes the run's keys from the shared server at exit).
fn run_namespace(namespace: &str) -> String {
    match std::env::var("CACHESTACK_TEST_REDIS_RUN") {
        Ok(run) if !run.is_empty() => format!("{run}-{namespace}"),
        _ => namespace.to_string(),
    }
}

fn redis_config(url: &str, namespace: &str) -> RedisConfig {
    RedisConfig::from_url(url).unwrap().with_namespace(run_namespace(namespace)).with_timeout(Duration::from_secs(5))
}

fn redis(servers: &Servers, namespace: &str) -> Arc<RedisBackend> {
    Arc::new(RedisBackend::new(redis_config(&servers.redis, namespace)).unwrap())
}

fn postgres(servers: &Servers, namespace: &str) -> Arc<PostgresBackend> {
    let config = PostgresConfig::new(&servers.postgres).with_table(TABLE).with_namespace(namespace);
    Arc::new(PostgresBackend::new(config).unwrap())
}

/// Rows that earlier runs left in this file's table (the conformance suite's namespaces, which
/// nobody reads again) are removed once per process.
fn sweep_old_rows(url: &str) {
    static SWEPT: Mutex<bool> = Mutex::new(false);
    let mut swept = SWEPT.lock().unwrap();
    if *swept {
        return;
    }
    *swept = true;
    let url = url.to_owned();
    // On a thread of its own with its own runtime: callers may be inside a runtime already.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            use sqlx::Connection as _;
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            let present: bool = sqlx::query_scalar(&format!("SELECT to_regclass('{TABLE}') IS NOT NULL"))
                .fetch_one(&mut conn)
                .await
                .unwrap();
            if present {
                sqlx::raw_sql(&format!("DELETE FROM \"{TABLE}\" WHERE written_at < now() - interval '1 hour'"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
            conn.close().await.unwrap();
        });
    })
    .join()
    .unwrap();
}

/// One test's layers, each in the test's own namespace.
struct Layers {
    mem: Arc<MemoryBackend>,
    redis: Arc<RedisBackend>,
    pg: Arc<PostgresBackend>,
}

impl Layers {
    fn open(servers: &Servers, tag: &str) -> Self {
        let namespace = unique_namespace(tag);
        Layers {
            mem: Arc::new(MemoryBackend::with_capacity(1000)),
            redis: redis(servers, &namespace),
            pg: postgres(servers, &namespace),
        }
    }

    fn list(&self) -> Vec<Arc<dyn Backend>> {
        vec![self.mem.clone(), self.redis.clone(), self.pg.clone()]
    }

    /// The three stores, named, for assertions that look into every layer.
    fn stores(&self) -> [(&'static str, &dyn Backend); 3] {
        [("memory", &*self.mem), ("redis", &*self.redis), ("postgres", &*self.pg)]
    }

    /// Removes this test's keys and rows from the shared servers.
    async fn clean_up(&self) {
        self.redis.clear().await.unwrap();
        self.pg.clear().await.unwrap();
    }
}

fn stack(layers: Vec<Arc<dyn Backend>>) -> TieredCache {
    TieredCache::from_layers(layers).unwrap()
}

fn write_back(layers: Vec<Arc<dyn Backend>>, config: WriteBackConfig) -> TieredCache {
    layers.into_iter().fold(TieredCache::builder(), |b, l| b.layer_arc(l)).write_back(config).build().unwrap()
}

async fn read_u64(backend: &dyn Backend, key: &str) -> Option<u64> {
    backend.get(key).await.unwrap().map(|e| e.value.get::<u64>().unwrap())
}

fn detail(stats: &BackendStats, name: &str) -> u64 {
    stats.details.get(name).unwrap_or_else(|| panic!("no detail {name} in {stats:?}")).parse().unwrap()
}

/// The per-layer counters of a stack add up: every lookup a layer missed went on to the next
/// layer (or, for the last, was a miss of the stack), and the stack's hits are the layers' hits.
fn assert_stats_add_up(stats: &BackendStats) {
    for pair in stats.layers.windows(2) {
        assert_eq!(pair[0].misses, pair[1].hits + pair[1].misses, "misses of a layer reach the next one: {stats:#?}");
    }
    assert_eq!(stats.hits, stats.layers.iter().map(|l| l.hits).sum::<u64>(), "{stats:#?}");
    assert_eq!(stats.misses, stats.layers.last().unwrap().misses, "{stats:#?}");
    assert_eq!(stats.errors, stats.layers.iter().map(|l| l.errors).sum::<u64>(), "{stats:#?}");
}

/// Waits for time to pass until `key` has expired in `backend` (expiry is about time; nothing
/// else is synchronised by this).
async fn wait_until_expired(backend: &dyn Backend, key: &str) {
    while backend.get(key).await.unwrap().is_some() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ------------------------------------------------------------------------------------------------
// Reads and backfill
// ------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_in_postgres_backfills_redis_and_memory_with_the_remaining_ttl() {
    let Some(servers) = servers() else { return };
    let layers = Layers::open(&servers, "tiered-backfill");
    let cache = Cache::new(stack(layers.list()));
    let given = Duration::from_secs(10);
    layers.pg.set("p", Value::new(profile(3)), cachestack::Expiry::after(given)).await.unwrap();
    // Let a little of the TTL go by, so that "the remaining TTL" and "the TTL it was given"
    // differ by more than the servers' clock granularity.
    while layers.pg.get("p").await.unwrap().unwrap().ttl().unwrap() > given - Duration::from_millis(1200) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let entry = cache.backend().get("p").await.unwrap().expect("served from PostgreSQL");
    let left = entry.ttl().expect("an entry with a TTL reports it");
    assert!(left <= given - Duration::from_millis(1200), "the stack reports {left:?}, more than PostgreSQL had left");
    // Every upper layer got a copy living no longer than what was left in PostgreSQL.
    let in_redis = layers.redis.get("p").await.unwrap().expect("Redis backfilled");
    let in_mem = layers.mem.get("p").await.unwrap().expect("memory backfilled");
    for (name, copy) in [("redis", &in_redis), ("memory", &in_mem)] {
        let ttl = copy.ttl().unwrap_or_else(|| panic!("{name} copy has no TTL: it would outlive PostgreSQL's"));
        assert!(ttl <= left, "{name} copy lives {ttl:?}, longer than the {left:?} left in PostgreSQL");
        assert!(!ttl.is_zero());
    }
    assert_eq!(in_redis.value.get::<Profile>().unwrap(), profile(3));

    // The typed read decodes once; memory then holds the typed value and answers alone.
    assert_eq!(cache.get::<Profile>("p").await.unwrap(), Some(profile(3)));
    assert!(layers.mem.get("p").await.unwrap().unwrap().value.is_typed(), "memory holds an undecoded value");
    assert_eq!(cache.get::<Profile>("p").await.unwrap(), Some(profile(3)));
    let stats = cache.stats();
    assert_eq!(stats.layers.iter().map(|l| l.hits).collect::<Vec<_>>(), [2, 0, 1], "{stats:#?}");
    assert_eq!(stats.layers.iter().map(|l| l.backfills).collect::<Vec<_>>(), [1, 1, 0], "{stats:#?}");
    assert_eq!((stats.layers[1].name.as_str(), stats.layers[2].name.as_str()), ("redis", "postgres"));
    assert_stats_add_up(&stats);
    layers.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_in_redis_backfills_memory_only_and_an_entry_without_expiry_stays_without() {
    let Some(servers) = servers() else { return };
    let layers = Layers::open(&servers, "tiered-redis-hit");
    let stack = stack(layers.list());
    layers.redis.set("forever", Value::new(4u64), cachestack::Expiry::Default).await.unwrap();
    let entry = stack.get("forever").await.unwrap().unwrap();
    assert_eq!((entry.value.get::<u64>().unwrap(), entry.ttl()), (4, None));
    assert_eq!(layers.mem.get("forever").await.unwrap().unwrap().ttl(), None);
    assert!(layers.pg.get("forever").await.unwrap().is_none(), "a read never writes below the layer that hit");
    let stats = stack.stats();
    assert_eq!(stats.layers.iter().map(|l| l.backfills).collect::<Vec<_>>(), [1, 0, 0]);
    assert_stats_add_up(&stats);
    layers.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_in_redis_and_postgres_is_honoured() {
    let Some(servers) = servers() else { return };
    let layers = Layers::open(&servers, "tiered-expiry");
    let stack = stack(layers.list());
    let short = Some(Duration::from_millis(150));
    layers.redis.set("in-redis", Value::new(1u64), cachestack::Expiry::from_ttl(short)).await.unwrap();
    layers.pg.set("in-postgres", Value::new(2u64), cachestack::Expiry::from_ttl(short)).await.unwrap();
    layers.redis.set("in-both", Value::new(3u64), cachestack::Expiry::from_ttl(short)).await.unwrap();
    layers.pg.set("in-both", Value::new(3u64), cachestack::Expiry::from_ttl(short)).await.unwrap();
    // Expired in Redis only: PostgreSQL still holds a live, newer-lived value, which is served.
    layers.redis.set("redis-expired", Value::new(4u64), cachestack::Expiry::from_ttl(short)).await.unwrap();
    layers.pg.set("redis-expired", Value::new(5u64), cachestack::Expiry::after(Duration::from_secs(60))).await.unwrap();

    wait_until_expired(&*layers.redis, "in-redis").await;
    wait_until_expired(&*layers.redis, "in-both").await;
    wait_until_expired(&*layers.redis, "redis-expired").await;
    wait_until_expired(&*layers.pg, "in-postgres").await;
    wait_until_expired(&*layers.pg, "in-both").await;

    for key in ["in-redis", "in-postgres", "in-both"] {
        assert!(stack.get(key).await.unwrap().is_none(), "{key} served after it expired");
        assert!(!stack.exists(key).await.unwrap());
        assert!(layers.mem.get(key).await.unwrap().is_none(), "{key} backfilled into memory after it expired");
        assert!(layers.redis.get(key).await.unwrap().is_none(), "{key} backfilled into Redis after it expired");
    }
    assert_eq!(read_u64(&stack, "redis-expired").await, Some(5), "PostgreSQL's live value");
    assert_eq!(read_u64(&*layers.redis, "redis-expired").await, Some(5), "backfilled over the expired copy");
    let stats = stack.stats();
    assert_eq!((stats.hits, stats.misses), (1, 3), "{stats:#?}");
    assert_eq!(stats.layers[0].backfills, 1);
    layers.clean_up().await;
}

// ------------------------------------------------------------------------------------------------
// Write-through
// ------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_through_writes_all_three_and_deletes_and_clears_reach_all_three() {
    let Some(servers) = servers() else { return };
    let layers = Layers::open(&servers, "tiered-write-through");
    let stack = stack(layers.list());
    let ttl = Duration::from_secs(60);
    stack.set("k", Value::new(5u64), cachestack::Expiry::after(ttl)).await.unwrap();
    for (name, store) in layers.stores() {
        let entry = store.get("k").await.unwrap().unwrap_or_else(|| panic!("write-through missed {name}"));
        assert_eq!(entry.value.get::<u64>().unwrap(), 5, "{name}");
        let left = entry.ttl().unwrap_or_else(|| panic!("{name} lost the TTL"));
        assert!(left <= ttl && !left.is_zero(), "{name} keeps it for {left:?}");
    }
    let entries: Vec<(&str, Value)> =
        (0..5u64).map(|i| (["a", "b", "c", "d", "e"][i as usize], Value::new(i))).collect();
    stack.set_many(&entries, cachestack::Expiry::Default).await.unwrap();
    for (name, store) in layers.stores() {
        assert_eq!(read_u64(store, "e").await, Some(4), "set_many missed {name}");
    }

    assert!(stack.delete("k").await.unwrap());
    assert_eq!(stack.delete_many(&["a", "b", "zz"]).await.unwrap(), 2);
    for (name, store) in layers.stores() {
        for key in ["k", "a", "b"] {
            assert!(store.get(key).await.unwrap().is_none(), "{key} still in {name} after the delete");
        }
    }
    stack.clear().await.unwrap();
    for (name, store) in layers.stores() {
        for key in ["c", "d", "e"] {
            assert!(store.get(key).await.unwrap().is_none(), "{key} still in {name} after clear");
        }
    }
    assert_eq!(stack.stats().errors, 0);
    layers.clean_up().await;
}

// ------------------------------------------------------------------------------------------------
// Write-back
// ------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_back_stores_everything_in_redis_and_postgres_on_flush_and_close() {
    let Some(servers) = servers() else { return };
    let layers = Layers::open(&servers, "tiered-write-back");
    let stack = write_back(layers.list(), WriteBackConfig::new(8));
    stack.set("first", Value::new(1u64), cachestack::Expiry::after(Duration::from_secs(60))).await.unwrap();
    assert_eq!(read_u64(&*layers.mem, "first").await, Some(1), "memory is written at once");
    stack.flush().await.unwrap();
    assert_eq!(read_u64(&*layers.redis, "first").await, Some(1));
    assert_eq!(read_u64(&*layers.pg, "first").await, Some(1));

    // More writes than the queue holds (back-pressure), then an orderly shutdown.
    for i in 0..60u64 {
        stack.set(&format!("k{i}"), Value::new(i), cachestack::Expiry::after(Duration::from_secs(60))).await.unwrap();
    }
    stack.close().await.unwrap();
    for i in 0..60u64 {
        assert_eq!(read_u64(&*layers.redis, &format!("k{i}")).await, Some(i), "k{i} lost in Redis on close");
        let entry = layers.pg.get(&format!("k{i}")).await.unwrap().unwrap_or_else(|| panic!("k{i} lost in PostgreSQL"));
        assert!(entry.ttl().unwrap() <= Duration::from_secs(60));
    }
    let stats = stack.stats();
    assert_eq!(detail(&stats, "queue_written"), 61, "{stats:#?}");
    assert_eq!(stats.errors, 0);
    // Closed: later writes go through at once.
    stack.set("after", Value::new(7u64), cachestack::Expiry::Default).await.unwrap();
    assert_eq!(read_u64(&*layers.pg, "after").await, Some(7));
    layers.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_racing_a_queued_write_leaves_the_key_deleted_in_every_layer() {
    let Some(servers) = servers() else { return };
    let layers = Layers::open(&servers, "tiered-race");
    let (gated, mut entered) = Faulty::gated(layers.redis.clone());
    let gated = Arc::new(gated);
    let stack =
        Arc::new(write_back(vec![layers.mem.clone(), gated.clone(), layers.pg.clone()], WriteBackConfig::default()));
    // An older value in PostgreSQL that must not come back either.
    layers.pg.set("k", Value::new(0u64), cachestack::Expiry::Default).await.unwrap();

    // v1 is on its way into Redis (held at the gate), v2 is queued behind it.
    stack.set("k", Value::new(1u64), cachestack::Expiry::Default).await.unwrap();
    assert_eq!(entered.recv().await.unwrap(), "k");
    stack.set("k", Value::new(2u64), cachestack::Expiry::Default).await.unwrap();

    // The delete runs concurrently with the in-flight write; once it has started (its count
    // moved) let the held write land.
    let deleter = {
        let stack = stack.clone();
        tokio::spawn(async move { stack.delete("k").await.unwrap() })
    };
    while stack.stats().deletes == 0 {
        tokio::task::yield_now().await;
    }
    gated.open_gate();
    assert!(deleter.await.unwrap());
    assert!(stack.get("k").await.unwrap().is_none(), "read right after the delete");

    stack.flush().await.unwrap();
    for (name, store) in layers.stores() {
        assert!(store.get("k").await.unwrap().is_none(), "the old value came back in {name}");
    }
    assert!(stack.get("k").await.unwrap().is_none());
    stack.close().await.unwrap();
    for (name, store) in layers.stores() {
        assert!(store.get("k").await.unwrap().is_none(), "the old value came back in {name} after close");
    }
    layers.clean_up().await;
}

/// Writers keep overwriting keys through a write-back stack while readers read them; then every
/// key is deleted while writes are still queued. No deleted key may come back in any layer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deletes_racing_many_queued_writes_never_resurrect_a_key() {
    let Some(servers) = servers() else { return };
    let layers = Layers::open(&servers, "tiered-races");
    const KEYS: u64 = 12;
    const WRITERS: u64 = 3;
    let stack = Arc::new(write_back(layers.list(), WriteBackConfig::new(16)));
    let key = |k: u64| format!("key{k}");
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2u64)
        .map(|r| {
            let (stack, stop) = (stack.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = r;
                while !stop.load(SeqCst) {
                    let _ = stack.get(&format!("key{}", n % KEYS)).await.unwrap();
                    n += 5;
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS as usize));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (stack, barrier) = (stack.clone(), barrier.clone());
            tokio::spawn(async move {
                for round in 0..5u64 {
                    for k in 0..KEYS {
                        stack.set(&key(k), Value::new(round * 100 + w), cachestack::Expiry::Default).await.unwrap();
                    }
                }
                // Every write of every writer is issued before any key is deleted.
                barrier.wait().await;
                for k in (w..KEYS).step_by(WRITERS as usize) {
                    stack.delete(&key(k)).await.unwrap();
                    assert!(stack.get(&key(k)).await.unwrap().is_none(), "{} readable right after its delete", key(k));
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    stop.store(true, SeqCst);
    for reader in readers {
        reader.await.unwrap();
    }
    stack.close().await.unwrap();
    for k in 0..KEYS {
        for (name, store) in layers.stores() {
            assert!(store.get(&key(k)).await.unwrap().is_none(), "{} came back in {name}", key(k));
        }
        assert!(stack.get(&key(k)).await.unwrap().is_none());
    }
    assert!(detail(&stack.stats(), "queue_enqueued") > 0);
    layers.clean_up().await;
}

// ------------------------------------------------------------------------------------------------
// A killed middle layer
// ------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_redis_layer_leaves_the_stack_serving_from_memory_and_postgres() {
    let Some(servers) = servers() else { return };
    let layers = Layers::open(&servers, "tiered-killed");
    let faulty = Arc::new(Faulty::new(layers.redis.clone()));
    let stack = stack(vec![layers.mem.clone(), faulty.clone(), layers.pg.clone()]);
    for i in 0..5u64 {
        stack.set(&format!("k{i}"), Value::new(i), cachestack::Expiry::Default).await.unwrap();
    }
    faulty.set_down(true);
    layers.mem.clear().await.unwrap();
    for i in 0..5u64 {
        assert_eq!(read_u64(&stack, &format!("k{i}")).await, Some(i), "served from PostgreSQL past the dead Redis");
        assert_eq!(read_u64(&stack, &format!("k{i}")).await, Some(i), "then from memory");
    }
    stack.set("new", Value::new(99u64), cachestack::Expiry::Default).await.unwrap();
    assert_eq!(read_u64(&*layers.pg, "new").await, Some(99), "writes still reach PostgreSQL");
    assert_eq!(read_u64(&*layers.mem, "new").await, Some(99));
    assert!(layers.redis.get("new").await.unwrap().is_none(), "the dead layer was not written");
    assert!(stack.delete("k0").await.unwrap(), "deletes still work");
    assert!(layers.pg.get("k0").await.unwrap().is_none());

    let stats = stack.stats();
    assert_eq!((stats.layers[0].hits, stats.layers[2].hits), (5, 5), "{stats:#?}");
    assert_eq!(stats.layers[0].backfills, 5);
    // 5 failed reads, 5 failed backfills, one failed write, one failed delete.
    assert_eq!(stats.layers[1].errors, 12, "{stats:#?}");
    assert_eq!((stats.layers[0].errors, stats.layers[2].errors), (0, 0));
    assert_stats_add_up(&stats);

    // It comes back: reads reach it and backfill it again.
    faulty.set_down(false);
    layers.mem.clear().await.unwrap();
    layers.redis.delete("k3").await.unwrap();
    assert_eq!(read_u64(&stack, "k3").await, Some(3));
    assert_eq!(read_u64(&*layers.redis, "k3").await, Some(3), "backfilled into the revived Redis");
    layers.clean_up().await;
}

/// A delete that failed in a dead middle layer leaves a tombstone there, replayed before the
/// stack's next call to the layer: the deleted value is not served (nor backfilled) again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_while_redis_is_down_stays_deleted_when_it_comes_back() {
    let Some(servers) = servers() else { return };
    let layers = Layers::open(&servers, "tiered-stale");
    let faulty = Arc::new(Faulty::new(layers.redis.clone()));
    let stack = stack(vec![layers.mem.clone(), faulty.clone(), layers.pg.clone()]);
    stack.set("k", Value::new(1u64), cachestack::Expiry::Default).await.unwrap();
    faulty.set_down(true);
    assert!(stack.delete("k").await.unwrap());
    faulty.set_down(false);
    let read = read_u64(&stack, "k").await;
    layers.clean_up().await;
    assert_eq!(read, None, "the deleted value came back from the revived Redis");
}

// ------------------------------------------------------------------------------------------------
// Per-layer stats
// ------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_layer_stats_add_up_across_memory_redis_and_postgres() {
    let Some(servers) = servers() else { return };
    let layers = Layers::open(&servers, "tiered-stats");
    let stack = stack(layers.list());
    stack.set("in-all", Value::new(1u64), cachestack::Expiry::Default).await.unwrap();
    layers.redis.set("in-redis", Value::new(2u64), cachestack::Expiry::Default).await.unwrap();
    layers.pg.set("in-postgres", Value::new(3u64), cachestack::Expiry::Default).await.unwrap();
    layers.pg.set("bulk", Value::new(4u64), cachestack::Expiry::Default).await.unwrap();

    for key in ["in-all", "in-redis", "in-postgres", "nowhere"] {
        let _ = stack.get(key).await.unwrap();
    }
    let stats = stack.stats();
    assert_eq!(stats.layers.iter().map(|l| l.hits).collect::<Vec<_>>(), [1, 1, 1], "{stats:#?}");
    assert_eq!(stats.layers.iter().map(|l| l.misses).collect::<Vec<_>>(), [3, 2, 1], "{stats:#?}");
    assert_eq!(stats.layers.iter().map(|l| l.backfills).collect::<Vec<_>>(), [2, 1, 0], "{stats:#?}");
    assert_eq!((stats.hits, stats.misses, stats.writes), (3, 1, 1));
    assert_stats_add_up(&stats);

    // Bulk reads: memory now holds three of these, PostgreSQL the fourth, the last is nowhere.
    let got = stack.get_many(&["in-all", "in-redis", "in-postgres", "bulk", "nowhere"]).await.unwrap();
    let values: Vec<Option<u64>> = got.iter().map(|e| e.as_ref().map(|e| e.value.get::<u64>().unwrap())).collect();
    assert_eq!(values, [Some(1), Some(2), Some(3), Some(4), None]);
    let stats = stack.stats();
    assert_eq!(stats.layers.iter().map(|l| l.hits).collect::<Vec<_>>(), [4, 1, 2], "{stats:#?}");
    assert_eq!((stats.hits, stats.misses), (7, 2));
    assert_eq!(stats.layers[0].name, "memory");
    assert_eq!(stats.layers[2].details["index"], "2");
    assert_eq!(stats.details["layers"], "memory > redis > postgres");
    assert_stats_add_up(&stats);
    layers.clean_up().await;
}

// ------------------------------------------------------------------------------------------------
// The backend conformance suite, run against memory -> Redis -> PostgreSQL
// ------------------------------------------------------------------------------------------------

fn stack_harness(write_back_queue: Option<usize>) -> Option<Harness> {
    let servers = servers()?;
    let open = servers.clone();
    let mut h = Harness::new(move |namespace| {
        let builder = TieredCache::builder()
            .layer(MemoryBackend::with_capacity(100_000))
            .layer_arc(redis(&open, namespace))
            .layer_arc(postgres(&open, namespace));
        let builder = match write_back_queue {
            // A small queue, so that writers meet backpressure; but a writer waits for room
            // rather than dropping its write (the default after 100 ms, tested on its own):
            // the suite checks that every write reaches every layer, on a loaded machine too.
            Some(capacity) => {
                builder.write_back(WriteBackConfig::new(capacity).with_max_wait(Duration::from_secs(120)))
            }
            None => builder,
        };
        Arc::new(builder.build().unwrap())
    });
    h.ttl_unit = Duration::from_millis(50);
    // Garbage is planted in the middle layer, below the stack's API.
    let plant = servers.redis.clone();
    h.raw_writer = Some(Arc::new(move |namespace: &str, key: &str, bytes: &[u8]| {
        let full = RedisBackend::new(redis_config(&plant, namespace)).unwrap().redis_key(key);
        let mut conn = redis::Client::open(plant.as_str()).unwrap().get_connection().unwrap();
        let () = redis::cmd("SET").arg(full).arg(bytes).query(&mut conn).unwrap();
    }));
    Some(h)
}

cachestack_tests::conformance_suite!(memory_redis_postgres_write_through, || stack_harness(None));
cachestack_tests::conformance_suite!(memory_redis_postgres_write_back, || stack_harness(Some(64)));
