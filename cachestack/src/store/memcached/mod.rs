//! Memcached backend (feature `memcached`): memcache-async's ASCII protocol under a pool of
//! connections per server, several servers by rendezvous hashing, safe keys, namespaces cleared by
//! a generation counter. The design is described on [`MemcachedBackend`]; `keys.rs` holds the wire
//! formats and TTL rules, `server.rs` the connections and server health.

mod keys;
mod server;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::runtime::Handle;

use crate::error::{Error, Result};
use crate::expiry::{Deadline, Expiry};
use crate::store::{Backend, BackendStats, Counters, Entry};
use crate::url::{CacheUrl, FORMAT_OPTIONS};
use crate::value::envelope::ValueFormat;
use crate::value::Value;

use keys::{Keyspace, Record};
use server::{fresh_generation, parse_gen, Add, Get, Remove, Server, Store, Version};

/// What memcached adds to each item besides key and value (item header, CAS, CRLF), rounded up.
const ITEM_OVERHEAD: usize = 64;
/// How long a generation read from a server is trusted for writes (reads always fetch it).
const GEN_MAX_AGE: Duration = Duration::from_secs(1);
const DEFAULT_PORT: u16 = 11211;

/// Settings of a [`MemcachedBackend`].
///
/// ```
/// use std::time::Duration;
/// use cachestack::MemcachedConfig;
///
/// let config = MemcachedConfig {
///     servers: vec!["10.0.0.1:11211".into(), "10.0.0.2:11211".into()],
///     namespace: "app".into(),
///     default_ttl: Some(Duration::from_secs(600)),
///     silent: true,
///     ..MemcachedConfig::default()
/// };
/// assert_eq!(config.max_item_bytes, 1024 * 1024);
///
/// // The same from a URL:
/// let from_url = MemcachedConfig::from_url("memcached://10.0.0.1,10.0.0.2?namespace=app&ttl=10m&silent=true").unwrap();
/// assert_eq!(from_url.servers, config.servers);
/// assert_eq!(from_url.default_ttl, config.default_ttl);
/// ```
#[derive(Debug, Clone)]
pub struct MemcachedConfig {
    /// Servers as `host:port` (`[v6addr]:port` for IPv6). Default `127.0.0.1:11211`.
    pub servers: Vec<String>,
    /// Keys live under this namespace; [`Backend::clear`] empties only it. Default `default`.
    pub namespace: String,
    /// TTL for writes that give none. `None`: entries live until evicted.
    pub default_ttl: Option<Duration>,
    /// Codec, compression and signing of stored values.
    pub format: ValueFormat,
    /// Failures become misses and no-ops (counted and logged) instead of errors.
    pub silent: bool,
    /// Deadline for opening a connection. Default 1 s.
    pub connect_timeout: Duration,
    /// Deadline for one operation on one server: waiting for a pooled connection, connecting if
    /// needed, request and response. Default 1 s.
    pub timeout: Duration,
    /// Most connections held open to each server. Default 8.
    pub pool_size: usize,
    /// The servers' item size limit (memcached's `-I`, 1 MiB by default): larger values are
    /// refused with [`Error::ValueTooLarge`] before they are sent. Keep it at or below the
    /// servers' limit: memcache-async sends writes as `noreply`, so an item the server itself
    /// refuses is dropped without an error (the connection stays usable).
    pub max_item_bytes: usize,
    /// When a key's server is down, use the next server in the key's ranking instead of missing.
    /// Off by default: with failover, a value written during an outage lives on in the other
    /// server and an older one may reappear when the first server comes back.
    pub failover: bool,
    /// How long a failed server is left alone before one request probes it. Default 1 s.
    pub retry_interval: Duration,
    /// Name shown in stats and logs. Default `memcached`.
    pub name: String,
}

impl Default for MemcachedConfig {
    fn default() -> Self {
        MemcachedConfig {
            servers: vec![format!("127.0.0.1:{DEFAULT_PORT}")],
            namespace: "default".into(),
            default_ttl: None,
            format: ValueFormat::default(),
            silent: false,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            pool_size: 8,
            max_item_bytes: 1024 * 1024,
            failover: false,
            retry_interval: Duration::from_secs(1),
            name: "memcached".into(),
        }
    }
}

const URL_OPTIONS: &[&str] = &[
    "namespace",
    "ttl",
    "silent",
    "pool_size",
    "connect_timeout",
    "timeout",
    "max_item_bytes",
    "failover",
    "retry_interval",
];

impl MemcachedConfig {
    /// Settings from a `memcached://host1:port,host2:port?options` URL (`memcache://` too; the
    /// port defaults to 11211).
    ///
    /// Options: `namespace`, `ttl`, `silent`, `pool_size`, `connect_timeout`, `timeout`,
    /// `max_item_bytes`, `failover`, `retry_interval`, and the byte-store options `codec`,
    /// `compression`, `secret` / `secret_env`, `max_value_bytes`. Unknown options are errors.
    ///
    /// ```
    /// use cachestack::MemcachedConfig;
    /// let config = MemcachedConfig::from_url("memcached://127.0.0.1:11311?timeout=250ms&pool_size=4").unwrap();
    /// assert_eq!(config.servers, ["127.0.0.1:11311"]);
    /// assert_eq!(config.pool_size, 4);
    /// assert!(MemcachedConfig::from_url("memcached://127.0.0.1?colour=blue").is_err());
    /// ```
    pub fn from_url(text: &str) -> Result<Self> {
        let mut url = CacheUrl::parse(text)?;
        if !matches!(url.scheme.as_str(), "memcached" | "memcache") {
            return Err(Error::config(format!("not a memcached URL: `{}://`", url.scheme)));
        }
        let config = Self::take_from_url(&mut url)?;
        url.finish(&valid_url_options())?;
        Ok(config)
    }

    fn take_from_url(url: &mut CacheUrl) -> Result<Self> {
        let mut config = MemcachedConfig { servers: parse_servers(&url.rest)?, ..MemcachedConfig::default() };
        if let Some(namespace) = url.take("namespace") {
            config.namespace = namespace;
        }
        config.default_ttl = url.take_ttl("ttl")?;
        if let Some(silent) = url.take_bool("silent")? {
            config.silent = silent;
        }
        if let Some(n) = url.take_parsed::<usize>("pool_size")? {
            config.pool_size = n;
        }
        if let Some(d) = url.take_ttl("connect_timeout")? {
            config.connect_timeout = d;
        }
        if let Some(d) = url.take_ttl("timeout")? {
            config.timeout = d;
        }
        if let Some(n) = url.take_parsed::<usize>("max_item_bytes")? {
            config.max_item_bytes = n;
        }
        if let Some(failover) = url.take_bool("failover")? {
            config.failover = failover;
        }
        if let Some(d) = url.take_ttl("retry_interval")? {
            config.retry_interval = d;
        }
        config.format = url.take_format()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        if self.servers.is_empty() {
            return Err(Error::config("memcached: no servers given"));
        }
        let mut seen = std::collections::HashSet::new();
        for server in &self.servers {
            if !seen.insert(parse_server(server)?) {
                return Err(Error::config(format!("memcached: server `{server}` is listed twice")));
            }
        }
        if self.namespace.len() > keys::MAX_NAMESPACE_BYTES {
            return Err(Error::config(format!(
                "memcached: the namespace is {} bytes long; at most {} are allowed",
                self.namespace.len(),
                keys::MAX_NAMESPACE_BYTES
            )));
        }
        if self.pool_size == 0 {
            return Err(Error::config("memcached: pool_size must be greater than zero"));
        }
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(Error::config("memcached: timeout and connect_timeout must be greater than zero"));
        }
        if self.max_item_bytes < 1024 {
            return Err(Error::config(format!(
                "memcached: max_item_bytes={} is below memcached's smallest item limit (1 KiB)",
                self.max_item_bytes
            )));
        }
        Ok(())
    }
}

fn valid_url_options() -> Vec<&'static str> {
    URL_OPTIONS.iter().chain(FORMAT_OPTIONS).copied().collect()
}

/// `h1:11211,h2,[::1]:11212` into `host:port` strings.
fn parse_servers(rest: &str) -> Result<Vec<String>> {
    let hosts = rest.strip_suffix('/').unwrap_or(rest);
    if hosts.contains('/') {
        return Err(Error::config(format!(
            "memcached URLs take no path (got `{rest}`); write memcached://host:11211,host2:11211?namespace=app"
        )));
    }
    if hosts.trim().is_empty() {
        return Err(Error::config("memcached URL names no server; write memcached://host:11211"));
    }
    hosts.split(',').map(|h| parse_server(h.trim())).collect()
}

/// Checks one `host[:port]` and returns it with the port filled in.
fn parse_server(host: &str) -> Result<String> {
    if host.is_empty() {
        return Err(Error::config("memcached: empty server name in the server list (`a,,b`?)"));
    }
    if let Some((_, after)) = host.rsplit_once('@') {
        // Never echo what comes before `@`: it may be a password.
        return Err(Error::config(format!(
            "memcached server `***@{after}`: credentials are not supported (the ASCII protocol has no authentication)"
        )));
    }
    let (name, port) = if let Some(v6) = host.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err(Error::config(format!("memcached server `{host}`: unclosed `[` in an IPv6 address")));
        };
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| Error::config(format!("memcached server `{host}`: expected `]:port`")))?,
            ),
        };
        (format!("[{addr}]"), port)
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name.to_string(), Some(port)),
            None => (host.to_string(), None),
        }
    };
    if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == ':' && !name.starts_with('[')) {
        return Err(Error::config(format!("memcached server `{host}`: invalid host name")));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| Error::config(format!("memcached server `{host}`: invalid port `{p}`")))?,
    };
    Ok(format!("{name}:{port}"))
}

pub(crate) fn from_url(mut url: CacheUrl) -> Result<Arc<dyn Backend>> {
    let config = MemcachedConfig::take_from_url(&mut url)?;
    url.finish(&valid_url_options())?;
    Ok(Arc::new(MemcachedBackend::new(config)?))
}

/// A cache in one or more memcached servers.
///
/// Construction never blocks and needs no server: connections are opened on first use, an
/// unreachable server turns into per-operation errors (misses in silent mode) and is used again
/// once it answers. [`MemcachedBackend::connect`] checks the servers first instead.
///
/// ```no_run
/// use cachestack::{Cache, MemcachedBackend, MemcachedConfig};
///
/// # async fn demo() -> cachestack::Result<()> {
/// let backend = MemcachedBackend::connect(MemcachedConfig {
///     servers: vec!["127.0.0.1:11211".into(), "127.0.0.1:11212".into()],
///     namespace: "app".into(),
///     ..MemcachedConfig::default()
/// })
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
///   Every operation is bounded by `timeout` (pool wait, connect, request and response), connects
///   by `connect_timeout`. Connections and timers live on cachestack's runtime
///   ([`crate::rt::handle`]), so the backend works from any runtime and from sync callers.
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
///   default) is refused before anything is sent with [`Error::ValueTooLarge`] (skipped and
///   counted in silent mode), and the key's previous value is removed, as memcached itself does.
/// - **TTLs**: sent by memcached's rules: whole seconds rounded up (never down to 0, which means
///   "never"), over 30 days an absolute Unix timestamp. The envelope keeps the exact expiry, so
///   reads are precise to the millisecond and report the remaining TTL, which memcached cannot.
/// - **clear()**: memcached cannot list keys and `flush_all` would empty the whole server. Each
///   server holds a generation number for the namespace (key `cs:<namespace>#gen`), each record
///   the generation it was written under, and a read fetches the generation in the same
///   multi-get as the value: a record of another generation is a miss. `clear()` writes a fresh
///   random generation on every server, so the old entries become unreachable at once, for every
///   process, and are left to age out through memcached's LRU and their TTLs. If memcached evicts
///   the generation key, the namespace reads as empty until the next write starts a new one:
///   never stale data. A server unreachable during `clear()` keeps its old generation and
///   `clear()` reports the error.
/// - **Batches**: `get_many`, `set_many` and `delete_many` send one request per server, to all
///   servers at once.
pub struct MemcachedBackend {
    config: MemcachedConfig,
    keys: Keyspace,
    servers: Vec<Server>,
    counters: Counters,
    rt: Handle,
}

impl fmt::Debug for MemcachedBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemcachedBackend")
            .field("servers", &self.servers)
            .field("namespace", &self.config.namespace)
            .field("silent", &self.config.silent)
            .finish_non_exhaustive()
    }
}

impl MemcachedBackend {
    /// A backend over `config.servers`, connecting lazily. Fails only on invalid settings.
    pub fn new(config: MemcachedConfig) -> Result<Self> {
        config.validate()?;
        let rt = crate::rt::handle()?;
        let servers = config
            .servers
            .iter()
            .map(|s| {
                Server::new(
                    parse_server(s)?,
                    config.pool_size,
                    config.connect_timeout,
                    config.retry_interval,
                    rt.clone(),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(MemcachedBackend {
            keys: Keyspace::new(&config.namespace),
            config,
            servers,
            counters: Counters::default(),
            rt,
        })
    }

    /// A backend whose servers all answered a `version` request: fails with the first server
    /// that does not. Use [`MemcachedBackend::new`] to start without them.
    pub async fn connect(config: MemcachedConfig) -> Result<Self> {
        let backend = Self::new(config)?;
        for server in &backend.servers {
            server.exec(&backend.config.name, Version, backend.config.timeout, &backend.rt).await?;
        }
        Ok(backend)
    }

    /// The settings this backend runs with.
    pub fn config(&self) -> &MemcachedConfig {
        &self.config
    }

    /// The memcached key `key` is stored under: the key itself under the namespace prefix when
    /// memcached accepts it as is, a hash otherwise. For debugging and tooling.
    ///
    /// ```
    /// use cachestack::{MemcachedBackend, MemcachedConfig};
    /// let backend = MemcachedBackend::new(MemcachedConfig { namespace: "app".into(), ..Default::default() }).unwrap();
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

    fn name(&self) -> &str {
        &self.config.name
    }

    /// The index of the server with the highest score for `wire`.
    fn primary(&self, wire: &str) -> usize {
        if self.servers.len() == 1 {
            return 0;
        }
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
                return Ok(idx);
            }
        }
        Err(self.servers[primary].down_error(self.name()))
    }

    async fn exec<O: server::Op>(&self, idx: usize, op: O) -> Result<O::Out> {
        self.servers[idx].exec(&self.config.name, op, self.config.timeout, &self.rt).await
    }

    /// Reads `bytes` stored under `key` on a server whose generation is `generation`.
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
        if generation != Some(record.generation) {
            // Written before the last clear(): unreachable by design.
            return None;
        }
        match self.config.format.open(key, record.envelope) {
            Ok((_, Some(expires))) if expires <= now => None,
            Ok((value, expires)) => Some(Entry::new(value, expires.map(Deadline::at))),
            Err(err) => {
                self.counters.record_invalid(self.name(), key, &err);
                None
            }
        }
    }

    /// The generation to stamp on writes to server `idx`, creating one if the server has none.
    async fn writable_gen(&self, idx: usize) -> Result<u64> {
        let server = &self.servers[idx];
        if let Some(gen) = server.cached_gen(GEN_MAX_AGE) {
            return Ok(gen);
        }
        let gen_key = self.keys.gen_key();
        let found = self.exec(idx, Get(&[gen_key])).await?;
        if let Some(gen) = parse_gen(found.get(gen_key).map(Vec::as_slice)) {
            server.remember_gen(Some(gen));
            return Ok(gen);
        }
        let fresh = fresh_generation(server.addr());
        let text = fresh.to_string();
        if !found.contains_key(gen_key) && self.exec(idx, Add(gen_key, text.as_bytes())).await? {
            server.remember_gen(Some(fresh));
            return Ok(fresh);
        }
        // Another writer created it first (or it holds something unreadable).
        let found = self.exec(idx, Get(&[gen_key])).await?;
        if let Some(gen) = parse_gen(found.get(gen_key).map(Vec::as_slice)) {
            server.remember_gen(Some(gen));
            return Ok(gen);
        }
        self.exec(idx, Store(&[(gen_key, text.as_bytes(), 0)])).await?;
        server.remember_gen(Some(fresh));
        Ok(fresh)
    }

    /// Seals `value` for `key` and checks it fits in an item: `(wire key, envelope, exptime)`.
    fn prepare(&self, key: &str, value: &Value, ttl: Option<Duration>) -> Result<Prepared> {
        let ttl = ttl.or(self.config.default_ttl);
        let now = SystemTime::now();
        let expires = ttl.and_then(|t| now.checked_add(t));
        let envelope = self.config.format.seal(key, value, expires)?;
        let wire = self.keys.wire(key);
        let size = keys::record_overhead(self.keys.namespace(), key) + envelope.len();
        let limit = self.config.max_item_bytes.saturating_sub(wire.len() + ITEM_OVERHEAD);
        let too_large = (size > limit).then_some(Error::ValueTooLarge { size, limit });
        Ok(Prepared { wire, envelope, exptime: keys::exptime(ttl, now), too_large })
    }

    /// Removes whatever `wire` holds (best effort: used when a new value was refused).
    async fn discard(&self, wire: &str) {
        if let Ok(idx) = self.route(wire) {
            if let Err(err) = self.exec(idx, Remove(&[wire])).await {
                tracing::debug!(backend = self.name(), error = %err, "cachestack: could not remove the previous value of an oversized write");
            }
        }
    }

    async fn get_inner(&self, key: &str) -> Result<Option<Entry>> {
        let wire = self.keys.wire(key);
        let idx = self.route(&wire)?;
        let gen_key = self.keys.gen_key();
        let mut found = self.exec(idx, Get(&[gen_key, &wire])).await?;
        let generation = parse_gen(found.get(gen_key).map(Vec::as_slice));
        self.servers[idx].remember_gen(generation);
        Ok(found.remove(&wire).and_then(|bytes| self.decode(key, generation, &bytes, SystemTime::now())))
    }

    async fn set_inner(&self, key: &str, value: &Value, ttl: Option<Duration>) -> Result<()> {
        let prepared = self.prepare(key, value, ttl)?;
        if let Some(err) = prepared.too_large {
            self.discard(&prepared.wire).await;
            return Err(err);
        }
        let idx = self.route(&prepared.wire)?;
        let generation = self.writable_gen(idx).await?;
        let record = Record::encode(generation, self.keys.namespace(), key, &prepared.envelope)?;
        self.exec(idx, Store(&[(&prepared.wire, &record, prepared.exptime)])).await?;
        self.counters.record_write();
        Ok(())
    }

    /// Reads `keys` with one multi-get per server, the servers concurrently. Keys of servers that
    /// failed are misses; the failures (one per server) come back beside them.
    async fn fetch_many(&self, keys: &[&str]) -> (Vec<Option<Entry>>, Failures) {
        let gen_key = self.keys.gen_key();
        let wires: Vec<String> = keys.iter().map(|k| self.keys.wire(k)).collect();
        let mut out: Vec<Option<Entry>> = vec![None; keys.len()];
        let mut failures = Failures::default();
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); self.servers.len()];
        let mut admissions = Admissions::new(self.servers.len());
        for (i, wire) in wires.iter().enumerate() {
            match self.route_in(wire, &mut admissions) {
                Ok(idx) => groups[idx].push(i),
                Err(err) => failures.push_routing(err),
            }
        }
        let wires = &wires;
        let requests = groups.iter().enumerate().filter(|(_, g)| !g.is_empty()).map(|(idx, group)| async move {
            let mut request: Vec<&str> = Vec::with_capacity(group.len() + 1);
            request.push(gen_key);
            request.extend(group.iter().map(|&i| wires[i].as_str()));
            (idx, self.exec(idx, Get(&request)).await)
        });
        let now = SystemTime::now();
        for (idx, result) in futures_util::future::join_all(requests).await {
            match result {
                Ok(found) => {
                    let generation = parse_gen(found.get(gen_key).map(Vec::as_slice));
                    self.servers[idx].remember_gen(generation);
                    for &i in &groups[idx] {
                        out[i] = found.get(&wires[i]).and_then(|bytes| self.decode(keys[i], generation, bytes, now));
                    }
                }
                Err(err) => failures.push(err),
            }
        }
        (out, failures)
    }

    /// The silent-mode policy for a batch: every failure is counted and logged; in silent mode
    /// the batch then goes on with what succeeded, otherwise the first failure is returned.
    fn settle(&self, op: &'static str, failures: Failures) -> Result<()> {
        let mut first = None;
        for err in failures.0 {
            if let Err(err) = self.counters.absorb(self.name(), op, self.config.silent, Err(err), || ()) {
                first.get_or_insert(err);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Writes with one batch per server. Fails outright for a value that cannot be encoded (or
    /// is too large, unless silent); the failures of servers come back to be settled.
    async fn set_many_inner(&self, entries: &[(&str, Value)], ttl: Option<Duration>) -> Result<Failures> {
        let mut groups: Vec<Vec<(usize, Prepared)>> = (0..self.servers.len()).map(|_| Vec::new()).collect();
        let mut failures = Failures::default();
        let mut admissions = Admissions::new(self.servers.len());
        for (i, (key, value)) in entries.iter().enumerate() {
            let prepared = self.prepare(key, value, ttl)?;
            if let Some(err) = prepared.too_large {
                self.discard(&prepared.wire).await;
                if !self.config.silent {
                    return Err(err);
                }
                failures.push(err);
                continue;
            }
            match self.route_in(&prepared.wire, &mut admissions) {
                Ok(idx) => groups[idx].push((i, Prepared { too_large: None, ..prepared })),
                Err(err) => failures.push_routing(err),
            }
        }
        let requests = groups.iter().enumerate().filter(|(_, g)| !g.is_empty()).map(|(idx, group)| async move {
            let generation = self.writable_gen(idx).await?;
            let records = group
                .iter()
                .map(|(i, p)| Record::encode(generation, self.keys.namespace(), entries[*i].0, &p.envelope))
                .collect::<Result<Vec<_>>>()?;
            let items: Vec<(&str, &[u8], u32)> = group
                .iter()
                .zip(&records)
                .map(|((_, p), record)| (p.wire.as_str(), record.as_slice(), p.exptime))
                .collect();
            self.exec(idx, Store(&items)).await?;
            self.counters.record_writes(group.len() as u64);
            Ok(())
        });
        for result in futures_util::future::join_all(requests).await {
            if let Err(err) = result {
                failures.push(err);
            }
        }
        Ok(failures)
    }

    /// Deletes the keys of one server: one multi-get to learn which are present (and really
    /// theirs), then one batch of deletes.
    async fn delete_on(&self, idx: usize, keys: &[&str], wires: &[&str]) -> Result<u64> {
        let gen_key = self.keys.gen_key();
        let mut request = Vec::with_capacity(wires.len() + 1);
        request.push(gen_key);
        request.extend_from_slice(wires);
        let found = self.exec(idx, Get(&request)).await?;
        let generation = parse_gen(found.get(gen_key).map(Vec::as_slice));
        let now = SystemTime::now();
        let mut live = 0;
        let mut doomed = Vec::new();
        for (key, wire) in keys.iter().zip(wires) {
            let Some(bytes) = found.get(*wire) else { continue };
            // Never delete a record that belongs to another key; anything else goes.
            let owned = Record::parse(bytes).map_or(true, |r| r.is_for(self.keys.namespace(), key));
            if owned {
                doomed.push(*wire);
                if self.decode(key, generation, bytes, now).is_some() {
                    live += 1;
                }
            }
        }
        if !doomed.is_empty() {
            self.exec(idx, Remove(&doomed)).await?;
        }
        Ok(live)
    }

    async fn delete_many_inner(&self, keys: &[&str]) -> Result<u64> {
        let wires: Vec<String> = keys.iter().map(|k| self.keys.wire(k)).collect();
        let mut groups: Vec<(Vec<&str>, Vec<&str>)> = vec![(Vec::new(), Vec::new()); self.servers.len()];
        let mut failures = Failures::default();
        let mut admissions = Admissions::new(self.servers.len());
        for (key, wire) in keys.iter().zip(&wires) {
            match self.route_in(wire, &mut admissions) {
                Ok(idx) => {
                    groups[idx].0.push(key);
                    groups[idx].1.push(wire);
                }
                Err(err) => failures.push_routing(err),
            }
        }
        let requests = groups
            .iter()
            .enumerate()
            .filter(|(_, (k, _))| !k.is_empty())
            .map(|(idx, (keys, wires))| self.delete_on(idx, keys, wires));
        let mut removed = 0;
        for result in futures_util::future::join_all(requests).await {
            match result {
                Ok(n) => removed += n,
                Err(err) => failures.push(err),
            }
        }
        self.settle("delete", failures)?;
        Ok(removed)
    }

    async fn clear_inner(&self) -> Result<()> {
        let gen_key = self.keys.gen_key();
        let requests = self.servers.iter().enumerate().map(|(idx, server)| async move {
            if !server.admit() {
                return Err(server.down_error(self.name()));
            }
            let fresh = fresh_generation(server.addr());
            let text = fresh.to_string();
            self.exec(idx, Store(&[(gen_key, text.as_bytes(), 0)])).await?;
            server.remember_gen(Some(fresh));
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

    fn admit(&mut self, servers: &[Server], idx: usize) -> bool {
        *self.0[idx].get_or_insert_with(|| servers[idx].admit())
    }
}

/// The failures of a batch: at most one for keys refused because their server is down, one per
/// server request that failed.
#[derive(Default)]
struct Failures(Vec<Error>, bool);

impl Failures {
    fn push(&mut self, err: Error) {
        self.0.push(err);
    }

    fn push_routing(&mut self, err: Error) {
        if !self.1 {
            self.1 = true;
            self.0.push(err);
        }
    }
}

/// A value ready to send.
struct Prepared {
    wire: String,
    envelope: Vec<u8>,
    exptime: u32,
    too_large: Option<Error>,
}

#[async_trait]
impl Backend for MemcachedBackend {
    fn name(&self) -> &str {
        &self.config.name
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        let result = self.get_inner(key).await;
        let found = self.counters.absorb(self.name(), "get", self.config.silent, result, || None)?;
        self.counters.record_lookup(found.is_some());
        Ok(found)
    }

    async fn set(&self, key: &str, value: Value, expiry: Expiry) -> Result<()> {
        let ttl = expiry.legacy_ttl();
        let result = self.set_inner(key, &value, ttl).await;
        self.counters.absorb(self.name(), "set", self.config.silent, result, || ())
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.counters.record_delete();
        Ok(self.delete_many_inner(&[key]).await? > 0)
    }

    async fn clear(&self) -> Result<()> {
        let result = self.clear_inner().await;
        self.counters.absorb(self.name(), "clear", self.config.silent, result, || ())
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let (found, failures) = self.fetch_many(keys).await;
        self.settle("get_many", failures)?;
        let hits = found.iter().filter(|e| e.is_some()).count();
        self.counters.record_lookups(found.len() as u64, hits as u64);
        Ok(found)
    }

    async fn set_many(&self, entries: &[(&str, Value)], expiry: Expiry) -> Result<()> {
        let ttl = expiry.legacy_ttl();
        if entries.is_empty() {
            return Ok(());
        }
        match self.set_many_inner(entries, ttl).await {
            Ok(failures) => self.settle("set_many", failures),
            Err(err) => self.counters.absorb(self.name(), "set_many", self.config.silent, Err(err), || ()),
        }
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.counters.record_deletes(keys.len() as u64);
        self.delete_many_inner(keys).await
    }

    fn stats(&self) -> BackendStats {
        let mut stats = self
            .counters
            .snapshot(self.name())
            .with_detail("servers", self.servers.iter().map(Server::addr).collect::<Vec<_>>().join(","))
            .with_detail("servers_up", self.servers.iter().filter(|s| s.is_up()).count())
            .with_detail("namespace", &self.config.namespace)
            .with_detail("max_item_bytes", self.config.max_item_bytes)
            .with_detail("pool_size", self.config.pool_size)
            .with_detail("failover", self.config.failover)
            .with_detail("silent", self.config.silent);
        for server in &self.servers {
            stats.details.insert(format!("server {}", server.addr()), server.describe());
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn urls_parse_servers_and_options() {
        let c = MemcachedConfig::from_url(
            "memcached://h1:11211, h2 ,[::1]:11300/?namespace=app&ttl=5m&silent=true&pool_size=3&connect_timeout=200ms&timeout=300ms&max_item_bytes=2097152&failover=true&retry_interval=2s&codec=postcard",
        )
        .unwrap();
        assert_eq!(c.servers, ["h1:11211", "h2:11211", "[::1]:11300"]);
        assert_eq!(c.namespace, "app");
        assert_eq!(c.default_ttl, Some(Duration::from_secs(300)));
        assert!(c.silent && c.failover);
        assert_eq!(c.pool_size, 3);
        assert_eq!(c.connect_timeout, Duration::from_millis(200));
        assert_eq!(c.timeout, Duration::from_millis(300));
        assert_eq!(c.max_item_bytes, 2 * 1024 * 1024);
        assert_eq!(c.retry_interval, Duration::from_secs(2));
        assert!(MemcachedConfig::from_url("memcache://localhost").is_ok());
    }

    #[test]
    fn bad_urls_are_clear_config_errors() {
        let cases = [
            ("memcached://", "names no server"),
            ("memcached://h1,,h2", "empty server name"),
            ("memcached://h1:notaport", "invalid port"),
            ("memcached://h1:0", "invalid port"),
            ("memcached://h1:99999", "invalid port"),
            ("memcached://user:pw@h1", "credentials are not supported"),
            ("memcached://h1/db", "take no path"),
            ("memcached://[::1", "unclosed"),
            ("memcached://h1?colour=blue", "valid options: namespace"),
            ("memcached://h1?pool_size=0", "pool_size must be greater than zero"),
            ("memcached://h1?pool_size=many", "pool_size=many"),
            ("memcached://h1?timeout=soon", "timeout=soon"),
            ("memcached://h1?max_item_bytes=10", "max_item_bytes=10"),
            ("memcached://h1?silent=maybe", "silent=maybe"),
            ("memcached://h1,h1:11211", "listed twice"),
        ];
        for (url, expected) in cases {
            let err = match crate::url::backend_from_url(url) {
                Ok(b) => panic!("{url} was accepted: {b:?}"),
                Err(e) => e,
            };
            assert!(matches!(err, Error::Config { .. }), "{url}: {err:?}");
            assert!(err.to_string().contains(expected), "{url}: {err}");
            assert!(!err.to_string().contains("pw@"), "{url}: password shown in {err}");
        }
    }

    #[test]
    fn construction_from_a_url_never_connects() {
        // Nothing listens on port 1: construction still succeeds, operations fail.
        let backend = crate::url::backend_from_url("memcached://127.0.0.1:1?timeout=2s").unwrap();
        assert_eq!(backend.name(), "memcached");
        let stats = backend.stats();
        assert_eq!(stats.details["servers"], "127.0.0.1:1");
        assert_eq!(stats.details["servers_up"], "1");
        let err = crate::rt::block_on(async move { backend.get("k").await }).unwrap().unwrap_err();
        assert!(err.is_unavailable(), "{err}");
    }

    #[test]
    fn silent_mode_turns_an_unreachable_server_into_misses() {
        let backend = MemcachedBackend::new(MemcachedConfig {
            servers: vec!["127.0.0.1:1".into()],
            silent: true,
            ..Default::default()
        })
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
