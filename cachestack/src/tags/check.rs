//! [`TagCheck`]: what a read asks before it serves a tagged entry.

use async_trait::async_trait;

use super::{in_use, TagStamp, TagTimes};
use crate::resilience::Clock;
use crate::store::{Backend, Entry};
use crate::value::Value;

/// Decides whether a tagged entry may be served: it may not once one of its tags was invalidated
/// at or after its write time (see [`crate::tags`]). A tiered stack asks it of each tier's entry
/// before serving or backfilling it ([`Backend::get_current`]); a store of your own has nothing
/// to do with it (the default `get_current` reads and asks).
#[async_trait]
pub trait TagCheck: Send + Sync {
    /// The verdict without I/O: `Some(true)` serve, `Some(false)` a miss, `None` when the tags'
    /// times must be read first ([`TagCheck::current`]).
    fn known(&self, stamp: &TagStamp) -> Option<bool>;

    /// Whether an entry with `stamp` may be served, reading the tags' times as needed. When they
    /// cannot be read, the entry is not served (a miss, counted and logged).
    async fn current(&self, stamp: &TagStamp) -> bool;

    /// [`TagCheck::known`] for a value: an untagged value is always current.
    #[inline]
    fn value_known(&self, value: &Value) -> Option<bool> {
        if !in_use() {
            return Some(true);
        }
        match value.tag_stamp() {
            None => Some(true),
            Some(stamp) => self.known(stamp),
        }
    }

    /// [`TagCheck::current`] for an entry: an untagged entry is always current.
    async fn entry_current(&self, entry: &Entry) -> bool {
        if !in_use() {
            return true;
        }
        match entry.value.tag_stamp() {
            None => true,
            Some(stamp) => self.current(stamp).await,
        }
    }
}

/// The check of one cache: its kept times, its shared tier and its clock.
pub(crate) struct Checker<'a> {
    pub(crate) times: &'a TagTimes,
    pub(crate) tier: &'a dyn Backend,
    pub(crate) clock: &'a dyn Clock,
}

impl Checker<'_> {
    fn now_us(&self) -> u64 {
        super::unix_micros(self.clock.now())
    }
}

#[async_trait]
impl TagCheck for Checker<'_> {
    fn known(&self, stamp: &TagStamp) -> Option<bool> {
        self.times.known(stamp, self.now_us())
    }

    async fn current(&self, stamp: &TagStamp) -> bool {
        match self.times.current(self.tier, stamp, self.now_us()).await {
            Ok(current) => current,
            Err(err) => {
                tracing::warn!(backend = self.tier.name(), tags = ?stamp.tags(), error = %err, "cachestack: cannot read the invalidation times of an entry's tags; the entry is treated as a miss");
                false
            }
        }
    }
}
