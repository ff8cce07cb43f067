//! [`Clock`]: the time the resilience engine decides freshness by, injectable for tests.

use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// The wall-clock time by which [`get_or_compute`](crate::Cache::get_or_compute) decides whether a
/// value is fresh, stale or gone, and stamps the deadlines of the values it writes.
///
/// [`SystemClock`] is the default; [`ManualClock`] lets tests move time by hand (set it with
/// [`Cache::with_clock`](crate::Cache::with_clock)). Timeouts are not measured with it: they run
/// on tokio's timer, which tests pause with `#[tokio::test(start_paused = true)]`.
///
/// ```
/// use std::time::SystemTime;
/// use cachestack::Clock;
///
/// #[derive(Debug)]
/// struct Frozen(SystemTime);
/// impl Clock for Frozen {
///     fn now(&self) -> SystemTime { self.0 }
/// }
/// let clock = Frozen(SystemTime::UNIX_EPOCH);
/// assert_eq!(clock.now(), SystemTime::UNIX_EPOCH);
/// ```
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The system's wall clock.
///
/// ```
/// use cachestack::{Clock, SystemClock};
/// assert!(SystemClock.now() > std::time::SystemTime::UNIX_EPOCH);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to: for tests of TTL logic that must not sleep.
///
/// It starts at the current system time, so that deadlines the stores check against the real
/// clock stay in the future while the test moves this one forward.
///
/// ```
/// use std::time::Duration;
/// use cachestack::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let start = clock.now();
/// clock.advance(Duration::from_secs(90));
/// assert_eq!(clock.now().duration_since(start).unwrap(), Duration::from_secs(90));
/// ```
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<SystemTime>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A clock standing at the current system time.
    pub fn new() -> Self {
        Self::starting_at(SystemTime::now())
    }

    /// A clock standing at `time`.
    pub fn starting_at(time: SystemTime) -> Self {
        ManualClock { now: Mutex::new(time) }
    }

    /// Moves the clock forward by `by` (saturating at the latest time the platform can hold).
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now = now.checked_add(by).unwrap_or(*now);
    }

    /// Sets the clock to `time`.
    pub fn set(&self, time: SystemTime) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = time;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
