//! Tagged values (see [`crate::tags`]): a value's handle with the write time and tags it was
//! stored with. Only tagged values pay the extra indirection.

use std::any::Any;
use std::sync::{Arc, OnceLock};

use super::{Encoded, ErasedValue, Repr, TagStamp, Value};

/// A tagged value: another value's handle with its [`TagStamp`]. Only tagged values pay the
/// extra indirection; the others answer [`Repr::tag_stamp`] with the trait's `None`.
struct Tagged {
    inner: Arc<dyn Repr>,
    stamp: TagStamp,
}

impl Repr for Tagged {
    fn typed(&self) -> Option<&dyn ErasedValue> {
        self.inner.typed()
    }
    fn typed_any(&self) -> Option<&dyn Any> {
        self.inner.typed_any()
    }
    fn keep_typed(&self, typed: Box<dyn ErasedValue>) {
        self.inner.keep_typed(typed);
    }
    fn encoded(&self) -> &OnceLock<Encoded> {
        self.inner.encoded()
    }
    fn tag_stamp(&self) -> Option<&TagStamp> {
        Some(&self.stamp)
    }
    fn untagged(&self) -> Option<Arc<dyn Repr>> {
        Some(self.inner.clone())
    }
}

impl Value {
    /// This value carrying `tags`, written at `written` (what [`Cache::set_with_tags`] stores):
    /// on every read, the entry is a miss once one of its tags was invalidated at or after
    /// `written`. A value that already had tags keeps only the new ones. Without tags, the value
    /// as it is.
    ///
    /// [`Cache::set_with_tags`]: crate::Cache::set_with_tags
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use cachestack::Value;
    ///
    /// let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    /// let v = Value::new(7u8).with_tags(at, ["user:7".to_string()]);
    /// let stamp = v.tag_stamp().unwrap();
    /// assert_eq!(stamp.tags(), ["user:7".to_string()]);
    /// assert_eq!(stamp.written_us(), 1_000_000_000);
    /// assert_eq!(v.get::<u8>().unwrap(), 7);
    /// assert!(Value::new(7u8).tag_stamp().is_none());
    /// ```
    pub fn with_tags(self, written: std::time::SystemTime, tags: impl IntoIterator<Item = String>) -> Value {
        let tags: Arc<[String]> = tags.into_iter().collect();
        if tags.is_empty() {
            return self;
        }
        let stamp = TagStamp { written_us: crate::tags::unix_micros(written), tags };
        self.with_stamp(stamp)
    }

    /// This value carrying `stamp` (replacing a stamp it had).
    pub(crate) fn with_stamp(self, stamp: TagStamp) -> Value {
        crate::tags::note_tags_in_use();
        // A tagged value is unwrapped instead of stacking stamps.
        let inner = self.0.untagged().unwrap_or(self.0);
        Value(Arc::new(Tagged { inner, stamp }))
    }

    /// The write time and tags of a tagged value ([`Value::with_tags`]), `None` for a value
    /// without tags.
    #[inline]
    pub fn tag_stamp(&self) -> Option<&TagStamp> {
        self.0.tag_stamp()
    }
}
