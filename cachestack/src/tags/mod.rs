//! Tags: drop every entry about "user 7" without listing keys.
//!
//! An entry written with tags ([`Cache::set_with_tags`](crate::Cache::set_with_tags),
//! `#[cached(tags = [...])]`) carries its tags and its write time: in the stored [`Value`](crate::Value) for
//! the memory tier, in the envelope (format 2) for byte stores. Invalidating a tag
//! ([`Cache::invalidate_tag`](crate::Cache::invalidate_tag)) only records the time of the
//! invalidation, in the *shared tier* (the lowest layer of a stack, the store itself otherwise),
//! under the reserved key [`TAG_KEY_PREFIX`]`<tag>`. Nothing is deleted: on every read, in every
//! tier, an entry written at or before the latest invalidation of one of its tags is a miss (and
//! is not copied into faster tiers). So it works on every store, built-in or user-written, with
//! no index of keys per tag.
//!
//! Each cache keeps the invalidation times it read in process (`TagTimes`, bounded), for at most
//! [`DEFAULT_TAG_FRESHNESS`] (see [`Cache::with_tag_freshness`](crate::Cache::with_tag_freshness)):
//! an invalidation made by another process is seen within that bound, or at once when a
//! backplane message calls [`Cache::forget_local_tags`](crate::Cache::forget_local_tags). An
//! invalidation made through the cache itself is seen by it at once.
//!
//! Untagged entries pay nothing: the read path looks at tags only once a tagged value was seen in
//! this process (one relaxed load of a flag that is written once).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

mod check;
mod times;

pub(crate) use check::Checker;
pub use check::TagCheck;
pub(crate) use times::TagTimes;
pub use times::{DEFAULT_TAG_FRESHNESS, MAX_KNOWN_TAGS};

/// The reserved key prefix under which the shared tier keeps a tag's latest invalidation time
/// (Unix microseconds, a `u64` value). Keys of your own must not start with it.
pub const TAG_KEY_PREFIX: &str = "__cachestack:tag:";

/// Set once a tagged value exists in this process: until then no read looks at tags.
static IN_USE: AtomicBool = AtomicBool::new(false);

/// Notes that tagged values exist in this process (a value was tagged or read with tags).
#[inline]
pub(crate) fn note_tags_in_use() {
    if !IN_USE.load(Relaxed) {
        IN_USE.store(true, Relaxed);
    }
}

/// Whether a read must look at tags: false until a tagged value was seen in this process.
#[inline]
pub(crate) fn in_use() -> bool {
    IN_USE.load(Relaxed)
}

/// The write time and tags an entry carries (see [`Value::with_tags`](crate::Value::with_tags)).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// let v = cachestack::Value::new(1u8).with_tags(SystemTime::UNIX_EPOCH + Duration::from_micros(5), ["a".to_string()]);
/// let stamp = v.tag_stamp().unwrap();
/// assert_eq!((stamp.written_us(), stamp.tags().len()), (5, 1));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct TagStamp {
    pub(crate) written_us: u64,
    pub(crate) tags: Arc<[String]>,
}

impl TagStamp {
    pub(crate) fn new(written_us: u64, tags: Vec<String>) -> Self {
        TagStamp { written_us, tags: tags.into() }
    }

    /// When the entry was written (before its value was computed, for computed entries), in
    /// Unix microseconds by the writing cache's clock.
    pub fn written_us(&self) -> u64 {
        self.written_us
    }

    /// The entry's tags.
    pub fn tags(&self) -> &[String] {
        &self.tags
    }

    /// Whether the entry outlived an invalidation at `invalidated_us` (Unix microseconds, 0:
    /// never invalidated). A tie goes to the invalidation: an entry written in the same
    /// microsecond is stale.
    pub fn survives(&self, invalidated_us: u64) -> bool {
        invalidated_us == 0 || self.written_us > invalidated_us
    }
}

impl fmt::Debug for TagStamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TagStamp").field("written_us", &self.written_us).field("tags", &self.tags).finish()
    }
}

/// `time` in microseconds since the Unix epoch (the unit of write and invalidation times: fine
/// enough that a value computed right after an invalidation is rarely written in its instant, a
/// tie the invalidation wins); 1 before the epoch, the largest `u64` past its range.
pub(crate) fn unix_micros(time: std::time::SystemTime) -> u64 {
    match time.duration_since(std::time::UNIX_EPOCH) {
        Ok(since) => u64::try_from(since.as_micros()).unwrap_or(u64::MAX).max(1),
        Err(_) => 1,
    }
}

/// The shared-tier key of `tag`'s invalidation time.
pub(crate) fn tag_key(tag: &str) -> String {
    let mut key = String::with_capacity(TAG_KEY_PREFIX.len() + tag.len());
    key.push_str(TAG_KEY_PREFIX);
    key.push_str(tag);
    key
}

/// Checks a tag before it is recorded or stored: not empty, at most
/// [`MAX_TAG_BYTES`](crate::value::envelope::MAX_TAG_BYTES) bytes.
pub(crate) fn validate_tag(tag: &str) -> crate::Result<()> {
    use crate::value::envelope::MAX_TAG_BYTES;
    if tag.is_empty() {
        return Err(crate::Error::config("a tag cannot be empty"));
    }
    if tag.len() > MAX_TAG_BYTES {
        return Err(crate::Error::config(format!("a tag of {} bytes; at most {MAX_TAG_BYTES}", tag.len())));
    }
    Ok(())
}
