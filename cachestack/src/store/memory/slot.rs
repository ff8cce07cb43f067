//! What the text-keyed map holds: [`MemKey`] (inline up to [`INLINE_KEY`] bytes), the borrowed
//! [`KeyRef`] a lookup uses, and the [`Slot`] with the value, its deadline and its weight.

use std::hash::{Hash, Hasher};
use std::time::Instant;

use quick_cache::{Equivalent, Weighter};

use crate::value::Value;

/// Keys up to this many bytes are stored inline in the map's entry, so a hit compares the key
/// without following a pointer (one dependent cache miss fewer on a cold entry). The default keys
/// of `#[cached]` (`module::function(arguments)`) mostly fit; longer keys are boxed.
pub(super) const INLINE_KEY: usize = 62;

/// A stored key: 64 bytes, inline up to [`INLINE_KEY`] bytes.
#[derive(Clone)]
pub(super) enum MemKey {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Boxed(Box<[u8]>),
}

impl MemKey {
    pub(super) fn new(key: &str) -> Self {
        let key = key.as_bytes();
        if key.len() <= INLINE_KEY {
            let mut bytes = [0; INLINE_KEY];
            bytes[..key.len()].copy_from_slice(key);
            MemKey::Inline { len: key.len() as u8, bytes }
        } else {
            MemKey::Boxed(key.into())
        }
    }

    #[inline]
    pub(super) fn as_bytes(&self) -> &[u8] {
        match self {
            MemKey::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            MemKey::Boxed(bytes) => bytes,
        }
    }
}

impl PartialEq for MemKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for MemKey {}

/// Hashes the key's bytes, exactly as [`KeyRef`] does.
impl Hash for MemKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.as_bytes());
    }
}

/// A borrowed key for lookups: hashes and compares like the stored [`MemKey`].
pub(super) struct KeyRef<'a>(&'a [u8]);

impl<'a> KeyRef<'a> {
    #[inline]
    pub(super) fn new(key: &'a str) -> Self {
        KeyRef(key.as_bytes())
    }
}

impl Hash for KeyRef<'_> {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0);
    }
}

impl Equivalent<MemKey> for KeyRef<'_> {
    #[inline]
    fn equivalent(&self, key: &MemKey) -> bool {
        self.0 == key.as_bytes()
    }
}

#[derive(Clone)]
pub(super) struct Slot {
    pub(super) value: Value,
    /// The deadline on the monotonic clock, for the hit path.
    pub(super) expires: Option<Instant>,
    /// The deadline as written, in Unix milliseconds (0: none), returned with the entry. A bare
    /// number keeps the slot small: quick_cache copies it out on every hit.
    pub(super) deadline_ms: u64,
    pub(super) weight: u64,
}

impl Slot {
    #[inline]
    pub(super) fn live(&self, now: impl FnOnce() -> Instant) -> bool {
        match self.expires {
            None => true,
            Some(deadline) => now() < deadline,
        }
    }
}

#[derive(Clone)]
pub(super) struct SlotWeighter;

impl Weighter<MemKey, Slot> for SlotWeighter {
    fn weight(&self, _key: &MemKey, slot: &Slot) -> u64 {
        slot.weight
    }
}
