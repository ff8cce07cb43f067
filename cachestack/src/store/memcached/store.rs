//! [`MemcachedStore`]: the store itself, I/O only (its layers are added by
//! [`MemcachedBackend`](super::MemcachedBackend)'s constructors): routing keys to servers,
//! sealing and opening records, and the requests of each operation.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::config::{parse_server, MemcachedConfig};
use super::keys::{self, Keyspace, Record};
use super::ops::{Add, Get, Item, Op, Remove, Store, Version};
use super::server::{fresh_generation, parse_gen, Server};
use crate::error::{Error, Result};
use crate::expiry::{Deadline, Expiry};
use crate::store::counted::counted_backend;
use crate::store::{Backend, BackendStats, Counters, Entry, KeyIo};
use crate::value::Value;

#[path = "atomic.rs"]
mod atomic;
#[path = "lock.rs"]
mod lock;

/// What memcached adds to each item besides key and value (item header, CAS, CRLF), rounded up.
const ITEM_OVERHEAD: usize = 64;
/// How long a generation read from a server is trusted for writes (reads always fetch it).
const GEN_MAX_AGE: Duration = Duration::from_secs(1);

/// A cache in one or more memcached servers, without layers: every failure is returned as it is
/// and no operation is bounded (use [`MemcachedBackend`](super::MemcachedBackend), which is this
/// store behind its [`Silent`](crate::layer::Silent) and [`Timeout`](crate::layer::Timeout)
/// layers). Its methods are reachable through a `MemcachedBackend` too. The design is described
/// on [`MemcachedBackend`](super::MemcachedBackend).
///
/// ```
/// use cachestack::{Backend, MemcachedConfig, MemcachedStore};
///
/// let store = MemcachedStore::new(MemcachedConfig::default().with_namespace("app")).unwrap();
/// assert_eq!(store.name(), "memcached");
/// assert_eq!(store.wire_key("user:1"), "cs:app:user:1");
/// ```
pub struct MemcachedStore {
    config: MemcachedConfig,
    keys: Keyspace,
    servers: Vec<Arc<Server>>,
    counters: Counters,
}

impl fmt::Debug for MemcachedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemcachedStore")
            .field("servers", &self.servers)
            .field("namespace", &self.config.settings.namespace)
            .finish_non_exhaustive()
    }
}

impl MemcachedStore {
    /// A store over `config.servers`, connecting lazily. Fails only on invalid settings.
    pub fn new(config: MemcachedConfig) -> Result<Self> {
        config.validate()?;
        let servers = config
            .servers
            .iter()
            .map(|s| {
                Server::new(
                    parse_server(s)?,
                    config.pool_size,
                    config.timeouts.connect,
                    config.timeouts.operation,
                    config.retry_interval,
                )
                .map(Arc::new)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(MemcachedStore {
            keys: Keyspace::new(&config.settings.namespace),
            config,
            servers,
            counters: Counters::default(),
        })
    }

    /// Asks every server for its version, all at once: the first server (in the configured
    /// order) that does not answer is the error.
    pub async fn ping(&self) -> Result<()> {
        let requests = self.servers.iter().map(|server| server.exec(self.name(), Version));
        futures_util::future::join_all(requests).await.into_iter().try_for_each(|r| r.map(drop))
    }

    /// The settings this store runs with.
    pub fn config(&self) -> &MemcachedConfig {
        &self.config
    }

    /// The memcached key `key` is stored under: the key itself under the namespace prefix when
    /// memcached accepts it as is, a hash otherwise. For debugging and tooling.
    ///
    /// ```
    /// use cachestack::{MemcachedBackend, MemcachedConfig};
    /// let backend = MemcachedBackend::new(MemcachedConfig::default().with_namespace("app")).unwrap();
    /// assert_eq!(backend.wire_key("user:1"), "cs:app:user:1");
    /// assert!(backend.wire_key("a key\r\nflush_all").starts_with("cs:app:#"));
    /// ```
    pub fn wire_key(&self, key: &str) -> String {
        self.keys.wire(key)
    }

    /// The server (`host:port`) that holds `key` while every server is up.
    ///
    /// ```
    /// use cachestack::{MemcachedBackend, MemcachedConfig};
    /// let backend = MemcachedBackend::new(MemcachedConfig {
    ///     servers: vec!["127.0.0.1:11211".into(), "127.0.0.1:11212".into()],
    ///     ..Default::default()
    /// }).unwrap();
    /// assert!(backend.server_for("user:1").starts_with("127.0.0.1:1121"));
    /// ```
    pub fn server_for(&self, key: &str) -> &str {
        self.servers[self.primary(&self.keys.wire(key))].addr()
    }

    /// The index of the server with the highest score for `wire`.
    fn primary(&self, wire: &str) -> usize {
        let mut best = (0, 0u64);
        for (i, server) in self.servers.iter().enumerate() {
            let score = server.score(wire);
            if i == 0 || score > best.1 {
                best = (i, score);
            }
        }
        best.0
    }

    /// The server a request for `wire` goes to now: its primary, or with failover the first
    /// server of its ranking that is up.
    fn route(&self, wire: &str) -> Result<usize> {
        self.route_in(wire, &mut Admissions::new(self.servers.len()))
    }

    /// [`Self::route`] for one key of a batch: each server is asked at most once per batch
    /// whether it takes requests, so a down server's single probe carries all its keys.
    fn route_in(&self, wire: &str, admissions: &mut Admissions) -> Result<usize> {
        let primary = self.primary(wire);
        if admissions.admit(&self.servers, primary) {
            return Ok(primary);
        }
        if self.config.failover && self.servers.len() > 1 {
            let mut ranking: Vec<(u64, usize)> =
                self.servers.iter().enumerate().map(|(i, s)| (s.score(wire), i)).collect();
            ranking.sort_unstable_by(|a, b| b.cmp(a));
            if let Some(idx) = ranking
                .into_iter()
                .map(|(_, i)| i)
                .filter(|&i| i != primary)
                .find(|&i| admissions.admit(&self.servers, i))
            {
                // The primary no longer sees this key's writes and deletes.
                self.servers[primary].distrust();
                return Ok(idx);
            }
        }
        Err(self.servers[primary].down_error(self.name()))
    }

    /// Runs `op` on server `idx`; first, if keys of that server went to others while it was down,
    /// renews its generation, so nothing it held from before is served again.
    async fn exec<O: Op>(&self, idx: usize, op: O) -> Result<O::Out> {
        let server = &self.servers[idx];
        if let Some(mark) = server.distrust_mark() {
            self.renew_generation(server, mark).await?;
        }
        server.exec(self.name(), op).await
    }

    /// Writes a fresh generation on `server` (see "Failover" on
    /// [`MemcachedBackend`](super::MemcachedBackend)).
    async fn renew_generation(&self, server: &Arc<Server>, mark: u64) -> Result<()> {
        let fresh = fresh_generation(server.addr());
        let item = Item { wire: self.keys.gen_key().to_owned(), bytes: fresh.to_string().into_bytes(), exptime: 0 };
        server.exec(self.name(), Store(vec![item])).await?;
        tracing::info!(server = %server.addr(), "cachestack: memcached server is back after a failover; its entries of this namespace were retired");
        server.trust_again(mark, fresh);
        Ok(())
    }

    /// Reads `bytes` stored under `key` on a server whose generation is `generation`: the entry,
    /// unless it is another key's, of another generation, unusable, or past its deadline.
    fn decode(&self, key: &str, generation: Option<u64>, bytes: &[u8], now: SystemTime) -> Option<Entry> {
        let record = match Record::parse(bytes) {
            Ok(record) => record,
            Err(err) => {
                self.counters.record_invalid(self.name(), key, &err);
                return None;
            }
        };
        if !record.is_for(self.keys.namespace(), key) {
            let err = Error::invalid("the stored record belongs to another key (hash collision or planted value)");
            self.counters.record_invalid(self.name(), key, &err);
            return None;
        }
        let Some(generation) = generation.filter(|&current| current == record.generation) else {
            // Written before the last clear(): unreachable by design.
            return None;
        };
        // The signature covers the generation too: a record whose generation field was edited
        // (to bring back what a clear() retired) fails it.
        match self.config.settings.format.open_in(
            &keys::signed_scope(self.keys.namespace(), generation),
            key,
            record.envelope,
        ) {
            Ok((value, expires)) => {
                let deadline = expires.map(Deadline::at);
                match deadline {
                    Some(deadline) if deadline.has_passed_at(now) => None,
                    _ => Some(Entry::new(value, deadline)),
                }
            }
            Err(err) => {
                self.counters.record_invalid(self.name(), key, &err);
                None
            }
        }
    }

    /// The generation to stamp on writes to server `idx`, creating one if the server has none.
    async fn writable_gen(&self, idx: usize) -> Result<u64> {
        let server = &self.servers[idx];
        if let Some(generation) = server.cached_gen(GEN_MAX_AGE) {
            return Ok(generation);
        }
        let gen_key = self.keys.gen_key();
        let found = self.exec(idx, Get(vec![gen_key.to_owned()])).await?;
        if let Some(generation) = parse_gen(found.get(gen_key).map(Vec::as_slice)) {
            server.remember_gen(Some(generation));
            return Ok(generation);
        }
        let fresh = fresh_generation(server.addr());
        let text = fresh.to_string();
        if !found.contains_key(gen_key) && self.exec(idx, Add(gen_key.to_owned(), text.clone().into_bytes())).await? {
            server.remember_gen(Some(fresh));
            return Ok(fresh);
        }
        // Another writer created it first (or it holds something unreadable).
        let found = self.exec(idx, Get(vec![gen_key.to_owned()])).await?;
        if let Some(generation) = parse_gen(found.get(gen_key).map(Vec::as_slice)) {
            server.remember_gen(Some(generation));
            return Ok(generation);
        }
        let item = Item { wire: gen_key.to_owned(), bytes: text.into_bytes(), exptime: 0 };
        self.exec(idx, Store(vec![item])).await?;
        server.remember_gen(Some(fresh));
        Ok(fresh)
    }

    /// Where a write of `key` goes and until when: its wire key and the deadline `expiry` gets
    /// here and now.
    fn target(&self, key: &str, expiry: Expiry) -> Target {
        let now = SystemTime::now();
        let deadline = expiry.resolve_from(now, self.config.settings.default_ttl);
        Target { wire: self.keys.wire(key), deadline, exptime: keys::exptime(deadline, now) }
    }

    /// The record of `value` for `key` on a server whose generation is `generation`: sealed (and
    /// signed, with a signer) for the namespace, that generation and the key; refused with
    /// [`Error::ValueTooLarge`] if it does not fit in an item.
    fn record(&self, generation: u64, key: &str, value: &Value, target: &Target) -> Result<Vec<u8>> {
        let namespace = self.keys.namespace();
        let scope = keys::signed_scope(namespace, generation);
        let envelope = self.config.settings.format.seal_in(&scope, key, value, target.deadline.map(Deadline::time))?;
        let size = keys::record_overhead(namespace, key).saturating_add(envelope.len());
        let limit = self.config.max_item_bytes.saturating_sub(target.wire.len().saturating_add(ITEM_OVERHEAD));
        if size > limit {
            return Err(Error::ValueTooLarge { size, limit });
        }
        Record::encode(generation, namespace, key, &envelope)
    }

    /// Removes whatever `wires` hold on server `idx` (best effort: used when new values were
    /// refused, as memcached itself drops the old value of a refused write).
    async fn discard(&self, idx: usize, wires: Vec<String>) {
        if let Err(err) = self.exec(idx, Remove(wires)).await {
            tracing::debug!(backend = self.name(), error = %err, "cachestack: could not remove the previous value of an oversized write");
        }
    }

    /// Reads `keys` with one multi-get per server, the servers concurrently. If a server fails,
    /// the first failure is the result (the [`Silent`](crate::layer::Silent) layer turns it into
    /// misses).
    async fn fetch_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        let gen_key = self.keys.gen_key();
        let wires: Vec<String> = keys.iter().map(|k| self.keys.wire(k)).collect();
        let mut out: Vec<Option<Entry>> = vec![None; keys.len()];
        let mut failure = None;
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); self.servers.len()];
        let mut admissions = Admissions::new(self.servers.len());
        for (i, wire) in wires.iter().enumerate() {
            match self.route_in(wire, &mut admissions) {
                Ok(idx) => groups[idx].push(i),
                Err(err) => {
                    failure.get_or_insert(err);
                }
            }
        }
        let wires = &wires;
        let requests = groups.iter().enumerate().filter(|(_, g)| !g.is_empty()).map(|(idx, group)| async move {
            let mut request: Vec<String> = Vec::with_capacity(group.len() + 1);
            request.push(gen_key.to_owned());
            request.extend(group.iter().map(|&i| wires[i].clone()));
            (idx, self.exec(idx, Get(request)).await)
        });
        let results = futures_util::future::join_all(requests).await;
        let now = SystemTime::now();
        for (idx, result) in results {
            match result {
                Ok(found) => {
                    let generation = parse_gen(found.get(gen_key).map(Vec::as_slice));
                    self.servers[idx].remember_gen(generation);
                    for &i in &groups[idx] {
                        out[i] = found.get(&wires[i]).and_then(|bytes| self.decode(keys[i], generation, bytes, now));
                    }
                }
                Err(err) => {
                    failure.get_or_insert(err);
                }
            }
        }
        failure.map_or(Ok(out), Err)
    }

    /// Writes with one batch per server, the servers concurrently. Everything that can be
    /// written is; then the first failure (a value too large, a server) is the result.
    async fn store_many(&self, entries: &[(&str, Value)], expiry: Expiry) -> Result<()> {
        let mut groups: Vec<Vec<(usize, Target)>> = (0..self.servers.len()).map(|_| Vec::new()).collect();
        let mut failure = None;
        let mut admissions = Admissions::new(self.servers.len());
        for (i, (key, _)) in entries.iter().enumerate() {
            let target = self.target(key, expiry);
            match self.route_in(&target.wire, &mut admissions) {
                Ok(idx) => groups[idx].push((i, target)),
                Err(err) => {
                    failure.get_or_insert(err);
                }
            }
        }
        let requests = groups.into_iter().enumerate().filter(|(_, g)| !g.is_empty()).map(|(idx, group)| async move {
            let generation = self.writable_gen(idx).await?;
            let mut items = Vec::with_capacity(group.len());
            let (mut refused, mut too_large) = (None, Vec::new());
            for (i, target) in group {
                let (key, value) = &entries[i];
                match self.record(generation, key, value, &target) {
                    Ok(bytes) => items.push(Item { wire: target.wire, bytes, exptime: target.exptime }),
                    Err(err) => {
                        if matches!(err, Error::ValueTooLarge { .. }) {
                            too_large.push(target.wire);
                        }
                        refused.get_or_insert(err);
                    }
                }
            }
            if !too_large.is_empty() {
                self.discard(idx, too_large).await;
            }
            if !items.is_empty() {
                let count = items.len() as u64;
                self.exec(idx, Store(items)).await?;
                self.counters.record_writes(count);
            }
            refused.map_or(Ok(()), Err)
        });
        for result in futures_util::future::join_all(requests).await {
            if let Err(err) = result {
                failure.get_or_insert(err);
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Deletes the keys of one server: one multi-get to learn which are present (and really
    /// theirs), then one batch of deletes.
    async fn delete_on(&self, idx: usize, keys: &[&str], wires: &[&str]) -> Result<u64> {
        let gen_key = self.keys.gen_key();
        let mut request = Vec::with_capacity(wires.len() + 1);
        request.push(gen_key.to_owned());
        request.extend(wires.iter().map(|w| (*w).to_owned()));
        let found = self.exec(idx, Get(request)).await?;
        let generation = parse_gen(found.get(gen_key).map(Vec::as_slice));
        let now = SystemTime::now();
        let mut live = 0;
        let mut doomed = Vec::new();
        for (key, wire) in keys.iter().zip(wires) {
            let Some(bytes) = found.get(*wire) else { continue };
            // Never delete a record that belongs to another key; anything else goes.
            let owned = Record::parse(bytes).map_or(true, |r| r.is_for(self.keys.namespace(), key));
            if owned {
                doomed.push((*wire).to_owned());
                if self.decode(key, generation, bytes, now).is_some() {
                    live += 1;
                }
            }
        }
        if !doomed.is_empty() {
            self.exec(idx, Remove(doomed)).await?;
        }
        Ok(live)
    }

    async fn remove_many(&self, keys: &[&str]) -> Result<u64> {
        let wires: Vec<String> = keys.iter().map(|k| self.keys.wire(k)).collect();
        let mut groups: Vec<(Vec<&str>, Vec<&str>)> = vec![(Vec::new(), Vec::new()); self.servers.len()];
        let mut failure = None;
        let mut admissions = Admissions::new(self.servers.len());
        for (key, wire) in keys.iter().zip(&wires) {
            match self.route_in(wire, &mut admissions) {
                Ok(idx) => {
                    groups[idx].0.push(key);
                    groups[idx].1.push(wire);
                }
                Err(err) => {
                    failure.get_or_insert(err);
                }
            }
        }
        let requests = groups
            .iter()
            .enumerate()
            .filter(|(_, (k, _))| !k.is_empty())
            .map(|(idx, (keys, wires))| self.delete_on(idx, keys, wires));
        let mut removed = 0u64;
        for result in futures_util::future::join_all(requests).await {
            match result {
                Ok(n) => removed = removed.saturating_add(n),
                Err(err) => {
                    failure.get_or_insert(err);
                }
            }
        }
        failure.map_or(Ok(removed), Err)
    }

    /// Writes a fresh generation on every server (see "clear()" on
    /// [`MemcachedBackend`](super::MemcachedBackend)).
    async fn new_generation(&self) -> Result<()> {
        let gen_key = self.keys.gen_key();
        let requests = self.servers.iter().map(|server| async move {
            if !server.admit() {
                return Err(server.down_error(self.name()));
            }
            let mark = server.distrust_mark();
            let fresh = fresh_generation(server.addr());
            let item = Item { wire: gen_key.to_owned(), bytes: fresh.to_string().into_bytes(), exptime: 0 };
            server.exec(self.name(), Store(vec![item])).await?;
            match mark {
                Some(mark) => server.trust_again(mark, fresh),
                None => server.remember_gen(Some(fresh)),
            }
            Ok(())
        });
        let results: Vec<Result<()>> = futures_util::future::join_all(requests).await;
        results.into_iter().collect()
    }
}

/// Which servers take requests, asked once per server per batch.
struct Admissions(Vec<Option<bool>>);

impl Admissions {
    fn new(servers: usize) -> Self {
        Admissions(vec![None; servers])
    }

    fn admit(&mut self, servers: &[Arc<Server>], idx: usize) -> bool {
        *self.0[idx].get_or_insert_with(|| servers[idx].admit())
    }
}

/// Where a write goes: wire key, deadline and memcached exptime.
struct Target {
    wire: String,
    deadline: Option<Deadline>,
    exptime: u32,
}

impl KeyIo for MemcachedStore {
    async fn get_one(&self, key: &str) -> Result<Option<Entry>> {
        let wire = self.keys.wire(key);
        let idx = self.route(&wire)?;
        let gen_key = self.keys.gen_key();
        let mut found = self.exec(idx, Get(vec![gen_key.to_owned(), wire.clone()])).await?;
        let generation = parse_gen(found.get(gen_key).map(Vec::as_slice));
        self.servers[idx].remember_gen(generation);
        Ok(found.remove(&wire).and_then(|bytes| self.decode(key, generation, &bytes, SystemTime::now())))
    }

    async fn set_one(&self, key: &str, value: &Value, expiry: Expiry) -> Result<()> {
        let target = self.target(key, expiry);
        let idx = self.route(&target.wire)?;
        let generation = self.writable_gen(idx).await?;
        let record = match self.record(generation, key, value, &target) {
            Ok(record) => record,
            Err(err) => {
                if matches!(err, Error::ValueTooLarge { .. }) {
                    self.discard(idx, vec![target.wire]).await;
                }
                return Err(err);
            }
        };
        self.exec(idx, Store(vec![Item { wire: target.wire, bytes: record, exptime: target.exptime }])).await?;
        self.counters.record_write();
        Ok(())
    }

    async fn delete_one(&self, key: &str) -> Result<bool> {
        Ok(self.remove_many(&[key]).await? > 0)
    }

    async fn get_each(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        self.fetch_many(keys).await
    }

    async fn set_each(&self, entries: &[(&str, Value)], expiry: Expiry) -> Result<()> {
        self.store_many(entries, expiry).await
    }

    async fn delete_each(&self, keys: &[&str]) -> Result<u64> {
        self.remove_many(keys).await
    }

    async fn clear_all(&self) -> Result<()> {
        self.new_generation().await
    }
}

counted_backend! {
    impl Backend for MemcachedStore where counters = self.counters, settings = self.config.settings {
        fn atomic(&self) -> Option<&dyn crate::store::AtomicOps> {
            Some(self)
        }

        fn locks(&self) -> Option<&dyn crate::store::LockOps> {
            Some(self)
        }

        fn stats(&self) -> BackendStats {
            let mut stats = self
                .counters
                .snapshot(self.name())
                .with_detail("servers", self.servers.iter().map(|s| s.addr()).collect::<Vec<_>>().join(","))
                .with_detail("servers_up", self.servers.iter().filter(|s| s.is_up()).count())
                .with_detail("namespace", &self.config.settings.namespace)
                .with_detail("max_item_bytes", self.config.max_item_bytes)
                .with_detail("pool_size", self.config.pool_size)
                .with_detail("failover", self.config.failover);
            for server in &self.servers {
                stats.details.insert(format!("server {}", server.addr()), server.describe());
            }
            stats
        }
    }
}
