//! A memoized hit under a profiler: warms 100k keys, then makes `calls` hits through one library
//! inside `measured()`, which callgrind can isolate. Instruction counts are repeatable where wall
//! times are not (a shared, loaded machine):
//!
//! ```text
//! cargo build --release -p cachestack-benchmarks --example profile_hit
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measured*' \
//!     target/release/examples/profile_hit cachestack_u64 100000
//! ```
//!
//! Libraries: `cachestack_u64`, `cachestack_stack_u64` (L1 hits of a stack `mem | file`), `cached_u64`, `quick_cache_u64`, `cachestack_string`,
//! `cachestack_str`, `cached_string`, `quick_cache_string`, `moka_u64`; a cachestack library
//! with the suffix `_moka` (`cachestack_u64_moka`) runs on a moka memory cache; and two experiments on the store's
//! shape: `quick_cache_arc_u64` (values behind an `Arc`, cloned out) and `sharded_unsync_arc_u64`
//! (the same read under a shard lock without cloning the `Arc`).
//!
//! `PROFILE_TIME=n` also prints the best of `n` timed passes in ns per call, and
//! `PROFILE_THREADS=2` runs those passes on two threads at once (aggregate ns per call): a quick
//! look without criterion.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use cachestack::{Cache, CacheRegistry, MemoryBackend, MemoryConfig, MemoryEngine};
use cachestack_benchmarks::{shuffled_ids, shuffled_text_keys, Cycle, Payload, KEYS};

#[cachestack::cached(cache = "profile")]
fn cachestack_u64(id: u64) -> Payload {
    Payload::new(id)
}

#[cachestack::cached(cache = "profile-stack")]
fn cachestack_stack_u64(id: u64) -> Payload {
    Payload::new(id)
}

#[cached::macros::cached]
fn cached_u64(id: u64) -> Payload {
    Payload::new(id)
}

#[cachestack::cached(cache = "profile")]
fn cachestack_text(key: String) -> Payload {
    Payload::for_text(&key)
}

#[cachestack::cached(cache = "profile")]
fn cachestack_text_ref(key: &str) -> Payload {
    Payload::for_text(key)
}

#[cached::macros::cached]
fn cached_text(key: String) -> Payload {
    Payload::for_text(&key)
}

/// [`run`] for closures that are not `Sync` (one thread only).
fn run_local<K>(keys: &[K], calls: usize, f: impl Fn(&K) -> Payload) {
    for k in keys {
        black_box(f(k));
    }
    measured(keys, calls, &f);
    if let Some(reps) = std::env::var("PROFILE_TIME").ok().and_then(|n| n.parse::<u32>().ok()) {
        let best = (0..reps)
            .map(|_| {
                let start = std::time::Instant::now();
                measured(keys, calls, &f);
                start.elapsed().as_nanos() as f64 / calls as f64
            })
            .fold(f64::INFINITY, f64::min);
        println!("{best:.1} ns per call");
    }
}

#[inline(never)]
fn measured<K>(keys: &[K], calls: usize, f: impl Fn(&K) -> Payload) {
    let mut cycle = Cycle::new(keys, 0);
    for _ in 0..calls {
        black_box(f(black_box(cycle.next())));
    }
}

fn run<K: Sync>(keys: &[K], calls: usize, f: impl Fn(&K) -> Payload + Sync) {
    for k in keys {
        black_box(f(k));
    }
    measured(keys, calls, &f);
    // `PROFILE_THREADS=2`: the timed passes run on that many threads at once (aggregate ns per call).
    let threads: usize = std::env::var("PROFILE_THREADS").ok().and_then(|n| n.parse().ok()).unwrap_or(1);
    // `PROFILE_TIME=n`: also print the best of n timed passes (ns per call), for a quick look
    // without criterion; the minimum filters out most of a shared machine's noise.
    if let Some(reps) = std::env::var("PROFILE_TIME").ok().and_then(|n| n.parse::<u32>().ok()) {
        let best = (0..reps)
            .map(|_| {
                let start = std::time::Instant::now();
                std::thread::scope(|s| {
                    for _ in 0..threads {
                        s.spawn(|| measured(keys, calls, &f));
                    }
                });
                start.elapsed().as_nanos() as f64 / (calls * threads) as f64
            })
            .fold(f64::INFINITY, f64::min);
        println!("{best:.1} ns per call");
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "cachestack_u64".into());
    let calls: usize = args.next().map_or(100_000, |n| n.parse().expect("calls: a number"));
    let (which, engine) = match which.strip_suffix("_moka") {
        Some(lib) if lib.starts_with("cachestack") => (lib.to_string(), MemoryEngine::Moka),
        _ => (which, MemoryEngine::QuickCache),
    };
    let config = MemoryConfig { max_entries: 4 * KEYS as u64, engine, ..MemoryConfig::default() };
    CacheRegistry::global().register("profile", Cache::new(MemoryBackend::new(config).unwrap()));
    let ids = shuffled_ids(KEYS);
    let texts = shuffled_text_keys(KEYS);
    match which.as_str() {
        "cachestack_u64" => run(&ids, calls, |&k| cachestack_u64(k)),
        "cachestack_stack_u64" => {
            // L1 of a stack `mem | file`: four times the keys (it holds each by text and typed).
            let dir = tempfile::tempdir().unwrap();
            let l1 =
                MemoryBackend::new(MemoryConfig { max_entries: 8 * KEYS as u64, engine, ..MemoryConfig::default() });
            let l2 = cachestack::FileBackend::new(cachestack::FileConfig::new(dir.path())).unwrap();
            let stack = cachestack::TieredCache::builder().layer(l1.unwrap()).layer(l2).build().unwrap();
            CacheRegistry::global().register("profile-stack", Cache::new(stack));
            run(&ids, calls, |&k| cachestack_stack_u64(k));
        }
        "cached_u64" => run(&ids, calls, |&k| cached_u64(k)),
        "quick_cache_u64" => {
            let qc = quick_cache::sync::Cache::<u64, Payload>::new(2 * KEYS);
            ids.iter().for_each(|&k| qc.insert(k, Payload::new(k)));
            run(&ids, calls, |k| qc.get(k).unwrap());
        }
        "moka_u64" => {
            let cache = moka::sync::Cache::<u64, Payload>::new(2 * KEYS as u64);
            ids.iter().for_each(|&k| cache.insert(k, Payload::new(k)));
            run(&ids, calls, |k| cache.get(k).unwrap());
        }
        // Experiments on the store's shape (values behind an `Arc`, read with or without cloning it).
        "quick_cache_arc_u64" => {
            let qc = quick_cache::sync::Cache::<u64, std::sync::Arc<Payload>>::new(2 * KEYS);
            ids.iter().for_each(|&k| qc.insert(k, std::sync::Arc::new(Payload::new(k))));
            run(&ids, calls, |k| (*qc.get(k).unwrap()).clone());
        }
        "sharded_unsync_arc_u64" => {
            type Shard = quick_cache::unsync::Cache<u64, std::sync::Arc<Payload>>;
            let shards: Vec<std::sync::RwLock<Shard>> =
                (0..8).map(|_| std::sync::RwLock::new(Shard::new(2 * KEYS / 8 + 1000))).collect();
            let shard = |k: &u64| &shards[(k.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 61) as usize];
            ids.iter().for_each(|&k| shard(&k).write().unwrap().insert(k, std::sync::Arc::new(Payload::new(k))));
            run(&ids, calls, |k| shard(k).read().unwrap().get(k).map(|v| (**v).clone()).unwrap());
        }
        "quick_cache_textkey_arc_u64" => {
            // The key as cachestack renders it, into a reused buffer, over the same kind of store.
            let qc = quick_cache::sync::Cache::<String, std::sync::Arc<Payload>>::new(2 * KEYS);
            ids.iter().for_each(|&k| {
                qc.insert(format!("profile_hit::cachestack_u64({k})"), std::sync::Arc::new(Payload::new(k)))
            });
            let buf = std::cell::RefCell::new(String::new());
            let render = |k: u64| {
                use std::fmt::Write as _;
                let mut buf = buf.borrow_mut();
                buf.clear();
                let _ = write!(buf, "profile_hit::cachestack_u64({k})");
                (*qc.get(buf.as_str()).unwrap()).clone()
            };
            run_local(&ids, calls, |&k| render(k));
        }
        "cachestack_string" => run(&texts, calls, |k| cachestack_text(k.clone())),
        "cachestack_str" => run(&texts, calls, |k| cachestack_text_ref(k)),
        "cached_string" => run(&texts, calls, |k| cached_text(k.clone())),
        "quick_cache_string" => {
            let qc = quick_cache::sync::Cache::<String, Payload>::new(2 * KEYS);
            texts.iter().for_each(|k| qc.insert(k.clone(), Payload::for_text(k)));
            run(&texts, calls, |k| qc.get(k.as_str()).unwrap());
        }
        other => panic!("unknown library {other}"),
    }
}
