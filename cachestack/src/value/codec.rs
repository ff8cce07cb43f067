//! Serialisation formats for byte stores.

use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::value::depth::Limited;

/// Largest payload a codec decodes; also bounds allocations a hostile length prefix could ask for.
pub(crate) const MAX_DECODE_BYTES: usize = 256 * 1024 * 1024;

/// How values are serialised in byte stores (file, Redis, PostgreSQL, Memcached).
///
/// The codec id is written into every envelope, so a store may hold values written with several
/// codecs and each decodes with its own.
///
/// | codec | id | feature | notes |
/// |---|---|---|---|
/// | `Postcard` | 0 | always | compact binary, the default |
/// | `Json` | 1 | `json` | readable, self-describing: a changed struct fails loudly |
/// | `MessagePack` | 2 | `msgpack` | self-describing binary (rmp-serde, structs as maps) |
/// | `Bincode` | 3 | `bincode` | bincode 2.x, opt-in: unmaintained upstream |
///
/// ```
/// use cachestack::Codec;
/// let bytes = Codec::Postcard.serialize(&("a", 1u8)).unwrap();
/// let back: (String, u8) = Codec::Postcard.deserialize(&bytes).unwrap();
/// assert_eq!(back, ("a".to_string(), 1));
/// assert_eq!("postcard".parse::<Codec>().unwrap(), Codec::Postcard);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Codec {
    /// postcard: compact, fast, not self-describing.
    #[default]
    Postcard,
    /// JSON via serde_json (feature `json`).
    Json,
    /// MessagePack via rmp-serde, structs written as maps (feature `msgpack`).
    MessagePack,
    /// bincode 2 with its standard configuration (feature `bincode`).
    Bincode,
}

impl Codec {
    /// The id written into envelopes.
    pub fn id(self) -> u8 {
        match self {
            Codec::Postcard => 0,
            Codec::Json => 1,
            Codec::MessagePack => 2,
            Codec::Bincode => 3,
        }
    }

    /// The codec with envelope id `id`.
    pub fn from_id(id: u8) -> Option<Codec> {
        Some(match id {
            0 => Codec::Postcard,
            1 => Codec::Json,
            2 => Codec::MessagePack,
            3 => Codec::Bincode,
            _ => return None,
        })
    }

    /// Lower-case name, as accepted by [`FromStr`] and URLs (`?codec=json`).
    pub fn name(self) -> &'static str {
        match self {
            Codec::Postcard => "postcard",
            Codec::Json => "json",
            Codec::MessagePack => "msgpack",
            Codec::Bincode => "bincode",
        }
    }

    fn err(self, e: impl fmt::Display) -> Error {
        Error::Codec { codec: self.name(), message: e.to_string() }
    }

    #[allow(dead_code)]
    fn disabled(self, feature: &str) -> Error {
        Error::Codec {
            codec: self.name(),
            message: format!("the `{feature}` cargo feature of cachestack is not enabled"),
        }
    }

    /// Serialises `value`.
    pub fn serialize<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>> {
        match self {
            Codec::Postcard => postcard::to_stdvec(value).map_err(|e| self.err(e)),
            #[cfg(feature = "json")]
            Codec::Json => serde_json::to_vec(value).map_err(|e| self.err(e)),
            #[cfg(feature = "msgpack")]
            Codec::MessagePack => rmp_serde::to_vec_named(value).map_err(|e| self.err(e)),
            #[cfg(feature = "bincode")]
            Codec::Bincode => {
                bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|e| self.err(e))
            }
            #[allow(unreachable_patterns)]
            other => Err(other.disabled(other.feature())),
        }
    }

    /// Deserialises `bytes`, which must hold exactly one value (trailing bytes are an error: they
    /// mean the bytes were written for a different shape of type).
    ///
    /// Every codec decodes with the same bounds: at most 256 MiB, and nesting at most 128
    /// levels deep (a value nested deeper, such as a recursive type read from hostile bytes, is an
    /// error rather than a stack overflow).
    pub fn deserialize<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T> {
        if bytes.len() > MAX_DECODE_BYTES {
            return Err(Error::ValueTooLarge { size: bytes.len(), limit: MAX_DECODE_BYTES });
        }
        let Limited(value) = match self {
            Codec::Postcard => {
                let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| self.err(e))?;
                if !rest.is_empty() {
                    return Err(self.err(format!("{} trailing bytes after the value", rest.len())));
                }
                value
            }
            #[cfg(feature = "json")]
            Codec::Json => serde_json::from_slice(bytes).map_err(|e| self.err(e))?,
            #[cfg(feature = "msgpack")]
            Codec::MessagePack => {
                use serde::Deserialize as _;
                let mut cursor = std::io::Cursor::new(bytes);
                let mut deserializer = rmp_serde::Deserializer::new(&mut cursor);
                // rmp-serde's own limit (1024) is deeper than ours and than a test thread's stack.
                deserializer.set_max_depth(crate::value::depth::MAX_DECODE_DEPTH + 1);
                let value = Limited::<T>::deserialize(&mut deserializer).map_err(|e| self.err(e))?;
                let read = usize::try_from(cursor.position()).unwrap_or(usize::MAX);
                let rest = bytes.len().saturating_sub(read);
                if rest != 0 {
                    return Err(self.err(format!("{rest} trailing bytes after the value")));
                }
                value
            }
            #[cfg(feature = "bincode")]
            Codec::Bincode => {
                let config = bincode::config::standard().with_limit::<MAX_DECODE_BYTES>();
                let (value, read) = bincode::serde::decode_from_slice(bytes, config).map_err(|e| self.err(e))?;
                if read != bytes.len() {
                    return Err(
                        self.err(format!("{} trailing bytes after the value", bytes.len().saturating_sub(read)))
                    );
                }
                value
            }
            #[allow(unreachable_patterns)]
            other => return Err(other.disabled(other.feature())),
        };
        Ok(value)
    }

    /// The cargo feature that provides this codec (`""` for postcard, which is always present).
    pub fn feature(self) -> &'static str {
        match self {
            Codec::Postcard => "",
            Codec::Json => "json",
            Codec::MessagePack => "msgpack",
            Codec::Bincode => "bincode",
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Codec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "postcard" => Codec::Postcard,
            "json" => Codec::Json,
            "msgpack" | "messagepack" => Codec::MessagePack,
            "bincode" => Codec::Bincode,
            _ => {
                return Err(Error::config(format!("unknown codec {s:?}: expected postcard, json, msgpack or bincode")))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::depth::MAX_DECODE_DEPTH;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct V1 {
        a: u32,
        b: String,
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct V2 {
        a: u32,
    }

    fn codecs() -> Vec<Codec> {
        let mut all = vec![Codec::Postcard];
        if cfg!(feature = "json") {
            all.push(Codec::Json);
        }
        if cfg!(feature = "msgpack") {
            all.push(Codec::MessagePack);
        }
        if cfg!(feature = "bincode") {
            all.push(Codec::Bincode);
        }
        all
    }

    #[test]
    fn every_enabled_codec_round_trips() {
        for codec in codecs() {
            let v = V1 { a: 7, b: "x".repeat(300) };
            let bytes = codec.serialize(&v).unwrap();
            assert_eq!(codec.deserialize::<V1>(&bytes).unwrap(), v, "{codec}");
            assert_eq!(Codec::from_id(codec.id()), Some(codec));
        }
    }

    #[test]
    fn a_changed_shape_does_not_decode() {
        for codec in codecs() {
            // A field added since the value was written: every codec refuses.
            let old = codec.serialize(&V2 { a: 7 }).unwrap();
            assert!(codec.deserialize::<V1>(&old).is_err(), "{codec} accepted a missing field");
            let bytes = codec.serialize(&V1 { a: 7, b: "hello".into() }).unwrap();
            assert!(codec.deserialize::<V1>(&bytes[..bytes.len() - 1]).is_err(), "{codec} truncated");
            // A field removed: binary codecs refuse (trailing bytes); self-describing ones
            // (JSON, MessagePack maps) read the fields that remain, which is correct data.
            let removed = codec.deserialize::<V2>(&bytes);
            match codec {
                Codec::Json | Codec::MessagePack => assert_eq!(removed.unwrap(), V2 { a: 7 }),
                _ => assert!(removed.is_err(), "{codec} accepted a removed field"),
            }
        }
    }

    /// A recursive type: each level is a sequence inside a newtype.
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Tree(Vec<Tree>);

    fn tree(depth: usize) -> Tree {
        (0..depth).fold(Tree(Vec::new()), |inner, _| Tree(vec![inner]))
    }

    /// `depth` nested one-element sequences as `codec` writes them, without building the value
    /// (which could not even be dropped at such depths).
    fn nested_bytes(codec: Codec, depth: usize) -> Vec<u8> {
        match codec {
            Codec::Json => ["[".repeat(depth + 1), "]".repeat(depth + 1)].concat().into_bytes(),
            Codec::MessagePack => [vec![0x91; depth], vec![0x90]].concat(),
            // postcard and bincode: a varint length 1 per level, then an empty sequence.
            _ => [vec![1; depth], vec![0]].concat(),
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        for codec in codecs() {
            assert_eq!(nested_bytes(codec, 3), codec.serialize(&tree(3)).unwrap(), "{codec}");
            let fine = codec.serialize(&tree(100)).unwrap();
            assert_eq!(codec.deserialize::<Tree>(&fine).unwrap(), tree(100), "{codec}");
            for depth in [MAX_DECODE_DEPTH, 10_000, 1_000_000] {
                let err = codec.deserialize::<Tree>(&nested_bytes(codec, depth)).unwrap_err();
                assert!(err.is_invalid_value(), "{codec} at {depth}: {err}");
            }
        }
        // One level per enum: the limit itself is reached without exhausting the stack.
        for codec in [Codec::Postcard, Codec::Bincode].into_iter().filter(|c| codecs().contains(c)) {
            for depth in [MAX_DECODE_DEPTH - 1, MAX_DECODE_DEPTH, 1_000_000] {
                let bytes = [vec![1; depth], vec![0]].concat();
                let decoded = codec.deserialize::<List>(&bytes);
                assert_eq!(decoded.is_ok(), depth < MAX_DECODE_DEPTH, "{codec} at {depth}");
            }
        }
    }

    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    enum List {
        Nil,
        Cons(Box<List>),
    }

    #[test]
    fn unknown_codec_names_are_config_errors() {
        assert!(matches!("yaml".parse::<Codec>(), Err(Error::Config { .. })));
    }
}
