//! The layout of a type as byte stores see it: what its `Deserialize` implementation asks for.
//!
//! [`crate::type_fingerprint`] hashes the type's path *and* this layout, so bytes written by a
//! build whose struct had other fields (added, removed, renamed, reordered, or of another type),
//! or whose enum had other variants, carry another fingerprint: a reader of the new layout sees a
//! miss, never old bytes decoded into the wrong fields.
//!
//! The layout is read without any value, by running `T::deserialize` against a probe: a
//! deserializer that records each request (`u32`, `string`, `struct User [id, name]`, ...) and
//! answers it with an empty value (0, `""`, one element per sequence, variant 0 of an enum), so
//! that nested types are probed too. Recursion and width are bounded; a `Deserialize` that
//! rejects an empty value simply ends the probe there (the record up to that point is the
//! layout). The same code always records the same layout, on every platform.

use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use xxhash_rust::xxh3::Xxh3;

/// Deepest nesting the probe follows (recursive types end here).
const MAX_DEPTH: u32 = 24;
/// Most requests the probe answers (wide types of wide types end here).
const MAX_STEPS: u32 = 4096;

/// Hashes the layout of `T` into `hasher`.
pub(crate) fn hash_layout<T: DeserializeOwned>(hasher: &mut Xxh3) {
    let mut probe = Probe { hasher, depth: 0, steps: 0 };
    // Ends with an error whenever the probe stops early; what was recorded is the layout.
    let _ = T::deserialize(&mut probe);
}

struct Probe<'h> {
    hasher: &'h mut Xxh3,
    depth: u32,
    steps: u32,
}

/// Why the probe stopped (never shown to users: the probe's result is only the hash).
#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("layout probe stopped")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<M: fmt::Display>(_: M) -> Self {
        Stop
    }
}

impl Probe<'_> {
    /// Records one request: a tag and its names, each length-prefixed (so that `["ab","c"]` and
    /// `["a","bc"]` differ).
    fn record(&mut self, tag: &str, names: &[&str]) -> Result<(), Stop> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(Stop);
        }
        for part in std::iter::once(&tag).chain(names) {
            self.hasher.update(&u64::try_from(part.len()).unwrap_or(u64::MAX).to_le_bytes());
            self.hasher.update(part.as_bytes());
        }
        self.hasher.update(&u64::try_from(names.len()).unwrap_or(u64::MAX).to_le_bytes());
        Ok(())
    }

    /// Runs `f` one level deeper, refusing past [`MAX_DEPTH`].
    fn nested<R>(&mut self, f: impl FnOnce(&mut Self) -> Result<R, Stop>) -> Result<R, Stop> {
        if self.depth >= MAX_DEPTH {
            self.record("too-deep", &[])?;
            return Err(Stop);
        }
        self.depth += 1;
        let result = f(self);
        self.depth -= 1;
        result
    }
}

/// Answers `len` elements of a sequence (or `len` entries of a map) with probed values.
struct Elements<'p, 'h> {
    probe: &'p mut Probe<'h>,
    left: usize,
}

impl Elements<'_, '_> {
    /// The next element (or map key), probed, while any are left.
    fn next<'de, S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, Stop> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.probe).map(Some)
    }
}

impl<'de> de::SeqAccess<'de> for Elements<'_, '_> {
    type Error = Stop;
    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, Stop> {
        self.next(seed)
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

impl<'de> de::MapAccess<'de> for Elements<'_, '_> {
    type Error = Stop;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Stop> {
        self.next(seed)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Stop> {
        seed.deserialize(&mut *self.probe)
    }
}

/// An enum: always its first variant, whose content is probed.
struct FirstVariant<'p, 'h> {
    probe: &'p mut Probe<'h>,
}

impl<'de, 'p, 'h> de::EnumAccess<'de> for FirstVariant<'p, 'h> {
    type Error = Stop;
    type Variant = Self;
    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), Stop> {
        let index: de::value::U32Deserializer<Stop> = 0u32.into_deserializer();
        Ok((seed.deserialize(index)?, self))
    }
}

impl<'de> de::VariantAccess<'de> for FirstVariant<'_, '_> {
    type Error = Stop;
    fn unit_variant(self) -> Result<(), Stop> {
        self.probe.record("unit-variant", &[])
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Stop> {
        self.probe.record("newtype-variant", &[])?;
        seed.deserialize(self.probe)
    }
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Stop> {
        self.probe.record("tuple-variant", &[&len.to_string()])?;
        visitor.visit_seq(Elements { probe: self.probe, left: len })
    }
    fn struct_variant<V: Visitor<'de>>(self, fields: &'static [&'static str], visitor: V) -> Result<V::Value, Stop> {
        self.probe.record("struct-variant", fields)?;
        visitor.visit_seq(Elements { probe: self.probe, left: fields.len() })
    }
}

/// A scalar request: recorded, then answered with `$value`.
macro_rules! scalar {
    ($($method:ident => $visit:ident($($value:expr)?);)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
            self.record(stringify!($method), &[])?;
            visitor.$visit($($value)?)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for &mut Probe<'_> {
    type Error = Stop;

    scalar! {
        deserialize_any => visit_unit();
        deserialize_bool => visit_bool(false);
        deserialize_i8 => visit_i8(0);
        deserialize_i16 => visit_i16(0);
        deserialize_i32 => visit_i32(0);
        deserialize_i64 => visit_i64(0);
        deserialize_i128 => visit_i128(0);
        deserialize_u8 => visit_u8(0);
        deserialize_u16 => visit_u16(0);
        deserialize_u32 => visit_u32(0);
        deserialize_u64 => visit_u64(0);
        deserialize_u128 => visit_u128(0);
        deserialize_f32 => visit_f32(0.0);
        deserialize_f64 => visit_f64(0.0);
        deserialize_char => visit_char('\0');
        deserialize_str => visit_str("");
        deserialize_string => visit_str("");
        deserialize_bytes => visit_bytes(&[]);
        deserialize_byte_buf => visit_bytes(&[]);
        deserialize_unit => visit_unit();
        deserialize_identifier => visit_str("");
        deserialize_ignored_any => visit_unit();
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.record("option", &[])?;
        self.nested(|probe| visitor.visit_some(probe))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, Stop> {
        self.record("unit-struct", &[name])?;
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, Stop> {
        self.record("newtype-struct", &[name])?;
        self.nested(|probe| visitor.visit_newtype_struct(probe))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.record("seq", &[])?;
        self.nested(|probe| visitor.visit_seq(Elements { probe, left: 1 }))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Stop> {
        self.record("tuple", &[&len.to_string()])?;
        self.nested(|probe| visitor.visit_seq(Elements { probe, left: len }))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Stop> {
        self.record("tuple-struct", &[name, &len.to_string()])?;
        self.nested(|probe| visitor.visit_seq(Elements { probe, left: len }))
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.record("map", &[])?;
        self.nested(|probe| visitor.visit_map(Elements { probe, left: 1 }))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Stop> {
        self.record("struct", &[name])?;
        self.record("fields", fields)?;
        self.nested(|probe| visitor.visit_seq(Elements { probe, left: fields.len() }))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Stop> {
        self.record("enum", &[name])?;
        self.record("variants", variants)?;
        self.nested(|probe| visitor.visit_enum(FirstVariant { probe }))
    }

    fn is_human_readable(&self) -> bool {
        // The compact form: what the binary codecs see (postcard, bincode).
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout<T: DeserializeOwned>() -> u64 {
        let mut hasher = Xxh3::new();
        hash_layout::<T>(&mut hasher);
        hasher.digest()
    }

    mod v1 {
        #[derive(serde::Deserialize)]
        pub struct User {
            pub _id: u32,
            pub _name: String,
        }
    }
    mod v2 {
        #[derive(serde::Deserialize)]
        pub struct User {
            pub _name: String,
            pub _id: u32,
        }
    }
    mod v3 {
        #[derive(serde::Deserialize)]
        pub struct User {
            pub _id: u64,
            pub _name: String,
        }
    }
    mod v4 {
        #[derive(serde::Deserialize)]
        #[serde(rename = "User@2")]
        pub struct User {
            pub _id: u32,
            pub _name: String,
        }
    }
    mod v5 {
        #[derive(serde::Deserialize)]
        pub struct User {
            pub _id: u32,
            pub _name: String,
            pub _tags: Vec<(u8, Option<super::v1::User>)>,
        }
    }

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    enum Shape {
        _Circle { _r: f64 },
        _Square(u32),
    }

    #[derive(serde::Deserialize)]
    struct Tree {
        _children: Vec<Tree>,
        _value: Option<Box<Tree>>,
    }

    #[test]
    fn every_change_of_layout_changes_the_hash_and_the_same_layout_keeps_it() {
        let all = [
            layout::<v1::User>(),
            layout::<v2::User>(),
            layout::<v3::User>(),
            layout::<v4::User>(),
            layout::<v5::User>(),
            layout::<Shape>(),
            layout::<Tree>(),
            layout::<u32>(),
            layout::<u64>(),
            layout::<String>(),
            layout::<Vec<String>>(),
            layout::<std::collections::HashMap<String, u8>>(),
        ];
        for (i, a) in all.iter().enumerate() {
            for (j, b) in all.iter().enumerate().skip(i + 1) {
                assert_ne!(a, b, "layouts {i} and {j} collide");
            }
        }
        assert_eq!(layout::<v1::User>(), layout::<v1::User>());
        // Types that serde treats alike have the same layout (their paths still differ).
        assert_eq!(layout::<Vec<u8>>(), layout::<std::collections::VecDeque<u8>>());
        assert_eq!(layout::<Box<u8>>(), layout::<u8>());
    }
}
