//! [`TieredCache`]: backends stacked fastest first behind one [`Backend`]; the guarantees are
//! documented on the type.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::expiry::{Deadline, Expiry};
use crate::store::{Backend, BackendStats, Counters, Entry, LocalBackend, LocalRead};
use crate::value::Value;

/// Number of stripes that keys hash onto for ordering backfills, writes and deletes.
const STRIPES: usize = 256;

/// What a write-back stack does when its queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnFull {
    /// The writer waits for room in the queue (back-pressure). The default.
    #[default]
    Wait,
    /// The write reaches L1 only; it is counted as dropped (and as an error), and the key is
    /// deleted from the lower layers so that they cannot serve an older value.
    Drop,
}

/// Settings of a write-back stack: L1 is written at once, lower layers from a bounded queue.
///
/// ```
/// use std::time::Duration;
/// use cachestack::{OnFull, WriteBackConfig};
///
/// let config = WriteBackConfig::new(50_000).with_on_full(OnFull::Drop).with_drain_on_drop(Duration::from_secs(2));
/// assert_eq!(config.capacity, 50_000);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WriteBackConfig {
    /// Most writes waiting in the queue. Default 10 000.
    pub capacity: usize,
    /// What a write does when the queue is full.
    pub on_full: OnFull,
    /// How long dropping the stack outside an async runtime waits for the queue to drain.
    /// Inside a runtime the drop never blocks. Default 5 s.
    pub drain_on_drop: Duration,
}

impl Default for WriteBackConfig {
    fn default() -> Self {
        WriteBackConfig { capacity: 10_000, on_full: OnFull::Wait, drain_on_drop: Duration::from_secs(5) }
    }
}

impl WriteBackConfig {
    /// A queue of `capacity` writes, waiting for room when full.
    pub fn new(capacity: usize) -> Self {
        WriteBackConfig { capacity, ..WriteBackConfig::default() }
    }

    /// Sets what a write does when the queue is full.
    pub fn with_on_full(mut self, on_full: OnFull) -> Self {
        self.on_full = on_full;
        self
    }

    /// Sets how long a drop outside an async runtime waits for the queue to drain.
    pub fn with_drain_on_drop(mut self, wait: Duration) -> Self {
        self.drain_on_drop = wait;
        self
    }
}

/// How a [`TieredCache`] writes its layers.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum WriteStrategy {
    /// Every layer, fastest first; a write returns when all layers answered. The default.
    #[default]
    WriteThrough,
    /// L1 at once, the other layers from a bounded background queue.
    WriteBack(WriteBackConfig),
}

/// A simple circuit breaker for remote layers: after `failure_threshold` failures in a row the
/// layer is bypassed for `cool_down`, then probed by one call.
///
/// Failures are errors about the store (unreachable, timed out, I/O...), not about one value
/// (undecodable, too large). In-process layers never fail and have no breaker.
///
/// ```
/// use std::time::Duration;
/// let breaker = cachestack::BreakerConfig::new(5, Duration::from_secs(30));
/// assert_eq!(breaker.failure_threshold, 5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (at least 1).
    pub failure_threshold: u32,
    /// How long an open breaker bypasses the layer before probing it.
    pub cool_down: Duration,
}

impl BreakerConfig {
    /// Opens after `failure_threshold` consecutive failures, for `cool_down`.
    pub fn new(failure_threshold: u32, cool_down: Duration) -> Self {
        BreakerConfig { failure_threshold: failure_threshold.max(1), cool_down }
    }
}

/// Builds a [`TieredCache`]. See [`TieredCache::builder`].
#[derive(Debug)]
pub struct TieredCacheBuilder {
    layers: Vec<Arc<dyn Backend>>,
    strategy: WriteStrategy,
    breaker: Option<BreakerConfig>,
    name: String,
    min_backfill_ttl: Duration,
}

impl Default for TieredCacheBuilder {
    fn default() -> Self {
        TieredCacheBuilder {
            layers: Vec::new(),
            strategy: WriteStrategy::WriteThrough,
            breaker: None,
            name: "tiered".into(),
            min_backfill_ttl: Duration::from_millis(1),
        }
    }
}

impl TieredCacheBuilder {
    /// Adds a layer below the ones added so far (add the fastest first).
    pub fn layer(self, backend: impl Backend) -> Self {
        self.layer_arc(Arc::new(backend))
    }

    /// Adds a shared layer below the ones added so far.
    pub fn layer_arc(mut self, backend: Arc<dyn Backend>) -> Self {
        self.layers.push(backend);
        self
    }

    /// Writes every layer before returning (the default).
    pub fn write_through(mut self) -> Self {
        self.strategy = WriteStrategy::WriteThrough;
        self
    }

    /// Writes L1 at once and the other layers from a bounded background queue.
    pub fn write_back(mut self, config: WriteBackConfig) -> Self {
        self.strategy = WriteStrategy::WriteBack(config);
        self
    }

    /// Sets the write strategy.
    pub fn strategy(mut self, strategy: WriteStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Bypasses a remote layer for a cool-down after consecutive failures.
    pub fn breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = Some(config);
        self
    }

    /// The name shown in stats and logs (default `tiered`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Entries with less time left than this are not copied into faster layers (default 1 ms).
    pub fn min_backfill_ttl(mut self, ttl: Duration) -> Self {
        self.min_backfill_ttl = ttl;
        self
    }

    /// Builds the stack. Fails without layers, with a write-back queue of capacity 0, or when a
    /// write-back stack cannot start its task on cachestack's runtime.
    pub fn build(self) -> Result<TieredCache> {
        if self.layers.is_empty() {
            return Err(Error::config("a tiered cache needs at least one layer"));
        }
        let breaker = self.breaker;
        let layers = self
            .layers
            .into_iter()
            .enumerate()
            .map(|(index, backend)| {
                Arc::new(Layer {
                    index,
                    breaker: if backend.as_local().is_some() { None } else { breaker.map(Breaker::new) },
                    backend,
                    counters: Counters::default(),
                    backfills: AtomicU64::new(0),
                    bypassed: AtomicU64::new(0),
                })
            })
            .collect();
        let write_back = match &self.strategy {
            WriteStrategy::WriteThrough => None,
            WriteStrategy::WriteBack(config) if config.capacity == 0 => {
                return Err(Error::config("a write-back queue needs a capacity of at least 1"))
            }
            WriteStrategy::WriteBack(config) => Some(config.clone()),
        };
        let queue = match &write_back {
            Some(config) => {
                let (tx, rx) = mpsc::channel(config.capacity);
                Some((config.clone(), tx, rx))
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            name: self.name,
            layers,
            stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
            seq: AtomicU64::new(0),
            min_backfill_ttl: self.min_backfill_ttl,
            strategy: self.strategy,
            write_back: queue.as_ref().map(|(config, tx, _)| WriteBackState {
                config: config.clone(),
                tx: RwLock::new(Some(tx.clone())),
                worker: Mutex::new(None),
                done: Mutex::new(None),
                stats: QueueStats::default(),
            }),
            writes: AtomicU64::new(0),
            deletes: AtomicU64::new(0),
            queue_hits: AtomicU64::new(0),
            queue_misses: AtomicU64::new(0),
        });
        if let Some((_, tx, rx)) = queue {
            drop(tx);
            let handle = crate::rt::handle()?;
            let (done_tx, done_rx) = std::sync::mpsc::sync_channel::<()>(0);
            let worker = handle.spawn(run_queue(shared.clone(), rx, done_tx));
            if let Some(wb) = &shared.write_back {
                *lock(&wb.worker) = Some(worker);
                *lock(&wb.done) = Some(done_rx);
            }
        }
        Ok(TieredCache { view: L1View { l1: shared.layers[0].clone() }, shared })
    }
}

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
/// stack.layer(1).unwrap().set("user:1", cachestack::Value::new("Ada".to_string()), None).await?;
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
/// bounded queue served by one background task on cachestack's runtime ([`crate::rt`]);
/// [`TieredCache::flush`] waits until everything queued before it is stored, and
/// [`TieredCache::close`] drains the queue and stops the task (later writes are written through).
/// A full queue either makes the writer wait for room ([`OnFull::Wait`], the default) or drops the
/// queued write with a counted error ([`OnFull::Drop`]); a dropped write still reaches L1, and the
/// key is then deleted from the lower layers so that they cannot serve the value it replaced.
/// While a write sits in the queue, a read that misses L1 is answered from the queue: lower layers
/// are behind for that key and are not consulted.
///
/// What is guaranteed for queued writes: `flush().await` and `close().await` return once every
/// write queued before them was stored (or failed and was counted). Dropping the stack closes the
/// queue and the task keeps draining it in the background; outside an async runtime the drop also
/// waits up to [`WriteBackConfig::drain_on_drop`] for it to finish. A process that exits without
/// `close()` (or `flush()`) may lose what was still queued: call `close()` on an orderly shutdown.
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
/// back from the queue, and of several queued writes to one key only the newest is stored.
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
/// breaker while a failure opens it for another cool-down. A layer that was unreachable or
/// bypassed during a delete may keep the deleted value until it expires: keep TTLs on lower
/// layers bounded. The breaker's clock is tokio's ([`tokio::time::Instant`]), so tests can pause
/// and advance it.
///
/// # Stats
///
/// [`Backend::stats`] of the stack gives totals and, in `layers`, one entry per layer as the stack
/// saw it: `hits` and `misses` are lookups the stack sent to that layer (a failed or bypassed
/// lookup is a miss and, when it failed, an error), `backfills` the entries copied into it. The
/// lookups reaching layer k+1 are the misses of layer k, less the reads answered from the
/// write-back queue. The stack's hits are the layers' hits plus the reads answered from the queue;
/// its misses are the reads that no layer answered. The backend's own figures (entries,
/// evictions, details) are carried over.
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

    /// A write-through stack over `layers`, fastest first, without a breaker (what the registry
    /// builds from `mem://... | file://...`).
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
        layers.into_iter().fold(Self::builder(), TieredCacheBuilder::layer_arc).build()
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
        self.shared.write_back.as_ref().and_then(|wb| wb.sender()).map_or(0, |tx| tx.max_capacity() - tx.capacity())
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
    /// stack.set("k", Value::new(1u8), None).await.unwrap();
    /// stack.close().await.unwrap();
    /// assert!(stack.layer(1).unwrap().get("k").await.unwrap().is_some());
    /// # });
    /// ```
    pub async fn close(&self) -> Result<()> {
        let Some(wb) = &self.shared.write_back else { return Ok(()) };
        drop(wb.take_sender());
        let worker = lock(&wb.worker).take();
        if let Some(worker) = worker {
            worker.await.map_err(|e| Error::Generic {
                backend: self.shared.name.clone(),
                source: format!("the write-back task failed: {e}").into(),
            })?;
        }
        Ok(())
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
        let done = lock(&wb.done).take();
        if let Some(done) = done {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = done.recv_timeout(wb.config.drain_on_drop) {
                tracing::warn!(
                    cache = %self.shared.name,
                    "cachestack: tiered cache dropped with writes still queued; they are being written in the background (call close() on shutdown)"
                );
            }
        }
    }
}

#[async_trait]
impl Backend for TieredCache {
    fn name(&self) -> &str {
        &self.shared.name
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        let l1 = &self.shared.layers[0];
        if let Some(local) = l1.local() {
            if let Some(entry) = local.get_entry(key) {
                l1.counters.record_lookup(true);
                return Ok(Some(entry));
            }
            l1.counters.record_lookup(false);
            return self.shared.lookup(key, 1).await;
        }
        self.shared.lookup(key, 0).await
    }

    async fn set(&self, key: &str, value: Value, expiry: Expiry) -> Result<()> {
        self.shared.set(key, value, expiry).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.shared.delete(key).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.shared.exists(key).await
    }

    async fn clear(&self) -> Result<()> {
        self.shared.clear().await
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        self.shared.get_many(keys).await
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

    fn stats(&self) -> BackendStats {
        self.shared.stats()
    }

    /// When L1 is in process: a view of L1 whose reads answer hits synchronously. Its `None` is
    /// not a miss of the stack (continue with `get`).
    fn local_l1(&self) -> Option<&dyn LocalRead> {
        self.shared.layers[0].local().map(|_| &self.view as &dyn LocalRead)
    }

    async fn flush(&self) -> Result<()> {
        self.shared.flush().await
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
}

// ---------------------------------------------------------------------------------------------
// Internals
// ---------------------------------------------------------------------------------------------

/// A write's expiry and the moment the caller made it: each layer's deadline, fixed at write time
/// whatever queue or slow link the write then waits in.
#[derive(Clone, Copy, Debug)]
struct Stamp {
    expiry: Expiry,
    written: SystemTime,
}

impl Stamp {
    fn now(expiry: Expiry) -> Self {
        Stamp { expiry, written: SystemTime::now() }
    }

    /// The deadline of this write in `layer` (its default TTL counted from the write).
    fn deadline_for(&self, layer: &dyn Backend) -> Option<Deadline> {
        self.expiry.resolve_from(self.written, layer.default_ttl())
    }

    fn for_layer(&self, layer: &dyn Backend) -> Expiry {
        Expiry::from(self.deadline_for(layer))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// True for errors that say the store is in trouble (as opposed to one value being unusable).
fn is_store_failure(err: &Error) -> bool {
    !(err.is_invalid_value() || matches!(err, Error::ValueTooLarge { .. }))
}

/// The outcome of one call to one layer.
enum Call<T> {
    Done(T),
    Failed(Error),
    Bypassed,
}

struct Layer {
    index: usize,
    backend: Arc<dyn Backend>,
    /// What the stack saw of this layer (hits, misses, writes, deletes, errors).
    counters: Counters,
    backfills: AtomicU64,
    bypassed: AtomicU64,
    breaker: Option<Breaker>,
}

impl Layer {
    #[inline]
    fn local(&self) -> Option<&dyn LocalBackend> {
        self.backend.as_local()
    }

    /// Runs `op` on the layer unless its breaker bypasses it; counts and logs a failure.
    async fn call<'a, T, F, Fut>(&'a self, op: &'static str, key: &str, f: F) -> Call<T>
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

    async fn write(&self, key: &str, value: &Value, stamp: &Stamp) -> Call<()> {
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

    async fn write_many(&self, entries: &[(&str, Value)], stamp: &Stamp) -> Call<()> {
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

    async fn remove(&self, key: &str) -> Call<bool> {
        self.counters.record_delete();
        if let Some(local) = self.local() {
            return Call::Done(local.remove(key));
        }
        self.call("delete", key, |b| b.delete(key)).await
    }

    async fn read(&self, key: &str) -> Call<Option<Entry>> {
        if let Some(local) = self.local() {
            return Call::Done(local.get_entry(key));
        }
        self.call("get", key, |b| b.get(key)).await
    }
}

/// Breaker state of one remote layer.
struct Breaker {
    config: BreakerConfig,
    state: Mutex<BreakerState>,
}

#[derive(Default)]
struct BreakerState {
    failures: u32,
    open_until: Option<tokio::time::Instant>,
    probing: bool,
}

/// Admission of one call through a breaker; a probe that is dropped unfinished (its future was
/// cancelled) lets the next call probe instead.
struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    finished: bool,
}

impl Permit<'_> {
    fn finish(mut self, failed: bool) {
        self.finished = true;
        self.breaker.record(self.probe, failed);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.finished && self.probe {
            lock(&self.breaker.state).probing = false;
        }
    }
}

impl Breaker {
    fn new(config: BreakerConfig) -> Self {
        Breaker { config, state: Mutex::new(BreakerState::default()) }
    }

    fn admit(&self) -> Option<Permit<'_>> {
        let mut state = lock(&self.state);
        let probe = match state.open_until {
            None => false,
            Some(until) if state.probing || tokio::time::Instant::now() < until => return None,
            Some(_) => {
                state.probing = true;
                true
            }
        };
        Some(Permit { breaker: self, probe, finished: false })
    }

    fn record(&self, probe: bool, failed: bool) {
        let mut state = lock(&self.state);
        if probe {
            state.probing = false;
        }
        if failed {
            state.failures = state.failures.saturating_add(1);
            if probe || state.failures >= self.config.failure_threshold {
                if state.open_until.is_none() {
                    tracing::warn!(failures = state.failures, cool_down = ?self.config.cool_down, "cachestack: tiered layer bypassed after consecutive failures");
                }
                state.open_until = tokio::time::Instant::now().checked_add(self.config.cool_down);
            }
        } else {
            if state.open_until.is_some() {
                tracing::info!("cachestack: tiered layer answered again; breaker closed");
            }
            state.failures = 0;
            state.open_until = None;
        }
    }

    fn describe(&self) -> &'static str {
        let state = lock(&self.state);
        match state.open_until {
            None => "closed",
            Some(until) if tokio::time::Instant::now() < until => "open",
            Some(_) => "half-open",
        }
    }
}

/// Ordering state of the keys hashing onto one stripe.
#[derive(Default)]
struct Stripe {
    state: Mutex<StripeState>,
    /// Held by whoever checks the stripe and then writes a remote layer (a backfill, the
    /// write-back task); a change takes it before it starts, so it runs after such a write.
    io: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct StripeState {
    /// Moves when a change to one of the stripe's keys starts and when it ends.
    epoch: u64,
    /// Changes in progress.
    active: u32,
    /// Keys with writes in the write-back queue.
    pending: HashMap<Box<str>, Pending>,
}

struct Pending {
    /// Sequence number of the newest change of the key; queued writes with another are stale.
    latest: u64,
    /// Writes of the key still in the queue (or being written).
    queued: u32,
    /// The newest queued value and its expiry; `None` once a delete superseded it.
    value: Option<(Value, Stamp)>,
}

/// What a read learns from the stripe before it goes below L1.
enum Peek {
    /// The write-back queue holds the newest value of the key.
    Queued(Value, Stamp),
    /// Read the lower layers; backfill only if the epoch is still this one.
    Epoch(u64),
}

/// A change in progress on a stripe; ends (moves the epoch, clears the busy mark) when dropped,
/// also when the change's future is cancelled. A change of one key holds the stripe's I/O lock
/// until it ends (released after the epoch moved), so that changes of one key reach every layer
/// in the same order.
struct Change<'a> {
    stripe: &'a Stripe,
    _io: Option<tokio::sync::MutexGuard<'a, ()>>,
}

/// Changes of several keys: the I/O locks of their stripes, taken in stripe order (so two bulk
/// changes never wait on each other crosswise), released after every change ended.
struct Changes<'a> {
    _changes: Vec<Change<'a>>,
    _io: Vec<tokio::sync::MutexGuard<'a, ()>>,
}

impl Drop for Change<'_> {
    fn drop(&mut self) {
        let mut state = self.stripe.state();
        state.epoch += 1;
        state.active -= 1;
    }
}

/// Marks a dequeued write done when dropped (also if writing it panicked).
struct Dequeued<'a> {
    stripe: &'a Stripe,
    key: &'a str,
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
    fn state(&self) -> MutexGuard<'_, StripeState> {
        lock(&self.state)
    }

    fn peek(&self, key: &str) -> Peek {
        let state = self.state();
        match state.pending.get(key).and_then(|p| p.value.as_ref()) {
            Some((value, expires)) => Peek::Queued(value.clone(), *expires),
            None => Peek::Epoch(state.epoch),
        }
    }

    fn unchanged_since(&self, epoch: u64) -> bool {
        let state = self.state();
        state.epoch == epoch && state.active == 0
    }

    /// Starts a change of `key`: waits for a remote write of the stripe already under way, moves
    /// the epoch, and supersedes the key's queued writes. Also returns whether the queue held a
    /// value of the key.
    async fn begin_change(&self, key: &str, seq: &AtomicU64) -> (Change<'_>, bool) {
        let io = self.io.lock().await;
        let (mut change, had_value) = self.change_locked(key, seq);
        change._io = Some(io);
        (change, had_value)
    }

    /// `begin_change` for a caller that holds the stripe's I/O lock.
    fn change_locked(&self, key: &str, seq: &AtomicU64) -> (Change<'_>, bool) {
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
    fn begin_queued(&self, key: &str, seq: u64, value: Value, stamp: Stamp, write_l1: impl FnOnce()) -> Change<'_> {
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
    async fn begin_clear(&self, seq: &AtomicU64) -> Change<'_> {
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

    fn is_latest(&self, key: &str, seq: u64) -> bool {
        self.state().pending.get(key).is_some_and(|p| p.latest == seq)
    }
}

enum Msg {
    Write(QueuedWrite),
    Flush(oneshot::Sender<()>),
}

struct QueuedWrite {
    key: Box<str>,
    value: Value,
    /// The expiry and the moment the caller wrote.
    stamp: Stamp,
    seq: u64,
}

#[derive(Default)]
struct QueueStats {
    enqueued: AtomicU64,
    written: AtomicU64,
    superseded: AtomicU64,
    expired: AtomicU64,
    dropped: AtomicU64,
    panicked: AtomicU64,
}

struct WriteBackState {
    config: WriteBackConfig,
    tx: RwLock<Option<mpsc::Sender<Msg>>>,
    worker: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Disconnects when the task ends (for a drop outside a runtime to wait on).
    done: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    stats: QueueStats,
}

impl WriteBackState {
    fn sender(&self) -> Option<mpsc::Sender<Msg>> {
        self.tx.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn take_sender(&self) -> Option<mpsc::Sender<Msg>> {
        self.tx.write().unwrap_or_else(PoisonError::into_inner).take()
    }
}

struct Shared {
    name: String,
    layers: Vec<Arc<Layer>>,
    stripes: Box<[Stripe]>,
    seq: AtomicU64,
    min_backfill_ttl: Duration,
    strategy: WriteStrategy,
    write_back: Option<WriteBackState>,
    writes: AtomicU64,
    deletes: AtomicU64,
    queue_hits: AtomicU64,
    queue_misses: AtomicU64,
}

/// The write-back task: stores queued writes in order, one at a time.
async fn run_queue(shared: Arc<Shared>, mut rx: mpsc::Receiver<Msg>, done: std::sync::mpsc::SyncSender<()>) {
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
    fn stripe(&self, key: &str) -> &Stripe {
        &self.stripes[self.stripe_index(key)]
    }

    fn stripe_index(&self, key: &str) -> usize {
        (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) as usize) % self.stripes.len()
    }

    /// Starts changes of `keys` (see [`Stripe::begin_change`]); also returns how many of them had
    /// a value in the write-back queue.
    async fn begin_changes<'a>(&'a self, keys: impl Iterator<Item = &'a str>) -> (Changes<'a>, u64) {
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

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Relaxed) + 1
    }

    fn all_failed(&self, op: &str, last: Option<Error>) -> Error {
        let reason = match last {
            Some(err) => format!("every layer failed or is bypassed for `{op}`; last error: {err}"),
            None => format!("every layer is bypassed for `{op}`"),
        };
        Error::BackendUnavailable { backend: self.name.clone(), source: reason.into() }
    }

    /// Reads `key` from layer `from` down (L1 was already asked when `from` is 1).
    async fn lookup(&self, key: &str, from: usize) -> Result<Option<Entry>> {
        let stripe = self.stripe(key);
        let epoch = match stripe.peek(key) {
            Peek::Queued(value, stamp) => return Ok(self.answer_from_queue(value, stamp, true)),
            Peek::Epoch(epoch) => epoch,
        };
        let mut answered = from > 0;
        let mut failure = None;
        for layer in &self.layers[from..] {
            match layer.read(key).await {
                Call::Done(Some(entry)) => {
                    layer.counters.record_lookup(true);
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
    fn answer_from_queue(&self, value: Value, stamp: Stamp, lookup: bool) -> Option<Entry> {
        // The queue holds what the layers below L1 will hold: their deadline.
        let expires = self.layers.get(1).and_then(|below| stamp.deadline_for(&*below.backend));
        let live = !expires.is_some_and(Deadline::has_passed);
        if lookup {
            // An expired newest value is a miss: what the lower layers hold is older.
            let counter = if live { &self.queue_hits } else { &self.queue_misses };
            counter.fetch_add(1, Relaxed);
        }
        live.then(|| Entry::new(value, expires))
    }

    /// Copies `entry`, found in layer `found_in`, into the layers above it.
    async fn backfill(&self, key: &str, entry: &Entry, found_in: usize, stripe: &Stripe, epoch: u64) {
        if found_in == 0 {
            return;
        }
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
                local.set_value(key, entry.value.clone(), stamp.for_layer(&*layer.backend));
                drop(state);
                layer.backfills.fetch_add(1, Relaxed);
            } else {
                let _io = stripe.io.lock().await;
                if !stripe.unchanged_since(epoch) {
                    return;
                }
                let Some(stamp) = ttl_left() else { return };
                let expiry = stamp.for_layer(&*layer.backend);
                if let Call::Done(()) = layer.call("backfill", key, |b| b.set(key, entry.value.clone(), expiry)).await {
                    layer.backfills.fetch_add(1, Relaxed);
                }
            }
        }
    }

    async fn set(&self, key: &str, value: Value, expiry: Expiry) -> Result<()> {
        self.writes.fetch_add(1, Relaxed);
        // Every layer's deadline is fixed now, before any lock, queue or network call.
        let stamp = Stamp::now(expiry);
        match &self.write_back {
            Some(wb) if self.layers.len() > 1 => self.set_back(wb, key, value, stamp).await,
            _ => self.set_through(key, value, stamp).await,
        }
    }

    async fn set_through(&self, key: &str, value: Value, ttl: Stamp) -> Result<()> {
        let (_change, _) = self.stripe(key).begin_change(key, &self.seq).await;
        let mut stored = false;
        let mut failure = None;
        for layer in &self.layers {
            match layer.write(key, &value, &ttl).await {
                Call::Done(()) => stored = true,
                Call::Failed(err) => failure = Some(err),
                Call::Bypassed => {}
            }
        }
        if stored {
            Ok(())
        } else {
            Err(self.all_failed("set", failure))
        }
    }

    async fn set_back(&self, wb: &WriteBackState, key: &str, value: Value, ttl: Stamp) -> Result<()> {
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
    async fn set_dropped(&self, wb: &WriteBackState, key: &str, value: Value, ttl: Stamp) -> Result<()> {
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
    async fn store_queued(&self, write: QueuedWrite) {
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

    async fn flush(&self) -> Result<()> {
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

    async fn delete(&self, key: &str) -> Result<bool> {
        self.deletes.fetch_add(1, Relaxed);
        let (_change, had_queued) = self.stripe(key).begin_change(key, &self.seq).await;
        let mut removed = had_queued;
        let mut answered = false;
        let mut failure = None;
        for layer in &self.layers {
            match layer.remove(key).await {
                Call::Done(was) => {
                    removed |= was;
                    answered = true;
                }
                Call::Failed(err) => failure = Some(err),
                Call::Bypassed => {}
            }
        }
        if answered {
            Ok(removed)
        } else {
            Err(self.all_failed("delete", failure))
        }
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        if let Peek::Queued(value, stamp) = self.stripe(key).peek(key) {
            return Ok(self.answer_from_queue(value, stamp, false).is_some());
        }
        let mut answered = false;
        let mut failure = None;
        for layer in &self.layers {
            match layer.call("exists", key, |b| b.exists(key)).await {
                Call::Done(true) => return Ok(true),
                Call::Done(false) => answered = true,
                Call::Failed(err) => failure = Some(err),
                Call::Bypassed => {}
            }
        }
        if answered {
            Ok(false)
        } else {
            Err(self.all_failed("exists", failure))
        }
    }

    async fn clear(&self) -> Result<()> {
        let mut changes = Vec::with_capacity(self.stripes.len());
        for stripe in self.stripes.iter() {
            changes.push(stripe.begin_clear(&self.seq).await);
        }
        let mut answered = false;
        let mut failure = None;
        for layer in &self.layers {
            match layer.call("clear", "", |b| b.clear()).await {
                Call::Done(()) => answered = true,
                Call::Failed(err) => failure = Some(err),
                Call::Bypassed => {}
            }
        }
        drop(changes);
        if answered {
            Ok(())
        } else {
            Err(self.all_failed("clear", failure))
        }
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        let mut out: Vec<Option<Entry>> = vec![None; keys.len()];
        let mut from = 0;
        let mut missing: Vec<usize> = Vec::with_capacity(keys.len());
        match self.layers[0].local() {
            Some(local) => {
                let l1 = &self.layers[0];
                for (i, key) in keys.iter().enumerate() {
                    match local.get_entry(key) {
                        Some(entry) => {
                            l1.counters.record_lookup(true);
                            out[i] = Some(entry);
                        }
                        None => {
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
                Peek::Queued(value, expires) => out[i] = self.answer_from_queue(value, expires, true),
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
                    Some(entry) => {
                        layer.counters.record_lookup(true);
                        self.backfill(keys[i], &entry, layer.index, self.stripe(keys[i]), epoch).await;
                        out[i] = Some(entry);
                    }
                    None => {
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

    async fn set_many(&self, entries: &[(&str, Value)], expiry: Expiry) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let ttl = Stamp::now(expiry);
        if let (Some(wb), true) = (&self.write_back, self.layers.len() > 1) {
            if wb.sender().is_some() {
                self.writes.fetch_add(entries.len() as u64, Relaxed);
                for (key, value) in entries {
                    self.set_back(wb, key, value.clone(), ttl).await?;
                }
                return Ok(());
            }
        }
        self.writes.fetch_add(entries.len() as u64, Relaxed);
        let (changes, _) = self.begin_changes(entries.iter().map(|(key, _)| *key)).await;
        let mut stored = false;
        let mut failure = None;
        for layer in &self.layers {
            match layer.write_many(entries, &ttl).await {
                Call::Done(()) => stored = true,
                Call::Failed(err) => failure = Some(err),
                Call::Bypassed => {}
            }
        }
        drop(changes);
        if stored {
            Ok(())
        } else {
            Err(self.all_failed("set_many", failure))
        }
    }

    /// Deletes `keys` everywhere; returns how many were present, as counted by the layer (or the
    /// write-back queue) that held the most of them.
    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.deletes.fetch_add(keys.len() as u64, Relaxed);
        let (changes, queued) = self.begin_changes(keys.iter().copied()).await;
        let mut removed = queued;
        let mut answered = false;
        let mut failure = None;
        for layer in &self.layers {
            let result = match layer.local() {
                Some(local) => {
                    layer.counters.record_delete();
                    Call::Done(keys.iter().map(|key| u64::from(local.remove(key))).sum())
                }
                None => {
                    layer.counters.record_delete();
                    layer.call("delete_many", "", |b| b.delete_many(keys)).await
                }
            };
            match result {
                Call::Done(n) => {
                    removed = removed.max(n);
                    answered = true;
                }
                Call::Failed(err) => failure = Some(err),
                Call::Bypassed => {}
            }
        }
        drop(changes);
        if answered {
            Ok(removed)
        } else {
            Err(self.all_failed("delete_many", failure))
        }
    }

    async fn purge_expired(&self) -> Result<u64> {
        let mut purged = 0;
        let mut answered = false;
        let mut failure = None;
        for layer in &self.layers {
            match layer.call("purge_expired", "", |b| b.purge_expired()).await {
                Call::Done(n) => {
                    purged += n;
                    answered = true;
                }
                Call::Failed(err) => failure = Some(err),
                Call::Bypassed => {}
            }
        }
        if answered {
            Ok(purged)
        } else {
            Err(self.all_failed("purge_expired", failure))
        }
    }

    fn stats(&self) -> BackendStats {
        let mut layers = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let own = layer.backend.stats();
            let mut stats = layer.counters.snapshot(layer.backend.name());
            stats.backfills = layer.backfills.load(Relaxed);
            stats.evictions = own.evictions;
            stats.entries = own.entries;
            stats.details = own.details;
            stats.layers = own.layers;
            stats = stats.with_detail("index", layer.index).with_detail("bypassed", layer.bypassed.load(Relaxed));
            if let Some(breaker) = &layer.breaker {
                stats = stats.with_detail("breaker", breaker.describe());
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
                let depth = wb.sender().map_or(0, |tx| tx.max_capacity() - tx.capacity());
                total = total
                    .with_detail("strategy", "write-back")
                    .with_detail("queue_capacity", wb.config.capacity)
                    .with_detail("queue_depth", depth)
                    .with_detail("queue_enqueued", q.enqueued.load(Relaxed))
                    .with_detail("queue_written", q.written.load(Relaxed))
                    .with_detail("queue_superseded", q.superseded.load(Relaxed))
                    .with_detail("queue_expired", q.expired.load(Relaxed))
                    .with_detail("queue_dropped", dropped)
                    .with_detail("queue_hits", queue_hits);
            }
        }
        total.layers = layers;
        total
    }
}
