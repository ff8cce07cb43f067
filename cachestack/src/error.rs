//! The one error type of cachestack.

use std::time::Duration;

/// A boxed error from a backend's client library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Shorthand for `Result<T, cachestack::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a cache operation.
///
/// The enum is `#[non_exhaustive]`: match the variants you care about and keep a catch-all arm.
///
/// ```
/// use cachestack::Error;
///
/// fn describe(err: &Error) -> &'static str {
///     match err {
///         Error::BackendUnavailable { .. } | Error::Timeout { .. } => "the store is down",
///         Error::Codec { .. } | Error::InvalidValue { .. } => "a stored value was unusable",
///         Error::Config { .. } | Error::FeatureDisabled { .. } => "the cache is misconfigured",
///         _ => "something else",
///     }
/// }
/// assert_eq!(describe(&Error::config("bad ttl")), "the cache is misconfigured");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backend could not be reached (connection refused, dropped, pool exhausted).
    #[error("cache backend `{backend}` is unavailable: {source}")]
    BackendUnavailable {
        /// Name of the backend.
        backend: String,
        /// What the client library reported.
        #[source]
        source: BoxError,
    },

    /// An operation did not finish within its deadline.
    #[error("cache backend `{backend}` timed out after {after:?}")]
    Timeout {
        /// Name of the backend.
        backend: String,
        /// The deadline that passed.
        after: Duration,
    },

    /// A value could not be serialised or deserialised with its codec.
    #[error("codec error ({codec}): {message}")]
    Codec {
        /// Codec name (`postcard`, `json`, ...).
        codec: &'static str,
        /// What went wrong.
        message: String,
    },

    /// Stored bytes failed the envelope's checks: truncated, corrupt, tampered, written for another
    /// type, or over the size limit. Readers treat this as a miss.
    #[error("invalid stored value: {reason}")]
    InvalidValue {
        /// Why the value was rejected.
        reason: String,
    },

    /// A value is larger than the backend (or the configured limit) accepts.
    #[error("value of {size} bytes exceeds the limit of {limit} bytes")]
    ValueTooLarge {
        /// Size of the encoded value.
        size: usize,
        /// The limit in force.
        limit: usize,
    },

    /// The configuration (a URL, a TTL string, an option) is invalid.
    #[error("invalid cache configuration: {message}")]
    Config {
        /// What is wrong, in words that name the offending input.
        message: String,
    },

    /// A URL names a backend whose cargo feature is not enabled.
    #[error("`{scheme}://` needs the `{feature}` cargo feature of cachestack, which is not enabled")]
    FeatureDisabled {
        /// The URL scheme.
        scheme: String,
        /// The cargo feature that provides it.
        feature: &'static str,
    },

    /// No cache is registered under this name.
    #[error("no cache named `{name}` is registered")]
    UnknownCache {
        /// The name that was looked up.
        name: String,
    },

    /// An I/O error in a local store (file backend).
    #[error("I/O error in cache backend `{backend}`: {source}")]
    Io {
        /// Name of the backend.
        backend: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The store cannot do this operation (Memcached has no key listing, a custom store has no
    /// atomic counter...). Never a store failure: silent mode passes it on and circuit breakers
    /// do not count it.
    #[error("cache store `{store}` does not support `{op}`")]
    Unsupported {
        /// The operation (`incr`, `delete_matching`...).
        op: &'static str,
        /// Name of the store.
        store: String,
    },

    /// Any other backend error, mapped from the backend's client library.
    #[error("cache backend `{backend}` failed: {source}")]
    Generic {
        /// Name of the backend.
        backend: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// A configuration error with the given message.
    pub fn config(message: impl Into<String>) -> Self {
        Error::Config { message: message.into() }
    }

    /// The store `store` cannot do `op`.
    ///
    /// ```
    /// let err = cachestack::Error::unsupported("incr", "memcached");
    /// assert_eq!(err.kind(), "unsupported");
    /// assert_eq!(err.to_string(), "cache store `memcached` does not support `incr`");
    /// ```
    pub fn unsupported(op: &'static str, store: impl Into<String>) -> Self {
        Error::Unsupported { op, store: store.into() }
    }

    /// A compare-and-set operation that gave up after `attempts` rounds because other writers kept
    /// changing the entry.
    #[cfg_attr(
        not(any(
            feature = "file",
            feature = "memcached",
            feature = "postgres",
            feature = "redis",
            feature = "object-store"
        )),
        allow(dead_code)
    )]
    pub(crate) fn contended(backend: &str, op: &str, attempts: usize) -> Self {
        Error::Generic {
            backend: backend.to_owned(),
            source: format!("`{op}` gave up: the entry kept changing over {attempts} attempts").into(),
        }
    }

    /// True for [`Error::Unsupported`].
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Error::Unsupported { .. })
    }

    /// A stored value that failed its checks.
    pub fn invalid(reason: impl Into<String>) -> Self {
        Error::InvalidValue { reason: reason.into() }
    }

    /// True for errors that mean the store itself is unreachable or slow (worth a retry or a
    /// circuit breaker), false for errors about a particular value or the configuration.
    ///
    /// ```
    /// use cachestack::Error;
    /// use std::time::Duration;
    /// assert!(Error::Timeout { backend: "redis".into(), after: Duration::from_secs(1) }.is_unavailable());
    /// assert!(!Error::invalid("truncated").is_unavailable());
    /// ```
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::BackendUnavailable { .. } | Error::Timeout { .. })
    }

    /// True for a value that could not be decoded: readers treat it as a miss.
    pub fn is_invalid_value(&self) -> bool {
        matches!(self, Error::InvalidValue { .. } | Error::Codec { .. })
    }

    /// A short name of the kind of error (`unavailable`, `timeout`, `codec`...), for logs and
    /// counters whose labels must stay few.
    ///
    /// ```
    /// assert_eq!(cachestack::Error::config("x").kind(), "config");
    /// ```
    pub fn kind(&self) -> &'static str {
        match self {
            Error::BackendUnavailable { .. } => "unavailable",
            Error::Timeout { .. } => "timeout",
            Error::Codec { .. } => "codec",
            Error::InvalidValue { .. } => "invalid_value",
            Error::ValueTooLarge { .. } => "value_too_large",
            Error::Config { .. } => "config",
            Error::FeatureDisabled { .. } => "feature_disabled",
            Error::UnknownCache { .. } => "unknown_cache",
            Error::Io { .. } => "io",
            Error::Unsupported { .. } => "unsupported",
            Error::Generic { .. } => "generic",
        }
    }
}
