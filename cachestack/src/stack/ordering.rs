//! Ordering: keys hash onto stripes whose epochs, busy marks and I/O locks keep deletes and
//! overwrites ordered against backfills and queued writes (see [`super::TieredCache`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};

use super::layer::Stamp;
use super::lock;
use crate::value::Value;

/// Number of stripes that keys hash onto for ordering backfills, writes and deletes.
pub(super) const STRIPES: usize = 256;

/// Ordering state of the keys hashing onto one stripe.
#[derive(Default)]
pub(super) struct Stripe {
    pub(super) state: Mutex<StripeState>,
    /// Held by whoever checks the stripe and then writes a remote layer (a backfill, the
    /// write-back task); a change takes it before it starts, so it runs after such a write.
    pub(super) io: tokio::sync::Mutex<()>,
}

#[derive(Default)]
pub(super) struct StripeState {
    /// Moves when a change to one of the stripe's keys starts and when it ends.
    pub(super) epoch: u64,
    /// Changes in progress.
    pub(super) active: u32,
    /// Keys with writes in the write-back queue.
    pub(super) pending: HashMap<Box<str>, Pending>,
}

pub(super) struct Pending {
    /// Sequence number of the newest change of the key; queued writes with another are stale.
    pub(super) latest: u64,
    /// Writes of the key still in the queue (or being written).
    pub(super) queued: u32,
    /// The newest queued value and its expiry; `None` once a delete superseded it.
    pub(super) value: Option<(Value, Stamp)>,
}

/// What a read learns from the stripe before it goes below L1.
pub(super) enum Peek {
    /// The write-back queue holds the newest value of the key.
    Queued(Value, Stamp),
    /// Read the lower layers; backfill only if the epoch is still this one.
    Epoch(u64),
}

/// A change in progress on a stripe; ends (moves the epoch, clears the busy mark) when dropped,
/// also when the change's future is cancelled. A change of one key holds the stripe's I/O lock
/// until it ends (released after the epoch moved), so that changes of one key reach every layer
/// in the same order.
pub(super) struct Change<'a> {
    pub(super) stripe: &'a Stripe,
    pub(super) _io: Option<tokio::sync::MutexGuard<'a, ()>>,
}

/// Changes of several keys: the I/O locks of their stripes, taken in stripe order (so two bulk
/// changes never wait on each other crosswise), released after every change ended.
pub(super) struct Changes<'a> {
    pub(super) _changes: Vec<Change<'a>>,
    pub(super) _io: Vec<tokio::sync::MutexGuard<'a, ()>>,
}

impl Drop for Change<'_> {
    fn drop(&mut self) {
        let mut state = self.stripe.state();
        state.epoch += 1;
        state.active -= 1;
    }
}

/// Marks a dequeued write done when dropped (also if writing it panicked).
pub(super) struct Dequeued<'a> {
    pub(super) stripe: &'a Stripe,
    pub(super) key: &'a str,
}

impl Drop for Dequeued<'_> {
    fn drop(&mut self) {
        let mut state = self.stripe.state();
        if let Some(pending) = state.pending.get_mut(self.key) {
            pending.queued = pending.queued.saturating_sub(1);
            if pending.queued == 0 {
                state.pending.remove(self.key);
            }
        }
    }
}

impl Stripe {
    pub(super) fn state(&self) -> MutexGuard<'_, StripeState> {
        lock(&self.state)
    }

    pub(super) fn peek(&self, key: &str) -> Peek {
        let state = self.state();
        match state.pending.get(key).and_then(|p| p.value.as_ref()) {
            Some((value, expires)) => Peek::Queued(value.clone(), *expires),
            None => Peek::Epoch(state.epoch),
        }
    }

    pub(super) fn unchanged_since(&self, epoch: u64) -> bool {
        let state = self.state();
        state.epoch == epoch && state.active == 0
    }

    /// Starts a change of `key`: waits for a remote write of the stripe already under way, moves
    /// the epoch, and supersedes the key's queued writes. Also returns whether the queue held a
    /// value of the key.
    pub(super) async fn begin_change(&self, key: &str, seq: &AtomicU64) -> (Change<'_>, bool) {
        let io = self.io.lock().await;
        let (mut change, had_value) = self.change_locked(key, seq);
        change._io = Some(io);
        (change, had_value)
    }

    /// `begin_change` for a caller that holds the stripe's I/O lock.
    pub(super) fn change_locked(&self, key: &str, seq: &AtomicU64) -> (Change<'_>, bool) {
        let mut state = self.state();
        state.epoch += 1;
        state.active += 1;
        let mut had_value = false;
        if let Some(pending) = state.pending.get_mut(key) {
            had_value = pending.value.take().is_some();
            pending.latest = seq.fetch_add(1, Relaxed) + 1;
        }
        drop(state);
        (Change { stripe: self, _io: None }, had_value)
    }

    /// Starts a write-back write of `key`: moves the epoch, records the key's newest value, and
    /// runs `write_l1` (an in-process L1 write) under the same lock, so that L1 receives the
    /// writes of a key in the order of their sequence numbers, as the queue stores them.
    pub(super) fn begin_queued(
        &self,
        key: &str,
        seq: u64,
        value: Value,
        stamp: Stamp,
        write_l1: impl FnOnce(),
    ) -> Change<'_> {
        let mut state = self.state();
        state.epoch += 1;
        state.active += 1;
        let pending = state.pending.entry(key.into()).or_insert(Pending { latest: 0, queued: 0, value: None });
        pending.latest = seq;
        pending.queued += 1;
        pending.value = Some((value, stamp));
        write_l1();
        drop(state);
        Change { stripe: self, _io: None }
    }

    /// Starts a clear: like `begin_change` for every key of the stripe.
    pub(super) async fn begin_clear(&self, seq: &AtomicU64) -> Change<'_> {
        let _io = self.io.lock().await;
        let mut state = self.state();
        state.epoch += 1;
        state.active += 1;
        for pending in state.pending.values_mut() {
            pending.value = None;
            pending.latest = seq.fetch_add(1, Relaxed) + 1;
        }
        drop(state);
        Change { stripe: self, _io: None }
    }

    /// Moves the epoch: a read that went below L1 before now does not backfill (another process
    /// changed one of the stripe's keys). Unlike a change, nothing queued is superseded.
    pub(super) fn bump(&self) {
        self.state().epoch += 1;
    }

    pub(super) fn is_latest(&self, key: &str, seq: u64) -> bool {
        self.state().pending.get(key).is_some_and(|p| p.latest == seq)
    }
}
