//! What stores count and report: [`Counters`] (the atomic counters every store keeps, with the
//! silent-mode policy) and [`BackendStats`] (their snapshot, with details and a stack's layers).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::error::{Error, Result};
use crate::striped::StripedCounter;

/// A snapshot of a backend's counters.
///
/// ```
/// let counters = cachestack::Counters::default();
/// counters.record_lookup(true);
/// counters.record_lookup(false);
/// let stats = counters.snapshot("demo");
/// assert_eq!((stats.hits, stats.misses), (1, 1));
/// assert_eq!(stats.hit_ratio(), 0.5);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct BackendStats {
    /// Backend name.
    pub name: String,
    /// Lookups that found a live entry.
    pub hits: u64,
    /// Lookups that found nothing (or an unusable value, or failed in silent mode).
    pub misses: u64,
    /// Entries written.
    pub writes: u64,
    /// Delete calls.
    pub deletes: u64,
    /// Failed operations and rejected stored values.
    pub errors: u64,
    /// Entries removed to respect a size bound.
    pub evictions: u64,
    /// For a layer of a tiered stack: entries copied into it from a slower layer on a read.
    pub backfills: u64,
    /// Entries currently held, when the store can tell cheaply.
    pub entries: Option<u64>,
    /// Backend-specific details (directory, policy, capacity, server...).
    pub details: BTreeMap<String, String>,
    /// For stacks: one entry per layer, fastest first.
    pub layers: Vec<BackendStats>,
}

impl BackendStats {
    /// hits / (hits + misses), 0 when there were no lookups.
    pub fn hit_ratio(&self) -> f64 {
        hit_ratio(self.hits, self.misses)
    }

    /// Adds a detail (builder style).
    pub fn with_detail(mut self, key: impl Into<String>, value: impl ToString) -> Self {
        self.details.insert(key.into(), value.to_string());
        self
    }
}

/// Atomic counters behind [`BackendStats`], with the silent-mode policy every backend shares.
#[derive(Debug, Default)]
pub struct Counters {
    /// Striped: bumped on every hit, from every thread.
    hits: StripedCounter,
    misses: AtomicU64,
    writes: AtomicU64,
    deletes: AtomicU64,
    errors: AtomicU64,
    evictions: AtomicU64,
}

impl Counters {
    /// Counts a lookup.
    #[inline]
    pub fn record_lookup(&self, hit: bool) {
        if hit {
            self.hits.add(1);
        } else {
            self.misses.fetch_add(1, Relaxed);
        }
    }
    /// Counts `n` lookups of which `hits` hit.
    pub fn record_lookups(&self, n: u64, hits: u64) {
        self.hits.add(hits);
        self.misses.fetch_add(n.saturating_sub(hits), Relaxed);
    }
    /// Counts a write.
    #[inline]
    pub fn record_write(&self) {
        self.writes.fetch_add(1, Relaxed);
    }
    /// Counts `n` writes.
    pub fn record_writes(&self, n: u64) {
        self.writes.fetch_add(n, Relaxed);
    }
    /// Counts a delete.
    pub fn record_delete(&self) {
        self.deletes.fetch_add(1, Relaxed);
    }
    /// Counts `n` deletes (one bulk call over `n` keys).
    pub fn record_deletes(&self, n: u64) {
        self.deletes.fetch_add(n, Relaxed);
    }
    /// Counts `n` evictions.
    pub fn record_evictions(&self, n: u64) {
        self.evictions.fetch_add(n, Relaxed);
    }
    /// Counts an error.
    pub fn record_error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }

    /// Counts and logs a stored value that failed its checks; the caller then reports a miss.
    pub fn record_invalid(&self, backend: &str, key: &str, err: &Error) {
        self.record_error();
        tracing::warn!(backend, key, error = %err, "cachestack: unusable stored value treated as a miss");
    }

    /// The silent-mode policy: on `Err`, counts and logs the error, then returns `fallback` when
    /// `silent` is set (a miss, a no-op) or the error otherwise.
    ///
    /// ```
    /// use cachestack::{Counters, Error};
    /// let counters = Counters::default();
    /// let r: Result<Option<u8>, _> = Err(Error::config("boom"));
    /// assert_eq!(counters.absorb("demo", "get", true, r, || None).unwrap(), None);
    /// assert_eq!(counters.snapshot("demo").errors, 1);
    /// ```
    pub fn absorb<T>(
        &self,
        backend: &str,
        op: &'static str,
        silent: bool,
        result: Result<T>,
        fallback: impl FnOnce() -> T,
    ) -> Result<T> {
        match result {
            Ok(v) => Ok(v),
            Err(err) => {
                self.record_error();
                if silent {
                    tracing::warn!(backend, op, error = %err, "cachestack: backend error ignored (silent mode)");
                    Ok(fallback())
                } else {
                    tracing::debug!(backend, op, error = %err, "cachestack: backend error");
                    Err(err)
                }
            }
        }
    }

    /// A snapshot of the counters under `name`.
    pub fn snapshot(&self, name: &str) -> BackendStats {
        BackendStats {
            name: name.to_string(),
            hits: self.hits.get(),
            misses: self.misses.load(Relaxed),
            writes: self.writes.load(Relaxed),
            deletes: self.deletes.load(Relaxed),
            errors: self.errors.load(Relaxed),
            evictions: self.evictions.load(Relaxed),
            ..BackendStats::default()
        }
    }
}

/// hits / (hits + misses), 0 when there were no lookups (a cache's and a function's stats).
pub(crate) fn hit_ratio(hits: u64, misses: u64) -> f64 {
    match hits.saturating_add(misses) {
        0 => 0.0,
        total => hits as f64 / total as f64,
    }
}
