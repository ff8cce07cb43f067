//! One layer as the stack calls it: its counters, its breaker, the deadline a write gets in it.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::expiry::{Deadline, Expiry};
use crate::layer::{is_store_failure, Circuit};
use crate::store::{Backend, Counters, Entry, LocalBackend};
use crate::value::Value;

/// A write's expiry and the moment the caller made it: each layer's deadline, fixed at write time
/// whatever queue or slow link the write then waits in.
#[derive(Clone, Copy, Debug)]
pub(super) struct Stamp {
    pub(super) expiry: Expiry,
    pub(super) written: SystemTime,
}

impl Stamp {
    pub(super) fn now(expiry: Expiry) -> Self {
        Stamp { expiry, written: SystemTime::now() }
    }

    /// The deadline of this write in `layer` (its default TTL counted from the write).
    pub(super) fn deadline_for(&self, layer: &dyn Backend) -> Option<Deadline> {
        self.expiry.resolve_from(self.written, layer.default_ttl())
    }

    pub(super) fn for_layer(&self, layer: &dyn Backend) -> Expiry {
        Expiry::from(self.deadline_for(layer))
    }
}

/// The outcome of one call to one layer.
pub(super) enum Call<T> {
    Done(T),
    Failed(Error),
    Bypassed,
}

pub(super) struct Layer {
    pub(super) index: usize,
    pub(super) backend: Arc<dyn Backend>,
    /// What the stack saw of this layer (hits, misses, writes, deletes, errors).
    pub(super) counters: Counters,
    pub(super) backfills: AtomicU64,
    pub(super) bypassed: AtomicU64,
    pub(super) breaker: Option<Circuit>,
}

impl Layer {
    #[inline]
    pub(super) fn local(&self) -> Option<&dyn LocalBackend> {
        self.backend.as_local()
    }

    /// Runs `op` on the layer unless its breaker bypasses it; counts and logs a failure.
    pub(super) async fn call<'a, T, F, Fut>(&'a self, op: &'static str, key: &str, f: F) -> Call<T>
    where
        F: FnOnce(&'a dyn Backend) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let probe = match &self.breaker {
            None => None,
            Some(breaker) => match breaker.admit() {
                Some(permit) => Some(permit),
                None => {
                    self.bypassed.fetch_add(1, Relaxed);
                    return Call::Bypassed;
                }
            },
        };
        let result = f(&*self.backend).await;
        match result {
            Ok(value) => {
                if let Some(permit) = probe {
                    permit.finish(false);
                }
                Call::Done(value)
            }
            Err(err) => {
                self.counters.record_error();
                tracing::warn!(layer = self.index, backend = self.backend.name(), op, key, error = %err, "cachestack: tiered layer failed; skipped for this call");
                if let Some(permit) = probe {
                    permit.finish(is_store_failure(&err));
                }
                Call::Failed(err)
            }
        }
    }

    pub(super) async fn write(&self, key: &str, value: &Value, stamp: &Stamp) -> Call<()> {
        let expiry = stamp.for_layer(&*self.backend);
        if let Some(local) = self.local() {
            local.set_value(key, value.clone(), expiry);
            self.counters.record_write();
            return Call::Done(());
        }
        match self.call("set", key, |b| b.set(key, value.clone(), expiry)).await {
            Call::Done(()) => {
                self.counters.record_write();
                Call::Done(())
            }
            Call::Failed(err) => {
                // The write did not land: do not leave an older value behind when the store is
                // reachable (a value too large for it, a codec refusing the type...).
                if !err.is_unavailable() {
                    if let Err(e) = self.backend.delete(key).await {
                        tracing::debug!(layer = self.index, key, error = %e, "cachestack: cleanup delete after a failed write failed");
                    }
                }
                Call::Failed(err)
            }
            Call::Bypassed => Call::Bypassed,
        }
    }

    pub(super) async fn write_many(&self, entries: &[(&str, Value)], stamp: &Stamp) -> Call<()> {
        let expiry = stamp.for_layer(&*self.backend);
        if let Some(local) = self.local() {
            for (key, value) in entries {
                local.set_value(key, value.clone(), expiry);
            }
            self.counters.record_writes(entries.len() as u64);
            return Call::Done(());
        }
        match self.call("set_many", "", |b| b.set_many(entries, expiry)).await {
            Call::Done(()) => {
                self.counters.record_writes(entries.len() as u64);
                Call::Done(())
            }
            Call::Failed(err) => {
                if !err.is_unavailable() {
                    let keys: Vec<&str> = entries.iter().map(|(k, _)| *k).collect();
                    if let Err(e) = self.backend.delete_many(&keys).await {
                        tracing::debug!(layer = self.index, error = %e, "cachestack: cleanup delete after a failed write failed");
                    }
                }
                Call::Failed(err)
            }
            Call::Bypassed => Call::Bypassed,
        }
    }

    pub(super) async fn remove(&self, key: &str) -> Call<bool> {
        self.counters.record_delete();
        if let Some(local) = self.local() {
            return Call::Done(local.remove(key));
        }
        self.call("delete", key, |b| b.delete(key)).await
    }

    pub(super) async fn read(&self, key: &str) -> Call<Option<Entry>> {
        if let Some(local) = self.local() {
            return Call::Done(local.get_entry(key));
        }
        self.call("get", key, |b| b.get(key)).await
    }
}
