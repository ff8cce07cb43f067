//! Serializer chains from URLs (`?codec=..&compression=..&secret=..`): every codec x compression
//! x signing combination round-trips through every byte store (file, Redis, PostgreSQL,
//! Memcached) and through memory in a `mem:// | file://` stack, with the typed operations of
//! the `Cache` API. Each combination also shows that the chain was applied: entries are
//! self-describing (a reader configured with another codec and compression reads them), a reader
//! with another signing secret (or none where one is required) never gets the value, and on the
//! file store the bytes hold the value's text as is (as JSON exactly when `codec=json`) without
//! compression, and compressed with it.
//!
//! Redis, PostgreSQL and Memcached need the `CACHESTACK_TEST_*_URL` variables of
//! `tests/servers.sh`; without them their tests are skipped (they fail in CI).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use cachestack::Cache;
use cachestack_tests::conformance::unique_namespace;
use serde::{Deserialize, Serialize};

const CODECS: [&str; 4] = ["postcard", "json", "msgpack", "bincode"];
const COMPRESSIONS: [&str; 4] = ["none", "zstd", "zstd:19", "lz4"];
const SECRETS: [Option<&str>; 2] = [None, Some("chain-test-secret-0123456789")];
const OTHER_SECRET: &str = "another-secret-abcdefghijklmnop";

/// A value well above `compress_min_bytes` (512) and very compressible.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Report {
    id: u64,
    note: String,
    rows: Vec<(u32, String)>,
    owner: Option<String>,
}

fn report(id: u64) -> Report {
    Report {
        id,
        note: "quarterly figures, unchanged; ".repeat(200),
        rows: (0..50).map(|i| (i, format!("row {i} é ✓"))).collect(),
        owner: Some("Ada".into()),
    }
}

/// One combination: its query string and a label for messages.
struct Chain {
    query: String,
    codec: &'static str,
    compression: &'static str,
    secret: Option<&'static str>,
}

fn chains() -> Vec<Chain> {
    let mut chains = Vec::new();
    for codec in CODECS {
        for compression in COMPRESSIONS {
            for secret in SECRETS {
                let mut query = format!("codec={codec}&compression={compression}");
                if let Some(secret) = secret {
                    query.push_str(&format!("&secret={secret}"));
                }
                chains.push(Chain { query, codec, compression, secret });
            }
        }
    }
    chains
}

/// `base` with `options` added to its query.
fn with_options(base: &str, options: &str) -> String {
    if options.is_empty() {
        return base.to_string();
    }
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{options}")
}

/// Every typed operation that encodes or decodes a value, through the cache `url` opens; then the
/// checks that the chain was applied, with readers on the same namespace (`reader(options)`).
async fn round_trip(url: &str, chain: &Chain, reader: impl Fn(&str) -> String) {
    let what = &chain.query;
    let cache = Cache::from_url(url).unwrap_or_else(|e| panic!("{what}: {e}"));
    let (big, small) = (report(1), 7u32);
    cache.set("big", &big, Some(Duration::from_secs(600))).await.unwrap();
    cache.set("small", &small, None).await.unwrap();
    assert_eq!(cache.get::<Report>("big").await.unwrap().as_ref(), Some(&big), "{what}");
    assert_eq!(cache.get::<u32>("small").await.unwrap(), Some(small), "{what}");
    let ttl = cache.ttl("big").await.unwrap().flatten().unwrap();
    assert!(ttl <= Duration::from_secs(600) && ttl > Duration::from_secs(500), "{what}: ttl {ttl:?}");

    let (r2, r3) = (report(2), report(3));
    cache.set_many(&[("m2", &r2), ("m3", &r3)], None).await.unwrap();
    let many = cache.get_many::<Report>(&["m2", "missing", "m3"]).await.unwrap();
    assert_eq!(many, vec![Some(r2), None, Some(r3)], "{what}");
    assert!(cache.set_if_absent("once", &report(4), None).await.unwrap(), "{what}");
    assert!(!cache.set_if_absent("once", &report(5), None).await.unwrap(), "{what}");
    assert_eq!(cache.get::<Report>("once").await.unwrap(), Some(report(4)), "{what}");
    let got = cache.get_or_set_async("computed", None, || async { report(6) }).await.unwrap();
    assert_eq!(got, report(6));
    assert_eq!(cache.get::<Report>("computed").await.unwrap(), Some(report(6)), "{what}");

    // Self-describing: another codec and compression, the same signing, reads every entry.
    let plain = match chain.secret {
        Some(secret) => format!("codec=postcard&compression=none&secret={secret}"),
        None => "codec=postcard&compression=none".to_string(),
    };
    let same_signing = Cache::from_url(&reader(&plain)).unwrap();
    assert_eq!(same_signing.get::<Report>("big").await.unwrap(), Some(big.clone()), "{what}: read as {plain}");
    if chain.secret.is_some() {
        // A reader without any secret does not check signatures: it reads the value.
        let unsigned = Cache::from_url(&reader("")).unwrap();
        assert_eq!(unsigned.get::<Report>("big").await.unwrap(), Some(big), "{what}: read without a secret");
    }
    // Another secret (or a required one, where the chain signs nothing) never gets the value
    // (last: a store may delete the entry it rejects).
    let other = Cache::from_url(&reader(&format!("secret={OTHER_SECRET}"))).unwrap();
    assert!(!matches!(other.get::<Report>("big").await, Ok(Some(_))), "{what}: read with another secret");
    cache.clear().await.unwrap();
    assert_eq!(cache.get::<u32>("small").await.unwrap(), None);
}

/// The bytes of the file store's entries in `dir` (every file, recursively).
fn stored_bytes(dir: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(stored_bytes(&path));
        } else {
            out.push(std::fs::read(&path).unwrap());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_chain_round_trips_through_the_file_store_and_shapes_its_bytes() {
    for chain in chains() {
        let dir = tempfile::tempdir().unwrap();
        let base = format!("file://{}?namespace=chains", dir.path().display());
        let url = with_options(&base, &chain.query);
        round_trip(&url, &chain, |options| with_options(&base, options)).await;

        // The bytes: one entry of the big value alone, in a fresh directory.
        let only = tempfile::tempdir().unwrap();
        let url = with_options(&format!("file://{}", only.path().display()), &chain.query);
        let cache = Cache::from_url(&url).unwrap();
        cache.set("big", &report(1), None).await.unwrap();
        let files = stored_bytes(only.path());
        let entry = files.iter().max_by_key(|b| b.len()).unwrap();
        let repeats = entry.windows(17).filter(|w| *w == b"quarterly figures").count();
        let raw_len = report(1).note.len();
        if chain.compression == "none" {
            assert_eq!(repeats, 200, "{}: the text as is", chain.query);
            let is_json_text = entry.windows(8).any(|w| w == b"\"note\":\"");
            assert_eq!(is_json_text, chain.codec == "json", "{}: JSON text in the stored bytes", chain.query);
            assert!(entry.len() > raw_len, "{}: {} bytes stored for {raw_len} of text", chain.query, entry.len());
        } else {
            assert!(repeats < 10, "{}: {repeats} copies of the repeated text: not compressed", chain.query);
            assert!(entry.len() < raw_len / 4, "{}: {} bytes stored, not compressed", chain.query, entry.len());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_chain_round_trips_through_memory_over_a_file_store() {
    for chain in chains() {
        let dir = tempfile::tempdir().unwrap();
        let file = with_options(&format!("file://{}?namespace=chains", dir.path().display()), &chain.query);
        let url = format!("mem://?max_entries=100 | {file}");
        round_trip(&url, &chain, |options| {
            with_options(&format!("file://{}?namespace=chains", dir.path().display()), options)
        })
        .await;
        // Written by the stack, read back by a new stack whose memory layer is empty: decoded
        // from the file layer and kept in memory.
        let writer = Cache::from_url(&url).unwrap();
        writer.set("again", &report(9), None).await.unwrap();
        let fresh = Cache::from_url(&url).unwrap();
        assert_eq!(fresh.get::<Report>("again").await.unwrap(), Some(report(9)), "{}", chain.query);
        assert_eq!(fresh.get::<Report>("again").await.unwrap(), Some(report(9)), "{}", chain.query);
    }
    // The memory store keeps typed values and takes no serializer options: a clear error.
    let err = Cache::from_url("mem://?codec=json").unwrap_err().to_string();
    assert!(err.contains("codec") && err.contains("max_entries"), "{err}");
}

/// Runs every chain against the server store `base` (its URL, with a query), each chain in its
/// own namespace.
async fn every_chain_against(base: &str, tag: &str) {
    for chain in chains() {
        let namespaced = with_options(base, &format!("namespace={}", namespace(tag)));
        let url = with_options(&namespaced, &chain.query);
        round_trip(&url, &chain, |options| with_options(&namespaced, options)).await;
    }
}

/// A fresh namespace; on Redis it starts with the run id `tests/servers.sh` cleans up after.
fn namespace(tag: &str) -> String {
    match std::env::var("CACHESTACK_TEST_REDIS_RUN") {
        Ok(run) if tag == "redis" => unique_namespace(&format!("{run}-chains")),
        _ => unique_namespace(&format!("chains-{tag}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_chain_round_trips_through_redis() {
    let url = cachestack_tests::require_server!("CACHESTACK_TEST_REDIS_URL", "Redis");
    every_chain_against(&url, "redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_chain_round_trips_through_postgres() {
    let url = cachestack_tests::require_server!("CACHESTACK_TEST_POSTGRES_URL", "PostgreSQL");
    every_chain_against(&with_options(&url, "table=cachestack_test_chains"), "postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_chain_round_trips_through_memcached() {
    let url = cachestack_tests::require_server!("CACHESTACK_TEST_MEMCACHED_URL", "Memcached");
    every_chain_against(&url, "memcached").await;
}
