//! [`TieredCache`]: backends stacked fastest first behind one [`Backend`]; the guarantees are
//! documented on the type.
//!
//! - `builder`: the configuration and the builder;
//! - `layer`: one layer as the stack calls it (its counters, breaker and tombstones);
//! - `ordering`: stripes, epochs and changes, which keep deletes and overwrites ordered;
//! - `read`, `write`: the stack's reads (with backfill) and changes, sent to every layer;
//! - `write_back`: the queue and its task.

mod atomic;
mod backplane;
mod builder;
mod layer;
mod ordering;
mod read;
mod shared;
mod tombstones;
mod write;
mod write_back;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

pub use crate::layer::BreakerConfig;
pub use builder::{OnFull, TieredCacheBuilder, WriteBackConfig, WriteStrategy};

use crate::backplane::Change;
use crate::error::Result;
use crate::expiry::Expiry;
use crate::pattern::KeyPattern;
use crate::store::{Backend, BackendStats, Entry, KeyVisitor, LocalRead, LockOps, Signing};
use crate::tags::TagCheck;
use crate::value::Value;
use layer::Layer;
use shared::Shared;

/// Backends stacked fastest first (memory over file over Redis...) behind one [`Backend`].
///
/// Reads walk the layers and backfill the faster ones with the remaining TTL; writes go through
/// every layer or, write-back, through L1 and a background queue; deletes and clears reach every
/// layer; a failing layer is skipped and counted, optionally bypassed for a cool-down.
///
/// ```
/// use std::time::Duration;
/// use cachestack::{Backend, Cache, MemoryBackend, TieredCache};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let stack = TieredCache::builder()
///     .layer(MemoryBackend::with_capacity(1_000))   // L1
///     .layer(MemoryBackend::with_capacity(100_000)) // L2 (a file or Redis backend in practice)
///     .build()?;
/// stack.layer(1).unwrap().set("user:1", cachestack::Value::new("Ada".to_string()), cachestack::Expiry::Default).await?;
///
/// let cache = Cache::new(stack);
/// // Found in L2 and copied into L1:
/// assert_eq!(cache.get::<String>("user:1").await?.as_deref(), Some("Ada"));
/// let stats = cache.stats();
/// assert_eq!((stats.layers[0].misses, stats.layers[1].hits, stats.layers[0].backfills), (1, 1, 1));
/// // Now served by L1:
/// assert_eq!(cache.get::<String>("user:1").await?.as_deref(), Some("Ada"));
/// assert_eq!(cache.stats().layers[0].hits, 1);
/// # Ok::<(), cachestack::Error>(())
/// # }).unwrap();
/// ```
///
/// # Reads and backfill
///
/// A read walks L1 -> Ln and stops at the first layer that has the key. A hit in layer k copies
/// the entry into layers 0..k-1 with the time it has left: the deadline is taken from the moment
/// the read was sent (`start + remaining`), so a faster layer never keeps an entry longer than the
/// layer it came from. An entry with no expiry is backfilled with `ttl: None`, which means "the
/// faster layer's default TTL" (no expiry if it has none); an entry with less than
/// [`TieredCacheBuilder::min_backfill_ttl`] left is not backfilled at all.
///
/// Backfill writes the *same* [`Value`] handle that was read. When the caller then reads it as a
/// type, the handle keeps the decoded value, so the memory tier holds a typed value and its next
/// hit is a downcast and a clone, with no decoding.
///
/// Backfill is awaited before the read returns: into an in-process layer it is a synchronous
/// insert; into a remote layer it is one write to a layer that is faster than the one that just
/// answered, so it at most doubles the cost of that (already slow) read, and the next read of
/// the key is certain to be served from the faster layer.
///
/// # Writes
///
/// [`WriteStrategy::WriteThrough`] writes every layer, fastest first, and returns when all have
/// answered. [`WriteStrategy::WriteBack`] writes L1 and puts the write for the other layers on a
/// bounded queue, drained on cachestack's runtime ([`crate::rt`]) by up to
/// [`WriteBackConfig::concurrency`] writes at a time (writes of one key in order, see below);
/// [`TieredCache::flush`] waits until everything queued before it is stored, and
/// [`TieredCache::close`] drains the queue and stops the task (later writes are written through),
/// both within [`WriteBackConfig::flush_timeout`]. A full queue makes the writer wait for room at
/// most [`WriteBackConfig::max_wait`] ([`OnFull::Wait`], the default) or not at all
/// ([`OnFull::Drop`]); then the write is dropped below L1 with a counted error: it still reaches
/// L1, and the key gets a tombstone in each lower layer (no I/O on the writer's path), so that
/// they cannot serve the value it replaced. So a slow or unreachable lower layer never blocks a
/// `set` for longer than `max_wait`. Each queued write is bounded per layer by
/// [`WriteBackConfig::write_timeout`], and a write-back stack has a breaker on its remote layers
/// (by default [`BreakerConfig::default()`]): a layer that keeps failing or timing out is
/// bypassed, and the writes queued for it fail fast (with tombstones) instead of piling up.
/// While a write sits in the queue, a read that misses L1 is answered from the queue: lower layers
/// are behind for that key and are not consulted.
///
/// What is guaranteed for queued writes: `flush().await` and `close().await` return once every
/// write queued before them was stored (or failed and was counted), or fail with a timeout. Dropping
/// the stack closes the queue and the task keeps draining it in the background; outside an async
/// runtime the drop also waits up to [`WriteBackConfig::drain_on_drop`] for it to finish. A process
/// that exits without `close()` (or `flush()`) may lose what was still queued: call `close()`, or
/// [`CacheRegistry::shutdown`](crate::CacheRegistry::shutdown) for every registered cache, on an
/// orderly shutdown.
///
/// # Invalidation and ordering
///
/// Keys hash onto stripes. Every change (set, delete, clear) bumps its stripe's epoch before it
/// touches a layer and again when it is done, and marks the stripe busy meanwhile. A read that
/// went below L1 backfills only if its stripe's epoch did not move and no change was in flight,
/// so a value read just before a delete or an overwrite never lands in a faster layer afterwards.
/// Backfills into remote layers and the write-back task's writes hold the stripe's I/O lock while
/// they check and write; a delete takes that lock before it starts, so it waits for a write that
/// is already on the wire and then deletes after it. Queued writes carry a per-key sequence
/// number: a delete (or a newer write) of the key supersedes every write still queued for it, and
/// the task discards superseded writes instead of storing them. Hence a deleted key never comes
/// back from the queue, and of several queued writes to one key only the newest is stored. The
/// same lock and check keep the writes of one key in order when the queue stores several writes at
/// once: of two writes of a key in flight together, the older is stored first or discarded.
///
/// Write-through writes and deletes hold the I/O lock of their key's stripe from start to end,
/// so the changes of one key reach every layer in the same order: two writers racing on a key
/// never leave L1 with one value and L2 with the other. (The price: changes of keys that share a
/// stripe, 1 in 256, wait for each other.) With write-back, an in-process L1 is written in the
/// order in which the queue stores the writes; a remote L1 may keep the older of two racing
/// writes of a key until it expires.
///
/// # Failing layers
///
/// A layer that returns an error is skipped for that call, the error is counted against it and
/// logged, and the other layers serve. An operation fails only when no layer could serve it. A
/// write that fails in a layer for a reason other than the layer being unreachable (a value too
/// large for it, say) is followed by a delete of the key in that layer, so that an older value
/// is not left behind. With a [`BreakerConfig`], a remote layer that failed `failure_threshold`
/// times in a row is bypassed for `cool_down`; then one call probes it, and a success closes the
/// breaker while a failure opens it for another cool-down.
///
/// A delete, write or clear that failed in a layer or bypassed it leaves a tombstone there (for a
/// clear, a pending clear): before the stack's next call to that layer (a read, a write, a
/// backfill, the probe of its breaker) the missed deletes and clears are replayed, and if the
/// replay fails the call fails without reading the layer. So a deleted value never comes back
/// from a layer that was down. Tombstones are bounded (10 000 keys per layer; past that the
/// layer gets a pending clear) and live in the process: a process that exits before the layer
/// is back leaves them unreplayed. Per-layer stats show `tombstones` and `clear_pending`.
///
/// The stack's breaker is the state machine of the [`Breaker`](crate::layer::Breaker) layer,
/// kept per layer by the stack instead of wrapped around the store, so that a bypassed layer is
/// skipped (not failed) and gets its tombstones. Per-layer stats show `breaker` (`closed`,
/// `open`, `half-open`), `breaker_trips` and `bypassed`. Its clock is tokio's
/// ([`tokio::time::Instant`]), so tests can pause and advance it.
///
/// # Atomic operations and patterns
///
/// [`Backend::set_if_absent`], [`Backend::incr`] and [`Backend::expire`] run on the lowest layer
/// alone (the source of truth all processes share; a faster, process-local layer would answer
/// for this process only), holding the key's stripe as a write does; the key is then removed from
/// the faster layers, which refill from below. If the lowest layer cannot do the operation, the
/// stack answers [`Error::Unsupported`](crate::Error::Unsupported). [`Backend::ttl`] is the stack's own read.
/// [`Backend::delete_matching`] runs on every layer, lowest first, holding every stripe as a
/// clear does; a layer that missed it (failed or bypassed) clears itself before the stack's next
/// call to it. [`Backend::keys_matching`] lists the lowest layer. With write-back, each of these
/// first waits for the queue ([`TieredCache::flush`]), so the lowest layer has every earlier
/// write.
///
/// # Stats
///
/// [`Backend::stats`] of the stack gives totals and, in `layers`, one entry per layer as the stack
/// saw it: `hits` and `misses` are lookups the stack sent to that layer (a failed or bypassed
/// lookup is a miss and, when it failed, an error), `backfills` the entries copied into it. The
/// lookups reaching layer k+1 are the misses of layer k, less the reads answered from the
/// write-back queue. The stack's hits are the layers' hits plus the reads answered from the queue;
/// its misses are the reads that no layer answered. The backend's own figures (entries,
/// evictions, details) are carried over. When L1 is a memory backend, its `hits` include the
/// hits `#[cached]` functions answered from their typed copies of L1's entries (see
/// [`MemoryBackend`](crate::MemoryBackend)), which never reach the stack.
pub struct TieredCache {
    shared: Arc<Shared>,
    view: L1View,
}

impl fmt::Debug for TieredCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let layers: Vec<&str> = self.shared.layers.iter().map(|l| l.backend.name()).collect();
        f.debug_struct("TieredCache")
            .field("name", &self.shared.name)
            .field("layers", &layers)
            .field("strategy", &self.shared.strategy)
            .finish()
    }
}

impl TieredCache {
    /// A builder: add layers fastest first, pick a write strategy, optionally a breaker.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cachestack::{BreakerConfig, MemoryBackend, TieredCache, WriteBackConfig};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let stack = TieredCache::builder()
    ///     .layer(MemoryBackend::with_capacity(1_000))
    ///     .layer(MemoryBackend::with_capacity(100_000))
    ///     .write_back(WriteBackConfig::new(10_000))
    ///     .breaker(BreakerConfig::new(5, Duration::from_secs(30)))
    ///     .build()
    ///     .unwrap();
    /// stack.close().await.unwrap();
    /// # });
    /// ```
    pub fn builder() -> TieredCacheBuilder {
        TieredCacheBuilder::default()
    }

    /// A write-through stack over `layers`, fastest first: exactly
    /// `TieredCache::builder().layer_arc(..)...build()`, so with the builder's defaults (no
    /// breaker). For a stack whose remote layers have a breaker, see
    /// [`TieredCache::from_layers_with_breaker`].
    ///
    /// ```
    /// use std::sync::Arc;
    /// use cachestack::{Backend, MemoryBackend, TieredCache};
    /// let l1: Arc<dyn Backend> = Arc::new(MemoryBackend::with_capacity(10));
    /// let l2: Arc<dyn Backend> = Arc::new(MemoryBackend::with_capacity(100));
    /// let stack = TieredCache::from_layers(vec![l1, l2]).unwrap();
    /// assert_eq!(stack.len(), 2);
    /// assert!(TieredCache::from_layers(vec![]).is_err());
    /// ```
    pub fn from_layers(layers: Vec<Arc<dyn Backend>>) -> Result<Self> {
        Self::builder().layers(layers).build()
    }

    /// A write-through stack over `layers`, fastest first, whose remote (not in-process) layers
    /// are bypassed by a breaker configured by `breaker` (in-process layers never fail and get
    /// none): what a stack built from a URL (`mem:// | redis://...`) wants, with
    /// [`BreakerConfig::default()`]. The same as the builder with
    /// [`breaker`](TieredCacheBuilder::breaker).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use cachestack::{Backend, BreakerConfig, MemoryBackend, TieredCache};
    /// let l1: Arc<dyn Backend> = Arc::new(MemoryBackend::with_capacity(10));
    /// let l2: Arc<dyn Backend> = Arc::new(MemoryBackend::with_capacity(100));
    /// let stack = TieredCache::from_layers_with_breaker(vec![l1, l2], BreakerConfig::default()).unwrap();
    /// // Memory layers are in process: no breaker.
    /// assert!(!stack.stats().layers[1].details.contains_key("breaker"));
    /// ```
    pub fn from_layers_with_breaker(layers: Vec<Arc<dyn Backend>>, breaker: BreakerConfig) -> Result<Self> {
        Self::builder().layers(layers).breaker(breaker).build()
    }

    /// The layer at `index` (0 is the fastest).
    pub fn layer(&self, index: usize) -> Option<&Arc<dyn Backend>> {
        self.shared.layers.get(index).map(|l| &l.backend)
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.shared.layers.len()
    }

    /// Always false: a stack has at least one layer.
    pub fn is_empty(&self) -> bool {
        self.shared.layers.is_empty()
    }

    /// The write strategy.
    pub fn strategy(&self) -> &WriteStrategy {
        &self.shared.strategy
    }

    /// Writes waiting in the write-back queue (0 for write-through stacks).
    pub fn queued(&self) -> usize {
        self.shared.queued()
    }

    /// Waits until every write queued before this call is stored in the lower layers (or failed
    /// and was counted), then flushes the layers themselves. Returns at once for write-through
    /// stacks whose layers have nothing queued.
    pub async fn flush(&self) -> Result<()> {
        self.shared.flush().await
    }

    /// Drains the write-back queue and stops its task; later writes are written through. Call it
    /// on an orderly shutdown. Idempotent; a no-op for write-through stacks.
    ///
    /// ```
    /// use cachestack::{Backend, MemoryBackend, TieredCache, Value, WriteBackConfig};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let stack = TieredCache::builder()
    ///     .layer(MemoryBackend::with_capacity(10))
    ///     .layer(MemoryBackend::with_capacity(10))
    ///     .write_back(WriteBackConfig::default())
    ///     .build()
    ///     .unwrap();
    /// stack.set("k", Value::new(1u8), cachestack::Expiry::Default).await.unwrap();
    /// stack.close().await.unwrap();
    /// assert!(stack.layer(1).unwrap().get("k").await.unwrap().is_some());
    /// # });
    /// ```
    pub async fn close(&self) -> Result<()> {
        self.shared.close().await
    }
}

impl Drop for TieredCache {
    fn drop(&mut self) {
        let Some(wb) = &self.shared.write_back else { return };
        // Closing the queue lets the task drain it and stop; it owns what it needs.
        if wb.take_sender().is_none() {
            return;
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            // Never block a runtime thread: the task finishes in the background.
            return;
        }
        let shared = self.shared.clone();
        let drained = crate::rt::block_on(async move {
            let Some(wb) = &shared.write_back else { return Ok(()) };
            crate::layer::within(&shared.name, wb.config.drain_on_drop, wb.finished(&shared.name)).await
        });
        if !matches!(drained, Ok(Ok(()))) {
            tracing::warn!(
                cache = %self.shared.name,
                "cachestack: tiered cache dropped with writes still queued; they are being written in the background (call close() on shutdown)"
            );
        }
    }
}

#[async_trait]
impl Backend for TieredCache {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn bind_cache_name(&self, name: &str) {
        self.shared.bus.bind_name(name);
        for layer in self.shared.layers.iter() {
            layer.backend.bind_cache_name(name);
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        let l1 = &self.shared.layers[0];
        if let Some(local) = l1.local() {
            if let Some(entry) = local.get_entry(key) {
                l1.counters.record_lookup(true);
                crate::observe::calls::answered_by(l1.backend.name());
                return Ok(Some(entry));
            }
            l1.counters.record_lookup(false);
            return self.shared.lookup(key, 1, None).await;
        }
        self.shared.lookup(key, 0, None).await
    }

    async fn get_current(&self, key: &str, check: &dyn TagCheck) -> Result<Option<Entry>> {
        let l1 = &self.shared.layers[0];
        if let Some(local) = l1.local() {
            if let Some(entry) = local.get_entry(key)
                && check.entry_current(&entry).await
            {
                l1.counters.record_lookup(true);
                crate::observe::calls::answered_by(l1.backend.name());
                return Ok(Some(entry));
            }
            l1.counters.record_lookup(false);
            return self.shared.lookup(key, 1, Some(check)).await;
        }
        self.shared.lookup(key, 0, Some(check)).await
    }

    /// The lowest layer: where tag invalidation times are kept.
    fn shared_tier(&self) -> Option<Arc<dyn Backend>> {
        self.shared.layers.last().map(|layer| layer.backend.clone())
    }

    async fn set(&self, key: &str, value: Value, expiry: Expiry) -> Result<()> {
        self.shared.set(key, value, expiry).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.shared.delete(key).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.shared.exists(key, None).await
    }

    /// Each tier's entry is read and checked, fastest first; nothing is backfilled.
    async fn exists_current(&self, key: &str, check: &dyn TagCheck) -> Result<bool> {
        self.shared.exists(key, Some(check)).await
    }

    async fn clear(&self) -> Result<()> {
        self.shared.clear().await
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        self.shared.get_many(keys, None).await
    }

    async fn get_many_current(&self, keys: &[&str], check: &dyn TagCheck) -> Result<Vec<Option<Entry>>> {
        self.shared.get_many(keys, Some(check)).await
    }

    async fn set_many(&self, entries: &[(&str, Value)], expiry: Expiry) -> Result<()> {
        self.shared.set_many(entries, expiry).await
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.shared.delete_many(keys).await
    }

    async fn purge_expired(&self) -> Result<u64> {
        self.shared.purge_expired().await
    }

    /// On the lowest layer; the key is then removed from the faster ones (see "Atomic
    /// operations and patterns" above).
    async fn set_if_absent(&self, key: &str, value: Value, expiry: Expiry) -> Result<bool> {
        let _announce = self.shared.announce(|| Change::Keys(vec![key.to_owned()]));
        let stamp = layer::Stamp::now(expiry);
        self.shared
            .on_lowest("set_if_absent", key, |b| async move { b.set_if_absent(key, value, stamp.for_backend(b)).await })
            .await
    }

    async fn incr(&self, key: &str, delta: i64, expiry: Expiry) -> Result<i64> {
        let _announce = self.shared.announce(|| Change::Keys(vec![key.to_owned()]));
        let stamp = layer::Stamp::now(expiry);
        self.shared.on_lowest("incr", key, |b| async move { b.incr(key, delta, stamp.for_backend(b)).await }).await
    }

    async fn expire(&self, key: &str, expiry: Expiry) -> Result<bool> {
        let _announce = self.shared.announce(|| Change::Keys(vec![key.to_owned()]));
        let stamp = layer::Stamp::now(expiry);
        self.shared.on_lowest("expire", key, |b| async move { b.expire(key, stamp.for_backend(b)).await }).await
    }

    async fn keys_matching(&self, pattern: &KeyPattern, batch: usize, visit: &mut KeyVisitor<'_>) -> Result<()> {
        self.shared.keys_matching(pattern, batch, visit).await
    }

    async fn delete_matching(&self, pattern: &KeyPattern) -> Result<u64> {
        let _announce = self.shared.announce(|| Change::Pattern(pattern.as_str().to_owned()));
        self.shared.delete_matching(pattern).await
    }

    fn stats(&self) -> BackendStats {
        self.shared.stats()
    }

    /// Taken over the layers that are not in process (an in-process layer holds only what this
    /// process wrote or backfilled under the same rule): [`Signing::Signed`] only if every one of
    /// them signs.
    fn signing(&self) -> Signing {
        Signing::combined(self.shared.layers.iter().filter(|l| l.local().is_none()).map(|l| l.backend.signing()))
    }

    /// When L1 is in process: a view of L1 whose reads answer hits synchronously. Its `None` is
    /// not a miss of the stack (continue with `get`).
    fn as_tiered(&self) -> Option<&TieredCache> {
        Some(self)
    }

    fn local_l1(&self) -> Option<&dyn LocalRead> {
        self.shared.layers[0].local().map(|_| &self.view as &dyn LocalRead)
    }

    /// L1, when it is a memory backend: `#[cached]` functions keep their typed entries there too.
    #[cfg(feature = "memory")]
    fn l1_memory(&self) -> Option<&crate::store::memory::MemoryBackend> {
        self.shared.layers[0].backend.as_memory()
    }

    /// The lock of the lowest layer, the one every process shares (`None` when that layer has
    /// none, an in-process or local one).
    fn locks(&self) -> Option<&dyn LockOps> {
        self.shared.layers.last().and_then(|lowest| lowest.backend.locks())
    }

    async fn flush(&self) -> Result<()> {
        self.shared.flush().await
    }

    async fn close(&self) -> Result<()> {
        self.shared.close().await
    }
}

/// The synchronous first look into an in-process L1 (see [`Backend::local_l1`]).
struct L1View {
    l1: Arc<Layer>,
}

impl LocalRead for L1View {
    #[inline]
    fn get_value(&self, key: &str) -> Option<Value> {
        let value = self.l1.local()?.get_value(key)?;
        self.l1.counters.record_lookup(true);
        Some(value)
    }

    fn get_entry(&self, key: &str) -> Option<Entry> {
        let entry = self.l1.local()?.get_entry(key)?;
        self.l1.counters.record_lookup(true);
        Some(entry)
    }

    fn layer_name(&self) -> &str {
        self.l1.backend.name()
    }
}

/// Locks a mutex, whether or not a panic poisoned it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
