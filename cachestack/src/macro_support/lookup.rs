//! The synchronous part of every call: resolving the cache through the thread's slot and
//! answering a hit from an in-process cache (or the in-process front layer of a stack).

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::front::{front_tag, l1_entry, FastKeyBuf, FrontHandle, FrontTag};
use super::keys::render_key;
use super::policy::{Condition, Policy};
use super::state::{copy_error, CacheSlot, CachedFn, Resolved};
use super::{Cache, CacheRegistry, LocalKey, Value};
use crate::error::Error;
use crate::store::LocalRead;
use crate::switches::{bypassed, Commands};

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
    /// Where the result goes in the function's typed partition, when it has one.
    pub(super) fill: Option<Fill>,
}

/// A miss of a function's typed partition: what its result is stored under, and the tag taken
/// before the cache was read (so that a delete meanwhile leaves the stored entry stale).
pub(super) struct Fill {
    pub(super) front: FrontHandle,
    pub(super) key: Box<[u8]>,
    pub(super) tag: FrontTag,
    /// The partition holds typed copies of a stack's in-memory L1: the result is written
    /// through the stack, then copied from L1 ([`mirror_l1`]).
    pub(super) mirror: bool,
}

impl fmt::Debug for Fill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fill").field("key", &self.key).field("tag", &self.tag).field("mirror", &self.mirror).finish()
    }
}

/// After a call of a stack's function read the stack or wrote through it: copies L1's entry of
/// `key` (as the stack left it: its value and its deadline, which never exceeds the lower
/// layers') into the function's typed partition, tagged with the call's start. Nothing when L1
/// does not hold the key (the stack did not backfill it, or a delete removed it); a delete or
/// clear since the call started leaves the copy stale.
pub(super) fn mirror_l1<R>(site: &Site<R>, cache: &Cache, key: &str, fill: Option<&Fill>) {
    let (Some(fill), Some(ops)) = (fill, site.policy.front) else { return };
    if !fill.mirror {
        return;
    }
    if let Some(entry) = l1_entry(cache, key) {
        (ops.put)(&fill.front, &fill.key, &entry.value, entry.expires, fill.tag);
    }
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
    /// Switched off (or bypassed): call the function uncached.
    Off,
    /// Reads only: read the remote cache, compute without storing.
    ReadOnly(Cache),
}

/// The synchronous part of every call: resolves the cache (one atomic load when nothing changed
/// in the registry: the cache a function names, else the one its keys' literal start routes to,
/// else the default; per call only when a route reaches past that literal start) and answers a
/// hit right here. A memory cache, and a stack whose L1 is one, answers from the function's
/// typed partition, found by the encoded arguments (`fast`), with no key text; a function whose
/// key parts have no encoding (and a stack whose L1 is in process but not a memory cache)
/// renders the key into a reused thread-local buffer and reads the text-keyed entries, so a hit
/// allocates nothing but the returned clone either way.
#[inline]
pub fn lookup<R>(
    site: &Site<R>,
    slot: &'static LocalKey<CacheSlot>,
    mode: Mode,
    key: impl FnOnce(&mut String),
    fast: impl FnOnce(&mut FastKeyBuf) -> bool,
) -> Lookup<R> {
    let generation = CacheRegistry::global().generation();
    let bypass = bypassed();
    let mut args = FastKeyBuf::new();
    let encoded = fast(&mut args);
    // The hit: the thread's resolution borrowed in place (nothing moved), one probe of the
    // function's typed partition. (A switch changed moves the generation; `reads` is the
    // cache's switch as resolved.)
    if let (true, Mode::Call, Some(ops), false) = (encoded, mode, site.policy.front, bypass) {
        let hit = slot.try_with(|slot| {
            let resolved = slot.0.try_borrow().ok()?;
            match &*resolved {
                Some(Resolved { generation: seen, front: Some(front), commands, .. })
                    if *seen == generation && commands.reads() =>
                {
                    (ops.get)(front, args.as_bytes())
                }
                _ => None,
            }
        });
        if let Ok(Some(hit)) = hit {
            site.state.hits.add(1);
            crate::observe::calls::front_hit(site.state);
            return Lookup::Hit(hit);
        }
    }
    let taken = slot.try_with(|slot| slot.0.try_borrow_mut().ok().and_then(|mut resolved| resolved.take()));
    let resolved = match taken {
        Ok(Some(resolved)) if resolved.generation == generation => resolved,
        _ => resolve(site, generation, encoded),
    };
    // Put back by a guard, so that the result (often a large value) is built right in the return
    // place instead of being moved around the put-back, and so that a panicking `Clone` of the
    // cached value does not lose the slot.
    let restore = RestoreSlot { slot, resolved: Some(resolved) };
    let Some(resolved) = &restore.resolved else {
        return Lookup::Miss(Miss {
            key: render_key(key),
            target: Target::Unavailable(Box::new(Error::invalid("no cache"))),
            fill: None,
        });
    };
    if resolved.per_key {
        return per_key(site, generation, mode, key, &args, encoded, bypass);
    }
    dispatch(site, resolved, mode, key, &args, encoded, bypass)
}

/// Applies the switches (or the bypass), then answers from the resolved cache.
#[inline]
fn dispatch<R>(
    site: &Site<R>,
    resolved: &Resolved,
    mode: Mode,
    key: impl FnOnce(&mut String),
    args: &FastKeyBuf,
    encoded: bool,
    bypass: bool,
) -> Lookup<R> {
    let commands = if bypass { Commands::NONE } else { resolved.commands };
    if commands != Commands::ALL && resolved.cache.is_ok() {
        return switched(site, resolved, mode, key, args, encoded, commands);
    }
    answer(site, resolved, mode, key, args, encoded)
}

/// A call of a function whose cache depends on its arguments (a route longer than the literal
/// start of its keys): renders the key and routes it, then reads by key text (the typed
/// partition is not used, as it belongs to one cache).
#[cold]
#[inline(never)]
fn per_key<R>(
    site: &Site<R>,
    generation: u64,
    mode: Mode,
    key: impl FnOnce(&mut String),
    args: &FastKeyBuf,
    encoded: bool,
    bypass: bool,
) -> Lookup<R> {
    let key = render_key(key);
    let registry = CacheRegistry::global();
    let name = registry.route_for(&key);
    let resolved = Resolved {
        generation,
        cache: site.state.resolve_logged(name.as_deref()),
        front: None,
        commands: registry.commands(name.as_deref()),
        per_key: false,
    };
    dispatch(site, &resolved, mode, |buf| buf.push_str(&key), args, encoded, bypass)
}

/// A call under a switch that does not allow every command (or inside a bypass).
#[cold]
#[inline(never)]
fn switched<R>(
    site: &Site<R>,
    resolved: &Resolved,
    mode: Mode,
    key: impl FnOnce(&mut String),
    args: &FastKeyBuf,
    encoded: bool,
    commands: Commands,
) -> Lookup<R> {
    let off = || Lookup::Miss(Miss { key: String::new(), target: Target::Off, fill: None });
    match (commands.reads(), commands.writes()) {
        // Writes only: compute and store without reading, as `<fn>_refresh` does.
        (false, true) => answer(site, resolved, Mode::Refresh, key, args, encoded),
        // Reads only: a normal lookup, whose miss computes without storing.
        (true, false) if mode == Mode::Call => match answer(site, resolved, mode, key, args, encoded) {
            Lookup::Miss(Miss { key, target: Target::Remote(cache), .. }) => {
                Lookup::Miss(Miss { key, target: Target::ReadOnly(cache), fill: None })
            }
            Lookup::Miss(_) => off(),
            hit => hit,
        },
        _ => off(),
    }
}

/// Answers from the resolved cache (the typed partition, the in-process store) or says what the
/// miss must do.
#[inline]
fn answer<R>(
    site: &Site<R>,
    resolved: &Resolved,
    mode: Mode,
    key: impl FnOnce(&mut String),
    args: &FastKeyBuf,
    encoded: bool,
) -> Lookup<R> {
    match (&resolved.front, site.policy.front) {
        (Some(front), Some(ops)) if encoded => {
            // Just resolved (a new thread, or the registry changed): look once more.
            if mode == Mode::Call
                && let Some(hit) = (ops.get)(front, args.as_bytes())
            {
                site.state.hits.add(1);
                crate::observe::calls::front_hit(site.state);
                return Lookup::Hit(hit);
            }
            front_miss(site, &resolved.cache, mode, key, front, args)
        }
        _ => probe(site, &resolved.cache, mode, key),
    }
}

/// Resolves the function's cache and, for a memory cache, its typed partition.
fn resolve<R>(site: &Site<R>, generation: u64, encoded: bool) -> Resolved {
    let mut resolved = resolve_cache(site.state, generation);
    if let (Ok(cache), Some(ops), true) = (&resolved.cache, site.policy.front, encoded) {
        resolved.front = (ops.partition)(cache, site.state as *const CachedFn as usize, site.ttl.is_some());
    }
    resolved
}

/// Resolves the function's cache, without a typed partition; `per_key` when its cache depends
/// on its arguments (see [`CachedFn::fixed_route`]).
fn resolve_cache(state: &'static CachedFn, generation: u64) -> Resolved {
    let Some(name) = state.fixed_route() else {
        let unused = Box::new(Error::invalid("the cache is resolved per key"));
        return Resolved { generation, cache: Err(unused), front: None, commands: Commands::ALL, per_key: true };
    };
    let cache = state.resolve_logged(name.as_deref());
    let commands = CacheRegistry::global().commands(name.as_deref());
    Resolved { generation, cache, front: None, commands, per_key: false }
}

/// The cache of the call with the rendered `key` and the commands its switches allow (none
/// inside a bypass), as this thread resolved it (resolved again when the registry changed; a
/// function whose cache depends on its arguments routes `key` on each call): how a call that
/// does not use the typed partition starts (functions with resilience options). `None`: the
/// cache could not be resolved (logged).
pub(super) fn resolved_cache(
    state: &'static CachedFn,
    slot: &'static LocalKey<CacheSlot>,
    key: &str,
) -> (Option<Cache>, Commands) {
    let generation = CacheRegistry::global().generation();
    let from_slot = slot.try_with(|slot| {
        let mut resolved = slot.0.try_borrow_mut().ok()?;
        let resolved = match &mut *resolved {
            Some(resolved) if resolved.generation == generation => resolved,
            other => other.insert(resolve_cache(state, generation)),
        };
        Some((resolved.cache.as_ref().ok().cloned(), resolved.commands, resolved.per_key))
    });
    let (cache, commands, per_key) = from_slot.ok().flatten().unwrap_or_else(|| {
        let resolved = resolve_cache(state, generation);
        (resolved.cache.ok(), resolved.commands, resolved.per_key)
    });
    let (cache, commands) = if per_key {
        let registry = CacheRegistry::global();
        let name = registry.route_for(key);
        (state.resolve_logged(name.as_deref()).ok(), registry.commands(name.as_deref()))
    } else {
        (cache, commands)
    };
    (cache, if bypassed() { Commands::NONE } else { commands })
}

/// A call that its typed partition did not answer (or `<fn>_refresh`): renders the key, takes
/// the fill's tag, then reads the text-keyed entries as any call would (they hold what was
/// stored by key, e.g. with `Cache::set`).
#[cold]
#[inline(never)]
fn front_miss<R>(
    site: &Site<R>,
    cache: &core::result::Result<Cache, Box<Error>>,
    mode: Mode,
    key: impl FnOnce(&mut String),
    front: &FrontHandle,
    args: &FastKeyBuf,
) -> Lookup<R> {
    let key = render_key(key);
    let Some((tag, mirror)) = cache.as_ref().ok().and_then(|cache| front_tag(cache, &key)) else {
        return probe(site, cache, mode, |buf| buf.push_str(&key));
    };
    let fill = Fill { front: front.clone(), key: args.as_bytes().into(), tag, mirror };
    match probe(site, cache, mode, |buf| buf.push_str(&key)) {
        Lookup::Miss(miss) => Lookup::Miss(Miss { fill: Some(fill), ..miss }),
        hit => {
            // A stack's L1 held the key by text (backfilled, or written by another handle): the
            // next call hits the typed copy.
            if let Ok(cache) = cache {
                mirror_l1(site, cache, &key, Some(&fill));
            }
            hit
        }
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
        let _ = self.slot.try_with(|slot| {
            // (Borrowed only by a call of this function made from inside a value's `Clone`:
            // that call resolves again next time.)
            if let Ok(mut slot) = slot.0.try_borrow_mut() {
                *slot = resolved;
            }
        });
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
            return Lookup::Miss(Miss {
                key: String::new(),
                target: Target::Unavailable(Box::new(copy_error(err))),
                fill: None,
            });
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
        return Lookup::Miss(Miss { key, target, fill: None });
    };
    let mut buf = KeyBuf::take();
    key(&mut buf.0);
    // The hit is built in the return place (the buffer goes back when `buf` drops).
    match local.get_value(&buf.0) {
        Some(value) if cache.tags.known(&value) != Some(true) => {
            tagged_miss(state, definitive.is_some(), &buf.0, cache, &value)
        }
        Some(value) => match (site.policy.load)(cache, &buf.0, &value) {
            Some(hit) => {
                state.hits.add(1);
                crate::observe::calls::local_hit(state, local);
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

/// A tagged value of the in-process store (or front layer) that cannot be served as it is: not
/// current (a miss of that store), or its tags' times must be read first (the async read decides).
#[cold]
fn tagged_miss<R>(state: &CachedFn, definitive: bool, key: &str, cache: &Cache, value: &Value) -> Lookup<R> {
    match cache.tags.known(value) {
        Some(false) => local_miss(state, definitive, key, cache),
        _ => Lookup::Miss(Miss { key: key.to_owned(), target: Target::Remote(cache.clone()), fill: None }),
    }
}

/// A key the in-process store (or the in-process front layer of a stack) does not hold.
#[cold]
fn local_miss<R>(state: &CachedFn, definitive: bool, key: &str, cache: &Cache) -> Lookup<R> {
    if definitive {
        state.misses.fetch_add(1, Relaxed);
        Lookup::Miss(Miss { key: key.to_owned(), target: Target::Local(cache.clone()), fill: None })
    } else {
        // Not in the front layer: the stack's own read decides (and is counted then).
        Lookup::Miss(Miss { key: key.to_owned(), target: Target::Remote(cache.clone()), fill: None })
    }
}

thread_local! {
    /// A reusable buffer for rendering keys on the hit path, so a hit allocates nothing.
    static KEY_BUF: Cell<String> = const { Cell::new(String::new()) };
}
