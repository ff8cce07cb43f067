//! Stores: the [`Backend`] trait and one module per medium. A store does I/O against its medium
//! and maps its errors into [`crate::Error`]; every concern shared by all stores (silent mode,
//! timeouts, circuit breaking) is a [layer](crate::layer) around it.

mod atomic;
mod backend;
#[cfg(any(feature = "memcached", feature = "object-store"))]
pub(crate) mod cas;
#[cfg(any(feature = "memcached", feature = "object-store"))]
pub(crate) mod counted;
#[cfg(feature = "file")]
pub(crate) mod file;
mod forward;
#[cfg(any(feature = "file", feature = "object-store"))]
mod framed;
mod lock;
#[cfg(feature = "memcached")]
pub(crate) mod memcached;
#[cfg(feature = "memory")]
pub(crate) mod memory;
pub(crate) mod null;
#[cfg(feature = "object-store")]
pub(crate) mod object;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(any(feature = "redis", feature = "postgres"))]
mod recycle;
#[cfg(feature = "redis")]
pub(crate) mod redis;
#[cfg(any(feature = "file", feature = "redis", feature = "postgres", feature = "memcached", feature = "object-store"))]
mod settings;
mod stats;

pub use atomic::AtomicOps;
pub(crate) use backend::delete_listed;
pub use backend::{Backend, Entry, KeyVisitor, LocalBackend, LocalRead, Signing, PATTERN_BATCH};
#[cfg(any(feature = "memcached", feature = "object-store"))]
pub(crate) use counted::KeyIo;
pub(crate) use forward::forward_backend;
#[cfg(feature = "memcached")]
pub(crate) use lock::lease_secs;
#[cfg(any(feature = "redis", feature = "memcached"))]
pub(crate) use lock::{token, TokenLease, TokenLock};
pub use lock::{LockGuard, LockOps};
#[cfg(any(
    feature = "file",
    feature = "redis",
    feature = "postgres",
    feature = "memcached",
    feature = "object-store"
))]
pub(crate) use settings::settings_setters;
#[cfg(any(
    feature = "file",
    feature = "redis",
    feature = "postgres",
    feature = "memcached",
    feature = "object-store"
))]
pub use settings::{ServerTimeouts, StoreSettings};
pub(crate) use stats::hit_ratio;
pub use stats::{BackendStats, Counters};

use crate::url::Scheme;

/// The scheme table: each store's entry, or, for a store whose cargo feature is off, an entry
/// that names the feature. [`crate::backend_from_url`] dispatches on it.
pub(crate) static SCHEMES: [Scheme; 7] = [MEMORY, FILE, NULL, REDIS, POSTGRES, MEMCACHED, OBJECT_STORE];

const MEMORY_NAMES: &[&str] = &["mem", "memory"];
const FILE_NAMES: &[&str] = &["file"];
const REDIS_NAMES: &[&str] = &["redis", "rediss", "redis+cluster", "rediss+cluster"];
const POSTGRES_NAMES: &[&str] = &["postgres", "postgresql"];
const MEMCACHED_NAMES: &[&str] = &["memcached", "memcache"];
const OBJECT_STORE_NAMES: &[&str] = &["s3"];

#[cfg(feature = "memory")]
use memory::SCHEME as MEMORY;
use null::SCHEME as NULL;
#[cfg(not(feature = "memory"))]
const MEMORY: Scheme = Scheme::disabled(MEMORY_NAMES, "memory");
#[cfg(feature = "file")]
use file::SCHEME as FILE;
#[cfg(not(feature = "file"))]
const FILE: Scheme = Scheme::disabled(FILE_NAMES, "file");
#[cfg(feature = "redis")]
use redis::SCHEME as REDIS;
#[cfg(not(feature = "redis"))]
const REDIS: Scheme = Scheme::disabled(REDIS_NAMES, "redis");
#[cfg(feature = "postgres")]
use postgres::SCHEME as POSTGRES;
#[cfg(not(feature = "postgres"))]
const POSTGRES: Scheme = Scheme::disabled(POSTGRES_NAMES, "postgres");
#[cfg(feature = "memcached")]
use memcached::SCHEME as MEMCACHED;
#[cfg(not(feature = "memcached"))]
const MEMCACHED: Scheme = Scheme::disabled(MEMCACHED_NAMES, "memcached");
#[cfg(feature = "object-store")]
use object::SCHEME as OBJECT_STORE;
#[cfg(not(feature = "object-store"))]
const OBJECT_STORE: Scheme = Scheme::disabled(OBJECT_STORE_NAMES, "object-store");
