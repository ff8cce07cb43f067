//! Tombstones: the deletes (and clears) a layer missed while it was down or bypassed, replayed
//! before the stack's next call to that layer, so that a deleted value never comes back.
//!
//! A key gets a tombstone in a layer when a delete of it failed or bypassed that layer, and also
//! when a write of it did (the layer may still hold the value the write replaced). A clear that
//! failed leaves a pending clear. Before any call to the layer (a read, a write, a backfill, the
//! half-open probe of its breaker...) the pending clear and then the pending deletes are
//! replayed; if the replay fails, the call fails without reaching the layer, so a tombstoned key
//! is never read from it. A write of the key that reaches the layer supersedes its tombstone.
//!
//! The set is bounded ([`MAX_TOMBSTONES`] keys per layer); past the bound the layer gets a
//! pending clear instead, which covers every key (the layer then restarts cold, but never
//! serves a deleted value). Replays only ever delete, so a replay racing a newer write can at
//! worst cost that write a miss. Tombstones live in the process: a process that exits with
//! pending tombstones leaves them unreplayed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};

use super::lock;

/// Most keys a layer keeps tombstones for; more turn into a pending clear of the layer.
pub(super) const MAX_TOMBSTONES: usize = 10_000;

#[derive(Default)]
pub(super) struct Tombstones {
    state: Mutex<State>,
    /// True while there is something to replay: the common path of a call is one load.
    pending: AtomicBool,
    /// Held by the replay in progress (one at a time; others wait and then find less to do).
    pub(super) replaying: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    /// Moves on every tombstone, so that a replay removes only what it replayed.
    generation: u64,
    keys: HashMap<Box<str>, u64>,
    /// The generation of a pending clear.
    clear: Option<u64>,
}

impl State {
    fn next(&mut self) -> u64 {
        self.generation = self.generation.wrapping_add(1);
        self.generation
    }
}

impl Tombstones {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn settle(&self, state: &State) {
        self.pending.store(state.clear.is_some() || !state.keys.is_empty(), Relaxed);
    }

    /// True if a replay is due.
    #[inline]
    pub(super) fn is_pending(&self) -> bool {
        self.pending.load(Relaxed)
    }

    /// Records deletes of `keys` that the layer missed.
    pub(super) fn add<'k>(&self, keys: impl IntoIterator<Item = &'k str>) {
        let mut state = self.state();
        for key in keys {
            let generation = state.next();
            if state.keys.len() >= MAX_TOMBSTONES && !state.keys.contains_key(key) {
                tracing::warn!(
                    max = MAX_TOMBSTONES,
                    "cachestack: too many deletes missed by a tiered layer; it will be cleared when it is reachable again"
                );
                state.keys.clear();
                state.clear = Some(generation);
                break;
            }
            state.keys.insert(key.into(), generation);
        }
        self.settle(&state);
    }

    /// Records a clear that the layer missed (it covers every key).
    pub(super) fn add_clear(&self) {
        let mut state = self.state();
        let generation = state.next();
        state.keys.clear();
        state.clear = Some(generation);
        self.settle(&state);
    }

    /// A write of `key` reached the layer: its tombstone is superseded.
    pub(super) fn supersede(&self, key: &str) {
        if self.is_pending() {
            let mut state = self.state();
            state.keys.remove(key);
            self.settle(&state);
        }
    }

    /// The pending clear's generation, if any.
    pub(super) fn pending_clear(&self) -> Option<u64> {
        self.state().clear
    }

    /// The clear of generation `generation` was replayed.
    pub(super) fn cleared(&self, generation: u64) {
        let mut state = self.state();
        if state.clear == Some(generation) {
            state.clear = None;
        }
        state.keys.retain(|_, g| *g > generation);
        self.settle(&state);
    }

    /// The keys to replay, with their generations.
    pub(super) fn keys(&self) -> Vec<(Box<str>, u64)> {
        self.state().keys.iter().map(|(k, g)| (k.clone(), *g)).collect()
    }

    /// These deletes were replayed (a key tombstoned again since keeps its newer tombstone).
    pub(super) fn deleted(&self, replayed: &[(Box<str>, u64)]) {
        let mut state = self.state();
        for (key, generation) in replayed {
            if state.keys.get(key) == Some(generation) {
                state.keys.remove(key);
            }
        }
        self.settle(&state);
    }

    /// Keys waiting for a replay, and whether a clear is.
    pub(super) fn counts(&self) -> (usize, bool) {
        let state = self.state();
        (state.keys.len(), state.clear.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_remove_only_what_they_replayed_and_overflow_becomes_a_clear() {
        let t = Tombstones::default();
        assert!(!t.is_pending());
        t.add(["a", "b"]);
        let snapshot = t.keys();
        t.add(["a"]); // tombstoned again while the replay runs
        t.deleted(&snapshot);
        assert_eq!(t.counts(), (1, false));
        t.supersede("a");
        assert!(!t.is_pending());

        t.add((0..MAX_TOMBSTONES + 1).map(|i| format!("k{i}")).collect::<Vec<_>>().iter().map(String::as_str));
        let (keys, clear) = t.counts();
        assert!(clear && keys < MAX_TOMBSTONES);
        let generation = t.pending_clear().unwrap();
        t.add(["late"]);
        t.cleared(generation);
        assert_eq!(t.counts(), (1, false), "a tombstone newer than the clear stays");
    }
}
