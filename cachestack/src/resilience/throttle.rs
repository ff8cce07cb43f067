//! The per-key record of recent failures that keeps fail-safe callers off a failing dependency.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

/// How many keys the record holds at most. When it is full, records that have run out are
/// dropped, then (if it is still full) an arbitrary one: a lost record costs one extra
/// computation for its key, never a wrong answer.
const CAPACITY: usize = 10_000;

/// Keys whose computation failed recently, each with the time until which callers are answered
/// with the stale value without computing. In process, bounded by [`CAPACITY`].
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    until: Mutex<HashMap<Box<str>, SystemTime>>,
}

impl Throttle {
    fn map(&self) -> MutexGuard<'_, HashMap<Box<str>, SystemTime>> {
        self.until.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Throttles `key` until `until` (a failure at `now`).
    pub(crate) fn record(&self, key: &str, now: SystemTime, until: SystemTime) {
        let mut map = self.map();
        if map.len() >= CAPACITY && !map.contains_key(key) {
            map.retain(|_, until| *until > now);
            if map.len() >= CAPACITY
                && let Some(victim) = map.keys().next().cloned()
            {
                map.remove(&victim);
            }
        }
        map.insert(key.into(), until);
    }

    /// True while a failure of `key` throttles it at `now`.
    pub(crate) fn is_throttled(&self, key: &str, now: SystemTime) -> bool {
        let mut map = self.map();
        match map.get(key) {
            Some(until) if *until > now => true,
            Some(_) => {
                map.remove(key);
                false
            }
            None => false,
        }
    }

    /// A success of `key` ends its throttle.
    pub(crate) fn clear(&self, key: &str) {
        let mut map = self.map();
        if !map.is_empty() {
            map.remove(key);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_record_lasts_until_its_time_and_a_success_clears_it() {
        let t = Throttle::default();
        let now = SystemTime::now();
        t.record("k", now, now + Duration::from_secs(5));
        assert!(t.is_throttled("k", now + Duration::from_secs(4)));
        assert!(!t.is_throttled("other", now));
        assert!(!t.is_throttled("k", now + Duration::from_secs(5)));
        assert_eq!(t.len(), 0, "an expired record is dropped when looked at");
        t.record("k", now, now + Duration::from_secs(5));
        t.clear("k");
        assert!(!t.is_throttled("k", now));
    }

    #[test]
    fn the_record_is_bounded() {
        let t = Throttle::default();
        let now = SystemTime::now();
        for i in 0..CAPACITY + 100 {
            t.record(&format!("k{i}"), now, now + Duration::from_secs(60));
        }
        assert_eq!(t.len(), CAPACITY);
        assert!(t.is_throttled(&format!("k{}", CAPACITY + 99), now), "the newest record is kept");
    }
}
