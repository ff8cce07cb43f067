//! [`TagTimes`]: the invalidation times of tags, read from the shared tier and kept in process
//! for a bounded time.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use super::{tag_key, validate_tag, TagStamp};
use crate::error::{Error, Result};
use crate::expiry::Expiry;
use crate::store::Backend;
use crate::value::Value;

/// How long a cache trusts a tag's invalidation time it read from the shared tier before it
/// reads it again: an invalidation made by another process is seen within this bound (without a
/// backplane). Set per cache with [`Cache::with_tag_freshness`](crate::Cache::with_tag_freshness).
pub const DEFAULT_TAG_FRESHNESS: Duration = Duration::from_secs(1);

/// Most tags whose invalidation times a cache keeps in process; past it the kept times are
/// dropped (and read again when needed).
pub const MAX_KNOWN_TAGS: usize = 10_000;

/// A tag's invalidation time as this process knows it.
#[derive(Debug, Clone, Copy)]
struct Known {
    /// Unix microseconds of the latest invalidation, 0: never invalidated.
    invalidated_us: u64,
    /// When it was read (or recorded), by the cache's clock, in Unix microseconds.
    checked_us: u64,
}

/// The invalidation times of tags a cache has read, each trusted for `freshness`.
#[derive(Debug)]
pub(crate) struct TagTimes {
    known: RwLock<HashMap<String, Known>>,
    freshness_us: u64,
}

impl TagTimes {
    pub(crate) fn new(freshness: Duration) -> Self {
        let freshness_us = u64::try_from(freshness.as_micros()).unwrap_or(u64::MAX);
        TagTimes { known: RwLock::new(HashMap::new()), freshness_us }
    }

    /// The verdict on `stamp` from the times known in process at `now_us`: `Some(false)` when a
    /// known time invalidates it, `Some(true)` when every tag is known and none does, `None` when
    /// a time must be read first.
    pub(crate) fn known(&self, stamp: &TagStamp, now_us: u64) -> Option<bool> {
        let known = self.known.read().unwrap_or_else(PoisonError::into_inner);
        let mut unknown = false;
        for tag in stamp.tags.iter() {
            match known.get(tag.as_str()) {
                Some(k) if now_us.saturating_sub(k.checked_us) < self.freshness_us => {
                    if !stamp.survives(k.invalidated_us) {
                        return Some(false);
                    }
                }
                _ => unknown = true,
            }
        }
        (!unknown).then_some(true)
    }

    /// Whether an entry with `stamp` may be served at `now_us`, reading from `tier` the times not
    /// known in process (or no longer trusted).
    pub(crate) async fn current(&self, tier: &dyn Backend, stamp: &TagStamp, now_us: u64) -> Result<bool> {
        if let Some(verdict) = self.known(stamp, now_us) {
            return Ok(verdict);
        }
        for tag in stamp.tags.iter() {
            let invalidated_us = match self.fresh(tag, now_us) {
                Some(known) => known,
                None => self.fetch(tier, tag, now_us).await?,
            };
            if !stamp.survives(invalidated_us) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn fresh(&self, tag: &str, now_us: u64) -> Option<u64> {
        let known = self.known.read().unwrap_or_else(PoisonError::into_inner);
        known.get(tag).filter(|k| now_us.saturating_sub(k.checked_us) < self.freshness_us).map(|k| k.invalidated_us)
    }

    /// Reads `tag`'s invalidation time from the shared tier and keeps it.
    async fn fetch(&self, tier: &dyn Backend, tag: &str, now_us: u64) -> Result<u64> {
        let invalidated_us = stored_time(tier, tag).await?;
        self.remember(tag, Known { invalidated_us, checked_us: now_us });
        Ok(invalidated_us)
    }

    /// Records in the shared tier that `tag` was invalidated at `now_us` (never moving a recorded
    /// time back, e.g. one recorded by a process whose clock is ahead), and knows it at once.
    pub(crate) async fn invalidate(&self, tier: &dyn Backend, tag: &str, now_us: u64) -> Result<u64> {
        validate_tag(tag)?;
        let at = stored_time(tier, tag).await.unwrap_or(0).max(now_us);
        tier.set(&tag_key(tag), Value::new(at), Expiry::Never).await?;
        self.remember(tag, Known { invalidated_us: at, checked_us: now_us });
        Ok(at)
    }

    /// Drops the times of `tags` known in process: the next read of an entry carrying one of
    /// them reads its time from the shared tier.
    pub(crate) fn forget(&self, tags: &[String]) {
        let mut known = self.known.write().unwrap_or_else(PoisonError::into_inner);
        for tag in tags {
            known.remove(tag.as_str());
        }
    }

    /// Drops every time known in process (after a backplane outage: the invalidations announced
    /// meanwhile were missed).
    pub(crate) fn forget_all(&self) {
        self.known.write().unwrap_or_else(PoisonError::into_inner).clear();
    }

    fn remember(&self, tag: &str, new: Known) {
        let mut known = self.known.write().unwrap_or_else(PoisonError::into_inner);
        if known.len() >= MAX_KNOWN_TAGS && !known.contains_key(tag) {
            known.clear();
        }
        let slot = known.entry(tag.to_owned()).or_insert(new);
        // A later invalidation known in process is never replaced by an older time read.
        slot.invalidated_us = slot.invalidated_us.max(new.invalidated_us);
        slot.checked_us = new.checked_us;
    }
}

/// The invalidation time of `tag` recorded in `tier` (0: none).
async fn stored_time(tier: &dyn Backend, tag: &str) -> Result<u64> {
    match tier.get(&tag_key(tag)).await? {
        None => Ok(0),
        Some(entry) => entry.value.get::<u64>().map_err(|err| {
            Error::invalid(format!(
                "the invalidation time of tag `{tag}` is unreadable ({err}); invalidate the tag again"
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryBackend;

    fn stamp(written_us: u64, tags: &[&str]) -> TagStamp {
        TagStamp::new(written_us, tags.iter().map(|t| t.to_string()).collect())
    }

    #[tokio::test]
    async fn times_are_read_once_per_freshness_and_invalidations_win_ties() {
        let tier = MemoryBackend::with_capacity(100);
        let times = TagTimes::new(Duration::from_micros(1_000));
        let s = stamp(10_000, &["a", "b"]);
        assert_eq!(times.known(&s, 10_000), None);
        assert!(times.current(&tier, &s, 10_000).await.unwrap());
        assert_eq!(times.known(&s, 10_999), Some(true));
        assert_eq!(times.known(&s, 11_000), None, "trusted for the freshness only");
        // Another process records an invalidation: seen once the kept time is no longer trusted.
        let other = TagTimes::new(Duration::from_micros(1_000));
        assert_eq!(other.invalidate(&tier, "b", 10_500).await.unwrap(), 10_500);
        assert_eq!(times.known(&s, 10_600), Some(true), "still trusted");
        assert!(!times.current(&tier, &s, 11_000).await.unwrap());
        // A tie goes to the invalidation; a later write survives it.
        assert!(!times.current(&tier, &stamp(10_500, &["b"]), 11_000).await.unwrap());
        assert!(times.current(&tier, &stamp(10_501, &["b"]), 11_000).await.unwrap());
        // Never moved back by an invalidator whose clock is behind.
        assert_eq!(times.invalidate(&tier, "b", 9_000).await.unwrap(), 10_500);
        // Forgotten times are read again at once.
        other.invalidate(&tier, "a", 12_000).await.unwrap();
        let s2 = stamp(11_000, &["a"]);
        assert_eq!(times.known(&s2, 11_100), Some(true));
        times.forget(&["a".to_string()]);
        assert!(!times.current(&tier, &s2, 11_100).await.unwrap());
    }

    #[tokio::test]
    async fn an_empty_tag_is_refused() {
        let tier = MemoryBackend::with_capacity(10);
        assert!(TagTimes::new(DEFAULT_TAG_FRESHNESS).invalidate(&tier, "", 1).await.is_err());
    }
}
