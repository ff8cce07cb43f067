//! What a tiered stack costs: an L1 hit through a memory-over-file stack against a hit in a
//! memory backend alone (async `Cache::get` and the synchronous first look the generated code
//! uses), and an L2 (file) hit that backfills L1 against a read from the file backend alone.
//!
//! ```text
//! cargo bench -p cachestack --bench tiered
//! ```
#![allow(clippy::unwrap_used)]

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cachestack::{Backend, Cache, FileBackend, FileConfig, MemoryBackend, TieredCache};
use common::{profile, Profile};
use criterion::{criterion_group, criterion_main, Criterion};

/// Runs `iters` awaited calls of `f` inside one `block_on`, timing only the loop.
fn run_async<F, Fut>(rt: &tokio::runtime::Runtime, iters: u64, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(f().await);
        }
        start.elapsed()
    })
}

fn tiered(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file_config = || FileConfig::new(dir.path()).with_namespace(format!("bench-{}", std::process::id()));

    let memory_only = Arc::new(MemoryBackend::with_capacity(10_000));
    let l1 = Arc::new(MemoryBackend::with_capacity(10_000));
    let file: Arc<dyn Backend> = Arc::new(FileBackend::new(file_config()).unwrap());
    let stack = Arc::new(TieredCache::from_layers(vec![l1.clone(), file.clone()]).unwrap());
    let memory_cache = Cache::from_arc(memory_only.clone());
    let stack_cache = Cache::from_arc(stack.clone());
    let file_cache = Cache::from_arc(file.clone());
    rt.block_on(async {
        memory_cache.set("profile:1", &profile(1), None).await.unwrap();
        stack_cache.set("profile:1", &profile(1), None).await.unwrap();
    });

    let mut group = c.benchmark_group("tiered_l1_hit");
    group.bench_function("memory only: Cache::get", |b| {
        b.iter_custom(|iters| run_async(&rt, iters, || memory_cache.get::<Profile>("profile:1")))
    });
    group.bench_function("memory over file, L1 hit: Cache::get", |b| {
        b.iter_custom(|iters| run_async(&rt, iters, || stack_cache.get::<Profile>("profile:1")))
    });
    let memory_local = memory_only.local_l1().unwrap();
    group.bench_function("memory only: sync first look + typed read", |b| {
        b.iter(|| black_box(memory_local.get_value(black_box("profile:1")).unwrap().get::<Profile>().unwrap()))
    });
    let stack_local = stack.local_l1().unwrap();
    group.bench_function("memory over file, L1 hit: sync first look + typed read", |b| {
        b.iter(|| black_box(stack_local.get_value(black_box("profile:1")).unwrap().get::<Profile>().unwrap()))
    });
    group.finish();

    // Each iteration first removes the key from L1 (a memory removal, tens of nanoseconds), so
    // the read misses L1, reads the file, decodes, and backfills L1.
    let l1_local = l1.as_local().unwrap();
    let mut group = c.benchmark_group("tiered_l2_hit");
    group.bench_function("file only: Cache::get", |b| {
        b.iter_custom(|iters| run_async(&rt, iters, || file_cache.get::<Profile>("profile:1")))
    });
    group.bench_function("memory over file, L2 hit + backfill: Cache::get", |b| {
        b.iter_custom(|iters| {
            run_async(&rt, iters, || {
                l1_local.remove("profile:1");
                stack_cache.get::<Profile>("profile:1")
            })
        })
    });
    group.finish();
    assert!(l1_local.get_value("profile:1").is_some(), "the last read backfilled L1");
}

criterion_group!(benches, tiered);
criterion_main!(benches);
