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
//! - **Expiry** is judged by the server's clock (`now()`), the same for every client. Expired
//!   rows are never returned; [`Backend::purge_expired`] deletes them in batches.
//! - **Size bounds** (`max_entries`, `max_bytes`, per namespace) are enforced by a background task
//!   that deletes the oldest rows by write time (FIFO, not LRU: reads never write). It runs after
//!   every `max_entries / 10` local writes and every `trim_interval`, one process at a time
//!   (`pg_try_advisory_xact_lock`); writes never count rows.
//! - **UNLOGGED** tables skip the write-ahead log: faster writes, but PostgreSQL empties them
//!   after a crash, and standbys do not get them.
//!
//! Every operation runs on cachestack's own runtime (see [`crate::rt`]), bounded by
//! [`PostgresConfig::timeout`] (also the server's `statement_timeout`), so pooled connections
//! never depend on the caller's runtime and a synchronous caller can block its own. A caller that
//! drops an operation's future does not cancel the statement; it finishes (or times out) on
//! cachestack's runtime. A statement that fails on a connection the server has closed (after a
//! restart) is retried on another connection within the same deadline.

mod config;
mod sql;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use tokio::sync::{Notify, OnceCell};

use crate::error::{Error, Result};
use crate::expiry::{Deadline, Expiry};
use crate::store::{Backend, BackendStats, Counters, Entry};
use crate::url::{redact_url, CacheUrl};
use crate::value::Value;

pub use config::PostgresConfig;
use sql::{storage_key, Sql, REQUIRED_COLUMNS};

const NAME: &str = "postgres";

/// TTLs are capped at 100 years (microseconds, exact in the float arithmetic of `interval`).
const MAX_TTL_MICROS: u128 = 100 * 365 * 24 * 3600 * 1_000_000;

/// Rows per statement in `set_many`.
const SET_MANY_CHUNK: usize = 1000;

/// A cache in a PostgreSQL table, shared by every process that uses the same table and namespace.
///
/// Built with [`PostgresBackend::connect`] (connects and prepares the table now, so a wrong
/// configuration shows at start-up) or [`PostgresBackend::new`] / a `postgres://` URL (no I/O:
/// the pool connects and the table is prepared on first use, so an unreachable server becomes
/// per-operation errors, or misses in silent mode, and the cache recovers once it is back).
///
/// ```no_run
/// use std::time::Duration;
/// use cachestack::{Cache, PostgresBackend, PostgresConfig};
///
/// # async fn demo() -> cachestack::Result<()> {
/// let backend = PostgresBackend::connect(PostgresConfig {
///     table: "app_cache".into(),
///     namespace: "users".into(),
///     max_entries: Some(100_000),
///     ..PostgresConfig::new("postgres://app@127.0.0.1/app")
/// })
/// .await?;
/// let cache = Cache::new(backend);
/// cache.set("user:1", &"Ada".to_string(), Some(Duration::from_secs(300))).await?;
/// assert_eq!(cache.get::<String>("user:1").await?.as_deref(), Some("Ada"));
///
/// // Or from a URL, as the registry does (no I/O until first use):
/// let cache = Cache::from_url("postgres://app@127.0.0.1/app?table=app_cache&pool_max=8&ttl=5m")?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: PostgresConfig,
    sql: Sql,
    pool: PgPool,
    rt: tokio::runtime::Handle,
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

/// What table preparation learned.
#[derive(Debug, Clone, Copy)]
struct Ready {
    /// The database encoding cannot hold every Unicode key (neither UTF8 nor SQL_ASCII): store
    /// only ASCII keys as they are and hash the others.
    ascii_keys: bool,
}

/// Wakes the background trim task.
#[derive(Debug)]
struct Trimmer {
    notify: Notify,
    writes: AtomicU64,
    every: u64,
    closed: AtomicBool,
}

impl Trimmer {
    fn note_writes(&self, n: u64) {
        if self.writes.fetch_add(n, Relaxed) + n >= self.every {
            self.writes.store(0, Relaxed);
            self.notify.notify_one();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(trimmer) = &self.trimmer {
            trimmer.closed.store(true, Relaxed);
            trimmer.notify.notify_one();
        }
    }
}

/// A 64-bit advisory-lock key for `what`.
fn lock_key(what: &str) -> i64 {
    i64::from_ne_bytes(xxhash_rust::xxh3::xxh3_64(what.as_bytes()).to_ne_bytes())
}

fn unavailable(source: impl Into<crate::error::BoxError>) -> Error {
    Error::BackendUnavailable { backend: NAME.into(), source: source.into() }
}

/// Maps a sqlx error: connection trouble is [`Error::BackendUnavailable`], a server-side
/// statement timeout is [`Error::Timeout`], the rest [`Error::Generic`].
fn map_err(err: sqlx::Error, timeout: Duration) -> Error {
    match &err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => unavailable(err),
        sqlx::Error::Configuration(_) => Error::config(format!("PostgreSQL connection settings: {err}")),
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            // 08: connection exception; 57P01-3: shutdown, crash, cannot connect now;
            // 53300: too many connections.
            if code.starts_with("08") || code.starts_with("57P") || code == "53300" {
                unavailable(err)
            } else if code == "57014" {
                Error::Timeout { backend: NAME.into(), after: timeout }
            } else {
                Error::Generic { backend: NAME.into(), source: Box::new(err) }
            }
        }
        _ => Error::Generic { backend: NAME.into(), source: Box::new(err) },
    }
}

impl PostgresBackend {
    /// A backend for `config`, without any I/O: the pool connects and the table is prepared on
    /// first use. Fails with [`Error::Config`] for invalid settings (a bad table name, a TLS
    /// `sslmode` without the `postgres-tls` feature, ...).
    ///
    /// ```
    /// use cachestack::{Backend, PostgresBackend, PostgresConfig};
    ///
    /// // Nothing listens on port 1; construction still succeeds (no I/O yet).
    /// let backend = PostgresBackend::new(PostgresConfig::new("postgres://127.0.0.1:1/db")).unwrap();
    /// assert_eq!(backend.stats().details["table"], "\"cachestack\"");
    ///
    /// let err = PostgresBackend::new(PostgresConfig::default().with_table("cache; DROP TABLE users")).unwrap_err();
    /// assert!(matches!(err, cachestack::Error::Config { .. }));
    /// ```
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
        let pool = {
            // sqlx spawns its pool maintenance on the current runtime: make it cachestack's.
            let _enter = rt.enter();
            PgPoolOptions::new()
                .max_connections(config.pool_max)
                .min_connections(config.pool_min)
                .acquire_timeout(config.connect_timeout)
                .idle_timeout(config.idle_timeout)
                // No ping before every use (it would double the round trips of every hit): a
                // statement that fails on a connection the server closed is retried on another
                // (`Inner::retry`).
                .test_before_acquire(false)
                .connect_lazy_with(options)
        };
        let trimmer = (config.max_entries.is_some() || config.max_bytes.is_some()).then(|| {
            let every = match config.max_entries {
                Some(n) => (n / 10).clamp(1, 10_000),
                None => 1000,
            };
            Arc::new(Trimmer {
                notify: Notify::new(),
                writes: AtomicU64::new(0),
                every,
                closed: AtomicBool::new(false),
            })
        });
        let sql = Sql::new(&config);
        let inner = Arc::new(Inner {
            create_lock: lock_key(&format!("cachestack:create:{}", sql.table)),
            trim_lock: lock_key(&format!("cachestack:trim:{}:{}", sql.table, config.namespace)),
            sql,
            pool,
            rt: rt.clone(),
            ready: OnceCell::new(),
            counters: Counters::default(),
            trimmer: trimmer.clone(),
            server,
            config,
        });
        if let Some(trimmer) = trimmer {
            rt.spawn(trim_loop(Arc::downgrade(&inner), trimmer, inner.config.trim_interval));
        }
        Ok(PostgresBackend { inner })
    }

    /// Connects and prepares the table now (creating it if needed), so that an unreachable
    /// server, missing privileges or a foreign table with the same name fail here.
    pub async fn connect(config: PostgresConfig) -> Result<Self> {
        let backend = Self::new(config)?;
        backend.run(|_, _| async { Ok(()) }).await?;
        Ok(backend)
    }

    /// A backend from a `postgres://` cache URL (see [`PostgresConfig::from_url`]); no I/O.
    pub fn from_url(url: &str) -> Result<Self> {
        Self::new(PostgresConfig::from_url(url)?)
    }

    /// The settings this backend runs with.
    pub fn config(&self) -> &PostgresConfig {
        &self.inner.config
    }

    /// Deletes this namespace's expired rows, then, when a size bound is set, its oldest rows
    /// until the bound holds; returns how many rows were deleted. The background task does the
    /// same on its own; this runs it now.
    pub async fn trim(&self) -> Result<u64> {
        let inner = self.inner.clone();
        let result = self.spawn(async move { inner.trim_pass(true).await }).await;
        self.inner.counters.absorb(NAME, "trim", self.inner.config.silent, result, || 0)
    }

    /// Runs `op` on cachestack's runtime once the table is ready, within the operation timeout.
    async fn run<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: FnOnce(Arc<Inner>, Ready) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let inner = self.inner.clone();
        self.spawn(async move { inner.bounded(op).await }).await
    }

    /// Runs `future` on cachestack's runtime and waits for it from any runtime (or none).
    async fn spawn<T: Send + 'static>(&self, future: impl Future<Output = Result<T>> + Send + 'static) -> Result<T> {
        match self.inner.rt.spawn(future).await {
            Ok(result) => result,
            Err(err) => {
                Err(Error::Generic { backend: NAME.into(), source: format!("operation task failed: {err}").into() })
            }
        }
    }

    fn absorb<T>(&self, op: &'static str, result: Result<T>, fallback: impl FnOnce() -> T) -> Result<T> {
        self.inner.counters.absorb(NAME, op, self.inner.config.silent, result, fallback)
    }
}

/// The options sqlx connects with: the URL's, plus the server-side statement timeout.
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
    let statement_timeout = config.timeout.as_millis().max(1).to_string();
    let options = options.options([("statement_timeout", statement_timeout.as_str())]);
    Ok(match options.get_application_name() {
        Some(_) => options,
        None => options.application_name("cachestack"),
    })
}

impl Inner {
    fn err(&self, err: sqlx::Error) -> Error {
        map_err(err, self.config.timeout)
    }

    /// Runs one statement, again on another connection when it failed on a pooled connection
    /// that the server had closed (after a server restart, every idle connection is such a
    /// one; pinging each before use would double the round trips of every operation). The
    /// statements retried are idempotent; the operation deadline bounds the attempts.
    async fn retry<T, F, Fut>(&self, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, sqlx::Error>>,
    {
        let mut tries = 0;
        loop {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(err) if is_stale_connection(&err) && tries < self.config.pool_max => {
                    tries += 1;
                    tracing::debug!(error = %err, "cachestack: postgres connection was closed by the server; retrying on another");
                }
                Err(err) => return Err(self.err(err)),
            }
        }
    }

    /// Prepares the table if needed, then runs `op`, all within the operation timeout.
    async fn bounded<T, F, Fut>(self: Arc<Self>, op: F) -> Result<T>
    where
        F: FnOnce(Arc<Inner>, Ready) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let timeout = self.config.timeout;
        let work = async {
            let ready = *self.ready.get_or_try_init(|| self.prepare_table()).await?;
            op(self.clone(), ready).await
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout { backend: NAME.into(), after: timeout }),
        }
    }

    /// Makes sure the schema, table and indexes exist (creating them under an advisory lock) and
    /// that the table has cachestack's columns.
    async fn prepare_table(&self) -> Result<Ready> {
        let sized = self.trimmer.is_some();
        let mut probe = self.probe().await?;
        if probe.table {
            // Before any DDL touches it (an index on a column it lacks would be the first error).
            self.check_columns().await?;
        }
        let missing = |p: &Probe| !(p.table && p.expires_index && (p.written_index || !sized) && p.schema);
        if missing(&probe) {
            if !self.config.create_table {
                return Err(Error::config(format!(
                    "table {} (or its indexes) does not exist in {} and create_table is off",
                    self.sql.table, self.server
                )));
            }
            let mut attempt = 0;
            loop {
                match self.create_table(sized).await {
                    Ok(()) => break,
                    // Someone outside cachestack's lock created one of the objects at the same
                    // moment (IF NOT EXISTS does not cover a creation still in flight): now that
                    // it is committed, IF NOT EXISTS sees it.
                    Err(err) if is_duplicate(&err) && attempt < 3 => attempt += 1,
                    Err(err) => return Err(self.err(err)),
                }
            }
            probe = self.probe().await?;
            if missing(&probe) {
                return Err(Error::Generic {
                    backend: NAME.into(),
                    source: format!("table {} is still missing after creating it", self.sql.table).into(),
                });
            }
            self.check_columns().await?;
        }
        if probe.persistence.as_deref() == Some("p") && self.config.unlogged {
            tracing::warn!(table = %self.sql.table, "cachestack: `unlogged` is set but the existing table is a regular (logged) table");
        }
        let encoding = probe.encoding.to_ascii_uppercase();
        Ok(Ready { ascii_keys: encoding != "UTF8" && encoding != "SQL_ASCII" })
    }

    async fn probe(&self) -> Result<Probe> {
        let (table, expires_index, written_index, schema, encoding, persistence): (
            bool,
            bool,
            bool,
            bool,
            String,
            Option<String>,
        ) = self
            .retry(|| {
                sqlx::query_as(self.sql.probe)
                    .bind(&self.sql.table)
                    .bind(&self.sql.expires_index)
                    .bind(&self.sql.written_index)
                    .bind(self.sql.schema.as_deref())
                    .fetch_one(&self.pool)
            })
            .await?;
        Ok(Probe { table, expires_index, written_index, schema, encoding, persistence })
    }

    async fn create_table(&self, sized: bool) -> std::result::Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // Serialises creators of this table across processes; released at commit.
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(self.create_lock).execute(&mut *tx).await?;
        let mut statements: Vec<&str> = Vec::new();
        if let Some(create_schema) = &self.sql.create_schema {
            statements.push(create_schema);
        }
        statements.push(&self.sql.create_table);
        statements.push(&self.sql.create_expires_index);
        if sized {
            statements.push(&self.sql.create_written_index);
        }
        for statement in statements {
            sqlx::query(statement).persistent(false).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        tracing::debug!(table = %self.sql.table, server = %self.server, "cachestack: cache table ready");
        Ok(())
    }

    async fn check_columns(&self) -> Result<()> {
        let columns: Vec<(String, String)> =
            self.retry(|| sqlx::query_as(self.sql.columns).bind(&self.sql.table).fetch_all(&self.pool)).await?;
        let wrong: Vec<String> = REQUIRED_COLUMNS
            .iter()
            .filter(|(name, ty)| !columns.iter().any(|(n, t)| n == name && t == ty))
            .map(|(name, ty)| format!("{name} {ty}"))
            .collect();
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(Error::config(format!(
                "table {} in {} is not a cachestack cache table (missing or mistyped: {}); choose another table name",
                self.sql.table,
                self.server,
                wrong.join(", ")
            )))
        }
    }

    /// Turns a fetched row into an entry: checks the full key of hashed keys, opens the envelope.
    fn entry(&self, key: &str, full: Option<&[u8]>, row: Row) -> Option<Entry> {
        let (bytes, stored_full, remaining_us) = row;
        if stored_full.as_deref() != full {
            // Another key's row under the same stored key (a hash collision, or a plain key
            // equal to a hashed form): not ours.
            return None;
        }
        match self.config.format.open(key, &bytes) {
            Ok((value, _)) => {
                let ttl = remaining_us.map(|us| Duration::from_micros(u64::try_from(us).unwrap_or(0)));
                Some(Entry::new(value, ttl.map(Deadline::after)))
            }
            Err(err) => {
                self.counters.record_invalid(NAME, key, &err);
                None
            }
        }
    }

    async fn get(&self, key: &str, ready: Ready) -> Result<Option<Entry>> {
        let stored = storage_key(key, ready.ascii_keys);
        let row: Option<Row> = self
            .retry(|| {
                sqlx::query_as(&self.sql.get).bind(&self.config.namespace).bind(&*stored.key).fetch_optional(&self.pool)
            })
            .await?;
        Ok(row.and_then(|row| self.entry(key, stored.full, row)))
    }

    async fn get_many(&self, keys: &[String], ready: Ready) -> Result<Vec<Option<Entry>>> {
        let stored: Vec<_> = keys.iter().map(|k| storage_key(k, ready.ascii_keys)).collect();
        let mut wanted: Vec<&str> = stored.iter().map(|s| &*s.key).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let rows: Vec<KeyedRow> = self
            .retry(|| {
                sqlx::query_as(&self.sql.get_many).bind(&self.config.namespace).bind(&wanted).fetch_all(&self.pool)
            })
            .await?;
        // Each row with the number of requested keys that map to it: a key asked for twice gets
        // the row twice (cloned for all but the last asker).
        let mut by_key: HashMap<String, (Row, usize)> =
            rows.into_iter().map(|(k, v, f, t)| (k, ((v, f, t), 0))).collect();
        for s in &stored {
            if let Some((_, uses)) = by_key.get_mut(&*s.key) {
                *uses += 1;
            }
        }
        let mut out = Vec::with_capacity(keys.len());
        for (key, s) in keys.iter().zip(&stored) {
            let row = match by_key.get_mut(&*s.key) {
                Some((row, uses)) if *uses > 1 => {
                    *uses -= 1;
                    Some(row.clone())
                }
                Some(_) => by_key.remove(&*s.key).map(|(row, _)| row),
                None => None,
            };
            out.push(row.and_then(|row| self.entry(key, s.full, row)));
        }
        Ok(out)
    }

    async fn set(&self, key: &str, bytes: &[u8], ttl_us: Option<i64>, ready: Ready) -> Result<()> {
        let stored = storage_key(key, ready.ascii_keys);
        self.retry(|| {
            sqlx::query(&self.sql.set)
                .bind(&self.config.namespace)
                .bind(&*stored.key)
                .bind(stored.full)
                .bind(bytes)
                .bind(ttl_us)
                .execute(&self.pool)
        })
        .await?;
        Ok(())
    }

    async fn set_many(&self, rows: Vec<(String, Vec<u8>)>, ttl_us: Option<i64>, ready: Ready) -> Result<()> {
        // One row per stored key (the last write wins, as with separate sets: ON CONFLICT cannot
        // touch a row twice in one statement), sorted so that concurrent batches lock rows in
        // the same order and cannot deadlock.
        let mut latest: HashMap<String, (Option<Vec<u8>>, Vec<u8>)> = HashMap::with_capacity(rows.len());
        for (key, bytes) in &rows {
            let stored = storage_key(key, ready.ascii_keys);
            latest.insert(stored.key.into_owned(), (stored.full.map(<[u8]>::to_vec), bytes.clone()));
        }
        let mut latest: Vec<_> = latest.into_iter().collect();
        latest.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for chunk in latest.chunks(SET_MANY_CHUNK) {
            let keys: Vec<&str> = chunk.iter().map(|(k, _)| k.as_str()).collect();
            let fulls: Vec<Option<&[u8]>> = chunk.iter().map(|(_, (f, _))| f.as_deref()).collect();
            let values: Vec<&[u8]> = chunk.iter().map(|(_, (_, v))| v.as_slice()).collect();
            self.retry(|| {
                sqlx::query(&self.sql.set_many)
                    .bind(&self.config.namespace)
                    .bind(&keys)
                    .bind(&fulls)
                    .bind(&values)
                    .bind(ttl_us)
                    .execute(&self.pool)
            })
            .await?;
        }
        Ok(())
    }

    async fn delete(&self, key: &str, ready: Ready) -> Result<bool> {
        let stored = storage_key(key, ready.ascii_keys);
        let present: Option<Option<bool>> = self
            .retry(|| {
                sqlx::query_scalar(&self.sql.delete)
                    .bind(&self.config.namespace)
                    .bind(&*stored.key)
                    .bind(stored.full)
                    .fetch_optional(&self.pool)
            })
            .await?;
        Ok(present.flatten().unwrap_or(false))
    }

    async fn delete_many(&self, keys: &[String], ready: Ready) -> Result<u64> {
        let stored: Vec<_> = keys.iter().map(|k| storage_key(k, ready.ascii_keys)).collect();
        let wanted: Vec<&str> = stored.iter().map(|s| &*s.key).collect();
        let rows: Vec<(String, Option<Vec<u8>>, Option<bool>)> = self
            .retry(|| {
                sqlx::query_as(&self.sql.delete_many).bind(&self.config.namespace).bind(&wanted).fetch_all(&self.pool)
            })
            .await?;
        // A row counts when it was live and belonged to one of the requested keys.
        let requested: std::collections::HashSet<(&str, Option<&[u8]>)> =
            stored.iter().map(|s| (&*s.key, s.full)).collect();
        let present = rows
            .iter()
            .filter(|(key, full, live)| live.unwrap_or(false) && requested.contains(&(key.as_str(), full.as_deref())))
            .count();
        Ok(present as u64)
    }

    /// One batch of `sql` (`$1` namespace, `$2` limit); returns the rows deleted.
    async fn delete_batch(&self, sql: &str) -> Result<u64> {
        let done = self
            .retry(|| {
                sqlx::query(sql)
                    .bind(&self.config.namespace)
                    .bind(i64::from(self.config.batch_size))
                    .execute(&self.pool)
            })
            .await?;
        Ok(done.rows_affected())
    }

    /// Deletes in batches until a batch comes back short; each batch has its own deadline.
    async fn delete_all(self: &Arc<Self>, which: fn(&Sql) -> &str) -> Result<u64> {
        let mut total = 0;
        loop {
            let n = self.clone().bounded(|inner, _| async move { inner.delete_batch(which(&inner.sql)).await }).await?;
            total += n;
            if n < u64::from(self.config.batch_size) {
                return Ok(total);
            }
        }
    }

    /// Purges expired rows, then deletes the oldest rows above the size bounds (one process at
    /// a time: with `wait`, after the one trimming now; without, the pass ends if another is
    /// trimming). Returns the rows deleted; only the second kind count as evictions.
    async fn trim_pass(self: Arc<Self>, wait: bool) -> Result<u64> {
        let purged = self.delete_all(|sql| &sql.purge_batch).await?;
        if self.trimmer.is_none() {
            return Ok(purged);
        }
        let mut evicted = 0;
        loop {
            let n = self.clone().bounded(|inner, _| async move { inner.trim_batch(wait).await }).await?;
            let Some(n) = n else { break };
            evicted += n;
            if n < u64::from(self.config.batch_size) {
                break;
            }
        }
        self.counters.record_evictions(evicted);
        if evicted > 0 {
            tracing::debug!(table = %self.sql.table, namespace = %self.config.namespace, evicted, "cachestack: trimmed to the size bound");
        }
        Ok(purged + evicted)
    }

    /// One trim batch, or `None` when another process holds the trim lock and `wait` is off.
    async fn trim_batch(&self, wait: bool) -> Result<Option<u64>> {
        let to_i64 = |bound: Option<u64>| bound.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
        let run = async {
            let mut tx = self.pool.begin().await?;
            let lock = if wait {
                "SELECT pg_advisory_xact_lock($1) IS NOT NULL"
            } else {
                "SELECT pg_try_advisory_xact_lock($1)"
            };
            let locked: bool = sqlx::query_scalar(lock).bind(self.trim_lock).fetch_one(&mut *tx).await?;
            if !locked {
                tx.rollback().await?;
                return Ok(None);
            }
            let done = sqlx::query(&self.sql.trim_batch)
                .bind(&self.config.namespace)
                .bind(to_i64(self.config.max_entries))
                .bind(to_i64(self.config.max_bytes))
                .bind(i64::from(self.config.batch_size))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Some(done.rows_affected()))
        };
        run.await.map_err(|e| self.err(e))
    }
}

/// A fetched row: stored value, `full_key`, remaining TTL in microseconds.
type Row = (Vec<u8>, Option<Vec<u8>>, Option<i64>);

/// A `get_many` row: the stored key, then [`Row`].
type KeyedRow = (String, Vec<u8>, Option<Vec<u8>>, Option<i64>);

struct Probe {
    table: bool,
    expires_index: bool,
    written_index: bool,
    schema: bool,
    encoding: String,
    persistence: Option<String>,
}

/// An error from a connection the server closed (restart, idle kill, failover): worth one more
/// try on another connection. Failures to connect come back as `PoolTimedOut`, never retried.
fn is_stale_connection(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            matches!(db.code().as_deref(), Some("57P01" | "57P02" | "08000" | "08003" | "08006"))
        }
        _ => false,
    }
}

/// A concurrent creation by someone not holding cachestack's lock: unique_violation on the
/// catalog, duplicate_table, duplicate_object, duplicate_schema.
fn is_duplicate(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("23505" | "42P07" | "42710" | "42P06")),
        _ => false,
    }
}

/// Background size-bound enforcement: runs after enough local writes or every `interval`,
/// until the backend is dropped.
async fn trim_loop(inner: Weak<Inner>, trimmer: Arc<Trimmer>, interval: Duration) {
    loop {
        // Woken by local writes, or by the interval passing.
        let _ = tokio::time::timeout(interval, trimmer.notify.notified()).await;
        if trimmer.closed.load(Relaxed) {
            return;
        }
        let Some(inner) = inner.upgrade() else { return };
        if let Err(err) = inner.clone().trim_pass(false).await {
            inner.counters.record_error();
            tracing::warn!(table = %inner.sql.table, error = %err, "cachestack: background trim failed");
        }
    }
}

/// TTL for the SQL `$5` parameter, in microseconds (`None`: no expiry).
fn ttl_micros(ttl: Option<Duration>) -> Option<i64> {
    ttl.map(|t| t.as_micros().min(MAX_TTL_MICROS) as i64)
}

#[async_trait]
impl Backend for PostgresBackend {
    fn name(&self) -> &str {
        NAME
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        let key = key.to_owned();
        let result = self.run(move |inner, ready| async move { inner.get(&key, ready).await }).await;
        let result = self.absorb("get", result, || None);
        if let Ok(found) = &result {
            self.inner.counters.record_lookup(found.is_some());
        }
        result
    }

    async fn set(&self, key: &str, value: Value, expiry: Expiry) -> Result<()> {
        let ttl = expiry.legacy_ttl();
        let ttl = ttl.or(self.inner.config.default_ttl);
        let expires = ttl.map(|t| SystemTime::now() + t.min(Duration::from_micros(MAX_TTL_MICROS as u64)));
        let sealed = self.inner.config.format.seal(key, &value, expires);
        let result = match sealed {
            Ok(bytes) => {
                let key = key.to_owned();
                self.run(move |inner, ready| async move { inner.set(&key, &bytes, ttl_micros(ttl), ready).await }).await
            }
            Err(err) => Err(err),
        };
        if result.is_ok() {
            self.inner.counters.record_write();
            if let Some(trimmer) = &self.inner.trimmer {
                trimmer.note_writes(1);
            }
        }
        self.absorb("set", result, || ())
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.inner.counters.record_delete();
        let key = key.to_owned();
        let result = self.run(move |inner, ready| async move { inner.delete(&key, ready).await }).await;
        self.absorb("delete", result, || false)
    }

    async fn clear(&self) -> Result<()> {
        let inner = self.inner.clone();
        let result = self.spawn(async move { inner.delete_all(|sql| &sql.clear_batch).await }).await;
        self.absorb("clear", result.map(|_| ()), || ())
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let n = keys.len();
        let owned: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        let result = self.run(move |inner, ready| async move { inner.get_many(&owned, ready).await }).await;
        let result = self.absorb("get_many", result, || vec![None; n]);
        if let Ok(found) = &result {
            self.inner.counters.record_lookups(n as u64, found.iter().filter(|e| e.is_some()).count() as u64);
        }
        result
    }

    async fn set_many(&self, entries: &[(&str, Value)], expiry: Expiry) -> Result<()> {
        let ttl = expiry.legacy_ttl();
        if entries.is_empty() {
            return Ok(());
        }
        let ttl = ttl.or(self.inner.config.default_ttl);
        let expires = ttl.map(|t| SystemTime::now() + t.min(Duration::from_micros(MAX_TTL_MICROS as u64)));
        let sealed: Result<Vec<(String, Vec<u8>)>> = entries
            .iter()
            .map(|(key, value)| Ok(((*key).to_owned(), self.inner.config.format.seal(key, value, expires)?)))
            .collect();
        let n = entries.len() as u64;
        let result = match sealed {
            Ok(rows) => {
                self.run(move |inner, ready| async move { inner.set_many(rows, ttl_micros(ttl), ready).await }).await
            }
            Err(err) => Err(err),
        };
        if result.is_ok() {
            self.inner.counters.record_writes(n);
            if let Some(trimmer) = &self.inner.trimmer {
                trimmer.note_writes(n);
            }
        }
        self.absorb("set_many", result, || ())
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.inner.counters.record_deletes(keys.len() as u64);
        let owned: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        let result = self.run(move |inner, ready| async move { inner.delete_many(&owned, ready).await }).await;
        self.absorb("delete_many", result, || 0)
    }

    async fn purge_expired(&self) -> Result<u64> {
        let inner = self.inner.clone();
        let result = self.spawn(async move { inner.delete_all(|sql| &sql.purge_batch).await }).await;
        self.absorb("purge_expired", result, || 0)
    }

    fn stats(&self) -> BackendStats {
        let inner = &self.inner;
        let config = &inner.config;
        let mut stats = inner
            .counters
            .snapshot(NAME)
            .with_detail("server", &inner.server)
            .with_detail("table", &inner.sql.table)
            .with_detail("namespace", &config.namespace)
            .with_detail("unlogged", config.unlogged)
            .with_detail("table_ready", inner.ready.initialized())
            .with_detail("pool_size", inner.pool.size())
            .with_detail("pool_idle", inner.pool.num_idle())
            .with_detail("pool_max", config.pool_max)
            .with_detail("timeout", crate::ttl::format_ttl(config.timeout));
        if let Some(n) = config.max_entries {
            stats = stats.with_detail("max_entries", n);
        }
        if let Some(n) = config.max_bytes {
            stats = stats.with_detail("max_bytes", n);
        }
        if let Some(ttl) = config.default_ttl {
            stats = stats.with_detail("ttl", crate::ttl::format_ttl(ttl));
        }
        stats
    }
}

/// Builds the backend for a `postgres://` cache URL (called by [`crate::backend_from_url`]).
pub(crate) fn backend_from_url(mut url: CacheUrl) -> Result<Arc<dyn Backend>> {
    let config = config::config_from_url(&mut url)?;
    url.finish(&config::valid_url_options())?;
    Ok(Arc::new(PostgresBackend::new(config)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_capped_and_exact() {
        assert_eq!(ttl_micros(None), None);
        assert_eq!(ttl_micros(Some(Duration::from_millis(1500))), Some(1_500_000));
        assert_eq!(ttl_micros(Some(Duration::MAX)), Some(MAX_TTL_MICROS as i64));
        assert!((MAX_TTL_MICROS as f64) < 2f64.powi(53));
    }

    #[test]
    fn urls_build_backends_without_io() {
        let backend =
            backend_from_url(CacheUrl::parse("postgres://u:pw@127.0.0.1:1/db?table=cache&pool_max=3").unwrap())
                .unwrap();
        let stats = backend.stats();
        assert_eq!(stats.details["table"], "\"cache\"");
        assert_eq!(stats.details["server"], "127.0.0.1:1/db");
        assert_eq!(stats.details["pool_max"], "3");
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
    fn lock_keys_differ_per_table() {
        assert_ne!(lock_key("cachestack:create:\"a\""), lock_key("cachestack:create:\"b\""));
    }
}
