//! Tiered stacks: reads with backfill, write-through and write-back, invalidation racing queued
//! writes, failing and bypassed layers, per-layer stats. Memory over memory, over a byte store
//! written here, over test backends that fail or hold writes on demand, and over files.
//!
//! Concurrency tests synchronise on events (channels, semaphores, barriers); expiry is driven by
//! a manual clock, and the breaker's cool-down by tokio's paused time.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use cachestack::{
    async_trait, Backend, BackendStats, BreakerConfig, Cache, Counters, Entry, FileBackend, FileConfig, MemoryBackend,
    MemoryConfig, OnFull, Result, TieredCache, Value, ValueFormat, WriteBackConfig,
};
use cachestack_tests::conformance::{profile, unique_namespace, Harness, Profile};
use cachestack_tests::faults::Faulty;

// ------------------------------------------------------------------------------------------------
// Test backends
// ------------------------------------------------------------------------------------------------

/// A byte store (values sealed in envelopes, as file and network tiers keep them) over a map
/// shared by namespaces, with real-time expiry.
#[derive(Debug)]
struct Bytes {
    namespace: String,
    store: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    format: ValueFormat,
    counters: Counters,
}

impl Bytes {
    fn new() -> Self {
        Self::shared("default", Arc::default())
    }
    fn shared(namespace: &str, store: Arc<Mutex<HashMap<String, Vec<u8>>>>) -> Self {
        Bytes { namespace: namespace.into(), store, format: ValueFormat::default(), counters: Counters::default() }
    }
    fn full_key(&self, key: &str) -> String {
        format!("{}\u{1f}{key}", self.namespace)
    }
}

#[async_trait]
impl Backend for Bytes {
    fn name(&self) -> &str {
        "bytes"
    }
    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        let bytes = self.store.lock().unwrap().get(&self.full_key(key)).cloned();
        let found = match bytes {
            None => None,
            Some(bytes) => match self.format.open(key, &bytes) {
                Ok((value, expires)) => {
                    let now = SystemTime::now();
                    match expires {
                        Some(t) if t <= now => None,
                        _ => Some(Entry::new(value, expires.map(cachestack::Deadline::at))),
                    }
                }
                Err(err) => {
                    self.counters.record_invalid("bytes", key, &err);
                    None
                }
            },
        };
        self.counters.record_lookup(found.is_some());
        Ok(found)
    }
    async fn set(&self, key: &str, value: Value, expiry: cachestack::Expiry) -> Result<()> {
        let bytes = self.format.seal(key, &value, expiry.resolve(None).map(|d| d.time()))?;
        self.counters.record_write();
        self.store.lock().unwrap().insert(self.full_key(key), bytes);
        Ok(())
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        self.counters.record_delete();
        Ok(self.store.lock().unwrap().remove(&self.full_key(key)).is_some())
    }
    async fn clear(&self) -> Result<()> {
        let prefix = self.full_key("");
        self.store.lock().unwrap().retain(|k, _| !k.starts_with(&prefix));
        Ok(())
    }
    fn stats(&self) -> BackendStats {
        self.counters.snapshot("bytes")
    }
}

/// A store whose clock the test moves by hand, to check TTL arithmetic and expiry exactly.
#[derive(Debug, Default)]
struct Clocked {
    now: Mutex<Duration>,
    map: Mutex<HashMap<String, (Value, Option<cachestack::Deadline>)>>,
}

impl Clocked {
    fn advance(&self, by: Duration) {
        *self.now.lock().unwrap() += by;
    }
}

#[async_trait]
impl Backend for Clocked {
    fn name(&self) -> &str {
        "clocked"
    }
    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        let now = SystemTime::now() + *self.now.lock().unwrap();
        let map = self.map.lock().unwrap();
        Ok(match map.get(key) {
            Some((_, Some(deadline))) if deadline.has_passed_at(now) => None,
            Some((value, deadline)) => Some(Entry::new(value.clone(), *deadline)),
            None => None,
        })
    }
    async fn set(&self, key: &str, value: Value, expiry: cachestack::Expiry) -> Result<()> {
        let deadline = expiry.resolve(None);
        self.map.lock().unwrap().insert(key.into(), (value, deadline));
        Ok(())
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        Ok(self.map.lock().unwrap().remove(key).is_some())
    }
    async fn clear(&self) -> Result<()> {
        self.map.lock().unwrap().clear();
        Ok(())
    }
    fn stats(&self) -> BackendStats {
        BackendStats::default()
    }
}

// ------------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------------

fn mem(capacity: u64) -> Arc<MemoryBackend> {
    Arc::new(MemoryBackend::with_capacity(capacity))
}

fn stack(layers: &[Arc<dyn Backend>]) -> TieredCache {
    TieredCache::from_layers(layers.to_vec()).unwrap()
}

fn write_back(layers: &[Arc<dyn Backend>], config: WriteBackConfig) -> TieredCache {
    layers.iter().cloned().fold(TieredCache::builder(), |b, l| b.layer_arc(l)).write_back(config).build().unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_stack_from_layers_with_the_default_breaker_bypasses_a_dead_remote_layer() {
    let l2 = Arc::new(Faulty::new(mem(10)));
    let config = BreakerConfig::default();
    let stack = TieredCache::from_layers_with_breaker(vec![mem(10), l2.clone()], config).unwrap();
    let stats = stack.stats();
    assert!(!stats.layers[0].details.contains_key("breaker"), "an in-process layer has no breaker: {stats:#?}");
    assert_eq!(stats.layers[1].details["breaker"], "closed");

    l2.set_down(true);
    let threshold = u64::from(config.failure_threshold);
    for _ in 0..threshold {
        assert!(stack.get("k").await.unwrap().is_none());
    }
    assert_eq!(l2.calls.load(SeqCst), threshold);
    let stats = stack.stats();
    assert_eq!(stats.layers[1].details["breaker"], "open");
    assert_eq!(detail(&stats.layers[1], "breaker_trips"), 1);
    assert_eq!(detail(&stats.layers[1], "bypassed"), 0);

    // Bypassed: not called, the stack answers from L1, the stats show it.
    assert!(stack.get("k").await.unwrap().is_none());
    stack.set("k", Value::new(1u64), cachestack::Expiry::Default).await.unwrap();
    assert_eq!(read_u64(&stack, "k").await, Some(1));
    assert_eq!(l2.calls.load(SeqCst), threshold, "a bypassed layer is not called");
    let stats = stack.stats();
    assert_eq!(detail(&stats.layers[1], "bypassed"), 2);
    assert_eq!(stats.layers[1].errors, threshold);
    assert_stats_add_up(&stats);

    // The cool-down is the default's.
    tokio::time::advance(config.cool_down).await;
    assert_eq!(stack.stats().layers[1].details["breaker"], "half-open");
}

#[tokio::test(start_paused = true)]
async fn from_layers_has_the_builders_default_no_breaker() {
    let l2 = Arc::new(Faulty::new(mem(10)));
    let stack = TieredCache::from_layers(vec![mem(10), l2.clone()]).unwrap();
    let built = TieredCache::builder().layer_arc(mem(10)).layer_arc(l2.clone()).build().unwrap();
    for stack in [&stack, &built] {
        assert!(!stack.stats().layers[1].details.contains_key("breaker"));
    }
    l2.set_down(true);
    for _ in 0..20 {
        assert!(stack.get("k").await.unwrap().is_none());
    }
    assert_eq!(l2.calls.load(SeqCst), 20, "without a breaker a failing layer is tried on every call");
    assert_eq!(detail(&stack.stats().layers[1], "bypassed"), 0);
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
    assert!(stats.errors >= stats.layers.iter().map(|l| l.errors).sum::<u64>(), "{stats:#?}");
}

// ------------------------------------------------------------------------------------------------
// Reads and backfill
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_hit_below_backfills_the_faster_layers_and_the_next_read_is_an_l1_hit() {
    let (l1, l2, l3) = (mem(100), mem(100), mem(100));
    let stack = stack(&[l1.clone(), l2.clone(), l3.clone()]);
    l3.set("k", Value::new(7u64), cachestack::Expiry::Default).await.unwrap();

    assert_eq!(read_u64(&stack, "k").await, Some(7));
    assert_eq!(read_u64(&*l1, "k").await, Some(7), "L1 backfilled");
    assert_eq!(read_u64(&*l2, "k").await, Some(7), "L2 backfilled");
    let stats = stack.stats();
    assert_eq!((stats.layers[0].misses, stats.layers[1].misses, stats.layers[2].hits), (1, 1, 1));
    assert_eq!((stats.layers[0].backfills, stats.layers[1].backfills, stats.layers[2].backfills), (1, 1, 0));

    assert_eq!(read_u64(&stack, "k").await, Some(7));
    let stats = stack.stats();
    assert_eq!(stats.layers[0].hits, 1, "second read served by L1");
    assert_eq!(stats.layers[2].hits, 1, "L3 not asked again");
    assert_eq!((stats.hits, stats.misses), (2, 0));
    assert_eq!(stats.layers[1].name, "memory");
    assert_eq!(stats.layers[2].details["index"], "2");
    assert_stats_add_up(&stats);
}

#[tokio::test]
async fn a_miss_everywhere_is_one_miss_of_the_stack() {
    let stack = stack(&[mem(10), mem(10)]);
    assert!(stack.get("nope").await.unwrap().is_none());
    assert!(!stack.exists("nope").await.unwrap());
    let stats = stack.stats();
    assert_eq!((stats.hits, stats.misses), (0, 1));
    assert_eq!((stats.layers[0].misses, stats.layers[1].misses), (1, 1));
    assert_stats_add_up(&stats);
}

#[tokio::test]
async fn backfill_uses_the_remaining_ttl_never_longer() {
    // Absolute expiry: a backfill writes the deadline of the layer the entry was found in,
    // unchanged, however long the entry already lived there; never a later one.
    let l1 = mem(10);
    let l2 = Arc::new(Clocked::default());
    let stack = stack(&[l1.clone(), l2.clone()]);
    let deadline = cachestack::Deadline::after(Duration::from_secs(10));
    l2.set("k", Value::new(1u64), deadline.into()).await.unwrap();
    l2.advance(Duration::from_secs(4));

    let entry = stack.get("k").await.unwrap().unwrap();
    assert_eq!(entry.expires, Some(deadline), "the stack reports what the layer reported");
    assert_eq!(l1.get("k").await.unwrap().unwrap().expires, Some(deadline), "L1 gets the same deadline");
    assert_eq!(stack.stats().layers[0].backfills, 1);
}

#[tokio::test]
async fn backfill_into_a_layer_with_a_longer_default_ttl_keeps_the_deadline() {
    let config =
        MemoryConfig { max_entries: 10, default_ttl: Some(Duration::from_secs(3_600)), ..MemoryConfig::default() };
    let l1 = Arc::new(MemoryBackend::new(config).unwrap());
    let l2 = mem(10);
    let stack = stack(&[l1.clone(), l2.clone()]);
    let deadline = cachestack::Deadline::after(Duration::from_secs(10));
    l2.set("k", Value::new(1u64), deadline.into()).await.unwrap();
    assert_eq!(read_u64(&stack, "k").await, Some(1));
    assert_eq!(l1.get("k").await.unwrap().unwrap().expires, Some(deadline));
}

/// A memory layer without a default TTL keeps a write with the default expiry as long as the
/// nearest layer below it that has one (the deadline fixed once, at the write): an L1 copy never
/// outlives the copy below it. An explicit "never expires" stays that everywhere, and a memory
/// layer with a default TTL of its own keeps its own.
#[tokio::test]
async fn a_memory_layer_without_a_default_ttl_expires_with_the_layer_below() {
    let ttl = |secs| {
        Arc::new(
            MemoryBackend::new(MemoryConfig {
                default_ttl: Some(Duration::from_secs(secs)),
                ..MemoryConfig::default()
            })
            .unwrap(),
        )
    };
    let (l1, middle, l3) = (mem(10), mem(10), ttl(3_600));
    let stack = stack(&[l1.clone(), middle.clone(), l3.clone()]);
    stack.set("k", Value::new(1u8), cachestack::Expiry::Default).await.unwrap();
    let below = l3.get("k").await.unwrap().unwrap().expires;
    assert!(below.is_some_and(|d| d.remaining() > Duration::from_secs(1_800)), "{below:?}");
    for layer in [&l1, &middle] {
        assert_eq!(layer.get("k").await.unwrap().unwrap().expires, below, "the deadline of the layer below");
    }
    stack.set("n", Value::new(1u8), cachestack::Expiry::Never).await.unwrap();
    for layer in [&l1, &middle, &l3] {
        assert_eq!(layer.get("n").await.unwrap().unwrap().expires, None);
    }

    let (short, l2) = (ttl(60), ttl(3_600));
    let stack = self::stack(&[short.clone(), l2.clone()]);
    stack.set("k", Value::new(1u8), cachestack::Expiry::Default).await.unwrap();
    let own = short.get("k").await.unwrap().unwrap().ttl().unwrap();
    assert!(own <= Duration::from_secs(60), "L1 keeps its own shorter TTL: {own:?}");
}

#[tokio::test]
async fn an_entry_without_expiry_is_backfilled_without_expiry() {
    let l1 = mem(10);
    let l2 = Arc::new(Clocked::default());
    let stack = stack(&[l1.clone(), l2.clone()]);
    l2.set("k", Value::new(1u64), cachestack::Expiry::Default).await.unwrap();
    assert_eq!(stack.get("k").await.unwrap().unwrap().ttl(), None);
    assert_eq!(l1.get("k").await.unwrap().unwrap().ttl(), None);
}

#[tokio::test]
async fn an_entry_about_to_expire_is_served_but_not_backfilled() {
    // Less than `min_backfill_ttl` left (an hour left, two required: no timing involved).
    let l1 = mem(10);
    let l2 = Arc::new(Clocked::default());
    let min = Duration::from_secs(7_200);
    let stack =
        TieredCache::builder().layer_arc(l1.clone()).layer_arc(l2.clone()).min_backfill_ttl(min).build().unwrap();
    let deadline = cachestack::Deadline::after(Duration::from_secs(3_600));
    l2.set("k", Value::new(1u64), deadline.into()).await.unwrap();
    let entry = stack.get("k").await.unwrap().expect("served");
    assert_eq!((entry.value.get::<u64>().unwrap(), entry.expires), (1, Some(deadline)));
    assert!(l1.get("k").await.unwrap().is_none(), "not backfilled");
    assert_eq!(stack.stats().layers[0].backfills, 0);

    // More than `min_backfill_ttl` left: backfilled, with the same deadline.
    let later = cachestack::Deadline::after(Duration::from_secs(3 * 3_600));
    l2.set("k2", Value::new(2u64), later.into()).await.unwrap();
    assert_eq!(read_u64(&stack, "k2").await, Some(2));
    assert_eq!(l1.get("k2").await.unwrap().unwrap().expires, Some(later));
    assert_eq!(stack.stats().layers[0].backfills, 1);
}

#[tokio::test]
async fn an_entry_expired_in_a_lower_layer_is_a_miss_and_not_backfilled() {
    let l1 = mem(10);
    let l2 = Arc::new(Clocked::default());
    let stack = stack(&[l1.clone(), l2.clone()]);
    l2.set("k", Value::new(1u64), cachestack::Expiry::after(Duration::from_secs(5))).await.unwrap();
    l2.advance(Duration::from_secs(5));
    assert!(stack.get("k").await.unwrap().is_none());
    assert!(l1.get("k").await.unwrap().is_none());
    assert_eq!(stack.stats().misses, 1);
}

#[tokio::test]
async fn a_value_decoded_from_a_byte_tier_stays_typed_in_the_memory_tier() {
    let l1 = mem(10);
    let l2 = Arc::new(Bytes::new());
    let cache = Cache::new(stack(&[l1.clone(), l2.clone()]));
    l2.set("p", Value::new(profile(1)), cachestack::Expiry::Default).await.unwrap();
    assert!(!l2.get("p").await.unwrap().unwrap().value.is_typed(), "the byte tier hands out bytes");

    assert_eq!(cache.get::<Profile>("p").await.unwrap(), Some(profile(1)));
    // L1 holds the very handle that the typed read decoded: the next hit needs no decoding.
    let held = l1.get("p").await.unwrap().unwrap().value;
    assert!(held.is_typed(), "L1 holds an undecoded value: {held:?}");

    assert_eq!(cache.get::<Profile>("p").await.unwrap(), Some(profile(1)));
    let stats = cache.stats();
    assert_eq!((stats.layers[0].hits, stats.layers[1].hits), (1, 1), "second read served by L1: {stats:#?}");
}

#[tokio::test]
async fn get_many_asks_lower_layers_only_for_the_keys_still_missing() {
    let l1 = mem(10);
    let l2 = Arc::new(Faulty::new(mem(10)));
    let stack = stack(&[l1.clone(), l2.clone()]);
    l1.set("a", Value::new(1u64), cachestack::Expiry::Default).await.unwrap();
    l2.inner.set("b", Value::new(2u64), cachestack::Expiry::Default).await.unwrap();
    l1.set("c", Value::new(3u64), cachestack::Expiry::Default).await.unwrap();

    let got = stack.get_many(&["a", "b", "c", "d"]).await.unwrap();
    let values: Vec<Option<u64>> = got.iter().map(|e| e.as_ref().map(|e| e.value.get::<u64>().unwrap())).collect();
    assert_eq!(values, [Some(1), Some(2), Some(3), None]);
    assert_eq!(*l2.asked.lock().unwrap(), [vec!["b".to_string(), "d".to_string()]]);
    assert_eq!(read_u64(&*l1, "b").await, Some(2), "found below, backfilled");
    let stats = stack.stats();
    assert_eq!((stats.hits, stats.misses), (3, 1));
    assert_stats_add_up(&stats);
}

#[tokio::test]
async fn the_local_l1_view_answers_hits_and_its_none_is_not_a_miss() {
    let (l1, l2) = (mem(10), mem(10));
    let stack = stack(&[l1.clone(), l2.clone()]);
    assert!(stack.as_local().is_none(), "a stack is not a local store");
    let view = stack.local_l1().expect("L1 is in memory");
    l2.set("k", Value::new(5u64), cachestack::Expiry::Default).await.unwrap();

    assert!(view.get_value("k").is_none(), "L1 does not have it yet");
    assert_eq!(read_u64(&stack, "k").await, Some(5), "...but the stack does");
    assert_eq!(view.get_value("k").unwrap().get::<u64>().unwrap(), 5);
    let stats = stack.stats();
    assert_eq!((stats.layers[0].hits, stats.layers[0].misses, stats.hits), (1, 1, 2));

    // The view only reads (writes go through the stack's async methods, never blocking).
    assert!(stack.delete("k").await.unwrap());
    assert!(view.get_value("k").is_none());
    assert!(l2.get("k").await.unwrap().is_none());

    // A stack over a remote-like L1 offers no view; a memory backend offers itself.
    let remote_l1 = stack_of_faulty();
    assert!(remote_l1.local_l1().is_none());
    assert!(MemoryBackend::with_capacity(1).local_l1().is_some());
}

fn stack_of_faulty() -> TieredCache {
    stack(&[Arc::new(Faulty::new(mem(1))), mem(1)])
}

// ------------------------------------------------------------------------------------------------
// Writes, deletes, bulk operations
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn write_through_writes_every_layer_with_the_ttl() {
    let (l1, l2) = (mem(10), Arc::new(Bytes::new()));
    let stack = stack(&[l1.clone(), l2.clone()]);
    stack.set("k", Value::new(3u64), cachestack::Expiry::after(Duration::from_secs(60))).await.unwrap();
    for layer in [&*l1 as &dyn Backend, &*l2] {
        let entry = layer.get("k").await.unwrap().unwrap();
        assert_eq!(entry.value.get::<u64>().unwrap(), 3);
        assert!(entry.ttl().unwrap() <= Duration::from_secs(60));
    }
    assert_eq!(stack.stats().writes, 1);
    assert_eq!(stack.stats().layers[1].writes, 1);
}

#[tokio::test]
async fn delete_and_clear_reach_every_layer() {
    let (l1, l2) = (mem(10), mem(10));
    let stack = stack(&[l1.clone(), l2.clone()]);
    stack.set("a", Value::new(1u64), cachestack::Expiry::Default).await.unwrap();
    stack.set("b", Value::new(2u64), cachestack::Expiry::Default).await.unwrap();
    l2.set("only-below", Value::new(3u64), cachestack::Expiry::Default).await.unwrap();

    assert!(stack.delete("a").await.unwrap());
    assert!(!stack.delete("a").await.unwrap());
    assert!(stack.delete("only-below").await.unwrap(), "present in some layer counts as present");
    assert!(l1.get("a").await.unwrap().is_none() && l2.get("a").await.unwrap().is_none());

    stack.clear().await.unwrap();
    assert!(l1.get("b").await.unwrap().is_none() && l2.get("b").await.unwrap().is_none());
    assert!(stack.get("b").await.unwrap().is_none());
}

#[tokio::test]
async fn bulk_operations_span_the_layers() {
    let (l1, l2) = (mem(100), Arc::new(Bytes::new()));
    let stack = stack(&[l1.clone(), l2.clone()]);
    let entries: Vec<(&str, Value)> = vec![("a", Value::new(1u64)), ("b", Value::new(2u64))];
    stack.set_many(&entries, cachestack::Expiry::after(Duration::from_secs(60))).await.unwrap();
    assert_eq!(read_u64(&*l2, "b").await, Some(2));
    l2.set("c", Value::new(3u64), cachestack::Expiry::Default).await.unwrap();
    assert!(stack.exists("c").await.unwrap(), "exists looks below L1");
    assert_eq!(stack.delete_many(&["a", "b", "c", "zz"]).await.unwrap(), 3);
    for key in ["a", "b", "c"] {
        assert!(!stack.exists(key).await.unwrap());
        assert!(l2.get(key).await.unwrap().is_none());
    }
    assert_eq!(stack.purge_expired().await.unwrap(), 0);
}

// ------------------------------------------------------------------------------------------------
// Failing layers and the breaker
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_failing_layer_is_skipped_and_counted() {
    let l1 = mem(10);
    let l2 = Arc::new(Faulty::new(mem(10)));
    let stack = stack(&[l1.clone(), l2.clone()]);
    l2.set_down(true);

    stack.set("k", Value::new(1u64), cachestack::Expiry::Default).await.unwrap();
    assert_eq!(read_u64(&stack, "k").await, Some(1), "L1 serves");
    assert!(stack.get("missing").await.unwrap().is_none(), "a failed layer below is a miss, not an error");
    assert!(stack.delete("k").await.unwrap());
    let stats = stack.stats();
    assert_eq!(stats.layers[1].errors, 3, "set, get and delete failed in L2: {stats:#?}");
    assert_eq!(stats.errors, 3);
    assert_eq!(stats.layers[0].errors, 0);
    assert_stats_add_up(&stats);
}

#[tokio::test]
async fn when_every_layer_fails_the_call_fails() {
    let a = Arc::new(Faulty::new(mem(10)));
    let b = Arc::new(Faulty::new(mem(10)));
    let stack = stack(&[a.clone(), b.clone()]);
    a.set_down(true);
    b.set_down(true);
    assert!(stack.get("k").await.unwrap_err().is_unavailable());
    assert!(stack.set("k", Value::new(1u64), cachestack::Expiry::Default).await.unwrap_err().is_unavailable());
    assert!(stack.delete("k").await.is_err());
    b.set_down(false);
    stack.set("k", Value::new(1u64), cachestack::Expiry::Default).await.unwrap();
    assert_eq!(read_u64(&stack, "k").await, Some(1), "served by the layer that is up");
}

#[tokio::test]
async fn deletes_writes_and_clears_missed_by_a_down_layer_are_replayed_before_it_serves_again() {
    let l1 = mem(10);
    let l2 = Arc::new(Faulty::new(mem(10)));
    let l3 = mem(10);
    let stack = stack(&[l1.clone(), l2.clone(), l3.clone()]);
    for key in ["deleted", "overwritten", "cleared"] {
        stack.set(key, Value::new(1u64), cachestack::Expiry::Default).await.unwrap();
    }

    l2.set_down(true);
    assert!(stack.delete("deleted").await.unwrap());
    stack.set("overwritten", Value::new(2u64), cachestack::Expiry::Default).await.unwrap();
    assert_eq!(stack.stats().layers[1].details["tombstones"], "2");
    l2.set_down(false);

    // L1 loses everything (evicted, another process...): the reads go below, through L2.
    l1.clear().await.unwrap();
    assert_eq!(read_u64(&stack, "deleted").await, None, "the delete was replayed before the read");
    assert_eq!(read_u64(&stack, "overwritten").await, Some(2), "the older value in L2 was removed");
    assert!(l2.inner.get("deleted").await.unwrap().is_none());
    assert_eq!(stack.stats().layers[1].details["tombstones"], "0");

    // A clear missed by L2 is replayed too.
    l2.set_down(true);
    stack.clear().await.unwrap();
    assert_eq!(stack.stats().layers[1].details["clear_pending"], "true");
    l2.set_down(false);
    assert_eq!(read_u64(&stack, "cleared").await, None);
    assert!(l2.inner.get("cleared").await.unwrap().is_none());
    assert_eq!(stack.stats().layers[1].details["clear_pending"], "false");

    // A later write of a tombstoned key supersedes the tombstone once the layer takes it.
    l2.set_down(true);
    stack.delete("overwritten").await.unwrap();
    l2.set_down(false);
    stack.set("overwritten", Value::new(3u64), cachestack::Expiry::Default).await.unwrap();
    assert_eq!(stack.stats().layers[1].details["tombstones"], "0");
    assert_eq!(read_u64(&*l2.inner, "overwritten").await, Some(3));
}

#[tokio::test(start_paused = true)]
async fn the_breaker_bypasses_a_dead_layer_for_the_cool_down_then_probes() {
    let l1 = mem(10);
    let l2 = Arc::new(Faulty::new(mem(10)));
    let stack = TieredCache::builder()
        .layer_arc(l1.clone())
        .layer_arc(l2.clone())
        .breaker(BreakerConfig::new(3, Duration::from_secs(30)))
        .build()
        .unwrap();
    l2.set_down(true);
    for _ in 0..3 {
        assert!(stack.get("k").await.unwrap().is_none());
    }
    assert_eq!(l2.calls.load(SeqCst), 3);
    assert_eq!(stack.stats().layers[1].details["breaker"], "open");

    // Open: L2 is not called at all, and the stack keeps answering from L1.
    stack.set("k", Value::new(1u64), cachestack::Expiry::Default).await.unwrap();
    assert_eq!(read_u64(&stack, "k").await, Some(1));
    assert!(stack.get("other").await.unwrap().is_none());
    assert_eq!(l2.calls.load(SeqCst), 3, "a bypassed layer is not called");
    tokio::time::advance(Duration::from_secs(29)).await;
    assert!(stack.get("other").await.unwrap().is_none());
    assert_eq!(l2.calls.load(SeqCst), 3);

    // Cool-down over: one probe; it fails, so the breaker opens again.
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(stack.stats().layers[1].details["breaker"], "half-open");
    assert!(stack.get("other").await.unwrap().is_none());
    assert_eq!(l2.calls.load(SeqCst), 4, "exactly one probe");
    assert!(stack.get("other").await.unwrap().is_none());
    assert_eq!(l2.calls.load(SeqCst), 4);

    // The write of `k` bypassed L2, which may hold an older `k`: a tombstone waits for it.
    assert_eq!(stack.stats().layers[1].details["tombstones"], "1");

    // The layer comes back: the next probe replays the tombstone (one delete) before its read,
    // closes the breaker, and traffic flows again.
    l2.set_down(false);
    tokio::time::advance(Duration::from_secs(31)).await;
    assert!(stack.get("other").await.unwrap().is_none());
    assert_eq!(l2.calls.load(SeqCst), 6, "the replayed delete and the probe");
    assert_eq!(stack.stats().layers[1].details["tombstones"], "0");
    assert!(stack.get("other").await.unwrap().is_none());
    assert_eq!(l2.calls.load(SeqCst), 7);
    assert_eq!(stack.stats().layers[1].details["breaker"], "closed");
    let stats = stack.stats();
    assert!(detail(&stats.layers[1], "bypassed") >= 4, "{stats:#?}");
    assert_stats_add_up(&stats);
}

#[tokio::test]
async fn a_killed_middle_layer_leaves_the_stack_serving_and_the_stats_add_up() {
    let (l1, l3) = (mem(100), Arc::new(Bytes::new()));
    let l2 = Arc::new(Faulty::new(mem(100)));
    let stack = stack(&[l1.clone(), l2.clone(), l3.clone()]);
    for i in 0..10u64 {
        stack.set(&format!("k{i}"), Value::new(i), cachestack::Expiry::Default).await.unwrap();
    }
    l2.set_down(true);
    l1.clear().await.unwrap();
    for i in 0..10u64 {
        assert_eq!(read_u64(&stack, &format!("k{i}")).await, Some(i), "served from L3 past the dead L2");
    }
    for i in 0..10u64 {
        assert_eq!(read_u64(&stack, &format!("k{i}")).await, Some(i), "now from L1");
    }
    stack.set("new", Value::new(99u64), cachestack::Expiry::Default).await.unwrap();
    assert_eq!(read_u64(&*l3, "new").await, Some(99));
    let stats = stack.stats();
    assert_eq!(stats.layers[2].hits, 10);
    assert_eq!(stats.layers[0].hits, 10);
    assert_eq!(stats.layers[0].backfills, 10);
    // 10 failed reads plus 10 failed backfills plus one failed write.
    assert_eq!(stats.layers[1].errors, 21, "{stats:#?}");
    assert_stats_add_up(&stats);

    // It comes back: backfills reach it again.
    l2.set_down(false);
    l1.clear().await.unwrap();
    l2.inner.clear().await.unwrap();
    assert_eq!(read_u64(&stack, "k3").await, Some(3));
    assert_eq!(read_u64(&*l2.inner, "k3").await, Some(3));
}

// ------------------------------------------------------------------------------------------------
// Write-back
// ------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_back_writes_l1_now_serves_from_the_queue_and_stores_below_on_flush() {
    let l1 = mem(10);
    let (l2, mut entered) = Faulty::gated(mem(10));
    let l2 = Arc::new(l2);
    let stack = write_back(&[l1.clone(), l2.clone()], WriteBackConfig::default());

    let deadline = cachestack::Deadline::after(Duration::from_secs(60));
    stack.set("k", Value::new(1u64), deadline.into()).await.unwrap();
    assert_eq!(read_u64(&*l1, "k").await, Some(1), "L1 is written at once");
    assert_eq!(l1.get("k").await.unwrap().unwrap().expires, Some(deadline));
    assert_eq!(entered.recv().await.unwrap(), "k", "the queued write reached L2 and is held there");
    assert!(l2.inner.get("k").await.unwrap().is_none());

    // L1 loses the entry while L2 is behind: the read is answered from the queue, not from L2.
    l1.delete("k").await.unwrap();
    l2.inner.set("k", Value::new(0u64), cachestack::Expiry::Default).await.unwrap(); // an older value below
    let entry = stack.get("k").await.unwrap().expect("answered from the queue");
    assert_eq!(entry.value.get::<u64>().unwrap(), 1);
    assert_eq!(entry.expires, Some(deadline), "the caller's deadline, whatever time was spent queued");
    assert!(stack.exists("k").await.unwrap(), "exists is answered from the queue (and is not a read)");
    assert_eq!(stack.queued(), 0, "the write left the channel; it is being written");

    l2.open_gate();
    stack.flush().await.unwrap();
    let below = l2.inner.get("k").await.unwrap().unwrap();
    assert_eq!(
        (below.value.get::<u64>().unwrap(), below.expires),
        (1, Some(deadline)),
        "L2 stores the caller's deadline"
    );
    let stats = stack.stats();
    assert_eq!(detail(&stats, "queue_written"), 1);
    assert_eq!(detail(&stats, "queue_hits"), 1);
    assert_eq!(stats.hits, 1);
    stack.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_drains_the_queue_and_later_writes_go_through() {
    let (l1, l2) = (mem(1000), Arc::new(Bytes::new()));
    let stack = write_back(&[l1.clone(), l2.clone()], WriteBackConfig::new(16));
    for i in 0..200u64 {
        stack.set(&format!("k{i}"), Value::new(i), cachestack::Expiry::Default).await.unwrap();
    }
    stack.close().await.unwrap();
    for i in 0..200u64 {
        assert_eq!(read_u64(&*l2, &format!("k{i}")).await, Some(i));
    }
    stack.close().await.unwrap();
    stack.set("after", Value::new(1u64), cachestack::Expiry::Default).await.unwrap();
    assert_eq!(read_u64(&*l2, "after").await, Some(1), "written through after close");
    stack.flush().await.unwrap();
}

#[test]
fn dropping_a_write_back_stack_outside_a_runtime_drains_its_queue() {
    let (l1, l2) = (mem(1000), Arc::new(Bytes::new()));
    let stack = write_back(&[l1, l2.clone()], WriteBackConfig::new(8));
    let stack = Arc::new(stack);
    let writer = stack.clone();
    cachestack::rt::block_on(async move {
        for i in 0..100u64 {
            writer.set(&format!("k{i}"), Value::new(i), cachestack::Expiry::Default).await.unwrap();
        }
    })
    .unwrap();
    drop(stack);
    let l2_view = l2.clone();
    cachestack::rt::block_on(async move {
        for i in 0..100u64 {
            assert_eq!(read_u64(&*l2_view, &format!("k{i}")).await, Some(i), "queued write k{i} lost on drop");
        }
    })
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_queued_writes_supersede_older_ones() {
    let l1 = mem(10);
    let (l2, mut entered) = Faulty::gated(mem(10));
    let l2 = Arc::new(l2);
    let stack = write_back(&[l1.clone(), l2.clone()], WriteBackConfig::default());
    // The first write of `k` is on the wire (held at the gate); the next two wait behind it.
    stack.set("k", Value::new(1u64), cachestack::Expiry::Default).await.unwrap();
    assert_eq!(entered.recv().await.unwrap(), "k");
    for v in 2..=3u64 {
        stack.set("k", Value::new(v), cachestack::Expiry::Default).await.unwrap();
    }
    l2.open_gate();
    stack.flush().await.unwrap();
    assert_eq!(read_u64(&*l2.inner, "k").await, Some(3));
    let stats = stack.stats();
    assert_eq!(detail(&stats, "queue_superseded"), 1, "{stats:#?}");
    assert_eq!(detail(&stats, "queue_written"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_racing_a_queued_write_keeps_the_key_deleted() {
    let l1 = mem(10);
    let (l2, mut entered) = Faulty::gated(mem(10));
    let l2 = Arc::new(l2);
    let stack = Arc::new(write_back(&[l1.clone(), l2.clone()], WriteBackConfig::default()));

    // v1 is on its way into L2 (held at the gate), v2 is queued behind it.
    stack.set("k", Value::new(1u64), cachestack::Expiry::Default).await.unwrap();
    assert_eq!(entered.recv().await.unwrap(), "k");
    stack.set("k", Value::new(2u64), cachestack::Expiry::Default).await.unwrap();

    // The delete runs concurrently with the in-flight write. Once it has started (its count
    // moved) it is waiting for that write: let the write land, then the delete goes first.
    let deleter = {
        let stack = stack.clone();
        tokio::spawn(async move { stack.delete("k").await.unwrap() })
    };
    while stack.stats().deletes == 0 {
        tokio::task::yield_now().await;
    }
    l2.open_gate();
    assert!(deleter.await.unwrap());
    assert!(stack.get("k").await.unwrap().is_none(), "read after the delete");

    stack.flush().await.unwrap();
    assert!(l2.inner.get("k").await.unwrap().is_none(), "a queued write came back after the delete");
    assert!(l1.get("k").await.unwrap().is_none());
    assert!(stack.get("k").await.unwrap().is_none());
    // v2 was discarded, or stored just before the delete (it waited for the same lock).
    let stats = stack.stats();
    assert_eq!(detail(&stats, "queue_superseded") + detail(&stats, "queue_written"), 2, "{stats:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_the_write_below_l1_counts_it_and_invalidates_below() {
    let l1 = mem(10);
    let (l2, mut entered) = Faulty::gated(mem(10));
    let l2 = Arc::new(l2);
    let config = WriteBackConfig::new(1).with_on_full(OnFull::Drop).with_concurrency(1);
    let stack = write_back(&[l1.clone(), l2.clone()], config);
    l2.inner.set("c", Value::new(0u64), cachestack::Expiry::Default).await.unwrap(); // an older value of "c" below

    stack.set("a", Value::new(1u64), cachestack::Expiry::Default).await.unwrap();
    assert_eq!(entered.recv().await.unwrap(), "a", "the task holds \"a\" (its one slot); the queue is empty");
    stack.set("b", Value::new(2u64), cachestack::Expiry::Default).await.unwrap(); // fills the queue
    stack.set("c", Value::new(3u64), cachestack::Expiry::Default).await.unwrap(); // dropped below L1

    assert_eq!(read_u64(&*l1, "c").await, Some(3), "L1 still gets the write");
    let stats = stack.stats();
    assert_eq!(detail(&stats, "queue_dropped"), 1);
    assert!(stats.errors >= 1);
    assert_eq!(detail(&stats.layers[1], "tombstones"), 1, "the older value below is invalidated: {stats:#?}");
    l1.delete("c").await.unwrap();
    assert!(
        stack.get("c").await.unwrap().is_none(),
        "a read below L1 replays the tombstone: a miss, not the older value"
    );

    l2.open_gate();
    stack.close().await.unwrap();
    assert_eq!(read_u64(&*l2.inner, "a").await, Some(1));
    assert_eq!(read_u64(&*l2.inner, "b").await, Some(2));
    assert!(l2.inner.get("c").await.unwrap().is_none(), "the tombstone was replayed before the next write");
    assert!(stack.get("c").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_expires_while_queued_is_not_written_and_older_values_below_go() {
    let l1 = mem(10);
    let (l2, mut entered) = Faulty::gated(mem(10));
    let l2 = Arc::new(l2);
    let stack = write_back(&[l1.clone(), l2.clone()], WriteBackConfig::default());
    l2.inner.set("k", Value::new(0u64), cachestack::Expiry::Default).await.unwrap();
    stack.set("blocker", Value::new(0u64), cachestack::Expiry::Default).await.unwrap();
    assert_eq!(entered.recv().await.unwrap(), "blocker");
    // Zero TTL: expired by the time the task gets to it.
    stack.set("k", Value::new(1u64), cachestack::Expiry::after(Duration::ZERO)).await.unwrap();
    assert!(stack.get("k").await.unwrap().is_none(), "an expired queued value is a miss, and nothing older is served");
    l2.open_gate();
    stack.flush().await.unwrap();
    assert!(l2.inner.get("k").await.unwrap().is_none());
    assert_eq!(detail(&stack.stats(), "queue_expired"), 1);
}

/// A store that records, in order, the values its `set` calls store, and how many of them ran at
/// once; each `set` yields a few times, to let other writes overlap it.
#[derive(Debug, Default)]
struct Recording {
    map: Mutex<HashMap<String, Value>>,
    applied: Mutex<Vec<(String, u64)>>,
    in_flight: std::sync::atomic::AtomicUsize,
    most_in_flight: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl Backend for Recording {
    fn name(&self) -> &str {
        "recording"
    }
    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        Ok(self.map.lock().unwrap().get(key).map(|v| Entry::new(v.clone(), None)))
    }
    async fn set(&self, key: &str, value: Value, _expiry: cachestack::Expiry) -> Result<()> {
        let now = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.most_in_flight.fetch_max(now, SeqCst);
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        self.applied.lock().unwrap().push((key.to_string(), value.get::<u64>().unwrap()));
        self.map.lock().unwrap().insert(key.to_string(), value);
        self.in_flight.fetch_sub(1, SeqCst);
        Ok(())
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        Ok(self.map.lock().unwrap().remove(key).is_some())
    }
    async fn clear(&self) -> Result<()> {
        self.map.lock().unwrap().clear();
        Ok(())
    }
    fn stats(&self) -> BackendStats {
        BackendStats::default()
    }
}

/// A lower layer that never answers must not make `set` wait: once the writes in flight and the
/// queue are full, each further write waits at most the queue's `max_wait` (100 ms by default,
/// on tokio's paused clock here) and is then dropped below L1, counted.
#[tokio::test(start_paused = true)]
async fn a_blackholed_lower_layer_does_not_block_set_beyond_the_bound() {
    const WRITES: u64 = 40;
    let l1 = mem(100);
    let (l2, _entered) = Faulty::gated(mem(100)); // never opened: every write to it hangs
    let l2 = Arc::new(l2);
    let stack = write_back(&[l1.clone(), l2.clone()], WriteBackConfig::new(1));
    for i in 0..WRITES {
        let started = tokio::time::Instant::now();
        cachestack_tests::sync::within_guard(stack.set(&format!("k{i}"), Value::new(i), cachestack::Expiry::Default))
            .await
            .unwrap();
        assert!(started.elapsed() <= Duration::from_millis(100), "set k{i} waited {:?}", started.elapsed());
        assert_eq!(read_u64(&*l1, &format!("k{i}")).await, Some(i), "L1 has every write");
    }
    let stats = stack.stats();
    let (enqueued, dropped) = (detail(&stats, "queue_enqueued"), detail(&stats, "queue_dropped"));
    assert_eq!(enqueued + dropped, WRITES, "{stats:#?}");
    // At most the writes in flight (16 by default) and the queue (1) are absorbed.
    assert!(dropped >= WRITES - 17, "{stats:#?}");
    assert!(stats.errors >= dropped, "dropped writes are errors of the stack: {stats:#?}");
    l2.open_gate();
}

/// Writes of different keys are stored at the same time: a write held in the lower layer does
/// not keep the next key's write from reaching it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_keys_drain_in_parallel() {
    let l1 = mem(10);
    let (l2, mut entered) = Faulty::gated(mem(10));
    let l2 = Arc::new(l2);
    let stack = write_back(&[l1.clone(), l2.clone()], WriteBackConfig::default());
    // "a" and "c" do not share an ordering stripe.
    stack.set("a", Value::new(1u64), cachestack::Expiry::Default).await.unwrap();
    stack.set("c", Value::new(2u64), cachestack::Expiry::Default).await.unwrap();
    let mut held = vec![
        cachestack_tests::sync::within_guard(entered.recv()).await.unwrap(),
        cachestack_tests::sync::within_guard(entered.recv()).await.unwrap(),
    ];
    held.sort();
    assert_eq!(held, ["a", "c"], "both writes are in the lower layer at once");
    l2.open_gate();
    stack.flush().await.unwrap();
    assert_eq!((read_u64(&*l2.inner, "a").await, read_u64(&*l2.inner, "c").await), (Some(1), Some(2)));
    stack.close().await.unwrap();
}

/// Each key's writes reach the lower layer in the order they were made (and the last one is
/// what stays), while writes of different keys are stored concurrently.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_key_order_holds_under_concurrent_drains() {
    const KEYS: u64 = 8;
    const ROUNDS: u64 = 150;
    let l1 = mem(100);
    let recording = Arc::new(Recording::default());
    let (l2, mut entered) = Faulty::gated(recording.clone());
    let l2 = Arc::new(l2);
    let stack = Arc::new(write_back(&[l1.clone(), l2.clone()], WriteBackConfig::new(64).with_concurrency(8)));

    // Concurrency first: two keys held in the lower layer at once.
    stack.set("a", Value::new(0u64), cachestack::Expiry::Default).await.unwrap();
    stack.set("c", Value::new(0u64), cachestack::Expiry::Default).await.unwrap();
    for _ in 0..2 {
        cachestack_tests::sync::within_guard(entered.recv()).await.unwrap();
    }
    l2.open_gate();

    let writers: Vec<_> = (0..KEYS)
        .map(|k| {
            let stack = stack.clone();
            tokio::spawn(async move {
                for v in 1..=ROUNDS {
                    stack.set(&format!("key{k}"), Value::new(v), cachestack::Expiry::Default).await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    stack.flush().await.unwrap();

    let applied = recording.applied.lock().unwrap().clone();
    for k in 0..KEYS {
        let key = format!("key{k}");
        let values: Vec<u64> = applied.iter().filter(|(applied, _)| *applied == key).map(|(_, v)| *v).collect();
        assert!(values.windows(2).all(|w| w[0] < w[1]), "{key} stored out of order: {values:?}");
        assert_eq!(values.last(), Some(&ROUNDS), "{key}: the last write stays");
        assert_eq!(read_u64(&*recording, &key).await, Some(ROUNDS));
    }
    assert!(recording.most_in_flight.load(SeqCst) >= 2, "the drains overlapped");
    let stats = stack.stats();
    assert_eq!(detail(&stats, "queue_dropped"), 0, "{stats:#?}");
    assert_eq!(
        detail(&stats, "queue_written") + detail(&stats, "queue_superseded"),
        detail(&stats, "queue_enqueued"),
        "{stats:#?}"
    );
    stack.close().await.unwrap();
}

/// A write-back stack has a breaker on its remote layers by default: queued writes for a layer
/// that keeps failing stop reaching it after a few failures and fail fast (with tombstones)
/// instead of each trying the dead layer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_writes_to_a_failing_layer_trip_the_breaker_and_fail_fast() {
    let l1 = mem(1000);
    let l2 = Arc::new(cachestack_tests::faults::Down::default());
    let stack = write_back(&[l1.clone(), l2.clone()], WriteBackConfig::new(1000));
    for i in 0..200u64 {
        stack.set(&format!("k{i}"), Value::new(i), cachestack::Expiry::Default).await.unwrap();
    }
    stack.flush().await.unwrap();
    let stats = stack.stats();
    assert_eq!(stats.layers[1].details["breaker"], "open", "{stats:#?}");
    assert_eq!(detail(&stats.layers[1], "breaker_trips"), 1);
    let reached = l2.calls.load(SeqCst) as u64;
    assert!(reached < 200, "{reached} of 200 queued writes still went to the dead layer");
    assert!(detail(&stats.layers[1], "bypassed") >= 200 - reached, "{stats:#?}");
    assert_eq!(detail(&stats, "queue_failed"), 200, "{stats:#?}");
    assert_eq!(detail(&stats.layers[1], "tombstones"), 200, "each key waits for its delete below");
    for i in 0..200u64 {
        assert_eq!(read_u64(&*l1, &format!("k{i}")).await, Some(i));
    }
}

/// A layer that never answers trips the breaker too: each queued write gives up after the
/// queue's `write_timeout`, which counts as a failure; once open, the rest fail fast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_writes_to_a_blackholed_layer_time_out_and_trip_the_breaker() {
    const WRITES: u64 = 100;
    let l1 = mem(1000);
    let (l2, _entered) = Faulty::gated(mem(1000)); // never opened
    let l2 = Arc::new(l2);
    let config = WriteBackConfig::new(1000).with_write_timeout(Some(Duration::from_millis(20)));
    let stack = TieredCache::builder()
        .layer_arc(l1.clone())
        .layer_arc(l2.clone())
        .write_back(config)
        .breaker(BreakerConfig::new(3, Duration::from_secs(3600)))
        .build()
        .unwrap();
    for i in 0..WRITES {
        stack.set(&format!("k{i}"), Value::new(i), cachestack::Expiry::Default).await.unwrap();
    }
    cachestack_tests::sync::within_guard(stack.flush()).await.unwrap();
    let stats = stack.stats();
    assert_eq!(stats.layers[1].details["breaker"], "open", "{stats:#?}");
    assert!(detail(&stats.layers[1], "bypassed") > 0, "{stats:#?}");
    assert_eq!(detail(&stats, "queue_failed"), WRITES, "{stats:#?}");
    assert_eq!(detail(&stats, "queue_written"), 0);
    assert!(stats.layers[1].errors >= 3, "the timeouts are the layer's errors: {stats:#?}");
}

// ------------------------------------------------------------------------------------------------
// Races, with real concurrency
// ------------------------------------------------------------------------------------------------

/// Writers overwrite shared keys while readers keep missing a tiny L1 (so they read the slow L2
/// and backfill); then every key is deleted while readers continue and writes are still queued.
/// No deleted key may come back in any layer: not from the queue, not from a reader's backfill
/// of a value it read just before the delete.
async fn invalidation_races(stack: Arc<TieredCache>, stores: Vec<Arc<dyn Backend>>) {
    const KEYS: u64 = 24;
    const WRITERS: u64 = 4;
    const READERS: usize = 4;
    let key = |k: u64| format!("key{k}");
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..READERS)
        .map(|r| {
            let (stack, stop) = (stack.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = r as u64;
                while !stop.load(SeqCst) {
                    let _ = stack.get(&format!("key{}", n % KEYS)).await.unwrap();
                    n += 7;
                    // Reads answered from memory never yield; give the other tasks their turn.
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
                for round in 0..20u64 {
                    for k in 0..KEYS {
                        stack.set(&key(k), Value::new(round * 100 + w), cachestack::Expiry::Default).await.unwrap();
                    }
                }
                // Every write of every writer has been issued before any key is deleted.
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
    // Readers keep racing a little longer, then stop.
    for k in 0..KEYS {
        assert!(stack.get(&key(k)).await.unwrap().is_none());
    }
    stop.store(true, SeqCst);
    for reader in readers {
        reader.await.unwrap();
    }
    stack.flush().await.unwrap();
    for k in 0..KEYS {
        for (i, store) in stores.iter().enumerate() {
            assert!(store.get(&key(k)).await.unwrap().is_none(), "{} came back in layer {i}", key(k));
        }
        assert!(stack.get(&key(k)).await.unwrap().is_none());
    }
    let stats = stack.stats();
    assert_stats_add_up_with_queue(&stats);
}

fn assert_stats_add_up_with_queue(stats: &BackendStats) {
    let queue_hits = stats.details.get("queue_hits").map_or(0, |v| v.parse::<u64>().unwrap());
    assert_eq!(stats.hits, stats.layers.iter().map(|l| l.hits).sum::<u64>() + queue_hits, "{stats:#?}");
    assert!(stats.layers[0].misses >= stats.layers[1].hits + stats.layers[1].misses, "{stats:#?}");
}

/// The layers of a stack, and the stores under them to inspect.
type Layers = Vec<Arc<dyn Backend>>;

/// L1 in memory, then slow remote-like layers; all but the last are tiny, so that reads keep
/// going below them and backfilling them.
fn racing_layers(remote: usize) -> (Layers, Layers) {
    let l1 = mem(4);
    let mut layers: Vec<Arc<dyn Backend>> = vec![l1.clone()];
    let mut stores: Vec<Arc<dyn Backend>> = vec![l1];
    for i in 0..remote {
        let store = mem(if i + 1 == remote { 1000 } else { 6 });
        layers.push(Arc::new(Faulty::slow(store.clone(), 3)));
        stores.push(store);
    }
    (layers, stores)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deletes_racing_queued_writes_and_backfills_never_resurrect_a_key() {
    let (layers, stores) = racing_layers(1);
    let stack = Arc::new(write_back(&layers, WriteBackConfig::new(32)));
    invalidation_races(stack.clone(), stores).await;
    let stats = stack.stats();
    assert!(detail(&stats, "queue_enqueued") > 0);
    stack.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deletes_racing_queued_writes_and_remote_backfills_never_resurrect_a_key() {
    let (layers, stores) = racing_layers(2);
    let stack = Arc::new(write_back(&layers, WriteBackConfig::new(32)));
    invalidation_races(stack.clone(), stores).await;
    stack.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deletes_racing_backfills_never_resurrect_a_key_in_write_through() {
    let (layers, stores) = racing_layers(1);
    let stack = Arc::new(stack(&layers));
    invalidation_races(stack.clone(), stores).await;
    let stats = stack.stats();
    assert!(stats.layers[0].backfills > 0, "the test did not exercise backfill: {stats:#?}");
    assert_stats_add_up(&stats);
}

/// Every layer remote-like (no in-process L1): backfills all take the remote path.
fn remote_racing_layers() -> (Layers, Layers) {
    let (l1, l2) = (mem(4), mem(1000));
    let layers: Vec<Arc<dyn Backend>> =
        vec![Arc::new(Faulty::slow(l1.clone(), 1)), Arc::new(Faulty::slow(l2.clone(), 3))];
    (layers, vec![l1, l2])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deletes_racing_backfills_of_a_remote_l1_never_resurrect_a_key() {
    let (layers, stores) = remote_racing_layers();
    let stack = Arc::new(stack(&layers));
    invalidation_races(stack.clone(), stores).await;
    let stats = stack.stats();
    assert!(stats.layers[0].backfills > 0, "the test did not exercise backfill: {stats:#?}");
    assert_stats_add_up(&stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deletes_racing_queued_writes_and_backfills_of_a_remote_l1_never_resurrect_a_key() {
    let (layers, stores) = remote_racing_layers();
    let stack = Arc::new(write_back(&layers, WriteBackConfig::new(32)));
    invalidation_races(stack.clone(), stores).await;
    stack.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deletes_racing_remote_backfills_never_resurrect_a_key_in_write_through() {
    let (layers, stores) = racing_layers(2);
    let stack = Arc::new(stack(&layers));
    invalidation_races(stack.clone(), stores).await;
    let stats = stack.stats();
    assert!(stats.layers[1].backfills > 0, "the test did not exercise remote backfill: {stats:#?}");
    assert_stats_add_up(&stats);
}

/// A reader that read an old value from below just before an overwrite must not leave that old
/// value in L1: after `set(k, new)` returns, reads give `new`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overwrites_racing_backfills_never_leave_an_older_value_in_l1() {
    let l1 = mem(2);
    let l2 = Arc::new(Faulty::slow(mem(1000), 3));
    let stack = Arc::new(stack(&[l1.clone(), l2.clone()]));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let (stack, stop) = (stack.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = r;
                while !stop.load(SeqCst) {
                    let _ = stack.get(&format!("k{}", n % 8)).await.unwrap();
                    n += 3;
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for round in 0..50u64 {
        for k in 0..8 {
            stack.set(&format!("k{k}"), Value::new(round), cachestack::Expiry::Default).await.unwrap();
            let read = read_u64(&*stack, &format!("k{k}")).await;
            assert_eq!(read, Some(round), "k{k} read back an older value after the overwrite");
        }
    }
    stop.store(true, SeqCst);
    for reader in readers {
        reader.await.unwrap();
    }
    for k in 0..8 {
        assert_eq!(read_u64(&*l2.inner, &format!("k{k}")).await, Some(49));
        if let Some(v) = read_u64(&*l1, &format!("k{k}")).await {
            assert_eq!(v, 49, "L1 kept an older value of k{k}");
        }
    }
}

/// Writers racing on one key: once they are done, every layer that holds the key holds the
/// same value (no layer kept the write that lost in another layer).
async fn racing_writers_leave_the_layers_agreeing(stack: Arc<TieredCache>, stores: Layers) {
    const WRITERS: u64 = 6;
    for round in 0..30u64 {
        let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS as usize));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (stack, barrier) = (stack.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    stack.set("contended", Value::new(round * 100 + w), cachestack::Expiry::Default).await.unwrap();
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        stack.flush().await.unwrap();
        let mut values = Vec::new();
        for store in &stores {
            values.push(read_u64(&**store, "contended").await);
        }
        let written: Vec<u64> = values.iter().flatten().copied().collect();
        assert!(!written.is_empty(), "round {round}: no layer holds the key");
        assert!(written.iter().all(|v| *v == written[0]), "round {round}: layers disagree: {values:?}");
        assert_eq!(written[0] / 100, round);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_write_through_writers_leave_the_layers_agreeing() {
    let (layers, stores) = racing_layers(2);
    racing_writers_leave_the_layers_agreeing(Arc::new(stack(&layers)), stores).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_write_back_writers_leave_the_layers_agreeing() {
    let (layers, stores) = racing_layers(2);
    let stack = Arc::new(write_back(&layers, WriteBackConfig::new(4)));
    racing_writers_leave_the_layers_agreeing(stack.clone(), stores).await;
    stack.close().await.unwrap();
}

// ------------------------------------------------------------------------------------------------
// Memory over files
// ------------------------------------------------------------------------------------------------

fn file_layer(dir: &tempfile::TempDir) -> Arc<FileBackend> {
    Arc::new(FileBackend::new(FileConfig::new(dir.path()).with_namespace(unique_namespace("tiered"))).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_over_file_backfills_typed_values_with_the_remaining_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let (l1, l2) = (mem(100), file_layer(&dir));
    let cache = Cache::new(stack(&[l1.clone(), l2.clone()]));
    l2.set("p", Value::new(profile(7)), cachestack::Expiry::after(Duration::from_secs(3600))).await.unwrap();

    assert_eq!(cache.get::<Profile>("p").await.unwrap(), Some(profile(7)));
    let in_l1 = l1.get("p").await.unwrap().unwrap();
    assert!(in_l1.value.is_typed(), "L1 holds the decoded value");
    assert!(in_l1.ttl().unwrap() <= Duration::from_secs(3600));
    assert_eq!(cache.get::<Profile>("p").await.unwrap(), Some(profile(7)));
    let stats = cache.stats();
    assert_eq!((stats.layers[0].hits, stats.layers[1].hits, stats.layers[0].backfills), (1, 1, 1));
    assert_eq!(stats.layers[1].name, "file");
    assert!(stats.layers[1].details.contains_key("index"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_over_file_honours_expiry_in_the_file_layer() {
    let dir = tempfile::tempdir().unwrap();
    let (l1, l2) = (mem(100), file_layer(&dir));
    let stack = stack(&[l1.clone(), l2.clone()]);
    l2.set("short", Value::new(1u64), cachestack::Expiry::after(Duration::from_millis(30))).await.unwrap();
    // Waits for time to pass (expiry is about time); nothing else is synchronised by this.
    while l2.get("short").await.unwrap().is_some() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(stack.get("short").await.unwrap().is_none());
    assert!(l1.get("short").await.unwrap().is_none(), "an expired file entry was backfilled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_over_file_write_through_and_invalidation() {
    let dir = tempfile::tempdir().unwrap();
    let (l1, l2) = (mem(100), file_layer(&dir));
    let stack = stack(&[l1.clone(), l2.clone()]);
    stack.set("k", Value::new(5u64), cachestack::Expiry::after(Duration::from_secs(60))).await.unwrap();
    assert_eq!(read_u64(&*l2, "k").await, Some(5));
    assert!(stack.delete("k").await.unwrap());
    assert!(l2.get("k").await.unwrap().is_none());
    stack.set("k2", Value::new(6u64), cachestack::Expiry::Default).await.unwrap();
    stack.clear().await.unwrap();
    assert!(l2.get("k2").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_over_file_write_back_flushes_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let (l1, l2) = (mem(1000), file_layer(&dir));
    let stack = write_back(&[l1.clone(), l2.clone()], WriteBackConfig::new(8));
    for i in 0..50u64 {
        stack.set(&format!("k{i}"), Value::new(i), cachestack::Expiry::after(Duration::from_secs(60))).await.unwrap();
    }
    stack.close().await.unwrap();
    for i in 0..50u64 {
        assert_eq!(read_u64(&*l2, &format!("k{i}")).await, Some(i));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_over_file_a_delete_racing_a_queued_write_keeps_the_key_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let l1 = mem(100);
    let file = file_layer(&dir);
    let (l2, mut entered) = Faulty::gated(file.clone());
    let l2 = Arc::new(l2);
    let stack = Arc::new(write_back(&[l1.clone(), l2.clone()], WriteBackConfig::default()));
    stack.set("k", Value::new(1u64), cachestack::Expiry::Default).await.unwrap();
    assert_eq!(entered.recv().await.unwrap(), "k");
    stack.set("k", Value::new(2u64), cachestack::Expiry::Default).await.unwrap();
    let deleter = {
        let stack = stack.clone();
        tokio::spawn(async move { stack.delete("k").await.unwrap() })
    };
    l2.open_gate();
    deleter.await.unwrap();
    stack.flush().await.unwrap();
    assert!(file.get("k").await.unwrap().is_none());
    assert!(stack.get("k").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_over_a_killed_middle_layer_over_file_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (l1, l3) = (mem(100), file_layer(&dir));
    let l2 = Arc::new(Faulty::new(mem(100)));
    let stack = stack(&[l1.clone(), l2.clone(), l3.clone()]);
    for i in 0..5u64 {
        stack.set(&format!("k{i}"), Value::new(i), cachestack::Expiry::Default).await.unwrap();
    }
    l2.set_down(true);
    l1.clear().await.unwrap();
    for i in 0..5u64 {
        assert_eq!(read_u64(&stack, &format!("k{i}")).await, Some(i));
        assert_eq!(read_u64(&stack, &format!("k{i}")).await, Some(i));
    }
    let stats = stack.stats();
    assert_eq!((stats.layers[0].hits, stats.layers[2].hits), (5, 5));
    assert_eq!(stats.layers[1].errors, 10, "5 failed reads and 5 failed backfills: {stats:#?}");
    assert_stats_add_up(&stats);
}

// ------------------------------------------------------------------------------------------------
// The backend conformance suite, run against stacks
// ------------------------------------------------------------------------------------------------

fn bytes_store_harness(make: fn(Arc<dyn Backend>) -> TieredCache) -> Harness {
    let store: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
    let open = store.clone();
    let mut h = Harness::new(move |namespace| {
        let l2: Arc<dyn Backend> = Arc::new(Bytes::shared(namespace, open.clone()));
        Arc::new(make(l2))
    });
    let plant = store.clone();
    h.raw_writer = Some(Arc::new(move |namespace: &str, key: &str, bytes: &[u8]| {
        plant.lock().unwrap().insert(format!("{namespace}\u{1f}{key}"), bytes.to_vec());
    }));
    h.ttl_unit = Duration::from_millis(20);
    // The lowest layer (a store with only the required methods) has no atomic operations and
    // cannot list keys: the stack says so rather than answering from its process-local L1.
    h.unsupported = vec!["set_if_absent", "incr", "expire", "keys_matching", "delete_matching"];
    h
}

/// Memory over memory: the stack's atomic and pattern operations over a lowest layer that has
/// them (the lowest layer stands for a shared store).
fn memory_stack_harness(write_back: bool) -> Harness {
    let mut h = Harness::new(move |_namespace| {
        let builder = TieredCache::builder().layer_arc(mem(100_000)).layer_arc(mem(100_000));
        let builder = if write_back { builder.write_back(WriteBackConfig::new(64)) } else { builder };
        Arc::new(builder.build().unwrap())
    });
    h.ttl_unit = Duration::from_millis(20);
    h.stores_bytes = false;
    h
}

cachestack_tests::conformance_suite!(memory_over_memory_write_through, || memory_stack_harness(false));
cachestack_tests::conformance_suite!(memory_over_memory_write_back, || memory_stack_harness(true));

cachestack_tests::conformance_suite!(memory_over_bytes_write_through, || bytes_store_harness(|l2| {
    TieredCache::from_layers(vec![mem(100_000), l2]).unwrap()
}));

cachestack_tests::conformance_suite!(memory_over_bytes_write_back, || bytes_store_harness(|l2| {
    TieredCache::builder().layer_arc(mem(100_000)).layer_arc(l2).write_back(WriteBackConfig::new(64)).build().unwrap()
}));

cachestack_tests::conformance_suite!(memory_over_file, || {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    Harness::new(move |namespace| {
        let file = FileBackend::new(FileConfig::new(dir.path()).with_namespace(namespace)).unwrap();
        Arc::new(TieredCache::builder().layer(MemoryBackend::with_capacity(100_000)).layer(file).build().unwrap())
    })
});

/// A layer that keeps its default TTL to itself (a store of its own that predates
/// `Backend::default_ttl`, or a nested stack) still applies it: a write with the default expiry
/// reaches it as `Expiry::Default`, never as "no expiry".
#[tokio::test]
async fn a_layer_that_does_not_declare_its_default_ttl_still_applies_it() {
    #[derive(Debug)]
    struct Undeclared(Arc<MemoryBackend>);
    #[async_trait]
    impl Backend for Undeclared {
        fn name(&self) -> &str {
            "undeclared"
        }
        async fn get(&self, key: &str) -> Result<Option<Entry>> {
            self.0.get(key).await
        }
        async fn set(&self, key: &str, value: Value, expiry: cachestack::Expiry) -> Result<()> {
            self.0.set(key, value, expiry).await
        }
        async fn delete(&self, key: &str) -> Result<bool> {
            self.0.delete(key).await
        }
        async fn clear(&self) -> Result<()> {
            self.0.clear().await
        }
        fn stats(&self) -> BackendStats {
            self.0.stats()
        }
    }
    let hour = Duration::from_secs(3600);
    let inner =
        Arc::new(MemoryBackend::new(MemoryConfig { default_ttl: Some(hour), ..MemoryConfig::default() }).unwrap());
    let stack = stack(&[mem(10), Arc::new(Undeclared(inner.clone()))]);
    stack.set("k", Value::new(1u8), cachestack::Expiry::Default).await.unwrap();
    let left = inner.get("k").await.unwrap().expect("written below").ttl();
    assert!(left.is_some_and(|left| left <= hour && left > hour / 2), "the layer's own default TTL was lost: {left:?}");
}

/// A value read from a layer without a signer is never backfilled into a layer that signs: the
/// signature would vouch for bytes nobody verified (a value planted in the unsigned layer would
/// come out of the signed one as genuine, for every process that trusts it). Backfills from a
/// signed layer, and into in-process layers, go on as before.
#[tokio::test]
async fn a_value_from_an_unsigned_layer_is_never_backfilled_into_a_signing_one() {
    use cachestack::{Expiry, Signer, Signing};
    let signed_format = || ValueFormat {
        signer: Some(Signer::new("backfill test secret, 16+ bytes").unwrap()),
        ..ValueFormat::default()
    };
    let (d1, d2, d3) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let signed_l1: Arc<dyn Backend> =
        Arc::new(FileBackend::new(FileConfig::new(d1.path()).with_format(signed_format())).unwrap());
    let unsigned_l2: Arc<dyn Backend> = Arc::new(FileBackend::open(d2.path()).unwrap());
    let signed_l2: Arc<dyn Backend> =
        Arc::new(FileBackend::new(FileConfig::new(d3.path()).with_format(signed_format())).unwrap());
    assert_eq!(signed_l1.signing(), Signing::Signed);
    assert_eq!(unsigned_l2.signing(), Signing::Unsigned);

    // Planted in the unsigned layer (any program that can write its directory could have).
    unsigned_l2.set("k", Value::new("planted".to_string()), Expiry::Default).await.unwrap();
    let stack = TieredCache::builder().layer_arc(signed_l1.clone()).layer_arc(unsigned_l2.clone()).build().unwrap();
    assert_eq!(stack.signing(), Signing::Mixed);
    let found = stack.get("k").await.unwrap().unwrap();
    assert_eq!(found.value.get::<String>().unwrap(), "planted", "the stack serves what its layers hold");
    assert!(signed_l1.get("k").await.unwrap().is_none(), "laundered into the signed layer");
    // A value the application writes goes everywhere, signed where the layer signs.
    stack.set("k", Value::new("written".to_string()), Expiry::Default).await.unwrap();
    assert_eq!(signed_l1.get("k").await.unwrap().unwrap().value.get::<String>().unwrap(), "written");

    // From a signed layer: backfilled into the signed layer and into memory.
    signed_l2.set("s", Value::new("verified".to_string()), Expiry::Default).await.unwrap();
    let l1b: Arc<dyn Backend> = Arc::new(
        FileBackend::new(FileConfig::new(d1.path()).with_namespace("b").with_format(signed_format())).unwrap(),
    );
    let memory = mem(10);
    let stack = TieredCache::builder()
        .layer_arc(memory.clone())
        .layer_arc(l1b.clone())
        .layer_arc(signed_l2.clone())
        .build()
        .unwrap();
    assert_eq!(stack.signing(), Signing::Signed);
    assert!(stack.get("s").await.unwrap().is_some());
    assert!(l1b.get("s").await.unwrap().is_some(), "a verified value is backfilled");
    assert!(memory.get("s").await.unwrap().is_some());
    // And from an unsigned layer into memory, as before.
    unsigned_l2.set("u", Value::new("unsigned".to_string()), Expiry::Default).await.unwrap();
    let stack = TieredCache::builder().layer_arc(memory.clone()).layer_arc(unsigned_l2.clone()).build().unwrap();
    assert!(stack.get("u").await.unwrap().is_some());
    assert!(memory.get("u").await.unwrap().is_some());
}

/// The atomic operations run on the lowest layer (the shared one) and drop the faster layers'
/// copies; patterns list the lowest layer and remove from every layer.
#[tokio::test]
async fn atomic_operations_use_the_lowest_layer_and_refresh_the_faster_ones() {
    let (l1, l2) = (mem(100), mem(100));
    let cache = Cache::new(TieredCache::from_layers(vec![l1.clone(), l2.clone()]).unwrap());
    assert_eq!(cache.incr("n", 1).await.unwrap(), 1);
    assert_eq!(cache.get::<i64>("n").await.unwrap(), Some(1));
    assert!(l1.get("n").await.unwrap().is_some(), "the read backfilled L1");
    assert_eq!(cache.incr("n", 1).await.unwrap(), 2);
    assert!(l1.get("n").await.unwrap().is_none(), "L1 kept a stale counter");
    assert_eq!(cache.get::<i64>("n").await.unwrap(), Some(2));
    // A value only L1 holds (this process's copy) does not make the key present below.
    l1.set("only-l1", Value::new(1u8), cachestack::Expiry::Default).await.unwrap();
    assert!(cache.set_if_absent("only-l1", &2u8, None).await.unwrap());
    assert_eq!(cache.get::<u8>("only-l1").await.unwrap(), Some(2));
    // `expire` moves the deadline below and drops L1's copy, which carries the old one.
    cache.set("s", &1u8, Some(Duration::from_secs(5))).await.unwrap();
    assert!(cache.expire("s", Some(Duration::from_secs(3600))).await.unwrap());
    assert!(l1.get("s").await.unwrap().is_none());
    assert!(cache.ttl("s").await.unwrap().flatten().is_some_and(|t| t > Duration::from_secs(5)));
    // Patterns: listed from L2, removed from both.
    l1.set("p:l1", Value::new(1u8), cachestack::Expiry::Default).await.unwrap();
    cache.set("p:both", &1u8, None).await.unwrap();
    assert_eq!(cache.keys_matching("p:*").await.unwrap(), vec!["p:both".to_string()]);
    assert_eq!(cache.delete_matching("p:*").await.unwrap(), 2, "the layer that held the most");
    assert!(l1.get("p:l1").await.unwrap().is_none() && l2.get("p:both").await.unwrap().is_none());
}
