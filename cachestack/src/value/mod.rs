//! Cached values: typed in process, encoded for byte stores.
//!
//! A [`Value`] is a cheap, shareable handle. It holds the typed Rust value (what the memory tier
//! keeps and what a hit clones), the encoded form (what byte stores keep), or both: a value
//! decoded once from bytes keeps its typed form, so a tiered stack that backfills the memory tier
//! with it answers the next hit without decoding again.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::de::DeserializeOwned;
use serde::Serialize;

pub(crate) mod codec;
mod compression;
pub(crate) mod counter;
mod depth;
pub(crate) mod envelope;
mod layout;
mod tag_block;
mod tagged;

use crate::error::{Error, Result};
pub use crate::tags::TagStamp;
use crate::value::codec::Codec;

/// What a type needs to be cached in any tier: cloned out of the memory tier, encoded into byte
/// tiers, and shared across threads.
///
/// Implemented for every type that is `Clone + Serialize + DeserializeOwned + Send + Sync +
/// 'static`; never implement it by hand.
///
/// ```
/// #[derive(Clone, serde::Serialize, serde::Deserialize)]
/// struct User { id: u64, name: String }
///
/// fn assert_cacheable<T: cachestack::Cacheable>() {}
/// assert_cacheable::<User>();
/// assert_cacheable::<Option<Vec<String>>>();
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be cached: cached values must be `Clone + Serialize + DeserializeOwned + Send + Sync + 'static`",
    label = "this type is returned from the cache",
    note = "`Clone` is needed to hand out copies from the memory tier; `serde::Serialize` and `serde::Deserialize` to store it in file, Redis, PostgreSQL or Memcached tiers",
    note = "derive them: `#[derive(Clone, serde::Serialize, serde::Deserialize)]`"
)]
pub trait Cacheable: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {}

impl<T> Cacheable for T where T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {}

/// A stable 64-bit fingerprint of a Rust type and of its layout, stored in every envelope so that
/// bytes written for one type, or for another layout of the same type, are never decoded as it.
///
/// It hashes (xxh3, stable across Rust versions and platforms) the type's path
/// (`std::any::type_name`) and its layout: what its `Deserialize` implementation asks for, read
/// without any value: container names, field names in order, variant names, and the same for
/// every nested type (to a bounded depth; of an enum, the content of its first variant).
///
/// So a struct that gains, loses, renames, reorders or retypes a field gets a new fingerprint:
/// during a rolling deploy, a new build reading bytes written by an old one sees a miss (and
/// recomputes), never old bytes decoded into the wrong fields; the old build likewise ignores
/// the new bytes.
///
/// A change the layout cannot show (same fields, new meaning: milliseconds that became seconds,
/// an enum's later variants) needs an explicit version. Set it on the type, with serde's
/// container name, which none of the codecs writes into the bytes:
/// `#[serde(rename = "User@2")]`. The `version` option of the cache or of `#[cached]` retires old
/// entries by key instead.
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct User { id: u64, name: String }
///
/// mod v2 {
///     // Same path and fields as a `User` in its module, marked as a new layout version:
///     #[derive(serde::Deserialize)]
///     #[serde(rename = "User@2")]
///     pub struct User { pub id: u64, pub name: String }
/// }
///
/// let a = cachestack::type_fingerprint::<u64>();
/// assert_eq!(a, cachestack::type_fingerprint::<u64>());
/// assert_ne!(a, cachestack::type_fingerprint::<String>());
/// assert_ne!(cachestack::type_fingerprint::<User>(), cachestack::type_fingerprint::<v2::User>());
/// ```
pub fn type_fingerprint<T: DeserializeOwned + 'static>() -> u64 {
    // Probing a layout costs about as much as decoding a small value: each thread keeps the
    // fingerprints it computed (no lock shared between threads).
    thread_local! {
        static KNOWN: std::cell::RefCell<std::collections::HashMap<std::any::TypeId, u64>> = Default::default();
    }
    let id = std::any::TypeId::of::<T>();
    if let Ok(Some(known)) = KNOWN.try_with(|known| known.try_borrow().ok().and_then(|known| known.get(&id).copied())) {
        return known;
    }
    let fingerprint = fingerprint_named::<T>(std::any::type_name::<T>());
    // Inside a probe of another type's layout (a `Deserialize` that asks for fingerprints), or
    // while the thread exits, the cache is simply skipped.
    let _ = KNOWN.try_with(|known| known.try_borrow_mut().map(|mut known| known.insert(id, fingerprint)));
    fingerprint
}

/// The fingerprint of `T`'s layout under the path `name` (what another build, whose type at that
/// path had `T`'s layout, writes).
pub(crate) fn fingerprint_named<T: DeserializeOwned>(name: &str) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(name.as_bytes());
    layout::hash_layout::<T>(&mut hasher);
    hasher.digest()
}

/// The payload of a value as byte stores keep it: the codec that wrote it, the fingerprint of the
/// type it was written for, and the serialised bytes (decompressed and verified).
#[derive(Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The codec the payload is written in.
    pub codec: Codec,
    /// [`type_fingerprint`] of the type the payload encodes.
    pub type_fingerprint: u64,
    /// The serialised value.
    pub payload: Vec<u8>,
}

impl fmt::Debug for Encoded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoded")
            .field("codec", &self.codec)
            .field("type_fingerprint", &format_args!("{:016x}", self.type_fingerprint))
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// A typed value with the operations a store needs, type-erased.
trait ErasedValue: Send + Sync + 'static {
    fn as_any(&self) -> &dyn Any;
    fn encode(&self, codec: Codec) -> Result<Encoded>;
    fn type_name(&self) -> &'static str;
    fn approx_size(&self) -> usize;
    /// An estimate of the heap data the value owns: its serialised length (0 when it has no
    /// serde implementation).
    fn heap_estimate(&self) -> usize;
}

struct Serializable<V>(V);

impl<V: Cacheable> ErasedValue for Serializable<V> {
    fn as_any(&self) -> &dyn Any {
        &self.0
    }
    fn encode(&self, codec: Codec) -> Result<Encoded> {
        Ok(Encoded { codec, type_fingerprint: type_fingerprint::<V>(), payload: codec.serialize(&self.0)? })
    }
    fn type_name(&self) -> &'static str {
        std::any::type_name::<V>()
    }
    fn approx_size(&self) -> usize {
        std::mem::size_of::<V>()
    }
    fn heap_estimate(&self) -> usize {
        serialized_len(&self.0)
    }
}

struct LocalOnly<V>(V);

impl<V: Clone + Send + Sync + 'static> ErasedValue for LocalOnly<V> {
    fn as_any(&self) -> &dyn Any {
        &self.0
    }
    fn encode(&self, codec: Codec) -> Result<Encoded> {
        Err(Error::Codec {
            codec: codec.name(),
            message: format!(
                "`{}` was cached as a local-only value (no serde): it can live in the memory tier only",
                std::any::type_name::<V>()
            ),
        })
    }
    fn type_name(&self) -> &'static str {
        std::any::type_name::<V>()
    }
    fn approx_size(&self) -> usize {
        std::mem::size_of::<V>()
    }
    fn heap_estimate(&self) -> usize {
        0
    }
}

/// The length of `value` serialised with postcard (counted, not written anywhere): an estimate of
/// the heap data a value owns, for caches bounded by bytes.
pub(crate) fn serialized_len<T: Serialize + ?Sized>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(bytes.len());
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    postcard::to_io(value, Count(0)).map_or(0, |count| count.0)
}

/// What a [`Value`] handle points at. A value created typed keeps it inline in the handle's one
/// allocation ([`Typed`]), so a memory hit reads the reference count and the value from adjacent
/// memory instead of following a second pointer; a value read from bytes ([`FromBytes`]) gains its
/// typed form on the first typed read.
trait Repr: Send + Sync + 'static {
    /// The typed value, if present.
    fn typed(&self) -> Option<&dyn ErasedValue>;
    /// The typed value as `Any` (one dynamic call on the hit path instead of two).
    fn typed_any(&self) -> Option<&dyn Any>;
    /// Keeps a typed form decoded from the bytes (values born typed already have theirs).
    fn keep_typed(&self, typed: Box<dyn ErasedValue>);
    /// The encoded form, set on creation or on the first encoding.
    fn encoded(&self) -> &OnceLock<Encoded>;
    /// The write time and tags of a tagged value (see [`crate::tags`]); `None` for the others.
    #[inline]
    fn tag_stamp(&self) -> Option<&TagStamp> {
        None
    }
    /// For a tagged value, the value it wraps.
    fn untagged(&self) -> Option<Arc<dyn Repr>> {
        None
    }
}

/// A value created typed. `repr(C)`: the value comes first, right after the reference counts.
#[repr(C)]
struct Typed<E> {
    value: E,
    encoded: OnceLock<Encoded>,
}

impl<E: ErasedValue> Repr for Typed<E> {
    fn typed(&self) -> Option<&dyn ErasedValue> {
        Some(&self.value)
    }
    #[inline]
    fn typed_any(&self) -> Option<&dyn Any> {
        Some(self.value.as_any())
    }
    fn keep_typed(&self, _typed: Box<dyn ErasedValue>) {}
    fn encoded(&self) -> &OnceLock<Encoded> {
        &self.encoded
    }
}

/// A value read from a byte store.
struct FromBytes {
    encoded: OnceLock<Encoded>,
    typed: OnceLock<Box<dyn ErasedValue>>,
}

impl Repr for FromBytes {
    fn typed(&self) -> Option<&dyn ErasedValue> {
        self.typed.get().map(|t| &**t)
    }
    fn typed_any(&self) -> Option<&dyn Any> {
        self.typed.get().map(|t| t.as_any())
    }
    fn keep_typed(&self, typed: Box<dyn ErasedValue>) {
        // A racing reader may have set it first; both decoded the same bytes.
        let _ = self.typed.set(typed);
    }
    fn encoded(&self) -> &OnceLock<Encoded> {
        &self.encoded
    }
}

/// A cached value: a shareable handle to a typed value, its encoded bytes, or both.
///
/// Cloning a `Value` is an atomic increment. Build one with [`Value::new`] (any [`Cacheable`]
/// type), [`Value::local`] (memory tier only, no serde needed) or [`Value::from_encoded`] (bytes
/// read from a store); read it back with [`Value::get`].
///
/// ```
/// use cachestack::{Codec, Value};
///
/// let v = Value::new(vec![1u32, 2, 3]);
/// assert_eq!(v.get::<Vec<u32>>().unwrap(), vec![1, 2, 3]);
///
/// // Through bytes, as a file or Redis tier would store it:
/// let bytes = v.encoded(Codec::Postcard).unwrap();
/// let back = Value::from_encoded(bytes);
/// assert_eq!(back.get::<Vec<u32>>().unwrap(), vec![1, 2, 3]);
/// // A different type is rejected, not misread:
/// assert!(back.get::<String>().is_err());
/// ```
#[derive(Clone)]
pub struct Value(Arc<dyn Repr>);

impl Value {
    /// Wraps a typed value that every tier can store.
    pub fn new<V: Cacheable>(value: V) -> Self {
        Value(Arc::new(Typed { value: Serializable(value), encoded: OnceLock::new() }))
    }

    /// Wraps a value that has no serde implementation. It can be stored in the memory tier only;
    /// byte tiers reject it with [`Error::Codec`].
    ///
    /// ```
    /// use cachestack::{Codec, Value};
    /// #[derive(Clone)]
    /// struct Handle(std::sync::Arc<u8>);
    /// let v = Value::local(Handle(std::sync::Arc::new(7)));
    /// assert_eq!(*v.get_local::<Handle>().unwrap().0, 7);
    /// assert!(v.encoded(Codec::Postcard).is_err());
    /// ```
    pub fn local<V: Clone + Send + Sync + 'static>(value: V) -> Self {
        Value(Arc::new(Typed { value: LocalOnly(value), encoded: OnceLock::new() }))
    }

    /// Wraps bytes read from a byte store. They are decoded on the first typed read, and the
    /// decoded value is kept for later reads of this same handle.
    pub fn from_encoded(encoded: Encoded) -> Self {
        let cell = OnceLock::new();
        let _ = cell.set(encoded);
        Value(Arc::new(FromBytes { encoded: cell, typed: OnceLock::new() }))
    }

    /// Reads the value as `V`, decoding it if it came from bytes.
    ///
    /// Fails with [`Error::InvalidValue`] when the value holds another type, and with
    /// [`Error::Codec`] when its bytes do not decode as `V`. Callers treat both as a miss.
    pub fn get<V: Cacheable>(&self) -> Result<V> {
        if let Some(typed) = self.0.typed_any() {
            return match typed.downcast_ref::<V>() {
                Some(v) => Ok(v.clone()),
                None => Err(type_mismatch::<V>(self.stored_type_name())),
            };
        }
        let Some(encoded) = self.0.encoded().get() else {
            return Err(Error::invalid("empty value"));
        };
        let expected = type_fingerprint::<V>();
        if encoded.type_fingerprint != expected {
            return Err(Error::invalid(format!(
                "stored bytes were written for another type, or another layout of `{}` (fingerprint {:016x}, expected {expected:016x})",
                std::any::type_name::<V>(),
                encoded.type_fingerprint,
            )));
        }
        let decoded: V = encoded.codec.deserialize(&encoded.payload)?;
        // Keep the typed form for the next read of this handle.
        self.0.keep_typed(Box::new(Serializable(decoded.clone())));
        Ok(decoded)
    }

    /// Reads a value stored with [`Value::local`] (or [`Value::new`]) without needing serde.
    /// Values that exist only as bytes cannot be read this way.
    pub fn get_local<V: Clone + Send + Sync + 'static>(&self) -> Result<V> {
        match self.0.typed_any() {
            Some(typed) => match typed.downcast_ref::<V>() {
                Some(v) => Ok(v.clone()),
                None => Err(type_mismatch::<V>(self.stored_type_name())),
            },
            None => Err(Error::invalid(format!(
                "value is stored as bytes; reading it as `{}` needs serde (use `get`)",
                std::any::type_name::<V>()
            ))),
        }
    }

    /// The encoded form, serialising the typed value with `codec` if the value has no encoded form
    /// yet. A value that already has bytes keeps them, whatever their codec: the envelope records
    /// the codec, so any byte tier can store and return them.
    pub fn encoded(&self, codec: Codec) -> Result<Encoded> {
        if let Some(encoded) = self.0.encoded().get() {
            return Ok(encoded.clone());
        }
        let Some(typed) = self.0.typed() else {
            return Err(Error::invalid("empty value"));
        };
        let encoded = typed.encode(codec)?;
        let _ = self.0.encoded().set(encoded.clone());
        Ok(encoded)
    }

    /// Runs `f` over the encoded form without cloning the payload when it already exists.
    pub fn with_encoded<R>(&self, codec: Codec, f: impl FnOnce(&Encoded) -> R) -> Result<R> {
        if let Some(encoded) = self.0.encoded().get() {
            return Ok(f(encoded));
        }
        let encoded = self.encoded(codec)?;
        Ok(f(&encoded))
    }

    /// True when the typed form is present (a hit needs no decoding).
    pub fn is_typed(&self) -> bool {
        self.0.typed().is_some()
    }

    /// A rough size in bytes, for weight-bounded memory caches: the payload length when the value
    /// has bytes, otherwise the inline size of the type (heap data it owns is not counted).
    pub fn approx_size(&self) -> usize {
        match (self.0.encoded().get(), self.0.typed()) {
            (Some(e), _) => e.payload.len(),
            (None, Some(t)) => t.approx_size(),
            (None, None) => 0,
        }
    }

    /// What a memory cache bounded by bytes weighs this value at: everything it may come to
    /// hold. A typed value holds its inline size and its heap data (estimated by its serialised
    /// length), and a byte tier that encodes it later attaches the encoded bytes to this same
    /// handle (about that length again): both are counted up front, so that the bound holds
    /// whatever happens to the handle afterwards. A value read from bytes holds them, and its
    /// typed form once decoded.
    pub(crate) fn held_size(&self) -> usize {
        match (self.0.typed(), self.0.encoded().get()) {
            (Some(t), Some(e)) => t.approx_size() + t.heap_estimate() + e.payload.len(),
            (Some(t), None) => t.approx_size() + 2 * t.heap_estimate(),
            (None, Some(e)) => 2 * e.payload.len() + 64,
            (None, None) => 0,
        }
    }

    /// True when both handles point at the same stored value.
    pub fn ptr_eq(&self, other: &Value) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.0), Arc::as_ptr(&other.0))
    }

    /// A reference to the typed value when it is present and is a `V` (no clone, no decoding):
    /// the memory tier's hit path.
    #[inline]
    pub(crate) fn typed_ref<V: 'static>(&self) -> Option<&V> {
        self.0.typed_any()?.downcast_ref::<V>()
    }

    fn stored_type_name(&self) -> &'static str {
        self.0.typed().map_or("(bytes)", |t| t.type_name())
    }
}

fn type_mismatch<V>(stored: &str) -> Error {
    Error::invalid(format!(
        "stored value is a `{stored}`, not a `{}`: two callers share a key with different types",
        std::any::type_name::<V>()
    ))
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Value");
        if let Some(t) = self.0.typed() {
            s.field("type", &t.type_name());
        }
        if let Some(e) = self.0.encoded().get() {
            s.field("encoded", e);
        }
        if let Some(stamp) = self.0.tag_stamp() {
            s.field("tags", stamp);
        }
        s.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct User {
        id: u64,
        name: String,
    }

    #[test]
    fn typed_round_trip_shares_without_decoding() {
        let v = Value::new(User { id: 1, name: "a".into() });
        assert!(v.is_typed());
        assert_eq!(v.get::<User>().unwrap().id, 1);
    }

    #[test]
    fn decoding_is_cached_on_the_handle() {
        let bytes = Value::new(User { id: 2, name: "b".into() }).encoded(Codec::Postcard).unwrap();
        let v = Value::from_encoded(bytes);
        assert!(!v.is_typed());
        assert_eq!(v.get::<User>().unwrap().name, "b");
        assert!(v.is_typed());
        let clone = v.clone();
        assert_eq!(clone.get::<User>().unwrap().name, "b");
    }

    #[test]
    fn wrong_type_is_an_error_not_a_misread() {
        let v = Value::new(7u32);
        assert!(v.get::<u64>().unwrap_err().is_invalid_value());
        let bytes = v.encoded(Codec::Postcard).unwrap();
        assert!(Value::from_encoded(bytes).get::<u64>().unwrap_err().is_invalid_value());
    }

    /// What an older build wrote: the same path, another layout.
    mod old_build {
        #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        pub struct Point {
            pub x: u32,
            pub y: u32,
        }
    }

    /// This build's `Point`: the fields were swapped (postcard would read old bytes into the
    /// wrong fields without complaint).
    #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Point {
        y: u32,
        x: u32,
    }

    /// The same fields as `Point`, with its layout version bumped on the type.
    #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(rename = "Point@2")]
    struct PointV2 {
        y: u32,
        x: u32,
    }

    /// Bytes of `value` as a build whose type at `path` was a `T` wrote them.
    fn written_by<T: Cacheable>(path: &str, value: &T) -> Encoded {
        Encoded {
            codec: Codec::Postcard,
            type_fingerprint: fingerprint_named::<T>(path),
            payload: Codec::Postcard.serialize(value).unwrap(),
        }
    }

    #[test]
    fn another_layout_under_the_same_path_is_refused_not_misread() {
        let old = written_by(std::any::type_name::<Point>(), &old_build::Point { x: 1, y: 2 });
        let err = Value::from_encoded(old).get::<Point>().unwrap_err();
        assert!(err.is_invalid_value(), "{err}");
        // The same layout under the same path reads back.
        let same = written_by(std::any::type_name::<Point>(), &Point { y: 2, x: 1 });
        assert_eq!(Value::from_encoded(same).get::<Point>().unwrap(), Point { y: 2, x: 1 });
        // A version bumped on the type retires bytes of the same fields.
        let unversioned = written_by(std::any::type_name::<PointV2>(), &Point { y: 2, x: 1 });
        assert!(Value::from_encoded(unversioned).get::<PointV2>().unwrap_err().is_invalid_value());
    }

    #[cfg(feature = "file")]
    #[tokio::test]
    async fn a_cache_reading_another_layout_sees_a_miss() {
        use crate::store::Backend;
        let dir = tempfile::tempdir().unwrap();
        let store = crate::FileStore::new(crate::FileConfig::new(dir.path())).unwrap();
        let old = written_by(std::any::type_name::<Point>(), &old_build::Point { x: 1, y: 2 });
        store.set("p", Value::from_encoded(old), crate::Expiry::Never).await.unwrap();
        let cache = crate::Cache::new(store);
        assert_eq!(cache.get::<Point>("p").await.unwrap(), None, "old bytes must be a miss, not wrong data");
        cache.set("p", &Point { y: 2, x: 1 }, None).await.unwrap();
        assert_eq!(cache.get::<Point>("p").await.unwrap(), Some(Point { y: 2, x: 1 }));
        assert_eq!(cache.get::<PointV2>("p").await.unwrap(), None);
    }

    #[test]
    fn local_values_refuse_byte_tiers() {
        let v = Value::local(std::rc::Rc::new(1).to_string());
        assert!(v.encoded(Codec::Postcard).is_err());
    }
}
