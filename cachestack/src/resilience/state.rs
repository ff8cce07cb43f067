//! The state the resilience engine keeps per cache ([`ComputeState`]: single flight, the failure
//! throttle, the clock, the counters, the computations still running), and what a call decides
//! from the value it read ([`Decision`]), by the value's freshness.

use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::clock::Clock;
use super::engine::Hooks;
use super::options::ComputeOptions;
use super::throttle::Throttle;
use super::{CallStatus, ComputeStats};
use crate::error::{Error, Result};
use crate::expiry::Deadline;
use crate::singleflight::{Leader, SingleFlight};
use crate::store::Entry;
use crate::striped::StripedCounter;

/// How a stored value stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Freshness {
    /// Within its TTL; `refresh`: in the refresh-ahead window.
    Fresh { refresh: bool },
    /// Past its TTL, within `stale_while_revalidate`: answer it and refresh in the background.
    Revalidate,
    /// Past its TTL, within `stale_if_error`: compute, and answer it if that fails or is slow.
    Fallback,
    /// Past every window: as good as missing.
    Gone,
}

pub(super) fn freshness(options: &ComputeOptions, fresh_until: Option<Deadline>, now: SystemTime) -> Freshness {
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
pub(super) struct Counters {
    /// Striped: bumped on every hit, from every thread.
    pub(super) hits: StripedCounter,
    pub(super) misses: AtomicU64,
    pub(super) stale: AtomicU64,
    pub(super) waited: AtomicU64,
    pub(super) refreshes: AtomicU64,
    pub(super) failures_absorbed: AtomicU64,
    pub(super) background_failures: AtomicU64,
    pub(super) timeouts: AtomicU64,
    pub(super) cache_errors: AtomicU64,
}

pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The state the engine keeps per cache: single flight, the failure throttle, the clock, the
/// counters, and the computations still running.
pub(crate) struct ComputeState {
    pub(super) flights: Arc<SingleFlight>,
    pub(super) throttle: Throttle,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) counters: Counters,
    pub(super) running: AtomicUsize,
    pub(super) idle: tokio::sync::Notify,
    /// Callers waiting for another caller's computation right now.
    pub(super) waiting: AtomicUsize,
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

    pub(super) fn record_cache_error(&self, op: &'static str, key: &str, err: &Error) {
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
