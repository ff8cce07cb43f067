//! Sweeps: the passive purge and LRU eviction, one at a time per store.

use std::fs::{self, Metadata};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{MutexGuard, TryLockError};
use std::time::{Instant, SystemTime};

use super::format::{read_deadline, ReadError};
use super::paths::{is_stale, remove_same, FileKind};
use super::Inner;
use crate::error::Result;

/// What one sweep of the namespace did.
#[derive(Debug, Default)]
pub(super) struct SweepReport {
    pub(super) expired: u64,
    pub(super) evicted: u64,
}

impl Inner {
    /// After writes: the passive purge when it is due, eviction when over a bound. Runs inline in
    /// the writing call (already on the blocking pool); a write that finds a sweep running skips
    /// it. Failures are counted and logged; the write itself has succeeded.
    pub(super) fn maintain(&self) {
        let purge_due = self.config.auto_purge_interval.is_some_and(|interval| {
            self.last_purge.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).elapsed() >= interval
        });
        if !purge_due && !self.over_limit() {
            return;
        }
        let guard = match self.sweep.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::WouldBlock) => return,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        };
        let swept = self.sweep_locked(&guard, purge_due);
        if let Err(err) = swept {
            self.counters.record_error();
            tracing::warn!(backend = %self.config.settings.name, error = %err, "cachestack: file cache sweep failed");
        }
    }

    fn over_limit(&self) -> bool {
        self.config.max_entries.is_some_and(|max| self.entries.load(Relaxed) > max)
            || self.config.max_bytes.is_some_and(|max| self.bytes.load(Relaxed) > max)
    }

    /// One pass over the namespace, holding the sweep lock: removes expired and unreadable
    /// entries and stale temporary files, recounts entries and bytes, and evicts the least
    /// recently used entries while over a bound. `purge` records the pass as a purge (for the
    /// auto-purge interval).
    pub(super) fn sweep_locked(&self, _guard: &MutexGuard<'_, ()>, purge: bool) -> Result<SweepReport> {
        if purge {
            *self.last_purge.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Instant::now();
        }
        let now = SystemTime::now();
        let mut report = SweepReport::default();
        let mut live: Vec<(SystemTime, PathBuf, Metadata)> = Vec::new();
        let mut stale_temps = 0u64;
        let mut unreadable = 0u64;
        self.walk(|kind, path, meta| match kind {
            FileKind::Temp => {
                if is_stale(&meta, now, self.config.temp_max_age) && fs::remove_file(&path).is_ok() {
                    stale_temps += 1;
                }
            }
            FileKind::Entry => match read_deadline(&path) {
                Ok(Some(deadline)) if deadline.has_passed_at(now) => {
                    if remove_same(&path, &meta) {
                        report.expired += 1;
                    }
                }
                Ok(_) => live.push((meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), path, meta)),
                Err(ReadError::Gone) => {}
                Err(ReadError::Invalid(err)) => {
                    if remove_same(&path, &meta) {
                        unreadable += 1;
                        self.counters.record_invalid(&self.config.settings.name, &path.display().to_string(), &err);
                    }
                }
                Err(ReadError::Io(err)) => {
                    tracing::debug!(backend = %self.config.settings.name, path = %path.display(), error = %err, "cachestack: file cache sweep skipped a file");
                    live.push((meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), path, meta));
                }
            },
        })
        .map_err(|e| self.io("cannot list cache directory", &self.dir, e))?;

        let mut entries = live.len() as u64;
        let mut bytes = live.iter().fold(0u64, |sum, (_, _, meta)| sum.saturating_add(meta.len()));
        let over = |entries: u64, bytes: u64, slack: bool| {
            let bound = |max: u64| if slack { max - max / 10 } else { max };
            self.config.max_entries.is_some_and(|max| entries > bound(max))
                || self.config.max_bytes.is_some_and(|max| bytes > bound(max))
        };
        if over(entries, bytes, false) {
            // Oldest first; evict until 10% under the bound so the next sweep is far away.
            live.sort_by_key(|(modified, _, _)| *modified);
            for (_, path, meta) in &live {
                if !over(entries, bytes, true) {
                    break;
                }
                if remove_same(path, meta) {
                    report.evicted += 1;
                }
                // Removed here or by someone else: either way it no longer counts.
                entries = entries.saturating_sub(1);
                bytes = bytes.saturating_sub(meta.len());
            }
            self.counters.record_evictions(report.evicted);
        }
        self.entries.store(entries, Relaxed);
        self.bytes.store(bytes, Relaxed);
        if report.expired + report.evicted + stale_temps + unreadable > 0 {
            tracing::debug!(
                backend = %self.config.settings.name,
                expired = report.expired,
                evicted = report.evicted,
                stale_temps,
                unreadable,
                "cachestack: file cache sweep"
            );
        }
        Ok(report)
    }
}
