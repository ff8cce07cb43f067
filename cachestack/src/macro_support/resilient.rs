//! `#[cached]` functions with resilience options (`stale_if_error`, `stale_while_revalidate`,
//! `refresh_ahead`, `timeout`, `hard_timeout`, `jitter`, `lock_timeout`): their calls go through
//! the resilience engine ([`crate::resilience`]) with the cache's [`Call`], instead of the typed
//! front and [`miss_sync`](super::miss_sync) / [`miss_async`](super::miss_async).
//!
//! The caller runs its own body on its own task or thread whenever it waits for it (a miss, a
//! failure answered with a stale value, a `lock_timeout` takeover, an asynchronous hard timeout),
//! so the body may borrow its arguments. What goes on after the caller returned (a refresh for
//! `stale_while_revalidate` or `refresh_ahead`, a body finishing after the soft `timeout`, and a
//! synchronous body past its `hard_timeout`) runs an owned computation: the generated code clones
//! the arguments into it (the macro requires owned arguments for those options).
//!
//! Values are stored with their fresh deadline (the engine's stamped form, which
//! [`Cache::get_or_compute`](crate::Cache::get_or_compute) reads too), so these functions do not
//! use the function's typed partition of a memory cache: a hit decodes the stamped entry.

use std::fmt;
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use super::lookup::{resolved_cache, Mode};
use super::state::{CacheSlot, CachedFn};
use super::{Cache, LocalKey, Value};
use crate::error::Result;
use crate::expiry::Deadline;
use crate::resilience::check_lock;
use crate::resilience::{
    on_blocking_pool, read, read_blocking, runtime_failure, Answer, Call, Decision, Failure, Hooks, Stamped,
};
use crate::{CallStatus, ComputeOptions, LockMode, RefreshAhead, Timeout};

/// The resilience options of one `#[cached]` function, as its attribute gives them (checked by
/// the macro; the TTL comes with each call, as it may be an expression).
#[derive(Debug, Clone, Copy, Default)]
pub struct Resilience {
    /// `stale_if_error`.
    pub stale_if_error: Option<Duration>,
    /// `stale_throttle`.
    pub stale_throttle: Option<Duration>,
    /// `stale_while_revalidate`.
    pub stale_while_revalidate: Option<Duration>,
    /// `refresh_ahead`.
    pub refresh_ahead: Option<RefreshAhead>,
    /// `timeout`.
    pub timeout: Option<Duration>,
    /// `hard_timeout`.
    pub hard_timeout: Option<Duration>,
    /// `jitter`, as a fraction.
    pub jitter: Option<f64>,
    /// `lock_timeout`.
    pub lock_timeout: Option<Duration>,
    /// `lock = "distributed"`.
    pub distributed: bool,
    /// `lock_lease`.
    pub lock_lease: Option<Duration>,
}

impl Resilience {
    /// The engine's options for a call with `ttl`.
    fn options(&self, ttl: Option<Duration>) -> Result<ComputeOptions> {
        let mut builder = ComputeOptions::builder();
        type Set = fn(crate::ComputeOptionsBuilder, Duration) -> crate::ComputeOptionsBuilder;
        let durations: [(Option<Duration>, Set); 7] = [
            (ttl, crate::ComputeOptionsBuilder::ttl),
            (self.stale_if_error, crate::ComputeOptionsBuilder::stale_if_error),
            (self.stale_throttle, crate::ComputeOptionsBuilder::stale_throttle),
            (self.stale_while_revalidate, crate::ComputeOptionsBuilder::stale_while_revalidate),
            (self.timeout, crate::ComputeOptionsBuilder::timeout),
            (self.hard_timeout, crate::ComputeOptionsBuilder::hard_timeout),
            (self.lock_timeout, crate::ComputeOptionsBuilder::lock_timeout),
        ];
        for (value, set) in durations {
            if let Some(value) = value {
                builder = set(builder, value);
            }
        }
        if let Some(refresh) = self.refresh_ahead {
            builder = builder.refresh_ahead(refresh);
        }
        if let Some(jitter) = self.jitter {
            builder = builder.jitter(jitter);
        }
        if self.distributed {
            builder = builder.lock(LockMode::Distributed);
        }
        if let Some(lease) = self.lock_lease {
            builder = builder.lock_lease(lease);
        }
        builder.build()
    }
}

/// How a return value is stored with its fresh deadline and read back, chosen by the return type
/// like [`Policy`](super::Policy): `Result<T, E>` stores `Ok(T)` only, `Option<T>` stores `Some`
/// and (unless `cache_none = false`) `None`, anything else is stored as is.
pub struct Stamping<R> {
    pub(super) encode: fn(&R, Option<Deadline>) -> Option<Value>,
    pub(super) decode: Unstamp<R>,
}

/// Reads a stored value back with its fresh deadline.
type Unstamp<R> = fn(&Cache, &str, &Value) -> Option<(R, Option<Deadline>)>;

impl<R> Clone for Stamping<R> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<R> Copy for Stamping<R> {}

impl<R> fmt::Debug for Stamping<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Stamping")
    }
}

/// A whole value, stamped.
pub(super) fn stamp<V: crate::Cacheable>(value: &V, fresh_until: Option<Deadline>) -> Option<Value> {
    Some(Stamped::encode(value, fresh_until))
}

/// A whole value, read back.
pub(super) fn unstamp<V: crate::Cacheable>(cache: &Cache, key: &str, value: &Value) -> Option<(V, Option<Deadline>)> {
    Stamped::decode(cache, key, value)
}

/// Everything a generated wrapper with resilience options knows about itself.
pub struct Resilient<R> {
    state: &'static CachedFn,
    ttl: Option<Duration>,
    options: Resilience,
    stamping: Stamping<R>,
    /// True for a result that is a failure (an `Err`): fail-safe answers it with a stale value.
    failed: fn(&R) -> bool,
    /// `condition`: whether a value is stored.
    condition: fn(&R) -> bool,
    /// `hard_timeout`: the function's `Err(Timeout.into())`.
    on_timeout: Option<fn(Timeout) -> R>,
    /// `tags = [...]`, rendered for this call.
    tags: Vec<String>,
}

impl<R> fmt::Debug for Resilient<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resilient").field("state", &self.state).field("ttl", &self.ttl).finish()
    }
}

impl<R> Resilient<R> {
    /// A call site.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        state: &'static CachedFn,
        ttl: Option<Duration>,
        options: Resilience,
        stamping: Stamping<R>,
        failed: fn(&R) -> bool,
        condition: fn(&R) -> bool,
        on_timeout: Option<fn(Timeout) -> R>,
    ) -> Self {
        Resilient { state, ttl, options, stamping, failed, condition, on_timeout, tags: Vec::new() }
    }

    /// This call site with `tags` (rendered from the call's arguments): the values it stores
    /// carry them (see [`crate::tags`]).
    pub fn tagged(mut self, tags: Vec<String>) -> Self {
        self.tags = tags;
        self
    }
}

/// The engine's view of a function's values.
struct FnHooks<R> {
    cache: Cache,
    stamping: Stamping<R>,
    condition: fn(&R) -> bool,
}

impl<R: Send + 'static> Hooks<R> for FnHooks<R> {
    fn encode(&self, value: &R, fresh_until: Option<Deadline>) -> Option<Value> {
        if (self.condition)(value) {
            (self.stamping.encode)(value, fresh_until)
        } else {
            None
        }
    }

    fn decode(&self, key: &str, value: &Value) -> Option<(R, Option<Deadline>)> {
        (self.stamping.decode)(&self.cache, key, value)
    }
}

/// How a call starts.
// A transient value of each call, matched at once: boxing the large variant would only add an
// allocation per call.
#[allow(clippy::large_enum_variant)]
enum Start<R> {
    /// Call the body uncached: switched off or bypassed, or the cache or the options could not
    /// be had (counted and logged).
    Uncached,
    /// Through the engine. `read`: look the key up first (not for `<fn>_refresh` and under a
    /// writes-only switch); `store`: a miss computes and stores (not under a reads-only switch).
    Engine { call: Call<FnHooks<R>>, read: bool, store: bool },
}

/// A result as the engine sees it: a failure when the function's policy says so.
fn classify<R>(result: R, failed: fn(&R) -> bool) -> std::result::Result<R, Failure<R>> {
    if failed(&result) {
        Err(Failure::Err(result))
    } else {
        Ok(result)
    }
}

impl<R: Send + 'static> Resilient<R> {
    fn start(&self, slot: &'static LocalKey<CacheSlot>, mode: Mode, key: String) -> Start<R> {
        let (cache, commands) = resolved_cache(self.state, slot, &key);
        let Some(cache) = cache else {
            self.state.errors.fetch_add(1, Relaxed);
            return Start::Uncached;
        };
        if !commands.reads() && !commands.writes() {
            return Start::Uncached;
        }
        let options = match self.options.options(self.ttl).and_then(|options| match self.tags.is_empty() {
            true => Ok(options),
            false => options.with_tags(self.tags.clone()),
        }) {
            Ok(options) => options,
            Err(err) => {
                self.state.record_error("options", &key, &err);
                return Start::Uncached;
            }
        };
        let call = Call {
            state: cache.compute.clone(),
            backend: cache.backend().clone(),
            tags: cache.tags.clone(),
            hooks: Arc::new(FnHooks { cache, stamping: self.stamping, condition: self.condition }),
            key: Arc::from(key),
            options,
        };
        Start::Engine { call, read: mode == Mode::Call && commands.reads(), store: commands.writes() }
    }

    /// The caller's result and status, counted in the function's stats.
    fn finish(&self, answer: Answer<R, R>) -> (R, CallStatus) {
        let (value, status) = match answer {
            Ok(served) => served,
            Err(Failure::Err(failed)) => (failed, CallStatus::Miss),
            Err(Failure::Timeout(timeout)) => match self.on_timeout {
                Some(on_timeout) => (on_timeout(timeout), CallStatus::Miss),
                // Only a function with `hard_timeout` times out, and the macro gives those
                // `on_timeout`.
                None => std::panic::resume_unwind(Box::new(timeout.to_string())),
            },
            Err(Failure::Panic(payload)) => std::panic::resume_unwind(payload),
        };
        let state = self.state;
        match status {
            CallStatus::Hit => state.hits.add(1),
            CallStatus::Stale => {
                state.stale.fetch_add(1, Relaxed);
            }
            CallStatus::Miss => {
                state.misses.fetch_add(1, Relaxed);
            }
            CallStatus::Waited => {
                state.misses.fetch_add(1, Relaxed);
                state.waits.fetch_add(1, Relaxed);
            }
        }
        (value, status)
    }

    /// False (the error counted in the function's `errors` and logged) when the function asks
    /// for the distributed lock and its cache's store has none: the call then runs the body
    /// without caching its result, as for every cache error of these functions.
    fn lock_available(&self, call: &Call<FnHooks<R>>) -> bool {
        match check_lock(&*call.backend, &call.options) {
            Ok(()) => true,
            Err(err) => {
                self.state.record_error("lock", &call.key, &err);
                false
            }
        }
    }

    fn uncached(&self, result: R) -> (R, CallStatus) {
        self.finish(Ok((result, CallStatus::Miss)))
    }
}

/// Starts a background refresh with `owned` unless one runs already.
fn refresh<R, O, OF>(call: &Call<FnHooks<R>>, seen: u64, owned: Option<O>)
where
    R: Send + 'static,
    O: FnOnce() -> OF + Send + 'static,
    OF: Future<Output = std::result::Result<R, Failure<R>>> + Send + 'static,
{
    let Some(owned) = owned else { return };
    if let Some(leader) = call.state.try_refresh(&call.key) {
        call.refresh(leader, seen, owned);
    }
}

/// An asynchronous call of a function with resilience options. `body` is the caller's own
/// computation; `owned` (given when the options need it) the same computation on clones of the
/// arguments, for what runs after the caller returned.
pub async fn resilient_async<R, B, O, OF>(
    site: &Resilient<R>,
    slot: &'static LocalKey<CacheSlot>,
    mode: Mode,
    key: String,
    body: B,
    owned: Option<O>,
) -> (R, CallStatus)
where
    R: Send + 'static,
    B: Future<Output = R>,
    O: FnOnce() -> OF + Send + 'static,
    OF: Future<Output = R> + Send + 'static,
{
    let (call, read_first, store) = match site.start(slot, mode, key) {
        Start::Uncached => return site.uncached(body.await),
        Start::Engine { call, read, store } => (call, read, store),
    };
    let failed = site.failed;
    let owned = owned.map(|owned| move || async move { classify(owned().await, failed) });
    let seen = call.state.flights_ended();
    let decision = match read_first {
        true => {
            let found = read(&call.backend, &call.tags, &call.key).await;
            call.state.decide(&*call.hooks, &call.key, &call.options, found)
        }
        false => Decision::Compute { fallback: None },
    };
    let answer = match decision {
        Decision::Answer { value, status, refresh: wanted } => {
            // (Not under a reads-only switch: a refresh writes.)
            if wanted && store {
                refresh(&call, seen, owned);
            }
            Ok(call.state.answer(value, status))
        }
        Decision::Compute { .. } if !store => return site.uncached(body.await),
        Decision::Compute { .. } if !site.lock_available(&call) => return site.uncached(body.await),
        Decision::Compute { fallback } => match owned {
            // The soft timeout: the body goes on after the caller got the stale value.
            Some(owned) if call.options.timeout().is_some() && fallback.is_some() => {
                call.compute(seen, fallback, owned).await
            }
            _ => call.compute_here(seen, fallback, async move { classify(body.await, failed) }).await,
        },
    };
    site.finish(answer)
}

/// A synchronous call of a function with resilience options (see [`resilient_async`]).
pub fn resilient_sync<R, B, O>(
    site: &Resilient<R>,
    slot: &'static LocalKey<CacheSlot>,
    mode: Mode,
    key: String,
    body: B,
    owned: Option<O>,
) -> (R, CallStatus)
where
    R: Send + 'static,
    B: FnOnce() -> R,
    O: FnOnce() -> R + Send + 'static,
{
    let (call, read_first, store) = match site.start(slot, mode, key) {
        Start::Uncached => return site.uncached(body()),
        Start::Engine { call, read, store } => (call, read, store),
    };
    let failed = site.failed;
    let owned = owned.map(|owned| on_blocking_pool(move || classify(owned(), failed)));
    let seen = call.state.flights_ended();
    let decision = match read_first {
        true => {
            let found = read_blocking(&call.backend, &call.tags, &call.key);
            call.state.decide(&*call.hooks, &call.key, &call.options, found)
        }
        false => Decision::Compute { fallback: None },
    };
    let answer = match decision {
        Decision::Answer { value, status, refresh: wanted } => {
            // (Not under a reads-only switch: a refresh writes.)
            if wanted && store {
                refresh(&call, seen, owned);
            }
            Ok(call.state.answer(value, status))
        }
        Decision::Compute { .. } if !store => return site.uncached(body()),
        Decision::Compute { .. } if !site.lock_available(&call) => return site.uncached(body()),
        Decision::Compute { fallback } => match owned {
            // A timeout the caller stops waiting at: the body runs on another thread.
            Some(owned)
                if call.options.hard_timeout().is_some()
                    || (call.options.timeout().is_some() && fallback.is_some()) =>
            {
                crate::rt::block_on(call.compute(seen, fallback, owned)).unwrap_or_else(|err| Err(runtime_failure(err)))
            }
            _ => call.compute_blocking_here(seen, fallback, || classify(body(), failed)),
        },
    };
    site.finish(answer)
}

/// What `hard_timeout` needs of the return type: a `Result` whose error receives the timeout.
#[diagnostic::on_unimplemented(
    message = "`hard_timeout` needs a function returning `Result<_, E>` with `E: From<cachestack::Timeout>`, and this one returns `{Self}`",
    label = "a hard timeout is returned as `Err(E::from(cachestack::Timeout))`",
    note = "return a `Result`, or use `timeout` (the soft timeout, which answers with a stale value) instead"
)]
pub trait HardTimeoutApplies: Sized {
    /// The error type.
    type Error;
    /// `Err(error)`.
    fn __cachestack_err(error: Self::Error) -> Self;
}

impl<T, E> HardTimeoutApplies for core::result::Result<T, E> {
    type Error = E;
    fn __cachestack_err(error: E) -> Self {
        Err(error)
    }
}

/// Error types a hard timeout can be returned in.
#[diagnostic::on_unimplemented(
    message = "`hard_timeout` needs the error type `{Self}` to implement `From<cachestack::Timeout>`",
    label = "a hard timeout is returned as `Err({Self}::from(cachestack::Timeout))`",
    note = "implement `From<cachestack::Timeout>` for `{Self}` (`cachestack::Error` and `Box<dyn Error>` have it)"
)]
pub trait FromTimeout {
    /// Converts.
    fn from_timeout(timeout: Timeout) -> Self;
}

impl<E: From<Timeout>> FromTimeout for E {
    fn from_timeout(timeout: Timeout) -> Self {
        E::from(timeout)
    }
}

/// The function's result for a call that passed its hard timeout (and the compile-time check
/// that `hard_timeout` applies).
pub fn timed_out<R>(timeout: Timeout) -> R
where
    R: HardTimeoutApplies,
    R::Error: FromTimeout,
{
    R::__cachestack_err(R::Error::from_timeout(timeout))
}

/// What an argument must be for a computation that outlives its call.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is an argument of a #[cached] function whose body runs after the caller returned (background refresh or timeout): it must be `Clone + Send + 'static`",
    label = "cloned into the background computation"
)]
pub trait OwnedArg: Clone + Send + 'static {}
impl<T: Clone + Send + 'static> OwnedArg for T {}

/// An argument cloned into the background computation (and the compile-time check that it can
/// be).
pub fn clone_owned<T: OwnedArg>(arg: &T) -> T {
    arg.clone()
}

/// A non-capturing `condition` as a function pointer (the engine keeps it past the call).
pub fn condition_fn<R>(condition: fn(&R) -> bool) -> fn(&R) -> bool {
    condition
}
