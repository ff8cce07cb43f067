//! The memory store's atomic and pattern operations, kept apart from the hit path. Atomic
//! operations run through [`Map::update`](super::engine::Map::update), atomic per key on both
//! engines.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use super::engine::Change;
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
        // Made before the entry is locked: making a slot may rebalance the maps' capacities.
        let fresh = self.slot(key, value, expiry);
        let stored = self.map.update(&MemKey::new(key), |slot| match slot {
            Some(slot) if slot.live(Instant::now) => (Change::Keep, false),
            _ => (Change::Put(fresh), true),
        });
        let stored = stored.unwrap_or(false);
        if stored {
            self.counters.record_write();
        }
        stored
    }

    /// `incr`: the counter's new value.
    pub(super) fn add(&self, key: &str, delta: i64, expiry: Expiry) -> Result<i64> {
        let fresh = self.slot(key, Value::new(delta), expiry);
        let found = self.map.update(&MemKey::new(key), |slot| match slot {
            Some(slot) if slot.live(Instant::now) => {
                let sum = slot
                    .value
                    .get::<i64>()
                    .map_err(|err| Error::invalid(format!("`{key}` does not hold a counter (i64): {err}")))
                    .and_then(|n| n.checked_add(delta).ok_or_else(|| overflow(key, n, delta)));
                match sum {
                    Ok(sum) => {
                        let mut next = slot.clone();
                        next.value = Value::new(sum);
                        (Change::Put(next), Ok(sum))
                    }
                    Err(err) => (Change::Keep, Err(err)),
                }
            }
            _ => (Change::Put(fresh), Ok(delta)),
        });
        self.counters.record_write();
        found.unwrap_or_else(|| {
            Err(Error::Generic { backend: self.config.name.clone(), source: "counter update interrupted".into() })
        })
    }

    /// `expire`: true if `key` held a live entry.
    pub(super) fn re_expire(&self, key: &str, expiry: Expiry) -> bool {
        let deadline = expiry.resolve(self.config.default_ttl);
        let found = self.map.update(&MemKey::new(key), |slot| match slot {
            Some(slot) if slot.live(Instant::now) => {
                if deadline.is_some_and(|d| d.has_passed()) {
                    return (Change::Remove, true);
                }
                let mut next = slot.clone();
                (next.expires, next.deadline_ms) = deadline_clocks(deadline);
                (Change::Put(next), true)
            }
            _ => (Change::Keep, false),
        });
        found.unwrap_or(false)
    }

    /// Hands the live keys matching `pattern` to `visit`, `batch` at a time.
    pub(super) fn visit_keys(&self, pattern: &KeyPattern, batch: usize, visit: &mut KeyVisitor<'_>) {
        let batch = batch.max(1);
        let now = Instant::now();
        let mut keys = Vec::with_capacity(batch.min(1024));
        for (key, slot) in self.map.entries() {
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
