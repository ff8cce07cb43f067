//! The configuration of a [`TieredCache`] and its builder.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;

use super::layer::Layer;
use super::ordering::{Stripe, STRIPES};
use super::shared::Shared;
use super::write_back::{run_queue, QueueStats, WriteBackState};
use super::{lock, L1View, TieredCache};
use crate::error::{Error, Result};
use crate::layer::{BreakerConfig, Circuit};
use crate::store::{Backend, Counters};

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

    /// Adds `layers` below the ones added so far, fastest first.
    pub fn layers(self, layers: impl IntoIterator<Item = Arc<dyn Backend>>) -> Self {
        layers.into_iter().fold(self, TieredCacheBuilder::layer_arc)
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

    /// Bypasses a remote (not in-process) layer for a cool-down after consecutive failures. By
    /// default a stack has no breaker: a failing layer is tried on every call.
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
                    breaker: match breaker {
                        Some(config) if backend.as_local().is_none() => Some(Circuit::new(backend.name(), config)),
                        _ => None,
                    },
                    backend,
                    counters: Counters::default(),
                    backfills: AtomicU64::new(0),
                    tombstones: Default::default(),
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
