//! One layer as the stack calls it: its counters, its breaker, the deadline a write gets in it.

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::tombstones::Tombstones;
use crate::error::{Error, Result};
use crate::expiry::{Deadline, Expiry};
use crate::layer::{within, Circuit};
use crate::store::{Backend, Counters, Entry, LocalBackend};
use crate::tags::TagCheck;
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
    pub(super) fn deadline_for(&self, layer: &Layer) -> Option<Deadline> {
        self.expiry.resolve_from(self.written, layer.default_ttl())
    }

    /// What a write to `layer` carries: the deadline fixed at write time, or, for a layer that
    /// has no default TTL, `Default` as the caller wrote it (such a layer, a nested stack or a
    /// store of its own, may still have a default of its own: "no expiry" is not ours to decide).
    pub(super) fn for_layer(&self, layer: &Layer) -> Expiry {
        self.resolved(layer.default_ttl())
    }

    /// [`Stamp::for_layer`] for a store called directly (the lowest layer: nothing below it).
    pub(super) fn for_backend(&self, backend: &dyn Backend) -> Expiry {
        self.resolved(backend.default_ttl())
    }

    fn resolved(&self, default_ttl: Option<Duration>) -> Expiry {
        match (self.expiry, default_ttl) {
            (Expiry::Default, None) => Expiry::Default,
            _ => Expiry::from(self.expiry.resolve_from(self.written, default_ttl)),
        }
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
    /// The breaker of a remote layer (it counts the calls it bypassed).
    pub(super) breaker: Option<Circuit>,
    /// Deletes and clears the layer missed, replayed before the stack's next call to it.
    pub(super) tombstones: Tombstones,
    /// For a memory layer without a default TTL: the default TTL of the nearest layer below that
    /// has one (see [`Layer::default_ttl`]).
    pub(super) inherited_ttl: Option<Duration>,
}

impl Layer {
    /// The default TTL a write with `Expiry::Default` gets here: the layer's own, else (for a
    /// memory layer) the nearest lower layer's, so an L1 copy never outlives the copy below it.
    pub(super) fn default_ttl(&self) -> Option<Duration> {
        self.backend.default_ttl().or(self.inherited_ttl)
    }

    #[inline]
    pub(super) fn local(&self) -> Option<&dyn LocalBackend> {
        self.backend.as_local()
    }

    /// Runs `op` on the layer unless its breaker bypasses it, after replaying the deletes the
    /// layer missed (a failed replay fails the call); counts and logs a failure.
    pub(super) async fn call<'a, T, F, Fut>(&'a self, op: &'static str, key: &str, f: F) -> Call<T>
    where
        F: FnOnce(&'a dyn Backend) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.call_within(op, key, None, f).await
    }

    /// [`Layer::call`] bounded by `limit` (replay included): past it the call fails with
    /// [`Error::Timeout`], which counts against the breaker like any store failure.
    pub(super) async fn call_within<'a, T, F, Fut>(
        &'a self,
        op: &'static str,
        key: &str,
        limit: Option<Duration>,
        f: F,
    ) -> Call<T>
    where
        F: FnOnce(&'a dyn Backend) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let unbounded = async {
            self.replay().await?;
            f(&*self.backend).await
        };
        let run = async {
            match limit {
                Some(limit) => within(self.backend.name(), limit, unbounded).await,
                None => unbounded.await,
            }
        };
        let result = match &self.breaker {
            None => run.await,
            Some(breaker) => match breaker.call(run).await {
                Some(result) => result,
                None => return Call::Bypassed,
            },
        };
        match result {
            Ok(value) => Call::Done(value),
            Err(err) => {
                self.counters.record_error();
                tracing::warn!(layer = self.index, backend = self.backend.name(), op, key, error = %err, "cachestack: tiered layer failed; skipped for this call");
                Call::Failed(err)
            }
        }
    }

    /// Replays the clear and the deletes this layer missed (see [`Tombstones`]).
    async fn replay(&self) -> Result<()> {
        if !self.tombstones.is_pending() {
            return Ok(());
        }
        let _one_at_a_time = self.tombstones.replaying.lock().await;
        if let Some(generation) = self.tombstones.pending_clear() {
            self.backend.clear().await?;
            self.tombstones.cleared(generation);
            tracing::info!(
                layer = self.index,
                backend = self.backend.name(),
                "cachestack: replayed a clear the tiered layer missed"
            );
        }
        let keys = self.tombstones.keys();
        if !keys.is_empty() {
            let refs: Vec<&str> = keys.iter().map(|(key, _)| &**key).collect();
            self.backend.delete_many(&refs).await?;
            self.tombstones.deleted(&keys);
            tracing::info!(
                layer = self.index,
                backend = self.backend.name(),
                deletes = keys.len(),
                "cachestack: replayed deletes the tiered layer missed"
            );
        }
        Ok(())
    }

    /// After a write of `keys` that did not reach the layer: do not leave an older value
    /// behind. A reachable store (a value too large for it, a codec refusing the type...) gets a
    /// delete now; otherwise, or if that fails, the keys get tombstones.
    async fn after_failed_write(&self, keys: &[&str], err: Option<&Error>) {
        if err.is_some_and(|err| !err.is_unavailable()) {
            match self.backend.delete_many(keys).await {
                Ok(_) => return,
                Err(e) => {
                    tracing::debug!(layer = self.index, error = %e, "cachestack: cleanup delete after a failed write failed")
                }
            }
        }
        self.tombstones.add(keys.iter().copied());
    }

    /// Writes `key`, within `limit` if one is given (see [`Layer::call_within`]).
    pub(super) async fn write(&self, key: &str, value: &Value, stamp: &Stamp, limit: Option<Duration>) -> Call<()> {
        let expiry = stamp.for_layer(self);
        if let Some(local) = self.local() {
            local.set_value(key, value.clone(), expiry);
            self.counters.record_write();
            return Call::Done(());
        }
        let result = self.call_within("set", key, limit, |b| b.set(key, value.clone(), expiry)).await;
        match &result {
            Call::Done(()) => {
                self.counters.record_write();
                self.tombstones.supersede(key);
            }
            Call::Failed(err) => self.after_failed_write(&[key], Some(err)).await,
            Call::Bypassed => self.after_failed_write(&[key], None).await,
        }
        result
    }

    pub(super) async fn write_many(&self, entries: &[(&str, Value)], stamp: &Stamp) -> Call<()> {
        let expiry = stamp.for_layer(self);
        if let Some(local) = self.local() {
            for (key, value) in entries {
                local.set_value(key, value.clone(), expiry);
            }
            self.counters.record_writes(entries.len() as u64);
            return Call::Done(());
        }
        let result = self.call("set_many", "", |b| b.set_many(entries, expiry)).await;
        let keys = || entries.iter().map(|(k, _)| *k).collect::<Vec<&str>>();
        match &result {
            Call::Done(()) => {
                self.counters.record_writes(entries.len() as u64);
                for (key, _) in entries {
                    self.tombstones.supersede(key);
                }
            }
            Call::Failed(err) => self.after_failed_write(&keys(), Some(err)).await,
            Call::Bypassed => self.after_failed_write(&keys(), None).await,
        }
        result
    }

    /// Deletes `key`, within `limit` if one is given (see [`Layer::call_within`]).
    pub(super) async fn remove(&self, key: &str, limit: Option<Duration>) -> Call<bool> {
        self.counters.record_delete();
        if let Some(local) = self.local() {
            return Call::Done(local.remove(key));
        }
        let result = self.call_within("delete", key, limit, |b| b.delete(key)).await;
        if !matches!(result, Call::Done(_)) {
            self.tombstones.add([key]);
        }
        result
    }

    pub(super) async fn remove_many(&self, keys: &[&str]) -> Call<u64> {
        self.counters.record_delete();
        if let Some(local) = self.local() {
            return Call::Done(keys.iter().map(|key| u64::from(local.remove(key))).sum());
        }
        let result = self.call("delete_many", "", |b| b.delete_many(keys)).await;
        if !matches!(result, Call::Done(_)) {
            self.tombstones.add(keys.iter().copied());
        }
        result
    }

    pub(super) async fn clear(&self) -> Call<()> {
        let result = self.call("clear", "", |b| b.clear()).await;
        if !matches!(result, Call::Done(())) && self.local().is_none() {
            self.tombstones.add_clear();
        }
        result
    }

    pub(super) async fn read(&self, key: &str) -> Call<Option<Entry>> {
        if let Some(local) = self.local() {
            return Call::Done(local.get_entry(key));
        }
        self.call("get", key, |b| b.get(key)).await
    }

    /// Whether the layer holds `key`; with a `check`, an entry read and found current (see
    /// [`crate::tags`]): a tagged entry's tags are in its value.
    pub(super) async fn exists(&self, key: &str, check: Option<&dyn TagCheck>) -> Call<bool> {
        let Some(check) = check else { return self.call("exists", key, |b| b.exists(key)).await };
        match self.read(key).await {
            Call::Done(Some(entry)) => Call::Done(check.entry_current(&entry).await),
            Call::Done(None) => Call::Done(false),
            Call::Failed(err) => Call::Failed(err),
            Call::Bypassed => Call::Bypassed,
        }
    }
}
