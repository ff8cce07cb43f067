//! Reads: walk the layers fastest first, backfill the faster ones.

use std::ops::ControlFlow::{Break, Continue};
use std::sync::atomic::Ordering::Relaxed;

use super::layer::{Call, Stamp};
use super::ordering::{Peek, Stripe};
use super::shared::Shared;
use crate::error::Result;
use crate::expiry::{Deadline, Expiry};
use crate::store::{Entry, Signing};
use crate::tags::TagCheck;
use crate::value::Value;

impl Shared {
    /// Reads `key` from layer `from` down (L1 was already asked when `from` is 1). With a
    /// `check`, a tagged entry that is not current (see [`crate::tags`]) is a miss of its layer:
    /// neither served nor backfilled, and the next layer is read.
    pub(super) async fn lookup(&self, key: &str, from: usize, check: Option<&dyn TagCheck>) -> Result<Option<Entry>> {
        let stripe = self.stripe(key);
        let epoch = match stripe.peek(key) {
            Peek::Queued(value, stamp) => {
                let entry = self.answer_from_queue(value, stamp, true);
                return Ok(match (entry, check) {
                    (Some(entry), Some(check)) if !check.entry_current(&entry).await => None,
                    (entry, _) => entry,
                });
            }
            Peek::Epoch(epoch) => epoch,
        };
        let mut answered = from > 0;
        let mut failure = None;
        for layer in &self.layers[from..] {
            let read = match (layer.read(key).await, check) {
                (Call::Done(Some(entry)), Some(check)) if !check.entry_current(&entry).await => Call::Done(None),
                (read, _) => read,
            };
            match read {
                Call::Done(Some(entry)) => {
                    layer.counters.record_lookup(true);
                    crate::observe::calls::answered_by(layer.backend.name());
                    self.backfill(key, &entry, layer.index, stripe, epoch).await;
                    return Ok(Some(entry));
                }
                Call::Done(None) => {
                    layer.counters.record_lookup(false);
                    answered = true;
                }
                Call::Failed(err) => {
                    layer.counters.record_lookup(false);
                    failure = Some(err);
                }
                Call::Bypassed => layer.counters.record_lookup(false),
            }
        }
        if answered {
            Ok(None)
        } else {
            Err(self.all_failed("get", failure))
        }
    }

    /// The entry a queued write will leave in the layers below L1. `lookup` is false for
    /// `exists`, which is not a read and is not counted as a hit or a miss.
    pub(super) fn answer_from_queue(&self, value: Value, stamp: Stamp, lookup: bool) -> Option<Entry> {
        // The queue holds what the layers below L1 will hold: their deadline.
        let expires = self.layers.get(1).and_then(|below| stamp.deadline_for(below));
        let live = !expires.is_some_and(Deadline::has_passed);
        if lookup {
            // An expired newest value is a miss: what the lower layers hold is older.
            let counter = if live { &self.queue_hits } else { &self.queue_misses };
            counter.fetch_add(1, Relaxed);
        }
        live.then(|| Entry::new(value, expires))
    }

    /// Copies `entry`, found in layer `found_in`, into the layers above it.
    ///
    /// Never into a layer that signs (see [`Backend::signing`](crate::Backend::signing)) unless
    /// `found_in` is signed too: an unverified value (planted in an unsigned file directory or
    /// server) would otherwise come out of the signing layer with a valid signature, trusted by
    /// every process that reads that layer. In-process layers take every backfill: they serve
    /// only this process, which is already being answered with the value.
    pub(super) async fn backfill(&self, key: &str, entry: &Entry, found_in: usize, stripe: &Stripe, epoch: u64) {
        if found_in == 0 {
            return;
        }
        let verified = self.layers[found_in].backend.signing() == Signing::Signed;
        // The same deadline as the layer it was found in, and nothing that is about to expire. An
        // entry without expiry gets the faster layer's default TTL (none if it has none).
        let stamp = Stamp::now(entry.expires.map_or(Expiry::Default, Expiry::At));
        let ttl_left = || match entry.expires {
            None => Some(&stamp),
            Some(deadline) => (deadline.remaining() >= self.min_backfill_ttl).then_some(&stamp),
        };
        for layer in &self.layers[..found_in] {
            if let Some(local) = layer.local() {
                let state = stripe.state();
                if state.epoch != epoch || state.active != 0 {
                    return;
                }
                let Some(stamp) = ttl_left() else { return };
                local.set_value(key, entry.value.clone(), stamp.for_layer(layer));
                drop(state);
                layer.backfills.fetch_add(1, Relaxed);
            } else if !verified && layer.backend.signing() != Signing::Unsigned {
                tracing::debug!(
                    layer = layer.index,
                    found_in,
                    "cachestack: no backfill of a value from an unsigned layer into a signing one"
                );
            } else {
                let _io = stripe.io.lock().await;
                if !stripe.unchanged_since(epoch) {
                    return;
                }
                let Some(stamp) = ttl_left() else { return };
                let expiry = stamp.for_layer(layer);
                if let Call::Done(()) = layer.call("backfill", key, |b| b.set(key, entry.value.clone(), expiry)).await {
                    layer.backfills.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// Whether a layer holds `key`, from the fastest. With a `check`, a tagged entry that is not
    /// current (see [`crate::tags`]) does not count: each layer's entry is read and checked (an
    /// entry is found without being backfilled), as [`Shared::lookup`] would.
    pub(super) async fn exists(&self, key: &str, check: Option<&dyn TagCheck>) -> Result<bool> {
        if let Peek::Queued(value, stamp) = self.stripe(key).peek(key) {
            return Ok(match self.answer_from_queue(value, stamp, false) {
                Some(entry) => current(check, &entry).await,
                None => false,
            });
        }
        let mut found = false;
        let fold = |yes: bool| {
            found = yes;
            if yes {
                Break(())
            } else {
                Continue(())
            }
        };
        self.fan_out("exists", |layer| layer.exists(key, check), fold).await?;
        Ok(found)
    }

    /// Reads `keys`, each from the fastest layer that has it, backfilling the faster ones. With a
    /// `check`, a tagged entry that is not current is a miss of its layer, as in
    /// [`Shared::lookup`]: neither served nor backfilled, and the next layer is read.
    pub(super) async fn get_many(&self, keys: &[&str], check: Option<&dyn TagCheck>) -> Result<Vec<Option<Entry>>> {
        let mut out: Vec<Option<Entry>> = vec![None; keys.len()];
        let mut from = 0;
        let mut missing: Vec<usize> = Vec::with_capacity(keys.len());
        match self.layers[0].local() {
            Some(local) => {
                let l1 = &self.layers[0];
                for (i, key) in keys.iter().enumerate() {
                    match local.get_entry(key) {
                        Some(entry) if current(check, &entry).await => {
                            l1.counters.record_lookup(true);
                            out[i] = Some(entry);
                        }
                        _ => {
                            l1.counters.record_lookup(false);
                            missing.push(i);
                        }
                    }
                }
                from = 1;
            }
            None => missing.extend(0..keys.len()),
        }
        // Keys with a queued write are answered from the queue; the others go below, each with
        // its stripe's epoch for the backfill check.
        let mut waiting: Vec<(usize, u64)> = Vec::with_capacity(missing.len());
        for i in missing {
            match self.stripe(keys[i]).peek(keys[i]) {
                Peek::Queued(value, expires) => {
                    out[i] = match self.answer_from_queue(value, expires, true) {
                        Some(entry) if !current(check, &entry).await => None,
                        entry => entry,
                    };
                }
                Peek::Epoch(epoch) => waiting.push((i, epoch)),
            }
        }
        let mut answered = from > 0;
        let mut failure = None;
        for layer in &self.layers[from..] {
            if waiting.is_empty() {
                break;
            }
            let asked: Vec<&str> = waiting.iter().map(|&(i, _)| keys[i]).collect();
            let result = match layer.local() {
                Some(local) => Call::Done(asked.iter().map(|key| local.get_entry(key)).collect()),
                None => layer.call("get_many", "", |b| b.get_many(&asked)).await,
            };
            let found = match result {
                Call::Done(found) if found.len() == asked.len() => found,
                Call::Done(found) => {
                    layer.counters.record_error();
                    tracing::warn!(
                        layer = layer.index,
                        backend = layer.backend.name(),
                        asked = asked.len(),
                        got = found.len(),
                        "cachestack: get_many returned the wrong number of slots; layer skipped"
                    );
                    layer.counters.record_lookups(asked.len() as u64, 0);
                    continue;
                }
                Call::Failed(err) => {
                    failure = Some(err);
                    layer.counters.record_lookups(asked.len() as u64, 0);
                    continue;
                }
                Call::Bypassed => {
                    layer.counters.record_lookups(asked.len() as u64, 0);
                    continue;
                }
            };
            answered = true;
            let mut still = Vec::new();
            for ((i, epoch), slot) in waiting.into_iter().zip(found) {
                match slot {
                    Some(entry) if current(check, &entry).await => {
                        layer.counters.record_lookup(true);
                        self.backfill(keys[i], &entry, layer.index, self.stripe(keys[i]), epoch).await;
                        out[i] = Some(entry);
                    }
                    _ => {
                        layer.counters.record_lookup(false);
                        still.push((i, epoch));
                    }
                }
            }
            waiting = still;
        }
        if answered || waiting.is_empty() {
            Ok(out)
        } else {
            Err(self.all_failed("get_many", failure))
        }
    }
}

/// Whether `entry` may be served: always without a check (see [`TagCheck::entry_current`]).
async fn current(check: Option<&dyn TagCheck>, entry: &Entry) -> bool {
    match check {
        Some(check) => check.entry_current(entry).await,
        None => true,
    }
}
