//! [`PostgresBackend`]: a shared, persistent cache in a PostgreSQL table (feature `postgres`).
//!
//! # Table
//!
//! ```sql
//! CREATE [UNLOGGED] TABLE IF NOT EXISTS "schema"."table" (
//!     namespace  text        NOT NULL,                 -- one cache = one namespace
//!     key        text        NOT NULL CHECK (octet_length(key) <= 512),
//!     full_key   bytea,                                -- the whole key, for hashed keys only
//!     value      bytea       NOT NULL,                 -- the shared cachestack envelope
//!     expires_at timestamptz,                          -- NULL: never expires
//!     written_at timestamptz NOT NULL DEFAULT now(),   -- age, for size bounds
//!     PRIMARY KEY (namespace, key)
//! );
//! CREATE INDEX IF NOT EXISTS "table_expires_idx" ON ... (namespace, expires_at) WHERE expires_at IS NOT NULL;
//! CREATE INDEX IF NOT EXISTS "table_written_idx" ON ... (namespace, written_at); -- only with a size bound
//! ```
//!
//! - **Creation** happens on first use, inside a transaction holding
//!   `pg_advisory_xact_lock(hash of the table name)`, so many processes starting at once create
//!   it exactly once (`CREATE TABLE IF NOT EXISTS` alone can still fail on the catalog's unique
//!   index when two sessions race). An existing table must have the columns above, or the
//!   backend refuses it with [`Error::Config`] instead of writing into someone else's table.
//! - **Keys** up to 256 bytes are stored as they are. Longer keys, and keys containing NUL (which
//!   `text` cannot hold), are stored as a 64-byte prefix plus an xxh3-128 hash, with the full key
//!   in `full_key`; every read compares it, so keys that share a row are misses, never mix-ups.
//! - **Expiry** is the deadline the writer fixed (see [`crate::Expiry`]): it is sealed in the
//!   envelope and stored in `expires_at`, computed on the client from the deadline (never
//!   `now() + ttl` on the server, which would extend the life of a write that spent time in
//!   transit). A read returns a row only while the server's `now()` is before `expires_at`, and
//!   the client checks the sealed deadline again before serving it; the entry read carries the
//!   writer's deadline to the millisecond. Deadlines past the year 9999 are brought forward to
//!   its end. [`Backend::purge_expired`] deletes expired rows in batches.
//! - **Size bounds** (`max_entries`, `max_bytes`, per namespace) are enforced by a background task
//!   that deletes the oldest rows by write time (FIFO, not LRU: reads never write). It runs after
//!   every `max_entries / 10` local writes and every `trim_interval`, one process at a time
//!   (`pg_try_advisory_xact_lock`); writes never count rows.
//! - **UNLOGGED** tables skip the write-ahead log: faster writes, but PostgreSQL empties them
//!   after a crash, and standbys do not get them.
//!
//! # Store and layers
//!
//! [`PostgresStore`] does I/O only: its network part runs through [`crate::rt::io`] (on
//! cachestack's runtime, aborted when the caller's future is dropped), while sealing and opening
//! envelopes stay on the caller's side. A statement whose operation is aborted has its
//! connection closed rather than returned to the pool (sqlx is not cancel-safe mid-statement),
//! and the server stops it at `statement_timeout` (the operation timeout,
//! [`timeouts.operation`](crate::ServerTimeouts::operation)) at the latest. A statement that fails
//! on a connection the server has closed (after a restart) is retried on another connection.
//! When operations in a row get no answer at all (half-open connections after a silent
//! failover, or connections stuck in sqlx's ping), the whole pool is replaced by a new one (see
//! `conn.rs`), so the cache recovers after a couple of timeouts.
//!
//! [`PostgresBackend`] is that store behind its [layers](crate::layer): [`Timeout`] bounds each
//! operation by [`timeouts.operation`](crate::ServerTimeouts::operation), and [`Silent`] counts failures
//! and, with [`settings.silent`](crate::StoreSettings::silent), turns them into misses and no-ops.
//! What is special to PostgreSQL
//! ([`PostgresStore::trim`], [`PostgresStore::config`]) is reached through `Deref`, without the
//! layers.
//!
//! [`Timeout`]: crate::layer::Timeout
//! [`Silent`]: crate::layer::Silent

mod atomic;
mod backend;
mod config;
mod conn;
mod errors;
mod lock;
mod ops;
mod sql;
mod table;
mod trim;

use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use tokio::sync::OnceCell;

use crate::error::{Error, Result};
use crate::layer::{within, Layered};
use crate::store::recycle::{self, Recycler};
use crate::store::Counters;
use crate::url::{redact_url, CacheUrl};

pub use config::PostgresConfig;
pub(crate) use config::SCHEME;
use sql::Sql;
use table::Ready;
use trim::{trim_loop, Trimmer};

/// A cache in a PostgreSQL table behind its layers (timeout, silent mode): what
/// [`PostgresBackend::new`], [`PostgresBackend::connect`] and `postgres://` URLs build. The
/// store itself, [`PostgresStore`], is reached through `Deref`.
///
/// [`PostgresBackend::connect`] connects and prepares the table now, so a wrong configuration
/// shows at start-up; [`PostgresBackend::new`] and URLs do no I/O: the pool connects and the
/// table is prepared on first use, so an unreachable server becomes per-operation errors (or
/// misses in silent mode), and the cache recovers once it is back.
///
/// ```no_run
/// use std::time::Duration;
/// use cachestack::{Cache, PostgresBackend, PostgresConfig};
///
/// # async fn demo() -> cachestack::Result<()> {
/// let backend = PostgresBackend::connect(
///     PostgresConfig { max_entries: Some(100_000), ..PostgresConfig::new("postgres://app@127.0.0.1/app") }
///         .with_table("app_cache")
///         .with_namespace("users"),
/// )
/// .await?;
/// assert_eq!(backend.config().table, "app_cache"); // the store's own methods, through Deref
/// let cache = Cache::new(backend);
/// cache.set("user:1", &"Ada".to_string(), Some(Duration::from_secs(300))).await?;
/// assert_eq!(cache.get::<String>("user:1").await?.as_deref(), Some("Ada"));
///
/// // Or from a URL, as the registry does (no I/O until first use):
/// let cache = Cache::from_url("postgres://app@127.0.0.1/app?table=app_cache&pool_max=8&ttl=5m")?;
/// # Ok(()) }
/// ```
pub type PostgresBackend = Layered<PostgresStore>;

/// The PostgreSQL store without layers: a table shared by every process that uses the same table
/// and namespace. Its operations are I/O only; errors are returned as they are (no silent mode,
/// no bound but the server's `statement_timeout` and the pool's `connect_timeout`). Use
/// [`PostgresBackend`] for a store with its layers.
///
/// ```
/// use cachestack::{Backend, PostgresConfig, PostgresStore};
///
/// // No I/O until first use.
/// let store = PostgresStore::new(PostgresConfig::new("postgres://127.0.0.1:1/db")).unwrap();
/// assert_eq!(store.name(), "postgres");
/// ```
#[derive(Debug, Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: PostgresConfig,
    sql: Sql,
    /// The connection pool, replaced by a new one when operations in a row get no answer.
    pool: Recycler<PgPool>,
    /// Set once the table is known to exist with the right columns.
    ready: OnceCell<Ready>,
    counters: Counters,
    trimmer: Option<Arc<Trimmer>>,
    /// `host:port/database`, for stats and logs.
    server: String,
    /// Advisory-lock keys: table creation (per table) and trimming (per table and namespace).
    create_lock: i64,
    trim_lock: i64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(trimmer) = &self.trimmer {
            trimmer.close();
        }
    }
}

impl Inner {
    /// The store's name in stats, logs and errors.
    fn name(&self) -> &str {
        &self.config.settings.name
    }

    fn err(&self, err: sqlx::Error) -> Error {
        errors::map_err(self.name(), err, self.config.timeouts.operation)
    }
}

/// A 64-bit advisory-lock key for `what`.
fn lock_key(what: &str) -> i64 {
    i64::from_ne_bytes(xxhash_rust::xxh3::xxh3_64(what.as_bytes()).to_ne_bytes())
}

impl Layered<PostgresStore> {
    /// A backend for `config`, behind its layers (timeout
    /// [`timeouts.operation`](crate::ServerTimeouts::operation), silent mode
    /// [`settings.silent`](crate::StoreSettings::silent)), without any I/O: the pool connects and the table is
    /// prepared on first use. Fails with [`Error::Config`] for invalid settings (a bad table
    /// name, a TLS `sslmode` without the `postgres-tls` feature, ...).
    ///
    /// ```
    /// use cachestack::{Backend, PostgresBackend, PostgresConfig};
    ///
    /// // Nothing listens on port 1; construction still succeeds (no I/O yet).
    /// let backend = PostgresBackend::new(PostgresConfig::new("postgres://127.0.0.1:1/db")).unwrap();
    /// assert_eq!(backend.stats().details["table"], "\"cachestack\"");
    /// assert_eq!(backend.stats().details["timeout"], "2s");
    ///
    /// let err = PostgresBackend::new(PostgresConfig::default().with_table("cache; DROP TABLE users")).unwrap_err();
    /// assert!(matches!(err, cachestack::Error::Config { .. }));
    /// ```
    pub fn new(config: PostgresConfig) -> Result<Self> {
        let layers = config.settings.layers(Some(config.timeouts.operation));
        Ok(Layered::wrap(PostgresStore::new(config)?, layers))
    }

    /// Connects and prepares the table now (creating it if needed), within the operation
    /// timeout, so that an unreachable server, missing privileges or a foreign table with the
    /// same name fail here (also in silent mode).
    pub async fn connect(config: PostgresConfig) -> Result<Self> {
        let backend = Self::new(config)?;
        let config = backend.config();
        within(&config.settings.name, config.timeouts.operation, backend.store().prepare()).await?;
        Ok(backend)
    }

    /// A backend from a `postgres://` cache URL (see [`PostgresConfig::from_url`]); no I/O.
    pub fn from_url(url: &str) -> Result<Self> {
        Self::new(PostgresConfig::from_url(url)?)
    }
}

impl PostgresStore {
    /// The store for `config`, without layers and without any I/O (see
    /// [`PostgresBackend::new`], which is this store behind its layers).
    pub fn new(config: PostgresConfig) -> Result<Self> {
        config.validate()?;
        let options = connect_options(&config)?;
        let server = format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or(options.get_username())
        );
        let rt = crate::rt::handle()?;
        let pool = recycled_pool(&config, options, rt.clone());
        let trimmer = (config.max_entries.is_some() || config.max_bytes.is_some())
            .then(|| Arc::new(Trimmer::new(config.max_entries)));
        let sql = Sql::new(&config);
        let inner = Arc::new(Inner {
            create_lock: lock_key(&format!("cachestack:create:{}", sql.table)),
            trim_lock: lock_key(&format!("cachestack:trim:{}:{}", sql.table, config.settings.namespace)),
            sql,
            pool,
            ready: OnceCell::new(),
            counters: Counters::default(),
            trimmer: trimmer.clone(),
            server,
            config,
        });
        if let Some(trimmer) = trimmer {
            rt.spawn(trim_loop(Arc::downgrade(&inner), trimmer, inner.config.trim_interval));
        }
        Ok(PostgresStore { inner })
    }

    /// Connects and prepares the table (creating it if needed) unless that was done already.
    pub async fn prepare(&self) -> Result<()> {
        let inner = self.inner.clone();
        crate::rt::io(self.inner.name(), async move { inner.ready().await.map(|_| ()) }).await
    }

    /// The settings this store runs with.
    pub fn config(&self) -> &PostgresConfig {
        &self.inner.config
    }

    /// Deletes this namespace's expired rows, then, when a size bound is set, its oldest rows
    /// until the bound holds; returns how many rows were deleted. The background task does the
    /// same on its own; this runs it now. Each batch is bounded by
    /// [`timeouts.operation`](crate::ServerTimeouts::operation); errors are returned (this method
    /// is the store's own, not behind the silent layer).
    pub async fn trim(&self) -> Result<u64> {
        let inner = self.inner.clone();
        crate::rt::io(self.inner.name(), async move { inner.trim_pass(true).await }).await
    }
}

/// A lazy pool (no I/O until first use), on cachestack's runtime.
fn open_pool(config: &PostgresConfig, options: PgConnectOptions, rt: &tokio::runtime::Handle) -> PgPool {
    // sqlx spawns its pool maintenance on the current runtime: make it cachestack's.
    let _enter = rt.enter();
    PgPoolOptions::new()
        .max_connections(config.pool_max)
        .min_connections(config.pool_min)
        .acquire_timeout(config.timeouts.connect)
        .idle_timeout(config.idle_timeout)
        // No ping before every use (it would double the round trips of every hit): a
        // statement that fails on a connection the server closed is retried on another
        // (`Inner::retry`), and a pool whose connections stop answering is replaced.
        .test_before_acquire(false)
        .connect_lazy_with(options)
}

/// The store's pool, replaced when it stops answering: the replacement is as lazy, and the old
/// pool is closed in the background, given at most the operation timeout (connections still
/// stuck after it, waiting on a dead peer, no longer count against the new pool).
fn recycled_pool(config: &PostgresConfig, options: PgConnectOptions, rt: tokio::runtime::Handle) -> Recycler<PgPool> {
    let pool = open_pool(config, options.clone(), &rt);
    let name = config.settings.name.clone();
    let config = config.clone();
    Recycler::new(&name, pool, move |old: &PgPool| {
        let old = old.clone();
        let timeout = config.timeouts.operation;
        rt.spawn(async move {
            let _ = tokio::time::timeout(timeout, old.close()).await;
        });
        Ok(open_pool(&config, options.clone(), &rt))
    })
}

/// The options sqlx connects with: the URL's, plus the server-side statement timeout and TCP
/// keepalive (sqlx sets no socket options of its own: the server's keepalive at least frees the
/// server-side sessions of connections a client gave up on, within seconds rather than hours).
fn connect_options(config: &PostgresConfig) -> Result<PgConnectOptions> {
    // Only connection parameters may follow `?` in `url`; cache options belong in the config.
    let mut url = CacheUrl::parse(&config.url)?;
    if !matches!(url.scheme.as_str(), "postgres" | "postgresql") {
        return Err(Error::config(format!(
            "`{}` is not a PostgreSQL URL (expected postgres://user@host:port/database)",
            redact_url(&config.url)
        )));
    }
    let mut params = Vec::new();
    for name in config::CONNECTION_OPTIONS {
        if let Some(value) = url.take(name) {
            params.push((*name, value));
        }
    }
    let mut text = format!("{}://{}", url.scheme, url.rest);
    url.finish(config::CONNECTION_OPTIONS)?;
    if !params.is_empty() {
        let mut query = ::url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in &params {
            query.append_pair(name, value);
        }
        text.push('?');
        text.push_str(&query.finish());
    }
    let options: PgConnectOptions = text
        .parse()
        .map_err(|e| Error::config(format!("invalid PostgreSQL URL `{}`: {e}", redact_url(&config.url))))?;
    if !cfg!(feature = "postgres-tls")
        && matches!(options.get_ssl_mode(), PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull)
    {
        return Err(Error::config(
            "the URL asks for TLS (sslmode=require/verify-ca/verify-full), which needs the `postgres-tls` cargo feature of cachestack",
        ));
    }
    let statement_timeout = config.timeouts.operation.as_millis().max(1).to_string();
    let keepalive = [
        recycle::KEEPALIVE_IDLE.as_secs().to_string(),
        recycle::KEEPALIVE_INTERVAL.as_secs().to_string(),
        recycle::KEEPALIVE_RETRIES.to_string(),
    ];
    let options = options.options([
        ("statement_timeout", statement_timeout.as_str()),
        ("tcp_keepalives_idle", keepalive[0].as_str()),
        ("tcp_keepalives_interval", keepalive[1].as_str()),
        ("tcp_keepalives_count", keepalive[2].as_str()),
    ]);
    Ok(match options.get_application_name() {
        Some(_) => options,
        None => options.application_name("cachestack"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Backend;

    #[test]
    fn urls_build_backends_without_io() {
        let backend = crate::backend_from_url("postgres://u:pw@127.0.0.1:1/db?table=cache&pool_max=3").unwrap();
        let stats = backend.stats();
        assert_eq!(stats.details["table"], "\"cache\"");
        assert_eq!(stats.details["server"], "127.0.0.1:1/db");
        assert_eq!(stats.details["pool_max"], "3");
        assert_eq!(stats.details["timeout"], "2s", "the timeout layer is in place");
        assert!(!format!("{backend:?}").contains("pw"));
    }

    #[test]
    fn connection_urls_reject_cache_options_and_tls_without_the_feature() {
        let err = PostgresBackend::new(PostgresConfig::new("postgres://h/db?table=x")).unwrap_err().to_string();
        assert!(err.contains("unknown option `table`"), "{err}");
        let err = PostgresBackend::new(PostgresConfig::new("mysql://h/db")).unwrap_err().to_string();
        assert!(err.contains("not a PostgreSQL URL"), "{err}");
        let tls = PostgresBackend::new(PostgresConfig::new("postgres://h/db?sslmode=require"));
        if cfg!(feature = "postgres-tls") {
            tls.unwrap();
        } else {
            assert!(tls.unwrap_err().to_string().contains("postgres-tls"));
        }
    }

    #[test]
    fn the_server_probes_idle_connections_and_bounds_statements() {
        let config = PostgresConfig::default().with_timeout(std::time::Duration::from_millis(1500));
        let options = connect_options(&config).unwrap();
        let sent = options.get_options().unwrap_or_default();
        for wanted in
            ["statement_timeout=1500", "tcp_keepalives_idle=5", "tcp_keepalives_interval=2", "tcp_keepalives_count=3"]
        {
            assert!(sent.contains(wanted), "{wanted} missing from {sent}");
        }
    }

    #[test]
    fn the_name_setting_names_the_store_in_stats_and_errors() {
        let backend =
            PostgresBackend::from_url("postgres://127.0.0.1:1/db?name=sessions&connect_timeout=200ms").unwrap();
        assert_eq!(backend.name(), "sessions");
        assert_eq!(backend.stats().name, "sessions");
        let err = crate::rt::block_on(async move { backend.get("k").await }).unwrap().unwrap_err();
        assert!(err.is_unavailable() && err.to_string().contains("sessions"), "{err}");
        assert_eq!(PostgresBackend::new(PostgresConfig::default()).unwrap().name(), "postgres");
    }

    #[test]
    fn lock_keys_differ_per_table() {
        assert_ne!(lock_key("cachestack:create:\"a\""), lock_key("cachestack:create:\"b\""));
    }
}
