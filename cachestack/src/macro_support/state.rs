//! Per-function state and stats: the `static` a `#[cached]` function keeps, its counters, and the
//! per-thread slot holding its resolved cache.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::front::FrontHandle;
use super::{Cache, CacheRegistry, Result};
use crate::error::Error;
use crate::singleflight::SingleFlight;
use crate::striped::StripedCounter;
use crate::switches::Commands;

/// Counters of one `#[cached]` function, returned by its generated `<fn>_stats()` companion.
///
/// ```
/// #[cachestack::cached]
/// fn square(n: u64) -> u64 { n * n }
///
/// square(3);
/// square(3);
/// let stats = square_stats();
/// assert_eq!((stats.hits, stats.misses), (1, 1));
/// assert_eq!(stats.hit_ratio(), 0.5);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct FnStats {
    /// The function's path (`module::function`).
    pub name: &'static str,
    /// Calls answered from the cache.
    pub hits: u64,
    /// Lookups that found nothing usable (the function ran, or waited for another call).
    pub misses: u64,
    /// Calls that waited for another call computing the same key (single flight) instead of
    /// running the function themselves.
    pub waits: u64,
    /// Calls answered with a stale value (resilience options: `stale_if_error`,
    /// `stale_while_revalidate`, `timeout`); counted neither as hits nor as misses.
    pub stale: u64,
    /// Cache failures absorbed or propagated: backend errors, an unknown cache name, stored
    /// values that could not be read back as the return type.
    pub errors: u64,
    /// Keys being computed right now.
    pub in_flight: u64,
}

impl FnStats {
    /// hits / (hits + misses), 0 when there were no lookups.
    pub fn hit_ratio(&self) -> f64 {
        crate::store::hit_ratio(self.hits, self.misses)
    }
}

/// The state one `#[cached]` function keeps in a `static`: where its values go, its counters and
/// its single-flight map.
pub struct CachedFn {
    pub(crate) name: &'static str,
    pub(crate) cache: Option<&'static str>,
    /// The literal start of every key the function renders (namespace, version and the key
    /// template's text before its first placeholder), for prefix routes.
    pub(super) key_start: &'static str,
    /// True when the key is exactly `key_start` (a template without placeholders).
    pub(super) key_exact: bool,
    /// Striped: bumped on every hit, from every thread.
    pub(super) hits: StripedCounter,
    pub(super) misses: AtomicU64,
    pub(super) waits: AtomicU64,
    pub(super) stale: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) flights: SingleFlight,
}

impl fmt::Debug for CachedFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedFn").field("name", &self.name).field("cache", &self.cache).finish()
    }
}

impl CachedFn {
    /// State for the function `name` using the cache `cache` (`None`: the registry's default, or
    /// the cache a [route](CacheRegistry::route) sends its keys to), whose keys all start with
    /// `key_start` (and are exactly that when `key_exact`).
    pub const fn new(
        name: &'static str,
        cache: Option<&'static str>,
        key_start: &'static str,
        key_exact: bool,
    ) -> Self {
        CachedFn {
            name,
            cache,
            key_start,
            key_exact,
            hits: StripedCounter::new(),
            misses: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            flights: SingleFlight::new(),
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> FnStats {
        FnStats {
            name: self.name,
            hits: self.hits.get(),
            misses: self.misses.load(Relaxed),
            waits: self.waits.load(Relaxed),
            stale: self.stale.load(Relaxed),
            errors: self.errors.load(Relaxed),
            in_flight: self.flights.in_flight() as u64,
        }
    }

    /// The cache this function's `key` goes to, looked up in the global registry: the cache it
    /// names, else the one the key's [route](CacheRegistry::route) names, else the default.
    pub fn cache_for_key(&self, key: &str) -> Result<Cache> {
        match self.cache {
            Some(name) => CacheRegistry::global().get(name),
            None => CacheRegistry::global().cache_for_key(key),
        }
    }

    /// The name of the cache every call of this function uses now (`Some(None)`: the default
    /// cache), or `None` when it depends on the arguments: a route is longer than the literal
    /// start of the function's keys (e.g. `"user:admin:"` for the template `"user:<id>"`), so
    /// each call routes its rendered key.
    pub(super) fn fixed_route(&self) -> Option<Option<String>> {
        if let Some(name) = self.cache {
            return Some(Some(name.to_string()));
        }
        let choice = CacheRegistry::global().route_choice(self.key_start, self.key_exact);
        choice.longer.is_empty().then_some(choice.certain)
    }

    /// The cache `name` (`None`: the default), a failure logged.
    pub(super) fn resolve_logged(&self, name: Option<&str>) -> core::result::Result<Cache, Box<Error>> {
        resolve(name).map_err(|err| {
            tracing::warn!(function = self.name, error = %err, "cachestack: cannot resolve the cache of a #[cached] function; calling it uncached");
            Box::new(err)
        })
    }

    pub(super) fn record_error(&self, op: &'static str, key: &str, err: &Error) {
        self.errors.fetch_add(1, Relaxed);
        if op == "resolve" {
            // Logged once per thread and registry generation, when the resolution failed.
            return;
        }
        tracing::warn!(function = self.name, op, key, error = %err, "cachestack: cache error in a #[cached] function; calling through");
    }
}

pub(super) fn resolve(name: Option<&str>) -> Result<Cache> {
    let registry = CacheRegistry::global();
    match name {
        Some(name) => registry.get(name),
        None => Ok(registry.default_cache()),
    }
}

/// A copy of a resolution error for a caller that propagates it (the original stays cached in
/// the thread's slot so it is logged once).
pub(super) fn copy_error(err: &Error) -> Error {
    match err {
        Error::UnknownCache { name } => Error::UnknownCache { name: name.clone() },
        Error::Config { message } => Error::Config { message: message.clone() },
        other => Error::Generic { backend: "registry".into(), source: other.to_string().into() },
    }
}

/// What a thread remembers about a function's cache: the resolved cache (or the failure) and the
/// registry generation it was resolved at.
pub(super) struct Resolved {
    pub(super) generation: u64,
    pub(super) cache: core::result::Result<Cache, Box<Error>>,
    /// The function's typed partition, when the cache is a memory cache and the function's key
    /// parts have an encoding.
    pub(super) front: Option<FrontHandle>,
    /// The cache's switches when resolved (a change moves the generation).
    pub(super) commands: Commands,
    /// The function's cache depends on its arguments (see [`CachedFn::fixed_route`]): each call
    /// routes its rendered key, and `cache`, `front` and `commands` are unused.
    pub(super) per_key: bool,
}

/// A per-thread, per-function slot holding the resolved cache, so a hit costs one atomic load
/// of the registry generation instead of a registry lookup. Declared by generated code with
/// `thread_local!`.
pub struct CacheSlot(pub(super) RefCell<Option<Resolved>>);

impl CacheSlot {
    /// An empty slot.
    pub const fn new() -> Self {
        CacheSlot(RefCell::new(None))
    }
}

impl Default for CacheSlot {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for CacheSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CacheSlot")
    }
}
