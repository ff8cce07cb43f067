//! Memory per cached entry: the growth of the resident set (`VmRSS`) while 1M distinct
//! `u64 -> u64` entries are cached, divided by the entries (issue #12). One library per process,
//! so that nothing else grows the heap meanwhile:
//!
//! ```text
//! cargo run --release -p cachestack-benchmarks --example memory_per_entry -- <library> [entries]
//! ```
//!
//! Libraries: `cachestack` (`#[cached]` over a memory cache of `entries` entries),
//! `cachestack_ttl` (the same with `ttl = "1h"`), `cached` (`#[cached(max_size = .., ttl_secs = ..)]`:
//! bounded, with a TTL), `quick_cache` (bare, `u64 -> u64`).
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use cachestack::{Cache, CacheRegistry, MemoryBackend};

#[cachestack::cached(cache = "entries")]
fn cachestack_entry(id: u64) -> u64 {
    id.wrapping_mul(3)
}

#[cachestack::cached(cache = "entries", ttl = "1h")]
fn cachestack_ttl_entry(id: u64) -> u64 {
    id.wrapping_mul(3)
}

#[cached::macros::cached(max_size = 1_100_000, ttl_secs = 3600)]
fn cached_entry(id: u64) -> u64 {
    id.wrapping_mul(3)
}

fn cached_entry_cache_misses() -> u64 {
    use cached::Cached;
    CACHED_ENTRY.read().cache_misses().unwrap_or(0)
}

/// The resident set in bytes, from /proc/self/status.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "cachestack".into());
    let n: u64 = args.next().map_or(1_000_000, |n| n.parse().unwrap());
    // Capacity with room (quick_cache shards its capacity), as the hit benchmarks do.
    let capacity = n + n / 10;
    let qc = (which == "quick_cache").then(|| quick_cache::sync::Cache::<u64, u64>::new(capacity as usize));
    if which.starts_with("cachestack") {
        // One function per process: a second one would take half the cache's capacity.
        CacheRegistry::global().register("entries", Cache::new(MemoryBackend::with_capacity(capacity)));
        if which == "cachestack" {
            black_box(cachestack_entry(u64::MAX));
        } else {
            black_box(cachestack_ttl_entry(u64::MAX));
        }
    }
    if which == "cached" {
        black_box(cached_entry(u64::MAX));
    }
    let before = rss();
    for id in 0..n {
        match which.as_str() {
            "cachestack" => {
                black_box(cachestack_entry(id));
            }
            "cachestack_ttl" => {
                black_box(cachestack_ttl_entry(id));
            }
            "cached" => {
                black_box(cached_entry(id));
            }
            "quick_cache" => qc.as_ref().unwrap().insert(id, id.wrapping_mul(3)),
            other => panic!("unknown library {other}"),
        }
    }
    let grown = rss().saturating_sub(before);
    // Every entry is still there (nothing was evicted), checked on a sample: a call that is
    // not a hit would count a miss.
    let misses = || cachestack_entry_stats().misses + cachestack_ttl_entry_stats().misses + cached_entry_cache_misses();
    let before_sample = misses();
    let held = (0..n).step_by(997).filter(|&id| match which.as_str() {
        "cachestack" => cachestack_entry(id) == id.wrapping_mul(3),
        "cachestack_ttl" => cachestack_ttl_entry(id) == id.wrapping_mul(3),
        "cached" => cached_entry(id) == id.wrapping_mul(3),
        "quick_cache" => qc.as_ref().unwrap().get(&id).is_some(),
        _ => false,
    });
    let sampled = held.count();
    assert_eq!(misses(), before_sample, "entries were evicted: the figure would be wrong");
    println!(
        "{which}\t{n}\t{:.1}\tbytes per entry (RSS growth {} bytes; {sampled} sampled entries held)",
        grown as f64 / n as f64,
        grown
    );
}
