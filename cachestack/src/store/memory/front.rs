//! The typed front of a memory cache: where a `#[cached]` function keeps its results in an
//! in-process cache, found by its arguments (no key text on a hit) and holding the value as its
//! own type (a hit is one probe and one clone).
//!
//! Each function that uses a memory cache gets a [`Partition`] of it: a typed engine keyed by the
//! function's arguments, encoded into a few bytes ([`FastKey`]: an integer argument is its 8
//! bytes, a text argument its length and bytes). The text key is rendered only when a call misses
//! the partition (to read the text-keyed entries, to log, to fill); what it hashes to picks one of
//! [`STRIPES`] invalidation stripes of the cache, and the entry records that stripe and its epoch
//! at the time the call *started*. Every delete of a key (by `<fn>_invalidate`,
//! `#[invalidate]`, [`Cache::delete`](crate::Cache::delete), a tiered delete) bumps the epoch of
//! the key's stripe (before and after removing the key), and a clear bumps them all: a hit serves an entry only while its stripe's
//! epoch is the one it recorded, so an invalidated entry is never served again, and a value
//! computed by a call that started before the delete never is either (it carries the older
//! epoch). A stale entry is a miss; the call then takes the normal path and fills again.
//!
//! A hit reads the stripe's epoch (a line written only by deletes), never writes anything that
//! another thread reads, and takes nothing but the engine's shard read lock.

use std::any::Any;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use quick_cache::{Equivalent, Lifecycle, Weighter};

use super::engine::{EngineSpec, Map};

use crate::expiry::Deadline;
use crate::striped::StripedCounter;
use crate::value::Cacheable;

/// Invalidation stripes per memory cache: a delete makes 1 / `STRIPES` of the typed entries
/// miss once (they are filled again on the next call).
pub(crate) const STRIPES: usize = 1024;

/// A type-erased [`Partition`], as the per-thread slot of a function holds it.
pub type FrontHandle = Arc<dyn Any + Send + Sync>;

/// The invalidation epochs of one memory cache, one per stripe.
pub(crate) struct Epochs {
    stripes: Box<[AtomicU32]>,
}

impl Epochs {
    pub(crate) fn new() -> Self {
        Epochs { stripes: (0..STRIPES).map(|_| AtomicU32::new(0)).collect() }
    }

    /// The stripe of a text key.
    #[inline]
    pub(crate) fn stripe_of(key: &str) -> u16 {
        (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) as usize & (STRIPES - 1)) as u16
    }

    #[inline]
    pub(crate) fn current(&self, stripe: u16) -> u32 {
        self.stripes.get(usize::from(stripe)).map_or(u32::MAX, |e| e.load(Ordering::Acquire))
    }

    /// Makes every entry of `key`'s stripe written (or computed) before now stale.
    pub(crate) fn bump_key(&self, key: &str) {
        if let Some(e) = self.stripes.get(usize::from(Self::stripe_of(key))) {
            e.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Makes every entry stale.
    pub(crate) fn bump_all(&self) {
        for e in self.stripes.iter() {
            e.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Where an entry's validity is checked: its stripe and the stripe's epoch when the call that
/// computed it started. Taken by [`FrontTag::for_key`] before reading or computing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrontTag {
    stripe: u16,
    epoch: u32,
}

impl FrontTag {
    pub(crate) fn for_key(epochs: &Epochs, key: &str) -> Self {
        let stripe = Epochs::stripe_of(key);
        FrontTag { stripe, epoch: epochs.current(stripe) }
    }

    /// True while no delete or clear reached the tag's stripe since it was taken.
    pub(crate) fn is_current(&self, epochs: &Epochs) -> bool {
        epochs.current(self.stripe) == self.epoch
    }
}

/// Milliseconds on the monotonic clock since the first use (0 is "never expires" in a slot).
fn now_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1)
}

/// A deadline as a point on [`now_ms`]'s clock (0: none).
fn expires_ms(deadline: Option<Deadline>) -> u64 {
    match deadline {
        None => 0,
        Some(d) => now_ms().saturating_add(u64::try_from(d.remaining().as_millis()).unwrap_or(u64::MAX)).max(1),
    }
}

/// The encoded arguments of a partition's key: up to 8 bytes as one word (zero-padded), longer
/// ones boxed.
#[derive(Clone, PartialEq, Eq)]
enum Args {
    Word(u64),
    Bytes(Box<[u8]>),
}

#[inline]
fn word(bytes: &[u8]) -> Option<u64> {
    if let Ok(exact) = <[u8; 8]>::try_from(bytes) {
        // The common case (one integer argument): no variable-length copy.
        return Some(u64::from_le_bytes(exact));
    }
    if bytes.len() > 8 {
        return None;
    }
    let mut w = [0u8; 8];
    w.get_mut(..bytes.len())?.copy_from_slice(bytes);
    Some(u64::from_le_bytes(w))
}

/// A partition's key: the encoded arguments and the [`FrontTag`] of the call that computed the
/// entry. The tag lives in the key so that a lookup checks it while the engine compares keys
/// ([`FastRef`]) and the engine hands out the value itself, cloned once, with nothing to unwrap.
/// Hash and equality cover the arguments only: a new value for the same arguments replaces the
/// old one. 24 bytes, so that an entry of a small value stays in quick_cache's smaller slot.
#[derive(Clone)]
pub(crate) struct FastKey {
    args: Args,
    epoch: u32,
    stripe: u16,
}

/// The key of a partition whose entries can expire: a [`FastKey`] and the deadline (`now_ms`
/// clock; 0: none).
#[derive(Clone)]
pub(crate) struct TimedKey {
    key: FastKey,
    expires: u64,
}

/// What a partition's key holds, whichever of the two it is.
trait PartKey: Hash + Eq + Clone + Send + Sync + 'static {
    /// The key for these arguments, or `None` when it cannot hold `deadline` (a key without
    /// one for an entry that expires).
    fn build(bytes: &[u8], deadline: Option<Deadline>, tag: FrontTag) -> Option<Self>;
    fn fast(&self) -> &FastKey;
    /// The deadline on the `now_ms` clock (0: none).
    fn expires(&self) -> u64;

    /// Live at `now` and written since the last delete or clear of its stripe.
    #[inline]
    fn valid(&self, now: impl FnOnce() -> u64, epochs: &Epochs) -> bool {
        let (expires, key) = (self.expires(), self.fast());
        (expires == 0 || now() < expires) && key.epoch == epochs.current(key.stripe)
    }
}

impl FastKey {
    fn of(bytes: &[u8], tag: FrontTag) -> Self {
        let args = match word(bytes) {
            Some(w) => Args::Word(w),
            None => Args::Bytes(bytes.into()),
        };
        FastKey { args, epoch: tag.epoch, stripe: tag.stripe }
    }

    fn len(&self) -> usize {
        match &self.args {
            Args::Word(_) => 8,
            Args::Bytes(b) => b.len(),
        }
    }
}

impl PartKey for FastKey {
    fn build(bytes: &[u8], deadline: Option<Deadline>, tag: FrontTag) -> Option<Self> {
        deadline.is_none().then(|| FastKey::of(bytes, tag))
    }
    #[inline]
    fn fast(&self) -> &FastKey {
        self
    }
    #[inline]
    fn expires(&self) -> u64 {
        0
    }
}

impl PartKey for TimedKey {
    fn build(bytes: &[u8], deadline: Option<Deadline>, tag: FrontTag) -> Option<Self> {
        Some(TimedKey { key: FastKey::of(bytes, tag), expires: expires_ms(deadline) })
    }
    #[inline]
    fn fast(&self) -> &FastKey {
        &self.key
    }
    #[inline]
    fn expires(&self) -> u64 {
        self.expires
    }
}

impl PartialEq for FastKey {
    fn eq(&self, other: &Self) -> bool {
        self.args == other.args
    }
}

impl Eq for FastKey {}

impl Hash for FastKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        match &self.args {
            Args::Word(w) => state.write_u64(*w),
            Args::Bytes(b) => state.write(b),
        }
    }
}

impl PartialEq for TimedKey {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for TimedKey {}

impl Hash for TimedKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

/// A borrowed key: hashes like the [`FastKey`] of the same bytes (the word computed once per
/// lookup) and matches it when the arguments are the same and, for a read that serves
/// (`serve`), the entry is valid, counting the hit into the partition's counter. The engine
/// stops at the first key that matches, so a hit is counted once.
struct FastRef<'a> {
    bytes: &'a [u8],
    word: Option<u64>,
    check: Check<'a>,
}

/// What a [`FastRef`] checks besides the arguments.
#[derive(Clone, Copy)]
enum Check<'a> {
    /// Nothing: the entry of these arguments, whatever its validity.
    Any,
    /// That the entry is valid.
    Valid(&'a Epochs),
    /// That the entry is valid, counting the hit.
    Serve(&'a FrontShared),
}

impl<'a> FastRef<'a> {
    #[inline]
    fn new(bytes: &'a [u8], check: Check<'a>) -> Self {
        FastRef { bytes, word: word(bytes), check }
    }
}

impl Hash for FastRef<'_> {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self.word {
            Some(w) => state.write_u64(w),
            None => state.write(self.bytes),
        }
    }
}

impl<K: PartKey> Equivalent<K> for FastRef<'_> {
    #[inline]
    fn equivalent(&self, key: &K) -> bool {
        let same = match (&key.fast().args, self.word) {
            (Args::Word(w), Some(mine)) => *w == mine,
            (Args::Bytes(b), None) => **b == *self.bytes,
            _ => false,
        };
        match self.check {
            Check::Any => same,
            Check::Valid(epochs) => same && key.valid(now_ms, epochs),
            Check::Serve(shared) => {
                let hit = same && key.valid(now_ms, &shared.epochs);
                if hit {
                    shared.hits.add(1);
                }
                hit
            }
        }
    }
}

/// Weighs entries by count, or (for a cache bounded by bytes) by an estimate of what they hold:
/// the key, the value, and the value's heap data estimated by its serialised length.
#[derive(Clone)]
struct SlotWeighter {
    bytes: bool,
}

impl<K: PartKey, V: Cacheable> Weighter<K, V> for SlotWeighter {
    fn weight(&self, key: &K, value: &V) -> u64 {
        if self.bytes {
            (key.fast().len()
                + std::mem::size_of::<K>()
                + std::mem::size_of::<V>()
                + crate::value::serialized_len(value)) as u64
        } else {
            1
        }
    }
}

/// Counts evictions into the cache's shared counter.
#[derive(Clone)]
pub(crate) struct Evictions(pub(crate) Arc<AtomicU64>);

impl<K, V> Lifecycle<K, V> for Evictions {
    type RequestState = ();
    fn on_evict(&self, _state: &mut (), _key: K, _val: V) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// The engine settings of a map holding `capacity` (entries, or bytes when `bytes`). A map
/// bounded by bytes gets one shard per 256 KiB (1 to 16): each shard bounds its own share, and a
/// value heavier than a shard's share is refused, so small byte bounds need few shards.
pub(crate) fn engine_options(capacity: u64, bytes: bool) -> quick_cache::Options {
    let mut builder = quick_cache::OptionsBuilder::new();
    if bytes {
        builder.estimated_items_capacity((capacity / 256).clamp(16, 1 << 24) as usize);
        builder.shards((capacity / (256 * 1024)).clamp(1, 16) as usize);
    } else {
        builder.estimated_items_capacity(capacity.clamp(1, 1 << 30) as usize);
    }
    builder.weight_capacity(capacity.max(1));
    match builder.build() {
        Ok(options) => options,
        // Unreachable: both required settings are set above.
        Err(_) => quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(16)
            .weight_capacity(capacity.max(1))
            .build()
            .unwrap_or_else(|_| unreachable!("both required settings are set")),
    }
}

/// A share of a capacity, rounded down to a multiple of the engine's shards (each shard holds
/// its share rounded up), so that the shares add up to at most the whole.
pub(crate) fn share_for(share: u64, shards: usize) -> u64 {
    let shards = shards.max(1) as u64;
    (share - share % shards).max(shards)
}

/// What a partition shares with its cache: the invalidation epochs and the hit counter.
pub(crate) struct FrontShared {
    pub(crate) epochs: Epochs,
    /// Hits answered by the partitions (striped: bumped by every thread on every hit).
    pub(crate) hits: StripedCounter,
}

/// One function's typed entries in a memory cache.
pub struct Partition<V> {
    keys: Keys<V>,
    shared: Arc<FrontShared>,
}

/// A partition's map: keys without a deadline for a function whose entries never expire (the
/// smaller entry), with one otherwise.
enum Keys<V> {
    Plain(Map<FastKey, V, SlotWeighter>),
    Timed(Map<TimedKey, V, SlotWeighter>),
}

/// `$body` with `$map` bound to the partition's map, whichever key it has.
macro_rules! each_map {
    ($keys:expr, $map:ident => $body:expr) => {
        match $keys {
            Keys::Plain($map) => $body,
            Keys::Timed($map) => $body,
        }
    };
}

impl<V: Cacheable> std::fmt::Debug for Partition<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition").field("len", &self.len()).finish()
    }
}

impl<V: Cacheable> Partition<V> {
    /// A partition whose entries can expire (`timed`), or never do.
    pub(crate) fn new(
        spec: EngineSpec,
        capacity: u64,
        shared: Arc<FrontShared>,
        evictions: Evictions,
        timed: bool,
    ) -> Self {
        let weighter = SlotWeighter { bytes: spec.bytes };
        let keys = if timed {
            Keys::Timed(Map::new(spec, capacity, weighter, evictions))
        } else {
            Keys::Plain(Map::new(spec, capacity, weighter, evictions))
        };
        Partition { keys, shared }
    }

    /// The live, valid value for these encoded arguments (the engine's clone, as it is).
    #[inline(always)]
    pub(crate) fn get(&self, key: &[u8]) -> Option<V> {
        let probe = FastRef::new(key, Check::Serve(&self.shared));
        each_map!(&self.keys, map => map.get(&probe))
    }

    /// Stores a value computed by a call that took `tag` when it started. A partition whose
    /// entries never expire does not take one with a deadline (and drops what it held for these
    /// arguments): the call that wants it finds it in the text-keyed entries.
    pub(crate) fn insert(&self, key: &[u8], value: V, deadline: Option<Deadline>, tag: FrontTag) {
        match &self.keys {
            Keys::Timed(map) => {
                if let Some(k) = TimedKey::build(key, deadline, tag) {
                    map.insert(k, value);
                }
            }
            Keys::Plain(map) => match FastKey::build(key, deadline, tag) {
                Some(k) => map.insert(k, value),
                None => {
                    map.remove(&FastRef::new(key, Check::Any));
                }
            },
        }
    }
}

/// What the cache does with each partition whatever its value type.
pub(crate) trait AnyPartition: Send + Sync {
    fn len(&self) -> usize;
    fn weight(&self) -> u64;
    fn clear(&self);
    fn set_capacity(&self, capacity: u64);
    fn purge_expired(&self) -> u64;
    /// Removes the entry of these encoded arguments; true if it was live and valid.
    fn remove(&self, key: &[u8]) -> bool;
    /// The time left of every live, valid entry (`None`: no expiry).
    fn ttls(&self) -> Vec<Option<std::time::Duration>>;
}

impl<V: Cacheable> AnyPartition for Partition<V> {
    fn len(&self) -> usize {
        each_map!(&self.keys, map => map.len())
    }
    fn weight(&self) -> u64 {
        each_map!(&self.keys, map => map.weight())
    }
    fn clear(&self) {
        each_map!(&self.keys, map => map.clear())
    }
    fn set_capacity(&self, capacity: u64) {
        each_map!(&self.keys, map => map.set_capacity(capacity))
    }
    fn purge_expired(&self) -> u64 {
        let now = now_ms();
        let epochs = &self.shared.epochs;
        each_map!(&self.keys, map => map.retain(|key, _| key.valid(|| now, epochs)))
    }
    fn remove(&self, key: &[u8]) -> bool {
        // Whether it was valid is read first (the engines give back the value, not the key):
        // what `<fn>_invalidate` reports, not what makes the entry unservable (the epochs do).
        let valid = FastRef::new(key, Check::Valid(&self.shared.epochs));
        let any = FastRef::new(key, Check::Any);
        each_map!(&self.keys, map => {
            let was = map.contains_key(&valid);
            map.remove(&any);
            was
        })
    }
    fn ttls(&self) -> Vec<Option<std::time::Duration>> {
        let now = now_ms();
        let epochs = &self.shared.epochs;
        each_map!(&self.keys, map => map
            .entries()
            .into_iter()
            .filter(|(key, _)| key.valid(|| now, epochs))
            .map(|(key, _)| {
                let expires = key.expires();
                (expires != 0).then(|| std::time::Duration::from_millis(expires.saturating_sub(now)))
            })
            .collect())
    }
}

/// Reads a hit from a type-erased partition.
#[inline(always)]
pub(crate) fn get<V: Cacheable>(handle: &FrontHandle, key: &[u8]) -> Option<V> {
    handle.downcast_ref::<Partition<V>>()?.get(key)
}
