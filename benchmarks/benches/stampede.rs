//! Stampede: 1000 concurrent callers of one cold key whose computation takes 1 ms. Criterion
//! measures the time until the last caller has its value; the number of times the body ran per
//! cold key is recorded in `target/cachestack-bench/stampede.json` (see
//! [`cachestack_benchmarks::stampede_file`]), which the report reads.
//!
//! - `stampede_threads`: 1000 OS threads (spawned once, released together by a barrier each
//!   round), sync functions, a `thread::sleep` body.
//! - `stampede_tasks`: 1000 tokio tasks on a 2-worker runtime, async functions, a
//!   `tokio::time::sleep` body.
//!
//! Each library is used the way its documentation says to deduplicate concurrent misses:
//! cachestack's `#[cached]` (single flight is on by default), the `cached` crate's
//! `#[cached(sync_writes = "by_key")]`, quick_cache's `get_or_insert_with` /
//! `get_or_insert_async`, moka's `get_with`. `Mutex<HashMap>` is the hand-written
//! check-compute-insert that has no protection.
//!
//! ```text
//! cargo bench -p cachestack-benchmarks --bench stampede
//! ```
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cachestack::{Cache, CacheRegistry, MemoryBackend};
use cachestack_benchmarks::{stampede_file, write_tally, Crowd, Payload, Tally, BODY_TIME, CALLERS};
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

/// Keys never used before (every round is a cold miss for every library).
static NEXT_KEY: AtomicU64 = AtomicU64::new(1 << 40);

fn fresh_key() -> u64 {
    NEXT_KEY.fetch_add(1, SeqCst)
}

fn body(ran: &AtomicU64, key: u64) -> Payload {
    ran.fetch_add(1, SeqCst);
    std::thread::sleep(BODY_TIME);
    Payload::new(key)
}

async fn body_async(ran: &AtomicU64, key: u64) -> Payload {
    ran.fetch_add(1, SeqCst);
    tokio::time::sleep(BODY_TIME).await;
    Payload::new(key)
}

// --- body execution counters, one per library and mode -----------------------------------------

static RAN_CACHESTACK_SYNC: AtomicU64 = AtomicU64::new(0);
static RAN_CACHED_SYNC: AtomicU64 = AtomicU64::new(0);
static RAN_QUICK_CACHE_SYNC: AtomicU64 = AtomicU64::new(0);
static RAN_MOKA_SYNC: AtomicU64 = AtomicU64::new(0);
static RAN_MAP_SYNC: AtomicU64 = AtomicU64::new(0);
static RAN_CACHESTACK_ASYNC: AtomicU64 = AtomicU64::new(0);
static RAN_CACHED_ASYNC: AtomicU64 = AtomicU64::new(0);
static RAN_QUICK_CACHE_ASYNC: AtomicU64 = AtomicU64::new(0);
static RAN_MOKA_ASYNC: AtomicU64 = AtomicU64::new(0);
static RAN_MAP_ASYNC: AtomicU64 = AtomicU64::new(0);

#[cachestack::cached(cache = "bench-stampede")]
fn cachestack_sync(key: u64) -> Payload {
    body(&RAN_CACHESTACK_SYNC, key)
}

#[cached::macros::cached(sync_writes = "by_key")]
fn cached_sync(key: u64) -> Payload {
    body(&RAN_CACHED_SYNC, key)
}

#[cachestack::cached(cache = "bench-stampede")]
async fn cachestack_async(key: u64) -> Payload {
    body_async(&RAN_CACHESTACK_ASYNC, key).await
}

#[cached::macros::cached(sync_writes = "by_key")]
async fn cached_async(key: u64) -> Payload {
    body_async(&RAN_CACHED_ASYNC, key).await
}

/// Runs one library's stampede benchmark and records its body executions per round.
fn measure(
    group: &mut BenchmarkGroup<'_, WallTime>,
    group_name: &str,
    id: &str,
    ran: &'static AtomicU64,
    mut round: impl FnMut(u64) -> (Duration, u64),
) {
    let mut tally = Tally::new(CALLERS);
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let key = fresh_key();
                let before = ran.load(SeqCst);
                let (took, wrong) = round(key);
                total += took;
                tally.record(ran.load(SeqCst) - before);
                tally.wrong_values += wrong;
            }
            total
        })
    });
    let path = stampede_file();
    match write_tally(&path, &format!("{group_name}/{id}"), &tally) {
        Ok(()) => eprintln!(
            "{group_name}/{id}: {} cold keys, body ran {:.2} times per key (min {}, max {}), {} wrong values",
            tally.rounds,
            tally.mean(),
            tally.min_per_key,
            tally.max_per_key,
            tally.wrong_values
        ),
        Err(err) => eprintln!("cannot record the stampede tally in {}: {err}", path.display()),
    }
}

/// A round for the thread crowd: every caller checks it got the value of its key.
fn crowd_of(call: impl Fn(u64) -> Payload + Send + Sync + 'static) -> (Crowd, Arc<AtomicU64>) {
    let wrong = Arc::new(AtomicU64::new(0));
    let counted = wrong.clone();
    let crowd = Crowd::new(CALLERS, move |key| {
        if call(key).id != key {
            counted.fetch_add(1, SeqCst);
        }
    });
    (crowd, wrong)
}

fn threads(c: &mut Criterion) {
    CacheRegistry::global().register("bench-stampede", Cache::new(MemoryBackend::with_capacity(1_000_000)));
    let name = "stampede_threads";
    let mut group = c.benchmark_group(name);
    group.sample_size(10).sampling_mode(SamplingMode::Flat);

    let mut run = |id: &str, ran: &'static AtomicU64, call: Box<dyn Fn(u64) -> Payload + Send + Sync>| {
        let (crowd, wrong) = crowd_of(call);
        measure(&mut group, name, id, ran, |key| {
            let before = wrong.load(SeqCst);
            let took = crowd.round(key);
            (took, wrong.load(SeqCst) - before)
        });
    };
    run("cachestack", &RAN_CACHESTACK_SYNC, Box::new(cachestack_sync));
    run("cached_by_key", &RAN_CACHED_SYNC, Box::new(cached_sync));
    let qc = Arc::new(quick_cache::sync::Cache::<u64, Payload>::new(1_000_000));
    run(
        "quick_cache",
        &RAN_QUICK_CACHE_SYNC,
        Box::new(move |k| qc.get_or_insert_with(&k, || Ok::<_, Infallible>(body(&RAN_QUICK_CACHE_SYNC, k))).unwrap()),
    );
    let moka = moka::sync::Cache::<u64, Payload>::new(1_000_000);
    run("moka", &RAN_MOKA_SYNC, Box::new(move |k| moka.get_with(k, || body(&RAN_MOKA_SYNC, k))));
    let map = Arc::new(Mutex::new(HashMap::<u64, Payload>::new()));
    run(
        "mutex_hashmap",
        &RAN_MAP_SYNC,
        Box::new(move |k| {
            if let Some(v) = map.lock().unwrap().get(&k).cloned() {
                return v;
            }
            let v = body(&RAN_MAP_SYNC, k);
            map.lock().unwrap().insert(k, v.clone());
            v
        }),
    );
    group.finish();
}

/// A round for the task crowd: spawns `CALLERS` tasks calling `call(key)`, waits for all.
fn task_round<F, Fut>(rt: &Runtime, key: u64, call: &F) -> (Duration, u64)
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Payload> + Send + 'static,
{
    let began = Instant::now();
    let wrong = rt.block_on(async {
        let mut set = JoinSet::new();
        for _ in 0..CALLERS {
            set.spawn(call(key));
        }
        let mut wrong = 0;
        while let Some(joined) = set.join_next().await {
            if joined.unwrap().id != key {
                wrong += 1;
            }
        }
        wrong
    });
    (began.elapsed(), wrong)
}

fn tasks(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_time().build().unwrap();
    let name = "stampede_tasks";
    let mut group = c.benchmark_group(name);
    group.sample_size(10).sampling_mode(SamplingMode::Flat);

    measure(&mut group, name, "cachestack", &RAN_CACHESTACK_ASYNC, |key| task_round(&rt, key, &cachestack_async));
    measure(&mut group, name, "cached_by_key", &RAN_CACHED_ASYNC, |key| task_round(&rt, key, &cached_async));

    let qc = Arc::new(quick_cache::sync::Cache::<u64, Payload>::new(1_000_000));
    let call = move |k: u64| {
        let qc = qc.clone();
        async move {
            qc.get_or_insert_async(&k, async { Ok::<_, Infallible>(body_async(&RAN_QUICK_CACHE_ASYNC, k).await) })
                .await
                .unwrap()
        }
    };
    measure(&mut group, name, "quick_cache", &RAN_QUICK_CACHE_ASYNC, |key| task_round(&rt, key, &call));

    let moka = moka::future::Cache::<u64, Payload>::new(1_000_000);
    let call = move |k: u64| {
        let moka = moka.clone();
        async move { moka.get_with(k, body_async(&RAN_MOKA_ASYNC, k)).await }
    };
    measure(&mut group, name, "moka", &RAN_MOKA_ASYNC, |key| task_round(&rt, key, &call));

    let map = Arc::new(Mutex::new(HashMap::<u64, Payload>::new()));
    let call = move |k: u64| {
        let map = map.clone();
        async move {
            if let Some(v) = map.lock().unwrap().get(&k).cloned() {
                return v;
            }
            let v = body_async(&RAN_MAP_ASYNC, k).await;
            map.lock().unwrap().insert(k, v.clone());
            v
        }
    };
    measure(&mut group, name, "mutex_hashmap", &RAN_MAP_ASYNC, |key| task_round(&rt, key, &call));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = threads, tasks
}
criterion_main!(benches);
