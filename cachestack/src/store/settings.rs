//! What the configurations of the byte stores share, written once: [`StoreSettings`] (every byte
//! store: file, Redis, PostgreSQL, Memcached) and [`ServerTimeouts`] (the stores on a server),
//! with the fluent setters each configuration gets from them.

use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::layer::Layers;
use crate::value::envelope::ValueFormat;
use crate::value::Value;

/// The settings every byte store's configuration holds in its `settings` field
/// ([`FileConfig`](crate::FileConfig), [`RedisConfig`](crate::RedisConfig),
/// [`PostgresConfig`](crate::PostgresConfig), [`MemcachedConfig`](crate::MemcachedConfig)).
///
/// Each configuration also has a fluent setter per field (`with_namespace`, `with_name`,
/// `with_default_ttl`, `with_format`, `with_silent`), and URLs set them with the options of the
/// same names (`ttl` for `default_ttl`; `codec`, `compression`, `secret`/`secret_env` and
/// `max_value_bytes` for `format`).
///
/// ```
/// use std::time::Duration;
/// use cachestack::{FileConfig, StoreSettings};
///
/// // Fluent:
/// let config = FileConfig::new("/var/cache/app")
///     .with_namespace("reports")
///     .with_default_ttl(Duration::from_secs(3600));
/// assert_eq!(config.settings.namespace, "reports");
///
/// // Or assign the fields, starting from the store's defaults:
/// let mut config = FileConfig::new("/var/cache/app");
/// config.settings = StoreSettings { namespace: "reports".into(), silent: true, ..config.settings };
/// assert_eq!(config.settings.name, "file");
/// ```
///
/// `Debug` never shows the [signing secret](crate::Signer) of `format` (it reads `Signer(<redacted>)`).
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// This cache's part of a medium that several caches may share: the keys (or rows, or
    /// directory) of other namespaces are never read, and [`Backend::clear`](crate::Backend::clear)
    /// empties only this one. Default `"default"`. Each store says which names it accepts.
    pub namespace: String,
    /// Name shown in stats, logs and errors. Default: the store's kind (`"file"`, `"redis"`,
    /// `"postgres"`, `"memcached"`).
    pub name: String,
    /// TTL of writes that give none ([`Expiry::Default`](crate::Expiry::Default)). `None`
    /// (default): such entries never expire, though a bounded store may still evict them.
    pub default_ttl: Option<Duration>,
    /// Codec, compression, signing and size limit of stored values (the envelope each value is
    /// sealed in).
    pub format: ValueFormat,
    /// Turn failures into misses and no-ops (counted in stats and logged at a bounded rate)
    /// instead of returning them: the [`Silent`](crate::layer::Silent) layer. Default `false`.
    pub silent: bool,
}

impl StoreSettings {
    /// The defaults of a store named `name`: namespace `"default"`, no default TTL, the default
    /// [`ValueFormat`], not silent.
    ///
    /// ```
    /// let settings = cachestack::StoreSettings::new("sessions");
    /// assert_eq!((settings.name.as_str(), settings.namespace.as_str()), ("sessions", "default"));
    /// assert!(settings.default_ttl.is_none() && !settings.silent);
    /// ```
    pub fn new(name: impl Into<String>) -> Self {
        StoreSettings {
            namespace: "default".into(),
            name: name.into(),
            default_ttl: None,
            format: ValueFormat::default(),
            silent: false,
        }
    }

    /// Seals `value` for `key` in this cache's namespace (a signature covers both).
    #[cfg_attr(not(any(feature = "file", feature = "redis", feature = "postgres")), allow(dead_code))]
    pub(crate) fn seal(&self, key: &str, value: &Value, expires: Option<SystemTime>) -> Result<Vec<u8>> {
        self.format.seal_in(&self.namespace, key, value, expires)
    }

    /// Opens what [`StoreSettings::seal`] sealed for `key` in this cache's namespace.
    #[cfg_attr(not(any(feature = "file", feature = "redis", feature = "postgres")), allow(dead_code))]
    pub(crate) fn open(&self, key: &str, bytes: &[u8]) -> Result<(Value, Option<SystemTime>)> {
        self.format.open_in(&self.namespace, key, bytes)
    }

    /// The layers these settings select, with `timeout` as the operation bound.
    pub(crate) fn layers(&self, timeout: Option<Duration>) -> Layers {
        Layers { silent: self.silent, timeout, breaker: None }
    }
}

/// The time bounds of a store on a server ([`RedisConfig`](crate::RedisConfig),
/// [`PostgresConfig`](crate::PostgresConfig), [`MemcachedConfig`](crate::MemcachedConfig)), in
/// their `timeouts` field. Set them with `with_timeout` / `with_connect_timeout`, or the URL
/// options `timeout` / `connect_timeout` (`250ms`, `2s`). Both must be greater than zero.
///
/// ```
/// use std::time::Duration;
/// use cachestack::ServerTimeouts;
///
/// // A configuration's own defaults, with a tighter operation bound (what
/// // `RedisConfig::new(url).with_timeout(Duration::from_millis(250))` does):
/// let defaults = ServerTimeouts::new(Duration::from_secs(1), Duration::from_secs(2));
/// let timeouts = ServerTimeouts { operation: Duration::from_millis(250), ..defaults };
/// assert_eq!(timeouts.connect, Duration::from_secs(2));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerTimeouts {
    /// Bound on each operation, waiting for a connection included: the
    /// [`Timeout`](crate::layer::Timeout) layer. A call returns within it, with
    /// [`Error::Timeout`] at the latest. Each store documents where else it applies it.
    pub operation: Duration,
    /// Bound on opening a connection to a server (for PostgreSQL: on getting one from the pool,
    /// opening it included).
    pub connect: Duration,
}

impl ServerTimeouts {
    /// `operation` per operation, `connect` per connection.
    ///
    /// ```
    /// use std::time::Duration;
    /// let timeouts = cachestack::ServerTimeouts::new(Duration::from_secs(1), Duration::from_secs(2));
    /// assert_eq!(timeouts.operation, Duration::from_secs(1));
    /// ```
    pub fn new(operation: Duration, connect: Duration) -> Self {
        ServerTimeouts { operation, connect }
    }

    /// Checks that both bounds are greater than zero; `store` prefixes the error.
    #[cfg_attr(
        not(any(feature = "redis", feature = "postgres", feature = "memcached", feature = "object-store")),
        allow(dead_code)
    )]
    pub(crate) fn validate(&self, store: &str) -> Result<()> {
        for (option, value) in [("timeout", self.operation), ("connect_timeout", self.connect)] {
            if value.is_zero() {
                return Err(Error::config(format!("{store}: {option} must be greater than zero")));
            }
        }
        Ok(())
    }
}

/// The fluent setters of a store configuration's [`StoreSettings`] (field `settings`), and with
/// `timeouts` those of its [`ServerTimeouts`] (field `timeouts`): one `impl` block per use.
macro_rules! settings_setters {
    ($config:ty) => {
        impl $config {
            /// Sets [`StoreSettings::namespace`](crate::StoreSettings::namespace).
            pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
                self.settings.namespace = namespace.into();
                self
            }

            /// Sets [`StoreSettings::name`](crate::StoreSettings::name).
            pub fn with_name(mut self, name: impl Into<String>) -> Self {
                self.settings.name = name.into();
                self
            }

            /// Sets [`StoreSettings::default_ttl`](crate::StoreSettings::default_ttl).
            pub fn with_default_ttl(mut self, ttl: std::time::Duration) -> Self {
                self.settings.default_ttl = Some(ttl);
                self
            }

            /// Sets [`StoreSettings::format`](crate::StoreSettings::format).
            pub fn with_format(mut self, format: $crate::ValueFormat) -> Self {
                self.settings.format = format;
                self
            }

            /// Sets [`StoreSettings::silent`](crate::StoreSettings::silent).
            pub fn with_silent(mut self, silent: bool) -> Self {
                self.settings.silent = silent;
                self
            }
        }
    };
    ($config:ty, timeouts) => {
        $crate::store::settings_setters!($config);

        impl $config {
            /// Sets [`ServerTimeouts::operation`](crate::ServerTimeouts::operation) (URL option
            /// `timeout`).
            pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
                self.timeouts.operation = timeout;
                self
            }

            /// Sets [`ServerTimeouts::connect`](crate::ServerTimeouts::connect) (URL option
            /// `connect_timeout`).
            pub fn with_connect_timeout(mut self, timeout: std::time::Duration) -> Self {
                self.timeouts.connect = timeout;
                self
            }
        }
    };
}
#[cfg_attr(
    not(any(feature = "redis", feature = "postgres", feature = "memcached", feature = "object-store")),
    allow(unused_imports)
)]
pub(crate) use settings_setters;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_timeouts_are_config_errors_naming_the_option() {
        let ok = ServerTimeouts::new(Duration::from_secs(1), Duration::from_secs(2));
        ok.validate("redis").unwrap();
        let cases = [
            (ServerTimeouts { operation: Duration::ZERO, ..ok }, "redis: timeout must be greater than zero"),
            (ServerTimeouts { connect: Duration::ZERO, ..ok }, "redis: connect_timeout must be greater than zero"),
        ];
        for (timeouts, expected) in cases {
            let err = timeouts.validate("redis").unwrap_err();
            assert!(matches!(err, Error::Config { .. }) && err.to_string().contains(expected), "{err}");
        }
    }

    #[test]
    fn settings_select_their_layers() {
        let settings = StoreSettings { silent: true, ..StoreSettings::new("x") };
        let layers = settings.layers(Some(Duration::from_secs(1)));
        assert!(layers.silent && layers.breaker.is_none());
        assert_eq!(layers.timeout, Some(Duration::from_secs(1)));
        assert!(!StoreSettings::new("x").layers(None).silent);
    }
}
