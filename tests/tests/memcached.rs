//! The Memcached backend against real servers: the conformance suite on one server and on a
//! two-server pool, then what is special to memcached: hostile keys, item size limits, TTL rules,
//! namespace clearing, sync callers, and a server killed and restarted under load.
//!
//! Servers come from `tests/servers.sh` (`CACHESTACK_TEST_MEMCACHED_URL`,
//! `CACHESTACK_TEST_MEMCACHED_POOL_URL`); the kill test starts its own two instances.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cachestack::{Backend, Cache, Deadline, Error, Expiry, MemcachedBackend, MemcachedConfig, Value};
use cachestack_tests::conformance::{profile, unique_namespace, Harness, Profile};
use cachestack_tests::own_server::{free_port, OwnServer};
use memcache_async::ascii::Protocol;
use tokio::net::TcpStream;

const URL_VAR: &str = "CACHESTACK_TEST_MEMCACHED_URL";
const POOL_URL_VAR: &str = "CACHESTACK_TEST_MEMCACHED_POOL_URL";

/// Settings for the test servers in `var`, or `None` (the test is skipped) when they are missing.
fn test_config(var: &str) -> Option<MemcachedConfig> {
    let url = cachestack_tests::server_url(var, "memcached")?;
    Some(MemcachedConfig::from_url(&url).unwrap())
}

fn open(config: &MemcachedConfig, namespace: &str) -> MemcachedBackend {
    MemcachedBackend::new(config.clone().with_namespace(namespace)).unwrap()
}

/// A raw memcache-async connection, below the backend.
async fn raw(addr: &str) -> Protocol<TcpStream> {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    Protocol::new(stream)
}

/// A raw `set` that has certainly been processed (memcache-async sends `set` as noreply).
async fn raw_set(addr: &str, key: &str, bytes: &[u8]) {
    let mut conn = raw(addr).await;
    conn.set(key, bytes, 0).await.unwrap();
    conn.version().await.unwrap();
}

async fn raw_get(addr: &str, key: &str) -> Option<Vec<u8>> {
    match raw(addr).await.get(key).await {
        Ok(bytes) => Some(bytes),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => panic!("raw get {key}: {err}"),
    }
}

fn harness(var: &str) -> Option<Harness> {
    let config = test_config(var)?;
    let plant_config = config.clone();
    let mut h = Harness::new(move |namespace| Arc::new(open(&config, namespace)));
    // memcached keeps time in whole seconds.
    h.ttl_unit = Duration::from_secs(1);
    h.max_value_bytes = 1024 * 1024;
    h.raw_writer = Some(Arc::new(move |namespace: &str, key: &str, bytes: &[u8]| {
        let backend = open(&plant_config, namespace);
        let (addr, wire, bytes) = (backend.server_for(key).to_string(), backend.wire_key(key), bytes.to_vec());
        cachestack::rt::block_on(async move { raw_set(&addr, &wire, &bytes).await }).unwrap();
    }));
    h.unreachable_silent = Some(Arc::new(|namespace: &str| {
        let url =
            format!("memcached://127.0.0.1:1?namespace={namespace}&silent=true&timeout=500ms&connect_timeout=200ms");
        cachestack::backend_from_url(&url).unwrap()
    }));
    // memcached cannot list keys.
    h.unsupported = vec!["keys_matching", "delete_matching"];
    // Every increment is a compare-and-set round (two round trips, more under contention).
    h.race_rounds = 250;
    Some(h)
}

cachestack_tests::conformance_suite!(single_server, || harness(URL_VAR));
cachestack_tests::conformance_suite!(two_servers, || harness(POOL_URL_VAR));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_keys_never_reach_the_wire_and_round_trip() {
    let Some(config) = test_config(POOL_URL_VAR) else { return };
    // Data that is not ours, on every server: it must survive everything below.
    let sentinel = unique_namespace("sentinel");
    for addr in &config.servers {
        raw_set(addr, &sentinel, b"still here").await;
    }
    let backend = Arc::new(open(&config, &unique_namespace("hostile")));
    let cache = Cache::from_arc(backend.clone());
    let prefix_len = backend.wire_key("").len();
    let keys = [
        "crlf\r\nflush_all\r\n".to_string(),
        "\r\nflush_all".to_string(),
        "x 0 0 1\r\nz\r\nflush_all noreply".to_string(),
        "with space".to_string(),
        "tab\tand\u{b}vt".to_string(),
        "\0nul".to_string(),
        "del\u{7f}".to_string(),
        "ünïcödé/名前/🦀".to_string(),
        "#starts-with-hash".to_string(),
        String::new(),
        "k".repeat(250 - prefix_len),     // exactly 250 bytes on the wire: stays readable
        "k".repeat(250 - prefix_len + 1), // 251: hashed
        "k".repeat(251),
        "k".repeat(300),
        format!("{}a", "k".repeat(5000)),
        format!("{}b", "k".repeat(5000)), // shares a 5000-byte prefix with the previous key
    ];
    for key in &keys {
        let wire = backend.wire_key(key);
        assert!(wire.len() <= 250, "{key:?} -> {} bytes", wire.len());
        assert!(wire.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{key:?} -> {wire:?}");
    }
    assert!(!backend.wire_key(&keys[10]).contains('#'));
    assert!(backend.wire_key(&keys[11]).contains('#'));
    for (i, key) in keys.iter().enumerate() {
        cache.set(key, &i, None).await.unwrap();
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(cache.get::<usize>(key).await.unwrap(), Some(i), "key {key:?}");
    }
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let many = backend.get_many(&refs).await.unwrap();
    for (i, entry) in many.iter().enumerate() {
        assert_eq!(entry.as_ref().unwrap().value.get::<usize>().unwrap(), i);
    }
    assert!(cache.delete(&keys[0]).await.unwrap());
    assert_eq!(cache.get::<usize>(&keys[0]).await.unwrap(), None);
    assert_eq!(cache.get::<usize>(&keys[1]).await.unwrap(), Some(1));
    // Nothing was flushed, and the servers still answer a raw client.
    for addr in &config.servers {
        assert_eq!(raw_get(addr, &sentinel).await.as_deref(), Some(&b"still here"[..]), "{addr} lost data");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_is_only_served_for_the_key_it_was_written_for() {
    let Some(config) = test_config(URL_VAR) else { return };
    let backend = open(&config, &unique_namespace("identity"));
    let addr = config.servers[0].clone();
    let a = "a\r\nkey that is hashed";
    let b = "b\r\nanother hashed key";
    backend.set(a, Value::new(1u32), cachestack::Expiry::Default).await.unwrap();
    // Copy a's stored record under b's wire key: as if the two hashes collided.
    let record = raw_get(&addr, &backend.wire_key(a)).await.unwrap();
    raw_set(&addr, &backend.wire_key(b), &record).await;
    let errors = backend.stats().errors;
    assert!(backend.get(b).await.unwrap().is_none(), "a's value was served for b");
    assert_eq!(backend.stats().errors, errors + 1, "the mismatch is counted");
    assert!(!backend.delete(b).await.unwrap(), "b does not own that record");
    assert!(raw_get(&addr, &backend.wire_key(b)).await.is_some(), "another key's record was deleted");
    assert_eq!(backend.get(a).await.unwrap().unwrap().value.get::<u32>().unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_values_are_refused_without_breaking_the_connection() {
    let Some(config) = test_config(URL_VAR) else { return };
    // One connection: if a refused value broke it, the next operations would fail.
    let config = MemcachedConfig { pool_size: 1, ..config };
    let backend = open(&config, &unique_namespace("large"));
    let big = vec![7u8; 2 * 1024 * 1024];
    backend.set("k", Value::new(1u8), cachestack::Expiry::Default).await.unwrap();
    match backend.set("k", Value::new(big.clone()), cachestack::Expiry::Default).await {
        Err(Error::ValueTooLarge { size, limit }) => assert!(size > limit && limit < 1024 * 1024, "{size} {limit}"),
        other => panic!("expected ValueTooLarge, got {other:?}"),
    }
    // The old value is gone (memcached does the same on a refused set), the connection works.
    assert!(backend.get("k").await.unwrap().is_none());
    backend.set("k", Value::new(2u8), cachestack::Expiry::Default).await.unwrap();
    assert_eq!(backend.get("k").await.unwrap().unwrap().value.get::<u8>().unwrap(), 2);
    let batch = [("ok", Value::new(1u8)), ("huge", Value::new(big.clone()))];
    assert!(matches!(backend.set_many(&batch, cachestack::Expiry::Default).await, Err(Error::ValueTooLarge { .. })));

    // Silent mode: skipped and counted.
    let silent = open(&config.clone().with_silent(true), &unique_namespace("large-silent"));
    silent.set("k", Value::new(big.clone()), cachestack::Expiry::Default).await.unwrap();
    assert_eq!(silent.stats().errors, 1);
    assert!(silent.get("k").await.unwrap().is_none());
    silent.set_many(&batch, cachestack::Expiry::Default).await.unwrap();
    assert_eq!(silent.get("ok").await.unwrap().unwrap().value.get::<u8>().unwrap(), 1);

    // A limit set above the server's own (-I 1m): the server refuses the item, and the
    // connection still stays in step.
    let loose =
        open(&MemcachedConfig { max_item_bytes: 4 * 1024 * 1024, ..config.clone() }, &unique_namespace("loose"));
    loose.set("k", Value::new(big), cachestack::Expiry::Default).await.unwrap();
    assert!(loose.get("k").await.unwrap().is_none());
    loose.set("k", Value::new(3u8), cachestack::Expiry::Default).await.unwrap();
    assert_eq!(loose.get("k").await.unwrap().unwrap().value.get::<u8>().unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_value_accepted_is_really_stored() {
    let Some(config) = test_config(URL_VAR) else { return };
    let backend = open(&config, &unique_namespace("boundary"));
    // The largest payload the backend accepts, found by bisection.
    let (mut lo, mut hi) = (900_000usize, 1024 * 1024);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        match backend.set("edge", Value::new(vec![1u8; mid]), cachestack::Expiry::Default).await {
            Ok(()) => lo = mid,
            Err(Error::ValueTooLarge { .. }) => hi = mid - 1,
            Err(other) => panic!("{other}"),
        }
    }
    backend.set("edge", Value::new(vec![1u8; lo]), cachestack::Expiry::Default).await.unwrap();
    let stored = backend.get("edge").await.unwrap().expect("the server kept the largest accepted value");
    assert_eq!(stored.value.get::<Vec<u8>>().unwrap().len(), lo);
    assert!(lo > 1_040_000, "the limit wastes too much room: {lo}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttls_follow_memcached_rules_and_report_what_is_left() {
    let Some(config) = test_config(URL_VAR) else { return };
    let backend = open(&config, &unique_namespace("ttl"));
    let day = Duration::from_secs(86_400);
    // Over 30 days memcached needs an absolute timestamp: sent as a relative number of seconds it
    // would be read as a date in 1970 and the item would be gone at once.
    for ttl in [30 * day, 30 * day + Duration::from_secs(1), 45 * day, 365 * day] {
        backend.set("long", Value::new(1u8), cachestack::Expiry::after(ttl)).await.unwrap();
        let left = backend.get("long").await.unwrap().unwrap_or_else(|| panic!("{ttl:?}: missing")).ttl().unwrap();
        assert!(left <= ttl && left > ttl - Duration::from_secs(60), "{ttl:?}: {left:?} left");
    }
    // The default TTL applies to writes without one.
    let with_default = open(&config.clone().with_default_ttl(Duration::from_secs(3600)), "ttl-default");
    with_default.set("d", Value::new(1u8), cachestack::Expiry::Default).await.unwrap();
    assert!(with_default.get("d").await.unwrap().unwrap().ttl().unwrap() <= Duration::from_secs(3600));

    // Below a second: reads honour the exact expiry from the envelope...
    let wire = backend.wire_key("short");
    backend.set("short", Value::new(1u8), cachestack::Expiry::after(Duration::from_millis(300))).await.unwrap();
    let left = backend.get("short").await.unwrap().expect("fresh").ttl().unwrap();
    assert!(left <= Duration::from_millis(300) && !left.is_zero());
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(backend.get("short").await.unwrap().is_none(), "served after its TTL");
    // ...and memcached drops the item itself within its one-second granularity: the TTL was
    // rounded up to 1 s, not down to 0 ("never expires").
    let mut gone = false;
    for _ in 0..60 {
        if raw_get(&config.servers[0], &wire).await.is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "memcached kept a 300 ms item for 6 s: its expiry was sent as 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_fixed_by_the_writer_travels_unchanged_and_is_never_exceeded() {
    let Some(config) = test_config(POOL_URL_VAR) else { return };
    let backend = open(&config, &unique_namespace("deadline"));
    let day = Duration::from_secs(86_400);
    // The deadline a writer fixed is the one a read returns, to the millisecond: not one measured
    // again when the write arrived (relative and absolute exptime ranges alike, single and batch).
    for ttl in [Duration::from_millis(90_500), 40 * day] {
        let deadline = Deadline::after(ttl);
        backend.set("fixed", Value::new(1u8), Expiry::At(deadline)).await.unwrap();
        let entry = backend.get("fixed").await.unwrap().expect("a live entry is served");
        assert_eq!(entry.expires.map(Deadline::unix_millis), Some(deadline.unix_millis()), "{ttl:?}");
        backend.set_many(&[("batch", Value::new(2u8))], Expiry::At(deadline)).await.unwrap();
        let entries = backend.get_many(&["batch"]).await.unwrap();
        let entry = entries[0].as_ref().expect("a live batch entry is served");
        assert_eq!(entry.expires.map(Deadline::unix_millis), Some(deadline.unix_millis()), "{ttl:?}");
    }
    // A deadline that passed while the write was in transit: the write lands (memcached keeps the
    // item for up to a second) but the entry is never served, and it replaced the previous value.
    backend.set("late", Value::new(1u8), Expiry::Never).await.unwrap();
    let passed = Deadline::from_unix_millis(Deadline::after(Duration::ZERO).unix_millis() - 1).unwrap();
    assert!(passed.has_passed());
    backend.set("late", Value::new(2u8), Expiry::At(passed)).await.unwrap();
    assert!(backend.get("late").await.unwrap().is_none(), "served past its deadline");
    backend.set_many(&[("late-batch", Value::new(2u8))], Expiry::At(passed)).await.unwrap();
    assert!(backend.get_many(&["late", "late-batch"]).await.unwrap().iter().all(Option::is_none));
    assert!(!backend.exists("late").await.unwrap());
    assert!(!backend.delete("late").await.unwrap(), "an expired entry is not counted as deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_is_seen_by_every_instance_and_spares_other_namespaces() {
    let Some(config) = test_config(POOL_URL_VAR) else { return };
    let namespace = unique_namespace("clear");
    // Two backends over the same namespace, as two processes would have.
    let first = open(&config, &namespace);
    let second = open(&config, &namespace);
    let other = open(&config, &format!("{namespace}-other"));
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    let servers: std::collections::HashSet<&str> = keys.iter().map(|k| first.server_for(k)).collect();
    assert_eq!(servers.len(), 2, "the keys cover both servers");
    for key in &keys {
        first.set(key, Value::new(1u8), cachestack::Expiry::Default).await.unwrap();
        other.set(key, Value::new(2u8), cachestack::Expiry::Default).await.unwrap();
    }
    for key in &keys {
        assert!(second.get(key).await.unwrap().is_some());
    }
    second.clear().await.unwrap();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    assert!(first.get_many(&refs).await.unwrap().iter().all(Option::is_none), "cleared entries were served");
    assert!(other.get_many(&refs).await.unwrap().iter().all(Option::is_some), "another namespace was cleared");
    first.set("k0", Value::new(3u8), cachestack::Expiry::Default).await.unwrap();
    assert_eq!(second.get("k0").await.unwrap().unwrap().value.get::<u8>().unwrap(), 3);

    // If memcached evicts the generation counter, the namespace reads as empty (never stale) and
    // the next write starts a new generation.
    let addr = first.server_for("k0").to_string();
    let gen_key = format!("cs:{namespace}#gen");
    assert!(raw_get(&addr, &gen_key).await.is_some(), "the generation lives under {gen_key}");
    let mut conn = raw(&addr).await;
    conn.delete(&gen_key).await.unwrap();
    conn.version().await.unwrap();
    assert!(first.get("k0").await.unwrap().is_none());
    first.set("k0", Value::new(4u8), cachestack::Expiry::Default).await.unwrap();
    assert_eq!(first.get("k0").await.unwrap().unwrap().value.get::<u8>().unwrap(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_many_spans_servers_and_keeps_order() {
    let Some(config) = test_config(POOL_URL_VAR) else { return };
    let backend = open(&config, &unique_namespace("many"));
    let keys: Vec<String> = (0..100).map(|i| format!("item:{i}")).collect();
    let entries: Vec<(&str, Value)> =
        keys.iter().enumerate().map(|(i, k)| (k.as_str(), Value::new(profile(i as u64)))).collect();
    backend.set_many(&entries, cachestack::Expiry::Default).await.unwrap();
    let mut refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    refs.push("absent");
    refs.push("item:7"); // twice
    let got = backend.get_many(&refs).await.unwrap();
    for (i, entry) in got.iter().take(100).enumerate() {
        assert_eq!(entry.as_ref().unwrap().value.get::<Profile>().unwrap(), profile(i as u64));
    }
    assert!(got[100].is_none());
    assert_eq!(got[101].as_ref().unwrap().value.get::<Profile>().unwrap(), profile(7));
    let per_server = keys.iter().fold(HashMap::<&str, usize>::new(), |mut m, k| {
        *m.entry(backend.server_for(k)).or_default() += 1;
        m
    });
    assert_eq!(per_server.len(), 2, "{per_server:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn sync_callers_work_from_inside_a_current_thread_runtime() {
    let Some(config) = test_config(URL_VAR) else { return };
    let cache = Cache::new(open(&config, &unique_namespace("sync")));
    // Connections opened from this runtime first...
    cache.set("warm", &1u8, None).await.unwrap();
    // ...then a blocking call that parks this runtime's only thread until it has an answer.
    cache.set_blocking("k", &profile(1), None).unwrap();
    assert_eq!(cache.get_blocking::<Profile>("k").unwrap(), Some(profile(1)));
    assert!(cache.delete_blocking("k").unwrap());
    assert_eq!(cache.get::<u8>("warm").await.unwrap(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_url_builds_a_working_cache() {
    let Some(url) = cachestack_tests::server_url(POOL_URL_VAR, "memcached") else { return };
    let namespace = unique_namespace("url");
    let cache = Cache::from_url(&format!("{url}?namespace={namespace}&ttl=1h&timeout=2s")).unwrap();
    cache.set("k", &"v".to_string(), None).await.unwrap();
    let (value, ttl) = cache.get_with_ttl::<String>("k").await.unwrap().unwrap();
    assert_eq!(value, "v");
    assert!(ttl.unwrap() <= Duration::from_secs(3600));
    let stats = cache.stats();
    assert_eq!(stats.name, "memcached");
    assert_eq!(stats.details["servers_up"], "2");
}

/// A memcached of this test's own.
fn own_memcached(port: u16) -> OwnServer {
    let mut command = Command::new("memcached");
    command.args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0", "-u", "root", "-m", "16"]);
    OwnServer::spawn(command, port, 500, "memcached")
}

const RUNNING: usize = 0;
const KILLED: usize = 1;
const RESTARTED: usize = 2;
const DONE: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Hit,
    Miss,
    Failed,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_costs_only_its_keys_and_is_used_again_after_a_restart() {
    // Needs the memcached binary that tests/servers.sh installs; the servers are our own.
    if cachestack_tests::server_url(URL_VAR, "memcached").is_none() {
        return;
    }
    let mut a = own_memcached(free_port());
    let mut b = own_memcached(free_port());
    let timeout = Duration::from_secs(2);
    let config = MemcachedConfig {
        servers: vec![a.addr(), b.addr()],
        retry_interval: Duration::from_millis(100),
        pool_size: 4,
        ..MemcachedConfig::default()
    }
    .with_namespace(unique_namespace("kill"))
    .with_timeout(timeout)
    .with_connect_timeout(timeout);
    let backend = Arc::new(MemcachedBackend::new(config.clone()).unwrap());
    let silent = MemcachedBackend::new(config.clone().with_silent(true)).unwrap();
    let keys: Vec<String> = (0..200).map(|i| format!("key:{i}")).collect();
    let on_b: Vec<bool> = keys.iter().map(|k| backend.server_for(k) == b.addr()).collect();
    assert!(on_b.iter().any(|&x| x) && on_b.iter().any(|&x| !x));
    for (i, key) in keys.iter().enumerate() {
        backend.set(key, Value::new(i), cachestack::Expiry::Default).await.unwrap();
    }

    // Load: many tasks read keys of both servers (writing back misses, as memoization would) and
    // report every outcome with the phase it started in. Each call is wrapped in a generous hang
    // detector.
    let phase = Arc::new(AtomicUsize::new(0));
    let (events, mut outcomes) = tokio::sync::mpsc::unbounded_channel::<(usize, usize, Outcome)>();
    let keys = Arc::new(keys);
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let (backend, phase, events, keys) = (backend.clone(), phase.clone(), events.clone(), keys.clone());
            tokio::spawn(async move {
                let mut i = t * 13;
                loop {
                    let started = phase.load(Ordering::SeqCst);
                    if started == DONE {
                        break;
                    }
                    i = (i + 7) % keys.len();
                    let read = tokio::time::timeout(timeout * 10, backend.get(&keys[i])).await;
                    let outcome = match read.expect("a get hung past its timeout") {
                        Ok(Some(entry)) => {
                            assert_eq!(entry.value.get::<usize>().unwrap(), i);
                            Outcome::Hit
                        }
                        Ok(None) => {
                            let write = tokio::time::timeout(
                                timeout * 10,
                                backend.set(&keys[i], Value::new(i), cachestack::Expiry::Default),
                            );
                            let _ = write.await.expect("a set hung past its timeout");
                            Outcome::Miss
                        }
                        Err(err) => {
                            assert!(err.is_unavailable(), "unexpected error: {err}");
                            Outcome::Failed
                        }
                    };
                    if events.send((i, started, outcome)).is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    drop(events);

    let mut seen = 0usize;
    let mut b_failures = 0usize;
    while let Some((i, started, outcome)) = outcomes.recv().await {
        seen += 1;
        assert!(seen < 500_000, "the restarted server was never used again");
        if !on_b[i] {
            assert_eq!(outcome, Outcome::Hit, "key {i} of the surviving server: {outcome:?} in phase {started}");
            continue;
        }
        match (phase.load(Ordering::SeqCst), started) {
            // Everything is up: every key hits.
            (RUNNING, _) => {
                assert_eq!(outcome, Outcome::Hit, "key {i} before the kill");
                if seen >= 400 {
                    b.kill();
                    phase.store(KILLED, Ordering::SeqCst);
                }
            }
            // B is dead: its keys fail (fast, once it is marked down) while A's keep hitting.
            (KILLED, KILLED) => {
                assert_eq!(outcome, Outcome::Failed, "key {i} after the kill");
                b_failures += 1;
                if b_failures == 1 {
                    // A silent backend turns the same failures into misses.
                    let b_key = keys.iter().zip(&on_b).find(|(_, &b)| b).unwrap().0;
                    let a_key = keys.iter().zip(&on_b).find(|(_, &b)| !b).unwrap().0;
                    assert!(silent.get(b_key).await.unwrap().is_none());
                    assert!(silent.get(a_key).await.unwrap().is_some());
                }
                if b_failures >= 200 {
                    b = own_memcached(b.port);
                    phase.store(RESTARTED, Ordering::SeqCst);
                }
            }
            // B is back, empty: its keys miss, get written again, then hit.
            (RESTARTED, RESTARTED) if outcome == Outcome::Hit => {
                phase.store(DONE, Ordering::SeqCst);
                break;
            }
            _ => {}
        }
    }
    phase.store(DONE, Ordering::SeqCst);
    drop(outcomes);
    for task in tasks {
        task.await.unwrap();
    }
    assert!(b_failures >= 200, "the load ended early");
    eprintln!("kill test: {seen} operations, {b_failures} fast failures of the killed server's keys");
    assert!(b_failures >= 200);
    // The value really lives in the restarted server.
    let b_key = keys.iter().zip(&on_b).find(|(_, &b)| b).unwrap().0;
    backend.set(b_key, Value::new(1usize), cachestack::Expiry::Default).await.unwrap();
    assert!(raw_get(&b.addr(), &backend.wire_key(b_key)).await.is_some());
    assert_eq!(backend.stats().details["servers_up"], "2");
    a.kill();
    b.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_failover_a_dead_servers_keys_move_to_the_next_server() {
    if cachestack_tests::server_url(URL_VAR, "memcached").is_none() {
        return;
    }
    let a = own_memcached(free_port());
    let mut b = own_memcached(free_port());
    let backend = MemcachedBackend::new(
        MemcachedConfig {
            servers: vec![a.addr(), b.addr()],
            failover: true,
            // B stays down for the whole test once it is found dead.
            retry_interval: Duration::from_secs(600),
            ..MemcachedConfig::default()
        }
        .with_namespace(unique_namespace("failover")),
    )
    .unwrap();
    let b_key = (0..).map(|i| format!("key:{i}")).find(|k| backend.server_for(k) == b.addr()).unwrap();
    backend.set(&b_key, Value::new(1u8), cachestack::Expiry::Default).await.unwrap();
    b.kill();
    // The first request finds B gone (its pooled connection is closed) and marks it down...
    let err = backend.get(&b_key).await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    // ...then B's keys are read and written on A.
    assert!(backend.get(&b_key).await.unwrap().is_none());
    backend.set(&b_key, Value::new(2u8), cachestack::Expiry::Default).await.unwrap();
    assert_eq!(backend.get(&b_key).await.unwrap().unwrap().value.get::<u8>().unwrap(), 2);
    assert!(raw_get(&a.addr(), &backend.wire_key(&b_key)).await.is_some());
    assert_eq!(backend.stats().details["servers_up"], "1");
}

/// A TCP proxy in front of one of this test's own servers that can be cut (its connections
/// closed, its port refusing) and restored on the same port, while the server behind it keeps its
/// data: a network partition, without touching the server.
struct Partition {
    port: u16,
    target: String,
    stop: Option<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
}

impl Partition {
    async fn new(target: String) -> Self {
        let mut p = Partition { port: free_port(), target, stop: None };
        p.restore().await;
        p
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn restore(&mut self) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(self.addr().parse().unwrap()).unwrap();
        let listener = socket.listen(64).unwrap();
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let target = self.target.clone();
        let task = tokio::spawn(async move {
            let mut links = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut rx => break,
                    accepted = listener.accept() => {
                        let Ok((mut client, _)) = accepted else { continue };
                        let target = target.clone();
                        links.spawn(async move {
                            if let Ok(mut server) = TcpStream::connect(&target).await {
                                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            }
                        });
                    }
                }
            }
            drop(listener);
            links.abort_all();
            while links.join_next().await.is_some() {}
        });
        self.stop = Some((tx, task));
    }

    /// Returns once the port refuses and every proxied connection is closed.
    async fn cut(&mut self) {
        if let Some((tx, task)) = self.stop.take() {
            let _ = tx.send(());
            task.await.unwrap();
        }
    }
}

/// A key deleted while its server was cut off (the delete went to the failover server) must not
/// come back from that server when it returns with its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_failover_a_key_deleted_during_an_outage_does_not_come_back_with_its_server() {
    if cachestack_tests::server_url(URL_VAR, "memcached").is_none() {
        return;
    }
    let a = own_memcached(free_port());
    let b = own_memcached(free_port());
    let mut link = Partition::new(b.addr()).await;
    let retry_interval = Duration::from_millis(100);
    let backend = MemcachedBackend::new(
        MemcachedConfig {
            servers: vec![a.addr(), link.addr()],
            failover: true,
            retry_interval,
            ..MemcachedConfig::default()
        }
        .with_namespace(unique_namespace("failover-delete")),
    )
    .unwrap();
    let key = (0..).map(|i| format!("key:{i}")).find(|k| backend.server_for(k) == link.addr()).unwrap();
    let other = (0..).map(|i| format!("other:{i}")).find(|k| backend.server_for(k) == link.addr()).unwrap();
    backend.set(&key, Value::new(1u8), Expiry::Default).await.unwrap();
    backend.set(&other, Value::new(7u8), Expiry::Default).await.unwrap();
    assert!(backend.get(&key).await.unwrap().is_some());

    link.cut().await;
    // The first request finds the server gone and marks it down; then its keys fail over to A.
    assert!(backend.get(&key).await.unwrap_err().is_unavailable());
    backend.delete(&key).await.unwrap();
    assert!(backend.get(&key).await.unwrap().is_none());
    assert_eq!(backend.stats().details["servers_up"], "1");
    // The server still holds the deleted value.
    assert!(raw_get(&b.addr(), &backend.wire_key(&key)).await.is_some());

    link.restore().await;
    // Until the server is probed and back, reads fail over to A; from the probe on they reach
    // the server. Never the deleted value.
    let start = std::time::Instant::now();
    while backend.stats().details["servers_up"] != "2" {
        assert!(backend.get(&key).await.unwrap().is_none(), "the deleted value came back");
        assert!(start.elapsed() < cachestack_tests::sync::HANG_GUARD, "the server was never used again");
        tokio::time::sleep(retry_interval / 4).await;
    }
    assert!(backend.get(&key).await.unwrap().is_none(), "the deleted value came back");
    assert!(backend.get(&other).await.unwrap().is_none(), "entries held from before the outage are retired");
    backend.set(&key, Value::new(2u8), Expiry::Default).await.unwrap();
    assert_eq!(backend.get(&key).await.unwrap().unwrap().value.get::<u8>().unwrap(), 2);
    assert_eq!(backend.stats().details["servers_up"], "2");
    link.cut().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_checks_every_server() {
    let Some(config) = test_config(POOL_URL_VAR) else { return };
    MemcachedBackend::connect(config.clone()).await.unwrap();
    let nobody = format!("127.0.0.1:{}", free_port());
    let err = MemcachedBackend::connect(MemcachedConfig {
        servers: vec![config.servers[0].clone(), nobody.clone()],
        ..config
    })
    .await
    .unwrap_err();
    assert!(err.is_unavailable() && err.to_string().contains(&nobody), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_restart_costs_callers_no_error() {
    if cachestack_tests::server_url(URL_VAR, "memcached").is_none() {
        return;
    }
    let mut server = own_memcached(free_port());
    let backend = Arc::new(
        MemcachedBackend::new(MemcachedConfig {
            servers: vec![server.addr()],
            pool_size: 4,
            // Not a test of timeouts: bounds a loaded CI machine cannot reach, so that an error
            // here can only come from the restart.
            timeouts: cachestack::ServerTimeouts::new(Duration::from_secs(30), Duration::from_secs(30)),
            ..MemcachedConfig::default()
        })
        .unwrap(),
    );
    // Several pooled connections (concurrent writes), all of which the restart closes.
    let keys: Vec<String> = (0..16).map(|i| format!("k{i}")).collect();
    let writes: Vec<_> = keys
        .iter()
        .map(|k| {
            let (backend, k) = (backend.clone(), k.clone());
            tokio::spawn(async move { backend.set(&k, Value::new(1u8), cachestack::Expiry::Default).await })
        })
        .collect();
    for write in writes {
        write.await.unwrap().unwrap();
    }
    let entries: Vec<(&str, Value)> = keys.iter().map(|k| (k.as_str(), Value::new(1u8))).collect();
    server.kill();
    server = own_memcached(server.port);
    // The stale connections are noticed, retired and replaced inside the first request.
    assert!(backend.get("k0").await.unwrap().is_none(), "the restarted server is empty");
    backend.set_many(&entries, cachestack::Expiry::Default).await.unwrap();
    assert!(backend
        .get_many(&keys.iter().map(String::as_str).collect::<Vec<_>>())
        .await
        .unwrap()
        .iter()
        .all(Option::is_some));
    assert_eq!(backend.stats().errors, 0);
    assert_eq!(backend.stats().details["servers_up"], "1");
    server.kill();
}
