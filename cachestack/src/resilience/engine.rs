//! The engine behind [`Cache::get_or_compute`](crate::Cache::get_or_compute): reads a key, decides
//! from the value's fresh deadline whether to answer, answer stale, refresh in the background or
//! compute, and runs computations on cachestack's runtime under single flight.
//!
//! It knows nothing of [`Cache`](crate::Cache) or of the macros: a caller gives it a store, a key,
//! [`ComputeOptions`], [`Hooks`] that turn a computed value into a stored [`Value`] carrying its
//! fresh deadline (and back), and the computation. The `Cache` API and the `#[cached]` runtime are
//! two such callers.
//!
//! Every computation runs as a task on cachestack's runtime ([`crate::rt`]) that owns the flight
//! (a [shared leader](crate::singleflight::SingleFlight::join_shared)): it stores the value and
//! ends the flight whether or not its caller still waits, so a caller that stops waiting (a soft
//! or hard timeout, a dropped future) leaves the computation to finish in the background. A
//! failure nobody waits for is counted and logged.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::distributed::Lease;
use super::options::{ComputeOptions, LockMode};
use super::state::{bump, freshness, ComputeState, Decision, Freshness};
use super::task::{Bounds, Running, Waiting};
use super::{CallStatus, Timeout};
use crate::cache::CacheTags;
use crate::error::Result;
use crate::expiry::Deadline;
use crate::singleflight::{Join, Leader, Outcome};
use crate::store::{Backend, Entry};
use crate::value::Value;

/// How the engine stores a computed value and reads it back: the stored form carries the
/// value's fresh deadline, so that freshness travels with the value through every store
/// (user-written ones included) while the store keeps the entry until the end of the stale
/// window.
pub(crate) trait Hooks<T>: Send + Sync + 'static {
    /// The stored form of `value`, fresh until `fresh_until` (`None`: always fresh); `None`:
    /// do not store this value.
    fn encode(&self, value: &T, fresh_until: Option<Deadline>) -> Option<Value>;
    /// A stored value with its fresh deadline; `None` when it cannot be read as `T` (the hook
    /// counts and logs that; the engine treats it as a miss).
    fn decode(&self, key: &str, value: &Value) -> Option<(T, Option<Deadline>)>;
    /// How long `value` is fresh when the value itself says so (an HTTP response's `max-age`);
    /// `None`: the options' TTL.
    fn ttl_of(&self, _value: &T) -> Option<Duration> {
        None
    }
}

/// Why a computation gave no value.
pub(crate) enum Failure<E> {
    /// It returned this error.
    Err(E),
    /// It panicked with this payload.
    Panic(Box<dyn Any + Send>),
    /// The caller's hard timeout passed first.
    Timeout(Timeout),
}

impl<E> Failure<E> {
    pub(super) fn describe(&self) -> &'static str {
        match self {
            Failure::Err(_) => "returned an error",
            Failure::Panic(_) => "panicked",
            Failure::Timeout(_) => "timed out",
        }
    }
}

/// What a call's result is: the value and how it was served, or the failure.
pub(crate) type Answer<T, E> = std::result::Result<(T, CallStatus), Failure<E>>;

/// Reads `key`: from the in-process front of the store without awaiting when it has the entry
/// (and, for a tagged entry, its tags' times are known in process), else on cachestack's runtime
/// (so that the store's I/O and its layers' timers never run on the caller's runtime; see
/// [`crate::rt::io`]). A tagged entry is served only when current (see [`crate::tags`]): a
/// stale value of an invalidated tag never reaches the fail-safe fallback.
pub(crate) async fn read(backend: &Arc<dyn Backend>, tags: &Arc<CacheTags>, key: &str) -> Result<Option<Entry>> {
    if let Some(read) = read_local(backend, tags, key) {
        return Ok(read);
    }
    let backend = backend.clone();
    let tags = tags.clone();
    let key = key.to_owned();
    crate::rt::io(backend.name().to_owned().as_str(), async move { tags.read(&*backend, &key).await }).await
}

/// The read a call sees synchronously (an in-process store or front), or `None` when it must
/// await the store.
pub(crate) fn read_local(backend: &Arc<dyn Backend>, tags: &CacheTags, key: &str) -> Option<Option<Entry>> {
    if let Some(local) = backend.as_local() {
        return tags.known_entry(local.get_entry(key));
    }
    let entry = backend.local_l1().and_then(|front| front.get_entry(key))?;
    // An entry of the front that is not current: the stack's read goes on below it.
    tags.known_entry(Some(entry)).filter(Option::is_some)
}

/// Everything a computation needs besides its body, owned, so it can move into a task.
pub(crate) struct Call<H> {
    pub(crate) state: Arc<ComputeState>,
    pub(crate) backend: Arc<dyn Backend>,
    /// The cache's tag check (reads) and clock (the write time of tagged entries).
    pub(crate) tags: Arc<CacheTags>,
    pub(crate) hooks: Arc<H>,
    pub(crate) key: Arc<str>,
    pub(crate) options: ComputeOptions,
}

impl<H> Clone for Call<H> {
    fn clone(&self) -> Self {
        Call {
            state: self.state.clone(),
            backend: self.backend.clone(),
            tags: self.tags.clone(),
            hooks: self.hooks.clone(),
            key: self.key.clone(),
            options: self.options.clone(),
        }
    }
}

impl<H> Call<H> {
    /// Runs a whole call: reads the key, answers or computes. The future may be polled on any
    /// tokio runtime (timeouts use its timer, which must be enabled when the options have any).
    pub(crate) async fn run<T, E, F, Fut>(self, compute: F) -> Answer<T, E>
    where
        H: Hooks<T>,
        T: Send + 'static,
        E: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<T, Failure<E>>> + Send + 'static,
    {
        let seen = self.state.flights_ended();
        let read = read(&self.backend, &self.tags, &self.key).await;
        match self.state.decide(&*self.hooks, &self.key, &self.options, read) {
            Decision::Answer { value, status, refresh } => {
                if let Some(leader) = refresh.then(|| self.state.try_refresh(&self.key)).flatten() {
                    self.refresh(leader, seen, compute);
                }
                Ok(self.state.answer(value, status))
            }
            Decision::Compute { fallback } => self.compute(seen, fallback, compute).await,
        }
    }

    /// Starts the background refresh `leader` leads (from [`ComputeState::try_refresh`]).
    pub(crate) fn refresh<T, E, F, Fut>(&self, leader: Leader<'static>, seen: u64, compute: F)
    where
        H: Hooks<T>,
        T: Send + 'static,
        E: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<T, Failure<E>>> + Send + 'static,
    {
        let call = self.clone();
        let running = Running::start(&self.state);
        let refresh = async move {
            let _running = running;
            let leader = match call.state.flights_ended() == seen {
                true => leader,
                false => match call.fresh_again::<T>(leader, false).await {
                    Ok(_) => return,
                    Err(leader) => leader,
                },
            };
            bump(&call.state.counters.refreshes);
            // A failure is counted and logged by the computation (nobody waits for it).
            let _ = call.computation::<T, E, F, Fut>(Some(leader), None, None, compute).await;
        };
        match crate::rt::handle() {
            Ok(runtime) => drop(runtime.spawn(refresh)),
            Err(err) => {
                bump(&self.state.counters.background_failures);
                tracing::warn!(key = &*self.key, error = %err, "cachestack: background refresh skipped: cachestack's runtime is unavailable");
            }
        }
    }

    /// A new leader's look at the store, when a flight ended after the caller's read: the value
    /// that flight stored, if it is fresh (`in_refresh_window`: even if a hit there would refresh
    /// it), ending this leader's flight with it. Saves computing what another caller just did.
    async fn fresh_again<T>(
        &self,
        leader: Leader<'static>,
        in_refresh_window: bool,
    ) -> std::result::Result<T, Leader<'static>>
    where
        H: Hooks<T>,
    {
        let read = read(&self.backend, &self.tags, &self.key).await;
        self.fresh_in(read, leader, in_refresh_window)
    }

    /// [`Call::fresh_again`]'s decision, from what the store gave.
    pub(super) fn fresh_in<T>(
        &self,
        read: Result<Option<Entry>>,
        leader: Leader<'static>,
        in_refresh_window: bool,
    ) -> std::result::Result<T, Leader<'static>>
    where
        H: Hooks<T>,
    {
        match self.fresh_entry(read, in_refresh_window) {
            Some((value, stored)) => {
                leader.complete(|| Some(stored));
                Ok(value)
            }
            None => Err(leader),
        }
    }

    /// A fresh value in what the store gave (`in_refresh_window`: even if a hit there would
    /// refresh it), with its stored form.
    pub(super) fn fresh_entry<T>(&self, read: Result<Option<Entry>>, in_refresh_window: bool) -> Option<(T, Value)>
    where
        H: Hooks<T>,
    {
        let entry = match read {
            Ok(entry) => entry?,
            Err(err) => {
                self.state.record_cache_error("read", &self.key, &err);
                return None;
            }
        };
        let (value, fresh_until) = self.hooks.decode(&self.key, &entry.value)?;
        match freshness(&self.options, fresh_until, self.state.clock.now()) {
            Freshness::Fresh { refresh } if in_refresh_window || !refresh => Some((value, entry.value)),
            _ => None,
        }
    }

    /// The bounds of a call that computes (or waits), starting now; the soft timeout applies only
    /// when a stale value can answer.
    pub(super) fn bounds(&self, has_fallback: bool) -> Bounds {
        let start = Instant::now();
        Bounds {
            soft_at: self.options.timeout().filter(|_| has_fallback).and_then(|t| start.checked_add(t)),
            hard_at: self.options.hard_timeout().and_then(|t| start.checked_add(t)),
        }
    }

    /// Computes the key: leads the flight (and computes), or waits for its leader within the
    /// bounds: a waiter answers with the leader's value (`Waited`), with the stale value when the
    /// leader failed and fail-safe applies, the soft timeout passes with a stale value or the
    /// hard timeout passes (`Err(Timeout)`); when the leader neither finishes nor fails within
    /// `lock_timeout`, or shares nothing, it computes itself.
    pub(crate) async fn compute<T, E, F, Fut>(self, seen: u64, fallback: Option<T>, compute: F) -> Answer<T, E>
    where
        H: Hooks<T>,
        T: Send + 'static,
        E: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<T, Failure<E>>> + Send + 'static,
    {
        let bounds = self.bounds(fallback.is_some());
        let mut fallback = fallback;
        match self.join_flight(seen, &mut fallback, bounds).await {
            Joined::Answered(answer) => answer,
            Joined::Compute(leader, lease) => self.run_computation(leader, lease, fallback, bounds, compute).await,
        }
    }

    /// Joins the key's flight: leads it, or waits for its leader within the bounds (see
    /// [`Call::compute`]).
    pub(super) async fn join_flight<T, E>(&self, seen: u64, fallback: &mut Option<T>, bounds: Bounds) -> Joined<T, E>
    where
        H: Hooks<T>,
        T: Send + 'static,
    {
        loop {
            let leader = match self.state.flights.join_shared(&self.key) {
                Join::Reentrant => return self.reentrant(),
                Join::Leader(leader) if self.state.flights_ended() == seen => leader,
                Join::Leader(leader) => match self.fresh_again::<T>(leader, true).await {
                    Ok(value) => return Joined::Answered(Ok(self.state.answer(value, CallStatus::Hit))),
                    Err(leader) => leader,
                },
                Join::Waiter(waiter) => {
                    let until = self.wait_until(bounds);
                    let waiting = Waiting::enter(&self.state);
                    let outcome = match until {
                        Some(until) => waiter.wait_async_for(until.saturating_duration_since(Instant::now())).await,
                        None => Some(waiter.wait_async().await),
                    };
                    drop(waiting);
                    match self.after_wait(outcome, fallback, bounds) {
                        Some(joined) => return joined,
                        None => continue,
                    }
                }
            };
            return match self.options.lock() {
                LockMode::Distributed => {
                    let across = self.across::<T>(leader, bounds).await;
                    self.joined_across(across, fallback, bounds)
                }
                _ => Joined::Compute(Some(leader), None),
            };
        }
    }

    /// A nested call with its own key computes without the lock.
    pub(super) fn reentrant<T, E>(&self) -> Joined<T, E> {
        tracing::debug!(key = &*self.key, "cachestack: nested call with its own key computes without the lock");
        Joined::Compute(None, None)
    }

    /// How long a waiter waits: until the first of `lock_timeout` (from now) and the bounds.
    pub(super) fn wait_until(&self, bounds: Bounds) -> Option<Instant> {
        let lock_at = self.options.lock_timeout().and_then(|t| Instant::now().checked_add(t));
        [lock_at, bounds.soft_at, bounds.hard_at].into_iter().flatten().min()
    }

    /// What a waiter does with what its wait gave (`None`: the wait passed its bound); `None`:
    /// join again (the leader was abandoned).
    pub(super) fn after_wait<T, E>(
        &self,
        outcome: Option<Outcome>,
        fallback: &mut Option<T>,
        bounds: Bounds,
    ) -> Option<Joined<T, E>>
    where
        H: Hooks<T>,
    {
        match outcome {
            Some(Outcome::Shared(value)) => Some(match self.hooks.decode(&self.key, &value) {
                Some((value, _)) => Joined::Answered(Ok(self.state.answer(value, CallStatus::Waited))),
                None => Joined::Compute(None, None),
            }),
            // The leader failed (or kept its value to itself): fail-safe if it failed, else
            // compute.
            Some(Outcome::NotShared) => {
                if self.state.throttle.is_throttled(&self.key, self.state.clock.now())
                    && let Some(stale) = fallback.take()
                {
                    bump(&self.state.counters.failures_absorbed);
                    return Some(Joined::Answered(Ok(self.state.answer(stale, CallStatus::Stale))));
                }
                Some(Joined::Compute(None, None))
            }
            Some(Outcome::Abandoned) => None,
            None => {
                let now = Instant::now();
                if bounds.hard_at.is_some_and(|at| now >= at) {
                    return Some(Joined::Answered(Err(self.timed_out())));
                }
                if bounds.soft_at.is_some_and(|at| now >= at)
                    && let Some(stale) = fallback.take()
                {
                    return Some(Joined::Answered(Ok(self.state.answer(stale, CallStatus::Stale))));
                }
                tracing::warn!(
                    key = &*self.key,
                    "cachestack: lock_timeout passed while another caller computes this key; computing here too"
                );
                Some(Joined::Compute(None, None))
            }
        }
    }

    /// Counts a hard timeout.
    pub(super) fn timed_out<E>(&self) -> Failure<E> {
        bump(&self.state.counters.timeouts);
        Failure::Timeout(Timeout { after: self.options.hard_timeout().unwrap_or_default() })
    }
}

/// What a caller does after joining the key's flight.
pub(super) enum Joined<T, E> {
    /// Answered without computing: the leader's value, a stale value, or a timeout.
    Answered(Answer<T, E>),
    /// Compute: as the flight's leader, or without it (a nested call, `lock_timeout` passed, the
    /// leader shared nothing); with the distributed lock when it holds it.
    Compute(Option<Leader<'static>>, Option<Lease>),
}
