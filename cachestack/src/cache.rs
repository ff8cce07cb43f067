//! [`Cache`]: the typed handle over any backend.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::expiry::Expiry;
use crate::singleflight::SingleFlight;
use crate::store::{Backend, BackendStats, Entry};
use crate::tags::{Checker, TagCheck, TagTimes};
use crate::value::{Cacheable, Value};

/// A typed handle over any [`Backend`]: get and set Rust values by key. Cheap to clone (the
/// clones share the backend).
///
/// A stored value that cannot be read as the requested type (written by another version of the
/// type, another codec, another program) is a miss, counted in [`Cache::stats`] as an error.
///
/// ```
/// use std::time::Duration;
/// use cachestack::{Cache, MemoryBackend};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let cache = Cache::new(MemoryBackend::with_capacity(100));
/// cache.set("greeting", &"hello".to_string(), Some(Duration::from_secs(60))).await.unwrap();
/// assert_eq!(cache.get::<String>("greeting").await.unwrap().as_deref(), Some("hello"));
/// assert!(cache.delete("greeting").await.unwrap());
/// assert_eq!(cache.get::<String>("greeting").await.unwrap(), None);
/// # });
/// ```
#[derive(Clone)]
pub struct Cache {
    backend: Arc<dyn Backend>,
    rejected: Arc<AtomicU64>,
    /// Single flight of [`Cache::get_or_set`] and [`Cache::get_or_set_async`], shared by clones
    /// (apart from `get_or_compute`'s: a flight there shares a value wrapped with its deadline).
    flights: Arc<SingleFlight>,
    /// Single flight, failure throttle, clock and counters of `get_or_compute` (resilience/).
    pub(crate) compute: Arc<crate::resilience::ComputeState>,
    /// Tag invalidation times: kept in process, read from and written to the shared tier.
    pub(crate) tags: Arc<CacheTags>,
}

/// What a cache checks tagged entries with (see [`crate::tags`]): the invalidation times it
/// knows, the shared tier they are recorded in, and the cache's clock.
#[derive(Debug)]
pub(crate) struct CacheTags {
    pub(crate) times: Arc<TagTimes>,
    pub(crate) tier: Arc<dyn Backend>,
    pub(crate) clock: Arc<dyn crate::resilience::Clock>,
}

impl CacheTags {
    /// Fresh tag times for a cache over `backend`; a stack's backplane makes them forget the
    /// tags other processes invalidate.
    pub(crate) fn watched_times(backend: &Arc<dyn Backend>, freshness: std::time::Duration) -> Arc<TagTimes> {
        let times = Arc::new(TagTimes::new(freshness));
        if let Some(stack) = backend.as_tiered() {
            stack.watch_tag_times(&times);
        }
        times
    }

    pub(crate) fn checker(&self) -> Checker<'_> {
        Checker { times: &self.times, tier: &*self.tier, clock: &*self.clock }
    }

    /// The verdict on a value read in process, without I/O (see [`TagCheck::value_known`]).
    #[inline]
    pub(crate) fn known(&self, value: &Value) -> Option<bool> {
        if !crate::tags::in_use() {
            return Some(true);
        }
        self.checker().value_known(value)
    }

    /// An entry read in process, if its verdict is known without I/O: `Some(None)` when it is not
    /// current, `None` when its tags' times must be read first.
    pub(crate) fn known_entry(&self, entry: Option<Entry>) -> Option<Option<Entry>> {
        match entry {
            Some(found) => match self.known(&found.value)? {
                true => Some(Some(found)),
                false => Some(None),
            },
            None => Some(None),
        }
    }

    /// Reads `key` from `backend`, serving a tagged entry only when it is current.
    pub(crate) async fn read(&self, backend: &dyn Backend, key: &str) -> Result<Option<Entry>> {
        if !crate::tags::in_use() {
            return backend.get(key).await;
        }
        backend.get_current(key, &self.checker()).await
    }

    /// Reads `keys` from `backend`, serving a tagged entry only when it is current.
    pub(crate) async fn read_many(&self, backend: &dyn Backend, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        if !crate::tags::in_use() {
            return backend.get_many(keys).await;
        }
        backend.get_many_current(keys, &self.checker()).await
    }

    /// Whether `backend` would serve an entry under `key` (a tagged entry only when current).
    pub(crate) async fn exists(&self, backend: &dyn Backend, key: &str) -> Result<bool> {
        if !crate::tags::in_use() {
            return backend.exists(key).await;
        }
        backend.exists_current(key, &self.checker()).await
    }
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache").field("backend", &self.backend).finish()
    }
}

impl Cache {
    /// A cache over `backend`.
    pub fn new(backend: impl Backend) -> Self {
        Self::from_arc(Arc::new(backend))
    }

    /// A cache over a shared backend.
    pub fn from_arc(backend: Arc<dyn Backend>) -> Self {
        let compute = crate::resilience::ComputeState::shared();
        let tags = Arc::new(CacheTags {
            times: CacheTags::watched_times(&backend, crate::tags::DEFAULT_TAG_FRESHNESS),
            tier: backend.shared_tier().unwrap_or_else(|| backend.clone()),
            clock: compute.clock().clone(),
        });
        Cache { backend, rejected: Arc::new(AtomicU64::new(0)), flights: Arc::new(SingleFlight::new()), compute, tags }
    }

    /// The backend behind this cache.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Reads a stored [`Value`] as `V`; an unreadable value is counted and becomes a miss.
    pub fn decode<V: Cacheable>(&self, key: &str, value: &Value) -> Option<V> {
        match value.get::<V>() {
            Ok(v) => Some(v),
            Err(err) => {
                self.rejected.fetch_add(1, Relaxed);
                tracing::warn!(backend = self.backend.name(), key, error = %err, "cachestack: stored value unreadable as the requested type; treated as a miss");
                None
            }
        }
    }

    /// Reads the entry under `key`, serving a tagged entry only when it is current (see
    /// [`crate::tags`]): every read of the cache goes through it.
    pub(crate) async fn read_entry(&self, key: &str) -> Result<Option<Entry>> {
        self.tags.read(&*self.backend, key).await
    }

    /// Reads `key` as `V`.
    pub async fn get<V: Cacheable>(&self, key: &str) -> Result<Option<V>> {
        Ok(self.get_with_ttl(key).await?.map(|(v, _)| v))
    }

    /// Reads `key` as `V` with the entry's remaining TTL (`None`: no expiry).
    pub async fn get_with_ttl<V: Cacheable>(&self, key: &str) -> Result<Option<(V, Option<Duration>)>> {
        let Some(entry) = self.read_entry(key).await? else { return Ok(None) };
        Ok(self.decode::<V>(key, &entry.value).map(|v| (v, entry.ttl())))
    }

    /// Stores a clone of `value` under `key` for `ttl` (`None`: the backend's default).
    pub async fn set<V: Cacheable>(&self, key: &str, value: &V, ttl: Option<Duration>) -> Result<()> {
        self.backend.set(key, Value::new(value.clone()), Expiry::from_ttl(ttl)).await
    }

    /// Removes `key`; true if it was present.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        self.backend.delete(key).await
    }

    /// True if `key` holds a live entry: one [`Cache::get`] would serve (a tagged entry whose
    /// tag was invalidated does not exist; once tags are in use in the process, this reads the
    /// entry, see [`Backend::exists_current`]).
    pub async fn exists(&self, key: &str) -> Result<bool> {
        self.tags.exists(&*self.backend, key).await
    }

    /// Removes every entry of this cache's namespace.
    pub async fn clear(&self) -> Result<()> {
        self.backend.clear().await
    }

    /// Removes expired entries kept by the store; returns how many.
    pub async fn purge_expired(&self) -> Result<u64> {
        self.backend.purge_expired().await
    }

    /// Waits until the writes this cache accepted but has not stored yet (a write-back queue) are
    /// stored, within the backend's bound ([`WriteBackConfig::flush_timeout`] for a write-back
    /// stack; past it, [`Error::Timeout`](crate::Error::Timeout) and the writes carry on in the
    /// background). Immediate for backends that write before returning.
    ///
    /// [`WriteBackConfig::flush_timeout`]: crate::WriteBackConfig::flush_timeout
    ///
    /// ```
    /// use cachestack::{Cache, MemoryBackend, TieredCache, WriteBackConfig};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let l2 = std::sync::Arc::new(MemoryBackend::with_capacity(10));
    /// let stack = TieredCache::builder()
    ///     .layer(MemoryBackend::with_capacity(10))
    ///     .layer_arc(l2.clone())
    ///     .write_back(WriteBackConfig::default())
    ///     .build()
    ///     .unwrap();
    /// let cache = Cache::new(stack);
    /// cache.set("k", &1u8, None).await.unwrap();
    /// cache.flush().await.unwrap();
    /// assert_eq!(Cache::from_arc(l2).get::<u8>("k").await.unwrap(), Some(1));
    /// # });
    /// ```
    pub async fn flush(&self) -> Result<()> {
        self.backend.flush().await
    }

    /// For an orderly shutdown: [`flush`](Cache::flush)es, then stops holding writes back (a
    /// write-back stack writes through from then on), so that nothing written later is lost at
    /// exit. The cache stays usable; closing twice is fine. See also
    /// [`CacheRegistry::shutdown`](crate::CacheRegistry::shutdown), which closes every registered
    /// cache.
    pub async fn close(&self) -> Result<()> {
        self.backend.close().await
    }

    /// [`Cache::flush`] from synchronous code (see [`crate::rt::block_on`]).
    ///
    /// ```
    /// let cache = cachestack::Cache::new(cachestack::MemoryBackend::with_capacity(10));
    /// cache.flush_blocking().unwrap();
    /// cache.close_blocking().unwrap();
    /// ```
    pub fn flush_blocking(&self) -> Result<()> {
        let backend = self.backend.clone();
        crate::rt::block_on(async move { backend.flush().await })?
    }

    /// [`Cache::close`] from synchronous code.
    pub fn close_blocking(&self) -> Result<()> {
        let backend = self.backend.clone();
        crate::rt::block_on(async move { backend.close().await })?
    }

    /// Reads `key` from synchronous code (any thread, inside or outside a tokio runtime; on a
    /// current-thread runtime the wait is bounded, see [`crate::rt::block_on`]).
    ///
    /// ```
    /// use cachestack::{Cache, MemoryBackend};
    /// let cache = Cache::new(MemoryBackend::with_capacity(10));
    /// cache.set_blocking("n", &1u8, None).unwrap();
    /// assert_eq!(cache.get_blocking::<u8>("n").unwrap(), Some(1));
    /// ```
    pub fn get_blocking<V: Cacheable>(&self, key: &str) -> Result<Option<V>> {
        if let Some(local) = self.backend.as_local() {
            let value = local.get_value(key);
            match value.as_ref().map(|value| self.tags.known(value)) {
                None | Some(Some(true)) => return Ok(value.and_then(|value| self.decode::<V>(key, &value))),
                Some(Some(false)) => return Ok(None),
                // A tagged value whose tags' times must be read first.
                Some(None) => {}
            }
        }
        let this = self.clone();
        let key = key.to_owned();
        crate::rt::block_on(async move { this.get::<V>(&key).await })?
    }

    /// Stores a clone of `value` from synchronous code.
    pub fn set_blocking<V: Cacheable>(&self, key: &str, value: &V, ttl: Option<Duration>) -> Result<()> {
        if let Some(local) = self.backend.as_local() {
            local.set_value(key, Value::new(value.clone()), Expiry::from_ttl(ttl));
            return Ok(());
        }
        let backend = self.backend.clone();
        let key = key.to_owned();
        let value = Value::new(value.clone());
        let expiry = Expiry::from_ttl(ttl);
        crate::rt::block_on(async move { backend.set(&key, value, expiry).await })?
    }

    /// Removes `key` from synchronous code.
    pub fn delete_blocking(&self, key: &str) -> Result<bool> {
        if let Some(local) = self.backend.as_local() {
            return Ok(local.remove(key));
        }
        let backend = self.backend.clone();
        let key = key.to_owned();
        crate::rt::block_on(async move { backend.delete(&key).await })?
    }

    /// The backend's stats; values that were found but could not be read as the requested type
    /// are moved from hits to misses and counted as errors.
    pub fn stats(&self) -> BackendStats {
        let mut stats = self.backend.stats();
        let rejected = self.rejected.load(Relaxed);
        stats.hits = stats.hits.saturating_sub(rejected);
        stats.misses += rejected;
        stats.errors += rejected;
        stats
    }

    /// Runs `op` on this cache from synchronous code: the `_blocking` twins.
    fn blocking<T, F, Fut>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Cache) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        let this = self.clone();
        crate::rt::block_on(async move { op(this).await })?
    }
}

#[path = "cache_ops.rs"]
mod ops;
#[path = "cache_tags.rs"]
mod tag_ops;
