//! Memcached backend (feature `memcached`): memcache-async's ASCII protocol under a pool of
//! connections per server, several servers by rendezvous hashing, safe keys, namespaces cleared by
//! a generation counter. The design is described on [`MemcachedBackend`]. One concept per file:
//! `config.rs` the settings and URLs, `store.rs` the store and its operations, `keys.rs` the wire
//! formats and expiry times, `ops.rs` the requests, `server.rs` a server's connections,
//! `availability.rs` its down-marking.

mod availability;
mod config;
mod keys;
mod ops;
mod server;
mod store;

use crate::error::Result;
use crate::layer::Layered;
use crate::store::Backend;

pub use config::MemcachedConfig;
pub(crate) use config::SCHEME;
pub use store::MemcachedStore;

/// A cache in one or more memcached servers: a [`MemcachedStore`] behind its layers.
///
/// Construction never blocks and needs no server: connections are opened on first use, an
/// unreachable server turns into per-operation errors (misses in silent mode) and is used again
/// once it answers. [`MemcachedBackend::connect`] checks the servers first instead.
///
/// ```no_run
/// use cachestack::{Cache, MemcachedBackend, MemcachedConfig};
///
/// # async fn demo() -> cachestack::Result<()> {
/// let backend = MemcachedBackend::connect(
///     MemcachedConfig {
///         servers: vec!["127.0.0.1:11211".into(), "127.0.0.1:11212".into()],
///         ..MemcachedConfig::default()
///     }
///     .with_namespace("app"),
/// )
/// .await?;
/// let cache = Cache::new(backend);
/// cache.set("user:1", &"Ada".to_string(), None).await?;
/// assert_eq!(cache.get::<String>("user:1").await?.as_deref(), Some("Ada"));
///
/// // Or from a URL, without connecting yet:
/// let cache = Cache::from_url("memcached://127.0.0.1:11211,127.0.0.1:11212?namespace=app&ttl=10m")?;
/// # Ok(()) }
/// ```
///
/// # How it works
///
/// - **Connections**: memcache-async speaks the protocol over one stream; each server gets a
///   pool of them (deadpool, at most `pool_size`), with `TCP_NODELAY` and buffered writes so a
///   request leaves as one segment. A connection whose request did not complete (error, timeout,
///   cancelled caller) is discarded, never reused mid-response; the next request reconnects. A
///   pooled connection found closed (server restarted) is replaced and the request retried once.
///   Connects are bounded by `connect_timeout`. Requests run through [`crate::rt::io`], on
///   cachestack's runtime, so the backend works from any runtime and from sync callers, and a
///   caller that stops waiting aborts its request.
/// - **Layers**: a `MemcachedBackend` is a [`MemcachedStore`] behind its layers
///   ([`Layered`]): [`Timeout`](crate::layer::Timeout) bounds every operation by `timeout`
///   (pool waits, connects, every request of the operation), [`Silent`](crate::layer::Silent)
///   counts failures and, with `silent`, turns them into misses and no-ops. The store's own
///   methods ([`MemcachedStore::wire_key`], [`MemcachedStore::server_for`],
///   [`MemcachedStore::config`]) are reachable through it.
/// - **Servers**: a key goes to the server with the highest rendezvous score (xxh3 of the wire
///   key seeded by the server's address: stable across Rust versions and platforms; adding or
///   removing a server moves only the keys it wins or held). A failed server is marked down for
///   `retry_interval`: its keys fail at once (misses in silent mode) while the others keep
///   serving, or, with `failover`, go to the next server of their ranking; then one request
///   probes it.
/// - **Keys**: a key reaches the wire as it is only when memcached takes it unchanged (printable
///   ASCII, at most 250 bytes with the `cs:<namespace>:` prefix); anything else (spaces, CR/LF,
///   control characters, non-ASCII, longer) is replaced by its xxh3-128 hash. Every record stores
///   its namespace and full key and reads check them, so two keys never share a value.
/// - **Sizes**: a value whose item would exceed `max_item_bytes` (memcached's `-I`, 1 MiB by
///   default) is refused before it is sent with
///   [`Error::ValueTooLarge`](crate::Error::ValueTooLarge) (skipped and counted in silent mode),
///   and the key's previous value is removed, as memcached itself does. In a batch the other
///   values are still written, then the batch reports the error.
/// - **Expiry**: a write's deadline is fixed when it reaches the store (the store's default TTL
///   from then, for [`Expiry::Default`](crate::Expiry::Default)) or by the writer
///   ([`Expiry::At`](crate::Expiry::At)), and sealed in the envelope to the millisecond: a read
///   never serves an entry past it (however long the write spent in transit) and returns that
///   same deadline. memcached gets it by its own rules: up to 30 days away, the time left in whole
///   seconds rounded up (never down to 0, which means "never"); further, the deadline itself as
///   an absolute Unix timestamp, rounded up.
/// - **clear()**: memcached cannot list keys and `flush_all` would empty the whole server. Each
///   server holds a generation number for the namespace (key `cs:<namespace>#gen`), each record
///   the generation it was written under, and a read fetches the generation in the same
///   multi-get as the value: a record of another generation is a miss. `clear()` writes a fresh
///   random generation on every server, so the old entries become unreachable at once, for every
///   process, and are left to age out through memcached's LRU and their TTLs. If memcached evicts
///   the generation key, the namespace reads as empty until the next write starts a new one:
///   never stale data. A server unreachable during `clear()` keeps its old generation and
///   `clear()` reports the error.
/// - **Failover** (`failover`, off by default): while a key's server is down its reads, writes
///   and deletes go to the next server of its ranking. The server that was down may come back
///   holding values that were overwritten or deleted meanwhile, so a process that sent any of
///   that server's keys elsewhere writes a fresh namespace generation on it before its first
///   request there (the probe included): everything it held for the namespace is retired, never
///   served again. Limits: a process that did not fail over does not know, and values written to
///   the other server during the outage stay there (up to their TTL) and are served again if the
///   same server fails once more; keep TTLs short with failover.
/// - **Batches**: `get_many`, `set_many` and `delete_many` send one request per server, to all
///   servers at once. A server that fails makes the batch fail (after the other servers'
///   requests are done): in silent mode, a `get_many` is then all misses.
pub type MemcachedBackend = Layered<MemcachedStore>;

impl Layered<MemcachedStore> {
    /// A backend over `config.servers`, connecting lazily. Fails only on invalid settings.
    pub fn new(config: MemcachedConfig) -> Result<Self> {
        let layers = config.settings.layers(Some(config.timeouts.operation));
        Ok(Layered::wrap(MemcachedStore::new(config)?, layers))
    }

    /// A backend whose servers all answered a `version` request within `timeout`: fails
    /// with the first server that does not. Use [`MemcachedBackend::new`] to start without them.
    pub async fn connect(config: MemcachedConfig) -> Result<Self> {
        let timeout = config.timeouts.operation;
        let backend = Self::new(config)?;
        crate::layer::within(backend.name(), timeout, backend.store().ping()).await?;
        Ok(backend)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::*;
    use crate::value::Value;

    #[test]
    fn construction_from_a_url_never_connects() {
        // Nothing listens on port 1: construction still succeeds, operations fail.
        let backend = crate::backend_from_url("memcached://127.0.0.1:1?timeout=2s").unwrap();
        assert_eq!(backend.name(), "memcached");
        let stats = backend.stats();
        assert_eq!(stats.details["servers"], "127.0.0.1:1");
        assert_eq!(stats.details["servers_up"], "1");
        let err = crate::rt::block_on(async move { backend.get("k").await }).unwrap().unwrap_err();
        assert!(err.is_unavailable(), "{err}");
    }

    #[test]
    fn silent_mode_turns_an_unreachable_server_into_misses() {
        let backend = MemcachedBackend::new(
            MemcachedConfig { servers: vec!["127.0.0.1:1".into()], ..Default::default() }.with_silent(true),
        )
        .unwrap();
        let backend = Arc::new(backend);
        let b = backend.clone();
        crate::rt::block_on(async move {
            assert!(b.get("k").await.unwrap().is_none());
            b.set("k", Value::new(1u8), crate::Expiry::Default).await.unwrap();
            assert!(b.get_many(&["a", "b"]).await.unwrap().iter().all(Option::is_none));
            assert!(!b.delete("k").await.unwrap());
            b.clear().await.unwrap();
        })
        .unwrap();
        let stats = backend.stats();
        assert!(stats.errors >= 5, "{stats:?}");
        assert_eq!(stats.hits, 0);
        assert_eq!(stats.details["servers_up"], "0", "the refused server is marked down");
    }

    #[test]
    fn keys_spread_over_servers_and_stay_put() {
        let servers: Vec<String> = (0..4).map(|i| format!("10.0.0.{i}:11211")).collect();
        let backend =
            MemcachedBackend::new(MemcachedConfig { servers: servers.clone(), ..Default::default() }).unwrap();
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for i in 0..4000 {
            *counts.entry(backend.server_for(&format!("key:{i}"))).or_default() += 1;
        }
        assert_eq!(counts.len(), 4);
        assert!(counts.values().all(|&n| n > 700), "{counts:?}");
        // Removing one server moves only its keys.
        let fewer =
            MemcachedBackend::new(MemcachedConfig { servers: servers[..3].to_vec(), ..Default::default() }).unwrap();
        for i in 0..4000 {
            let key = format!("key:{i}");
            let before = backend.server_for(&key);
            if before != servers[3] {
                assert_eq!(fewer.server_for(&key), before, "{key} moved");
            }
        }
    }
}
