//! Operation timeouts: every call to the wrapped store finishes within a bound, or fails with
//! [`Error::Timeout`]. The store's future is dropped when the bound passes, which cancels its I/O
//! (see [`crate::rt::io`]).

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::expiry::{Deadline, Expiry};
use crate::pattern::KeyPattern;
use crate::store::{Backend, BackendStats, Entry, KeyVisitor};
use crate::value::Value;

/// Wraps a store so that each operation returns within `limit`.
///
/// ```
/// use std::time::Duration;
/// use cachestack::layer::Timeout;
/// use cachestack::{Backend, Cache, MemoryBackend};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let cache = Cache::new(Timeout::new(MemoryBackend::with_capacity(10), Duration::from_millis(200)));
/// cache.set("k", &1u8, None).await.unwrap();
/// assert_eq!(cache.get::<u8>("k").await.unwrap(), Some(1));
/// # });
/// ```
#[derive(Debug)]
pub struct Timeout<B> {
    inner: B,
    limit: Duration,
}

impl<B: Backend> Timeout<B> {
    /// Wraps `inner` with a bound of `limit` per operation.
    pub fn new(inner: B, limit: Duration) -> Self {
        Timeout { inner, limit }
    }

    /// The bound per operation.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// The wrapped store.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    async fn bound<T>(&self, op: impl Future<Output = Result<T>>) -> Result<T> {
        within(self.inner.name(), self.limit, op).await
    }
}

/// Runs `op` within `limit`: its result, or [`Error::Timeout`] for `backend` (and `op` dropped).
/// The one timeout helper of the crate: layers and stores with multi-step operations use it.
pub async fn within<T>(backend: &str, limit: Duration, op: impl Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(limit, op).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout { backend: backend.to_owned(), after: limit }),
    }
}

#[async_trait]
impl<B: Backend> Backend for Timeout<B> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        self.bound(self.inner.get(key)).await
    }
    async fn set(&self, key: &str, value: Value, expiry: Expiry) -> Result<()> {
        self.bound(self.inner.set(key, value, expiry)).await
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        self.bound(self.inner.delete(key)).await
    }
    async fn exists(&self, key: &str) -> Result<bool> {
        self.bound(self.inner.exists(key)).await
    }
    async fn clear(&self) -> Result<()> {
        // A clear walks the whole namespace: the store bounds each step, not the whole walk.
        self.inner.clear().await
    }
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        self.bound(self.inner.get_many(keys)).await
    }
    async fn set_many(&self, entries: &[(&str, Value)], expiry: Expiry) -> Result<()> {
        self.bound(self.inner.set_many(entries, expiry)).await
    }
    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.bound(self.inner.delete_many(keys)).await
    }
    async fn purge_expired(&self) -> Result<u64> {
        // Purging walks the whole namespace; it is bounded per step by the store, not here.
        self.inner.purge_expired().await
    }
    async fn set_if_absent(&self, key: &str, value: Value, expiry: Expiry) -> Result<bool> {
        self.bound(self.inner.set_if_absent(key, value, expiry)).await
    }
    async fn incr(&self, key: &str, delta: i64, expiry: Expiry) -> Result<i64> {
        self.bound(self.inner.incr(key, delta, expiry)).await
    }
    async fn expire(&self, key: &str, expiry: Expiry) -> Result<bool> {
        self.bound(self.inner.expire(key, expiry)).await
    }
    async fn ttl(&self, key: &str) -> Result<Option<Option<Deadline>>> {
        self.bound(self.inner.ttl(key)).await
    }
    async fn keys_matching(&self, pattern: &KeyPattern, batch: usize, visit: &mut KeyVisitor<'_>) -> Result<()> {
        // A walk of the namespace: the store bounds each step, not the whole walk.
        self.inner.keys_matching(pattern, batch, visit).await
    }
    async fn delete_matching(&self, pattern: &KeyPattern) -> Result<u64> {
        // A walk of the namespace: the store bounds each step, not the whole walk.
        self.inner.delete_matching(pattern).await
    }
    fn stats(&self) -> BackendStats {
        self.inner.stats().with_detail("timeout", crate::ttl::format_ttl(self.limit))
    }
    crate::store::forward_backend!(passive: |s| s.inner);
    async fn flush(&self) -> Result<()> {
        self.inner.flush().await
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}
