//! Half-open connections: each network store behind a [`Proxy`] that turns its connections into
//! black holes (a peer that vanished without closing anything), as a silent failover does.
//!
//! While the proxy swallows everything, operations fail with [`Error::Timeout`] (within the
//! configured timeout: the Timeout layer's bound, not asserted here in wall-clock time). Once new
//! connections work again, while the old ones stay black holes, the store must recover within a
//! few timed-out operations, counted in operations: it has to give up on the dead connections
//! instead of waiting minutes for the kernel to.
//!
//! Servers come from `tests/servers.sh` (`CACHESTACK_TEST_REDIS_URL`,
//! `CACHESTACK_TEST_POSTGRES_URL`, `CACHESTACK_TEST_MEMCACHED_URL`).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use cachestack::{
    Backend, Error, Expiry, MemcachedBackend, MemcachedConfig, PostgresBackend, PostgresConfig, RedisBackend,
    RedisConfig, ServerTimeouts, Value,
};
use cachestack_tests::conformance::unique_namespace;
use cachestack_tests::proxy::Proxy;
use cachestack_tests::sync::within_guard;
use futures_util::future::join_all;

/// Timed-out operations allowed after the proxy heals before a set and a get work again.
const RECOVERY_TIMEOUTS: usize = 4;

/// Rounds tried before the test gives up: enough to tell "recovers in a few" from "never".
const ROUNDS: usize = 8;

/// `scheme://[user@]host:port/rest` → (`scheme://[user@]`, `host:port`, `/rest`).
fn split_authority(url: &str) -> (&str, &str, &str) {
    let start = url.find("://").unwrap() + 3;
    let start = url[start..].find('@').map_or(start, |at| start + at + 1);
    let end = url[start..].find(['/', '?']).map_or(url.len(), |end| start + end);
    (&url[..start], &url[start..end], &url[end..])
}

/// Starts a proxy in front of the server of `url`; returns it and the URL through it.
async fn proxied(url: &str) -> (Proxy, String) {
    let (head, upstream, tail) = split_authority(url);
    let proxy = Proxy::start(upstream).await;
    let via = format!("{head}{}{tail}", proxy.addr());
    (proxy, via)
}

/// One round: a set of a fresh key, then a get that must return it.
async fn round(backend: &dyn Backend, n: usize) -> cachestack::Result<()> {
    let key = format!("round-{n}");
    backend.set(&key, Value::new(n as u64), Expiry::Default).await?;
    let got = backend.get(&key).await?.expect("a value just written is read back");
    assert_eq!(got.value.get::<u64>().unwrap(), n as u64);
    Ok(())
}

/// Rounds until one works; returns how many timed out before, and the round that worked. Failing
/// fast (a store that marked its server down) is not a timeout: the next round waits `pause` (the
/// store's retry interval).
async fn timeouts_until_recovered(backend: &dyn Backend, first: usize, pause: Duration) -> (usize, usize) {
    let mut timeouts = 0;
    let mut fast = 0;
    for n in first.. {
        match round(backend, n).await {
            Ok(()) => return (timeouts, n),
            Err(Error::Timeout { .. }) => {
                eprintln!("{}: round {n} timed out", backend.name());
                timeouts += 1
            }
            Err(err) if err.is_unavailable() && fast < 1000 => {
                fast += 1;
                tokio::time::sleep(pause).await;
                continue;
            }
            Err(err) => panic!("round {n}: {err:?}"),
        }
        assert!(
            timeouts < ROUNDS,
            "still timing out after {timeouts} rounds: half-open connections are never recycled"
        );
    }
    unreachable!()
}

/// The scenario every store goes through.
async fn survives_half_open_connections(backend: &dyn Backend, proxy: &Proxy, pause: Duration) {
    round(backend, 0).await.unwrap();
    // Concurrent reads, so that a pooling store holds several connections (all of which go dark).
    for read in join_all((0..32).map(|_| backend.get("round-0"))).await {
        assert!(read.unwrap().is_some());
    }
    let before = proxy.accepted();
    assert!(before >= 1);

    // Everything black-holed: a timeout (not a hang, not a wrong answer).
    proxy.blackhole();
    match backend.get("round-0").await {
        Err(Error::Timeout { .. }) => {}
        other => panic!("expected a timeout from a black-holed server, got {other:?}"),
    }

    // New connections work again; the old ones stay half-open.
    proxy.heal();
    let (timeouts, _) = within_guard(timeouts_until_recovered(backend, 100, pause)).await;
    eprintln!("{}: recovered from the black hole after {timeouts} timed-out rounds", backend.name());
    assert!(timeouts <= RECOVERY_TIMEOUTS, "recovered after {timeouts} timed-out rounds");
    assert!(proxy.accepted() > before, "the store reconnected");

    // A silent failover: the connections in use now go dark, new ones reach the server.
    let before = proxy.accepted();
    proxy.fail_over();
    let (timeouts, recovered) = within_guard(timeouts_until_recovered(backend, 200, pause)).await;
    eprintln!("{}: recovered from the failover after {timeouts} timed-out rounds", backend.name());
    assert!(timeouts <= RECOVERY_TIMEOUTS, "recovered after {timeouts} timed-out rounds");
    assert!(proxy.accepted() > before, "the store reconnected");
    // And it stays recovered.
    for n in recovered + 1..recovered + 5 {
        round(backend, n).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_recycles_half_open_connections() {
    let url = cachestack_tests::require_server!("CACHESTACK_TEST_REDIS_URL", "Redis");
    let (proxy, via) = proxied(&url).await;
    let namespace = match std::env::var("CACHESTACK_TEST_REDIS_RUN") {
        Ok(run) if !run.is_empty() => format!("{run}-{}", unique_namespace("half-open")),
        _ => unique_namespace("half-open"),
    };
    let backend = RedisBackend::new(
        RedisConfig {
            timeouts: ServerTimeouts::new(Duration::from_secs(1), Duration::from_secs(1)),
            ..RedisConfig::new(via)
        }
        .with_namespace(namespace)
        .with_default_ttl(Duration::from_secs(600)),
    )
    .unwrap();
    survives_half_open_connections(&backend, &proxy, Duration::from_millis(50)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_recycles_half_open_connections() {
    let url = cachestack_tests::require_server!("CACHESTACK_TEST_POSTGRES_URL", "PostgreSQL");
    let (proxy, via) = proxied(&url).await;
    // A pool full of connections, all of which the failover leaves half-open.
    let pool = 10;
    let backend = PostgresBackend::new(
        PostgresConfig {
            table: "cachestack_test_half_open".into(),
            timeouts: ServerTimeouts::new(Duration::from_secs(2), Duration::from_secs(2)),
            pool_max: pool,
            ..PostgresConfig::new(via)
        }
        .with_namespace(unique_namespace("half-open"))
        .with_default_ttl(Duration::from_secs(600)),
    )
    .unwrap();
    round(&backend, 0).await.unwrap();
    // Concurrent reads until the pool holds all its connections.
    within_guard(async {
        while backend.stats().details["pool_size"] != pool.to_string() {
            let reads = (0..4 * pool).map(|_| backend.get("round-0"));
            for read in join_all(reads).await {
                read.unwrap();
            }
        }
    })
    .await;
    survives_half_open_connections(&backend, &proxy, Duration::from_millis(50)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_recycles_half_open_connections() {
    let url = cachestack_tests::require_server!("CACHESTACK_TEST_MEMCACHED_URL", "memcached");
    let (proxy, via) = proxied(&url).await;
    let retry_interval = Duration::from_millis(100);
    let backend = MemcachedBackend::new(
        MemcachedConfig {
            timeouts: ServerTimeouts::new(Duration::from_secs(1), Duration::from_secs(1)),
            retry_interval,
            pool_size: 4,
            ..MemcachedConfig::from_url(&via).unwrap()
        }
        .with_namespace(unique_namespace("half-open"))
        .with_default_ttl(Duration::from_secs(600)),
    )
    .unwrap();
    survives_half_open_connections(&backend, &proxy, retry_interval).await;
}
