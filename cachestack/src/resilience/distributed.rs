//! Single flight across processes ([`LockMode::Distributed`]).
//!
//! The distributed lock sits behind the in-process one: only a caller that leads its process's
//! flight for the key contends for the store's lock ([`crate::LockOps`]), so each process sends
//! one contender whatever the number of its callers. That contender:
//!
//! - takes the lock: it looks at the store once more (another process may have stored the value
//!   and released the lock just before), then computes, renewing the lease every third of it
//!   ([`keep`]), stores the value and releases the lock;
//! - or finds it taken: it polls the store for the value, with a backoff from
//!   [`POLL_FIRST`] doubling up to [`POLL_MAX`], trying the lock again at each round, until the
//!   value appears (`Waited`), the lock is its own (the leader finished without a value, or died
//!   and its lease ran out: one waiter takes over), or the wait passes `lock_timeout` (or the
//!   call's timeouts), after which it computes without the lock, as an in-process waiter does.
//!
//! A store error while taking the lock is counted and logged like every cache error of
//! `get_or_compute`, and the call computes without the lock (a cache failure never breaks the
//! caller). A store that has no lock at all is a configuration error ([`check`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::engine::{read, Call, Hooks};
use super::options::{ComputeOptions, LockMode};
use super::task::{Bounds, Waiting};
use super::CallStatus;
use crate::error::{Error, Result};
use crate::singleflight::Leader;
use crate::store::{Backend, LockGuard};

/// The first pause between two looks at the store while another process computes.
pub(crate) const POLL_FIRST: Duration = Duration::from_millis(5);
/// The longest pause between two looks (never more than half the lease).
pub(crate) const POLL_MAX: Duration = Duration::from_millis(200);

/// A configuration error when `options` ask for the distributed lock and `backend` has none.
pub(crate) fn check(backend: &dyn Backend, options: &ComputeOptions) -> Result<()> {
    if options.lock() != LockMode::Distributed || backend.locks().is_some() {
        return Ok(());
    }
    Err(Error::config(format!(
        "lock = \"distributed\" needs a store whose lock every process shares (Redis, PostgreSQL, Memcached, or a \
         tiered stack whose lowest layer is one of them); the store `{}` has none, so single flight across processes \
         cannot be had: use `lock = true` (single flight in this process) or another store",
        backend.name()
    )))
}

/// A lock this process holds, renewed in the background until released (or dropped: a
/// cancelled or panicking leader releases it too).
pub(crate) struct Lease {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Keeps `guard` with renewals on cachestack's runtime; `None` when that runtime is not
    /// available (the guard is dropped, and the lock ends with its lease).
    fn start(guard: Box<dyn LockGuard>, lease: Duration, key: Arc<str>) -> Option<Lease> {
        let (stop, stopped) = oneshot::channel();
        match crate::rt::handle() {
            Ok(runtime) => Some(Lease { stop, task: runtime.spawn(keep(guard, lease, stopped, key)) }),
            Err(err) => {
                tracing::warn!(key = &*key, error = %err, "cachestack: distributed lock not renewed: cachestack's runtime is unavailable");
                None
            }
        }
    }

    /// Stops renewing and releases the lock; returns once it is released (or failed to be).
    pub(crate) async fn release(self) {
        drop(self.stop);
        let _ = self.task.await;
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lease")
    }
}

/// How often a lease is renewed: every third of it, so that two renewals may fail before it ends.
fn renew_every(lease: Duration) -> Duration {
    (lease / 3).max(Duration::from_millis(1))
}

/// Renews `guard` every third of `lease` until `stop` fires or is dropped, then releases it. A
/// renewal that finds the lock gone (the lease ran out while the leader was slow, or the holder's
/// connection died) stops renewing: another process may compute the key meanwhile.
pub(crate) async fn keep(
    mut guard: Box<dyn LockGuard>,
    lease: Duration,
    mut stop: oneshot::Receiver<()>,
    key: Arc<str>,
) {
    let every = renew_every(lease);
    loop {
        if tokio::time::timeout(every, &mut stop).await.is_ok() {
            break;
        }
        match guard.renew(lease).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(
                    key = &*key,
                    "cachestack: the distributed lock was lost while computing (its lease ran out or its connection \
                     died); another process may compute this key too"
                );
                return;
            }
            Err(err) => {
                tracing::warn!(key = &*key, error = %err, "cachestack: renewing the distributed lock failed; trying again");
            }
        }
    }
    if let Err(err) = guard.release().await {
        tracing::warn!(key = &*key, error = %err, "cachestack: releasing the distributed lock failed; it ends with its lease");
    }
}

/// The pause after `pause` between two looks at the store.
fn next_pause(pause: Duration, lease: Duration) -> Duration {
    pause.saturating_mul(2).min(POLL_MAX).min((lease / 2).max(POLL_FIRST))
}

/// What the process's contender for `key` does (see the [module](self)).
pub(super) enum Across<T> {
    /// A fresh value another process stored (the in-process flight ended with it).
    Value(T),
    /// The wait passed its bound (`lock_timeout`, the soft or the hard timeout).
    TimedOut(Leader<'static>),
    /// Compute: holding the lock, or without it (the store failed; counted and logged).
    Compute(Leader<'static>, Option<Lease>),
}

impl<H> Call<H> {
    /// The in-process `leader` contends for the store's lock (see the [module](self)), on the
    /// calling tokio runtime, or on cachestack's outside any.
    pub(super) async fn across<T>(&self, leader: Leader<'static>, bounds: Bounds) -> Across<T>
    where
        H: Hooks<T>,
        T: Send + 'static,
    {
        if tokio::runtime::Handle::try_current().is_ok() {
            return self.clone().contend(leader, bounds).await;
        }
        let call = self.clone();
        match crate::rt::handle() {
            Ok(runtime) => match runtime.spawn(call.contend::<T>(leader, bounds)).await {
                Ok(across) => across,
                Err(err) => std::panic::resume_unwind(err.into_panic()),
            },
            Err(err) => {
                self.state.record_cache_error("lock", &self.key, &err);
                Across::Compute(leader, None)
            }
        }
    }

    async fn contend<T>(self, leader: Leader<'static>, bounds: Bounds) -> Across<T>
    where
        H: Hooks<T>,
    {
        let Some(locks) = self.backend.locks() else {
            let err = check(&*self.backend, &self.options).err().unwrap_or_else(|| Error::config("no lock"));
            self.state.record_cache_error("lock", &self.key, &err);
            return Across::Compute(leader, None);
        };
        let lease = self.options.lock_lease();
        let until = self.wait_until(bounds);
        let mut pause = POLL_FIRST;
        let _waiting = Waiting::enter(&self.state);
        loop {
            let taken = match tokio::time::timeout(lease, locks.try_lock(&self.key, lease)).await {
                Ok(taken) => taken,
                Err(_) => Err(Error::Timeout { backend: self.backend.name().to_owned(), after: lease }),
            };
            match taken {
                Ok(Some(guard)) => {
                    let held = Lease::start(guard, lease, self.key.clone());
                    // The previous leader may have stored the value just before releasing.
                    if let Some((value, stored)) =
                        self.fresh_entry::<T>(read(&self.backend, &self.tags, &self.key).await, true)
                    {
                        if let Some(held) = held {
                            held.release().await;
                        }
                        leader.complete(|| Some(stored));
                        return Across::Value(value);
                    }
                    return Across::Compute(leader, held);
                }
                Ok(None) => {}
                Err(err) => {
                    self.state.record_cache_error("lock", &self.key, &err);
                    return Across::Compute(leader, None);
                }
            }
            if let Some((value, stored)) = self.fresh_entry::<T>(read(&self.backend, &self.tags, &self.key).await, true)
            {
                leader.complete(|| Some(stored));
                return Across::Value(value);
            }
            let now = Instant::now();
            if until.is_some_and(|until| now >= until) {
                return Across::TimedOut(leader);
            }
            let wake = now.checked_add(pause).unwrap_or(now);
            tokio::time::sleep_until(until.map_or(wake, |until| wake.min(until))).await;
            pause = next_pause(pause, lease);
        }
    }

    /// What the process's contender answers: the value found (`Waited`), or a timeout's answer
    /// (through [`Call::after_wait`]), or the leader to compute with and the lock it holds.
    pub(super) fn joined_across<T, E>(
        &self,
        across: Across<T>,
        fallback: &mut Option<T>,
        bounds: Bounds,
    ) -> super::engine::Joined<T, E>
    where
        H: Hooks<T>,
    {
        use super::engine::Joined;
        match across {
            Across::Value(value) => Joined::Answered(Ok(self.state.answer(value, CallStatus::Waited))),
            Across::Compute(leader, lease) => Joined::Compute(Some(leader), lease),
            // A timeout's answer ends the in-process flight (its waiters join again); computing
            // keeps it.
            Across::TimedOut(leader) => match self.after_wait(None, fallback, bounds) {
                Some(Joined::Compute(..)) | None => Joined::Compute(Some(leader), None),
                Some(answered) => answered,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;

    /// A lock that counts renewals and releases, and is lost at renewal `lost_at`.
    #[derive(Debug, Default)]
    struct Counted {
        renewals: Arc<AtomicUsize>,
        released: Arc<AtomicBool>,
        lost_at: Option<usize>,
    }

    #[async_trait]
    impl LockGuard for Counted {
        async fn renew(&mut self, _lease: Duration) -> Result<bool> {
            let n = self.renewals.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(self.lost_at != Some(n))
        }
        async fn release(self: Box<Self>) -> Result<()> {
            self.released.store(true, Ordering::SeqCst);
            Ok(())
        }
    }

    /// Lets every task that can run, run (paused time: the clock stands still meanwhile).
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_is_renewed_every_third_of_it_until_released() {
        let guard = Counted::default();
        let (renewals, released) = (guard.renewals.clone(), guard.released.clone());
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(keep(Box::new(guard), Duration::from_secs(3), stopped, Arc::from("k")));
        settle().await;
        assert_eq!(renewals.load(Ordering::SeqCst), 0, "no renewal before a third of the lease");
        tokio::time::advance(Duration::from_millis(999)).await;
        settle().await;
        assert_eq!(renewals.load(Ordering::SeqCst), 0);
        for expected in 1..=9 {
            tokio::time::advance(Duration::from_secs(1)).await;
            settle().await;
            assert_eq!(renewals.load(Ordering::SeqCst), expected, "one renewal per second of a 3s lease");
        }
        assert!(!released.load(Ordering::SeqCst));
        drop(stop);
        task.await.unwrap();
        assert!(released.load(Ordering::SeqCst), "a dropped lease releases its lock");
        assert_eq!(renewals.load(Ordering::SeqCst), 9);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_lock_is_neither_renewed_again_nor_released() {
        let guard = Counted { lost_at: Some(2), ..Counted::default() };
        let (renewals, released) = (guard.renewals.clone(), guard.released.clone());
        let (_stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(keep(Box::new(guard), Duration::from_secs(3), stopped, Arc::from("k")));
        tokio::time::advance(Duration::from_secs(10)).await;
        settle().await;
        task.await.unwrap();
        assert_eq!(renewals.load(Ordering::SeqCst), 2, "the renewal that found the lock gone is the last");
        assert!(!released.load(Ordering::SeqCst), "a lost lock may be another holder's: never released");
    }

    #[test]
    fn polling_backs_off_up_to_its_cap_and_half_the_lease() {
        let lease = Duration::from_secs(10);
        let mut pause = POLL_FIRST;
        let mut pauses = vec![pause];
        for _ in 0..8 {
            pause = next_pause(pause, lease);
            pauses.push(pause);
        }
        assert_eq!(&pauses[..4], &[5, 10, 20, 40].map(Duration::from_millis));
        assert_eq!(pauses.last(), Some(&POLL_MAX));
        assert_eq!(next_pause(POLL_MAX, Duration::from_millis(100)), Duration::from_millis(50));
        assert_eq!(renew_every(Duration::from_secs(3)), Duration::from_secs(1));
    }
}
