//! The one interface every store implements.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use super::{AtomicOps, BackendStats, LockOps};
use crate::error::{Error, Result};
use crate::expiry::{Deadline, Expiry};
use crate::pattern::KeyPattern;
use crate::value::Value;

/// A value read from a backend with its deadline (`None`: no expiry). Tiered stacks backfill
/// faster layers with exactly this deadline, never a later one.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The cached value.
    pub value: Value,
    /// When the entry stops being served, `None` when it never expires.
    pub expires: Option<Deadline>,
}

impl Entry {
    /// An entry expiring at `expires`.
    pub fn new(value: Value, expires: Option<Deadline>) -> Self {
        Entry { value, expires }
    }

    /// The time it has left to live now (`None`: no expiry; zero once past its deadline).
    pub fn ttl(&self) -> Option<Duration> {
        self.expires.map(Deadline::remaining)
    }

    /// The entry if its deadline has not passed: what every store returns from a read.
    pub fn live(self) -> Option<Self> {
        match self.expires {
            Some(deadline) if deadline.has_passed() => None,
            _ => Some(self),
        }
    }
}

/// A cache store: memory, file, Redis, PostgreSQL, Memcached, a tiered stack, or your own.
///
/// The trait is object-safe; caches are held as `Arc<dyn Backend>`. Keys are UTF-8 strings; each
/// backend scopes them to its namespace, and [`Backend::clear`] removes only that namespace.
/// A write carries an [`Expiry`]: [`Expiry::Default`] is "the backend's default TTL from now"
/// (see [`Backend::default_ttl`]); a [`Deadline`] is a point in time the store keeps as it is.
/// A store never serves an entry past its deadline.
///
/// Errors: a backend configured as `silent` turns failures into misses (or no-ops) while counting
/// and logging them (see [`Counters::absorb`](crate::Counters::absorb)). Stored bytes that fail their checks are always a
/// miss plus an error count, never an error to the caller and never a panic.
///
/// A backend of your own works anywhere a built-in one does (registry, tiered stack, macros):
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use cachestack::{async_trait, Backend, BackendStats, Counters, Entry, Expiry, Result, Value};
///
/// #[derive(Debug, Default)]
/// struct MapBackend { map: Mutex<HashMap<String, Entry>>, counters: Counters }
///
/// #[async_trait]
/// impl Backend for MapBackend {
///     fn name(&self) -> &str { "map" }
///     async fn get(&self, key: &str) -> Result<Option<Entry>> {
///         let found = self.map.lock().unwrap().get(key).cloned().and_then(Entry::live);
///         self.counters.record_lookup(found.is_some());
///         Ok(found)
///     }
///     async fn set(&self, key: &str, value: Value, expiry: Expiry) -> Result<()> {
///         self.counters.record_write();
///         let entry = Entry::new(value, expiry.resolve(None));
///         self.map.lock().unwrap().insert(key.to_string(), entry);
///         Ok(())
///     }
///     async fn delete(&self, key: &str) -> Result<bool> {
///         self.counters.record_delete();
///         Ok(self.map.lock().unwrap().remove(key).is_some())
///     }
///     async fn clear(&self) -> Result<()> {
///         self.map.lock().unwrap().clear();
///         Ok(())
///     }
///     fn stats(&self) -> BackendStats { self.counters.snapshot("map") }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let cache = cachestack::Cache::new(MapBackend::default());
/// cache.set("k", &5u8, None).await.unwrap();
/// assert_eq!(cache.get::<u8>("k").await.unwrap(), Some(5));
/// # });
/// ```
#[async_trait]
pub trait Backend: Send + Sync + fmt::Debug + 'static {
    /// A short name for logs and stats (`memory`, `file`, `redis`...).
    fn name(&self) -> &str;

    /// Reads `key`: the value and its deadline, or `None` on a miss. Entries past their deadline
    /// are never returned.
    async fn get(&self, key: &str) -> Result<Option<Entry>>;

    /// Reads `key` like [`Backend::get`], serving a tagged entry only if `check` finds it current
    /// (see [`crate::tags`]): what [`Cache`](crate::Cache) reads with. The default reads and
    /// asks; a tiered stack asks for each tier's entry, and neither serves nor backfills one that
    /// is not current (the next tier is read instead). A store of your own keeps the default.
    async fn get_current(&self, key: &str, check: &dyn crate::tags::TagCheck) -> Result<Option<Entry>> {
        match self.get(key).await? {
            Some(entry) if !check.entry_current(&entry).await => Ok(None),
            found => Ok(found),
        }
    }

    /// The tier every process shares, where tag invalidation times are kept (see
    /// [`crate::tags`]): `None` for a store (the store itself), the lowest layer for a tiered
    /// stack. Wrappers forward it.
    fn shared_tier(&self) -> Option<std::sync::Arc<dyn Backend>> {
        None
    }

    /// Stores `value` under `key` until the deadline `expiry` resolves to (see
    /// [`Expiry::resolve`]; resolve [`Expiry::Default`] with [`Backend::default_ttl`]).
    async fn set(&self, key: &str, value: Value, expiry: Expiry) -> Result<()>;

    /// Removes `key`; true if it was present.
    async fn delete(&self, key: &str) -> Result<bool>;

    /// True if `key` holds a live entry.
    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.get(key).await?.is_some())
    }

    /// [`Backend::exists`] that agrees with [`Backend::get_current`]: true only if it would serve
    /// an entry (a tagged entry that is not current does not exist). What
    /// [`Cache::exists`](crate::Cache::exists) asks once tags are in use. The default reads the
    /// entry with `get_current` (tags live in the value, so it must be read); a tiered stack asks
    /// each tier in turn and backfills nothing. A store of your own keeps the default.
    async fn exists_current(&self, key: &str, check: &dyn crate::tags::TagCheck) -> Result<bool> {
        if !crate::tags::in_use() {
            return self.exists(key).await;
        }
        Ok(self.get_current(key, check).await?.is_some())
    }

    /// Removes every entry of this cache's namespace, and nothing else.
    async fn clear(&self) -> Result<()>;

    /// Reads several keys; the result has one slot per key, in order.
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.get(key).await?);
        }
        Ok(out)
    }

    /// [`Backend::get_many`] serving a tagged entry only if `check` finds it current, slot by
    /// slot as [`Backend::get_current`] does: what [`Cache::get_many`](crate::Cache::get_many)
    /// reads with. The default reads and asks; a tiered stack asks for each tier's entry, and
    /// neither serves nor backfills one that is not current (the next tier is read instead). A
    /// store of your own keeps the default.
    async fn get_many_current(&self, keys: &[&str], check: &dyn crate::tags::TagCheck) -> Result<Vec<Option<Entry>>> {
        let mut found = self.get_many(keys).await?;
        for slot in found.iter_mut() {
            if let Some(entry) = slot
                && !check.entry_current(entry).await
            {
                *slot = None;
            }
        }
        Ok(found)
    }

    /// Stores several entries with one expiry.
    async fn set_many(&self, entries: &[(&str, Value)], expiry: Expiry) -> Result<()> {
        for (key, value) in entries {
            self.set(key, value.clone(), expiry).await?;
        }
        Ok(())
    }

    /// Removes several keys; returns how many were present.
    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        let mut removed = 0;
        for key in keys {
            removed += u64::from(self.delete(key).await?);
        }
        Ok(removed)
    }

    /// Stores `value` under `key` only if `key` holds no live entry; true if this call stored it.
    /// Atomic: among callers racing on one key, exactly one wins. An entry past its deadline is
    /// absent.
    ///
    /// The default calls [`AtomicOps::set_if_absent`] of [`Backend::atomic`], or answers
    /// [`Error::Unsupported`] when there is none: a read followed by a write is not atomic.
    async fn set_if_absent(&self, key: &str, value: Value, expiry: Expiry) -> Result<bool> {
        match self.atomic() {
            Some(ops) => ops.set_if_absent(key, value, expiry).await,
            None => Err(Error::unsupported("set_if_absent", self.name())),
        }
    }

    /// Adds `delta` to the counter under `key` and returns the new value. An absent key is
    /// created holding `delta`, with the deadline `expiry` resolves to; an existing counter keeps
    /// its deadline. Atomic: concurrent increments are never lost. A key holding something other
    /// than a counter, or a result outside `i64`, is an error and changes nothing.
    ///
    /// Counters are `i64` values: read one with `Cache::get::<i64>`. Stores with a native
    /// counter (Redis, PostgreSQL, Memcached) keep it as a plain decimal number.
    ///
    /// The default calls [`AtomicOps::incr`] of [`Backend::atomic`], or answers
    /// [`Error::Unsupported`].
    async fn incr(&self, key: &str, delta: i64, expiry: Expiry) -> Result<i64> {
        match self.atomic() {
            Some(ops) => ops.incr(key, delta, expiry).await,
            None => Err(Error::unsupported("incr", self.name())),
        }
    }

    /// Gives the live entry under `key` the deadline `expiry` resolves to now
    /// ([`Expiry::Never`] removes its deadline; a deadline already past removes the entry);
    /// true if `key` held a live entry. The value is not changed.
    ///
    /// The default calls [`AtomicOps::expire`] of [`Backend::atomic`], or answers
    /// [`Error::Unsupported`]: a read followed by a write could bring back an entry deleted in
    /// between.
    async fn expire(&self, key: &str, expiry: Expiry) -> Result<bool> {
        match self.atomic() {
            Some(ops) => ops.expire(key, expiry).await,
            None => Err(Error::unsupported("expire", self.name())),
        }
    }

    /// The deadline of the live entry under `key`: `None` when there is none, `Some(None)` when
    /// it never expires. The default reads the entry.
    async fn ttl(&self, key: &str) -> Result<Option<Option<Deadline>>> {
        Ok(self.get(key).await?.map(|entry| entry.expires))
    }

    /// Lists the keys of this cache's namespace that match `pattern` (see [`KeyPattern`]),
    /// handing them to `visit` in batches of about `batch` keys, until the keys run out or
    /// `visit` returns false. Keys written or removed during the walk may or may not be listed;
    /// a key present for the whole walk is listed at least once (Redis `SCAN` may list a key
    /// twice). No order is promised.
    ///
    /// The default calls [`AtomicOps::keys_matching`] of [`Backend::atomic`], or answers
    /// [`Error::Unsupported`].
    async fn keys_matching(&self, pattern: &KeyPattern, batch: usize, visit: &mut KeyVisitor<'_>) -> Result<()> {
        match self.atomic() {
            Some(ops) => ops.keys_matching(pattern, batch, visit).await,
            None => Err(Error::unsupported("keys_matching", self.name())),
        }
    }

    /// Removes every key of this cache's namespace that matches `pattern` (see [`KeyPattern`]);
    /// returns how many were removed. Never touches another namespace. Not atomic: a key written
    /// during the call may survive it.
    ///
    /// The default calls [`AtomicOps::delete_matching`] of [`Backend::atomic`]; without one it
    /// lists the keys with [`Backend::keys_matching`] and removes them with
    /// [`Backend::delete_many`] in batches.
    async fn delete_matching(&self, pattern: &KeyPattern) -> Result<u64> {
        if let Some(ops) = self.atomic() {
            return ops.delete_matching(pattern).await;
        }
        delete_listed(self, pattern).await
    }

    /// The store's native atomic and pattern operations, if it has them (see [`AtomicOps`]).
    /// `None` by default. A wrapper (a layer) leaves this `None` and forwards the operations
    /// themselves, so that it sees them.
    fn atomic(&self) -> Option<&dyn AtomicOps> {
        None
    }

    /// The store's lock primitive, for single flight across processes (see [`LockOps`]);
    /// `None` by default (a store in one process, or one without a lock). Wrappers (layers,
    /// shared handles) forward it; a tiered stack answers with its lowest layer's, the tier every
    /// process shares.
    fn locks(&self) -> Option<&dyn LockOps> {
        None
    }

    /// Removes expired entries that the store keeps until someone looks (files, SQL rows);
    /// returns how many were removed. Stores that expire entries by themselves return 0.
    async fn purge_expired(&self) -> Result<u64> {
        Ok(0)
    }

    /// Counters and details for this backend.
    fn stats(&self) -> BackendStats;

    /// The TTL that [`Expiry::Default`] stands for in this store (`None`: no expiry). A tiered
    /// stack asks each layer for it when the caller writes, so that a write waiting in a queue
    /// still gets the deadline it was given.
    fn default_ttl(&self) -> Option<Duration> {
        None
    }

    /// Whether this store signs what it writes and serves only values whose signature it
    /// verified ([`ValueFormat::signer`](crate::ValueFormat::signer)). A tiered stack never
    /// backfills a value read from a layer that is not [`Signing::Signed`] into a layer that
    /// signs: a signature there would vouch for bytes nobody verified. Default:
    /// [`Signing::Unsigned`].
    ///
    /// ```
    /// use cachestack::{Backend, MemoryBackend, Signing};
    /// assert_eq!(MemoryBackend::with_capacity(100).signing(), Signing::Unsigned);
    /// ```
    fn signing(&self) -> Signing {
        Signing::Unsigned
    }

    /// For stores that answer without blocking or awaiting (the memory backend): synchronous
    /// access, which the generated wrappers use to answer hits without any future machinery.
    fn as_local(&self) -> Option<&dyn LocalBackend> {
        None
    }

    /// The memory backend itself, for a store that is one (or forwards to one): `#[cached]`
    /// functions keep their results in its typed partitions. Not for other stores to implement.
    #[cfg(feature = "memory")]
    #[doc(hidden)]
    fn as_memory(&self) -> Option<&crate::store::memory::MemoryBackend> {
        None
    }

    /// The memory backend that is the in-process first layer of this store, for a tiered stack
    /// whose L1 is one (or a store forwarding to such a stack): `#[cached]` functions keep a typed
    /// copy of that layer's entries in its partitions, invalidated by every delete or clear the
    /// layer sees. Unlike [`Backend::as_memory`], a miss there is not a miss of this store. Not
    /// for other stores to implement.
    #[cfg(feature = "memory")]
    #[doc(hidden)]
    fn l1_memory(&self) -> Option<&crate::store::memory::MemoryBackend> {
        None
    }

    /// A synchronous first look for hot paths, weaker than [`Backend::as_local`]: a hit from the
    /// returned view's `get_value` / `get_entry` is a hit of this backend, but a `None` is *not*
    /// a miss: continue with [`Backend::get`]. A tiered stack whose fastest layer is in memory
    /// answers here from that layer alone. The view only reads; write and invalidate through the
    /// async methods.
    ///
    /// Prefer `as_local` when it is `Some` (its `None` is a real miss, no second look needed).
    /// Defaults to `as_local`, so every local store offers it.
    fn local_l1(&self) -> Option<&dyn LocalRead> {
        self.as_local().map(|local| local as &dyn LocalRead)
    }

    /// Waits until writes this backend accepted but has not yet stored (a write-back queue) are
    /// stored. Backends that write before returning have nothing to do (the default).
    async fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// For an orderly shutdown: [`flush`](Backend::flush)es, then stops holding writes back, so
    /// that nothing accepted later can be lost at exit (a write-back stack drains its queue and
    /// writes through from then on). The backend stays usable. The default is `flush`.
    async fn close(&self) -> Result<()> {
        self.flush().await
    }

    /// This backend as a [`TieredCache`](crate::TieredCache), if it is one: the registry puts
    /// such stacks on its [backplane](crate::backplane). Not for other stores to implement.
    #[doc(hidden)]
    fn as_tiered(&self) -> Option<&crate::stack::TieredCache> {
        None
    }

    /// Tells the store the name its cache is registered under, for the `cache` label of its
    /// metrics and spans (see [`crate::layer::Observe`]). The registry calls it on
    /// registration; wrappers and stacks pass it on to what they wrap. The default does nothing.
    fn bind_cache_name(&self, name: &str) {
        let _ = name;
    }
}

/// Whether a backend signs its values (see [`Backend::signing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Signing {
    /// Values are stored and served without a signature (the memory tier, byte stores without a
    /// signer): whatever can write to the store can plant a value.
    #[default]
    Unsigned,
    /// Every value is signed when written and verified when read.
    Signed,
    /// Some parts sign and others do not: a tiered stack whose byte layers differ.
    Mixed,
}

impl Signing {
    /// The signing of a byte store that writes with `format`.
    pub(crate) fn of(format: &crate::value::envelope::ValueFormat) -> Self {
        if format.signer.is_some() {
            Signing::Signed
        } else {
            Signing::Unsigned
        }
    }

    /// The signing of several stores taken together.
    pub(crate) fn combined(parts: impl IntoIterator<Item = Signing>) -> Self {
        parts.into_iter().reduce(|a, b| if a == b { a } else { Signing::Mixed }).unwrap_or_default()
    }
}

/// [`Backend::delete_matching`] without a native one: lists the keys with
/// [`Backend::keys_matching`] and removes them with [`Backend::delete_many`] in batches.
pub(crate) async fn delete_listed<B: Backend + ?Sized>(backend: &B, pattern: &KeyPattern) -> Result<u64> {
    let mut keys: Vec<String> = Vec::new();
    let listed = backend
        .keys_matching(pattern, PATTERN_BATCH, &mut |batch| {
            keys.extend(batch);
            true
        })
        .await;
    match listed {
        Err(Error::Unsupported { .. }) => return Err(Error::unsupported("delete_matching", backend.name())),
        other => other?,
    }
    let mut removed = 0u64;
    for chunk in keys.chunks(PATTERN_BATCH) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        removed = removed.saturating_add(backend.delete_many(&refs).await?);
    }
    Ok(removed)
}

/// Receives the keys [`Backend::keys_matching`] finds, one batch at a time; returns false to stop.
pub type KeyVisitor<'a> = dyn FnMut(Vec<String>) -> bool + Send + 'a;

/// Keys per batch when a pattern operation gives no batch size (listing and removal).
pub const PATTERN_BATCH: usize = 500;

// A shared store is a store: layers and stacks hold `Arc<dyn Backend>`.
crate::store::forward_backend!(impl [B: Backend + ?Sized] for std::sync::Arc<B> => |s| **s);

/// Synchronous, infallible reads of an in-process store or of the in-process front of a stack.
/// See [`Backend::local_l1`].
pub trait LocalRead: Send + Sync {
    /// The live value under `key`, without its deadline (the cheapest possible hit).
    fn get_value(&self, key: &str) -> Option<Value>;
    /// The live entry under `key` with its deadline.
    fn get_entry(&self, key: &str) -> Option<Entry>;
    /// The name of the store that answers (for spans): a stack's view names its first tier.
    /// Defaults to `"memory"`.
    fn layer_name(&self) -> &str {
        "memory"
    }
}

/// Synchronous, infallible access to an in-process store: reads, writes and removals that
/// neither block nor await. See [`Backend::as_local`].
pub trait LocalBackend: LocalRead {
    /// Stores `value` until the deadline `expiry` resolves to.
    fn set_value(&self, key: &str, value: Value, expiry: Expiry);
    /// Removes `key`; true if it was present.
    fn remove(&self, key: &str) -> bool;
}
