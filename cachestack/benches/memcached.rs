//! A hit through `MemcachedBackend` against a raw memcache-async request plus decoding, in the
//! same run, on the same server.
//!
//! Needs a memcached server: `CACHESTACK_TEST_MEMCACHED_URL` (as `tests/servers.sh` exports it),
//! or `CACHESTACK_BENCH_MEMCACHED_URL`. Without one the benchmark prints a note and measures
//! nothing.
//!
//! Groups: `memcached_hit` (one key: the backend, raw on a connection of the calling runtime, raw
//! on a connection of another runtime) and `memcached_get_many_100` (one multi-get of 100 keys).
//!
//! ```text
//! cargo bench -p cachestack --features memcached --bench memcached
//! ```
#![allow(clippy::unwrap_used)]

mod common;

use std::hint::black_box;
use std::time::Duration;

use cachestack::{Cache, MemcachedBackend, MemcachedConfig, Value, ValueFormat};
use common::{profile, Profile};
use criterion::{criterion_group, criterion_main, Criterion};
use memcache_async::ascii::Protocol;
use tokio::io::BufWriter;
use tokio::net::TcpStream;

async fn raw_connection(addr: &str) -> Protocol<BufWriter<TcpStream>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    Protocol::new(BufWriter::new(stream))
}

fn server_url() -> Option<String> {
    common::server_url_from_env("MEMCACHED")
}

fn memcached(c: &mut Criterion) {
    let Some(url) = server_url() else {
        eprintln!("memcached benchmark skipped: set CACHESTACK_TEST_MEMCACHED_URL (bash tests/servers.sh starts one)");
        return;
    };
    let config = MemcachedConfig::from_url(&url).unwrap().with_namespace(format!("bench-{}", std::process::id()));
    let addr = config.servers[0].clone();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let backend = MemcachedBackend::new(config).unwrap();
    let wire_key = backend.wire_key("profile:1");
    let cache = Cache::new(backend);

    // The raw side: one connection set up as the backend sets up its own (TCP_NODELAY, buffered
    // writes so that a multi-get leaves as one segment), the same envelope the backend writes.
    let format = ValueFormat::default();
    let mut raw = rt.block_on(raw_connection(&addr));
    // The same, but registered with another runtime's reactor, as the backend's connections are
    // (they live on cachestack's runtime so that any caller can use them): this isolates the cost
    // of that thread hop.
    let mut raw_elsewhere = cachestack::rt::handle().unwrap().block_on(raw_connection(&addr));
    let raw_key = format!("bench-raw-{}", std::process::id());
    let sealed = format.seal("profile:1", &Value::new(profile(1)), None).unwrap();
    let keys: Vec<String> = (0..100).map(|i| format!("profile:{i}")).collect();
    let raw_keys: Vec<String> = keys.iter().map(|k| format!("{raw_key}-{k}")).collect();
    rt.block_on(async {
        cache.set("profile:1", &profile(1), None).await.unwrap();
        raw.set(&raw_key, &sealed, 0).await.unwrap();
        for (i, (key, raw_key)) in keys.iter().zip(&raw_keys).enumerate() {
            cache.set(key, &profile(i as u64), None).await.unwrap();
            let bytes = format.seal(key, &Value::new(profile(i as u64)), None).unwrap();
            raw.set(raw_key, &bytes, 0).await.unwrap();
        }
        raw.version().await.unwrap();
    });
    eprintln!("cachestack stores profile:1 under {wire_key}, {} envelope bytes", sealed.len());

    let mut group = c.benchmark_group("memcached_hit");
    group.bench_function("cachestack_get", |b| {
        b.iter(|| rt.block_on(async { black_box(cache.get::<Profile>("profile:1").await.unwrap().unwrap()) }))
    });
    group.bench_function("raw_get_and_decode", |b| {
        b.iter(|| {
            rt.block_on(async {
                let bytes = raw.get(&raw_key).await.unwrap();
                let (value, _) = format.open("profile:1", &bytes).unwrap();
                black_box(value.get::<Profile>().unwrap())
            })
        })
    });
    group.bench_function("raw_get_and_decode_other_runtime", |b| {
        b.iter(|| {
            rt.block_on(async {
                let bytes = raw_elsewhere.get(&raw_key).await.unwrap();
                let (value, _) = format.open("profile:1", &bytes).unwrap();
                black_box(value.get::<Profile>().unwrap())
            })
        })
    });
    group.finish();

    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mut group = c.benchmark_group("memcached_get_many_100");
    group.bench_function("cachestack_get_many", |b| {
        b.iter(|| {
            rt.block_on(async {
                let found = cache.backend().get_many(&refs).await.unwrap();
                for entry in &found {
                    black_box(entry.as_ref().unwrap().value.get::<Profile>().unwrap());
                }
            })
        })
    });
    group.bench_function("raw_get_multi_and_decode", |b| {
        b.iter(|| {
            rt.block_on(async {
                let found = raw.get_multi(&raw_keys).await.unwrap();
                for (key, raw_key) in keys.iter().zip(&raw_keys) {
                    let (value, _) = format.open(key, &found[raw_key]).unwrap();
                    black_box(value.get::<Profile>().unwrap());
                }
            })
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = memcached
}
criterion_main!(benches);
