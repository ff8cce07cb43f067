//! Time: an entry's deadline is a point in time fixed once, when the caller writes it.
//!
//! A write carries an [`Expiry`]; the first party that knows the store's default TTL turns it
//! into a [`Deadline`] (a point in wall-clock time, so that it means the same thing in every
//! process and on every server), and from then on the deadline travels unchanged: through
//! write-back queues, retries, backfills and network calls. Nothing in transit can extend an
//! entry's life. Every store checks the deadline on read.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The point in time at which an entry stops being served, with millisecond precision.
///
/// Wall-clock time (not [`std::time::Instant`]), because the deadline is shared with other
/// processes and servers: it is sealed in the value envelope and given to Redis as `PXAT`.
///
/// ```
/// use std::time::Duration;
/// use cachestack::Deadline;
///
/// let deadline = Deadline::after(Duration::from_secs(60));
/// assert!(!deadline.has_passed());
/// assert!(deadline.remaining() <= Duration::from_secs(60));
/// assert_eq!(Deadline::from_unix_millis(deadline.unix_millis()), Some(deadline));
/// assert!(!Deadline::after(Duration::MAX).has_passed(), "saturates at the end of year 9999");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline {
    unix_ms: u64,
}

/// The latest deadline: the end of year 9999 (what Redis and PostgreSQL can hold, and well
/// inside every platform's `SystemTime`). A TTL that would reach past it saturates to it.
const LATEST_MS: u64 = 253_402_300_799_999;

impl Deadline {
    /// `ttl` from now.
    pub fn after(ttl: Duration) -> Self {
        Self::after_from(SystemTime::now(), ttl)
    }

    /// `ttl` after `start`, saturating instead of overflowing.
    pub fn after_from(start: SystemTime, ttl: Duration) -> Self {
        let start = Self::at(start).unix_ms;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        // Round a sub-millisecond TTL up so that a positive TTL never yields "already passed".
        let ttl_ms = if ttl_ms == 0 && !ttl.is_zero() { 1 } else { ttl_ms };
        Deadline { unix_ms: start.saturating_add(ttl_ms).min(LATEST_MS) }
    }

    /// The deadline at wall-clock time `time` (times before the Unix epoch clamp to it).
    pub fn at(time: SystemTime) -> Self {
        let ms = time.duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(LATEST_MS));
        Deadline { unix_ms: ms.unwrap_or(0).min(LATEST_MS) }
    }

    /// The deadline `ms` milliseconds after the Unix epoch; `None` for 0 (which the envelope
    /// uses for "never"). A value past the latest deadline (a corrupt header) is brought forward to
    /// it, never read as "no expiry".
    pub fn from_unix_millis(ms: u64) -> Option<Self> {
        (ms != 0).then_some(Deadline { unix_ms: ms.min(LATEST_MS) })
    }

    /// Milliseconds since the Unix epoch (never 0).
    pub fn unix_millis(self) -> u64 {
        self.unix_ms.max(1)
    }

    /// As a [`SystemTime`].
    pub fn time(self) -> SystemTime {
        // In range on every platform: `unix_ms` is at most the end of year 9999.
        UNIX_EPOCH.checked_add(Duration::from_millis(self.unix_ms)).unwrap_or(UNIX_EPOCH)
    }

    /// The time left before the deadline; zero once it has passed.
    pub fn remaining(self) -> Duration {
        self.remaining_at(SystemTime::now())
    }

    /// The time left at `now`; zero once it has passed.
    pub fn remaining_at(self, now: SystemTime) -> Duration {
        Duration::from_millis(self.unix_ms.saturating_sub(Self::at(now).unix_ms))
    }

    /// True once the deadline is reached: the entry must no longer be served.
    pub fn has_passed(self) -> bool {
        self.has_passed_at(SystemTime::now())
    }

    /// True if the deadline is reached at `now`.
    pub fn has_passed_at(self, now: SystemTime) -> bool {
        Self::at(now).unix_ms >= self.unix_ms
    }

    /// The earlier of two optional deadlines (`None` is "never").
    pub fn earliest(a: Option<Deadline>, b: Option<Deadline>) -> Option<Deadline> {
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, None) => a,
            (None, b) => b,
        }
    }
}

impl fmt::Debug for Deadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let now = Deadline::at(SystemTime::now()).unix_ms;
        if self.unix_ms > now {
            write!(f, "Deadline(in {} ms)", self.unix_ms - now)
        } else {
            write!(f, "Deadline({} ms ago)", now - self.unix_ms)
        }
    }
}

/// How long an entry being written lives: what a write carries to a store.
///
/// `Default` means "this store's default TTL, counted from now": a store resolves it with
/// [`Expiry::resolve`] when the write reaches it, and a tiered stack resolves it for every layer
/// when the caller writes, before any queue. Build one from a caller's TTL with
/// [`Expiry::from_ttl`].
///
/// ```
/// use std::time::Duration;
/// use cachestack::{Deadline, Expiry};
///
/// assert_eq!(Expiry::from_ttl(None), Expiry::Default);
/// assert_eq!(Expiry::Default.resolve(None), None);
/// let at = Expiry::Default.resolve(Some(Duration::from_secs(5))).unwrap();
/// assert!(at.remaining() <= Duration::from_secs(5));
/// assert_eq!(Expiry::Never.resolve(Some(Duration::from_secs(5))), None);
/// let fixed = Deadline::after(Duration::from_secs(1));
/// assert_eq!(Expiry::At(fixed).resolve(Some(Duration::from_secs(5))), Some(fixed));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Expiry {
    /// The store's default TTL from the moment the write is made (no expiry if it has none).
    #[default]
    Default,
    /// Never expires.
    Never,
    /// Expires at this point in time.
    At(Deadline),
}

impl Expiry {
    /// A caller's TTL: `None` is the store's default, `Some(ttl)` a deadline `ttl` from now.
    pub fn from_ttl(ttl: Option<Duration>) -> Self {
        match ttl {
            None => Expiry::Default,
            Some(ttl) => Expiry::At(Deadline::after(ttl)),
        }
    }

    /// `ttl` from now.
    pub fn after(ttl: Duration) -> Self {
        Expiry::At(Deadline::after(ttl))
    }

    /// The deadline this write gets in a store whose default TTL is `default_ttl`, counted from
    /// now (`None`: never expires).
    pub fn resolve(self, default_ttl: Option<Duration>) -> Option<Deadline> {
        self.resolve_from(SystemTime::now(), default_ttl)
    }

    /// As [`Expiry::resolve`], for a write made at `written`.
    pub fn resolve_from(self, written: SystemTime, default_ttl: Option<Duration>) -> Option<Deadline> {
        match self {
            Expiry::Default => default_ttl.map(|ttl| Deadline::after_from(written, ttl)),
            Expiry::Never => None,
            Expiry::At(deadline) => Some(deadline),
        }
    }
}

impl From<Deadline> for Expiry {
    fn from(deadline: Deadline) -> Self {
        Expiry::At(deadline)
    }
}

impl From<Option<Deadline>> for Expiry {
    /// `None` is [`Expiry::Never`]: what a read returned, written elsewhere unchanged.
    fn from(deadline: Option<Deadline>) -> Self {
        deadline.map_or(Expiry::Never, Expiry::At)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_saturate_and_round_up() {
        let far = Deadline::after(Duration::MAX);
        assert!(!far.has_passed());
        assert_eq!(far.unix_millis(), LATEST_MS);
        let tiny = Deadline::after_from(UNIX_EPOCH + Duration::from_secs(10), Duration::from_nanos(1));
        assert_eq!(tiny.unix_millis(), 10_001);
        assert!(Deadline::from_unix_millis(0).is_none());
        assert_eq!(Deadline::from_unix_millis(u64::MAX).map(Deadline::unix_millis), Some(LATEST_MS));
    }

    #[test]
    fn a_deadline_does_not_move() {
        let start = UNIX_EPOCH + Duration::from_secs(1_000);
        let d = Deadline::after_from(start, Duration::from_secs(5));
        assert_eq!(d.remaining_at(start + Duration::from_secs(2)), Duration::from_secs(3));
        assert!(!d.has_passed_at(start + Duration::from_millis(4_999)));
        assert!(d.has_passed_at(start + Duration::from_secs(5)));
        assert_eq!(d.remaining_at(start + Duration::from_secs(9)), Duration::ZERO);
        let written = Expiry::Default.resolve_from(start, Some(Duration::from_secs(5)));
        assert_eq!(written, Some(d));
    }
}
