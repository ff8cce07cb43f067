//! A hit through `RedisBackend` against a raw redis-rs `GET` plus decoding of the same stored
//! value on the same connection type (a `ConnectionManager`), in the same run; and a 100-key
//! `get_many` against 100 sequential `get`s.
//!
//! Needs a Redis server: `CACHESTACK_BENCH_REDIS_URL`, or `CACHESTACK_TEST_REDIS_URL` (as
//! `tests/servers.sh` exports it), or `redis://127.0.0.1:6379/9`. Keys live in a namespace of
//! their own and are removed at the end. Without a server the benchmark prints a note and
//! measures nothing.
//!
//! ```text
//! cargo bench -p cachestack --features redis --bench redis
//! ```
#![allow(clippy::unwrap_used)]

mod common;

use std::hint::black_box;
use std::time::Duration;

use cachestack::{Backend, Cache, RedisBackend, RedisConfig, Value, ValueFormat};
use common::{profile, Profile};
use criterion::{criterion_group, criterion_main, Criterion};

fn server_url() -> String {
    common::server_url_from_env("REDIS").unwrap_or_else(|| "redis://127.0.0.1:6379/9".into())
}

fn redis(c: &mut Criterion) {
    let url = server_url();
    let config = RedisConfig::from_url(&url).unwrap().with_namespace(format!("bench-{}", std::process::id()));
    // The caller's runtime, as in an application: operations hop to cachestack's runtime.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let backend = RedisBackend::new(config.clone()).unwrap();
    if let Err(err) = rt.block_on(backend.ping()) {
        eprintln!("redis benchmark skipped: no server at {url} ({err}); `bash tests/servers.sh` starts one");
        return;
    }
    let cache = Cache::new(backend.clone());
    let key = backend.redis_key("profile:1");
    rt.block_on(cache.set("profile:1", &profile(1), None)).unwrap();

    // The raw side: redis-rs's ConnectionManager on the caller's runtime, the same bytes, the
    // same envelope decoding.
    let node_url = config.url.clone();
    let mut raw = rt
        .block_on(async { redis::aio::ConnectionManager::new(redis::Client::open(node_url.as_str()).unwrap()).await })
        .unwrap();
    let format = ValueFormat::default();

    let mut group = c.benchmark_group("redis_hit");
    group.bench_function("raw redis-rs GET + decode (ConnectionManager)", |b| {
        b.iter(|| {
            rt.block_on(async {
                let bytes: Vec<u8> = redis::cmd("GET").arg(&key).query_async(&mut raw).await.unwrap();
                let (value, _) = format.open(&key, &bytes).unwrap();
                black_box(value.get::<Profile>().unwrap())
            })
        })
    });
    // What the backend sends for a read (the value and its remaining TTL in one round trip).
    group.bench_function("raw MGET+PTTL pipeline + decode (ConnectionManager)", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut pipe = redis::pipe();
                pipe.cmd("MGET").arg(&key).cmd("PTTL").arg(&key);
                let (mut bytes, _pttl): (Vec<Option<Vec<u8>>>, i64) = pipe.query_async(&mut raw).await.unwrap();
                let bytes = bytes.pop().flatten().unwrap();
                let (value, _) = format.open(&key, &bytes).unwrap();
                black_box(value.get::<Profile>().unwrap())
            })
        })
    });
    group.bench_function("RedisBackend via Cache::get (caller's runtime)", |b| {
        b.iter(|| rt.block_on(async { black_box(cache.get::<Profile>("profile:1").await.unwrap().unwrap()) }))
    });
    let own = cachestack::rt::handle().unwrap();
    group.bench_function("RedisBackend via Cache::get (on cachestack's runtime)", |b| {
        b.iter(|| own.block_on(async { black_box(cache.get::<Profile>("profile:1").await.unwrap().unwrap()) }))
    });
    group.finish();

    let keys: Vec<String> = (0..100).map(|i| format!("bulk:{i}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let entries: Vec<(&str, Value)> =
        refs.iter().enumerate().map(|(i, k)| (*k, Value::new(profile(i as u64)))).collect();
    rt.block_on(backend.set_many(&entries, cachestack::Expiry::Default)).unwrap();
    let mut group = c.benchmark_group("redis_100_keys");
    group.bench_function("get_many (one pipeline)", |b| {
        b.iter(|| {
            rt.block_on(async {
                let found = backend.get_many(&refs).await.unwrap();
                for entry in &found {
                    black_box(entry.as_ref().unwrap().value.get::<Profile>().unwrap());
                }
            })
        })
    });
    group.bench_function("100 sequential get", |b| {
        b.iter(|| {
            rt.block_on(async {
                for key in &refs {
                    black_box(backend.get(key).await.unwrap().unwrap().value.get::<Profile>().unwrap());
                }
            })
        })
    });
    group.finish();

    rt.block_on(backend.clear()).unwrap();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3)).sample_size(30);
    targets = redis
}
criterion_main!(benches);
