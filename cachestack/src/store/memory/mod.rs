//! In-process memory backend on quick_cache (S3-FIFO eviction, sharded locks; the default) or
//! moka (TinyLFU admission, time-to-idle), chosen per cache by [`MemoryConfig::engine`]
//! (`mem://?engine=moka`). Both sit behind the same typed front and text-keyed map
//! ([`engine`]); BENCHMARKS.md ("Memory engines") compares their hit ratio and hit cost and says
//! why quick_cache is the default.
//!
//! Neither engine's expiry is used for TTLs: every entry carries its deadline and a read that
//! finds it passed reports a miss (quick_cache: and removes it); [`Backend::purge_expired`]
//! sweeps the rest. moka's time-to-idle ([`MemoryConfig::time_to_idle`]) applies on top.
//!
//! Two kinds of entries share the cache and its capacity: text-keyed entries (the [`Backend`]
//! API: `Cache::set`, a stack's writes and backfills) and, in [`front`], one typed partition per
//! `#[cached]` function, keyed by the function's arguments. The capacity (`max_entries` or
//! `max_bytes`) is split equally between the partitions in use (the text-keyed entries count as
//! one once written), and split again when a function first uses the cache.

pub(crate) mod engine;
pub(crate) mod front;

use std::any::TypeId;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use engine::MemoryEngine;
use engine::{EngineSpec, Map};
use front::{AnyPartition, Epochs, Evictions, FrontHandle, FrontShared};

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::expiry::{Deadline, Expiry};
use crate::pattern::KeyPattern;
use crate::store::{Backend, BackendStats, Counters, Entry, KeyVisitor, LocalBackend, LocalRead};
use crate::striped::StripedCounter;
use crate::url::{CacheUrl, Scheme, Shared, SharedFields, SharedOptions};
use crate::value::Value;

mod ops;
mod partitions;
mod slot;

use slot::{KeyRef, MemKey, Slot, SlotWeighter};

/// Settings of a [`MemoryBackend`].
///
/// ```
/// use std::time::Duration;
/// use cachestack::{MemoryBackend, MemoryConfig};
///
/// let cache = MemoryBackend::new(MemoryConfig {
///     max_entries: 50_000,
///     default_ttl: Some(Duration::from_secs(300)),
///     ..MemoryConfig::default()
/// }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct MemoryConfig {
    /// Most entries held (ignored when `max_bytes` is set). Default 10 000.
    pub max_entries: u64,
    /// Bound by approximate size instead: what an entry holds, estimated as its key, its inline
    /// size and its heap data (by its serialised length), plus the encoded bytes a byte tier may
    /// attach to it later (see [`MemoryBackend`]).
    pub max_bytes: Option<u64>,
    /// TTL for writes that give none. `None`: entries live until evicted.
    pub default_ttl: Option<Duration>,
    /// Name shown in stats and logs.
    pub name: String,
    /// The engine holding the entries (URL `engine=quick_cache|moka`). Default quick_cache.
    pub engine: MemoryEngine,
    /// moka only (URL `tti=10m`): an entry not read or written for this long is evicted,
    /// whatever its TTL. Set with quick_cache, [`MemoryBackend::new`] refuses the config.
    pub time_to_idle: Option<Duration>,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            max_entries: 10_000,
            max_bytes: None,
            default_ttl: None,
            name: "memory".into(),
            engine: MemoryEngine::default(),
            time_to_idle: None,
        }
    }
}

/// A bounded in-process cache holding typed values: a hit clones the value (or, for values that
/// came from a byte tier, decodes once and then clones), never serialises.
///
/// A `#[cached]` function keeps its results here in a typed partition of its own, found by its
/// arguments (see `store/memory/front.rs`): they are invalidated by key like any entry (a delete
/// or a clear reaches them), but a text-keyed read (`Cache::get` with the rendered key) does not
/// see them, and a text-keyed write does not replace them. When this cache is L1 of a
/// [`TieredCache`](crate::TieredCache), a function of the stack keeps typed copies of L1's
/// entries here (same deadline; stale once the key is deleted or L1 cleared), so that its L1
/// hits cost what a memory cache's do.
///
/// With `max_bytes`, an entry weighs its key, its inline size, its heap data estimated by its
/// serialised length (postcard), and, for entries reachable by the [`Backend`] API, that length
/// again for the encoded bytes a byte tier of a stack may attach to the same value later. A value
/// without serde ([`Value::local`]) weighs its inline size only.
///
/// ```
/// use cachestack::{Cache, MemoryBackend};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let cache = Cache::new(MemoryBackend::with_capacity(1000));
/// cache.set("answer", &42u32, None).await.unwrap();
/// assert_eq!(cache.get::<u32>("answer").await.unwrap(), Some(42));
/// # });
/// ```
pub struct MemoryBackend {
    map: Map<MemKey, Slot, SlotWeighter>,
    spec: EngineSpec,
    evictions: Evictions,
    counters: Counters,
    config: MemoryConfig,
    /// The capacity shared by the text-keyed entries and the partitions (entries or bytes).
    capacity: u64,
    /// Whether text-keyed entries were ever written (they then take a share of the capacity).
    text_active: AtomicBool,
    /// The invalidation epochs every partition checks.
    shared: Arc<FrontShared>,
    /// One typed partition per function that uses this cache.
    fronts: Mutex<Vec<Front>>,
}

/// A function's partition, with what identifies it.
struct Front {
    /// The address of the function's state (`&'static CachedFn`).
    id: usize,
    /// The partition's value type.
    value_type: TypeId,
    handle: FrontHandle,
    part: Arc<dyn AnyPartition>,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend").field("config", &self.config).field("len", &self.map.len()).finish()
    }
}

impl MemoryBackend {
    /// A memory cache with the given settings.
    pub fn new(config: MemoryConfig) -> Result<Self> {
        let weight = match config.max_bytes {
            Some(0) => return Err(Error::config("memory cache: max_bytes must be greater than zero")),
            Some(bytes) => bytes,
            None if config.max_entries == 0 => {
                return Err(Error::config("memory cache: max_entries must be greater than zero"))
            }
            None => config.max_entries,
        };
        match (config.engine, config.time_to_idle) {
            (MemoryEngine::QuickCache, Some(_)) => {
                return Err(Error::config(
                    "memory cache: time_to_idle (`tti`) needs the moka engine (`engine=moka`); quick_cache has none",
                ))
            }
            (_, Some(idle)) if idle.is_zero() => {
                return Err(Error::config("memory cache: time_to_idle must be greater than zero"))
            }
            _ => {}
        }
        let spec =
            EngineSpec { engine: config.engine, bytes: config.max_bytes.is_some(), time_to_idle: config.time_to_idle };
        let evictions = Evictions(Arc::default());
        let map = Map::new(spec, weight, SlotWeighter, evictions.clone());
        Ok(MemoryBackend {
            map,
            spec,
            evictions,
            counters: Counters::default(),
            config,
            capacity: weight,
            text_active: AtomicBool::new(false),
            shared: Arc::new(FrontShared { epochs: Epochs::new(), hits: StripedCounter::new() }),
            fronts: Mutex::new(Vec::new()),
        })
    }

    fn fronts(&self) -> std::sync::MutexGuard<'_, Vec<Front>> {
        self.fronts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Splits the capacity equally between the partitions in use (the text-keyed entries count
    /// once written). Called with the partitions locked, when one is added.
    fn rebalance(&self, fronts: &[Front]) {
        let shares = fronts.len() as u64 + u64::from(self.text_active.load(Relaxed));
        let share = (self.capacity / shares.max(1)).max(1);
        // (Text-keyed entries not yet in use hold nothing; their first write rebalances.)
        self.map.set_capacity(share);
        for front in fronts {
            front.part.set_capacity(share);
        }
    }

    /// A memory cache bounded to `max_entries`, no default TTL.
    pub fn with_capacity(max_entries: u64) -> Self {
        Self::new(MemoryConfig { max_entries: max_entries.max(1), ..MemoryConfig::default() })
            .unwrap_or_else(|_| unreachable!("max_entries is at least one"))
    }

    /// The settings this cache runs with.
    pub fn config(&self) -> &MemoryConfig {
        &self.config
    }

    /// Entries currently held, in the text-keyed map and the functions' partitions (expired and
    /// invalidated ones not yet swept included).
    pub fn len(&self) -> usize {
        self.map.len() + self.fronts().iter().map(|f| f.part.len()).sum::<usize>()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The total weight held (entries, or estimated bytes with `max_bytes`).
    pub fn weight(&self) -> u64 {
        self.map.weight() + self.fronts().iter().map(|f| f.part.weight()).sum::<u64>()
    }

    fn weigh(&self, key: &str, value: &Value) -> u64 {
        if self.config.max_bytes.is_some() {
            (key.len() + value.held_size() + std::mem::size_of::<(MemKey, Slot)>()) as u64
        } else {
            1
        }
    }

    #[inline]
    fn lookup(&self, key: &str) -> Option<Slot> {
        let key = KeyRef::new(key);
        let slot = self.map.get(&key);
        match slot {
            Some(slot) if slot.live(Instant::now) => {
                self.counters.record_lookup(true);
                Some(slot)
            }
            Some(_) => {
                self.map.remove_if(&key, |s| !s.live(Instant::now));
                self.counters.record_lookup(false);
                None
            }
            None => {
                self.counters.record_lookup(false);
                None
            }
        }
    }

    fn insert(&self, key: &str, value: Value, expiry: Expiry) {
        let slot = self.slot(key, value, expiry);
        self.counters.record_write();
        self.map.insert(MemKey::new(key), slot);
    }

    /// The slot for a write of `value` under `key` with `expiry`, made now.
    fn slot(&self, key: &str, value: Value, expiry: Expiry) -> Slot {
        // The first text-keyed write gives the text entries their share of the capacity.
        if !self.text_active.load(Relaxed) {
            let fronts = self.fronts();
            if !self.text_active.swap(true, Relaxed) {
                self.rebalance(&fronts);
            }
        }
        let (expires, deadline_ms) = deadline_clocks(expiry.resolve(self.config.default_ttl));
        let weight = self.weigh(key, &value);
        Slot { value, expires, deadline_ms, weight }
    }
}

/// A deadline on the monotonic clock (for the hit path) and in Unix milliseconds (0: none). A
/// deadline already past gives an entry that is never served (its remaining time is zero); one
/// beyond what `Instant` can hold on this platform is "never" for the hit path.
fn deadline_clocks(deadline: Option<Deadline>) -> (Option<Instant>, u64) {
    let now = Instant::now();
    let expires = deadline.and_then(|d| now.checked_add(d.remaining()));
    (expires, deadline.map_or(0, Deadline::unix_millis))
}

impl LocalRead for MemoryBackend {
    #[inline]
    fn get_value(&self, key: &str) -> Option<Value> {
        self.lookup(key).map(|slot| slot.value)
    }

    fn get_entry(&self, key: &str) -> Option<Entry> {
        self.lookup(key).map(|slot| Entry::new(slot.value, Deadline::from_unix_millis(slot.deadline_ms)))
    }
}

impl LocalBackend for MemoryBackend {
    fn set_value(&self, key: &str, value: Value, expiry: Expiry) {
        self.insert(key, value, expiry)
    }

    fn remove(&self, key: &str) -> bool {
        self.counters.record_delete();
        // Before the removal: a call that reads the epoch after this bump computes after the
        // delete, and one that read it before fills an entry that is already stale. After it
        // too: a stack's typed copy of this entry, taken by a call that read the epoch between
        // the first bump and the removal, is stale as well.
        self.shared.epochs.bump_key(key);
        let removed = self.map.remove(&KeyRef::new(key)).is_some();
        self.shared.epochs.bump_key(key);
        removed
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn name(&self) -> &str {
        &self.config.name
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        Ok(self.get_entry(key))
    }

    async fn set(&self, key: &str, value: Value, expiry: Expiry) -> Result<()> {
        self.insert(key, value, expiry);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        Ok(self.remove(key))
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.map.get(&KeyRef::new(key)).is_some_and(|slot| slot.live(Instant::now)))
    }

    async fn clear(&self) -> Result<()> {
        // Before and after, as `remove` does.
        self.shared.epochs.bump_all();
        self.map.clear();
        for front in self.fronts().iter() {
            front.part.clear();
        }
        self.shared.epochs.bump_all();
        Ok(())
    }

    async fn purge_expired(&self) -> Result<u64> {
        let now = Instant::now();
        let removed = self.map.retain(|_, slot| slot.live(|| now));
        let fronts: Vec<Arc<dyn AnyPartition>> = self.fronts().iter().map(|f| f.part.clone()).collect();
        let purged: u64 = fronts.iter().map(|p| p.purge_expired()).sum();
        Ok(removed + purged)
    }

    fn default_ttl(&self) -> Option<Duration> {
        self.config.default_ttl
    }

    fn stats(&self) -> BackendStats {
        let mut stats = self.counters.snapshot(&self.config.name);
        stats.hits = stats.hits.wrapping_add(self.shared.hits.get());
        stats.evictions = self.evictions.0.load(Relaxed);
        stats.entries = Some(self.len() as u64);
        let stats =
            stats.with_detail("engine", self.config.engine.describe()).with_detail("partitions", self.fronts().len());
        let stats = match self.config.time_to_idle {
            Some(idle) => stats.with_detail("time_to_idle", humantime::format_duration(idle)),
            None => stats,
        };
        match self.config.max_bytes {
            Some(bytes) => stats.with_detail("max_bytes", bytes).with_detail("weight", self.weight()),
            None => stats.with_detail("max_entries", self.config.max_entries),
        }
    }

    fn as_local(&self) -> Option<&dyn LocalBackend> {
        Some(self)
    }

    fn as_memory(&self) -> Option<&MemoryBackend> {
        Some(self)
    }

    async fn set_if_absent(&self, key: &str, value: Value, expiry: Expiry) -> Result<bool> {
        Ok(self.insert_if_absent(key, value, expiry))
    }

    async fn incr(&self, key: &str, delta: i64, expiry: Expiry) -> Result<i64> {
        self.add(key, delta, expiry)
    }

    async fn expire(&self, key: &str, expiry: Expiry) -> Result<bool> {
        Ok(self.re_expire(key, expiry))
    }

    async fn keys_matching(&self, pattern: &KeyPattern, batch: usize, visit: &mut KeyVisitor<'_>) -> Result<()> {
        self.visit_keys(pattern, batch, visit);
        Ok(())
    }

    async fn delete_matching(&self, pattern: &KeyPattern) -> Result<u64> {
        // The typed partitions keep no key text to match: every typed entry becomes stale (a
        // miss that refills), so none that matches is served again.
        self.shared.epochs.bump_all();
        let removed = self.remove_matching(pattern);
        self.shared.epochs.bump_all();
        Ok(removed)
    }
}

/// `mem://?max_entries=10000&max_bytes=...&ttl=5m&engine=moka&tti=10m` (or `memory://`).
pub(crate) const SCHEME: Scheme = Scheme {
    names: super::MEMORY_NAMES,
    feature: "memory",
    shared: &[Shared::Ttl, Shared::Name],
    options: &["max_entries", "max_bytes", "engine", "tti"],
    open: Some(open_url),
};

fn open_url(url: &mut CacheUrl, shared: SharedOptions) -> Result<Arc<dyn Backend>> {
    if !url.rest.is_empty() && url.rest != "/" {
        return Err(Error::config(format!(
            "mem:// URLs take no host or path (got `{}`); write mem://?max_entries=10000",
            url.rest_shown()
        )));
    }
    let mut config = MemoryConfig::default();
    if let Some(n) = url.take_parsed::<u64>("max_entries")? {
        config.max_entries = n;
    }
    config.max_bytes = url.take_parsed::<u64>("max_bytes")?;
    if let Some(engine) = url.take_parsed::<MemoryEngine>("engine")? {
        config.engine = engine;
    }
    config.time_to_idle = url.take_ttl("tti")?;
    shared.apply(SharedFields {
        namespace: None,
        name: Some(&mut config.name),
        default_ttl: &mut config.default_ttl,
        silent: None,
        timeout: None,
        connect_timeout: None,
        format: None,
    });
    Ok(Arc::new(MemoryBackend::new(config)?))
}

#[cfg(test)]
mod tests {
    use super::front::Partition;
    use super::slot::INLINE_KEY;
    use super::*;

    #[test]
    fn keys_inline_and_boxed_are_found_and_distinct() {
        let cache = MemoryBackend::with_capacity(100);
        let keys: Vec<String> = [0, 1, INLINE_KEY - 1, INLINE_KEY, INLINE_KEY + 1, 300]
            .iter()
            .map(|&n| "k".repeat(n))
            .chain(["é".repeat(INLINE_KEY / 2), format!("{}é", "x".repeat(INLINE_KEY - 1))])
            .collect();
        for (i, key) in keys.iter().enumerate() {
            cache.set_value(key, Value::new(i), crate::Expiry::Default);
        }
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(cache.get_value(key).unwrap().get::<usize>().unwrap(), i, "{key}");
        }
        // A key that is a prefix of a stored one, or shares its bytes, is another key.
        assert!(cache.get_value(&"k".repeat(INLINE_KEY + 2)).is_none());
        assert!(cache.remove(&"k".repeat(INLINE_KEY)));
        assert!(cache.get_value(&"k".repeat(INLINE_KEY)).is_none());
        assert!(cache.get_value(&"k".repeat(INLINE_KEY + 1)).is_some());
        assert_eq!(std::mem::size_of::<MemKey>(), 64);
    }

    fn moka(max_entries: u64, time_to_idle: Option<Duration>) -> Result<MemoryBackend> {
        MemoryBackend::new(MemoryConfig {
            max_entries,
            engine: MemoryEngine::Moka,
            time_to_idle,
            ..MemoryConfig::default()
        })
    }

    #[test]
    fn time_to_idle_needs_moka_and_a_positive_duration() {
        let quick =
            MemoryBackend::new(MemoryConfig { time_to_idle: Some(Duration::from_secs(1)), ..MemoryConfig::default() });
        let err = quick.unwrap_err().to_string();
        assert!(err.contains("moka"), "{err}");
        assert!(moka(10, Some(Duration::ZERO)).unwrap_err().to_string().contains("greater than zero"));
        let cache = moka(10, Some(Duration::from_secs(60))).unwrap();
        assert_eq!(cache.stats().details["engine"], "moka (TinyLFU)");
        assert_eq!(cache.stats().details["time_to_idle"], "1m");
    }

    #[test]
    fn url_selects_the_engine_and_time_to_idle() {
        let cache = crate::Cache::from_url("mem://?engine=moka&tti=5m&max_entries=10").unwrap();
        let memory = cache.backend().as_memory().unwrap();
        assert_eq!(memory.config().engine, MemoryEngine::Moka);
        assert_eq!(memory.config().time_to_idle, Some(Duration::from_secs(300)));
        let quick = crate::Cache::from_url("mem://").unwrap();
        assert_eq!(quick.backend().as_memory().unwrap().config().engine, MemoryEngine::QuickCache);
        for bad in
            ["mem://?engine=lru", "mem://?tti=5m", "mem://?engine=quick_cache&tti=1s", "mem://?engine=moka&tti=x"]
        {
            assert!(crate::Cache::from_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn moka_evictions_are_counted_and_the_bound_holds() {
        let cache = moka(100, None).unwrap();
        for i in 0..1000u64 {
            cache.set_value(&format!("k{i}"), Value::new(i), Expiry::Default);
        }
        assert!(cache.len() <= 100, "{} entries held under max_entries = 100", cache.len());
        assert!(cache.stats().evictions >= 900, "{:?}", cache.stats());
        // A delete or an overwrite is not an eviction.
        let before = cache.stats().evictions;
        let held = (0..1000u64).map(|i| format!("k{i}")).find(|k| cache.get_value(k).is_some()).unwrap();
        cache.set_value(&held, Value::new(0u64), Expiry::Default);
        assert!(cache.remove(&held));
        assert!(cache.get_value(&held).is_none());
        assert_eq!(cache.stats().evictions, before);
    }

    #[test]
    fn moka_time_to_idle_evicts_an_entry_left_unread() {
        // No timing is asserted: once the idle time has surely passed, the entry must be gone.
        let idle = Duration::from_millis(30);
        let cache = moka(10, Some(idle)).unwrap();
        cache.set_value("idle", Value::new(1u8), Expiry::Default);
        assert!(cache.get_value("idle").is_some());
        std::thread::sleep(idle * 3);
        assert!(cache.get_value("idle").is_none(), "read after more than the time to idle");
    }

    /// A function whose results never expire gets keys without a deadline (the smaller entry);
    /// such a partition refuses a value that has one (a deadline set from elsewhere on the same
    /// key) and forgets what it held for those arguments, so nothing is served past a deadline.
    #[test]
    fn partitions_without_deadlines_refuse_values_that_have_one() {
        use crate::expiry::Deadline;
        use std::time::SystemTime;
        let key = 7u64.to_le_bytes();
        let passed = Some(Deadline::at(SystemTime::now() - Duration::from_secs(1)));
        let later = Some(Deadline::after(Duration::from_secs(3600)));
        let cache = MemoryBackend::with_capacity(100);
        let tag = cache.front_tag("x");
        let plain = cache.front_partition::<u64>(1, false);
        let part = plain.downcast_ref::<Partition<u64>>().unwrap();
        part.insert(&key, 1, None, tag);
        assert_eq!(front::get::<u64>(&plain, &key), Some(1));
        part.insert(&key, 2, later, tag);
        assert_eq!(front::get::<u64>(&plain, &key), None, "the old value is gone, the new one not kept");

        // With deadlines: kept until the deadline, never served after it.
        let timed = cache.front_partition::<u64>(2, true);
        let part = timed.downcast_ref::<Partition<u64>>().unwrap();
        part.insert(&key, 3, later, tag);
        assert_eq!(front::get::<u64>(&timed, &key), Some(3));
        part.insert(&key, 4, passed, tag);
        assert_eq!(front::get::<u64>(&timed, &key), None);

        // A cache with a default TTL gives every function keys with deadlines.
        let ttl =
            MemoryBackend::new(MemoryConfig { default_ttl: Some(Duration::from_secs(60)), ..MemoryConfig::default() })
                .unwrap();
        let handle = ttl.front_partition::<u64>(1, false);
        handle.downcast_ref::<Partition<u64>>().unwrap().insert(&key, 5, later, ttl.front_tag("x"));
        assert_eq!(front::get::<u64>(&handle, &key), Some(5));
    }

    #[test]
    fn moka_partitions_keep_their_entries_when_the_capacity_is_split() {
        let cache = moka(100, None).unwrap();
        let first = cache.front_partition::<u64>(1, false);
        let tag = cache.front_tag("x");
        for i in 0..40u64 {
            first.downcast_ref::<Partition<u64>>().unwrap().insert(&i.to_le_bytes(), i, None, tag);
        }
        // A second function takes half the capacity: the first's 40 entries still fit in 50.
        let _second = cache.front_partition::<u64>(2, false);
        let kept = (0..40u64).filter(|i| front::get::<u64>(&first, &i.to_le_bytes()) == Some(*i)).count();
        assert_eq!(kept, 40);
        // A third: 33 each, so the first keeps at most 33.
        let _third = cache.front_partition::<u64>(3, false);
        let kept = (0..40u64).filter(|i| front::get::<u64>(&first, &i.to_le_bytes()).is_some()).count();
        assert!(kept <= 33 && kept > 0, "{kept}");
        assert!(cache.len() <= 100);
    }
}
