//! Silent mode: a store's failures become misses and no-ops, counted and logged at a bounded
//! rate. Without silent mode the same layer counts failures and passes them on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::expiry::{Deadline, Expiry};
use crate::pattern::KeyPattern;
use crate::store::{Backend, BackendStats, Entry, KeyVisitor};
use crate::value::Value;

/// How often one cause of failure is logged at most (one line per cause per interval).
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Wraps a store: every failed operation is counted in its stats' `errors`; in silent mode the
/// failure is then absorbed (a read becomes a miss, counted in `misses`; a write or delete a
/// no-op) and logged once per cause per [`LOG_INTERVAL`], with the number of failures since the
/// last line. Values that fail their checks are the store's business (a miss already).
///
/// ```
/// use cachestack::layer::Silent;
/// use cachestack::{Backend, NullBackend};
///
/// let store = Silent::new(NullBackend::default(), true);
/// assert!(store.is_silent());
/// assert_eq!(store.stats().errors, 0);
/// ```
#[derive(Debug)]
pub struct Silent<B> {
    inner: B,
    silent: bool,
    errors: AtomicU64,
    absorbed_misses: AtomicU64,
    log: RateLimitedLog,
}

impl<B: Backend> Silent<B> {
    /// Wraps `inner`; `silent` absorbs failures, otherwise they are counted and returned.
    pub fn new(inner: B, silent: bool) -> Self {
        Silent {
            inner,
            silent,
            errors: AtomicU64::new(0),
            absorbed_misses: AtomicU64::new(0),
            log: RateLimitedLog::default(),
        }
    }

    /// True when failures are absorbed.
    pub fn is_silent(&self) -> bool {
        self.silent
    }

    /// The wrapped store.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// The silent-mode policy for one operation's result: `fallback` (with `misses` lookups
    /// counted as misses) when silent, the error otherwise.
    fn settle<T>(&self, op: &'static str, result: Result<T>, misses: u64, fallback: impl FnOnce() -> T) -> Result<T> {
        match result {
            Ok(v) => Ok(v),
            // What the store cannot do is not a failure to hide: the caller must know.
            Err(err) if err.is_unsupported() => Err(err),
            Err(err) => {
                self.errors.fetch_add(1, Relaxed);
                if self.silent {
                    self.absorbed_misses.fetch_add(misses, Relaxed);
                    self.log.warn(self.inner.name(), op, &err);
                    Ok(fallback())
                } else {
                    tracing::debug!(backend = self.inner.name(), op, error = %err, "cachestack: backend error");
                    Err(err)
                }
            }
        }
    }
}

#[async_trait]
impl<B: Backend> Backend for Silent<B> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        let result = self.inner.get(key).await;
        self.settle("get", result, 1, || None)
    }
    async fn set(&self, key: &str, value: Value, expiry: Expiry) -> Result<()> {
        let result = self.inner.set(key, value, expiry).await;
        self.settle("set", result, 0, || ())
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        let result = self.inner.delete(key).await;
        self.settle("delete", result, 0, || false)
    }
    async fn exists(&self, key: &str) -> Result<bool> {
        let result = self.inner.exists(key).await;
        self.settle("exists", result, 0, || false)
    }
    async fn clear(&self) -> Result<()> {
        let result = self.inner.clear().await;
        self.settle("clear", result, 0, || ())
    }
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        let result = self.inner.get_many(keys).await;
        self.settle("get_many", result, keys.len() as u64, || vec![None; keys.len()])
    }
    async fn set_many(&self, entries: &[(&str, Value)], expiry: Expiry) -> Result<()> {
        let result = self.inner.set_many(entries, expiry).await;
        self.settle("set_many", result, 0, || ())
    }
    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        let result = self.inner.delete_many(keys).await;
        self.settle("delete_many", result, 0, || 0)
    }
    async fn purge_expired(&self) -> Result<u64> {
        let result = self.inner.purge_expired().await;
        self.settle("purge_expired", result, 0, || 0)
    }
    /// Silent: a failure stores nothing (false).
    async fn set_if_absent(&self, key: &str, value: Value, expiry: Expiry) -> Result<bool> {
        let result = self.inner.set_if_absent(key, value, expiry).await;
        self.settle("set_if_absent", result, 0, || false)
    }
    /// Never absorbed: no counter value stands in for one that could not be read. Counted.
    async fn incr(&self, key: &str, delta: i64, expiry: Expiry) -> Result<i64> {
        let result = self.inner.incr(key, delta, expiry).await;
        self.settle_strict("incr", result)
    }
    /// Silent: a failure changes nothing (false).
    async fn expire(&self, key: &str, expiry: Expiry) -> Result<bool> {
        let result = self.inner.expire(key, expiry).await;
        self.settle("expire", result, 0, || false)
    }
    /// Silent: a failure is a miss (`None`).
    async fn ttl(&self, key: &str) -> Result<Option<Option<Deadline>>> {
        let result = self.inner.ttl(key).await;
        self.settle("ttl", result, 1, || None)
    }
    /// Silent: a failure ends the listing (the keys already handed over stay handed over).
    async fn keys_matching(&self, pattern: &KeyPattern, batch: usize, visit: &mut KeyVisitor<'_>) -> Result<()> {
        let result = self.inner.keys_matching(pattern, batch, visit).await;
        self.settle("keys_matching", result, 0, || ())
    }
    /// Silent: a failure removes nothing more (0 reported).
    async fn delete_matching(&self, pattern: &KeyPattern) -> Result<u64> {
        let result = self.inner.delete_matching(pattern).await;
        self.settle("delete_matching", result, 0, || 0)
    }
    fn stats(&self) -> BackendStats {
        let mut stats = self.inner.stats();
        stats.errors += self.errors.load(Relaxed);
        stats.misses += self.absorbed_misses.load(Relaxed);
        stats
    }
    crate::store::forward_backend!(passive: |s| s.inner);
    async fn flush(&self) -> Result<()> {
        let result = self.inner.flush().await;
        self.settle("flush", result, 0, || ())
    }
    async fn close(&self) -> Result<()> {
        let result = self.inner.close().await;
        self.settle("close", result, 0, || ())
    }
}

impl<B: Backend> Silent<B> {
    /// For operations no fallback can answer: failures are counted and passed on.
    fn settle_strict<T>(&self, op: &'static str, result: Result<T>) -> Result<T> {
        if let Err(err) = &result
            && !err.is_unsupported()
        {
            self.errors.fetch_add(1, Relaxed);
            tracing::debug!(backend = self.inner.name(), op, error = %err, "cachestack: backend error");
        }
        result
    }
}

/// One log line per cause (store, operation, kind of error) per [`LOG_INTERVAL`], saying how
/// many failures of that cause there were since the last line.
#[derive(Debug, Default)]
pub(crate) struct RateLimitedLog {
    last: Mutex<HashMap<Cause, Logged>>,
}

/// A cause of failure: store, operation, kind of error.
type Cause = (String, &'static str, &'static str);
/// When a cause was last logged, and how many failures of it went unlogged since.
type Logged = (Option<Instant>, u64);

impl RateLimitedLog {
    /// Logs `err` at warn level unless its cause was logged less than [`LOG_INTERVAL`] ago.
    pub(crate) fn warn(&self, backend: &str, op: &'static str, err: &Error) {
        if let Some(since) = self.admit(backend, op, err.kind()) {
            tracing::warn!(backend, op, error = %err, suppressed_since_last_line = since, "cachestack: backend error ignored (silent mode)");
        }
    }

    /// Whether a line about this cause may be logged now (not within [`LOG_INTERVAL`] of the
    /// last one): `Some(events of the cause not logged since the last line)`, or `None` (and
    /// the event is counted for the next line).
    pub(crate) fn admit(&self, backend: &str, op: &'static str, kind: &'static str) -> Option<u64> {
        let cause = (backend.to_owned(), op, kind);
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (logged_at, suppressed) = last.entry(cause).or_insert((None, 0));
        if logged_at.is_none_or(|at| now.duration_since(at) >= LOG_INTERVAL) {
            *logged_at = Some(now);
            Some(std::mem::take(suppressed))
        } else {
            *suppressed += 1;
            None
        }
    }
}
