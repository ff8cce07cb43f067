//! The typed front as generated code reaches it: the argument encoding ([`FastKeyBuf`],
//! [`FastProbe`]) and, per return-type policy, the typed operations on a function's partition of
//! a memory cache ([`FrontOps`]; see `store/memory/front.rs` for the partition itself).

use std::fmt;

use super::{Cache, Cacheable, Value};
use crate::expiry::Deadline;

#[cfg(feature = "memory")]
pub(crate) use crate::store::memory::front::{FrontHandle, FrontTag};

#[cfg(not(feature = "memory"))]
pub(crate) type FrontHandle = std::sync::Arc<dyn std::any::Any + Send + Sync>;

/// Without the memory store there is no typed front: nothing to tag.
#[cfg(not(feature = "memory"))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrontTag;

/// Bytes of an encoded argument list kept inline while it is built.
const INLINE: usize = 56;

/// The arguments of a call, encoded while the hit path probes: fixed-size integers, text as its
/// length then its bytes. Within one function the encoding is prefix-free (every part has a fixed
/// size or says its length), so distinct argument lists never encode alike, even zero-padded.
pub struct FastKeyBuf {
    inline: [u8; INLINE],
    len: usize,
    spill: Vec<u8>,
}

impl fmt::Debug for FastKeyBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FastKeyBuf").field("bytes", &self.as_bytes()).finish()
    }
}

impl Default for FastKeyBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl FastKeyBuf {
    /// An empty buffer.
    #[inline]
    pub fn new() -> Self {
        FastKeyBuf { inline: [0; INLINE], len: 0, spill: Vec::new() }
    }

    /// Appends bytes.
    #[inline]
    pub fn push(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        if self.spill.is_empty() {
            if let Some(dst) = self.inline.get_mut(self.len..end) {
                dst.copy_from_slice(bytes);
                self.len = end;
                return;
            }
            self.spill.extend_from_slice(self.inline.get(..self.len).unwrap_or_default());
        }
        self.spill.extend_from_slice(bytes);
        self.len = end;
    }

    /// The encoded bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        if self.spill.is_empty() {
            self.inline.get(..self.len).unwrap_or_default()
        } else {
            &self.spill
        }
    }
}

/// A reference to a key part (a default key's argument, a template's placeholder value), probed
/// by auto-ref: integers, `bool`, `char` and text encode themselves into the [`FastKeyBuf`]
/// ([`FastPart`]); any other type answers `false` ([`FastNone`]) and the function keeps the
/// text-keyed path. `(&&FastProbe(&x)).__cachestack_fast(buf)`.
pub struct FastProbe<'a, T: ?Sized>(pub &'a T);

impl<T: ?Sized> fmt::Debug for FastProbe<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FastProbe")
    }
}

/// Key parts with an encoding.
pub trait FastPart {
    /// Appends the encoding; always true.
    fn __cachestack_fast(&self, buf: &mut FastKeyBuf) -> bool;
}

/// Every other key part: no encoding.
pub trait FastNone {
    /// False: the function has no typed front.
    fn __cachestack_fast(&self, buf: &mut FastKeyBuf) -> bool;
}

impl<T: ?Sized> FastNone for FastProbe<'_, T> {
    #[inline]
    fn __cachestack_fast(&self, _buf: &mut FastKeyBuf) -> bool {
        false
    }
}

macro_rules! fast_fixed {
    ($($t:ty),*) => {$(
        impl FastPart for &FastProbe<'_, $t> {
            #[inline]
            fn __cachestack_fast(&self, buf: &mut FastKeyBuf) -> bool {
                buf.push(&self.0.to_le_bytes());
                true
            }
        }
        impl FastPart for &FastProbe<'_, &$t> {
            #[inline]
            fn __cachestack_fast(&self, buf: &mut FastKeyBuf) -> bool {
                buf.push(&self.0.to_le_bytes());
                true
            }
        }
    )*};
}

fast_fixed!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize);

macro_rules! fast_other {
    ($($t:ty => |$v:ident, $buf:ident| $body:expr),*) => {$(
        impl FastPart for &FastProbe<'_, $t> {
            #[inline]
            fn __cachestack_fast(&self, $buf: &mut FastKeyBuf) -> bool {
                let $v: &$t = self.0;
                $body;
                true
            }
        }
        impl FastPart for &FastProbe<'_, &$t> {
            #[inline]
            fn __cachestack_fast(&self, $buf: &mut FastKeyBuf) -> bool {
                let $v: &$t = self.0;
                $body;
                true
            }
        }
    )*};
}

fast_other!(
    bool => |v, buf| buf.push(&[u8::from(*v)]),
    char => |v, buf| buf.push(&u32::from(*v).to_le_bytes()),
    str => |v, buf| push_text(buf, v),
    String => |v, buf| push_text(buf, v)
);

impl FastPart for &FastProbe<'_, &&str> {
    #[inline]
    fn __cachestack_fast(&self, buf: &mut FastKeyBuf) -> bool {
        push_text(buf, self.0);
        true
    }
}

#[inline]
fn push_text(buf: &mut FastKeyBuf, text: &str) {
    buf.push(&(text.len() as u64).to_le_bytes());
    buf.push(text.as_bytes());
}

/// A function's typed operations on its partition of a memory cache, for one return type.
pub(super) struct FrontOps<R> {
    /// The partition of the function whose state lives at the given address (whose results
    /// expire: `true`), when the cache is a memory cache.
    pub(super) partition: fn(&Cache, usize, bool) -> Option<FrontHandle>,
    /// A hit: the value for the encoded arguments, cloned into the return type.
    pub(super) get: fn(&FrontHandle, &[u8]) -> Option<R>,
    /// A fill: stores the typed form of a shared value.
    pub(super) put: fn(&FrontHandle, &[u8], &Value, Option<Deadline>, FrontTag),
}

impl<R> Clone for FrontOps<R> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<R> Copy for FrontOps<R> {}

impl<R> FrontOps<R> {
    /// The operations for a policy that stores `V` and reads it back with `get`.
    pub(super) fn new<V: Cacheable>(get: fn(&FrontHandle, &[u8]) -> Option<R>) -> Option<Self> {
        Some(FrontOps { partition: partition::<V>, get, put: put::<V> })
    }
}

/// Where a function's typed partition lives: a memory cache (`Home::Store`: the partition is
/// where its results are stored, a miss there is final once the text-keyed entries were read) or
/// the in-memory L1 of a stack (`Home::L1`: the partition holds typed copies of L1's entries, and
/// its results are written through the stack).
#[cfg(feature = "memory")]
#[derive(Clone, Copy)]
pub(super) enum Home<'a> {
    Store(&'a crate::store::memory::MemoryBackend),
    L1(&'a crate::store::memory::MemoryBackend),
}

#[cfg(feature = "memory")]
impl<'a> Home<'a> {
    /// The home of `cache`'s typed partitions, if it has one.
    #[inline]
    pub(super) fn of(cache: &'a Cache) -> Option<Self> {
        let backend = cache.backend();
        match backend.as_memory() {
            Some(memory) => Some(Home::Store(memory)),
            None => backend.l1_memory().map(Home::L1),
        }
    }

    pub(super) fn memory(self) -> &'a crate::store::memory::MemoryBackend {
        match self {
            Home::Store(memory) | Home::L1(memory) => memory,
        }
    }
}

/// The tag a call for `key` starts with, when `cache` has typed partitions; and whether they
/// are a stack's copies of its L1 (`true`) rather than the store itself.
#[cfg(feature = "memory")]
pub(super) fn front_tag(cache: &Cache, key: &str) -> Option<(FrontTag, bool)> {
    Home::of(cache).map(|home| (home.memory().front_tag(key), matches!(home, Home::L1(_))))
}

#[cfg(not(feature = "memory"))]
pub(super) fn front_tag(_cache: &Cache, _key: &str) -> Option<(FrontTag, bool)> {
    None
}

/// Whether no delete or clear reached `tag`'s stripe of `cache`'s typed partitions since the
/// tag was taken.
#[cfg(feature = "memory")]
pub(super) fn tag_current(cache: &Cache, tag: FrontTag) -> bool {
    Home::of(cache).is_some_and(|home| home.memory().front_tag_current(tag))
}

#[cfg(not(feature = "memory"))]
pub(super) fn tag_current(_cache: &Cache, _tag: FrontTag) -> bool {
    false
}

/// The live entry of `key` in the in-memory L1 of the stack `cache` (not counted as a lookup).
#[cfg(feature = "memory")]
pub(super) fn l1_entry(cache: &Cache, key: &str) -> Option<crate::store::Entry> {
    cache.backend().l1_memory()?.front_source(key)
}

#[cfg(not(feature = "memory"))]
pub(super) fn l1_entry(_cache: &Cache, _key: &str) -> Option<crate::store::Entry> {
    None
}

/// Removes a function's typed entry for these arguments, when `cache` has typed partitions and
/// the arguments have an encoding; true if one was live.
#[cfg(feature = "memory")]
pub(super) fn front_remove(cache: &Cache, id: usize, fast: impl FnOnce(&mut FastKeyBuf) -> bool) -> bool {
    let Some(memory) = Home::of(cache).map(Home::memory) else { return false };
    let mut args = FastKeyBuf::new();
    fast(&mut args) && memory.front_remove(id, args.as_bytes())
}

#[cfg(not(feature = "memory"))]
pub(super) fn front_remove(_cache: &Cache, _id: usize, _fast: impl FnOnce(&mut FastKeyBuf) -> bool) -> bool {
    false
}

#[cfg(feature = "memory")]
fn partition<V: Cacheable>(cache: &Cache, id: usize, expires: bool) -> Option<FrontHandle> {
    // A stack's L1 holds what the stack backfills, with the lower layers' deadlines.
    Home::of(cache).map(|home| home.memory().front_partition::<V>(id, expires || matches!(home, Home::L1(_))))
}

#[cfg(not(feature = "memory"))]
fn partition<V: Cacheable>(_cache: &Cache, _id: usize, _expires: bool) -> Option<FrontHandle> {
    None
}

/// The typed value for these encoded arguments.
#[cfg(feature = "memory")]
#[inline(always)]
pub(super) fn get<V: Cacheable>(handle: &FrontHandle, key: &[u8]) -> Option<V> {
    crate::store::memory::front::get::<V>(handle, key)
}

#[cfg(not(feature = "memory"))]
#[inline]
pub(super) fn get<V: Cacheable>(_handle: &FrontHandle, _key: &[u8]) -> Option<V> {
    None
}

#[cfg(feature = "memory")]
fn put<V: Cacheable>(handle: &FrontHandle, key: &[u8], value: &Value, deadline: Option<Deadline>, tag: FrontTag) {
    use crate::store::memory::front::Partition;
    let Some(partition) = handle.downcast_ref::<Partition<V>>() else { return };
    // A value read from a byte layer is decoded here if no caller read it as `V` yet.
    let value = match value.typed_ref::<V>() {
        Some(value) => value.clone(),
        None => match value.get::<V>() {
            Ok(value) => value,
            Err(_) => return,
        },
    };
    partition.insert(key, value, deadline, tag);
}

#[cfg(not(feature = "memory"))]
fn put<V: Cacheable>(_handle: &FrontHandle, _key: &[u8], _value: &Value, _deadline: Option<Deadline>, _tag: FrontTag) {}

#[cfg(test)]
// The probes are called as generated code calls them: `(&&FastProbe(&x))`.
#[allow(clippy::needless_borrow)]
mod tests {
    use super::*;

    fn encode(parts: impl FnOnce(&mut FastKeyBuf) -> bool) -> Option<Vec<u8>> {
        let mut buf = FastKeyBuf::new();
        parts(&mut buf).then(|| buf.as_bytes().to_vec())
    }

    #[test]
    fn plain_parts_encode_and_others_do_not() {
        let n = 7u64;
        let s = String::from("ab");
        assert_eq!(encode(|b| (&&FastProbe(&n)).__cachestack_fast(b)).unwrap(), 7u64.to_le_bytes());
        let text = encode(|b| (&&FastProbe(&s)).__cachestack_fast(b)).unwrap();
        assert_eq!(text, [&2u64.to_le_bytes()[..], b"ab"].concat());
        let r: &str = "ab";
        assert_eq!(encode(|b| (&&FastProbe(&r)).__cachestack_fast(b)).unwrap(), text);
        assert!(encode(|b| (&&FastProbe(&1.5f64)).__cachestack_fast(b)).is_none());
        assert!(encode(|b| (&&FastProbe(&vec![1u8])).__cachestack_fast(b)).is_none());
    }

    #[test]
    fn text_lists_never_encode_alike() {
        let pair = |a: &str, b: &str| {
            encode(|buf| (&&FastProbe(&a)).__cachestack_fast(buf) && (&&FastProbe(&b)).__cachestack_fast(buf)).unwrap()
        };
        assert_ne!(pair("a", "bc"), pair("ab", "c"));
        assert_ne!(pair("", "x"), pair("x", ""));
    }

    #[test]
    fn long_keys_spill_and_keep_every_byte() {
        let long = "x".repeat(200);
        let mut buf = FastKeyBuf::new();
        buf.push(b"head");
        (&&FastProbe(&long)).__cachestack_fast(&mut buf);
        assert_eq!(buf.as_bytes(), [&b"head"[..], &200u64.to_le_bytes(), long.as_bytes()].concat());
    }
}
