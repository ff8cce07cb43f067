//! Whether one memcached server takes requests: the per-server down-marking that rendezvous
//! hashing needs (a dead server costs only its own keys, and quickly).
//!
//! A connection failure (refused or timed-out connect, a connection reset or closed), or three
//! requests in a row abandoned unfinished (cut off by the [`Timeout`](crate::layer::Timeout)
//! layer, or by a caller that stopped waiting) with no success in between, marks the server
//! **down**: every connection opened before is retired (an epoch counter), and requests for its
//! keys fail at once with [`Error::BackendUnavailable`](crate::Error::BackendUnavailable) (a miss
//! under the [`Silent`](crate::layer::Silent) layer, or the next server with failover) instead of
//! each waiting for a timeout. After `retry_interval` one request is let through as a probe; its
//! success marks the server **up** again.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::AcqRel, Ordering::Acquire, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Abandoned requests in a row that mark a server down.
const ABANDONED_TO_MARK_DOWN: u32 = 3;

/// Up or down, for one server; shared by its pool manager and its requests.
#[derive(Debug)]
pub(crate) struct Availability {
    addr: String,
    base: Instant,
    /// 0: up. Otherwise the time (ms since `base`, plus one) before which requests fail fast.
    down_until_ms: AtomicU64,
    /// Bumped whenever the server's connections are to be retired.
    epoch: AtomicU64,
    abandoned_in_row: AtomicU32,
    retry_interval: Duration,
}

impl Availability {
    pub fn new(addr: String, retry_interval: Duration) -> Self {
        Availability {
            addr,
            base: Instant::now(),
            down_until_ms: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            abandoned_in_row: AtomicU32::new(0),
            retry_interval,
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Milliseconds since this value was made, plus one (never 0).
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX - 1).saturating_add(1)
    }

    fn retry_ms(&self) -> u64 {
        u64::try_from(self.retry_interval.as_millis()).unwrap_or(u64::MAX).max(1)
    }

    pub fn is_up(&self) -> bool {
        self.down_until_ms.load(Acquire) == 0
    }

    /// The connection epoch: connections opened in an older one are discarded.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Acquire)
    }

    /// Retires every connection opened so far (without marking the server down).
    pub fn retire_connections(&self) {
        self.epoch.fetch_add(1, AcqRel);
    }

    /// Ok when a request may go to this server: it is up, or it is down and this caller won the
    /// right to probe it. Err carries the time until the next probe.
    pub fn admit(&self) -> Result<(), Duration> {
        let until = self.down_until_ms.load(Acquire);
        if until == 0 {
            return Ok(());
        }
        let now = self.now_ms();
        if now < until {
            return Err(Duration::from_millis(until - now));
        }
        let next = now.saturating_add(self.retry_ms());
        match self.down_until_ms.compare_exchange(until, next, AcqRel, Acquire) {
            Ok(_) => Ok(()),
            Err(_) => Err(self.retry_interval),
        }
    }

    /// The time left before the next probe (zero when up or due).
    pub fn retry_in(&self) -> Duration {
        Duration::from_millis(self.down_until_ms.load(Acquire).saturating_sub(self.now_ms()))
    }

    pub fn mark_down(&self, why: &dyn fmt::Display) {
        self.retire_connections();
        let until = self.now_ms().saturating_add(self.retry_ms());
        if self.down_until_ms.swap(until, AcqRel) == 0 {
            tracing::warn!(server = %self.addr, error = %why, retry_in = ?self.retry_interval, "cachestack: memcached server marked down");
        }
    }

    pub fn mark_up(&self) {
        self.abandoned_in_row.store(0, Relaxed);
        if self.down_until_ms.load(Acquire) != 0 && self.down_until_ms.swap(0, AcqRel) != 0 {
            tracing::info!(server = %self.addr, "cachestack: memcached server is back");
        }
    }

    /// A request sent to this server was dropped before its answer arrived.
    pub fn record_abandoned(&self) {
        if self.abandoned_in_row.fetch_add(1, Relaxed).saturating_add(1) >= ABANDONED_TO_MARK_DOWN {
            self.abandoned_in_row.store(0, Relaxed);
            self.mark_down(&format_args!("{ABANDONED_TO_MARK_DOWN} requests in a row got no answer in time"));
        }
    }
}

/// A request on the wire: dropped before [`InFlight::land`], it counts as abandoned.
pub(crate) struct InFlight<'a> {
    availability: &'a Availability,
    landed: bool,
}

impl<'a> InFlight<'a> {
    pub fn start(availability: &'a Availability) -> Self {
        InFlight { availability, landed: false }
    }

    /// The request got its answer (or failed on its own).
    pub fn land(mut self) {
        self.landed = true;
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.landed {
            self.availability.record_abandoned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_down_server_fails_fast_until_one_probe_is_let_through() {
        let a = Availability::new("127.0.0.1:1".into(), Duration::from_secs(3600));
        assert!(a.admit().is_ok());
        a.mark_down(&"refused");
        assert_eq!(a.epoch(), 1, "connections opened before are retired");
        assert!(!a.is_up());
        assert!(a.admit().is_err(), "requests fail fast during the retry interval");
        a.down_until_ms.store(1, Relaxed); // the interval is over
        assert!(a.admit().is_ok(), "the first caller probes");
        assert!(a.admit().is_err(), "others fail fast while the probe runs");
        a.mark_up();
        assert!(a.is_up());
        assert!(a.admit().is_ok());
    }

    #[test]
    fn abandoned_requests_in_a_row_mark_a_server_down_and_a_success_resets_the_count() {
        let a = Availability::new("127.0.0.1:1".into(), Duration::from_secs(60));
        drop(InFlight::start(&a));
        drop(InFlight::start(&a));
        a.mark_up();
        InFlight::start(&a).land();
        drop(InFlight::start(&a));
        drop(InFlight::start(&a));
        assert!(a.is_up());
        drop(InFlight::start(&a));
        assert!(!a.is_up());
        assert!(a.admit().is_err());
    }
}
