//! Computations the caller runs itself, on its own task or thread: the path of `#[cached]`
//! functions, whose body borrows the caller's arguments (or `&self`) and so cannot move into a
//! task of its own.
//!
//! The caller joins the key's flight exactly as [`Call::compute`] does (waiting within
//! `lock_timeout` and the bounds); as the leader it runs the body in place, stores the value and
//! ends the flight. What the body cannot do in place is go on after its caller returned: an
//! asynchronous body is dropped (cancelled at its current `.await`) when the hard timeout
//! passes, and the soft timeout, background refreshes and a synchronous hard timeout need an
//! owned computation, given to [`Call::compute`] and [`Call::refresh`] instead.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Poll;

use tokio::time::Instant;

use super::engine::{read, read_local, Answer, Call, Failure, Hooks, Joined};
use super::options::LockMode;
use super::task::{Bounds, Running, Waiting, Watch};
use crate::cache::CacheTags;
use crate::error::Result;
use crate::expiry::Expiry;
use crate::singleflight::Join;
use crate::store::{Backend, Entry};
use crate::value::Value;

impl<H> Call<H> {
    /// Computes the key with the caller's own `body` (see the [module](self)): joins the flight,
    /// then, as its leader or without the lock, awaits `body` in place within the hard timeout.
    pub(crate) async fn compute_here<T, E, Fut>(self, seen: u64, fallback: Option<T>, body: Fut) -> Answer<T, E>
    where
        H: Hooks<T>,
        T: Send + 'static,
        Fut: Future<Output = std::result::Result<T, Failure<E>>>,
    {
        let bounds = self.bounds(fallback.is_some());
        let mut fallback = fallback;
        let (leader, lease) = match self.join_flight(seen, &mut fallback, bounds).await {
            Joined::Answered(answer) => return answer,
            Joined::Compute(leader, lease) => (leader, lease),
        };
        let _running = Running::start(&self.state);
        let computation = self.clone().computation(leader, lease, Some(Watch::new()), move || body);
        match within(bounds.hard_at, computation).await {
            Some(result) => self.conclude(result, fallback),
            // The body was dropped with its flight: a waiter takes over.
            None => Err(self.timed_out()),
        }
    }

    /// [`Call::compute_here`] for a synchronous `body`, run on the calling thread (waits for
    /// another caller's computation block it).
    pub(crate) fn compute_blocking_here<T, E>(
        self,
        seen: u64,
        fallback: Option<T>,
        body: impl FnOnce() -> std::result::Result<T, Failure<E>>,
    ) -> Answer<T, E>
    where
        H: Hooks<T>,
        T: Send + 'static,
    {
        let bounds = self.bounds(fallback.is_some());
        let mut fallback = fallback;
        let (leader, lease) = match self.join_flight_blocking(seen, &mut fallback, bounds) {
            Joined::Answered(answer) => return answer,
            Joined::Compute(leader, lease) => (leader, lease),
        };
        let running = Running::start(&self.state);
        // The write time of a tagged entry: before the body runs (see `crate::tags`).
        let started = self.state.clock.now();
        let caught = match &leader {
            Some(leader) => leader.run(|| std::panic::catch_unwind(AssertUnwindSafe(body))),
            None => std::panic::catch_unwind(AssertUnwindSafe(body)),
        };
        let result = caught.unwrap_or_else(|payload| Err(Failure::Panic(payload)));
        let stored = self.settle(&result, started);
        if let Some((value, expiry)) = &stored {
            self.write_blocking(value.clone(), *expiry);
        }
        if let Some(lease) = lease {
            let (call, stored) = (self.clone(), stored.is_some());
            if let Err(err) = crate::rt::block_on(async move { call.release(lease, stored).await }) {
                self.state.record_cache_error("lock", &self.key, &err);
            }
        }
        self.end_flight(leader, stored, &result, Some(Watch::new()));
        drop(running);
        self.conclude(result, fallback)
    }

    /// [`Call::join_flight`] for a synchronous caller: waits block the thread.
    fn join_flight_blocking<T, E>(&self, seen: u64, fallback: &mut Option<T>, bounds: Bounds) -> Joined<T, E>
    where
        H: Hooks<T>,
        T: Send + 'static,
    {
        loop {
            let leader = match self.state.flights.join_shared(&self.key) {
                Join::Reentrant => return self.reentrant(),
                Join::Leader(leader) if self.state.flights_ended() == seen => leader,
                Join::Leader(leader) => {
                    let read = read_blocking(&self.backend, &self.tags, &self.key);
                    match self.fresh_in::<T>(read, leader, true) {
                        Ok(value) => return Joined::Answered(Ok(self.state.answer(value, crate::CallStatus::Hit))),
                        Err(leader) => leader,
                    }
                }
                Join::Waiter(waiter) => {
                    let until = self.wait_until(bounds);
                    let waiting = Waiting::enter(&self.state);
                    let outcome = match until {
                        Some(until) => waiter.wait_for(until.saturating_duration_since(Instant::now())),
                        None => Some(waiter.wait()),
                    };
                    drop(waiting);
                    match self.after_wait(outcome, fallback, bounds) {
                        Some(joined) => return joined,
                        None => continue,
                    }
                }
            };
            if self.options.lock() != LockMode::Distributed {
                return Joined::Compute(Some(leader), None);
            }
            let call = self.clone();
            return match crate::rt::block_on(async move { call.across::<T>(leader, bounds).await }) {
                Ok(across) => self.joined_across(across, fallback, bounds),
                Err(err) => {
                    // cachestack's runtime is unavailable (the leader was dropped with the task).
                    self.state.record_cache_error("lock", &self.key, &err);
                    Joined::Compute(None, None)
                }
            };
        }
    }

    /// Stores a value from synchronous code: in place for an in-process store, else through
    /// [`crate::rt::block_on`]. A failure is counted and logged.
    fn write_blocking(&self, value: Value, expiry: Expiry) {
        if let Some(local) = self.backend.as_local() {
            local.set_value(&self.key, value, expiry);
            return;
        }
        let (backend, key) = (self.backend.clone(), self.key.clone());
        let written = crate::rt::block_on(async move { backend.set(&key, value, expiry).await }).and_then(|r| r);
        if let Err(err) = written {
            self.state.record_cache_error("write", &self.key, &err);
        }
    }
}

/// Reads `key` from synchronous code: in place from an in-process store (or a stack's in-process
/// front), else through [`crate::rt::block_on`].
pub(crate) fn read_blocking(backend: &Arc<dyn Backend>, tags: &Arc<CacheTags>, key: &str) -> Result<Option<Entry>> {
    if let Some(read) = read_local(backend, tags, key) {
        return Ok(read);
    }
    let (backend, tags, key) = (backend.clone(), tags.clone(), key.to_owned());
    crate::rt::block_on(async move { read(&backend, &tags, &key).await }).and_then(|r| r)
}

/// Awaits `future` until `at` (`None`: without a bound); `None` when `at` passed first (the
/// future is dropped). The timer is the calling tokio runtime's when there is one (a paused test
/// clock included), else cachestack's.
async fn within<F: Future>(at: Option<Instant>, future: F) -> Option<F::Output> {
    let Some(at) = at else { return Some(future.await) };
    if tokio::runtime::Handle::try_current().is_ok() {
        return tokio::time::timeout_at(at, future).await.ok();
    }
    let mut timer = match crate::rt::handle() {
        Ok(runtime) => runtime.spawn(tokio::time::sleep_until(at)),
        Err(err) => {
            tracing::warn!(error = %err, "cachestack: hard_timeout not applied: cachestack's runtime is unavailable");
            return Some(future.await);
        }
    };
    let mut future = pin!(future);
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        match Pin::new(&mut timer).poll(cx) {
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}
