//! Redis backend on redis-rs: a single server through an auto-reconnecting multiplexed
//! connection (`ConnectionManager`), or a Redis Cluster through redis-rs's async cluster client.
//!
//! Layout: every entry is one Redis string under `cachestack:<namespace>:<key>`, holding the
//! shared value envelope ([`ValueFormat`](crate::ValueFormat)) and expiring by Redis itself (`SET ... PX`, millisecond
//! precision). A read is `MGET` + `PTTL` in one round trip; the remaining TTL it reports is the
//! smaller of the server's `PTTL` and the expiry recorded in the envelope, so a backfilled faster
//! tier never keeps a value longer than Redis would. (The envelope's expiry is written with the
//! writer's clock: hosts sharing a Redis should keep their clocks in sync, as NTP does; a reader
//! whose clock runs ahead sees entries expire early by the difference, never late.)
//!
//! Bulk operations are one pipeline (`MGET` + `PTTL`s, `SET`s, `DEL`) per hash slot on a cluster,
//! sent concurrently, so multi-key commands never fail with `CROSSSLOT`; on a single server they
//! are one pipeline. `clear` walks the namespace with `SCAN MATCH` in batches and `UNLINK`s what it
//! finds, on every master of a cluster; it never uses `KEYS` or `FLUSHDB`.
//!
//! Runtime: connections, their driver tasks and every operation run on cachestack's own runtime
//! ([`crate::rt::handle`]). A caller on another runtime (or on none: any executor works) awaits
//! the operation's result there, so a synchronous caller blocking a single-threaded runtime never
//! starves the connection its own request needs, and a runtime that shuts down takes no
//! connection with it.

mod config;

pub(crate) use config::{config_from_url, valid_url_options};
pub use config::{RedisConfig, RedisTlsConfig};

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::{ClusterClientBuilder, ClusterConfig};
use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo, Slot};
use ::redis::{Cmd, ErrorKind, FromRedisValue, Pipeline, RedisError, ServerErrorKind, Value as Reply};
use async_trait::async_trait;
use futures_util::future::join_all;

use crate::error::{Error, Result};
use crate::expiry::{Deadline, Expiry as WriteExpiry};
use crate::store::{Backend, BackendStats, Counters, Entry};
use crate::value::envelope::remaining;
use crate::value::Value;

use config::{parse_server_url, ServerUrl};

/// Every key this backend writes starts with this, then the namespace and `:`.
const KEY_PREFIX: &str = "cachestack:";

/// Keys per pipeline in bulk operations (larger batches are split and sent concurrently).
const MAX_KEYS_PER_PIPELINE: usize = 500;

/// The longest TTL sent to Redis (100 years); longer ones are capped, `PX` must fit in an i64
/// once Redis adds its clock.
const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

const STATE_UNKNOWN: u8 = 0;
const STATE_CONNECTED: u8 = 1;
const STATE_DOWN: u8 = 2;

/// A cache in Redis: a single server, a TLS server (`rediss://`, feature `redis-tls`), or a Redis
/// Cluster (`redis+cluster://`).
///
/// Construction never blocks and never fails because the server is down: the connection is
/// opened on first use and reopened after failures, so an unreachable server shows up as
/// per-operation errors ([`Error::BackendUnavailable`], [`Error::Timeout`]), or as misses in
/// `silent` mode, and caching resumes by itself once the server is back. Use
/// [`RedisBackend::connect`] to check the server up front instead.
///
/// Every operation returns within [`RedisConfig::timeout`].
///
/// ```no_run
/// use std::time::Duration;
/// use cachestack::{Cache, RedisBackend, RedisConfig};
///
/// # async fn demo() -> cachestack::Result<()> {
/// let backend = RedisBackend::new(RedisConfig {
///     namespace: "users".into(),
///     default_ttl: Some(Duration::from_secs(600)),
///     ..RedisConfig::new("redis://127.0.0.1:6379/0")
/// })?;
/// let cache = Cache::new(backend);
/// cache.set("user:1", &"Ada".to_string(), None).await?;
/// assert_eq!(cache.get::<String>("user:1").await?.as_deref(), Some("Ada"));
///
/// // The same from a URL, as the registry builds it:
/// let cluster = Cache::from_arc(cachestack::backend_from_url(
///     "redis+cluster://10.0.0.1:7000,10.0.0.2:7000?namespace=users&ttl=10m",
/// )?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    config: RedisConfig,
    server: ServerUrl,
    /// `cachestack:<namespace>:`
    prefix: String,
    /// The `SCAN MATCH` pattern for this namespace, glob characters escaped.
    pattern: String,
    counters: Counters,
    rt: tokio::runtime::Handle,
    state: AtomicU8,
    /// Server details for stats, refreshed whenever a connection is (re)established.
    details: Mutex<BTreeMap<String, String>>,
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("name", &self.inner.config.name)
            .field("url", &self.inner.server.display)
            .field("cluster", &self.inner.server.cluster)
            .field("namespace", &self.inner.config.namespace)
            .finish()
    }
}

impl RedisBackend {
    /// A backend for the server or cluster `config` names. Checks the configuration and returns
    /// at once: the connection opens on first use (see the type's documentation).
    ///
    /// Fails with [`Error::Config`] for a bad URL or setting, and with
    /// [`Error::FeatureDisabled`] for `rediss://` without the `redis-tls` feature.
    pub fn new(config: RedisConfig) -> Result<Self> {
        config.validate()?;
        let server = parse_server_url(&config.url, config.cluster)?;
        if !server.tls && (config.tls.ca_file.is_some() || config.tls.client_cert_file.is_some()) {
            return Err(Error::config(format!(
                "redis URL `{}`: TLS certificates are set but the URL is not rediss://",
                server.display
            )));
        }
        let rt = crate::rt::handle()?;
        let conn = open_connection(&server, &config, &rt)?;
        let prefix = format!("{KEY_PREFIX}{}:", config.namespace);
        let pattern = format!("{}*", escape_glob(&prefix));
        Ok(RedisBackend {
            inner: Arc::new(Inner {
                conn,
                config,
                server,
                prefix,
                pattern,
                counters: Counters::default(),
                rt,
                state: AtomicU8::new(STATE_UNKNOWN),
                details: Mutex::new(BTreeMap::new()),
            }),
        })
    }

    /// A backend from a cache URL (see [`RedisConfig::from_url`]), connecting lazily.
    ///
    /// ```
    /// let backend = cachestack::RedisBackend::from_url("redis://127.0.0.1:6379/0?namespace=docs").unwrap();
    /// assert_eq!(backend.redis_key("k"), "cachestack:docs:k");
    /// ```
    pub fn from_url(url: &str) -> Result<Self> {
        Self::new(RedisConfig::from_url(url)?)
    }

    /// Like [`RedisBackend::new`], then checks that the server answers (`PING`, on every master
    /// of a cluster), failing with [`Error::BackendUnavailable`] or [`Error::Timeout`] if not.
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        let backend = Self::new(config)?;
        backend.ping().await?;
        Ok(backend)
    }

    /// The settings this backend runs with.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// The Redis key under which `key` is stored: `cachestack:<namespace>:<key>`.
    pub fn redis_key(&self, key: &str) -> String {
        self.inner.redis_key(key)
    }

    /// Sends `PING` (to every master of a cluster).
    pub async fn ping(&self) -> Result<()> {
        let inner = self.inner.clone();
        self.run(Some(self.inner.config.timeout), async move {
            match &inner.conn {
                Conn::Single(_) => inner.query::<String>(&::redis::cmd("PING")).await.map(drop),
                Conn::Cluster(_) => inner.masters().await.map(drop),
            }
        })
        .await
    }

    /// Asks the server for the details shown in [`Backend::stats`] (server version and mode; for
    /// a cluster its state, masters and known nodes), stores them for `stats`, and returns them.
    pub async fn server_info(&self) -> Result<BTreeMap<String, String>> {
        let inner = self.inner.clone();
        self.run(Some(self.inner.config.timeout), async move { inner.refresh_details().await }).await
    }

    /// Runs `op` on cachestack's runtime within `timeout`, and records whether the server answered.
    async fn run<T, F>(&self, timeout: Option<Duration>, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let inner = self.inner.clone();
        let task = async move {
            let result = match timeout {
                Some(limit) => match tokio::time::timeout(limit, op).await {
                    Ok(result) => result,
                    Err(_) => Err(Error::Timeout { backend: inner.config.name.clone(), after: limit }),
                },
                None => op.await,
            };
            match &result {
                Ok(_) => inner.mark_connected(),
                Err(err) if err.is_unavailable() => inner.state.store(STATE_DOWN, Ordering::Relaxed),
                Err(_) => {}
            }
            result
        };
        on_runtime(&self.inner.rt, &self.inner.config.name, task).await
    }

    /// Seals `value` for `key`, or explains why it cannot be stored.
    fn seal(&self, full_key: &str, value: &Value, ttl: Option<Duration>) -> Result<Vec<u8>> {
        let expires = ttl.and_then(|t| SystemTime::now().checked_add(t));
        self.inner.config.format.seal(full_key, value, expires)
    }

    fn finish_get(&self, result: Result<Option<Entry>>) -> Result<Option<Entry>> {
        let counters = &self.inner.counters;
        let silent = self.inner.config.silent;
        match &result {
            Ok(found) => counters.record_lookup(found.is_some()),
            Err(_) if silent => counters.record_lookup(false),
            Err(_) => {}
        }
        counters.absorb(&self.inner.config.name, "get", silent, result, || None)
    }

    fn absorb<T>(&self, op: &'static str, result: Result<T>, fallback: impl FnOnce() -> T) -> Result<T> {
        self.inner.counters.absorb(&self.inner.config.name, op, self.inner.config.silent, result, fallback)
    }
}

/// What a write does with its TTL.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expiry {
    /// No expiry.
    Never,
    /// `PX` milliseconds.
    Millis(u64),
    /// A zero TTL: the entry is gone at once, so the write removes the key.
    Now,
}

fn expiry_for(ttl: Option<Duration>) -> Expiry {
    match ttl {
        None => Expiry::Never,
        Some(t) if t.is_zero() => Expiry::Now,
        // Round up: a 1.5 ms TTL lives 2 ms, never 1 (and never 0, which Redis refuses).
        Some(t) => Expiry::Millis(u64::try_from(t.as_micros().div_ceil(1000)).unwrap_or(u64::MAX).clamp(1, MAX_TTL_MS)),
    }
}

fn set_command(pipe: &mut Pipeline, key: &str, bytes: &[u8], expiry: Expiry) {
    match expiry {
        Expiry::Never => pipe.cmd("SET").arg(key).arg(bytes).ignore(),
        Expiry::Millis(ms) => pipe.cmd("SET").arg(key).arg(bytes).arg("PX").arg(ms).ignore(),
        Expiry::Now => pipe.cmd("DEL").arg(key).ignore(),
    };
}

#[async_trait]
impl Backend for RedisBackend {
    fn name(&self) -> &str {
        &self.inner.config.name
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        let full = self.inner.redis_key(key);
        let inner = self.inner.clone();
        let reply = self
            .run(Some(self.inner.config.timeout), async move {
                // MGET rather than GET: a key of another Redis type (a hash another program
                // wrote) reads as nil instead of failing with WRONGTYPE.
                let mut pipe = ::redis::pipe();
                pipe.cmd("MGET").arg(&full).cmd("PTTL").arg(&full);
                let (mut bytes, pttl): (Vec<Option<Vec<u8>>>, i64) = inner.query_pipe(&pipe).await?;
                Ok((full, bytes.pop().flatten(), pttl))
            })
            .await;
        // Decoding runs on the caller's thread, not on the runtime's two I/O workers.
        let result = reply.map(|(full, bytes, pttl)| self.inner.read(key, &full, bytes, pttl, SystemTime::now()));
        self.finish_get(result)
    }

    async fn set(&self, key: &str, value: Value, expiry: WriteExpiry) -> Result<()> {
        let ttl = expiry.legacy_ttl();
        let full = self.inner.redis_key(key);
        let ttl = ttl.or(self.inner.config.default_ttl);
        let expiry = expiry_for(ttl);
        let result = match self.seal(&full, &value, ttl) {
            Err(err) => Err(err),
            Ok(bytes) => {
                let inner = self.inner.clone();
                self.run(Some(self.inner.config.timeout), async move {
                    let mut pipe = ::redis::pipe();
                    set_command(&mut pipe, &full, &bytes, expiry);
                    inner.query_pipe::<()>(&pipe).await
                })
                .await
            }
        };
        if result.is_ok() {
            self.inner.counters.record_write();
        }
        self.absorb("set", result, || ())
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.inner.counters.record_delete();
        let full = self.inner.redis_key(key);
        let inner = self.inner.clone();
        let result = self
            .run(Some(self.inner.config.timeout), async move {
                inner.query::<i64>(::redis::cmd("DEL").arg(&full)).await.map(|n| n > 0)
            })
            .await;
        self.absorb("delete", result, || false)
    }

    /// `EXISTS`: true while Redis holds the key (it does not read or check the value).
    async fn exists(&self, key: &str) -> Result<bool> {
        let full = self.inner.redis_key(key);
        let inner = self.inner.clone();
        let result = self
            .run(Some(self.inner.config.timeout), async move {
                inner.query::<i64>(::redis::cmd("EXISTS").arg(&full)).await.map(|n| n > 0)
            })
            .await;
        self.absorb("exists", result, || false)
    }

    async fn clear(&self) -> Result<()> {
        let inner = self.inner.clone();
        // No overall deadline: each SCAN and UNLINK round trip has its own.
        let result = self.run(None, async move { inner.clear_namespace().await }).await;
        self.absorb("clear", result, || ())
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let full: Vec<String> = keys.iter().map(|k| self.inner.redis_key(k)).collect();
        let inner = self.inner.clone();
        let reply = self
            .run(Some(self.inner.config.timeout), async move {
                let groups = inner.groups(&full);
                let replies = join_all(groups.iter().map(|group| {
                    let mut pipe = ::redis::pipe();
                    pipe.cmd("MGET");
                    for &i in group {
                        pipe.arg(&full[i]);
                    }
                    for &i in group {
                        pipe.cmd("PTTL").arg(&full[i]);
                    }
                    let inner = &inner;
                    async move { inner.query_pipe::<Vec<Reply>>(&pipe).await }
                }))
                .await;
                let mut found: Vec<(Option<Vec<u8>>, i64)> = vec![(None, -2); full.len()];
                for (group, reply) in groups.iter().zip(replies) {
                    let mut reply = reply?.into_iter();
                    let values: Vec<Option<Vec<u8>>> = inner.parse(reply.next().unwrap_or(Reply::Nil))?;
                    let pttls: Vec<i64> = reply.map(|r| inner.parse(r)).collect::<Result<_>>()?;
                    if values.len() != group.len() || pttls.len() != group.len() {
                        return Err(inner.generic(format!(
                            "MGET/PTTL pipeline answered {} values and {} TTLs for {} keys",
                            values.len(),
                            pttls.len(),
                            group.len()
                        )));
                    }
                    for ((&i, value), pttl) in group.iter().zip(values).zip(pttls) {
                        found[i] = (value, pttl);
                    }
                }
                Ok((full, found))
            })
            .await;
        let result = reply.map(|(full, found)| {
            let now = SystemTime::now();
            keys.iter()
                .zip(full.iter().zip(found))
                .map(|(key, (full, (bytes, pttl)))| self.inner.read(key, full, bytes, pttl, now))
                .collect::<Vec<_>>()
        });
        let counters = &self.inner.counters;
        let silent = self.inner.config.silent;
        match &result {
            Ok(found) => {
                counters.record_lookups(found.len() as u64, found.iter().filter(|e| e.is_some()).count() as u64)
            }
            Err(_) if silent => counters.record_lookups(keys.len() as u64, 0),
            Err(_) => {}
        }
        let n = keys.len();
        self.absorb("get_many", result, || vec![None; n])
    }

    async fn set_many(&self, entries: &[(&str, Value)], expiry: WriteExpiry) -> Result<()> {
        let ttl = expiry.legacy_ttl();
        if entries.is_empty() {
            return Ok(());
        }
        let ttl = ttl.or(self.inner.config.default_ttl);
        let expiry = expiry_for(ttl);
        let sealed: Result<Vec<(String, Vec<u8>)>> = entries
            .iter()
            .map(|(key, value)| {
                let full = self.inner.redis_key(key);
                let bytes = self.seal(&full, value, ttl)?;
                Ok((full, bytes))
            })
            .collect();
        let result = match sealed {
            Err(err) => Err(err),
            Ok(sealed) => {
                let inner = self.inner.clone();
                self.run(Some(self.inner.config.timeout), async move {
                    let keys: Vec<&str> = sealed.iter().map(|(k, _)| k.as_str()).collect();
                    let groups = inner.groups_of(&keys);
                    let replies = join_all(groups.iter().map(|group| {
                        let mut pipe = ::redis::pipe();
                        for &i in group {
                            set_command(&mut pipe, &sealed[i].0, &sealed[i].1, expiry);
                        }
                        let inner = &inner;
                        async move { inner.query_pipe::<()>(&pipe).await }
                    }))
                    .await;
                    replies.into_iter().collect::<Result<Vec<()>>>().map(drop)
                })
                .await
            }
        };
        if result.is_ok() {
            self.inner.counters.record_writes(entries.len() as u64);
        }
        self.absorb("set_many", result, || ())
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.inner.counters.record_deletes(keys.len() as u64);
        let full: Vec<String> = keys.iter().map(|k| self.inner.redis_key(k)).collect();
        let inner = self.inner.clone();
        let result = self
            .run(Some(self.inner.config.timeout), async move {
                let groups = inner.groups(&full);
                let replies = join_all(groups.iter().map(|group| {
                    let mut cmd = ::redis::cmd("DEL");
                    for &i in group {
                        cmd.arg(&full[i]);
                    }
                    let inner = &inner;
                    async move { inner.query::<u64>(&cmd).await }
                }))
                .await;
                replies.into_iter().sum::<Result<u64>>()
            })
            .await;
        self.absorb("delete_many", result, || 0)
    }

    fn stats(&self) -> BackendStats {
        let inner = &self.inner;
        let mut stats = inner.counters.snapshot(&inner.config.name);
        stats.details.insert("backend".into(), "redis".into());
        stats.details.insert("url".into(), inner.server.display.clone());
        stats.details.insert("mode".into(), if inner.server.cluster { "cluster" } else { "single" }.into());
        stats.details.insert("tls".into(), inner.server.tls.to_string());
        stats.details.insert("namespace".into(), inner.config.namespace.clone());
        let connected = match inner.state.load(Ordering::Relaxed) {
            STATE_CONNECTED => "true",
            STATE_DOWN => "false",
            _ => "not yet",
        };
        stats.details.insert("connected".into(), connected.into());
        if let Some(ttl) = inner.config.default_ttl {
            stats.details.insert("default_ttl".into(), crate::ttl::format_ttl(ttl));
        }
        stats.details.insert("codec".into(), inner.config.format.codec.name().into());
        if let Ok(details) = inner.details.lock() {
            stats.details.extend(details.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        stats
    }
}

impl Inner {
    fn redis_key(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.prefix.len() + key.len());
        full.push_str(&self.prefix);
        full.push_str(key);
        full
    }

    /// What an `MGET` + `PTTL` read found: an entry with its remaining TTL, or a miss.
    fn read(&self, key: &str, full_key: &str, bytes: Option<Vec<u8>>, pttl: i64, now: SystemTime) -> Option<Entry> {
        match bytes {
            Some(bytes) => self.open(key, full_key, &bytes, pttl, now),
            // Nil from MGET while PTTL sees the key: it holds another Redis type.
            None if pttl != -2 => {
                let err = Error::invalid("the key holds a value of another Redis type, not a string");
                self.counters.record_invalid(&self.config.name, key, &err);
                None
            }
            None => None,
        }
    }

    /// Opens stored bytes: an entry with its remaining TTL, or a miss (expired, deleted between
    /// the `MGET` and the `PTTL`, or unreadable: counted as an error).
    fn open(&self, key: &str, full_key: &str, bytes: &[u8], pttl: i64, now: SystemTime) -> Option<Entry> {
        // -2: the key vanished (expired or deleted) between the GET and the PTTL.
        if pttl == -2 {
            return None;
        }
        match self.config.format.open(full_key, bytes) {
            Err(err) => {
                self.counters.record_invalid(&self.config.name, key, &err);
                None
            }
            Ok((value, expires)) => {
                let server = u64::try_from(pttl).ok().map(Duration::from_millis);
                let written = remaining(expires, now);
                let ttl = match (server, written) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                if ttl.is_some_and(|t| t.is_zero()) {
                    return None;
                }
                Some(Entry::new(value, ttl.map(Deadline::after)))
            }
        }
    }

    fn mark_connected(self: &Arc<Self>) {
        if self.state.swap(STATE_CONNECTED, Ordering::Relaxed) != STATE_CONNECTED {
            // A (re)connection: refresh the server details shown in stats, in the background.
            let inner = self.clone();
            self.rt.spawn(async move {
                let _ = tokio::time::timeout(inner.config.timeout, inner.refresh_details()).await;
            });
        }
    }

    fn map_err(&self, err: RedisError) -> Error {
        let backend = self.config.name.clone();
        if err.is_timeout() {
            return Error::Timeout { backend, after: self.config.timeout };
        }
        let unavailable = err.is_io_error()
            || err.is_connection_refusal()
            || err.is_connection_dropped()
            || err.is_unrecoverable_error()
            || matches!(
                err.kind(),
                ErrorKind::ClusterConnectionNotFound
                    | ErrorKind::Server(
                        ServerErrorKind::BusyLoading
                            | ServerErrorKind::TryAgain
                            | ServerErrorKind::ClusterDown
                            | ServerErrorKind::MasterDown
                    )
            );
        if unavailable {
            Error::BackendUnavailable { backend, source: Box::new(err) }
        } else {
            Error::Generic { backend, source: Box::new(err) }
        }
    }

    fn generic(&self, message: String) -> Error {
        Error::Generic { backend: self.config.name.clone(), source: message.into() }
    }

    fn parse<T: FromRedisValue>(&self, reply: Reply) -> Result<T> {
        ::redis::from_redis_value(reply).map_err(|e| self.generic(format!("unexpected reply from Redis: {e}")))
    }

    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T> {
        let result = match &self.conn {
            Conn::Single(c) => cmd.query_async(&mut c.clone()).await,
            Conn::Cluster(c) => cmd.query_async(&mut c.clone()).await,
        };
        result.map_err(|e| self.map_err(e))
    }

    async fn query_pipe<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T> {
        let result = match &self.conn {
            Conn::Single(c) => pipe.query_async(&mut c.clone()).await,
            Conn::Cluster(c) => pipe.query_async(&mut c.clone()).await,
        };
        result.map_err(|e| self.map_err(e))
    }

    async fn route(&self, cmd: Cmd, routing: RoutingInfo) -> Result<Reply> {
        match &self.conn {
            Conn::Cluster(c) => c.clone().route_command(cmd, routing).await.map_err(|e| self.map_err(e)),
            Conn::Single(c) => cmd.query_async(&mut c.clone()).await.map_err(|e| self.map_err(e)),
        }
    }

    fn groups(&self, keys: &[String]) -> Vec<Vec<usize>> {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.groups_of(&keys)
    }

    /// Indices of `keys` grouped so that each group is one pipeline: by hash slot on a cluster
    /// (a multi-key command or pipeline never spans slots), all together on a single server; and
    /// at most [`MAX_KEYS_PER_PIPELINE`] keys a group.
    fn groups_of(&self, keys: &[&str]) -> Vec<Vec<usize>> {
        let groups: Vec<Vec<usize>> = match self.conn {
            Conn::Single(_) => vec![(0..keys.len()).collect()],
            Conn::Cluster(_) => {
                let mut by_slot: HashMap<Slot, Vec<usize>> = HashMap::new();
                for (i, key) in keys.iter().enumerate() {
                    by_slot.entry(Slot::for_key(key.as_bytes())).or_default().push(i);
                }
                by_slot.into_values().collect()
            }
        };
        groups
            .into_iter()
            .flat_map(|g| g.chunks(MAX_KEYS_PER_PIPELINE).map(<[usize]>::to_vec).collect::<Vec<_>>())
            .collect()
    }

    /// Runs one step of a long operation within the per-round-trip timeout.
    async fn step<T>(&self, fut: impl Future<Output = Result<T>>) -> Result<T> {
        let limit = self.config.timeout;
        tokio::time::timeout(limit, fut)
            .await
            .unwrap_or_else(|_| Err(Error::Timeout { backend: self.config.name.clone(), after: limit }))
    }

    async fn clear_namespace(&self) -> Result<()> {
        match &self.conn {
            Conn::Single(_) => self.clear_node(None).await,
            Conn::Cluster(_) => {
                let masters = self.step(self.masters()).await?;
                let results = join_all(masters.into_iter().map(|node| self.clear_node(Some(node)))).await;
                results.into_iter().collect::<Result<Vec<()>>>().map(drop)
            }
        }
    }

    /// Scans one server (the single server, or one cluster master) for this namespace's keys and
    /// unlinks them batch by batch.
    async fn clear_node(&self, node: Option<(String, u16)>) -> Result<()> {
        let mut cursor: u64 = 0;
        loop {
            let mut scan = ::redis::cmd("SCAN");
            scan.arg(cursor).arg("MATCH").arg(&self.pattern).arg("COUNT").arg(self.config.scan_batch);
            let reply = match &node {
                None => self.step(self.query::<Reply>(&scan)).await?,
                Some((host, port)) => {
                    let routing =
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host: host.clone(), port: *port });
                    self.step(self.route(scan, routing)).await?
                }
            };
            let (next, keys): (u64, Vec<Vec<u8>>) = self.parse(reply)?;
            if !keys.is_empty() {
                self.step(self.unlink(keys)).await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    async fn unlink(&self, keys: Vec<Vec<u8>>) -> Result<()> {
        let groups: Vec<Vec<usize>> = match self.conn {
            Conn::Single(_) => vec![(0..keys.len()).collect()],
            Conn::Cluster(_) => {
                let mut by_slot: HashMap<Slot, Vec<usize>> = HashMap::new();
                for (i, key) in keys.iter().enumerate() {
                    by_slot.entry(Slot::for_key(key)).or_default().push(i);
                }
                by_slot.into_values().collect()
            }
        };
        let replies = join_all(groups.iter().map(|group| {
            let mut cmd = ::redis::cmd("UNLINK");
            for &i in group {
                cmd.arg(&keys[i]);
            }
            async move { self.query::<u64>(&cmd).await }
        }))
        .await;
        replies.into_iter().collect::<Result<Vec<u64>>>().map(drop)
    }

    /// The masters of the cluster as `(host, port)`, checked against the cluster's own count:
    /// a master the client is not connected to is an error, never silently skipped.
    async fn masters(&self) -> Result<Vec<(String, u16)>> {
        let all_masters = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
        let reply = self.route(::redis::cmd("PING"), all_masters).await?;
        let Reply::Map(pairs) = reply else {
            return Err(self.generic(format!("unexpected reply to PING on all masters: {reply:?}")));
        };
        let mut masters = Vec::with_capacity(pairs.len());
        for (address, answer) in pairs {
            let address: String = self.parse(address)?;
            if let Reply::ServerError(err) = answer {
                return Err(self.map_err(RedisError::from(err)));
            }
            let Some((host, port)) = address.rsplit_once(':').and_then(|(h, p)| Some((h.to_string(), p.parse().ok()?)))
            else {
                return Err(self.generic(format!("unexpected node address `{address}`")));
            };
            masters.push((host, port));
        }
        let info: String = self.query(::redis::cmd("CLUSTER").arg("INFO")).await?;
        let size = info_field(&info, "cluster_size").and_then(|s| s.parse::<usize>().ok());
        if let Some(size) = size {
            if masters.len() < size {
                return Err(Error::BackendUnavailable {
                    backend: self.config.name.clone(),
                    source: format!("reached {} of the cluster's {size} masters", masters.len()).into(),
                });
            }
        }
        Ok(masters)
    }

    async fn refresh_details(&self) -> Result<BTreeMap<String, String>> {
        let mut details = BTreeMap::new();
        let random = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
        let reply = self.route(::redis::cmd("INFO").arg("server").clone(), random.clone()).await?;
        let info: String = self.parse(reply)?;
        for (field, detail) in [("redis_version", "server_version"), ("redis_mode", "server_mode")] {
            if let Some(value) = info_field(&info, field) {
                details.insert(detail.to_string(), value.to_string());
            }
        }
        if let Conn::Cluster(_) = self.conn {
            let reply = self.route(::redis::cmd("CLUSTER").arg("INFO").clone(), random).await?;
            let info: String = self.parse(reply)?;
            for (field, detail) in [
                ("cluster_state", "cluster_state"),
                ("cluster_size", "cluster_masters"),
                ("cluster_known_nodes", "cluster_known_nodes"),
            ] {
                if let Some(value) = info_field(&info, field) {
                    details.insert(detail.to_string(), value.to_string());
                }
            }
        }
        if let Ok(mut stored) = self.details.lock() {
            stored.clone_from(&details);
        }
        Ok(details)
    }
}

/// The value of `field` in an `INFO`-style `field:value` text.
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|line| line.trim().strip_prefix(field)?.strip_prefix(':'))
}

/// Escapes Redis glob characters so that `SCAN MATCH` takes `text` literally.
fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Runs `task` on cachestack's runtime and waits for it from wherever the caller is: directly
/// when the caller already runs there, otherwise as a spawned task (aborted if the caller stops
/// waiting).
async fn on_runtime<T: Send + 'static>(
    rt: &tokio::runtime::Handle,
    backend: &str,
    task: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    if tokio::runtime::Handle::try_current().is_ok_and(|current| current.id() == rt.id()) {
        return task.await;
    }
    let mut handle = AbortOnDrop(rt.spawn(task));
    match (&mut handle.0).await {
        Ok(result) => result,
        Err(err) => Err(Error::Generic {
            backend: backend.to_string(),
            source: format!("a redis operation did not complete on cachestack's runtime: {err}").into(),
        }),
    }
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Builds the (lazy) connection on cachestack's runtime, so that its tasks live there.
fn open_connection(server: &ServerUrl, config: &RedisConfig, rt: &tokio::runtime::Handle) -> Result<Conn> {
    let config_error = |e: RedisError| Error::config(format!("redis URL `{}`: {e}", server.display));
    #[cfg(feature = "redis-tls")]
    let certs = tls_certificates(server, config)?;
    #[cfg(not(feature = "redis-tls"))]
    refuse_tls(server)?;
    let _entered = rt.enter();
    if server.cluster {
        let builder = ClusterClientBuilder::new(server.nodes.clone())
            .connection_timeout(config.connect_timeout)
            .response_timeout(config.timeout)
            .retries(3)
            .min_retry_wait(10)
            .max_retry_wait(200);
        #[cfg(feature = "redis-tls")]
        let builder = match certs {
            Some(certs) => builder.certs(certs),
            None => builder,
        };
        let client = builder.build().map_err(config_error)?;
        let cluster_config =
            ClusterConfig::new().set_connection_timeout(config.connect_timeout).set_response_timeout(config.timeout);
        Ok(Conn::Cluster(client.get_pending_async_connection_with_config(cluster_config)))
    } else {
        let node = server.nodes.first().ok_or_else(|| Error::config("redis: no host given"))?;
        #[cfg(feature = "redis-tls")]
        let client = match certs {
            Some(certs) => ::redis::Client::build_with_tls(node.as_str(), certs),
            None => ::redis::Client::open(node.as_str()),
        };
        #[cfg(not(feature = "redis-tls"))]
        let client = ::redis::Client::open(node.as_str());
        let client = client.map_err(config_error)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.timeout))
            // A failed reconnection is retried once after a short pause, then the next operation
            // starts a new one: a restarted server is picked up within a fraction of a second.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(client, manager_config).map_err(config_error)?;
        Ok(Conn::Single(manager))
    }
}

/// Reads the TLS files of a `rediss://` server.
#[cfg(feature = "redis-tls")]
fn tls_certificates(server: &ServerUrl, config: &RedisConfig) -> Result<Option<::redis::TlsCertificates>> {
    let tls = &config.tls;
    let any_file = tls.ca_file.is_some() || tls.client_cert_file.is_some();
    if !server.tls {
        return Ok(None);
    }
    // rustls needs a process-wide crypto provider; install ring's unless the application chose one.
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    if !any_file {
        return Ok(None);
    }
    let read = |what: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| Error::config(format!("redis TLS: cannot read the {what} file {}: {e}", path.display())))
    };
    let root_cert = tls.ca_file.as_deref().map(|p| read("CA certificate", p)).transpose()?;
    let client_tls = match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(cert), Some(key)) => Some(::redis::ClientTlsConfig {
            client_cert: read("client certificate", cert)?,
            client_key: read("client key", key)?,
        }),
        _ => None,
    };
    Ok(Some(::redis::TlsCertificates { client_tls, root_cert }))
}

#[cfg(not(feature = "redis-tls"))]
fn refuse_tls(server: &ServerUrl) -> Result<()> {
    if server.tls {
        let scheme = if server.cluster { "rediss+cluster" } else { "rediss" };
        return Err(Error::FeatureDisabled { scheme: scheme.into(), feature: "redis-tls" });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_become_milliseconds_rounded_up() {
        assert_eq!(expiry_for(None), Expiry::Never);
        assert_eq!(expiry_for(Some(Duration::ZERO)), Expiry::Now);
        assert_eq!(expiry_for(Some(Duration::from_micros(1))), Expiry::Millis(1));
        assert_eq!(expiry_for(Some(Duration::from_micros(1500))), Expiry::Millis(2));
        assert_eq!(expiry_for(Some(Duration::from_secs(5))), Expiry::Millis(5000));
        assert_eq!(expiry_for(Some(Duration::MAX)), Expiry::Millis(MAX_TTL_MS));
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(escape_glob("cachestack:a*b?[c]\\d:"), "cachestack:a\\*b\\?\\[c\\]\\\\d:");
        assert_eq!(escape_glob("plain-ns:"), "plain-ns:");
    }

    #[test]
    fn info_fields_are_read() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n";
        assert_eq!(info_field(info, "redis_version"), Some("7.0.15"));
        assert_eq!(info_field(info, "redis_mode"), Some("standalone"));
        assert_eq!(info_field(info, "redis"), None);
    }

    #[test]
    fn construction_is_lazy_and_never_blocks() {
        // Nothing listens on port 1: building the backend still succeeds at once.
        let backend = RedisBackend::from_url("redis://127.0.0.1:1/0?namespace=lazy&timeout=200ms").unwrap();
        assert_eq!(backend.redis_key("k"), "cachestack:lazy:k");
        assert_eq!(backend.stats().details["connected"], "not yet");
        let cluster = RedisBackend::from_url("redis+cluster://127.0.0.1:1,127.0.0.1:2?namespace=lazy").unwrap();
        assert_eq!(cluster.stats().details["mode"], "cluster");
    }

    #[test]
    fn passwords_never_show() {
        let backend = RedisBackend::from_url("redis://app:hunter2@127.0.0.1:1/0").unwrap();
        let shown = format!("{backend:?} {:?} {:?}", backend.stats(), backend.config());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("app:***@"), "{shown}");
    }

    #[cfg(not(feature = "redis-tls"))]
    #[test]
    fn tls_needs_its_feature() {
        match RedisBackend::from_url("rediss://127.0.0.1:1/0") {
            Err(Error::FeatureDisabled { feature, .. }) => assert_eq!(feature, "redis-tls"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tls_files_need_a_tls_url() {
        let err = RedisBackend::from_url("redis://127.0.0.1:1/0?tls_ca=/nonexistent.pem").unwrap_err();
        assert!(err.to_string().contains("not rediss://"), "{err}");
    }

    #[cfg(feature = "redis-tls")]
    #[test]
    fn tls_files_are_checked() {
        let err = RedisBackend::from_url("rediss://127.0.0.1:1/0?tls_ca=/nonexistent/ca.pem").unwrap_err();
        assert!(err.to_string().contains("cannot read the CA certificate file /nonexistent/ca.pem"), "{err}");
        RedisBackend::from_url("rediss://127.0.0.1:1/0").unwrap();
    }

    #[test]
    fn unreachable_servers_are_unavailable_errors_or_silent_misses() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let backend = RedisBackend::from_url("redis://127.0.0.1:1/0?timeout=300ms&connect_timeout=200ms").unwrap();
            let err = backend.get("k").await.unwrap_err();
            assert!(err.is_unavailable(), "{err:?}");
            assert!(backend.set("k", Value::new(1u8), crate::Expiry::Default).await.unwrap_err().is_unavailable());
            assert_eq!(backend.stats().details["connected"], "false");
            assert!(RedisBackend::connect(backend.config().clone()).await.unwrap_err().is_unavailable());

            let silent = RedisBackend::from_url("redis://127.0.0.1:1/0?timeout=300ms&silent=true").unwrap();
            assert!(silent.get("k").await.unwrap().is_none());
            silent.set("k", Value::new(1u8), crate::Expiry::Default).await.unwrap();
            assert_eq!(silent.get_many(&["a", "b"]).await.unwrap().len(), 2);
            let stats = silent.stats();
            assert_eq!((stats.misses, stats.errors), (3, 3), "{stats:?}");
        });
    }
}
