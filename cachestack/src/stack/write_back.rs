//! The write-back queue and its task.
//!
//! Writes wait in a bounded channel; one dispatcher task takes them out and stores up to
//! [`WriteBackConfig::concurrency`] at once, each in its own task. Per-key order needs nothing
//! more than what the stack already has: a queued write is stored under its stripe's I/O lock
//! and only if it is still the newest change of its key (its sequence number), so of two writes
//! of a key in flight together the older one is either stored first or discarded.
//!
//! A writer never waits longer than [`WriteBackConfig::max_wait`] for room: past it (or at once
//! under [`OnFull::Drop`]) the write is dropped below L1, and the key is invalidated in the lower
//! layers with tombstones, without any I/O on the writer's path.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};

use super::builder::{OnFull, WriteBackConfig};
use super::layer::{Call, Stamp};
use super::ordering::Dequeued;
use super::shared::Shared;
use crate::error::{Error, Result};
use crate::layer::within;
use crate::store::Backend;
use crate::value::Value;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub(super) enum Msg {
    Write(QueuedWrite),
    Flush(oneshot::Sender<()>),
}

pub(super) struct QueuedWrite {
    pub(super) key: Box<str>,
    pub(super) value: Value,
    /// The expiry and the moment the caller wrote.
    pub(super) stamp: Stamp,
    pub(super) seq: u64,
}

#[derive(Default)]
pub(super) struct QueueStats {
    pub(super) enqueued: AtomicU64,
    /// Stored in every lower layer.
    pub(super) written: AtomicU64,
    /// Failed (or were bypassed by the breaker) in at least one lower layer.
    pub(super) failed: AtomicU64,
    pub(super) superseded: AtomicU64,
    pub(super) expired: AtomicU64,
    pub(super) dropped: AtomicU64,
    pub(super) panicked: AtomicU64,
}

pub(super) struct WriteBackState {
    pub(super) config: WriteBackConfig,
    pub(super) tx: RwLock<Option<mpsc::Sender<Msg>>>,
    /// Becomes true when the task has stored everything and ended (its sender is dropped
    /// without that if the task itself failed).
    pub(super) finished: watch::Receiver<bool>,
    /// cachestack's runtime, for the small tasks that invalidate dropped writes.
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) stats: QueueStats,
}

impl WriteBackState {
    pub(super) fn sender(&self) -> Option<mpsc::Sender<Msg>> {
        self.tx.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(super) fn take_sender(&self) -> Option<mpsc::Sender<Msg>> {
        self.tx.write().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// Waits for the task to end (the queue must be closed first).
    pub(super) async fn finished(&self, name: &str) -> Result<()> {
        let mut finished = self.finished.clone();
        let ended = finished.wait_for(|done| *done).await.is_ok();
        if ended {
            Ok(())
        } else {
            Err(Error::Generic { backend: name.to_owned(), source: "the write-back task failed".into() })
        }
    }
}

/// The write-back task: takes writes out of the queue and stores up to `concurrency` at once; a
/// flush waits until every write taken before it is done. Ends when the queue is closed and
/// every write is done.
pub(super) async fn run_queue(shared: Arc<Shared>, mut rx: mpsc::Receiver<Msg>, finished: watch::Sender<bool>) {
    let Some(wb) = &shared.write_back else { return };
    let concurrency = u32::try_from(wb.config.concurrency).unwrap_or(u32::MAX).clamp(1, Semaphore::MAX_PERMITS as u32);
    let slots = Arc::new(Semaphore::new(concurrency as usize));
    // A slot is taken before a message, so that what waits for a slot waits in the queue, which
    // holds `capacity` writes whatever is in flight.
    while let Ok(slot) = slots.clone().acquire_owned().await {
        let Some(msg) = rx.recv().await else { break };
        match msg {
            Msg::Flush(ack) => {
                drop(slot);
                // All slots free: every write taken before the flush is done.
                if let Ok(all) = slots.acquire_many(concurrency).await {
                    drop(all);
                }
                let _ = ack.send(());
            }
            Msg::Write(write) => {
                if shared.discard_if_superseded(&write) {
                    continue;
                }
                let in_flight = InFlight { shared: shared.clone(), _slot: slot };
                tokio::spawn(async move {
                    in_flight.shared.store_queued(write).await;
                    drop(in_flight);
                });
            }
        }
    }
    if let Ok(all) = slots.acquire_many(concurrency).await {
        drop(all);
    }
    let _ = finished.send(true);
}

/// One queued write being stored: holds its slot, and counts and logs a panic of the backend
/// (the task ends; the queue carries on).
struct InFlight {
    shared: Arc<Shared>,
    _slot: OwnedSemaphorePermit,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(wb) = &self.shared.write_back {
                wb.stats.panicked.fetch_add(1, Relaxed);
            }
            tracing::error!(cache = %self.shared.name, "cachestack: a queued write-back write panicked");
        }
    }
}

impl Shared {
    pub(super) async fn set_back(
        self: &Arc<Self>,
        wb: &WriteBackState,
        key: &str,
        value: Value,
        ttl: Stamp,
    ) -> Result<()> {
        let Some(tx) = wb.sender() else { return self.set_through(key, value, ttl).await };
        let permit = match tx.try_reserve() {
            Ok(permit) => permit,
            Err(mpsc::error::TrySendError::Closed(())) => return self.set_through(key, value, ttl).await,
            Err(mpsc::error::TrySendError::Full(())) => match wb.config.on_full {
                OnFull::Drop => return self.set_dropped(wb, key, value, ttl).await,
                OnFull::Wait => match tokio::time::timeout(wb.config.max_wait, tx.reserve()).await {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_closed)) => return self.set_through(key, value, ttl).await,
                    Err(_waited_long_enough) => return self.set_dropped(wb, key, value, ttl).await,
                },
            },
        };
        let seq = self.next_seq();
        let _change = self.begin_queued(key, seq, &value, ttl);
        permit.send(Msg::Write(QueuedWrite { key: key.into(), value: value.clone(), stamp: ttl, seq }));
        wb.stats.enqueued.fetch_add(1, Relaxed);
        if self.layers[0].local().is_none() {
            // A remote L1 now; its failure is counted, and the value is queued for the others.
            let _ = self.layers[0].write(key, &value, &ttl, None).await;
        }
        Ok(())
    }

    /// Records a write-back write of `key` in its stripe (reads below L1 are answered with it
    /// until it is stored or invalidated below) and writes an in-process L1 under the same lock.
    fn begin_queued(&self, key: &str, seq: u64, value: &Value, ttl: Stamp) -> super::ordering::Change<'_> {
        let l1 = &self.layers[0];
        self.stripe(key).begin_queued(key, seq, value.clone(), ttl, || {
            if let Some(local) = l1.local() {
                local.set_value(key, value.clone(), ttl.for_layer(l1));
                l1.counters.record_write();
            }
        })
    }

    /// A write-back write that found no room in the queue: it reaches L1 only, is counted, and
    /// the key gets tombstones in the lower layers (no I/O here: they are replayed before the
    /// stack's next call to each layer). Until the tombstones are in place, after any write of
    /// the key's stripe already on the wire, reads below L1 are answered with this value.
    pub(super) async fn set_dropped(
        self: &Arc<Self>,
        wb: &WriteBackState,
        key: &str,
        value: Value,
        ttl: Stamp,
    ) -> Result<()> {
        let dropped = wb.stats.dropped.fetch_add(1, Relaxed) + 1;
        if dropped.is_power_of_two() {
            tracing::warn!(
                cache = %self.name,
                key,
                dropped,
                "cachestack: write-back queue full; write kept in L1 only and the key invalidated below it (logged at 1, 2, 4, 8... drops)"
            );
        }
        let seq = self.next_seq();
        let change = self.begin_queued(key, seq, &value, ttl);
        self.invalidate_below(wb, key, seq);
        drop(change);
        if self.layers[0].local().is_some() {
            return Ok(());
        }
        match self.layers[0].write(key, &value, &ttl, None).await {
            Call::Done(()) => Ok(()),
            Call::Failed(err) => Err(err),
            Call::Bypassed => Err(self.all_failed("set", None)),
        }
    }

    /// Tombstones `key` (write `seq`) in the lower layers, after any write of its stripe already
    /// on the wire: at once if the stripe is idle, else from a small task that waits for it.
    fn invalidate_below(self: &Arc<Self>, wb: &WriteBackState, key: &str, seq: u64) {
        let stripe = self.stripe(key);
        if let Ok(io) = stripe.io.try_lock() {
            self.tombstone_below(key, seq);
            drop(io);
            return;
        }
        let shared = self.clone();
        let key: Box<str> = key.into();
        wb.runtime.spawn(async move {
            let stripe = shared.stripe(&key);
            let _io = stripe.io.lock().await;
            shared.tombstone_below(&key, seq);
        });
    }

    /// Under the stripe's I/O lock: ends the dropped write `seq` of `key`; unless a newer change of
    /// the key took over, leaves a tombstone in each remote lower layer (and removes the key from
    /// in-process ones).
    fn tombstone_below(&self, key: &str, seq: u64) {
        let stripe = self.stripe(key);
        let _dequeued = Dequeued { stripe, key };
        if !stripe.is_latest(key, seq) {
            return;
        }
        for layer in &self.layers[1..] {
            match layer.local() {
                Some(local) => {
                    local.remove(key);
                }
                None => layer.tombstones.add([key]),
            }
        }
    }

    /// Discards a write that a newer change of its key already superseded, before it takes a slot.
    fn discard_if_superseded(&self, write: &QueuedWrite) -> bool {
        let stripe = self.stripe(&write.key);
        if stripe.is_latest(&write.key, write.seq) {
            return false;
        }
        drop(Dequeued { stripe, key: &write.key });
        if let Some(wb) = &self.write_back {
            wb.stats.superseded.fetch_add(1, Relaxed);
        }
        true
    }

    /// The write-back task's work for one queued write.
    pub(super) async fn store_queued(&self, write: QueuedWrite) {
        let Some(wb) = &self.write_back else { return };
        let stripe = self.stripe(&write.key);
        let _io = stripe.io.lock().await;
        let _dequeued = Dequeued { stripe, key: &write.key };
        if !stripe.is_latest(&write.key, write.seq) {
            wb.stats.superseded.fetch_add(1, Relaxed);
            return;
        }
        let limit = wb.config.write_timeout;
        let (mut expired, mut failed) = (false, false);
        for layer in &self.layers[1..] {
            // The deadline fixed when the caller wrote; the time spent queued is not given back.
            let about_to_expire =
                write.stamp.deadline_for(layer).is_some_and(|deadline| deadline.remaining() < self.min_backfill_ttl);
            let done = if about_to_expire {
                // Expired while queued: what this layer holds is older; remove it.
                expired = true;
                matches!(layer.remove(&write.key, limit).await, Call::Done(_))
            } else {
                matches!(layer.write(&write.key, &write.value, &write.stamp, limit).await, Call::Done(()))
            };
            failed |= !done;
        }
        // The lower layers have it now: the other processes read it there after this eviction.
        self.announce_key(&write.key);
        let counter = match (expired, failed) {
            (_, true) => &wb.stats.failed,
            (true, false) => &wb.stats.expired,
            (false, false) => &wb.stats.written,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// Waits, within the queue's flush timeout, until every write queued before this call is
    /// done, then flushes the layers themselves.
    pub(super) async fn flush(&self) -> Result<()> {
        match &self.write_back {
            Some(wb) => within(&self.name, wb.config.flush_timeout, self.flush_unbounded(wb)).await.inspect_err(|err| {
                tracing::warn!(cache = %self.name, error = %err, queued = self.queued(), "cachestack: write-back flush gave up; the queued writes carry on in the background");
            }),
            None => self.flush_layers().await,
        }
    }

    async fn flush_unbounded(&self, wb: &WriteBackState) -> Result<()> {
        if let Some(tx) = wb.sender() {
            let (ack, acked) = oneshot::channel();
            if tx.send(Msg::Flush(ack)).await.is_ok() {
                let _ = acked.await;
            }
        }
        self.flush_layers().await
    }

    async fn flush_layers(&self) -> Result<()> {
        self.each_layer("flush", |b| b.flush()).await
    }

    async fn close_layers(&self) -> Result<()> {
        self.each_layer("close", |b| b.close()).await
    }

    /// Sends `op` to every layer, fastest first; stops at the first failure.
    async fn each_layer<'a, F>(&'a self, op: &'static str, f: F) -> Result<()>
    where
        F: Fn(&'a dyn Backend) -> BoxFuture<'a, Result<()>>,
    {
        for layer in &self.layers {
            if let Call::Failed(err) = layer.call(op, "", &f).await {
                return Err(err);
            }
        }
        Ok(())
    }

    /// Writes waiting in the queue (0 without one).
    pub(super) fn queued(&self) -> usize {
        self.write_back.as_ref().and_then(WriteBackState::sender).map_or(0, |tx| tx.max_capacity() - tx.capacity())
    }

    /// Drains the queue and stops its task, within the flush timeout (later writes are written
    /// through; past the timeout the task carries on in the background), then closes the layers.
    pub(super) async fn close(&self) -> Result<()> {
        if let Some(wb) = &self.write_back {
            drop(wb.take_sender());
            within(&self.name, wb.config.flush_timeout, wb.finished(&self.name)).await?;
        }
        self.close_layers().await
    }
}
