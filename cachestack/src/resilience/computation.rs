//! Running a computation: as a task on cachestack's runtime awaited within the bounds
//! ([`Call::run_computation`]), or in place by its caller (`here.rs`); then storing its value,
//! recording a failure for the throttle, ending its flight and accounting for a failure nobody
//! waits for.

use std::future::Future;
use std::sync::Arc;

use super::distributed::Lease;
use super::engine::{Answer, Call, Failure, Hooks};
use super::state::bump;
use super::task::{await_bounded, catch_unwind, spawn, Awaited, Bounds, DetachOnDrop, Running, Watch};
use super::CallStatus;
use crate::expiry::{Deadline, Expiry};
use crate::singleflight::Leader;
use crate::value::Value;

impl<H> Call<H> {
    /// Spawns the computation and awaits it within the bounds; answers with the stale value when
    /// it fails or passes the soft timeout and `fallback` has one.
    pub(super) async fn run_computation<T, E, F, Fut>(
        self,
        leader: Option<Leader<'static>>,
        lease: Option<Lease>,
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
            call.computation(leader, lease, Some(task_watch), compute).await
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
        self.conclude(result, fallback)
    }

    /// The caller's answer from its computation's result: the value (`Miss`), else the stale
    /// value when there is one (fail-safe), else the failure.
    pub(super) fn conclude<T, E>(
        &self,
        result: std::result::Result<T, Failure<E>>,
        fallback: Option<T>,
    ) -> Answer<T, E> {
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
    /// during its polls, so a nested call of the same key is detected), stores a value, releases
    /// the distributed lock, records a failure, ends the flight, and counts and logs a failure its
    /// caller no longer waits for.
    pub(super) async fn computation<T, E, F, Fut>(
        self,
        leader: Option<Leader<'static>>,
        lease: Option<Lease>,
        watch: Option<Arc<Watch>>,
        compute: F,
    ) -> std::result::Result<T, Failure<E>>
    where
        H: Hooks<T>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, Failure<E>>>,
    {
        // An entry's write time is taken before its value is computed: an invalidation of one
        // of its tags made meanwhile wins (see `crate::tags`).
        let started = self.state.clock.now();
        let body = catch_unwind(async move { compute().await });
        let result = match &leader {
            Some(leader) => leader.run_async(body).await,
            None => body.await,
        };
        let result = result.unwrap_or_else(|payload| Err(Failure::Panic(payload)));
        let stored = self.settle(&result, started);
        if let Some((value, expiry)) = &stored {
            self.write(value.clone(), *expiry).await;
        }
        if let Some(lease) = lease {
            self.release(lease, stored.is_some()).await;
        }
        self.end_flight(leader, stored, &result, watch);
        result
    }

    /// Releases the distributed lock once the value (`stored`: if any) is in the shared store:
    /// a write-back stack's queue is flushed first, so that the other processes find the value
    /// instead of taking the lock and computing again.
    pub(super) async fn release(&self, lease: Lease, stored: bool) {
        if stored {
            let backend = self.backend.clone();
            let flushed = crate::rt::io(self.backend.name(), async move { backend.flush().await }).await;
            if let Err(err) = flushed {
                self.state.record_cache_error("flush", &self.key, &err);
            }
        }
        lease.release().await;
    }

    /// Stores a computed value: in place for an in-process store, else on cachestack's runtime
    /// (the caller's runtime never runs the store's I/O or its layers' timers; see
    /// [`crate::rt::io`]). A failure is counted and logged.
    async fn write(&self, value: Value, expiry: Expiry) {
        if let Some(local) = self.backend.as_local() {
            local.set_value(&self.key, value, expiry);
            return;
        }
        let (backend, key) = (self.backend.clone(), self.key.clone());
        let written = crate::rt::io(self.backend.name(), async move { backend.set(&key, value, expiry).await }).await;
        if let Err(err) = written {
            self.state.record_cache_error("write", &self.key, &err);
        }
    }

    /// What a finished computation stores (its encoded value and expiry); records a failure in
    /// the throttle (fail-safe) or clears it.
    pub(super) fn settle<T, E>(
        &self,
        result: &std::result::Result<T, Failure<E>>,
        started: std::time::SystemTime,
    ) -> Option<(Value, Expiry)>
    where
        H: Hooks<T>,
    {
        let now = self.state.clock.now();
        match result {
            Ok(value) => {
                let ttl = self.hooks.ttl_of(value).or_else(|| self.options.jittered_ttl());
                let fresh_until = ttl.map(|ttl| Deadline::after_from(now, ttl));
                let expiry = match ttl {
                    Some(ttl) => Expiry::At(Deadline::after_from(now, ttl.saturating_add(self.options.stale_window()))),
                    None => Expiry::Default,
                };
                self.state.throttle.clear(&self.key);
                let tags = self.options.tags();
                let tagged = |stored: Value| match tags.is_empty() {
                    true => stored,
                    false => stored.with_tags(started, tags.iter().cloned()),
                };
                self.hooks.encode(value, fresh_until).map(|stored| (tagged(stored), expiry))
            }
            Err(_) => {
                if self.options.stale_if_error().is_some() {
                    let until = now.checked_add(self.options.stale_throttle()).unwrap_or(now);
                    self.state.throttle.record(&self.key, now, until);
                }
                None
            }
        }
    }

    /// Ends the flight once the value is stored (its waiters get `stored`, or nothing after a
    /// failure), and counts and logs a failure its caller no longer waits for (`watch`: `None`
    /// for a background computation).
    pub(super) fn end_flight<T, E>(
        &self,
        leader: Option<Leader<'static>>,
        stored: Option<(Value, Expiry)>,
        result: &std::result::Result<T, Failure<E>>,
        watch: Option<Arc<Watch>>,
    ) {
        if let Some(leader) = leader {
            leader.complete(|| stored.map(|(value, _)| value));
        }
        let caller_left = watch.is_none_or(|watch| watch.finish());
        if let (Err(failure), true) = (result, caller_left) {
            bump(&self.state.counters.background_failures);
            tracing::warn!(
                key = &*self.key,
                "cachestack: a background computation {}; the cache keeps its previous value",
                failure.describe()
            );
        }
    }
}
