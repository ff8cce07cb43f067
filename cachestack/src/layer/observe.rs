//! Spans and latency for every store operation: a `cachestack.op` span (level DEBUG) around each
//! call, and with the `metrics` feature a latency histogram,
//! `cachestack_operation_duration_seconds{cache, layer, op, outcome}`.
//!
//! Labels are bounded: `cache` is the name the cache is registered under (see
//! [`Backend::bind_cache_name`]; `unnamed` before that), `layer` the store's name, `op` the
//! operation, `outcome` one of `hit`, `miss`, `ok`, `error`. Keys are never labels, nor span
//! fields. With no subscriber and no recorder a call costs a level check and, with `metrics`,
//! two reads of the clock.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use tracing::Instrument;

use crate::error::Result;
use crate::expiry::{Deadline, Expiry};
use crate::pattern::KeyPattern;
use crate::store::{Backend, BackendStats, Entry, KeyVisitor};
use crate::value::Value;

/// The `cache` label of a store whose cache is not registered (yet).
pub const UNNAMED: &str = "unnamed";

/// Wraps a store so that each operation gets a span and, with the `metrics` feature, a latency
/// sample. [`Layers`](super::Layers) puts it in every layered store (the built-in remote stores);
/// wrap a store of your own with it, or with `Layers::wrap`.
///
/// ```
/// use cachestack::layer::Observe;
/// use cachestack::{Backend, Cache, MemoryBackend};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = Observe::new(MemoryBackend::with_capacity(10));
/// store.bind_cache_name("sessions");
/// assert_eq!(store.cache_name(), "sessions");
/// let cache = Cache::new(store);
/// cache.set("k", &1u8, None).await.unwrap(); // a `cachestack.op` span, op = "set"
/// # });
/// ```
#[derive(Debug)]
pub struct Observe<B> {
    inner: B,
    cache: OnceLock<Arc<str>>,
}

impl<B: Backend> Observe<B> {
    /// Wraps `inner`.
    pub fn new(inner: B) -> Self {
        Observe { inner, cache: OnceLock::new() }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// The `cache` label: the first name the cache was registered under, or [`UNNAMED`].
    pub fn cache_name(&self) -> &str {
        self.cache.get().map_or(UNNAMED, |name| name)
    }

    /// Runs `op` in a span and times it; `outcome` names a success (`hit`, `miss` or `ok`).
    async fn observe<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T>>,
        outcome: impl FnOnce(&T) -> &'static str,
    ) -> Result<T> {
        let span = tracing::debug_span!(
            "cachestack.op",
            cache = self.cache_name(),
            layer = self.inner.name(),
            op,
            outcome = tracing::field::Empty,
        );
        #[cfg(feature = "metrics")]
        let started = std::time::Instant::now();
        let result = call.instrument(span.clone()).await;
        let outcome = match &result {
            Ok(value) => outcome(value),
            Err(_) => "error",
        };
        span.record("outcome", outcome);
        #[cfg(feature = "metrics")]
        crate::observe::metrics::operation(self.cache_name(), self.inner.name(), op, outcome, started.elapsed());
        result
    }
}

fn ok<T>(_: &T) -> &'static str {
    "ok"
}

fn found<T>(value: &Option<T>) -> &'static str {
    if value.is_some() {
        "hit"
    } else {
        "miss"
    }
}

#[async_trait]
impl<B: Backend> Backend for Observe<B> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn bind_cache_name(&self, name: &str) {
        let _ = self.cache.set(name.into());
        self.inner.bind_cache_name(name);
    }
    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        self.observe("get", self.inner.get(key), found).await
    }
    async fn set(&self, key: &str, value: Value, expiry: Expiry) -> Result<()> {
        self.observe("set", self.inner.set(key, value, expiry), ok).await
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        self.observe("delete", self.inner.delete(key), ok).await
    }
    async fn exists(&self, key: &str) -> Result<bool> {
        self.observe("exists", self.inner.exists(key), ok).await
    }
    async fn clear(&self) -> Result<()> {
        self.observe("clear", self.inner.clear(), ok).await
    }
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        self.observe("get_many", self.inner.get_many(keys), ok).await
    }
    async fn set_many(&self, entries: &[(&str, Value)], expiry: Expiry) -> Result<()> {
        self.observe("set_many", self.inner.set_many(entries, expiry), ok).await
    }
    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.observe("delete_many", self.inner.delete_many(keys), ok).await
    }
    async fn purge_expired(&self) -> Result<u64> {
        self.observe("purge_expired", self.inner.purge_expired(), ok).await
    }
    async fn set_if_absent(&self, key: &str, value: Value, expiry: Expiry) -> Result<bool> {
        self.observe("set_if_absent", self.inner.set_if_absent(key, value, expiry), ok).await
    }
    async fn incr(&self, key: &str, delta: i64, expiry: Expiry) -> Result<i64> {
        self.observe("incr", self.inner.incr(key, delta, expiry), ok).await
    }
    async fn expire(&self, key: &str, expiry: Expiry) -> Result<bool> {
        self.observe("expire", self.inner.expire(key, expiry), ok).await
    }
    async fn ttl(&self, key: &str) -> Result<Option<Option<Deadline>>> {
        self.observe("ttl", self.inner.ttl(key), found).await
    }
    async fn keys_matching(&self, pattern: &KeyPattern, batch: usize, visit: &mut KeyVisitor<'_>) -> Result<()> {
        self.observe("keys_matching", self.inner.keys_matching(pattern, batch, visit), ok).await
    }
    async fn delete_matching(&self, pattern: &KeyPattern) -> Result<u64> {
        self.observe("delete_matching", self.inner.delete_matching(pattern), ok).await
    }
    fn stats(&self) -> BackendStats {
        self.inner.stats()
    }
    async fn flush(&self) -> Result<()> {
        self.inner.flush().await
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
    crate::store::forward_backend!(passive_unbound: |s| s.inner);
}
