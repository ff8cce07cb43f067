//! [`LockOps`]: a store's lock primitive, for single flight across processes
//! (`lock = "distributed"`): one leader per key among every process that shares the store.
//!
//! A store that has one implements [`LockOps`] and returns it from
//! [`Backend::locks`](crate::Backend::locks): Redis (`SET NX PX` with a random token, renewed
//! and released by compare-and-extend / compare-and-delete scripts), PostgreSQL (a session-level
//! advisory lock held on a connection of its own) and Memcached (`add` with an expiry, renewed
//! and released by `cas` against the token). In-process and local stores (memory, file, null) and
//! the object store have none: asking them for a distributed lock is a configuration error.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;

/// A store's lock primitive: one holder per lock name among every process sharing the store.
///
/// The lock is a lease: it ends when its holder releases it, when its lease runs out without a
/// renewal (Redis, Memcached), or when the holder's connection dies (PostgreSQL). So a holder
/// that is killed never keeps it forever, and a holder that is merely slow must renew it (the
/// resilience engine does, every third of the lease).
///
/// ```
/// use cachestack::{Backend, MemoryBackend, RedisBackend, TieredCache};
///
/// // The memory store is in one process: it has no lock to share.
/// assert!(MemoryBackend::with_capacity(10).locks().is_none());
/// // Redis has one (no I/O until it is used), and a stack over Redis answers with it.
/// let redis = RedisBackend::from_url("redis://127.0.0.1:6379/0").unwrap();
/// assert!(redis.locks().is_some());
/// let stack = TieredCache::builder().layer(MemoryBackend::with_capacity(10)).layer(redis).build().unwrap();
/// assert!(stack.locks().is_some());
/// ```
#[async_trait]
pub trait LockOps: Send + Sync {
    /// Tries once, without waiting, to take the lock `name` (a cache key; the store keeps locks
    /// apart from entries) for `lease`: `Some(guard)` if this call took it, `None` if another
    /// holder has it.
    async fn try_lock(&self, name: &str, lease: Duration) -> Result<Option<Box<dyn LockGuard>>>;
}

/// A lock held by this process (see [`LockOps::try_lock`]). Dropping it without
/// [`LockGuard::release`] leaves the lock to end with its lease (or connection).
#[async_trait]
pub trait LockGuard: Send + Sync + fmt::Debug {
    /// Extends the lease to `lease` from now if the lock is still this guard's: `Ok(false)` when
    /// it is not any more (the lease ran out and another process may hold it).
    async fn renew(&mut self, lease: Duration) -> Result<bool>;

    /// Releases the lock if it is still this guard's (never another holder's).
    async fn release(self: Box<Self>) -> Result<()>;
}

/// A random token that tells this holder's lock from any other's (128 bits, hex).
#[cfg(any(feature = "redis", feature = "memcached"))]
pub(crate) fn token() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// The two steps of a lease lock held by a random token (Redis, Memcached): each acts only while
/// the lock still holds the holder's token, so a holder whose lease ran out never extends or
/// removes another holder's lock.
#[cfg(any(feature = "redis", feature = "memcached"))]
#[async_trait]
pub(crate) trait TokenLease: Send + Sync + 'static {
    /// Gives the lock `key` the lease `lease` from now if it holds `token`: true if it did.
    async fn extend(&self, key: &str, token: &str, lease: Duration) -> Result<bool>;

    /// Removes the lock `key` if it holds `token`.
    async fn remove(&self, key: &str, token: &str) -> Result<()>;
}

/// A lease lock this process holds: where it is (`S`, with the lock's key) and its token.
#[cfg(any(feature = "redis", feature = "memcached"))]
pub(crate) struct TokenLock<S> {
    store: S,
    key: String,
    token: String,
}

#[cfg(any(feature = "redis", feature = "memcached"))]
impl<S: TokenLease> TokenLock<S> {
    /// The guard of the lock `key` if this holder took it (`taken`) with `token`.
    pub(crate) fn guard(taken: bool, store: S, key: String, token: String) -> Option<Box<dyn LockGuard>> {
        taken.then(|| Box::new(TokenLock { store, key, token }) as Box<dyn LockGuard>)
    }
}

#[cfg(any(feature = "redis", feature = "memcached"))]
impl<S> fmt::Debug for TokenLock<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the token: whoever sees it could release the lock.
        f.debug_struct("TokenLock").field("key", &self.key).finish_non_exhaustive()
    }
}

#[cfg(any(feature = "redis", feature = "memcached"))]
#[async_trait]
impl<S: TokenLease> LockGuard for TokenLock<S> {
    async fn renew(&mut self, lease: Duration) -> Result<bool> {
        self.store.extend(&self.key, &self.token, lease).await
    }

    async fn release(self: Box<Self>) -> Result<()> {
        self.store.remove(&self.key, &self.token).await
    }
}

/// The lease in whole seconds for stores whose expiry counts seconds (rounded up, at least 1).
#[cfg(feature = "memcached")]
pub(crate) fn lease_secs(lease: Duration) -> u32 {
    let secs = lease.as_secs().saturating_add(u64::from(lease.subsec_nanos() > 0)).max(1);
    u32::try_from(secs).unwrap_or(u32::MAX)
}

#[cfg(all(test, feature = "memcached"))]
mod tests {
    use super::*;

    #[test]
    fn leases_round_up_to_whole_seconds() {
        assert_eq!(lease_secs(Duration::from_millis(1)), 1);
        assert_eq!(lease_secs(Duration::from_millis(1500)), 2);
        assert_eq!(lease_secs(Duration::from_secs(3)), 3);
        assert_eq!(lease_secs(Duration::ZERO), 1);
        assert_ne!(token(), token());
    }
}
