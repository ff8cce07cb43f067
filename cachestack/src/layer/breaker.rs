//! The circuit breaker.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::error::Error;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A simple circuit breaker for remote layers: after `failure_threshold` failures in a row the
/// layer is bypassed for `cool_down`, then probed by one call.
///
/// Failures are errors about the store (unreachable, timed out, I/O...), not about one value
/// (undecodable, too large). In-process layers never fail and have no breaker.
///
/// ```
/// use std::time::Duration;
/// let breaker = cachestack::BreakerConfig::new(5, Duration::from_secs(30));
/// assert_eq!(breaker.failure_threshold, 5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (at least 1).
    pub failure_threshold: u32,
    /// How long an open breaker bypasses the layer before probing it.
    pub cool_down: Duration,
}

impl BreakerConfig {
    /// Opens after `failure_threshold` consecutive failures, for `cool_down`.
    pub fn new(failure_threshold: u32, cool_down: Duration) -> Self {
        BreakerConfig { failure_threshold: failure_threshold.max(1), cool_down }
    }
}

/// True for errors that say the store is in trouble (as opposed to one value being unusable).
pub fn is_store_failure(err: &Error) -> bool {
    !(err.is_invalid_value() || matches!(err, Error::ValueTooLarge { .. }))
}

/// Breaker state of one remote layer.
pub struct Circuit {
    pub config: BreakerConfig,
    pub state: Mutex<CircuitState>,
}

#[derive(Default)]
pub struct CircuitState {
    pub failures: u32,
    pub open_until: Option<tokio::time::Instant>,
    pub probing: bool,
}

/// Admission of one call through a breaker; a probe that is dropped unfinished (its future was
/// cancelled) lets the next call probe instead.
pub struct Permit<'a> {
    pub breaker: &'a Circuit,
    pub probe: bool,
    pub finished: bool,
}

impl Permit<'_> {
    pub fn finish(mut self, failed: bool) {
        self.finished = true;
        self.breaker.record(self.probe, failed);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.finished && self.probe {
            lock(&self.breaker.state).probing = false;
        }
    }
}

impl Circuit {
    pub fn new(config: BreakerConfig) -> Self {
        Circuit { config, state: Mutex::new(CircuitState::default()) }
    }

    pub fn admit(&self) -> Option<Permit<'_>> {
        let mut state = lock(&self.state);
        let probe = match state.open_until {
            None => false,
            Some(until) if state.probing || tokio::time::Instant::now() < until => return None,
            Some(_) => {
                state.probing = true;
                true
            }
        };
        Some(Permit { breaker: self, probe, finished: false })
    }

    pub fn record(&self, probe: bool, failed: bool) {
        let mut state = lock(&self.state);
        if probe {
            state.probing = false;
        }
        if failed {
            state.failures = state.failures.saturating_add(1);
            if probe || state.failures >= self.config.failure_threshold {
                if state.open_until.is_none() {
                    tracing::warn!(failures = state.failures, cool_down = ?self.config.cool_down, "cachestack: tiered layer bypassed after consecutive failures");
                }
                state.open_until = tokio::time::Instant::now().checked_add(self.config.cool_down);
            }
        } else {
            if state.open_until.is_some() {
                tracing::info!("cachestack: tiered layer answered again; breaker closed");
            }
            state.failures = 0;
            state.open_until = None;
        }
    }

    pub fn describe(&self) -> &'static str {
        let state = lock(&self.state);
        match state.open_until {
            None => "closed",
            Some(until) if tokio::time::Instant::now() < until => "open",
            Some(_) => "half-open",
        }
    }
}
