//! Resilience: serve the last good value when a computation fails (`stale_if_error`), answer at
//! once while it is redone in the background (`stale_while_revalidate`), refresh hot keys before
//! they expire (`refresh_ahead`), bound the wait (`timeout`, `hard_timeout`, `lock_timeout`) and
//! spread expiries (`jitter`). See [`Cache::get_or_compute`](crate::Cache::get_or_compute).
//!
//! How an entry is kept: the store holds it until its fresh deadline plus the longest stale
//! window (a deadline fixed when it is written, like every deadline in cachestack), and the
//! stored value carries its fresh deadline, so that every store, a user-written one included,
//! keeps stale values without knowing about them.
//!
//! - `engine.rs`: a call: its read, single flight and its waits, background refreshes.
//! - `state.rs`: the per-cache state ([`ComputeState`]: flights, throttle, clock, counters) and
//!   the decision a call takes from what it read, by the value's freshness.
//! - `computation.rs`: running a computation (as a task, awaited within the bounds), storing its
//!   value, ending its flight.
//! - `distributed.rs`: single flight across processes (`LockMode::Distributed`): the store's
//!   lock, its renewal, and the wait for another process's value.
//! - `here.rs`: computations the caller runs itself, on its own task or thread (the path of
//!   `#[cached]` functions, whose bodies borrow their arguments).
//! - `task.rs`: the pieces a computation runs with (tasks, watches, bounded waits, counters).
//! - `options.rs`: [`ComputeOptions`] and their checks.
//! - `clock.rs`: [`Clock`], the time freshness is decided by ([`ManualClock`] for tests).
//! - `throttle.rs`: the per-key record of recent failures (`stale_throttle`).
//! - `cache_api.rs`: the [`Cache`](crate::Cache) methods.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::expiry::Deadline;
use crate::value::{Cacheable, Value};

mod cache_api;
mod clock;
mod computation;
mod distributed;
mod engine;
mod here;
mod options;
mod state;
mod task;
mod throttle;

pub(crate) use cache_api::{on_blocking_pool, runtime_failure};
pub use clock::{Clock, ManualClock, SystemClock};
pub(crate) use distributed::check as check_lock;
pub(crate) use engine::{read, Answer, Call, Failure, Hooks};
pub(crate) use here::read_blocking;
pub use options::{
    ComputeOptions, ComputeOptionsBuilder, LockMode, RefreshAhead, DEFAULT_LOCK_LEASE, DEFAULT_STALE_THROTTLE,
};
pub(crate) use state::{ComputeState, Decision};

impl ComputeState {
    /// A state on the system clock, to share between the clones of one cache.
    pub(crate) fn shared() -> Arc<Self> {
        Arc::new(ComputeState::new(Arc::new(SystemClock)))
    }
}

/// What the engine stores: the value with its fresh deadline (Unix milliseconds, 0: always
/// fresh). A key written by `get_or_compute` or by a `#[cached]` function with resilience options
/// holds a `Stamped<T>`.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Stamped<T> {
    fresh_until: u64,
    value: T,
}

impl<T: Cacheable> Stamped<T> {
    /// `value` stamped with its fresh deadline (`None`: always fresh).
    pub(crate) fn encode(value: &T, fresh_until: Option<Deadline>) -> Value {
        let fresh_until = fresh_until.map_or(0, Deadline::unix_millis);
        Value::new(Stamped { fresh_until, value: value.clone() })
    }

    /// A stored stamped value and its fresh deadline; `None` when it cannot be read as `T`
    /// (counted and logged by [`Cache::decode`]).
    pub(crate) fn decode(cache: &Cache, key: &str, value: &Value) -> Option<(T, Option<Deadline>)> {
        let stamped = match value.typed_ref::<Stamped<T>>() {
            Some(stamped) => stamped.clone(),
            None => cache.decode::<Stamped<T>>(key, value)?,
        };
        Some((stamped.value, Deadline::from_unix_millis(stamped.fresh_until)))
    }
}

/// How a call was served: what an HTTP handler puts in an `x-cache` header.
///
/// ```
/// use cachestack::CallStatus;
/// assert_eq!(CallStatus::Stale.as_str(), "stale");
/// assert_eq!(CallStatus::Hit.to_string(), "hit");
/// assert!(CallStatus::Waited.is_from_cache());
/// assert!(!CallStatus::Miss.is_from_cache());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallStatus {
    /// A fresh value from the cache.
    Hit,
    /// The computation ran for this caller.
    Miss,
    /// A stale value: the computation failed (`stale_if_error`), is being redone in the
    /// background (`stale_while_revalidate`), or passed the soft timeout.
    Stale,
    /// Another caller's computation of the same key was awaited (single flight).
    Waited,
}

impl CallStatus {
    /// `"hit"`, `"miss"`, `"stale"` or `"waited"`.
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Hit => "hit",
            CallStatus::Miss => "miss",
            CallStatus::Stale => "stale",
            CallStatus::Waited => "waited",
        }
    }

    /// True unless the computation ran for this caller.
    pub fn is_from_cache(self) -> bool {
        self != CallStatus::Miss
    }
}

impl fmt::Display for CallStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of a call that passed its hard timeout: the caller stopped waiting (the computation
/// goes on in the background and stores its value when done).
///
/// A computation's error type receives it through `From<Timeout>`; `cachestack::Error` does
/// (as [`Error::Timeout`](crate::Error::Timeout)), and so does any `Box<dyn Error>`.
///
/// ```
/// use std::time::Duration;
/// use cachestack::Timeout;
///
/// let t = Timeout::after(Duration::from_secs(2));
/// assert_eq!(t.to_string(), "the computation did not finish within 2s");
/// let err: cachestack::Error = t.into();
/// assert!(err.is_unavailable());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timeout {
    after: Duration,
}

impl Timeout {
    /// A timeout after `after`.
    pub fn after(after: Duration) -> Self {
        Timeout { after }
    }

    /// The bound that passed.
    pub fn duration(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the computation did not finish within {}", crate::ttl::format_ttl(self.after))
    }
}

impl std::error::Error for Timeout {}

impl From<Timeout> for crate::Error {
    fn from(timeout: Timeout) -> Self {
        crate::Error::Timeout { backend: "computation".into(), after: timeout.after }
    }
}

/// Counters of [`Cache::get_or_compute`](crate::Cache::get_or_compute) calls, from
/// [`Cache::compute_stats`](crate::Cache::compute_stats).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ComputeStats {
    /// Calls answered with a fresh value.
    pub hits: u64,
    /// Calls that ran the computation.
    pub misses: u64,
    /// Calls answered with a stale value.
    pub stale: u64,
    /// Calls that awaited another caller's computation.
    pub waited: u64,
    /// Background refreshes started (`stale_while_revalidate`, `refresh_ahead`).
    pub refreshes: u64,
    /// Failed computations answered with a stale value (`stale_if_error`).
    pub failures_absorbed: u64,
    /// Computations that failed with nobody waiting: background refreshes, and computations
    /// whose caller left at a timeout. Each is also logged (`tracing`, warn).
    pub background_failures: u64,
    /// Calls that ended at their hard timeout.
    pub timeouts: u64,
    /// Cache reads and writes that failed (the call went on as a miss; logged).
    pub cache_errors: u64,
    /// Computations running right now.
    pub running: usize,
    /// Callers waiting for another caller's computation right now.
    pub waiting: usize,
}
