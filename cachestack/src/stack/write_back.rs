//! The write-back queue and its task.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use tokio::sync::{mpsc, oneshot};

use super::builder::{OnFull, WriteBackConfig};
use super::layer::{Call, Stamp};
use super::ordering::Dequeued;
use super::shared::Shared;
use crate::error::Result;
use crate::value::Value;

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
    pub(super) written: AtomicU64,
    pub(super) superseded: AtomicU64,
    pub(super) expired: AtomicU64,
    pub(super) dropped: AtomicU64,
    pub(super) panicked: AtomicU64,
}

pub(super) struct WriteBackState {
    pub(super) config: WriteBackConfig,
    pub(super) tx: RwLock<Option<mpsc::Sender<Msg>>>,
    pub(super) worker: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Disconnects when the task ends (for a drop outside a runtime to wait on).
    pub(super) done: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    pub(super) stats: QueueStats,
}

impl WriteBackState {
    pub(super) fn sender(&self) -> Option<mpsc::Sender<Msg>> {
        self.tx.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(super) fn take_sender(&self) -> Option<mpsc::Sender<Msg>> {
        self.tx.write().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// The write-back task: stores queued writes in order, one at a time.
pub(super) async fn run_queue(shared: Arc<Shared>, mut rx: mpsc::Receiver<Msg>, done: std::sync::mpsc::SyncSender<()>) {
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Flush(ack) => {
                let _ = ack.send(());
            }
            Msg::Write(write) => {
                // A backend that panics must not take the queue down with it.
                let task = shared.clone();
                if let Err(err) = tokio::spawn(async move { task.store_queued(write).await }).await {
                    if let Some(wb) = &shared.write_back {
                        wb.stats.panicked.fetch_add(1, Relaxed);
                    }
                    tracing::error!(cache = %shared.name, error = %err, "cachestack: a queued write-back write panicked");
                }
            }
        }
    }
    drop(done);
}

impl Shared {
    pub(super) async fn set_back(&self, wb: &WriteBackState, key: &str, value: Value, ttl: Stamp) -> Result<()> {
        let Some(tx) = wb.sender() else { return self.set_through(key, value, ttl).await };
        let permit = match wb.config.on_full {
            OnFull::Wait => match tx.reserve().await {
                Ok(permit) => permit,
                Err(_) => return self.set_through(key, value, ttl).await,
            },
            OnFull::Drop => match tx.try_reserve() {
                Ok(permit) => permit,
                Err(mpsc::error::TrySendError::Full(())) => return self.set_dropped(wb, key, value, ttl).await,
                Err(mpsc::error::TrySendError::Closed(())) => return self.set_through(key, value, ttl).await,
            },
        };
        let seq = self.next_seq();
        let stripe = self.stripe(key);
        let l1 = &self.layers[0];
        let local_l1 = l1.local();
        let _change = stripe.begin_queued(key, seq, value.clone(), ttl, || {
            if let Some(local) = local_l1 {
                local.set_value(key, value.clone(), ttl.for_layer(&*l1.backend));
                l1.counters.record_write();
            }
        });
        permit.send(Msg::Write(QueuedWrite { key: key.into(), value: value.clone(), stamp: ttl, seq }));
        wb.stats.enqueued.fetch_add(1, Relaxed);
        if local_l1.is_none() {
            // A remote L1 now; its failure is counted, and the value is queued for the others.
            let _ = l1.write(key, &value, &ttl).await;
        }
        Ok(())
    }

    /// A write-back write that found the queue full under [`OnFull::Drop`].
    pub(super) async fn set_dropped(&self, wb: &WriteBackState, key: &str, value: Value, ttl: Stamp) -> Result<()> {
        wb.stats.dropped.fetch_add(1, Relaxed);
        tracing::warn!(cache = %self.name, key, "cachestack: write-back queue full; write kept in L1 only and the key invalidated below it");
        let (_change, _) = self.stripe(key).begin_change(key, &self.seq).await;
        let l1 = self.layers[0].write(key, &value, &ttl).await;
        for layer in &self.layers[1..] {
            let _ = layer.remove(key).await;
        }
        match l1 {
            Call::Done(()) => Ok(()),
            Call::Failed(err) => Err(err),
            Call::Bypassed => Err(self.all_failed("set", None)),
        }
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
        let mut expired = false;
        for layer in &self.layers[1..] {
            // The deadline fixed when the caller wrote; the time spent queued is not given back.
            let about_to_expire = write
                .stamp
                .deadline_for(&*layer.backend)
                .is_some_and(|deadline| deadline.remaining() < self.min_backfill_ttl);
            if about_to_expire {
                // Expired while queued: what this layer holds is older; remove it.
                expired = true;
                let _ = layer.remove(&write.key).await;
            } else {
                let _ = layer.write(&write.key, &write.value, &write.stamp).await;
            }
        }
        if expired {
            wb.stats.expired.fetch_add(1, Relaxed);
        } else {
            wb.stats.written.fetch_add(1, Relaxed);
        }
    }

    pub(super) async fn flush(&self) -> Result<()> {
        if let Some(tx) = self.write_back.as_ref().and_then(WriteBackState::sender) {
            let (ack, acked) = oneshot::channel();
            if tx.send(Msg::Flush(ack)).await.is_ok() {
                let _ = acked.await;
            }
        }
        for layer in &self.layers {
            if let Call::Failed(err) = layer.call("flush", "", |b| b.flush()).await {
                return Err(err);
            }
        }
        Ok(())
    }
}
