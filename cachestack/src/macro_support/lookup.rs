//! The synchronous part of every call: resolving the cache through the thread's slot and
//! answering a hit from an in-process cache (or the in-process front layer of a stack).

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::keys::render_key;
use super::policy::{Condition, Policy};
use super::state::{copy_error, CacheSlot, CachedFn, Resolved};
use super::{Cache, CacheRegistry, LocalKey, Value};
use crate::error::Error;
use crate::store::LocalRead;

/// How the generated function was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A normal call: read the cache, compute on a miss.
    Call,
    /// The `<fn>_refresh` companion: compute and store, without reading.
    Refresh,
}

/// Everything a generated wrapper knows about itself.
pub struct Site<R> {
    pub(super) state: &'static CachedFn,
    pub(super) policy: Policy<R>,
    pub(super) ttl: Option<Duration>,
    pub(super) lock: bool,
}

impl<R> fmt::Debug for Site<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Site").field("state", &self.state).field("ttl", &self.ttl).field("lock", &self.lock).finish()
    }
}

impl<R> Site<R> {
    /// A call site.
    #[inline]
    pub fn new(state: &'static CachedFn, policy: Policy<R>, ttl: Option<Duration>, lock: bool) -> Self {
        Site { state, policy, ttl, lock }
    }

    /// Handles a cache failure: counted and logged, then `Some(Err(..))` when the function
    /// propagates cache errors, `None` to call through.
    pub(super) fn fail(&self, op: &'static str, key: &str, err: Error) -> Option<R> {
        self.state.record_error(op, key, &err);
        self.policy.on_error.map(|to_result| to_result(err))
    }

    /// What to store and share for a computed value: `(stored, shared)`.
    pub(super) fn settle(&self, result: &R, condition: Condition<'_, R>) -> Option<Value> {
        if (self.policy.keep)(result) && condition(result) {
            (self.policy.share)(result)
        } else {
            None
        }
    }
}

/// The result of the synchronous part of a call.
pub enum Lookup<R> {
    /// Answered from the cache.
    Hit(R),
    /// Not answered: continue with [`miss_sync`](super::miss_sync) or [`miss_async`](super::miss_async).
    Miss(Miss),
}

impl<R> fmt::Debug for Lookup<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lookup::Hit(_) => f.write_str("Hit"),
            Lookup::Miss(miss) => f.debug_tuple("Miss").field(miss).finish(),
        }
    }
}

/// A call the cache did not answer synchronously.
#[derive(Debug)]
pub struct Miss {
    pub(super) key: String,
    pub(super) target: Target,
}

#[derive(Debug)]
pub(super) enum Target {
    /// A local cache, already read: it does not hold the key.
    Local(Cache),
    /// A cache that must be read asynchronously (or through the blocking bridge).
    Remote(Cache),
    /// `<fn>_refresh`: do not read, compute and store.
    Refresh(Cache),
    /// The cache could not be resolved.
    Unavailable(Box<Error>),
}

/// The synchronous part of every call: resolves the cache (one atomic load when nothing changed
/// in the registry) and, for an in-process cache or a stack with an in-process front layer,
/// answers a hit right here: the key is rendered into a reused thread-local buffer, so a hit
/// allocates nothing but the returned clone.
#[inline]
pub fn lookup<R>(
    site: &Site<R>,
    slot: &'static LocalKey<CacheSlot>,
    mode: Mode,
    key: impl FnOnce(&mut String),
) -> Lookup<R> {
    let generation = CacheRegistry::global().generation();
    let resolved = match slot.try_with(|slot| slot.0.take()) {
        Ok(Some(resolved)) if resolved.generation == generation => resolved,
        _ => Resolved { generation, cache: site.state.resolve_logged() },
    };
    // Put back by a guard, so that the result (often a large value) is built right in the return
    // place instead of being moved around the put-back, and so that a panicking `Clone` of the
    // cached value does not lose the slot.
    let restore = RestoreSlot { slot, resolved: Some(resolved) };
    match &restore.resolved {
        Some(resolved) => probe(site, &resolved.cache, mode, key),
        None => Lookup::Miss(Miss {
            key: render_key(key),
            target: Target::Unavailable(Box::new(Error::invalid("no cache"))),
        }),
    }
}

/// Puts a thread's resolved cache back into its slot.
struct RestoreSlot {
    slot: &'static LocalKey<CacheSlot>,
    resolved: Option<Resolved>,
}

impl Drop for RestoreSlot {
    #[inline]
    fn drop(&mut self) {
        let resolved = self.resolved.take();
        let _ = self.slot.try_with(|slot| slot.0.set(resolved));
    }
}

/// The thread's key buffer, given back when dropped.
struct KeyBuf(String);

impl KeyBuf {
    #[inline]
    fn take() -> Self {
        let mut buf = KEY_BUF.try_with(Cell::take).unwrap_or_default();
        buf.clear();
        KeyBuf(buf)
    }
}

impl Drop for KeyBuf {
    #[inline]
    fn drop(&mut self) {
        let buf = core::mem::take(&mut self.0);
        let _ = KEY_BUF.try_with(|slot| slot.set(buf));
    }
}

#[inline]
fn probe<R>(
    site: &Site<R>,
    cache: &core::result::Result<Cache, Box<Error>>,
    mode: Mode,
    key: impl FnOnce(&mut String),
) -> Lookup<R> {
    let state = site.state;
    let cache = match cache {
        Ok(cache) => cache,
        Err(err) => {
            // Counted as an error by `Site::fail` when the miss is handled.
            state.misses.fetch_add(1, Relaxed);
            return Lookup::Miss(Miss { key: String::new(), target: Target::Unavailable(Box::new(copy_error(err))) });
        }
    };
    // `as_local`: an in-process store, whose miss is final. `local_l1`: a first look into the
    // in-process front layer of a stack, whose miss continues with the stack's `get`.
    let backend = cache.backend();
    let definitive = backend.as_local();
    let first_look = match mode {
        Mode::Call => definitive.map(|l| l as &dyn LocalRead).or_else(|| backend.local_l1()),
        Mode::Refresh => None,
    };
    let Some(local) = first_look else {
        let key = render_key(key);
        let target = match mode {
            Mode::Call => Target::Remote(cache.clone()),
            Mode::Refresh => Target::Refresh(cache.clone()),
        };
        return Lookup::Miss(Miss { key, target });
    };
    let mut buf = KeyBuf::take();
    key(&mut buf.0);
    // The hit is built in the return place (the buffer goes back when `buf` drops).
    match local.get_value(&buf.0) {
        Some(value) => match (site.policy.load)(cache, &buf.0, &value) {
            Some(hit) => {
                state.hits.add(1);
                Lookup::Hit(hit)
            }
            None => {
                // Counted here when this miss is final; a stack's read meets the same value
                // again and counts it then (one failure per call).
                if definitive.is_some() {
                    state.errors.fetch_add(1, Relaxed);
                }
                local_miss(state, definitive.is_some(), &buf.0, cache)
            }
        },
        None => local_miss(state, definitive.is_some(), &buf.0, cache),
    }
}

/// A key the in-process store (or the in-process front layer of a stack) does not hold.
#[cold]
fn local_miss<R>(state: &CachedFn, definitive: bool, key: &str, cache: &Cache) -> Lookup<R> {
    if definitive {
        state.misses.fetch_add(1, Relaxed);
        Lookup::Miss(Miss { key: key.to_owned(), target: Target::Local(cache.clone()) })
    } else {
        // Not in the front layer: the stack's own read decides (and is counted then).
        Lookup::Miss(Miss { key: key.to_owned(), target: Target::Remote(cache.clone()) })
    }
}

thread_local! {
    /// A reusable buffer for rendering keys on the hit path, so a hit allocates nothing.
    static KEY_BUF: Cell<String> = const { Cell::new(String::new()) };
}
