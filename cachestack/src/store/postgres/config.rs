//! [`PostgresConfig`]: what the PostgreSQL backend connects to and how it stores entries.

use std::time::Duration;

use crate::error::{Error, Result};
use std::sync::Arc;

use crate::store::{Backend, ServerTimeouts, StoreSettings};
use crate::url::{CacheUrl, ConnectionUrl, Scheme, Shared, SharedFields, SharedOptions};

/// Longest identifier PostgreSQL keeps without truncating it (`NAMEDATALEN - 1`).
pub(crate) const MAX_IDENTIFIER_BYTES: usize = 63;

/// Longest namespace, in bytes (it is part of every row's primary key).
pub(crate) const MAX_NAMESPACE_BYTES: usize = 256;

/// Connection parameters that sqlx reads from a `postgres://` URL and that cachestack passes
/// through unchanged.
pub(crate) const CONNECTION_OPTIONS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "application_name",
    "options",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "statement-cache-capacity",
];

/// `postgres://user@host/db?table=cache` (or `postgresql://`): the PostgreSQL store's entry in
/// the scheme table. Connection parameters ([`CONNECTION_OPTIONS`]) stay in the connection URL.
pub(crate) const SCHEME: Scheme = Scheme {
    names: crate::store::POSTGRES_NAMES,
    feature: "postgres",
    shared: Shared::NETWORK,
    options: &[
        "table",
        "schema",
        "unlogged",
        "create_table",
        "pool_max",
        "pool_min",
        "idle_timeout",
        "max_entries",
        "max_bytes",
        "trim_interval",
        "batch_size",
    ],
    open: Some(open_url),
};

fn open_url(url: &mut CacheUrl, shared: SharedOptions) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(crate::store::postgres::PostgresBackend::new(config_from_url(url, shared)?)?))
}

/// Settings of a [`PostgresBackend`](crate::PostgresBackend).
///
/// Start from [`PostgresConfig::new`] (or `Default`) and chain the setters, or assign the public
/// fields; `Debug` never shows the password:
///
/// ```
/// use std::time::Duration;
/// use cachestack::PostgresConfig;
///
/// let config = PostgresConfig::new("postgres://app:secret@127.0.0.1:5432/app")
///     .with_table("app_cache")
///     .with_namespace("users")
///     .with_default_ttl(Duration::from_secs(300));
/// assert!(!format!("{config:?}").contains("secret"));
/// ```
///
/// Struct update works too, the shared [`StoreSettings`] included:
///
/// ```
/// use cachestack::{PostgresConfig, StoreSettings};
///
/// let defaults = PostgresConfig::new("postgres://app@127.0.0.1:5432/app");
/// let config = PostgresConfig {
///     table: "app_cache".into(),
///     pool_max: 8,
///     settings: StoreSettings { namespace: "users".into(), ..defaults.settings },
///     ..defaults
/// };
/// assert_eq!((config.settings.name.as_str(), config.pool_max), ("postgres", 8));
/// ```
///
/// The same settings as a URL (see [`PostgresConfig::from_url`]):
/// `postgres://app@127.0.0.1/app?table=app_cache&namespace=users&pool_max=8`.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// The connection URL, `postgres://user:password@host:port/database`. Connection parameters
    /// sqlx understands (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`, `application_name`,
    /// `options`, ...) may follow after `?`; anything else there is a configuration error. TLS
    /// (`sslmode=require`, `verify-ca`, `verify-full`) needs the `postgres-tls` feature.
    /// `Debug` shows it without the password.
    pub url: ConnectionUrl,
    /// Schema of the cache table; `None` uses the connection's `search_path` (normally `public`).
    /// Created if missing (when [`create_table`](Self::create_table) is set).
    pub schema: Option<String>,
    /// Name of the cache table: lowercase ASCII letters, digits and `_`, starting with a letter or
    /// `_`, at most 63 bytes. Names are checked, then quoted; they are never spliced raw into SQL.
    pub table: String,
    /// Create the table as `UNLOGGED`: writes skip the write-ahead log, so they are faster, but
    /// **PostgreSQL empties an unlogged table after a crash** (not after a clean restart), and
    /// unlogged tables are not replicated to standbys. Fine for a cache, which can refill itself;
    /// only affects a table that cachestack creates.
    pub unlogged: bool,
    /// Create the schema, table and indexes on first use if they are missing (default). When
    /// false, a missing table is an [`Error::Config`].
    pub create_table: bool,
    /// Namespace, name (default `postgres`), default TTL, value format, silent mode. The
    /// namespace is a column of every row (at most 256 bytes, no NUL): several caches can share
    /// one table, and each sees, clears and trims only its own namespace.
    pub settings: StoreSettings,
    /// Per operation (default 2 s), waiting for a connection and preparing the table included;
    /// also the bound of each batch of `purge_expired` and trimming, and sent to the server as
    /// `statement_timeout` (so a statement whose connection was closed stops there too). And
    /// for getting a connection from the pool, opening one included (default 2 s).
    pub timeouts: ServerTimeouts,
    /// Most connections in the pool.
    pub pool_max: u32,
    /// Connections the pool keeps open even when idle, once it has opened them (connections
    /// are opened on demand; sqlx's idle reaper then keeps this many).
    pub pool_min: u32,
    /// Idle connections above `pool_min` are closed after this long (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Bound on the entries of this namespace. Above it, a background task deletes the oldest
    /// rows (by write time). `None`: unbounded.
    pub max_entries: Option<u64>,
    /// Bound on the bytes (keys and stored values) of this namespace, trimmed like `max_entries`.
    pub max_bytes: Option<u64>,
    /// When a size bound is set, how often the background task checks it even without local
    /// writes (other processes write too). It also runs after every `max_entries / 10` local
    /// writes (every 1000 for a bytes-only bound).
    pub trim_interval: Duration,
    /// Rows deleted per statement by `clear`, `purge_expired` and trimming.
    pub batch_size: u32,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: "postgres://127.0.0.1:5432/postgres".into(),
            schema: None,
            table: "cachestack".into(),
            unlogged: false,
            create_table: true,
            settings: StoreSettings::new("postgres"),
            timeouts: ServerTimeouts::new(Duration::from_secs(2), Duration::from_secs(2)),
            pool_max: 10,
            pool_min: 0,
            idle_timeout: Some(Duration::from_secs(600)),
            max_entries: None,
            max_bytes: None,
            trim_interval: Duration::from_secs(60),
            batch_size: 5000,
        }
    }
}

crate::store::settings_setters!(PostgresConfig, timeouts);

impl PostgresConfig {
    /// Default settings for the server at `url`.
    ///
    /// ```
    /// let config = cachestack::PostgresConfig::new("postgres://postgres@127.0.0.1/test");
    /// assert_eq!(config.table, "cachestack");
    /// ```
    pub fn new(url: impl Into<String>) -> Self {
        PostgresConfig { url: url.into().into(), ..Default::default() }
    }

    /// Sets [`PostgresConfig::table`].
    pub fn with_table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// Sets [`PostgresConfig::schema`].
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Reads a cache URL: the connection URL with cache options after `?`: the shared ones
    /// (`namespace`, `name`, `ttl`, `silent`, `codec`, `compression`, `secret`, `secret_env`,
    /// `max_value_bytes`: [`StoreSettings`]; `timeout`, `connect_timeout`: [`ServerTimeouts`])
    /// and PostgreSQL's own:
    ///
    /// | option | field |
    /// |---|---|
    /// | `table`, `schema`, `unlogged`, `create_table` | same name |
    /// | `pool_max`, `pool_min`, `batch_size`, `max_entries`, `max_bytes` | same name |
    /// | `idle_timeout`, `trim_interval` | durations (`500ms`, `10m`) |
    ///
    /// Connection parameters (`sslmode`, `application_name`, ...) stay in [`PostgresConfig::url`].
    /// An unknown option is an [`Error::Config`] that lists the valid ones.
    ///
    /// ```
    /// use cachestack::PostgresConfig;
    ///
    /// let config = PostgresConfig::from_url("postgres://user@host/db?table=cache&pool_max=8&sslmode=prefer").unwrap();
    /// assert_eq!((config.table.as_str(), config.pool_max), ("cache", 8));
    /// assert_eq!(config.url, "postgres://user@host/db?sslmode=prefer");
    ///
    /// let err = PostgresConfig::from_url("postgres://host/db?table=x;drop").unwrap_err();
    /// assert!(err.to_string().contains("table name"));
    /// ```
    pub fn from_url(text: &str) -> Result<Self> {
        SCHEME.config_from_text(text, config_from_url)
    }

    /// Checks every setting; the backend calls this before connecting.
    pub(crate) fn validate(&self) -> Result<()> {
        if let Some(schema) = &self.schema {
            validate_identifier("schema", schema)?;
        }
        validate_identifier("table", &self.table)?;
        let namespace = &self.settings.namespace;
        if namespace.len() > MAX_NAMESPACE_BYTES {
            return Err(Error::config(format!(
                "namespace is {} bytes long; the limit is {MAX_NAMESPACE_BYTES}",
                namespace.len()
            )));
        }
        if namespace.contains('\0') {
            return Err(Error::config("namespace contains a NUL character, which PostgreSQL text cannot hold"));
        }
        if self.pool_max == 0 {
            return Err(Error::config("pool_max must be at least 1"));
        }
        if self.pool_min > self.pool_max {
            return Err(Error::config(format!(
                "pool_min ({}) is larger than pool_max ({})",
                self.pool_min, self.pool_max
            )));
        }
        self.timeouts.validate("postgres")?;
        if self.trim_interval.is_zero() {
            return Err(Error::config("trim_interval must be greater than zero"));
        }
        if self.batch_size == 0 {
            return Err(Error::config("batch_size must be at least 1"));
        }
        if self.max_entries == Some(0) || self.max_bytes == Some(0) {
            return Err(Error::config(
                "max_entries and max_bytes must be greater than zero (leave them unset for no bound)",
            ));
        }
        Ok(())
    }
}

/// The configuration a URL describes, its shared options already parsed, checked: the store's
/// own options are taken out of `url`, and the connection URL with sqlx's own parameters is left
/// in `config.url`.
pub(crate) fn config_from_url(url: &mut CacheUrl, shared: SharedOptions) -> Result<PostgresConfig> {
    let mut config = PostgresConfig::default();
    shared.apply(SharedFields::settings(&mut config.settings).with_timeouts(&mut config.timeouts));
    if let Some(table) = url.take("table") {
        config.table = table;
    }
    config.schema = url.take("schema");
    if let Some(unlogged) = url.take_bool("unlogged")? {
        config.unlogged = unlogged;
    }
    if let Some(create) = url.take_bool("create_table")? {
        config.create_table = create;
    }
    if let Some(n) = url.take_parsed::<u32>("pool_max")? {
        config.pool_max = n;
    }
    if let Some(n) = url.take_parsed::<u32>("pool_min")? {
        config.pool_min = n;
    }
    if let Some(n) = url.take_parsed::<u32>("batch_size")? {
        config.batch_size = n;
    }
    config.max_entries = url.take_parsed::<u64>("max_entries")?;
    config.max_bytes = url.take_parsed::<u64>("max_bytes")?;
    if let Some(d) = url.take_ttl("idle_timeout")? {
        config.idle_timeout = Some(d);
    }
    if let Some(d) = url.take_ttl("trim_interval")? {
        config.trim_interval = d;
    }
    // What is left for the connection: the authority and path, and sqlx's own parameters.
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for name in CONNECTION_OPTIONS {
        if let Some(value) = url.take(name) {
            query.append_pair(name, &value);
            any = true;
        }
    }
    let mut connection = format!("{}://{}", url.scheme, url.rest);
    if any {
        connection.push('?');
        connection.push_str(&query.finish());
    }
    config.url = connection.into();
    config.validate()?;
    Ok(config)
}

/// Checks a schema or table name: lowercase ASCII letters, digits and `_`, starting with a letter
/// or `_`, at most 63 bytes. Such a name needs no escaping; it is still double-quoted in SQL.
pub(crate) fn validate_identifier(what: &str, name: &str) -> Result<()> {
    let shown: String = name.chars().take(80).collect();
    let shown = if shown.len() < name.len() { format!("{shown:?}...") } else { format!("{shown:?}") };
    let fail = |why: &str| {
        Err(Error::config(format!(
            "invalid {what} name {shown}: {why}; use lowercase ASCII letters, digits and `_`, starting with a letter or `_`, at most {MAX_IDENTIFIER_BYTES} bytes"
        )))
    };
    let Some(first) = name.chars().next() else {
        return fail("it is empty");
    };
    if name.len() > MAX_IDENTIFIER_BYTES {
        return fail(&format!("it is {} bytes long", name.len()));
    }
    if !(first.is_ascii_lowercase() || first == '_') {
        return fail(&format!("it starts with {first:?}"));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')) {
        return fail(&format!("it contains {bad:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_checked() {
        for good in ["cache", "_cache", "cache_2", "a", &"x".repeat(63)] {
            validate_identifier("table", good).unwrap();
        }
        let cases = [
            ("", "empty"),
            ("cache\"; DROP TABLE users; --", "contains '\"'"),
            ("cache;drop", "contains ';'"),
            ("my cache", "contains ' '"),
            ("Cache", "starts with 'C'"),
            ("1cache", "starts with '1'"),
            ("café", "contains 'é'"),
            ("a.b", "contains '.'"),
        ];
        for (name, why) in cases {
            let err = validate_identifier("table", name).unwrap_err();
            assert!(matches!(err, Error::Config { .. }), "{name}: {err:?}");
            let text = err.to_string();
            assert!(text.contains("invalid table name") && text.contains(why), "{name}: {text}");
        }
        let long = "x".repeat(100);
        let text = validate_identifier("schema", &long).unwrap_err().to_string();
        assert!(text.contains("invalid schema name") && text.contains("100 bytes long"), "{text}");
    }

    #[test]
    fn urls_split_cache_options_from_connection_parameters() {
        let config = PostgresConfig::from_url(
            "postgresql://app:pw@127.0.0.1:5433/db?table=cache&schema=caching&pool_max=8&pool_min=2&ttl=5m\
             &unlogged=true&namespace=users&timeout=250ms&connect_timeout=1s&max_entries=1000\
             &sslmode=prefer&application_name=svc&silent=true&codec=json&batch_size=10",
        )
        .unwrap();
        assert_eq!(config.table, "cache");
        assert_eq!(config.schema.as_deref(), Some("caching"));
        assert_eq!((config.pool_max, config.pool_min, config.batch_size), (8, 2, 10));
        assert_eq!(config.settings.default_ttl, Some(Duration::from_secs(300)));
        assert!(config.unlogged && config.settings.silent);
        assert_eq!(config.settings.namespace, "users");
        assert_eq!(config.timeouts, ServerTimeouts::new(Duration::from_millis(250), Duration::from_secs(1)));
        assert_eq!(config.max_entries, Some(1000));
        assert_eq!(config.settings.format.codec, crate::Codec::Json);
        assert_eq!(config.url, "postgresql://app:pw@127.0.0.1:5433/db?sslmode=prefer&application_name=svc");
        assert!(!format!("{config:?}").contains("pw"));
    }

    #[test]
    fn bad_urls_are_config_errors() {
        let cases = [
            ("postgres://h/db?table=a\"b", "invalid table name"),
            ("postgres://h/db?table=x%3Bdrop", "contains ';'"),
            ("postgres://h/db?schema=Public", "invalid schema name"),
            ("postgres://h/db?pool_max=0", "pool_max"),
            ("postgres://h/db?pool_max=lots", "pool_max=lots"),
            ("postgres://h/db?pool_min=5&pool_max=2", "pool_min"),
            ("postgres://h/db?timeout=0s", "timeout=0s"),
            ("postgres://h/db?ttl=forever", "ttl=forever"),
            ("postgres://h/db?max_entries=0", "max_entries"),
            ("postgres://h/db?unlogged=maybe", "true or false"),
            ("postgres://h/db?colour=blue", "valid options: namespace, ttl"),
            ("redis://h/0", "is not a postgres://"),
        ];
        crate::url::assert_config_errors(&cases, PostgresConfig::from_url);
        let long = format!("postgres://h/db?table={}", "t".repeat(100));
        assert!(PostgresConfig::from_url(&long).unwrap_err().to_string().contains("100 bytes long"));
    }

    #[test]
    fn other_settings_are_validated() {
        let nul = PostgresConfig::default().with_namespace("a\0b");
        assert!(nul.validate().unwrap_err().to_string().contains("NUL"));
        let long = PostgresConfig::default().with_namespace("n".repeat(300));
        assert!(long.validate().unwrap_err().to_string().contains("namespace"));
        PostgresConfig::default().validate().unwrap();
    }
}
