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
use std::panic::AssertUnwindSafe;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::clock::Clock;
use super::options::ComputeOptions;
use super::throttle::Throttle;
use super::{CallStatus, ComputeStats, Timeout};
use crate::error::{Error, Result};
use crate::expiry::{Deadline, Expiry};
use crate::singleflight::{Join, Leader, Outcome, SingleFlight};
use crate::store::{Backend, Entry};
use crate::striped::StripedCounter;
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
    fn describe(&self) -> &'static str {
        match self {
            Failure::Err(_) => "returned an error",
            Failure::Panic(_) => "panicked",
            Failure::Timeout(_) => "timed out",
        }
    }
}

/// What a call's result is: the value and how it was served, or the failure.
pub(crate) type Answer<T, E> = std::result::Result<(T, CallStatus), Failure<E>>;

/// How a stored value stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freshness {
    /// Within its TTL; `refresh`: in the refresh-ahead window.
    Fresh { refresh: bool },
    /// Past its TTL, within `stale_while_revalidate`: answer it and refresh in the background.
    Revalidate,
    /// Past its TTL, within `stale_if_error`: compute, and answer it if that fails or is slow.
    Fallback,
    /// Past every window: as good as missing.
    Gone,
}

fn freshness(options: &ComputeOptions, fresh_until: Option<Deadline>, now: SystemTime) -> Freshness {
    let Some(fresh_until) = fresh_until else { return Freshness::Fresh { refresh: false } };
    if !fresh_until.has_passed_at(now) {
        let refresh = options.refresh_window().is_some_and(|window| fresh_until.remaining_at(now) <= window);
        return Freshness::Fresh { refresh };
    }
    let since = Duration::from_millis(Deadline::at(now).unix_millis().saturating_sub(fresh_until.unix_millis()));
    if options.stale_while_revalidate().is_some_and(|window| since < window) {
        Freshness::Revalidate
    } else if options.stale_if_error().is_some_and(|window| since < window) {
        Freshness::Fallback
    } else {
        Freshness::Gone
    }
}

/// What a call does after reading the key.
pub(crate) enum Decision<T> {
    /// Answer with `value`; `refresh`: and start a background refresh.
    Answer { value: T, status: CallStatus, refresh: bool },
    /// Compute (leading or waiting); `fallback`: the stale value to answer with if the
    /// computation fails or passes the soft timeout.
    Compute { fallback: Option<T> },
}

#[derive(Debug, Default)]
struct Counters {
    /// Striped: bumped on every hit, from every thread.
    hits: StripedCounter,
    misses: AtomicU64,
    stale: AtomicU64,
    waited: AtomicU64,
    refreshes: AtomicU64,
    failures_absorbed: AtomicU64,
    background_failures: AtomicU64,
    timeouts: AtomicU64,
    cache_errors: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The state the engine keeps per cache: single flight, the failure throttle, the clock, the
/// counters, and the computations still running.
pub(crate) struct ComputeState {
    flights: Arc<SingleFlight>,
    throttle: Throttle,
    clock: Arc<dyn Clock>,
    counters: Counters,
    running: AtomicUsize,
    idle: tokio::sync::Notify,
    /// Callers waiting for another caller's computation right now.
    waiting: AtomicUsize,
}

impl std::fmt::Debug for ComputeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComputeState")
            .field("clock", &self.clock)
            .field("in_flight", &self.flights.in_flight())
            .field("running", &self.running.load(Ordering::Relaxed))
            .finish()
    }
}

impl ComputeState {
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Self {
        ComputeState {
            flights: Arc::new(SingleFlight::new()),
            throttle: Throttle::default(),
            clock,
            counters: Counters::default(),
            running: AtomicUsize::new(0),
            idle: tokio::sync::Notify::new(),
            waiting: AtomicUsize::new(0),
        }
    }

    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub(crate) fn stats(&self) -> ComputeStats {
        let c = &self.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ComputeStats {
            hits: c.hits.get(),
            misses: load(&c.misses),
            stale: load(&c.stale),
            waited: load(&c.waited),
            refreshes: load(&c.refreshes),
            failures_absorbed: load(&c.failures_absorbed),
            background_failures: load(&c.background_failures),
            timeouts: load(&c.timeouts),
            cache_errors: load(&c.cache_errors),
            running: self.running.load(Ordering::Relaxed),
            waiting: self.waiting.load(Ordering::Relaxed),
        }
    }

    /// Waits until no computation started by this state runs any more (background refreshes,
    /// computations whose callers stopped waiting).
    pub(crate) async fn idle(&self) {
        loop {
            let mut notified = pin!(self.idle.notified());
            notified.as_mut().enable();
            if self.running.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    fn answered<T>(&self, value: T, status: CallStatus) -> (T, CallStatus) {
        let c = &self.counters;
        bump(match status {
            CallStatus::Hit => {
                c.hits.add(1);
                return (value, status);
            }
            CallStatus::Miss => &c.misses,
            CallStatus::Stale => &c.stale,
            CallStatus::Waited => &c.waited,
        });
        (value, status)
    }

    fn record_cache_error(&self, op: &'static str, key: &str, err: &Error) {
        bump(&self.counters.cache_errors);
        tracing::warn!(op, key, error = %err, "cachestack: cache error ignored by get_or_compute; the call goes on as a miss");
    }

    /// The flight counter before a read (see [`ComputeState::decide`] and the `seen` arguments).
    pub(crate) fn flights_ended(&self) -> u64 {
        self.flights.ended()
    }

    /// What a call does with what it read (no I/O; shared by the async and blocking paths).
    pub(crate) fn decide<T>(
        &self,
        hooks: &impl Hooks<T>,
        key: &str,
        options: &ComputeOptions,
        read: Result<Option<Entry>>,
    ) -> Decision<T> {
        let entry = read.unwrap_or_else(|err| {
            self.record_cache_error("read", key, &err);
            None
        });
        let Some((value, fresh_until)) = entry.and_then(|entry| hooks.decode(key, &entry.value)) else {
            return Decision::Compute { fallback: None };
        };
        let now = self.clock.now();
        match freshness(options, fresh_until, now) {
            Freshness::Fresh { refresh } => Decision::Answer { value, status: CallStatus::Hit, refresh },
            Freshness::Revalidate => Decision::Answer { value, status: CallStatus::Stale, refresh: true },
            Freshness::Fallback if self.throttle.is_throttled(key, now) => {
                Decision::Answer { value, status: CallStatus::Stale, refresh: false }
            }
            Freshness::Fallback => Decision::Compute { fallback: Some(value) },
            Freshness::Gone => Decision::Compute { fallback: None },
        }
    }

    /// The leader of a background refresh of `key`, unless one runs already (single flight: of
    /// many hits that ask at once, one refreshes).
    pub(crate) fn try_refresh(&self, key: &str) -> Option<Leader<'static>> {
        self.flights.try_lead(key)
    }

    /// Counts and returns an answer decided without computing.
    pub(crate) fn answer<T>(&self, value: T, status: CallStatus) -> (T, CallStatus) {
        self.answered(value, status)
    }
}

/// Reads `key`: from the in-process front of the store without awaiting when it has the entry,
/// else on cachestack's runtime (so that the store's I/O and its layers' timers never run on the
/// caller's runtime; see [`crate::rt::io`]).
pub(crate) async fn read(backend: &Arc<dyn Backend>, key: &str) -> Result<Option<Entry>> {
    if let Some(local) = backend.as_local() {
        return Ok(local.get_entry(key));
    }
    if let Some(entry) = backend.local_l1().and_then(|front| front.get_entry(key)) {
        return Ok(Some(entry));
    }
    let backend = backend.clone();
    let key = key.to_owned();
    crate::rt::io(backend.name().to_owned().as_str(), async move { backend.get(&key).await }).await
}

/// The read a call sees synchronously (an in-process store or front), or `None` when it must
/// await the store.
pub(crate) fn read_local(backend: &Arc<dyn Backend>, key: &str) -> Option<Option<Entry>> {
    if let Some(local) = backend.as_local() {
        return Some(local.get_entry(key));
    }
    backend.local_l1().and_then(|front| front.get_entry(key)).map(Some)
}

/// Everything a computation needs besides its body, owned, so it can move into a task.
pub(crate) struct Call<H> {
    pub(crate) state: Arc<ComputeState>,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) hooks: Arc<H>,
    pub(crate) key: Arc<str>,
    pub(crate) options: ComputeOptions,
}

impl<H> Clone for Call<H> {
    fn clone(&self) -> Self {
        Call {
            state: self.state.clone(),
            backend: self.backend.clone(),
            hooks: self.hooks.clone(),
            key: self.key.clone(),
            options: self.options.clone(),
        }
    }
}

/// Where a computation's caller stands: still waiting, gone, or the computation is done. The
/// computation and its caller each mark their end; whoever marks second learns what the other
/// did (a failure after the caller left is a background failure, counted and logged).
struct Watch(AtomicU8);

const RUNNING: u8 = 0;
const DONE: u8 = 1;
const DETACHED: u8 = 2;

impl Watch {
    fn new() -> Arc<Self> {
        Arc::new(Watch(AtomicU8::new(RUNNING)))
    }
    /// The caller stops waiting; false if the computation is already done (its result is ready).
    fn detach(&self) -> bool {
        self.0.compare_exchange(RUNNING, DETACHED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }
    /// The computation is done; true if its caller had already left.
    fn finish(&self) -> bool {
        self.0.swap(DONE, Ordering::AcqRel) == DETACHED
    }
}

/// Marks the caller gone if its future is dropped while the computation runs.
struct DetachOnDrop(Arc<Watch>);

impl Drop for DetachOnDrop {
    fn drop(&mut self) {
        self.0.detach();
    }
}

/// Counts a running computation until dropped.
struct Running(Arc<ComputeState>);

impl Running {
    fn start(state: &Arc<ComputeState>) -> Self {
        state.running.fetch_add(1, Ordering::AcqRel);
        Running(state.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Counts a waiting caller until dropped.
struct Waiting<'a>(&'a ComputeState);

impl<'a> Waiting<'a> {
    fn enter(state: &'a ComputeState) -> Self {
        state.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(state)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Polls `future`, turning a panic into `Err(payload)`.
async fn catch_unwind<F: Future>(future: F) -> std::result::Result<F::Output, Box<dyn Any + Send>> {
    let mut future = pin!(future);
    std::future::poll_fn(move |cx| match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
        Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
        Ok(Poll::Pending) => Poll::Pending,
        Err(payload) => Poll::Ready(Err(payload)),
    })
    .await
}

/// A computation's task: on cachestack's runtime, or (if that runtime cannot start) run in place
/// by the caller.
enum Task<T, E> {
    Spawned(tokio::task::JoinHandle<std::result::Result<T, Failure<E>>>),
    Inline(Pin<Box<dyn Future<Output = std::result::Result<T, Failure<E>>> + Send>>),
}

impl<T, E> Future for Task<T, E> {
    type Output = std::result::Result<T, Failure<E>>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Task::Spawned(handle) => Pin::new(handle).poll(cx).map(|joined| {
                joined.unwrap_or_else(|err| {
                    Err(Failure::Panic(if err.is_panic() {
                        err.into_panic()
                    } else {
                        Box::new("cachestack: the computation's task was cancelled (runtime shut down)")
                    }))
                })
            }),
            Task::Inline(future) => future.as_mut().poll(cx),
        }
    }
}

fn spawn<T, E>(future: impl Future<Output = std::result::Result<T, Failure<E>>> + Send + 'static) -> Task<T, E>
where
    T: Send + 'static,
    E: Send + 'static,
{
    match crate::rt::handle() {
        Ok(runtime) => Task::Spawned(runtime.spawn(future)),
        Err(err) => {
            tracing::warn!(error = %err, "cachestack: computation runs on the caller: cachestack's runtime is unavailable");
            Task::Inline(Box::pin(future))
        }
    }
}

/// How long a caller waits for a computation.
#[derive(Clone, Copy)]
struct Bounds {
    /// The soft timeout (only when a stale value can answer).
    soft_at: Option<Instant>,
    /// The hard timeout.
    hard_at: Option<Instant>,
}

enum Awaited<R> {
    Done(R),
    Soft,
    Hard,
}

/// Awaits `task`, giving up at `soft_at` or `hard_at`. A caller that gives up detaches from the
/// computation, which goes on in the background; if the computation finished just as the caller
/// gave up, its result is taken after all.
async fn await_bounded<T, E>(
    task: &mut Task<T, E>,
    watch: &Watch,
    soft_at: Option<Instant>,
    hard_at: Option<Instant>,
) -> Awaited<std::result::Result<T, Failure<E>>> {
    for (at, gave_up) in [(soft_at, Awaited::Soft), (hard_at, Awaited::Hard)] {
        let Some(at) = at else { continue };
        return match tokio::time::timeout_at(at, &mut *task).await {
            Ok(result) => Awaited::Done(result),
            Err(_) if watch.detach() => gave_up,
            Err(_) => Awaited::Done(task.await),
        };
    }
    Awaited::Done(task.await)
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
        let read = read(&self.backend, &self.key).await;
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
            let _ = call.computation::<T, E, F, Fut>(Some(leader), None, compute).await;
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
        let entry = match read(&self.backend, &self.key).await {
            Ok(Some(entry)) => entry,
            Ok(None) => return Err(leader),
            Err(err) => {
                self.state.record_cache_error("read", &self.key, &err);
                return Err(leader);
            }
        };
        let Some((value, fresh_until)) = self.hooks.decode(&self.key, &entry.value) else { return Err(leader) };
        match freshness(&self.options, fresh_until, self.state.clock.now()) {
            Freshness::Fresh { refresh } if in_refresh_window || !refresh => {
                leader.complete(|| Some(entry.value));
                Ok(value)
            }
            _ => Err(leader),
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
        let start = Instant::now();
        let bounds = Bounds {
            soft_at: self.options.timeout().filter(|_| fallback.is_some()).and_then(|t| start.checked_add(t)),
            hard_at: self.options.hard_timeout().and_then(|t| start.checked_add(t)),
        };
        let mut fallback = fallback;
        let leader = loop {
            match self.state.flights.join_shared(&self.key) {
                Join::Reentrant => {
                    tracing::debug!(
                        key = &*self.key,
                        "cachestack: nested call with its own key computes without the lock"
                    );
                    break None;
                }
                Join::Leader(leader) if self.state.flights_ended() == seen => break Some(leader),
                Join::Leader(leader) => match self.fresh_again::<T>(leader, true).await {
                    Ok(value) => return Ok(self.state.answer(value, CallStatus::Hit)),
                    Err(leader) => break Some(leader),
                },
                Join::Waiter(waiter) => {
                    let lock_at = self.options.lock_timeout().and_then(|t| Instant::now().checked_add(t));
                    let until = [lock_at, bounds.soft_at, bounds.hard_at].into_iter().flatten().min();
                    let waiting = Waiting::enter(&self.state);
                    let outcome = match until {
                        Some(until) => waiter.wait_async_for(until.saturating_duration_since(Instant::now())).await,
                        None => Some(waiter.wait_async().await),
                    };
                    drop(waiting);
                    match outcome {
                        Some(Outcome::Shared(value)) => match self.hooks.decode(&self.key, &value) {
                            Some((value, _)) => return Ok(self.state.answer(value, CallStatus::Waited)),
                            None => break None,
                        },
                        // The leader failed (or kept its value to itself): fail-safe if it
                        // failed, else compute.
                        Some(Outcome::NotShared) => {
                            if self.state.throttle.is_throttled(&self.key, self.state.clock.now()) {
                                if let Some(stale) = fallback.take() {
                                    bump(&self.state.counters.failures_absorbed);
                                    return Ok(self.state.answer(stale, CallStatus::Stale));
                                }
                            }
                            break None;
                        }
                        Some(Outcome::Abandoned) => continue,
                        None => {
                            let now = Instant::now();
                            if bounds.hard_at.is_some_and(|at| now >= at) {
                                return Err(self.timed_out());
                            }
                            if bounds.soft_at.is_some_and(|at| now >= at) {
                                if let Some(stale) = fallback.take() {
                                    return Ok(self.state.answer(stale, CallStatus::Stale));
                                }
                            }
                            tracing::warn!(
                                key = &*self.key,
                                "cachestack: lock_timeout passed while another caller computes this key; computing here too"
                            );
                            break None;
                        }
                    }
                }
            }
        };
        self.run_computation(leader, fallback, bounds, compute).await
    }

    /// Counts a hard timeout.
    fn timed_out<E>(&self) -> Failure<E> {
        bump(&self.state.counters.timeouts);
        Failure::Timeout(Timeout { after: self.options.hard_timeout().unwrap_or_default() })
    }

    /// Spawns the computation and awaits it within the bounds; answers with the stale value when
    /// it fails or passes the soft timeout and `fallback` has one.
    async fn run_computation<T, E, F, Fut>(
        self,
        leader: Option<Leader<'static>>,
        fallback: Option<T>,
        bounds: Bounds,
        compute: F,
    ) -> Answer<T, E>
    where
        H: Hooks<T>,
        T: Send + 'static,
        E: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<T, Failure<E>>> + Send + 'static,
    {
        let watch = Watch::new();
        let running = Running::start(&self.state);
        let call = self.clone();
        let task_watch = watch.clone();
        let mut task = spawn(async move {
            let _running = running;
            call.computation(leader, Some(task_watch), compute).await
        });
        let _detach = DetachOnDrop(watch.clone());
        let soft_at = bounds.soft_at.filter(|_| fallback.is_some());
        let result = match await_bounded(&mut task, &watch, soft_at, bounds.hard_at).await {
            Awaited::Done(result) => result,
            Awaited::Soft => {
                return match fallback {
                    Some(stale) => Ok(self.state.answer(stale, CallStatus::Stale)),
                    None => Err(self.timed_out()),
                }
            }
            Awaited::Hard => return Err(self.timed_out()),
        };
        match (result, fallback) {
            (Ok(value), _) => Ok(self.state.answer(value, CallStatus::Miss)),
            (Err(failure), Some(stale)) => {
                bump(&self.state.counters.failures_absorbed);
                tracing::debug!(
                    key = &*self.key,
                    "cachestack: the computation {}; answering with the stale value (stale_if_error)",
                    failure.describe()
                );
                Ok(self.state.answer(stale, CallStatus::Stale))
            }
            (Err(failure), None) => Err(failure),
        }
    }

    /// The computation itself, as a task's body: runs `compute` (marking the flight's leader
    /// during its polls, so a nested call of the same key is detected), stores a value, records a
    /// failure, ends the flight, and counts and logs a failure its caller no longer waits for.
    async fn computation<T, E, F, Fut>(
        self,
        leader: Option<Leader<'static>>,
        watch: Option<Arc<Watch>>,
        compute: F,
    ) -> std::result::Result<T, Failure<E>>
    where
        H: Hooks<T>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, Failure<E>>>,
    {
        let body = catch_unwind(async move { compute().await });
        let result = match &leader {
            Some(leader) => leader.run_async(body).await,
            None => body.await,
        };
        let result = result.unwrap_or_else(|payload| Err(Failure::Panic(payload)));
        let now = self.state.clock.now();
        match &result {
            Ok(value) => {
                let ttl = self.options.jittered_ttl();
                let fresh_until = ttl.map(|ttl| Deadline::after_from(now, ttl));
                let expiry = match ttl {
                    Some(ttl) => Expiry::At(Deadline::after_from(now, ttl.saturating_add(self.options.stale_window()))),
                    None => Expiry::Default,
                };
                let stored = self.hooks.encode(value, fresh_until);
                if let Some(value) = &stored {
                    if let Err(err) = self.backend.set(&self.key, value.clone(), expiry).await {
                        self.state.record_cache_error("write", &self.key, &err);
                    }
                }
                self.state.throttle.clear(&self.key);
                if let Some(leader) = leader {
                    leader.complete(|| stored);
                }
            }
            Err(_) => {
                if self.options.stale_if_error().is_some() {
                    let until = now.checked_add(self.options.stale_throttle()).unwrap_or(now);
                    self.state.throttle.record(&self.key, now, until);
                }
                if let Some(leader) = leader {
                    leader.complete(|| None);
                }
            }
        }
        let caller_left = watch.is_none_or(|watch| watch.finish());
        if let (Err(failure), true) = (&result, caller_left) {
            bump(&self.state.counters.background_failures);
            tracing::warn!(
                key = &*self.key,
                "cachestack: a background computation {}; the cache keeps its previous value",
                failure.describe()
            );
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::RefreshAhead;

    #[test]
    fn freshness_follows_the_windows() {
        let s = Duration::from_secs;
        let options = ComputeOptions::builder()
            .ttl(s(100))
            .refresh_ahead(RefreshAhead::Fraction(0.8))
            .stale_while_revalidate(s(10))
            .stale_if_error(s(60))
            .build()
            .unwrap();
        let written = SystemTime::UNIX_EPOCH + s(1_000_000);
        let fresh_until = Some(Deadline::after_from(written, s(100)));
        let at = |secs| freshness(&options, fresh_until, written + s(secs));
        assert_eq!(at(0), Freshness::Fresh { refresh: false });
        assert_eq!(at(79), Freshness::Fresh { refresh: false });
        assert_eq!(at(80), Freshness::Fresh { refresh: true });
        assert_eq!(at(99), Freshness::Fresh { refresh: true });
        assert_eq!(at(100), Freshness::Revalidate);
        assert_eq!(at(109), Freshness::Revalidate);
        assert_eq!(at(110), Freshness::Fallback);
        assert_eq!(at(159), Freshness::Fallback);
        assert_eq!(at(160), Freshness::Gone);
        assert_eq!(freshness(&options, None, written + s(10_000)), Freshness::Fresh { refresh: false });
    }
}
