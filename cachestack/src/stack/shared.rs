//! What the stack's handle and its write-back task share.

use std::future::Future;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use super::backplane::Bus;
use super::builder::WriteStrategy;
use super::layer::{Call, Layer};
use super::ordering::{Changes, Stripe};
use super::write_back::WriteBackState;
use crate::error::{Error, Result};
use crate::store::{Backend, BackendStats};

pub(super) struct Shared {
    pub(super) name: String,
    pub(super) layers: Vec<Arc<Layer>>,
    pub(super) stripes: Box<[Stripe]>,
    pub(super) seq: AtomicU64,
    pub(super) min_backfill_ttl: Duration,
    pub(super) strategy: WriteStrategy,
    pub(super) write_back: Option<WriteBackState>,
    pub(super) writes: AtomicU64,
    pub(super) deletes: AtomicU64,
    pub(super) queue_hits: AtomicU64,
    pub(super) queue_misses: AtomicU64,
    /// The backplane, once attached, and the name its messages carry.
    pub(super) bus: Bus,
}

impl Shared {
    pub(super) fn stripe(&self, key: &str) -> &Stripe {
        &self.stripes[self.stripe_index(key)]
    }

    pub(super) fn stripe_index(&self, key: &str) -> usize {
        (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) as usize) % self.stripes.len()
    }

    /// Starts changes of `keys` (see [`Stripe::begin_change`]); also returns how many of them had
    /// a value in the write-back queue.
    pub(super) async fn begin_changes<'a>(&'a self, keys: impl Iterator<Item = &'a str>) -> (Changes<'a>, u64) {
        let keys: Vec<(&str, usize)> = keys.map(|key| (key, self.stripe_index(key))).collect();
        let mut order: Vec<usize> = keys.iter().map(|&(_, i)| i).collect();
        order.sort_unstable();
        order.dedup();
        let mut io = Vec::with_capacity(order.len());
        for i in order {
            io.push(self.stripes[i].io.lock().await);
        }
        let mut changes = Vec::with_capacity(keys.len());
        let mut queued = 0;
        for (key, i) in keys {
            let (change, had) = self.stripes[i].change_locked(key, &self.seq);
            queued += u64::from(had);
            changes.push(change);
        }
        (Changes { _changes: changes, _io: io }, queued)
    }

    pub(super) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Relaxed) + 1
    }

    /// Sends one call to every layer, fastest first, and folds the answers (`Break` stops at
    /// that layer). Fails only when no layer answered: every one failed or was bypassed.
    pub(super) async fn fan_out<'a, T, F, Fut>(
        &'a self,
        op: &'static str,
        mut call: F,
        mut fold: impl FnMut(T) -> ControlFlow<()>,
    ) -> Result<()>
    where
        F: FnMut(&'a Layer) -> Fut,
        Fut: Future<Output = Call<T>>,
    {
        let mut answered = false;
        let mut failure = None;
        for layer in &self.layers {
            match call(layer).await {
                Call::Done(value) => {
                    answered = true;
                    if fold(value).is_break() {
                        break;
                    }
                }
                Call::Failed(err) => failure = Some(err),
                Call::Bypassed => {}
            }
        }
        if answered {
            Ok(())
        } else {
            Err(self.all_failed(op, failure))
        }
    }

    pub(super) fn all_failed(&self, op: &str, last: Option<Error>) -> Error {
        let reason = match last {
            Some(err) => format!("every layer failed or is bypassed for `{op}`; last error: {err}"),
            None => format!("every layer is bypassed for `{op}`"),
        };
        Error::BackendUnavailable { backend: self.name.clone(), source: reason.into() }
    }

    pub(super) fn stats(&self) -> BackendStats {
        let mut layers = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let own = layer.backend.stats();
            let mut stats = layer.counters.snapshot(layer.backend.name());
            stats.backfills = layer.backfills.load(Relaxed);
            // `#[cached]` hits answered from the typed copies of an in-memory L1's entries never
            // reach the stack: they are hits of L1 all the same.
            #[cfg(feature = "memory")]
            if let (0, Some(memory)) = (layer.index, layer.backend.as_memory()) {
                stats.hits = stats.hits.wrapping_add(memory.front_hits());
            }
            stats.evictions = own.evictions;
            stats.entries = own.entries;
            stats.details = own.details;
            stats.layers = own.layers;
            stats = stats.with_detail("index", layer.index);
            stats = match &layer.breaker {
                Some(breaker) => breaker.with_details(stats),
                None => stats.with_detail("bypassed", 0),
            };
            if layer.local().is_none() {
                let (tombstones, clear) = layer.tombstones.counts();
                stats = stats.with_detail("tombstones", tombstones).with_detail("clear_pending", clear);
            }
            layers.push(stats);
        }
        let queue_hits = self.queue_hits.load(Relaxed);
        let mut total = BackendStats {
            name: self.name.clone(),
            hits: layers.iter().map(|l| l.hits).sum::<u64>() + queue_hits,
            misses: layers.last().map_or(0, |l| l.misses) + self.queue_misses.load(Relaxed),
            writes: self.writes.load(Relaxed),
            deletes: self.deletes.load(Relaxed),
            errors: layers.iter().map(|l| l.errors).sum(),
            ..BackendStats::default()
        };
        let names: Vec<&str> = self.layers.iter().map(|l| l.backend.name()).collect();
        total = total.with_detail("layers", names.join(" > "));
        match &self.write_back {
            None => total = total.with_detail("strategy", "write-through"),
            Some(wb) => {
                let q = &wb.stats;
                let dropped = q.dropped.load(Relaxed);
                let panicked = q.panicked.load(Relaxed);
                total.errors += dropped + panicked;
                let depth = self.queued();
                total = total
                    .with_detail("strategy", "write-back")
                    .with_detail("queue_capacity", wb.config.capacity)
                    .with_detail("queue_concurrency", wb.config.concurrency)
                    .with_detail("queue_depth", depth)
                    .with_detail("queue_enqueued", q.enqueued.load(Relaxed))
                    .with_detail("queue_written", q.written.load(Relaxed))
                    .with_detail("queue_failed", q.failed.load(Relaxed))
                    .with_detail("queue_superseded", q.superseded.load(Relaxed))
                    .with_detail("queue_expired", q.expired.load(Relaxed))
                    .with_detail("queue_dropped", dropped)
                    .with_detail("queue_hits", queue_hits);
            }
        }
        total.layers = layers;
        self.with_backplane_stats(total)
    }
}
