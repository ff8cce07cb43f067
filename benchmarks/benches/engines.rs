//! The two memory engines of cachestack (quick_cache and moka) through `#[cached]`, side by side.
//!
//! - Hit ratio on a Zipf trace (s = 1.0 over 100k keys, fixed seed): the cache holds 1% or 10%
//!   of the keys; 1M calls warm it, the next 1M are counted (the function's own hit and miss
//!   counters). Not timed: written to `target/cachestack-bench/engines.tsv` for the report.
//! - `engine_zipf`: time per call replaying that trace (hits and misses, a miss computes the
//!   200-byte value), per engine and capacity.
//! - `engine_hit`: hits only (100k keys, all cached), on 1, 2 and 4 threads at once, and with a
//!   1 KiB value; the `cached` crate's `#[cached]` alongside.
//!
//! ```text
//! cargo bench -p cachestack-benchmarks --bench engines
//! ```
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::io::Write as _;
use std::time::Duration;

use cachestack::{Cache, CacheRegistry, MemoryBackend, MemoryConfig, MemoryEngine};
use cachestack_benchmarks::{on_threads, shuffled_ids, target_dir, zipf_trace, Cycle, Payload, KEYS};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// A 1 KiB value.
type Kib = Vec<u8>;

/// A library's name and its memoized function.
type Row<V> = (&'static str, fn(u64) -> V);

fn kib(id: u64) -> Kib {
    let mut v = vec![0u8; 1024];
    v[..8].copy_from_slice(&id.to_le_bytes());
    v
}

#[cachestack::cached(cache = "eng-zipf")]
fn zipf_call(id: u64) -> Payload {
    Payload::new(id)
}

#[cachestack::cached(cache = "eng-quick_cache")]
fn hit_quick_cache(id: u64) -> Payload {
    Payload::new(id)
}

#[cachestack::cached(cache = "eng-moka")]
fn hit_moka(id: u64) -> Payload {
    Payload::new(id)
}

#[cached::macros::cached]
fn hit_cached(id: u64) -> Payload {
    Payload::new(id)
}

#[cachestack::cached(cache = "eng-quick_cache")]
fn kib_quick_cache(id: u64) -> Kib {
    kib(id)
}

#[cachestack::cached(cache = "eng-moka")]
fn kib_moka(id: u64) -> Kib {
    kib(id)
}

#[cached::macros::cached]
fn kib_cached(id: u64) -> Kib {
    kib(id)
}

const ENGINES: [(&str, MemoryEngine); 2] = [("quick_cache", MemoryEngine::QuickCache), ("moka", MemoryEngine::Moka)];

/// Capacities as a share of the trace's keys: label and entries.
const CAPACITIES: [(&str, u64); 2] = [("1%", KEYS as u64 / 100), ("10%", KEYS as u64 / 10)];

/// Calls of the trace that warm the cache, then calls that are counted.
const WARM: usize = 1_000_000;
const COUNTED: usize = 1_000_000;

fn register(name: &str, engine: MemoryEngine, max_entries: u64) {
    let config = MemoryConfig { max_entries, engine, ..MemoryConfig::default() };
    CacheRegistry::global().register(name, Cache::new(MemoryBackend::new(config).unwrap()));
}

/// The hit ratio of each engine at each capacity, into `engines.tsv` (`zipf/<engine>/<share>`).
fn hit_ratios(trace: &[u64]) {
    let path = target_dir().join("cachestack-bench").join("engines.tsv");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut out = std::fs::File::create(&path).unwrap();
    for (share, entries) in CAPACITIES {
        for (engine_name, engine) in ENGINES {
            register("eng-zipf", engine, entries);
            let (warm, counted) = trace.split_at(WARM);
            for &k in warm {
                black_box(zipf_call(k));
            }
            let before = zipf_call_stats();
            for &k in counted {
                black_box(zipf_call(k));
            }
            let after = zipf_call_stats();
            let (hits, misses) = (after.hits - before.hits, after.misses - before.misses);
            let ratio = hits as f64 / (hits + misses).max(1) as f64;
            eprintln!("zipf {engine_name} at {share} ({entries} entries): hit ratio {ratio:.4}");
            writeln!(out, "zipf/{engine_name}/{share}\t{ratio}").unwrap();
        }
    }
}

fn zipf(c: &mut Criterion) {
    let trace = zipf_trace(KEYS, WARM + COUNTED, 1.0, 0x5eed);
    hit_ratios(&trace);
    let counted = &trace[WARM..];
    let mut group = c.benchmark_group("engine_zipf");
    group.throughput(Throughput::Elements(1));
    for (share, entries) in CAPACITIES {
        for (engine_name, engine) in ENGINES {
            register("eng-zipf", engine, entries);
            for &k in &trace[..WARM] {
                black_box(zipf_call(k));
            }
            let mut cycle = Cycle::new(counted, 0);
            group.bench_function(BenchmarkId::new(engine_name, share), |b| {
                b.iter(|| black_box(zipf_call(*black_box(cycle.next()))))
            });
        }
    }
    group.finish();
}

/// Hits on `threads` threads at once (aggregate time per call); threads start at spread points.
fn bench_threads<V>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: BenchmarkId,
    threads: usize,
    keys: &[u64],
    f: fn(u64) -> V,
) {
    group.throughput(Throughput::Elements(threads as u64));
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            on_threads(threads, iters, |thread, iters| {
                let mut cycle = Cycle::new(keys, thread * keys.len() / threads);
                for _ in 0..iters {
                    black_box(f(*black_box(cycle.next())));
                }
            })
        })
    });
}

fn hits(c: &mut Criterion) {
    for (name, engine) in ENGINES {
        // Twice the key count: no eviction while warming (quick_cache's shards fill unevenly).
        register(&format!("eng-{name}"), engine, 4 * KEYS as u64);
    }
    let ids = shuffled_ids(KEYS);
    let payloads: [Row<Payload>; 3] = [("quick_cache", hit_quick_cache), ("moka", hit_moka), ("cached", hit_cached)];
    let kibs: [Row<Kib>; 3] = [("quick_cache", kib_quick_cache), ("moka", kib_moka), ("cached", kib_cached)];
    for (_, f) in payloads {
        ids.iter().for_each(|&k| drop(black_box(f(k))));
    }
    for (_, f) in kibs {
        ids.iter().for_each(|&k| drop(black_box(f(k))));
    }
    let mut group = c.benchmark_group("engine_hit");
    for threads in [1, 2, 4] {
        for (name, f) in payloads {
            bench_threads(&mut group, BenchmarkId::new(name, format!("{threads}t")), threads, &ids, f);
        }
    }
    for (name, f) in kibs {
        bench_threads(&mut group, BenchmarkId::new(name, "1KiB"), 1, &ids, f);
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(4));
    targets = zipf, hits
}
criterion_main!(benches);
