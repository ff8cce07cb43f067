//! The configuration of a [`TieredCache`] and its builder.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::layer::Layer;
use super::ordering::{Stripe, STRIPES};
use super::shared::Shared;
use super::write_back::{run_queue, QueueStats, WriteBackState};
use super::{L1View, TieredCache};
use crate::error::{Error, Result};
use crate::layer::{BreakerConfig, Circuit};
use crate::store::{Backend, Counters};

/// What a write-back stack does when its queue is full.
///
/// Either way a writer never waits longer than [`WriteBackConfig::max_wait`]: a slow or
/// unreachable lower layer cannot turn every `set` into a long block. A dropped write still
/// reaches L1; it is counted (stats `queue_dropped`, and as an error) and logged, and the key is
/// invalidated in the lower layers (a tombstone each, replayed before the stack's next call to
/// that layer) so that they cannot serve the value it replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnFull {
    /// The writer waits for room in the queue (back-pressure), at most
    /// [`WriteBackConfig::max_wait`]; then the write is dropped as with [`OnFull::Drop`]. The
    /// default.
    #[default]
    Wait,
    /// The write is dropped at once: it reaches L1 only, is counted as dropped (and as an
    /// error), and the key is invalidated in the lower layers.
    Drop,
}

/// Settings of a write-back stack: L1 is written at once, lower layers from a bounded queue
/// drained by up to [`concurrency`](WriteBackConfig::concurrency) writes at a time.
///
/// ```
/// use std::time::Duration;
/// use cachestack::{OnFull, WriteBackConfig};
///
/// let config = WriteBackConfig::new(50_000)
///     .with_on_full(OnFull::Wait)
///     .with_max_wait(Duration::from_millis(20))
///     .with_concurrency(32)
///     .with_write_timeout(Some(Duration::from_secs(2)))
///     .with_flush_timeout(Duration::from_secs(10))
///     .with_drain_on_drop(Duration::from_secs(2));
/// assert_eq!((config.capacity, config.concurrency), (50_000, 32));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WriteBackConfig {
    /// Most writes waiting in the queue. Default 10 000.
    pub capacity: usize,
    /// What a write does when the queue is full.
    pub on_full: OnFull,
    /// The longest a writer waits for room in a full queue under [`OnFull::Wait`]; then the write
    /// is dropped (see [`OnFull`]). Default 100 ms.
    pub max_wait: Duration,
    /// Most queued writes stored at once. Writes of one key are stored in order (and of several
    /// queued writes of a key only the newest is); writes of different keys go in parallel,
    /// except that keys sharing an ordering stripe (1 in 256) are stored one after the other.
    /// Default 16; at least 1.
    pub concurrency: usize,
    /// The longest one queued write may take in one layer; past it the write fails there with
    /// [`Error::Timeout`](crate::Error::Timeout), which counts against the layer's breaker (and
    /// the key gets a tombstone in that layer). `None`: only the layer's own timeouts apply.
    /// Default 10 s.
    pub write_timeout: Option<Duration>,
    /// The longest [`TieredCache::flush`] and [`TieredCache::close`] wait for the queue to drain;
    /// past it they fail with [`Error::Timeout`](crate::Error::Timeout) and the writes still
    /// queued carry on in the background. Default 30 s.
    pub flush_timeout: Duration,
    /// How long dropping the stack outside an async runtime waits for the queue to drain.
    /// Inside a runtime the drop never blocks. Default 5 s.
    pub drain_on_drop: Duration,
}

impl Default for WriteBackConfig {
    fn default() -> Self {
        WriteBackConfig {
            capacity: 10_000,
            on_full: OnFull::Wait,
            max_wait: Duration::from_millis(100),
            concurrency: 16,
            write_timeout: Some(Duration::from_secs(10)),
            flush_timeout: Duration::from_secs(30),
            drain_on_drop: Duration::from_secs(5),
        }
    }
}

impl WriteBackConfig {
    /// A queue of `capacity` writes, with the other settings at their defaults.
    pub fn new(capacity: usize) -> Self {
        WriteBackConfig { capacity, ..WriteBackConfig::default() }
    }

    /// Sets what a write does when the queue is full.
    pub fn with_on_full(mut self, on_full: OnFull) -> Self {
        self.on_full = on_full;
        self
    }

    /// Sets the longest a writer waits for room in a full queue (under [`OnFull::Wait`]).
    pub fn with_max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }

    /// Sets how many queued writes are stored at once (at least 1).
    pub fn with_concurrency(mut self, writes: usize) -> Self {
        self.concurrency = writes;
        self
    }

    /// Sets the longest one queued write may take in one layer (`None`: no bound of the queue's).
    pub fn with_write_timeout(mut self, limit: Option<Duration>) -> Self {
        self.write_timeout = limit;
        self
    }

    /// Sets the longest `flush` and `close` wait for the queue to drain.
    pub fn with_flush_timeout(mut self, limit: Duration) -> Self {
        self.flush_timeout = limit;
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
    backplane: Option<crate::backplane::Backplane>,
}

impl Default for TieredCacheBuilder {
    fn default() -> Self {
        TieredCacheBuilder {
            layers: Vec::new(),
            strategy: WriteStrategy::WriteThrough,
            breaker: None,
            name: "tiered".into(),
            min_backfill_ttl: Duration::from_millis(1),
            backplane: None,
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
    /// default a write-through stack has no breaker (a failing layer is tried on every call) and
    /// a write-back stack has [`BreakerConfig::default()`], so that writes queued for a layer
    /// that keeps failing or timing out fail fast instead of piling up.
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

    /// Puts the stack on a [`Backplane`](crate::Backplane): its changes evict the in-process
    /// layers of the other processes' stacks of the same name, and theirs its own (see
    /// [`crate::backplane`] and [`TieredCache::attach_backplane`]).
    pub fn backplane(mut self, backplane: crate::backplane::Backplane) -> Self {
        self.backplane = Some(backplane);
        self
    }

    /// Builds the stack. Fails without layers, with a write-back queue of capacity 0 or
    /// concurrency 0, or when a write-back stack cannot start its task on cachestack's runtime.
    pub fn build(self) -> Result<TieredCache> {
        if self.layers.is_empty() {
            return Err(Error::config("a tiered cache needs at least one layer"));
        }
        let breaker = match (&self.strategy, self.breaker) {
            (WriteStrategy::WriteBack(_), None) => Some(BreakerConfig::default()),
            (_, breaker) => breaker,
        };
        // A memory layer without a default TTL of its own keeps a default-expiry write as long as
        // the nearest layer below it that has one: it never outlives the copy below.
        let inherited: Vec<Option<Duration>> = (0..self.layers.len())
            .map(|i| {
                let own = &self.layers[i];
                if own.as_memory().is_none() || own.default_ttl().is_some() {
                    return None;
                }
                self.layers[i + 1..].iter().find_map(|below| below.default_ttl())
            })
            .collect();
        let layers = self
            .layers
            .into_iter()
            .zip(inherited)
            .enumerate()
            .map(|(index, (backend, inherited_ttl))| {
                Arc::new(Layer {
                    index,
                    inherited_ttl,
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
            WriteStrategy::WriteBack(config) if config.concurrency == 0 => {
                return Err(Error::config("a write-back queue needs a concurrency of at least 1"))
            }
            WriteStrategy::WriteBack(config) => Some(config.clone()),
        };
        let runtime = match &write_back {
            Some(_) => Some(crate::rt::handle()?),
            None => None,
        };
        let (finished_tx, finished_rx) = watch::channel(false);
        let queue = match (&write_back, runtime) {
            (Some(config), Some(runtime)) => {
                let (tx, rx) = mpsc::channel(config.capacity);
                Some((config.clone(), tx, rx, runtime))
            }
            _ => None,
        };
        let shared = Arc::new(Shared {
            bus: super::backplane::Bus::new(&self.name),
            name: self.name,
            layers,
            stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
            seq: AtomicU64::new(0),
            min_backfill_ttl: self.min_backfill_ttl,
            strategy: self.strategy,
            write_back: queue.as_ref().map(|(config, tx, _, runtime)| WriteBackState {
                config: config.clone(),
                tx: RwLock::new(Some(tx.clone())),
                finished: finished_rx,
                runtime: runtime.clone(),
                stats: QueueStats::default(),
            }),
            writes: AtomicU64::new(0),
            deletes: AtomicU64::new(0),
            queue_hits: AtomicU64::new(0),
            queue_misses: AtomicU64::new(0),
        });
        if let Some((_, tx, rx, runtime)) = queue {
            drop(tx);
            runtime.spawn(run_queue(shared.clone(), rx, finished_tx));
        }
        if let Some(backplane) = &self.backplane {
            super::backplane::attach(&shared, backplane);
        }
        Ok(TieredCache { view: L1View { l1: shared.layers[0].clone() }, shared })
    }
}
