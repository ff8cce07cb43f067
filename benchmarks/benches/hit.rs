//! Memoized hits: cachestack's `#[cached]` against the `cached` crate's macros, bare quick_cache,
//! bare moka and a `Mutex<HashMap>`, in one run, on the same keys and values.
//!
//! Groups (ids are what `src/bin/report.rs` reads back):
//!
//! - `hit_u64`, `hit_string`: one thread, 100k distinct pre-warmed keys requested in a shuffled
//!   order, a 200-byte [`Payload`] returned (its clone is part of every hit). Memoized functions
//!   with a text key take a `String` by value, as the `cached` crate requires, so their callers
//!   clone the key; `cachestack_ref` takes `&str`, which only cachestack allows.
//! - `hit_u64_2threads`, `hit_string_2threads`: the same on 2 threads at once (`iter_custom`, a
//!   barrier start); one iteration is one call on each thread.
//! - `hit_latency_uniform`: cachestack's hit with 1k, 100k and 1M entries cached, keys requested
//!   uniformly over all of them; bare quick_cache at the same sizes for reference.
//! - `hit_latency_hot1k`: the same caches, 1000 hot keys requested (the working set held
//!   constant; what remains is the structure and the spread of the hot entries over memory pages);
//!   bare quick_cache again for reference.
//!
//! ```text
//! cargo bench -p cachestack-benchmarks --bench hit
//! ```
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cachestack::{Cache, CacheRegistry, FileBackend, FileConfig, MemoryBackend, TieredCache};
use cachestack_benchmarks::{on_two_threads, shuffled_ids, shuffled_text_keys, Cycle, Payload, KEYS};
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput};

/// Body executions, to check that every measured call was a hit.
static COMPUTED: AtomicU64 = AtomicU64::new(0);

fn compute(id: u64) -> Payload {
    COMPUTED.fetch_add(1, Relaxed);
    Payload::new(id)
}

fn compute_text(key: &str) -> Payload {
    COMPUTED.fetch_add(1, Relaxed);
    Payload::for_text(key)
}

// --- u64 argument ------------------------------------------------------------------------------

#[cachestack::cached(cache = "bench-u64")]
fn cachestack_u64(id: u64) -> Payload {
    compute(id)
}

#[cached::macros::cached]
fn cached_u64(id: u64) -> Payload {
    compute(id)
}

#[cached::macros::cached(max_size = 200_000)]
fn cached_lru_u64(id: u64) -> Payload {
    compute(id)
}

#[cached::macros::concurrent_cached]
fn cached_concurrent_u64(id: u64) -> Payload {
    compute(id)
}

// --- String argument ---------------------------------------------------------------------------

/// The same function over a stack `mem | file`: every call here is an L1 hit.
#[cachestack::cached(cache = "bench-stack")]
fn cachestack_stack_u64(id: u64) -> Payload {
    compute(id)
}

#[cachestack::cached(cache = "bench-text")]
fn cachestack_text(key: String) -> Payload {
    compute_text(&key)
}

#[cachestack::cached(cache = "bench-text")]
fn cachestack_text_ref(key: &str) -> Payload {
    compute_text(key)
}

#[cached::macros::cached]
fn cached_text(key: String) -> Payload {
    compute_text(&key)
}

#[cached::macros::cached(max_size = 200_000)]
fn cached_lru_text(key: String) -> Payload {
    compute_text(&key)
}

#[cached::macros::concurrent_cached]
fn cached_concurrent_text(key: String) -> Payload {
    compute_text(&key)
}

// --- cost growth -------------------------------------------------------------------------------

#[cachestack::cached(cache = "bench-1k")]
fn cachestack_1k(id: u64) -> Payload {
    compute(id)
}

#[cachestack::cached(cache = "bench-100k")]
fn cachestack_100k(id: u64) -> Payload {
    compute(id)
}

#[cachestack::cached(cache = "bench-1m")]
fn cachestack_1m(id: u64) -> Payload {
    compute(id)
}

/// A stack `mem | file` (the file layer in `dir`) whose L1 holds every key: four times the key
/// count, as L1 holds each key twice (by text, for the stack, and as the function's typed copy)
/// and splits its capacity between the two.
fn register_stack(name: &str, entries: usize, dir: &std::path::Path) {
    let l1 = MemoryBackend::with_capacity(4 * entries as u64);
    let l2 = FileBackend::new(FileConfig::new(dir)).expect("file layer");
    let stack = TieredCache::builder().layer(l1).layer(l2).build().expect("stack");
    CacheRegistry::global().register(name, Cache::new(stack));
}

fn register(name: &str, entries: usize) {
    // Twice the key count: quick_cache splits its capacity over shards, and keys do not spread
    // evenly, so an exact fit would evict a few.
    CacheRegistry::global().register(name, Cache::new(MemoryBackend::with_capacity(2 * entries as u64)));
}

type QuickCache<K> = quick_cache::sync::Cache<K, Payload>;
type MokaCache<K> = moka::sync::Cache<K, Payload>;

fn quick_cache<K: Eq + std::hash::Hash + Clone>(
    entries: impl Iterator<Item = (K, Payload)>,
    n: usize,
) -> QuickCache<K> {
    let cache = QuickCache::new(2 * n);
    for (k, v) in entries {
        cache.insert(k, v);
    }
    assert_eq!(cache.len(), n, "quick_cache evicted while warming");
    cache
}

fn moka<K: Eq + std::hash::Hash + Clone + Send + Sync + 'static>(
    entries: impl Iterator<Item = (K, Payload)>,
    n: usize,
) -> MokaCache<K> {
    let cache = MokaCache::new(2 * n as u64);
    for (k, v) in entries {
        cache.insert(k, v);
    }
    cache.run_pending_tasks();
    assert_eq!(cache.entry_count(), n as u64, "moka evicted while warming");
    cache
}

/// Calls `f` on every key twice; the second pass must compute nothing.
fn warm<K>(what: &str, keys: &[K], f: impl Fn(&K) -> Payload) {
    let started = Instant::now();
    for k in keys {
        black_box(f(k));
    }
    let before = COMPUTED.load(Relaxed);
    for k in keys {
        black_box(f(k));
    }
    let recomputed = COMPUTED.load(Relaxed) - before;
    assert_eq!(recomputed, 0, "{what}: {recomputed} of {} keys were not cached after warming", keys.len());
    eprintln!("warmed {what}: {} keys in {:.2?}", keys.len(), started.elapsed());
}

/// Warns when a benchmark computed values: its figure then mixes misses into hits.
fn check_all_hits(what: &str, before: u64) {
    let computed = COMPUTED.load(Relaxed) - before;
    if computed > 0 {
        eprintln!("WARNING: {what}: {computed} calls were misses (evicted entries); its figure is not a pure hit");
    }
}

/// One call per iteration, keys in the fixed shuffled order.
fn bench_one<K: Sync>(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    keys: &[K],
    f: impl Fn(&K) -> Payload,
) {
    let before = COMPUTED.load(Relaxed);
    let mut cycle = Cycle::new(keys, 0);
    group.bench_function(id, |b| b.iter(|| black_box(f(black_box(cycle.next())))));
    check_all_hits(id, before);
}

/// One call on each of 2 threads per iteration; the threads walk the keys from opposite halves.
fn bench_two<K: Sync>(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    keys: &[K],
    f: impl Fn(&K) -> Payload + Sync,
) {
    let before = COMPUTED.load(Relaxed);
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            on_two_threads(iters, |thread, iters| {
                let mut cycle = Cycle::new(keys, thread * keys.len() / 2);
                for _ in 0..iters {
                    black_box(f(black_box(cycle.next())));
                }
            })
        })
    });
    check_all_hits(id, before);
}

fn hits(c: &mut Criterion) {
    register("bench-u64", KEYS);
    register("bench-text", 2 * KEYS);
    let stack_dir = tempfile::tempdir().expect("a temporary directory");
    register_stack("bench-stack", KEYS, stack_dir.path());
    let ids = shuffled_ids(KEYS);
    let texts = shuffled_text_keys(KEYS);

    // Every store holds the same keys and values before anything is measured.
    warm("cachestack u64", &ids, |&k| cachestack_u64(k));
    warm("cachestack mem | file u64", &ids, |&k| cachestack_stack_u64(k));
    warm("cached u64", &ids, |&k| cached_u64(k));
    warm("cached max_size u64", &ids, |&k| cached_lru_u64(k));
    warm("cached concurrent u64", &ids, |&k| cached_concurrent_u64(k));
    let qc_u64 = quick_cache(ids.iter().map(|&k| (k, Payload::new(k))), KEYS);
    let moka_u64 = moka(ids.iter().map(|&k| (k, Payload::new(k))), KEYS);
    let map_u64: Mutex<HashMap<u64, Payload>> = Mutex::new(ids.iter().map(|&k| (k, Payload::new(k))).collect());

    warm("cachestack String", &texts, |k| cachestack_text(k.clone()));
    warm("cachestack &str", &texts, |k| cachestack_text_ref(k));
    warm("cached String", &texts, |k| cached_text(k.clone()));
    warm("cached max_size String", &texts, |k| cached_lru_text(k.clone()));
    warm("cached concurrent String", &texts, |k| cached_concurrent_text(k.clone()));
    let qc_text = quick_cache(texts.iter().map(|k| (k.clone(), Payload::for_text(k))), KEYS);
    let moka_text = moka(texts.iter().map(|k| (k.clone(), Payload::for_text(k))), KEYS);
    let map_text: Mutex<HashMap<String, Payload>> =
        Mutex::new(texts.iter().map(|k| (k.clone(), Payload::for_text(k))).collect());

    let mut group = c.benchmark_group("hit_u64");
    group.throughput(Throughput::Elements(1));
    bench_one(&mut group, "cachestack", &ids, |&k| cachestack_u64(k));
    bench_one(&mut group, "cachestack_stack", &ids, |&k| cachestack_stack_u64(k));
    bench_one(&mut group, "cached", &ids, |&k| cached_u64(k));
    bench_one(&mut group, "cached_lru", &ids, |&k| cached_lru_u64(k));
    bench_one(&mut group, "cached_concurrent", &ids, |&k| cached_concurrent_u64(k));
    bench_one(&mut group, "quick_cache", &ids, |k| qc_u64.get(k).unwrap());
    bench_one(&mut group, "moka", &ids, |k| moka_u64.get(k).unwrap());
    bench_one(&mut group, "mutex_hashmap", &ids, |k| map_u64.lock().unwrap().get(k).cloned().unwrap());
    group.finish();

    let mut group = c.benchmark_group("hit_string");
    group.throughput(Throughput::Elements(1));
    bench_one(&mut group, "cachestack", &texts, |k| cachestack_text(k.clone()));
    bench_one(&mut group, "cachestack_ref", &texts, |k| cachestack_text_ref(k));
    bench_one(&mut group, "cached", &texts, |k| cached_text(k.clone()));
    bench_one(&mut group, "cached_lru", &texts, |k| cached_lru_text(k.clone()));
    bench_one(&mut group, "cached_concurrent", &texts, |k| cached_concurrent_text(k.clone()));
    bench_one(&mut group, "quick_cache", &texts, |k| qc_text.get(k.as_str()).unwrap());
    bench_one(&mut group, "moka", &texts, |k| moka_text.get(k.as_str()).unwrap());
    bench_one(&mut group, "mutex_hashmap", &texts, |k| map_text.lock().unwrap().get(k.as_str()).cloned().unwrap());
    group.finish();

    let mut group = c.benchmark_group("hit_u64_2threads");
    group.throughput(Throughput::Elements(2));
    bench_two(&mut group, "cachestack", &ids, |&k| cachestack_u64(k));
    bench_two(&mut group, "cachestack_stack", &ids, |&k| cachestack_stack_u64(k));
    bench_two(&mut group, "cached", &ids, |&k| cached_u64(k));
    bench_two(&mut group, "cached_lru", &ids, |&k| cached_lru_u64(k));
    bench_two(&mut group, "cached_concurrent", &ids, |&k| cached_concurrent_u64(k));
    bench_two(&mut group, "quick_cache", &ids, |k| qc_u64.get(k).unwrap());
    bench_two(&mut group, "moka", &ids, |k| moka_u64.get(k).unwrap());
    bench_two(&mut group, "mutex_hashmap", &ids, |k| map_u64.lock().unwrap().get(k).cloned().unwrap());
    group.finish();

    let mut group = c.benchmark_group("hit_string_2threads");
    group.throughput(Throughput::Elements(2));
    bench_two(&mut group, "cachestack", &texts, |k| cachestack_text(k.clone()));
    bench_two(&mut group, "cachestack_ref", &texts, |k| cachestack_text_ref(k));
    bench_two(&mut group, "cached", &texts, |k| cached_text(k.clone()));
    bench_two(&mut group, "cached_lru", &texts, |k| cached_lru_text(k.clone()));
    bench_two(&mut group, "cached_concurrent", &texts, |k| cached_concurrent_text(k.clone()));
    bench_two(&mut group, "quick_cache", &texts, |k| qc_text.get(k.as_str()).unwrap());
    bench_two(&mut group, "moka", &texts, |k| moka_text.get(k.as_str()).unwrap());
    bench_two(&mut group, "mutex_hashmap", &texts, |k| map_text.lock().unwrap().get(k.as_str()).cloned().unwrap());
    group.finish();
}

/// One size of the cost-growth benchmark.
struct Size {
    label: &'static str,
    entries: usize,
    call: fn(u64) -> Payload,
}

fn latency(c: &mut Criterion) {
    let sizes = [
        Size { label: "1k", entries: 1_000, call: cachestack_1k },
        Size { label: "100k", entries: 100_000, call: cachestack_100k },
        Size { label: "1M", entries: 1_000_000, call: cachestack_1m },
    ];
    let mut uniform = Vec::new();
    let mut bare = Vec::new();
    for size in &sizes {
        register(&format!("bench-{}", size.label.to_lowercase()), size.entries);
        let ids = shuffled_ids(size.entries);
        warm(&format!("cachestack {}", size.label), &ids, |&k| (size.call)(k));
        bare.push(quick_cache(ids.iter().map(|&k| (k, Payload::new(k))), size.entries));
        uniform.push(ids);
    }
    // The 1000 hot keys are in every cache (all hold 0..entries).
    let hot = shuffled_ids(1_000);

    let mut group = c.benchmark_group("hit_latency_uniform");
    for (size, ids) in sizes.iter().zip(&uniform) {
        let before = COMPUTED.load(Relaxed);
        let mut cycle = Cycle::new(ids, 0);
        group.bench_with_input(BenchmarkId::new("cachestack", size.label), &size.call, |b, call| {
            b.iter(|| black_box(call(*black_box(cycle.next()))))
        });
        check_all_hits(size.label, before);
    }
    for ((size, ids), cache) in sizes.iter().zip(&uniform).zip(&bare) {
        let mut cycle = Cycle::new(ids, 0);
        group.bench_with_input(BenchmarkId::new("quick_cache", size.label), cache, |b, cache| {
            b.iter(|| black_box(cache.get(black_box(cycle.next())).unwrap()))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("hit_latency_hot1k");
    for size in &sizes {
        let before = COMPUTED.load(Relaxed);
        let mut cycle = Cycle::new(&hot, 0);
        group.bench_with_input(BenchmarkId::new("cachestack", size.label), &size.call, |b, call| {
            b.iter(|| black_box(call(*black_box(cycle.next()))))
        });
        check_all_hits(size.label, before);
    }
    for (size, cache) in sizes.iter().zip(&bare) {
        let mut cycle = Cycle::new(&hot, 0);
        group.bench_with_input(BenchmarkId::new("quick_cache", size.label), cache, |b, cache| {
            b.iter(|| black_box(cache.get(black_box(cycle.next())).unwrap()))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(4));
    targets = hits, latency
}
criterion_main!(benches);
