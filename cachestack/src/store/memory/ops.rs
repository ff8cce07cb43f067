//! The memory store's atomic and pattern operations, kept apart from the hit path. Atomic
//! operations run under quick_cache's entry API: the callback runs under the shard's write lock,
//! and a vacant key is held by a placeholder until the new entry is in (a concurrent plain write
//! wins over the placeholder, which is a valid order of the two writes).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use quick_cache::sync::{EntryAction, EntryResult};

use super::{deadline_clocks, MemKey, MemoryBackend};
use crate::error::{Error, Result};
use crate::expiry::Expiry;
use crate::pattern::KeyPattern;
use crate::store::KeyVisitor;
use crate::value::counter::overflow;
use crate::value::Value;

impl MemoryBackend {
    /// `set_if_absent`: true if this call stored `value`.
    pub(super) fn insert_if_absent(&self, key: &str, value: Value, expiry: Expiry) -> bool {
        let found = self.map.entry(&MemKey::new(key), None, |_, slot| {
            if slot.live(Instant::now) {
                EntryAction::Retain(())
            } else {
                EntryAction::ReplaceWithGuard
            }
        });
        match found {
            EntryResult::Vacant(guard) | EntryResult::Replaced(guard, _) => {
                self.counters.record_write();
                // An Err means a plain write replaced the placeholder meanwhile: it comes after
                // this one, which still won the race among `set_if_absent` callers.
                let _ = guard.insert(self.slot(key, value, expiry));
                true
            }
            EntryResult::Retained(()) | EntryResult::Removed(..) | EntryResult::Timeout => false,
        }
    }

    /// `incr`: the counter's new value.
    pub(super) fn add(&self, key: &str, delta: i64, expiry: Expiry) -> Result<i64> {
        let found = self.map.entry(&MemKey::new(key), None, |_, slot| {
            if !slot.live(Instant::now) {
                return EntryAction::ReplaceWithGuard;
            }
            let sum = slot
                .value
                .get::<i64>()
                .map_err(|err| Error::invalid(format!("`{key}` does not hold a counter (i64): {err}")))
                .and_then(|n| n.checked_add(delta).ok_or_else(|| overflow(key, n, delta)));
            if let Ok(sum) = sum {
                slot.value = Value::new(sum);
            }
            EntryAction::Retain(sum)
        });
        self.counters.record_write();
        match found {
            EntryResult::Retained(sum) => sum,
            EntryResult::Vacant(guard) | EntryResult::Replaced(guard, _) => {
                let _ = guard.insert(self.slot(key, Value::new(delta), expiry));
                Ok(delta)
            }
            EntryResult::Removed(..) | EntryResult::Timeout => {
                Err(Error::Generic { backend: self.config.name.clone(), source: "counter update interrupted".into() })
            }
        }
    }

    /// `expire`: true if `key` held a live entry.
    pub(super) fn re_expire(&self, key: &str, expiry: Expiry) -> bool {
        let deadline = expiry.resolve(self.config.default_ttl);
        let found = self.map.entry(&MemKey::new(key), Some(std::time::Duration::ZERO), |_, slot| {
            if !slot.live(Instant::now) {
                return EntryAction::Retain(false);
            }
            if deadline.is_some_and(|d| d.has_passed()) {
                return EntryAction::Remove;
            }
            (slot.expires, slot.deadline_ms) = deadline_clocks(deadline);
            EntryAction::Retain(true)
        });
        // A vacant key's placeholder guard is dropped here, unused: nothing is inserted.
        matches!(found, EntryResult::Retained(true) | EntryResult::Removed(..))
    }

    /// Hands the live keys matching `pattern` to `visit`, `batch` at a time.
    pub(super) fn visit_keys(&self, pattern: &KeyPattern, batch: usize, visit: &mut KeyVisitor<'_>) {
        let batch = batch.max(1);
        let now = Instant::now();
        let mut keys = Vec::with_capacity(batch.min(1024));
        for (key, slot) in self.map.iter() {
            let Ok(key) = std::str::from_utf8(key.as_bytes()) else { continue };
            if slot.live(|| now) && pattern.matches(key) {
                keys.push(key.to_owned());
                if keys.len() >= batch && !visit(std::mem::take(&mut keys)) {
                    return;
                }
            }
        }
        if !keys.is_empty() {
            visit(keys);
        }
    }

    /// Removes the entries whose keys match `pattern`; returns how many were live.
    pub(super) fn remove_matching(&self, pattern: &KeyPattern) -> u64 {
        let now = Instant::now();
        let removed = AtomicU64::new(0);
        self.map.retain(|key, slot| {
            let matched = std::str::from_utf8(key.as_bytes()).is_ok_and(|key| pattern.matches(key));
            if matched && slot.live(|| now) {
                removed.fetch_add(1, Relaxed);
            }
            !matched
        });
        let removed = removed.into_inner();
        self.counters.record_deletes(removed);
        removed
    }
}
