//! # cachestack
//!
//! Memoization for Rust services: put `#[cached]` on a function and its results are cached in
//! memory, on disk, in Redis, PostgreSQL or Memcached, or in a tiered stack of them, with single
//! flight against stampedes.
//!
//! The runtime half, usable on its own:
//!
//! ```
//! use cachestack::{Cache, MemoryBackend};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let cache = Cache::new(MemoryBackend::with_capacity(10_000));
//! cache.set("user:1", &"Ada".to_string(), None).await?;
//! assert_eq!(cache.get::<String>("user:1").await?.as_deref(), Some("Ada"));
//! # Ok::<(), cachestack::Error>(())
//! # }).unwrap();
//! ```
//!
//! ## Cargo features
//!
//! | feature | what it adds |
//! |---|---|
//! | `macros` (default) | `#[cached]` and `#[invalidate]` |
//! | `memory` (default) | [`MemoryBackend`] on quick_cache |
//! | `file` (default) | `FileBackend`: one file per key, atomic writes |
//! | `json`, `msgpack`, `bincode` | extra [`Codec`]s (postcard is always there) |
//! | `zstd`, `lz4` | payload [`Compression`] |
//! | `signing` | HMAC-SHA256 [`Signer`] for values in shared stores |
//! | `redis` | `RedisBackend`: Redis, single server or Redis Cluster, on redis-rs; the [`backplane`] over Redis pub/sub |
//! | `redis-tls` | TLS (rustls) for `redis`: `rediss://` |
//! | `postgres` | `PostgresBackend`: a table in PostgreSQL, on sqlx; the [`backplane`] over LISTEN/NOTIFY |
//! | `postgres-tls` | TLS (rustls) for `postgres` |
//! | `conformance` | [`conformance`]: the suite every store passes, to run against yours |
//! | `memcached` | `MemcachedBackend`: one or more memcached servers, pooled, on memcache-async |
//! | `object-store` | `ObjectStoreBackend`: S3 and S3-compatible stores (or any `object_store` store), on object_store |
//! | `metrics` | `cachestack::metrics`: counters, gauges and latency histograms through the `metrics` facade |
//! | `tower` | `cachestack::http`: a `tower` layer caching HTTP responses (GET, HEAD) in any cache |
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod backplane;
mod cache;
#[cfg(feature = "conformance")]
pub mod conformance;
mod connect;
mod error;
mod expiry;
#[cfg(feature = "tower")]
pub mod http;
pub mod layer;
mod observe;
mod pattern;
pub mod registry;
mod resilience;
mod routes;
pub mod rt;
pub mod singleflight;
mod stack;
mod store;
mod striped;
mod switches;
pub mod tags;
mod ttl;
mod url;
mod value;

/// Runtime support for the code the macros generate; not a public API.
#[doc(hidden)]
#[path = "macro_support/mod.rs"]
pub mod __private;

pub use async_trait::async_trait;
pub use backplane::{Backplane, BackplaneStats};
pub use cache::Cache;
pub use connect::backend_from_url;
pub use error::{BoxError, Error, Result};
pub use expiry::{Deadline, Expiry};
/// The `object_store` crate the [`ObjectStoreBackend`] is built on, for
/// [`ObjectStoreBackend::with_store`] (same version, same features).
#[cfg(feature = "object-store")]
pub use object_store;
pub use observe::manifest::{manifest, FnKind, FunctionInfo, Manifest};
#[cfg(feature = "metrics")]
pub use observe::metrics;
pub use pattern::KeyPattern;
pub use registry::CacheRegistry;
pub use resilience::{
    CallStatus, Clock, ComputeOptions, ComputeOptionsBuilder, ComputeStats, LockMode, ManualClock, RefreshAhead,
    SystemClock, Timeout, DEFAULT_LOCK_LEASE, DEFAULT_STALE_THROTTLE,
};
pub use stack::{BreakerConfig, OnFull, TieredCache, TieredCacheBuilder, WriteBackConfig, WriteStrategy};
#[cfg(feature = "file")]
pub use store::file::{FileBackend, FileConfig, FileStore};
#[cfg(feature = "memcached")]
pub use store::memcached::{MemcachedBackend, MemcachedConfig, MemcachedStore};
#[cfg(feature = "memory")]
pub use store::memory::{MemoryBackend, MemoryConfig, MemoryEngine};
pub use store::null::NullBackend;
#[cfg(feature = "object-store")]
pub use store::object::{ObjectStoreBackend, ObjectStoreCache, ObjectStoreConfig, S3Options};
#[cfg(feature = "postgres")]
pub use store::postgres::{PostgresBackend, PostgresConfig, PostgresStore};
#[cfg(feature = "redis")]
pub use store::redis::{RedisBackend, RedisConfig, RedisStore, RedisTlsConfig};
pub use store::{
    AtomicOps, Backend, BackendStats, Counters, Entry, KeyVisitor, LocalBackend, LocalRead, LockGuard, LockOps,
    Signing, PATTERN_BATCH,
};
#[cfg(any(
    feature = "file",
    feature = "redis",
    feature = "postgres",
    feature = "memcached",
    feature = "object-store"
))]
pub use store::{ServerTimeouts, StoreSettings};
pub use ttl::{format_ttl, parse_ttl};
pub use url::{redact_url, ConnectionUrl};
pub use value::codec::Codec;
pub use value::envelope::{remaining, Compression, Signer, ValueFormat};
pub use value::{type_fingerprint, Cacheable, Encoded, Value};

pub use __private::FnStats;
#[cfg(feature = "macros")]
pub use cachestack_macros::{cached, invalidate};
pub use singleflight::SingleFlight;
pub use switches::{bypass, bypass_async, Commands};
