//! The two engines a memory cache can run on, behind one map type used by the text-keyed entries
//! and by every typed partition: quick_cache (S3-FIFO, sharded locks, the default) and moka
//! (TinyLFU admission, time-to-idle).
//!
//! moka fixes its capacity when built, while a memory cache splits its capacity again whenever a
//! function first uses it: a moka map is rebuilt at the new capacity (its entries copied over,
//! the least valuable evicted by moka's policy) under a write lock that every read takes shared.
//! Rebuilds happen once per function per cache; the read lock is what a moka hit pays on top.

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use quick_cache::sync::{Cache as QuickCache, EntryAction, EntryResult};
use quick_cache::{DefaultHashBuilder, Equivalent, Weighter};

use super::front::{engine_options, share_for, Evictions};
use crate::error::{Error, Result};

/// The engine a [`MemoryBackend`](super::MemoryBackend) keeps its entries in.
///
/// ```
/// use cachestack::{MemoryBackend, MemoryConfig, MemoryEngine};
///
/// let cache = MemoryBackend::new(MemoryConfig { engine: MemoryEngine::Moka, ..MemoryConfig::default() }).unwrap();
/// assert_eq!(cache.config().engine, MemoryEngine::Moka);
/// assert_eq!("moka".parse::<MemoryEngine>().unwrap(), MemoryEngine::Moka);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MemoryEngine {
    /// quick_cache: S3-FIFO eviction, sharded read-write locks. The cheapest hit (see
    /// BENCHMARKS.md, "Memory engines"). URL: `engine=quick_cache`.
    #[default]
    QuickCache,
    /// moka: TinyLFU admission with an LRU window, optional time-to-idle
    /// ([`MemoryConfig::time_to_idle`](super::MemoryConfig::time_to_idle)). URL: `engine=moka`.
    Moka,
}

impl MemoryEngine {
    /// The engine's name and policy, as stats show it.
    pub fn describe(self) -> &'static str {
        match self {
            MemoryEngine::QuickCache => "quick_cache (S3-FIFO)",
            MemoryEngine::Moka => "moka (TinyLFU)",
        }
    }
}

impl std::str::FromStr for MemoryEngine {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "quick_cache" | "quick-cache" | "quickcache" => Ok(MemoryEngine::QuickCache),
            "moka" => Ok(MemoryEngine::Moka),
            other => Err(Error::config(format!("unknown memory engine `{other}`: expected quick_cache or moka"))),
        }
    }
}

/// How a map is built: its engine, whether it is bounded by bytes, and moka's time-to-idle.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EngineSpec {
    pub(crate) engine: MemoryEngine,
    pub(crate) bytes: bool,
    pub(crate) time_to_idle: Option<Duration>,
}

type Moka<K, V> = moka::sync::Cache<K, V, DefaultHashBuilder>;

/// What [`Map::update`] does to an entry.
pub(crate) enum Change<V> {
    /// Leave it as it is (or absent).
    Keep,
    /// Store this value.
    Put(V),
    /// Remove the entry.
    Remove,
}

/// A bounded concurrent map on one of the engines.
pub(crate) enum Map<K, V, W> {
    Quick(QuickCache<K, V, W, DefaultHashBuilder, Evictions>),
    Moka(MokaMap<K, V, W>),
}

/// A moka cache, rebuilt when its capacity changes.
pub(crate) struct MokaMap<K, V, W> {
    cache: RwLock<Moka<K, V>>,
    weighter: W,
    evictions: Evictions,
    time_to_idle: Option<Duration>,
}

/// A moka cache holding `capacity` by `weighter`'s weights, counting its evictions.
fn build_moka<K, V, W>(capacity: u64, weighter: &W, evictions: &Evictions, time_to_idle: Option<Duration>) -> Moka<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Weighter<K, V> + Clone + Send + Sync + 'static,
{
    let weighter = weighter.clone();
    let evictions = evictions.clone();
    let mut builder = moka::sync::Cache::builder()
        .max_capacity(capacity.max(1))
        .weigher(move |k: &K, v: &V| u32::try_from(weighter.weight(k, v)).unwrap_or(u32::MAX))
        .eviction_listener(move |_k, _v, cause| {
            // Pushed out by the bound or by time-to-idle; not a delete or an overwrite.
            if cause.was_evicted() {
                evictions.0.fetch_add(1, Ordering::Relaxed);
            }
        });
    if let Some(idle) = time_to_idle {
        builder = builder.time_to_idle(idle);
    }
    builder.build_with_hasher(DefaultHashBuilder::default())
}

impl<K, V, W> MokaMap<K, V, W>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Weighter<K, V> + Clone + Send + Sync + 'static,
{
    fn build(&self, capacity: u64) -> Moka<K, V> {
        build_moka(capacity, &self.weighter, &self.evictions, self.time_to_idle)
    }

    #[inline]
    fn read(&self) -> RwLockReadGuard<'_, Moka<K, V>> {
        self.cache.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Moka<K, V>> {
        self.cache.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K, V, W> Map<K, V, W>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Weighter<K, V> + Clone + Send + Sync + 'static,
{
    /// A map holding `capacity` (entries, or bytes when `spec.bytes`).
    pub(crate) fn new(spec: EngineSpec, capacity: u64, weighter: W, evictions: Evictions) -> Self {
        match spec.engine {
            MemoryEngine::QuickCache => Map::Quick(QuickCache::with_options(
                engine_options(capacity, spec.bytes),
                weighter,
                DefaultHashBuilder::default(),
                evictions,
            )),
            MemoryEngine::Moka => Map::Moka(MokaMap {
                cache: RwLock::new(build_moka(capacity, &weighter, &evictions, spec.time_to_idle)),
                weighter,
                evictions,
                time_to_idle: spec.time_to_idle,
            }),
        }
    }

    #[inline(always)]
    pub(crate) fn get<Q: Hash + Equivalent<K> + ?Sized>(&self, key: &Q) -> Option<V> {
        match self {
            Map::Quick(map) => map.get(key),
            Map::Moka(map) => map.read().get(key),
        }
    }

    /// Whether a key matching `key` is there (without touching the engine's policy state).
    pub(crate) fn contains_key<Q: Hash + Equivalent<K> + ?Sized>(&self, key: &Q) -> bool {
        match self {
            Map::Quick(map) => map.contains_key(key),
            Map::Moka(map) => map.read().contains_key(key),
        }
    }

    pub(crate) fn insert(&self, key: K, value: V) {
        match self {
            Map::Quick(map) => map.insert(key, value),
            Map::Moka(map) => map.read().insert(key, value),
        }
    }

    pub(crate) fn remove<Q: Hash + Equivalent<K> + ?Sized>(&self, key: &Q) -> Option<V> {
        match self {
            Map::Quick(map) => map.remove(key).map(|(_, v)| v),
            Map::Moka(map) => map.read().remove(key),
        }
    }

    /// Removes the entry if `stale` says so. On moka this is left to eviction and
    /// [`Map::retain`]: moka has no atomic conditional removal by a borrowed key, and removing
    /// after a separate check could drop a value written in between.
    pub(crate) fn remove_if<Q: Hash + Equivalent<K> + ?Sized>(&self, key: &Q, stale: impl FnOnce(&V) -> bool) {
        if let Map::Quick(map) = self {
            map.remove_if(key, stale);
        }
    }

    pub(crate) fn clear(&self) {
        match self {
            Map::Quick(map) => map.clear(),
            Map::Moka(map) => {
                let cache = map.read();
                cache.invalidate_all();
                cache.run_pending_tasks();
            }
        }
    }

    /// Entries held (for moka, after applying its pending evictions).
    pub(crate) fn len(&self) -> usize {
        match self {
            Map::Quick(map) => map.len(),
            Map::Moka(map) => {
                let cache = map.read();
                cache.run_pending_tasks();
                usize::try_from(cache.entry_count()).unwrap_or(usize::MAX)
            }
        }
    }

    /// The total weight held.
    pub(crate) fn weight(&self) -> u64 {
        match self {
            Map::Quick(map) => map.weight(),
            Map::Moka(map) => {
                let cache = map.read();
                cache.run_pending_tasks();
                cache.weighted_size()
            }
        }
    }

    /// Bounds the map to `capacity`, evicting what no longer fits.
    pub(crate) fn set_capacity(&self, capacity: u64) {
        match self {
            Map::Quick(map) => map.set_capacity(share_for(capacity, map.num_shards())),
            Map::Moka(map) => {
                let mut cache = map.write();
                let rebuilt = map.build(capacity);
                for (key, value) in cache.iter() {
                    rebuilt.insert(K::clone(&key), value);
                }
                rebuilt.run_pending_tasks();
                *cache = rebuilt;
            }
        }
    }

    /// Keeps the entries `keep` accepts; returns how many were removed.
    pub(crate) fn retain(&self, keep: impl Fn(&K, &V) -> bool) -> u64 {
        match self {
            Map::Quick(map) => {
                let removed = AtomicU64::new(0);
                map.retain(|k, v| {
                    let kept = keep(k, v);
                    removed.fetch_add(u64::from(!kept), Ordering::Relaxed);
                    kept
                });
                removed.into_inner()
            }
            Map::Moka(map) => {
                let cache = map.read();
                let gone: Vec<K> = cache.iter().filter(|(k, v)| !keep(k, v)).map(|(k, _)| K::clone(&k)).collect();
                for key in &gone {
                    cache.invalidate(key);
                }
                gone.len() as u64
            }
        }
    }

    /// Reads the entry of `key` and applies what `f` decides, atomically with respect to every
    /// other write of that key (quick_cache: under the shard's lock through its entry API;
    /// moka: under the map's exclusive lock, which every other access takes shared). `f` runs
    /// exactly once; `None` only if the engine gave up on the entry (not expected).
    pub(crate) fn update<R>(&self, key: &K, f: impl FnOnce(Option<&V>) -> (Change<V>, R)) -> Option<R> {
        match self {
            Map::Quick(map) => {
                let mut f = Some(f);
                let mut answer = None;
                let found = map.entry(key, None, |_, slot| {
                    let Some(f) = f.take() else { return EntryAction::Retain(()) };
                    let (change, r) = f(Some(&*slot));
                    answer = Some(r);
                    match change {
                        Change::Keep => EntryAction::Retain(()),
                        Change::Put(value) => {
                            *slot = value;
                            EntryAction::Retain(())
                        }
                        Change::Remove => EntryAction::Remove,
                    }
                });
                if let (EntryResult::Vacant(guard), Some(f)) = (found, f.take()) {
                    let (change, r) = f(None);
                    if let Change::Put(value) = change {
                        // An Err: a plain write replaced the placeholder meanwhile; it comes after
                        // this one, a valid order of the two.
                        let _ = guard.insert(value);
                    }
                    answer = Some(r);
                }
                answer
            }
            Map::Moka(map) => {
                let cache = map.write();
                let (change, r) = f(cache.get(key).as_ref());
                match change {
                    Change::Keep => {}
                    Change::Put(value) => cache.insert(K::clone(key), value),
                    Change::Remove => cache.invalidate(key),
                }
                Some(r)
            }
        }
    }

    /// Every entry, copied out.
    pub(crate) fn entries(&self) -> Vec<(K, V)> {
        match self {
            Map::Quick(map) => map.iter().collect(),
            Map::Moka(map) => map.read().iter().map(|(k, v)| (K::clone(&k), v)).collect(),
        }
    }
}
