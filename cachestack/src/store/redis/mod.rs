//! Redis store on redis-rs: a single server through an auto-reconnecting multiplexed connection
//! (`ConnectionManager`), or a Redis Cluster through redis-rs's async cluster client.
//!
//! Layout: every entry is one Redis string under `cachestack:<namespace>:<key>`, holding the
//! shared value envelope ([`ValueFormat`](crate::ValueFormat)) with the entry's deadline sealed
//! in it, and expiring by Redis itself at that same deadline (`SET ... PXAT`, absolute, in
//! milliseconds). The deadline is fixed when the caller writes and never moves: a write that
//! reaches Redis late does not live longer, and a read returns the deadline the writer sealed
//! and treats an envelope past it as a miss. (Deadlines are wall-clock time: hosts sharing a
//! Redis should keep their clocks in sync, as NTP does.)
//!
//! Bulk operations are one pipeline (`MGET` + `EXISTS`, `SET`s, `DEL`) per hash slot on a
//! cluster, sent concurrently, so multi-key commands never fail with `CROSSSLOT`; on a single
//! server they are one pipeline. `clear` walks the namespace with `SCAN MATCH` in batches and
//! `UNLINK`s what it finds, on every master of a cluster; it never uses `KEYS` or `FLUSHDB`.
//!
//! A connection that stops answering (requests time out, nothing closes it: a half-open
//! connection after a silent failover) is replaced by a new one after two requests in a row get
//! no answer (`store::recycle`); redis-rs itself reconnects only when a connection breaks.
//!
//! The store does I/O only: its round trips run on cachestack's runtime ([`crate::rt::io`]),
//! sealing and opening values on the caller's side; silent mode and the operation timeout are
//! layers ([`crate::layer`]), which [`RedisBackend`] puts in front of the [`RedisStore`].
//!
//! Files: `config` (settings, URLs), `conn` (connection, commands, errors), `ops` (the cache
//! operations), `admin` (clear, masters, server details).

mod admin;
mod atomic;
mod config;
mod conn;
mod lock;
mod ops;

pub(crate) use config::SCHEME;
pub use config::{RedisConfig, RedisTlsConfig};

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::layer::{within, Layered};
use crate::store::{BackendStats, Counters};

use crate::store::recycle::Recycler;
use admin::escape_glob;
use config::{parse_server_url, ServerUrl};
use conn::{recycled_connection, Conn, Link};

/// Every key this store writes starts with this, then the namespace and `:`.
const KEY_PREFIX: &str = "cachestack:";

/// A cache in Redis: a single server, a TLS server (`rediss://`, feature `redis-tls`), or a Redis
/// Cluster (`redis+cluster://`), behind its layers: silent mode
/// ([`settings.silent`](crate::StoreSettings::silent)) and the operation timeout
/// ([`timeouts.operation`](crate::ServerTimeouts::operation)). The store's own methods
/// ([`RedisStore::redis_key`], [`RedisStore::ping`], ...) are reachable through it.
///
/// Construction never blocks and never fails because the server is down: the connection is
/// opened on first use and reopened after failures, so an unreachable server shows up as
/// per-operation errors ([`Error::BackendUnavailable`], [`Error::Timeout`]), or as misses in
/// `silent` mode, and caching resumes by itself once the server is back. A connection that stops
/// answering without closing (half-open after a silent failover) is replaced after two requests
/// in a row get no answer, and its socket has TCP keepalive and `TCP_USER_TIMEOUT` (Linux) so
/// the kernel notices a dead peer within seconds too. Use [`RedisBackend::connect`] to check the
/// server up front instead.
///
/// Every operation returns within [`timeouts.operation`](crate::ServerTimeouts::operation).
///
/// ```no_run
/// use std::time::Duration;
/// use cachestack::{Cache, RedisBackend, RedisConfig};
///
/// # async fn demo() -> cachestack::Result<()> {
/// let backend = RedisBackend::new(
///     RedisConfig::new("redis://127.0.0.1:6379/0").with_namespace("users").with_default_ttl(Duration::from_secs(600)),
/// )?;
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
pub type RedisBackend = Layered<RedisStore>;

/// The Redis store without its layers: I/O only. Failures are returned as they come (no silent
/// mode, no operation timeout: see [`RedisBackend`], which adds them).
///
/// ```
/// use cachestack::{Backend, RedisBackend, RedisStore};
///
/// let backend = RedisBackend::from_url("redis://127.0.0.1:6379/0?namespace=docs&silent=true").unwrap();
/// let store: &RedisStore = &backend;
/// assert_eq!(store.redis_key("k"), "cachestack:docs:k");
/// assert!(backend.layers().silent);
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The connection, replaced when it stops answering.
    conn: Recycler<Conn>,
    config: RedisConfig,
    server: ServerUrl,
    /// `cachestack:<namespace>:`
    prefix: String,
    /// The `SCAN MATCH` pattern for this namespace, glob characters escaped.
    pattern: String,
    counters: Counters,
    rt: tokio::runtime::Handle,
    link: Link,
    /// Server details for stats, refreshed whenever a connection is (re)established.
    details: Mutex<BTreeMap<String, String>>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("name", &self.inner.config.settings.name)
            .field("url", &self.inner.server.display)
            .field("cluster", &self.inner.server.cluster)
            .field("namespace", &self.inner.config.settings.namespace)
            .finish()
    }
}

impl Layered<RedisStore> {
    /// The store for the server or cluster `config` names, behind its layers (silent mode if
    /// [`settings.silent`](crate::StoreSettings::silent), and
    /// [`timeouts.operation`](crate::ServerTimeouts::operation) per operation). Checks the
    /// configuration and returns at once: the connection opens on first use.
    ///
    /// Fails with [`Error::Config`] for a bad URL or setting, and with
    /// [`Error::FeatureDisabled`] for `rediss://` without the `redis-tls` feature.
    ///
    /// ```
    /// use cachestack::{RedisBackend, RedisConfig};
    ///
    /// let backend = RedisBackend::new(RedisConfig::new("redis://127.0.0.1:6379/0").with_namespace("docs")).unwrap();
    /// assert_eq!(backend.layers().timeout, Some(backend.config().timeouts.operation));
    /// ```
    pub fn new(config: RedisConfig) -> Result<Self> {
        let layers = config.settings.layers(Some(config.timeouts.operation));
        Ok(Layered::wrap(RedisStore::new(config)?, layers))
    }

    /// The store from a cache URL (see [`RedisConfig::from_url`]), connecting lazily.
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
    ///
    /// ```no_run
    /// # async fn demo() -> cachestack::Result<()> {
    /// let backend = cachestack::RedisBackend::connect(cachestack::RedisConfig::new("redis://127.0.0.1:6379/0")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        let backend = Self::new(config)?;
        backend.ping().await?;
        Ok(backend)
    }
}

impl RedisStore {
    /// The store alone, without layers (see [`RedisBackend::new`] for the store with them).
    ///
    /// ```
    /// let store = cachestack::RedisStore::new(cachestack::RedisConfig::new("redis://127.0.0.1:6379/0")).unwrap();
    /// assert_eq!(store.redis_key("k"), "cachestack:default:k");
    /// ```
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
        let conn = recycled_connection(&server, &config, &rt)?;
        let prefix = format!("{KEY_PREFIX}{}:", config.settings.namespace);
        let pattern = format!("{}*", escape_glob(&prefix));
        Ok(RedisStore {
            inner: Arc::new(Inner {
                conn,
                config,
                server,
                prefix,
                pattern,
                counters: Counters::default(),
                rt,
                link: Link::default(),
                details: Mutex::new(BTreeMap::new()),
            }),
        })
    }

    /// The settings this store runs with.
    ///
    /// ```
    /// let backend = cachestack::RedisBackend::from_url("redis://127.0.0.1:6379/0?namespace=docs").unwrap();
    /// assert_eq!(backend.config().settings.namespace, "docs");
    /// ```
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// The Redis key under which `key` is stored: `cachestack:<namespace>:<key>`.
    ///
    /// ```
    /// let backend = cachestack::RedisBackend::from_url("redis://127.0.0.1:6379/0?namespace=docs").unwrap();
    /// assert_eq!(backend.redis_key("user:1"), "cachestack:docs:user:1");
    /// ```
    pub fn redis_key(&self, key: &str) -> String {
        self.inner.redis_key(key)
    }

    /// Sends `PING` (to every master of a cluster), within
    /// [`timeouts.operation`](crate::ServerTimeouts::operation).
    ///
    /// ```no_run
    /// # async fn demo() -> cachestack::Result<()> {
    /// cachestack::RedisBackend::from_url("redis://127.0.0.1:6379/0")?.ping().await?;
    /// # Ok(()) }
    /// ```
    pub async fn ping(&self) -> Result<()> {
        let inner = self.inner.clone();
        let ping = self.io(async move {
            match inner.server.cluster {
                false => inner.query::<String>(&::redis::cmd("PING")).await.map(drop),
                true => inner.masters().await.map(drop),
            }
        });
        within(&self.inner.config.settings.name, self.inner.config.timeouts.operation, ping).await
    }

    /// Asks the server for the details shown in [`Backend::stats`](crate::Backend::stats)
    /// (server version and mode; for a cluster its state, masters and known nodes), stores them
    /// for `stats`, and returns them; within [`timeouts.operation`](crate::ServerTimeouts::operation).
    ///
    /// ```no_run
    /// # async fn demo() -> cachestack::Result<()> {
    /// let info = cachestack::RedisBackend::from_url("redis://127.0.0.1:6379/0")?.server_info().await?;
    /// println!("Redis {}", info["server_version"]);
    /// # Ok(()) }
    /// ```
    pub async fn server_info(&self) -> Result<BTreeMap<String, String>> {
        let inner = self.inner.clone();
        let info = self.io(async move { inner.refresh_details().await });
        within(&self.inner.config.settings.name, self.inner.config.timeouts.operation, info).await
    }

    /// Runs the network part `op` of an operation on cachestack's runtime ([`crate::rt::io`]:
    /// dropping the returned future cancels it), and notes whether the server answered.
    async fn io<T: Send + 'static>(&self, op: impl Future<Output = Result<T>> + Send + 'static) -> Result<T> {
        let result = crate::rt::io(&self.inner.config.settings.name, op).await;
        match &result {
            Ok(_) => self.inner.answered(),
            Err(err) if err.is_unavailable() => self.inner.link.down(),
            Err(_) => {}
        }
        result
    }

    fn stats_snapshot(&self) -> BackendStats {
        let inner = &self.inner;
        let mut stats = inner.counters.snapshot(&inner.config.settings.name);
        stats.details.insert("backend".into(), "redis".into());
        stats.details.insert("url".into(), inner.server.display.clone());
        stats.details.insert("mode".into(), if inner.server.cluster { "cluster" } else { "single" }.into());
        stats.details.insert("tls".into(), inner.server.tls.to_string());
        stats.details.insert("namespace".into(), inner.config.settings.namespace.clone());
        stats.details.insert("connected".into(), inner.link.label().into());
        stats.details.insert("connections_replaced".into(), inner.conn.replacements().to_string());
        if let Some(ttl) = inner.config.settings.default_ttl {
            stats.details.insert("default_ttl".into(), crate::ttl::format_ttl(ttl));
        }
        stats.details.insert("codec".into(), inner.config.settings.format.codec.name().into());
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

    /// The server answered: on a (re)connection, refresh the server details shown in stats, in
    /// the background.
    fn answered(self: &Arc<Self>) {
        if self.link.up() {
            let inner = self.clone();
            self.rt.spawn(async move {
                let _ =
                    within(&inner.config.settings.name, inner.config.timeouts.operation, inner.refresh_details()).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::admin::info_field;
    use super::*;
    use crate::store::Backend;
    use crate::value::Value;

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
