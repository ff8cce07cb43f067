//! The Redis backend against real servers: the conformance suite on the shared single server, on
//! a 3-master Redis Cluster and over TLS, then what is special to Redis: hostile keys and values,
//! values planted by other programs, millisecond TTLs, namespaced clearing on every master,
//! synchronous callers, and a server stopped and restarted under load.
//!
//! Servers come from `tests/servers.sh` (`CACHESTACK_TEST_REDIS_URL`,
//! `CACHESTACK_TEST_REDIS_CLUSTER_URL`, `CACHESTACK_TEST_REDISS_URL`); the restart tests start
//! their own `redis-server` on a free port.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use cachestack::{Backend, Cache, Deadline, Error, Expiry, RedisBackend, RedisConfig, Value, ValueFormat};
use cachestack_tests::conformance::{profile, unique_namespace, Harness, Profile};
use redis::Commands as _;

const URL_VAR: &str = "CACHESTACK_TEST_REDIS_URL";
const CLUSTER_URL_VAR: &str = "CACHESTACK_TEST_REDIS_CLUSTER_URL";
const TLS_URL_VAR: &str = "CACHESTACK_TEST_REDISS_URL";

/// Settings for the test server(s) in `var`, or `None` (the test is skipped) when missing.
fn test_config(var: &str, what: &str) -> Option<RedisConfig> {
    let url = cachestack_tests::server_url(var, what)?;
    // Generous deadlines: 10 MB values and many parallel tests share two cores.
    Some(RedisConfig::from_url(&url).unwrap().with_timeout(Duration::from_secs(5)))
}

/// The namespace for `namespace` in this test run: prefixed with `CACHESTACK_TEST_REDIS_RUN`
/// (set by `tests/servers.sh`, which removes the run's keys from the shared server at exit).
fn run_namespace(namespace: &str) -> String {
    match std::env::var("CACHESTACK_TEST_REDIS_RUN") {
        Ok(run) if !run.is_empty() => format!("{run}-{namespace}"),
        _ => namespace.to_string(),
    }
}

fn open(config: &RedisConfig, namespace: &str) -> RedisBackend {
    RedisBackend::new(config.clone().with_namespace(run_namespace(namespace))).unwrap()
}

/// A plain (synchronous) redis-rs client below the backend, for planting and inspecting keys.
enum Raw {
    Single(redis::Connection),
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl Raw {
    fn connect(config: &RedisConfig) -> Raw {
        let (scheme, rest) = config.url.split_once("://").unwrap();
        let tls = scheme.starts_with("rediss");
        let node_scheme = if tls { "rediss" } else { "redis" };
        if scheme.ends_with("+cluster") {
            let nodes: Vec<String> = rest.split(',').map(|n| format!("{node_scheme}://{n}")).collect();
            Raw::Cluster(Box::new(redis::cluster::ClusterClient::new(nodes).unwrap().get_connection().unwrap()))
        } else {
            let url = format!("{node_scheme}://{rest}");
            let client = match &config.tls.ca_file {
                Some(ca) => redis::Client::build_with_tls(
                    url.as_str(),
                    redis::TlsCertificates { client_tls: None, root_cert: Some(std::fs::read(ca).unwrap()) },
                )
                .unwrap(),
                None => redis::Client::open(url.as_str()).unwrap(),
            };
            Raw::Single(client.get_connection().unwrap())
        }
    }

    fn conn(&mut self) -> &mut dyn redis::ConnectionLike {
        match self {
            Raw::Single(c) => c,
            Raw::Cluster(c) => c.as_mut(),
        }
    }

    fn set(&mut self, key: &str, bytes: &[u8]) {
        let () = redis::cmd("SET").arg(key).arg(bytes).query(self.conn()).unwrap();
    }

    fn pttl(&mut self, key: &str) -> i64 {
        redis::cmd("PTTL").arg(key).query(self.conn()).unwrap()
    }
}

fn harness(var: &str, what: &str) -> Option<Harness> {
    let config = test_config(var, what)?;
    let plant_config = config.clone();
    let mut h = Harness::new(move |namespace| Arc::new(open(&config, namespace)));
    h.ttl_unit = Duration::from_millis(50);
    // The suite writes a value of this size minus 1 KiB: exactly 10 MiB.
    h.max_value_bytes = 10 * 1024 * 1024 + 1024;
    h.raw_writer = Some(Arc::new(move |namespace: &str, key: &str, bytes: &[u8]| {
        let full = open(&plant_config, namespace).redis_key(key);
        Raw::connect(&plant_config).set(&full, bytes);
    }));
    h.unreachable_silent = Some(Arc::new(|namespace: &str| {
        let url =
            format!("redis://127.0.0.1:1/0?namespace={namespace}&silent=true&timeout=500ms&connect_timeout=200ms");
        cachestack::backend_from_url(&url).unwrap()
    }));
    Some(h)
}

cachestack_tests::conformance_suite!(single_node, || harness(URL_VAR, "redis"));
cachestack_tests::conformance_suite!(cluster, || harness(CLUSTER_URL_VAR, "Redis Cluster"));
cachestack_tests::conformance_suite!(tls, || harness(TLS_URL_VAR, "Redis with TLS"));

/// Keys and values that break naive protocols or layouts, on a single server and on a cluster.
async fn hostile_keys_and_values(config: &RedisConfig) {
    let cache = Cache::new(open(config, &unique_namespace("hostile")));
    let keys = [
        "crlf\r\nFLUSHALL\r\n".to_string(),
        "with spaces and\ttabs".to_string(),
        "ünïcödé/名前/🦀".to_string(),
        "{hash-tag}".to_string(),
        "}{".to_string(),
        "glob*?[a-z]\\".to_string(),
        "x".repeat(10 * 1024),
        String::new(),
    ];
    for (i, key) in keys.iter().enumerate() {
        cache.set(key, &i, None).await.unwrap();
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(cache.get::<usize>(key).await.unwrap(), Some(i), "key {:?}", &key[..key.len().min(40)]);
    }
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let found = cache.backend().get_many(&refs).await.unwrap();
    assert!(found.iter().all(Option::is_some));

    cache.set("empty-bytes", &Vec::<u8>::new(), None).await.unwrap();
    assert_eq!(cache.get::<Vec<u8>>("empty-bytes").await.unwrap(), Some(vec![]));
    cache.set("empty-string", &String::new(), None).await.unwrap();
    assert_eq!(cache.get::<String>("empty-string").await.unwrap().as_deref(), Some(""));
    let big: Vec<u8> = (0..10 * 1024 * 1024).map(|i| (i % 253) as u8).collect();
    cache.set("ten-mb", &big, None).await.unwrap();
    assert!(cache.get::<Vec<u8>>("ten-mb").await.unwrap() == Some(big));

    // A value over the configured limit is a clear error, and nothing is written.
    let small = open(
        &config.clone().with_format(ValueFormat { max_value_bytes: 1024, ..ValueFormat::default() }),
        &unique_namespace("limit"),
    );
    let err = small.set("big", Value::new(vec![0u8; 4096]), cachestack::Expiry::Default).await.unwrap_err();
    assert!(matches!(err, Error::ValueTooLarge { limit: 1024, .. }), "{err:?}");
    assert!(small.get("big").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_keys_and_values_single_node() {
    let Some(config) = test_config(URL_VAR, "redis") else { return };
    hostile_keys_and_values(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_keys_and_values_cluster() {
    let Some(config) = test_config(CLUSTER_URL_VAR, "Redis Cluster") else { return };
    hostile_keys_and_values(&config).await;
}

/// Namespaces whose names are Redis glob patterns (`[a]`, `*`, `?`, `\`): a pattern operation in
/// one never reaches another that its unescaped name would match, on every master.
async fn pattern_scans_escape_the_namespace(config: &RedisConfig) {
    let base = unique_namespace("glob");
    let names =
        [format!("{base}[a]"), format!("{base}a"), format!("{base}*"), format!("{base}?x"), format!("{base}\\")];
    let caches: Vec<Cache> = names.iter().map(|n| Cache::new(open(config, n))).collect();
    for (i, cache) in caches.iter().enumerate() {
        for k in 0..40 {
            cache.set(&format!("user:{k}"), &i, None).await.unwrap();
        }
    }
    // Counters are plain decimals in Redis: they are listed and removed like any key.
    caches[0].incr("user:counter", 5).await.unwrap();
    let listed = caches[0].keys_matching("user:*").await.unwrap();
    assert_eq!(listed.len(), 41, "{listed:?}");
    assert_eq!(caches[0].delete_matching("user:*").await.unwrap(), 41);
    assert_eq!(caches[2].delete_matching("user:1?").await.unwrap(), 10);
    for (i, cache) in caches.iter().enumerate() {
        let left = cache.keys_matching("*").await.unwrap().len();
        let expected = match i {
            0 => 0,
            2 => 30,
            _ => 40,
        };
        assert_eq!(left, expected, "namespace {:?}", names[i]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pattern_scans_escape_the_namespace_single_node() {
    let Some(config) = test_config(URL_VAR, "redis") else { return };
    pattern_scans_escape_the_namespace(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pattern_scans_escape_the_namespace_cluster() {
    let Some(config) = test_config(CLUSTER_URL_VAR, "Redis Cluster") else { return };
    pattern_scans_escape_the_namespace(&config).await;
}

/// Whatever another program leaves under a cache key is a miss (counted as an error), never a
/// panic and never an error to the caller: garbage, a truncated or foreign envelope, an envelope
/// signed with another secret, and keys of other Redis types.
async fn planted_values_are_misses(config: &RedisConfig) {
    let namespace = unique_namespace("planted");
    let backend = open(config, &namespace);
    let cache = Cache::new(backend.clone());
    let mut raw = Raw::connect(config);

    let valid = ValueFormat::default().seal(&backend.redis_key("k"), &Value::new(7u64), None).unwrap();
    let other_type =
        ValueFormat::default().seal(&backend.redis_key("other-type"), &Value::new("7".to_string()), None).unwrap();
    let plants: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"\x00\xffnot an envelope".to_vec()),
        ("empty", Vec::new()),
        ("truncated", valid[..valid.len() - 1].to_vec()),
        ("other-type", other_type),
        ("text", b"+OK\r\n".to_vec()),
    ];
    for (key, bytes) in &plants {
        raw.set(&backend.redis_key(key), bytes);
    }
    let errors = backend.stats().errors;
    for (key, _) in &plants {
        assert_eq!(cache.get::<u64>(key).await.unwrap(), None, "planted `{key}` was served");
    }
    // `other-type` holds a valid envelope for a `String`: a typed miss, counted by the `Cache`;
    // the others fail the envelope's checks in the backend.
    assert_eq!(backend.stats().errors, errors + 4, "{:?}", backend.stats());
    assert!(cache.stats().errors > backend.stats().errors);

    // Signed caches also reject valid envelopes written without (or with another) secret.
    let signed_config = config.clone().with_format(ValueFormat {
        signer: Some(cachestack::Signer::new("0123456789abcdef-secret").unwrap()),
        ..ValueFormat::default()
    });
    let signed = Cache::new(open(&signed_config, &namespace));
    raw.set(
        &backend.redis_key("unsigned"),
        &ValueFormat::default().seal(&backend.redis_key("unsigned"), &Value::new(1u64), None).unwrap(),
    );
    assert_eq!(signed.get::<u64>("unsigned").await.unwrap(), None);
    signed.set("signed", &2u64, None).await.unwrap();
    assert_eq!(signed.get::<u64>("signed").await.unwrap(), Some(2));
    // A signed value copied under another key does not verify there.
    let copied: Vec<u8> = redis::cmd("GET").arg(backend.redis_key("signed")).query(raw.conn()).unwrap();
    raw.set(&backend.redis_key("copied"), &copied);
    assert_eq!(signed.get::<u64>("copied").await.unwrap(), None);

    // Keys of other types under a cache key: a miss too, on single reads and bulk reads.
    let hash_key = backend.redis_key("a-hash");
    let list_key = backend.redis_key("a-list");
    let () = redis::cmd("HSET").arg(&hash_key).arg("field").arg("v").query(raw.conn()).unwrap();
    let () = redis::cmd("RPUSH").arg(&list_key).arg("v").query(raw.conn()).unwrap();
    let errors = backend.stats().errors;
    assert_eq!(cache.get::<u64>("a-hash").await.unwrap(), None);
    let found = backend.get_many(&["a-hash", "a-list", "garbage"]).await.unwrap();
    assert!(found.iter().all(Option::is_none));
    assert_eq!(backend.stats().errors, errors + 4, "each foreign value counts as an error");
    // And a write replaces them.
    cache.set("a-hash", &5u64, None).await.unwrap();
    assert_eq!(cache.get::<u64>("a-hash").await.unwrap(), Some(5));
    backend.clear().await.unwrap();
    assert!(backend.get_many(&["a-list", "garbage", "a-hash"]).await.unwrap().iter().all(Option::is_none));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_values_are_misses_single_node() {
    let Some(config) = test_config(URL_VAR, "redis") else { return };
    planted_values_are_misses(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_values_are_misses_cluster() {
    let Some(config) = test_config(CLUSTER_URL_VAR, "Redis Cluster") else { return };
    planted_values_are_misses(&config).await;
}

/// TTLs reach Redis in milliseconds (`PXAT`), the default TTL applies, and the deadline read
/// back is the one Redis holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttls_have_millisecond_precision() {
    let Some(config) = test_config(URL_VAR, "redis") else { return };
    let backend = open(&config.clone().with_default_ttl(Duration::from_millis(90_500)), &unique_namespace("ttl"));
    let mut raw = Raw::connect(&config);

    backend.set("ms", Value::new(1u8), cachestack::Expiry::after(Duration::from_millis(1500))).await.unwrap();
    let pttl = raw.pttl(&backend.redis_key("ms"));
    assert!((1..=1500).contains(&pttl), "PTTL {pttl}");
    let left = backend.get("ms").await.unwrap().unwrap().ttl().unwrap();
    assert!(left <= Duration::from_millis(1500) && !left.is_zero(), "{left:?}");

    backend.set("default", Value::new(1u8), cachestack::Expiry::Default).await.unwrap();
    let pttl = raw.pttl(&backend.redis_key("default"));
    assert!((1..=90_500).contains(&pttl) && pttl > 60_000, "PTTL {pttl}");

    // The default TTL is resolved once, when the write reaches the store: Redis and the read
    // agree on that deadline to the millisecond.
    let at: i64 = redis::cmd("PEXPIRETIME").arg(backend.redis_key("default")).query(raw.conn()).unwrap();
    let read = backend.get("default").await.unwrap().unwrap().expires.unwrap();
    assert_eq!(read.unix_millis(), u64::try_from(at).unwrap());

    // A zero TTL stores nothing.
    backend.set("zero", Value::new(1u8), cachestack::Expiry::after(Duration::ZERO)).await.unwrap();
    assert!(backend.get("zero").await.unwrap().is_none());

    let forever = open(&config, &unique_namespace("ttl"));
    forever.set("k", Value::new(1u8), cachestack::Expiry::Default).await.unwrap();
    assert_eq!(raw.pttl(&forever.redis_key("k")), -1);
    assert_eq!(forever.get("k").await.unwrap().unwrap().ttl(), None);
}

/// The deadline is fixed by the writer and travels unchanged: Redis expires the key at exactly
/// that point (`PXAT`), reads return that same deadline (not one measured later), and an entry
/// whose deadline passed before its write arrived, or while Redis still held it, is never served.
async fn deadlines_are_the_writers(config: &RedisConfig) {
    let backend = open(config, &unique_namespace("deadline"));
    let mut raw = Raw::connect(config);
    let pexpiretime =
        |raw: &mut Raw, key: &str| -> i64 { redis::cmd("PEXPIRETIME").arg(key).query(raw.conn()).unwrap() };

    let deadline = Deadline::after(Duration::from_secs(30));
    backend.set("k", Value::new(1u8), Expiry::At(deadline)).await.unwrap();
    backend.set_many(&[("m1", Value::new(2u8)), ("m2", Value::new(3u8))], Expiry::At(deadline)).await.unwrap();
    let ms = i64::try_from(deadline.unix_millis()).unwrap();
    for key in ["k", "m1", "m2"] {
        assert_eq!(pexpiretime(&mut raw, &backend.redis_key(key)), ms, "{key}");
    }
    assert_eq!(backend.get("k").await.unwrap().unwrap().expires, Some(deadline));
    for entry in backend.get_many(&["k", "m1", "m2"]).await.unwrap() {
        assert_eq!(entry.unwrap().expires, Some(deadline));
    }

    // A deadline that passed while the write was in transit: nothing stored, nothing served,
    // and an older value under the key is gone too (the key's latest value has expired).
    let past = Deadline::at(SystemTime::now() - Duration::from_millis(1));
    backend.set("k", Value::new(9u8), Expiry::At(past)).await.unwrap();
    backend.set_many(&[("m1", Value::new(9u8)), ("late", Value::new(9u8))], Expiry::At(past)).await.unwrap();
    for key in ["k", "m1", "late"] {
        let exists: i64 = redis::cmd("EXISTS").arg(backend.redis_key(key)).query(raw.conn()).unwrap();
        assert_eq!(exists, 0, "{key} was stored past its deadline");
    }
    assert!(backend.get("k").await.unwrap().is_none());
    let found = backend.get_many(&["k", "m1", "late", "m2"]).await.unwrap();
    assert!(found[..3].iter().all(Option::is_none));
    assert_eq!(found[3].as_ref().unwrap().expires, Some(deadline));

    // An envelope whose sealed deadline has passed while Redis still holds the key (written
    // without a server expiry, as by a late or foreign writer): a miss, not an error.
    let stale_key = backend.redis_key("stale");
    raw.set(&stale_key, &ValueFormat::default().seal(&stale_key, &Value::new(1u8), Some(past.time())).unwrap());
    let errors = backend.stats().errors;
    assert!(backend.get("stale").await.unwrap().is_none());
    assert!(backend.get_many(&["stale"]).await.unwrap()[0].is_none());
    assert_eq!(backend.stats().errors, errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_are_the_writers_single_node() {
    let Some(config) = test_config(URL_VAR, "redis") else { return };
    deadlines_are_the_writers(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_are_the_writers_cluster() {
    let Some(config) = test_config(CLUSTER_URL_VAR, "Redis Cluster") else { return };
    deadlines_are_the_writers(&config).await;
}

/// `clear` empties the namespace on every master of the cluster, and nothing else; namespaces
/// with glob characters are matched literally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_clear_scans_every_master() {
    let Some(config) = test_config(CLUSTER_URL_VAR, "Redis Cluster") else { return };
    let masters: Vec<String> = config.url.split_once("://").unwrap().1.split(',').map(str::to_string).collect();
    let namespace = unique_namespace("clear*[x]");
    let a = open(&config, &namespace);
    // The same namespace without the glob characters' meaning: `clear*[x]-...` as a pattern
    // would also match this one.
    let b = open(&config, &namespace.replace("*[x]", "-x"));
    let keys: Vec<String> = (0..300).map(|i| format!("key:{i}")).collect();
    let entries: Vec<(&str, Value)> = keys.iter().map(|k| (k.as_str(), Value::new(k.clone()))).collect();
    a.set_many(&entries, cachestack::Expiry::Default).await.unwrap();
    b.set_many(&entries, cachestack::Expiry::Default).await.unwrap();

    let count_on = |node: &str, backend: &RedisBackend| -> usize {
        let mut conn = redis::Client::open(format!("redis://{node}")).unwrap().get_connection().unwrap();
        let pattern = backend.redis_key("").replace('*', "\\*").replace('[', "\\[").replace(']', "\\]") + "*";
        let found: Vec<redis::RedisResult<String>> = conn.scan_match(pattern).unwrap().collect();
        found.len()
    };
    let per_master: Vec<usize> = masters.iter().map(|m| count_on(m, &a)).collect();
    assert_eq!(per_master.iter().sum::<usize>(), 300, "{per_master:?}");
    assert!(per_master.iter().all(|&n| n > 0), "keys did not spread over the masters: {per_master:?}");

    a.clear().await.unwrap();
    assert_eq!(masters.iter().map(|m| count_on(m, &a)).sum::<usize>(), 0);
    assert_eq!(masters.iter().map(|m| count_on(m, &b)).sum::<usize>(), 300);
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    assert!(a.get_many(&refs).await.unwrap().iter().all(Option::is_none));
    assert!(b.get_many(&refs).await.unwrap().iter().all(Option::is_some));
    assert_eq!(b.delete_many(&refs).await.unwrap(), 300);

    let info = a.server_info().await.unwrap();
    assert_eq!(info["cluster_masters"], masters.len().to_string(), "{info:?}");
    assert_eq!(info["cluster_state"], "ok");
    let stats = a.stats();
    assert_eq!(stats.details["mode"], "cluster");
    assert_eq!(stats.details["connected"], "true");
}

/// Bulk operations over many slots and more keys than one pipeline takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_bulk_operations_span_slots() {
    let Some(config) = test_config(CLUSTER_URL_VAR, "Redis Cluster") else { return };
    let backend = open(&config, &unique_namespace("bulk"));
    let keys: Vec<String> = (0..1200).map(|i| format!("k{i}")).collect();
    // Same-slot keys (hash tags) too, in one group larger than a pipeline.
    let tagged: Vec<String> = (0..600).map(|i| format!("{{tag}}:{i}")).collect();
    let all: Vec<&str> = keys.iter().chain(&tagged).map(String::as_str).collect();
    let entries: Vec<(&str, Value)> = all.iter().enumerate().map(|(i, k)| (*k, Value::new(i))).collect();
    backend.set_many(&entries, cachestack::Expiry::after(Duration::from_secs(60))).await.unwrap();
    let found = backend.get_many(&all).await.unwrap();
    for (i, entry) in found.iter().enumerate() {
        let entry = entry.as_ref().unwrap_or_else(|| panic!("{} missing", all[i]));
        assert_eq!(entry.value.get::<usize>().unwrap(), i);
        assert!(entry.ttl().is_some_and(|t| t <= Duration::from_secs(60)));
    }
    assert_eq!(backend.delete_many(&all).await.unwrap(), all.len() as u64);
    assert!(backend.get_many(&all).await.unwrap().iter().all(Option::is_none));
}

/// A synchronous caller inside a single-threaded runtime: the blocking calls run on
/// cachestack's runtime, where the connection lives, so they neither deadlock nor panic.
#[tokio::test]
async fn blocking_calls_inside_a_current_thread_runtime() {
    let Some(config) = test_config(URL_VAR, "redis") else { return };
    let cache = Cache::new(open(&config, &unique_namespace("blocking")));
    // The connection is first used from this runtime...
    cache.set("async", &profile(1), None).await.unwrap();
    // ...then a blocking call from the same (now blocked) thread still completes.
    assert_eq!(cache.get_blocking::<Profile>("async").unwrap(), Some(profile(1)));
    cache.set_blocking("sync", &profile(2), None).unwrap();
    assert_eq!(cache.get::<Profile>("sync").await.unwrap(), Some(profile(2)));
    assert!(cache.delete_blocking("sync").unwrap());
}

/// Built from a URL with options, through the same function the registry uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_from_a_url() {
    let Some(url) = cachestack_tests::server_url(URL_VAR, "redis") else { return };
    let namespace = run_namespace(&unique_namespace("url"));
    let backend =
        cachestack::backend_from_url(&format!("{url}?namespace={namespace}&ttl=1m&codec=json&compression=zstd"))
            .unwrap();
    let cache = Cache::from_arc(backend);
    cache.set("k", &"x".repeat(5000), None).await.unwrap();
    assert_eq!(cache.get::<String>("k").await.unwrap().map(|s| s.len()), Some(5000));
    let info = cache.stats();
    assert_eq!(info.details["namespace"], namespace);
    assert!(info.details["url"].starts_with("redis://127.0.0.1"));
    let err = cachestack::backend_from_url(&format!("{url}?namespace=a:b")).unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
}

/// `rediss://` with a certificate from an unknown authority is refused (no silent downgrade).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verifies_the_server_certificate() {
    let Some(config) = test_config(TLS_URL_VAR, "Redis with TLS") else { return };
    let good = open(&config, &unique_namespace("tls"));
    good.ping().await.unwrap();
    assert_eq!(good.stats().details["tls"], "true");
    let untrusted = RedisConfig { tls: Default::default(), ..config.clone() }.with_timeout(Duration::from_secs(2));
    let err = open(&untrusted, "tls").get("k").await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    // Plain text against the TLS port fails too.
    let plain = RedisConfig {
        url: config.url.replacen("rediss://", "redis://", 1).into(),
        tls: Default::default(),
        ..untrusted
    };
    assert!(open(&plain, "tls").get("k").await.is_err());
}

// ---------------------------------------------------------------------------------------------
// A server stopped and restarted under load.

/// A `redis-server` of the test's own, on a free port.
struct OwnServer {
    child: Child,
}

impl OwnServer {
    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    /// Starts a server and returns once it logs that it accepts connections.
    fn start(port: u16) -> OwnServer {
        Self::start_with(port, &[])
    }

    fn start_with(port: u16, extra: &[&str]) -> OwnServer {
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--logfile", ""])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: run `bash tests/run-all.sh`, which installs it");
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut log = Vec::new();
            let mut ready = Some(ready_tx);
            for line in BufReader::new(stdout).lines().map_while(std::result::Result::ok) {
                if line.contains("Ready to accept connections") {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(Ok(()));
                    }
                }
                log.push(line);
            }
            if let Some(tx) = ready.take() {
                let _ = tx.send(Err(log.join("\n")));
            }
        });
        // A hang detector, not a synchronisation: the event is the log line.
        match ready_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(())) => OwnServer { child },
            Ok(Err(log)) => panic!("redis-server on port {port} exited:\n{log}"),
            Err(_) => panic!("redis-server on port {port} did not start"),
        }
    }

    fn stop(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Phase {
    Up,
    Down,
    Restarted,
    Stop,
}

#[derive(Debug)]
enum Event {
    /// A task read back the value it had just written, in the phase it started in.
    Hit(usize, Phase),
    /// A call failed (or, in silent mode, the write-then-read missed).
    Failed(Phase),
}

/// Many tasks write and read back in a loop while the server is killed and started again on the
/// same port; the same backend keeps serving. Returns the errors the calls returned.
async fn restart_under_load(silent: bool) -> Vec<Error> {
    const TASKS: usize = 16;
    let timeout = Duration::from_millis(500);
    let port = OwnServer::free_port();
    let server = OwnServer::start(port);
    let backend = Arc::new(
        RedisBackend::new(
            RedisConfig::new(format!("redis://127.0.0.1:{port}/0"))
                .with_namespace(unique_namespace("restart"))
                .with_silent(silent)
                .with_timeout(timeout)
                .with_connect_timeout(Duration::from_millis(300)),
        )
        .unwrap(),
    );

    let (phase_tx, phase_rx) = tokio::sync::watch::channel(Phase::Up);
    let (event_tx, mut event_rx) = tokio::sync::mpsc::unbounded_channel();
    let calls = Arc::new(AtomicU64::new(0));
    let slowest = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let backend = backend.clone();
        let phase_rx = phase_rx.clone();
        let events = event_tx.clone();
        let calls = calls.clone();
        let slowest = slowest.clone();
        tasks.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            // Every call must return within its timeout; ten times that means it hung.
            let bounded = |started: Instant| {
                let took = started.elapsed();
                slowest.fetch_max(took.as_micros() as u64, Ordering::Relaxed);
                calls.fetch_add(1, Ordering::Relaxed);
            };
            let limit = timeout * 10;
            for i in 0u64.. {
                let phase = *phase_rx.borrow();
                if phase == Phase::Stop {
                    break;
                }
                let key = format!("task{task}:{}", i % 8);
                let started = Instant::now();
                let set = tokio::time::timeout(limit, backend.set(&key, Value::new(i), cachestack::Expiry::Default))
                    .await
                    .expect("set hung");
                bounded(started);
                let started = Instant::now();
                let get = tokio::time::timeout(limit, backend.get(&key)).await.expect("get hung");
                bounded(started);
                let outcome = match (set, get) {
                    (Ok(()), Ok(Some(entry))) if entry.value.get::<u64>().unwrap() == i => Event::Hit(task, phase),
                    (Ok(()), Ok(_)) => Event::Failed(phase),
                    (set, get) => {
                        errors.extend(set.err());
                        errors.extend(get.err());
                        Event::Failed(phase)
                    }
                };
                let _ = events.send(outcome);
            }
            errors
        }));
    }
    drop(event_tx);

    // Waits (with a hang detector) until `done` says the events seen so far are enough.
    async fn wait_for(
        events: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
        what: &str,
        mut done: impl FnMut(&Event) -> bool,
    ) {
        let deadline = tokio::time::sleep(Duration::from_secs(60));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                event = events.recv() => {
                    if done(&event.unwrap_or_else(|| panic!("load tasks ended before {what}"))) {
                        return;
                    }
                }
                () = &mut deadline => panic!("timed out waiting for {what}"),
            }
        }
    }

    // 1. Caching works: every task has read back its own write.
    let mut seen = HashSet::new();
    wait_for(&mut event_rx, "every task to hit before the stop", |e| {
        matches!(e, Event::Hit(t, Phase::Up) if seen.insert(*t)) && seen.len() == TASKS
    })
    .await;

    // 2. Stop the server: calls fail (errors, or misses in silent mode).
    let errors_before = backend.stats().errors;
    server.stop();
    phase_tx.send(Phase::Down).unwrap();
    let mut failures = 0;
    wait_for(&mut event_rx, "calls to fail while the server is down", |e| {
        if matches!(e, Event::Failed(Phase::Down)) {
            failures += 1;
        }
        failures >= TASKS
    })
    .await;
    assert!(backend.stats().errors > errors_before, "{:?}", backend.stats());

    // 3. Start it again on the same port: the same backend reconnects, every task hits again.
    let server = OwnServer::start(port);
    phase_tx.send(Phase::Restarted).unwrap();
    let mut seen = HashSet::new();
    wait_for(&mut event_rx, "every task to hit after the restart", |e| {
        matches!(e, Event::Hit(t, Phase::Restarted) if seen.insert(*t)) && seen.len() == TASKS
    })
    .await;

    phase_tx.send(Phase::Stop).unwrap();
    let mut errors = Vec::new();
    for task in tasks {
        errors.extend(task.await.unwrap());
    }
    let stats = backend.stats();
    eprintln!(
        "restart test (silent={silent}): {} calls, slowest {} ms (timeout {} ms), {} errors returned; stats: hits {} misses {} errors {}",
        calls.load(Ordering::Relaxed),
        slowest.load(Ordering::Relaxed) / 1000,
        timeout.as_millis(),
        errors.len(),
        stats.hits,
        stats.misses,
        stats.errors
    );
    assert_eq!(stats.details["connected"], "true");
    if silent {
        assert!(stats.misses > 0 && stats.errors > 0, "failures were not counted: {stats:?}");
    }
    drop(server);
    errors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_under_load_silent_never_fails() {
    if cachestack_tests::server_url(URL_VAR, "redis").is_none() {
        return;
    }
    let errors = restart_under_load(true).await;
    assert!(errors.is_empty(), "silent mode returned errors: {errors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_under_load_reports_unavailable() {
    if cachestack_tests::server_url(URL_VAR, "redis").is_none() {
        return;
    }
    let errors = restart_under_load(false).await;
    assert!(!errors.is_empty(), "no call failed while the server was down");
    for err in &errors {
        assert!(err.is_unavailable(), "expected BackendUnavailable or Timeout, got {err:?}");
    }
}

/// A backend built while its server is down works once the server comes up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_at_construction_then_up() {
    if cachestack_tests::server_url(URL_VAR, "redis").is_none() {
        return;
    }
    let port = OwnServer::free_port();
    let backend =
        RedisBackend::from_url(&format!("redis://127.0.0.1:{port}/0?timeout=500ms&connect_timeout=300ms")).unwrap();
    let err = backend.get("k").await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let _server = OwnServer::start(port);
    // The first call may still meet the failed connection attempt (and start a new one); one of
    // the next few succeeds.
    let mut attempts = 0;
    while let Err(err) = backend.set("k", Value::new(1u8), cachestack::Expiry::Default).await {
        assert!(err.is_unavailable(), "{err:?}");
        attempts += 1;
        assert!(attempts < 20, "the backend never reconnected: {err:?}");
    }
    assert_eq!(backend.get("k").await.unwrap().unwrap().value.get::<u8>().unwrap(), 1);
}

/// A cluster that is not there when the backend is built (nodes up, cluster not yet formed) is
/// picked up once it forms, without rebuilding the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_formed_after_construction() {
    if cachestack_tests::server_url(CLUSTER_URL_VAR, "Redis Cluster").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut ports = Vec::new();
    let mut servers = Vec::new();
    while ports.len() < 3 {
        let port = OwnServer::free_port();
        // The cluster bus listens on port + 10000.
        if port > 55_000 || TcpListener::bind(("127.0.0.1", port + 10_000)).is_err() || ports.contains(&port) {
            continue;
        }
        let conf = dir.path().join(format!("nodes-{port}.conf"));
        servers.push(OwnServer::start_with(
            port,
            &["--cluster-enabled", "yes", "--cluster-config-file", conf.to_str().unwrap()],
        ));
        ports.push(port);
    }
    let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let backend =
        RedisBackend::from_url(&format!("redis+cluster://{}?timeout=1s&connect_timeout=500ms", nodes.join(",")))
            .unwrap();
    let err = backend.get("k").await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");

    let created = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&nodes)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stdout));
    // The nodes take a moment to agree on the new configuration; each call is bounded by its
    // timeout and fails as unavailable until then.
    let mut attempts = 0;
    while let Err(err) = backend.set("k", Value::new(1u8), cachestack::Expiry::Default).await {
        assert!(err.is_unavailable(), "{err:?}");
        attempts += 1;
        assert!(attempts < 100, "the backend never reached the cluster: {err:?}");
    }
    assert_eq!(backend.get("k").await.unwrap().unwrap().value.get::<u8>().unwrap(), 1);
    drop(servers);
}
