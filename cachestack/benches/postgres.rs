//! A hit through `PostgresBackend` against a raw sqlx `SELECT` of the same row plus decoding of
//! the same envelope, in the same run; and a 100-key `get_many` (one `= ANY($1)` round trip)
//! against 100 sequential `get`s.
//!
//! Needs a PostgreSQL server: `CACHESTACK_BENCH_POSTGRES_URL`, or `CACHESTACK_TEST_POSTGRES_URL`
//! (as `tests/servers.sh` exports it), or `postgres://postgres@127.0.0.1:5432/test`. The
//! benchmark uses a table of its own, dropped at the end. Without a server it prints a note and
//! measures nothing.
//!
//! ```text
//! cargo bench -p cachestack --features postgres --bench postgres
//! ```
#![allow(clippy::unwrap_used)]

mod common;

use std::hint::black_box;

use cachestack::{Backend, Cache, PostgresBackend, PostgresConfig, ValueFormat};
use common::{profile, Profile};
use criterion::{criterion_group, criterion_main, Criterion};
use sqlx::postgres::PgPoolOptions;

fn server_url() -> String {
    common::server_url_from_env("POSTGRES").unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn postgres(c: &mut Criterion) {
    let url = server_url();
    let table = format!("cachestack_bench_{}", std::process::id());
    let namespace = "bench";
    let config = PostgresConfig::new(url.as_str()).with_table(table.clone()).with_namespace(namespace);
    // The caller's runtime, as in an application: operations hop to cachestack's runtime.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let backend = match rt.block_on(PostgresBackend::connect(config)) {
        Ok(backend) => backend,
        Err(err) => {
            eprintln!("postgres benchmark skipped: no server at {url} ({err}); `bash tests/run-all.sh` starts one");
            return;
        }
    };
    let cache = Cache::new(backend.clone());
    rt.block_on(cache.set("profile:1", &profile(1), None)).unwrap();
    let keys: Vec<String> = (0..100).map(|i| format!("profile:{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        rt.block_on(cache.set(key, &profile(i as u64), None)).unwrap();
    }

    // The raw side: a sqlx pool on the caller's runtime, the same row, the same envelope decoding.
    let pool = rt.block_on(PgPoolOptions::new().max_connections(2).connect(&url)).unwrap();
    let select = format!(
        "SELECT value FROM \"{table}\" WHERE namespace = $1 AND key = $2 AND (expires_at IS NULL OR expires_at > now())"
    );
    let format = ValueFormat::default();

    let mut group = c.benchmark_group("postgres_hit");
    group.bench_function("raw sqlx SELECT + decode", |b| {
        b.iter(|| {
            rt.block_on(async {
                let bytes: Vec<u8> =
                    sqlx::query_scalar(&select).bind(namespace).bind("profile:1").fetch_one(&pool).await.unwrap();
                let (value, _) = format.open("profile:1", &bytes).unwrap();
                black_box(value.get::<Profile>().unwrap())
            })
        })
    });
    group.bench_function("PostgresBackend via Cache::get", |b| {
        b.iter(|| rt.block_on(async { black_box(cache.get::<Profile>("profile:1").await.unwrap().unwrap()) }))
    });
    group.finish();

    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mut group = c.benchmark_group("postgres_100_keys");
    group.bench_function("get_many (one round trip)", |b| {
        b.iter(|| rt.block_on(async { black_box(backend.get_many(&refs).await.unwrap()) }))
    });
    group.bench_function("100 sequential get", |b| {
        b.iter(|| {
            rt.block_on(async {
                for key in &refs {
                    black_box(backend.get(key).await.unwrap());
                }
            })
        })
    });
    group.finish();

    rt.block_on(async {
        sqlx::query(&format!("DROP TABLE \"{table}\"")).execute(&pool).await.unwrap();
        pool.close().await;
    });
}

criterion_group!(benches, postgres);
criterion_main!(benches);
