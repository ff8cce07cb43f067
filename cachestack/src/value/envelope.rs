//! The byte envelope every byte store writes around a value.
//!
//! Layout (all integers little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | magic `b"CS"` |
//! | 2 | 1 | format version (1) |
//! | 3 | 1 | codec id ([`Codec::id`]) |
//! | 4 | 1 | flags: bit 0 zstd, bit 1 lz4, bit 2 signed |
//! | 5 | 8 | type fingerprint ([`crate::type_fingerprint`]) |
//! | 13 | 8 | expiry, Unix microseconds (0: never) |
//! | 21 | 4 | stored payload length |
//! | 25 | n | payload (compressed if a flag says so) |
//! | 25+n | t | format 2 only: the tag block (below) |
//! | 25+n+t | 32 | HMAC-SHA256 over namespace, key, header, payload and tag block (when signed) |
//!
//! Format 1 is an entry without tags; this build writes it for every untagged entry (byte for
//! byte what earlier builds wrote, which they and this build read). Format 2 is a tagged entry
//! ([`Value::with_tags`]): the same header with version 2, then after the payload the tag block:
//! its length `t` (4 bytes, this field included), the write time (8 bytes, Unix microseconds),
//! the number of tags (2 bytes), and each tag as its length (2 bytes) and UTF-8 bytes. Builds
//! before format 2 refuse a format-2 entry (a miss), never misread it.
//!
//! The HMAC covers what identifies the entry, the store's namespace and the cache key (each
//! length-prefixed), so a signed value copied under another key or into another namespace is
//! rejected.

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::value::codec::{Codec, MAX_DECODE_BYTES};
pub use crate::value::compression::Compression;
use crate::value::compression::{compress_lz4, compress_zstd, decompress_lz4, decompress_zstd};
use crate::value::{Encoded, TagStamp, Value};

const MAGIC: [u8; 2] = *b"CS";
const FORMAT_VERSION: u8 = 1;
/// The format of a tagged entry: format 1 followed by the tag block.
const FORMAT_TAGGED: u8 = 2;
use super::tag_block::{read_tag_block, tag_block};
pub(crate) use super::tag_block::{MAX_TAGS, MAX_TAG_BYTES};
const HEADER_LEN: usize = 25;
#[cfg(feature = "signing")]
const MAC_LEN: usize = 32;
const FLAG_ZSTD: u8 = 1;
const FLAG_LZ4: u8 = 2;
const FLAG_SIGNED: u8 = 4;

/// A secret that signs values with HMAC-SHA256 (feature `signing`). Stores configured with a
/// signer reject unsigned values and values whose signature does not match, so bytes planted in
/// a shared store by another program are never deserialised.
///
/// `Debug` never shows the secret.
///
/// ```
/// # #[cfg(feature = "signing")] {
/// let signer = cachestack::Signer::new(b"a long random secret").unwrap();
/// assert_eq!(format!("{signer:?}"), "Signer(<redacted>)");
/// # }
/// ```
#[derive(Clone)]
pub struct Signer {
    #[cfg(feature = "signing")]
    key: hmac::Hmac<sha2::Sha256>,
}

impl Signer {
    /// A signer with `secret` as the HMAC key. Secrets shorter than 16 bytes are refused.
    #[cfg(feature = "signing")]
    pub fn new(secret: impl AsRef<[u8]>) -> Result<Self> {
        use hmac::Mac;
        let secret = secret.as_ref();
        if secret.len() < 16 {
            return Err(Error::config("a signing secret must be at least 16 bytes long"));
        }
        let key = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret)
            .map_err(|e| Error::config(format!("invalid signing secret: {e}")))?;
        Ok(Signer { key })
    }

    /// Without the `signing` feature a signer cannot be built.
    #[cfg(not(feature = "signing"))]
    pub fn new(_secret: impl AsRef<[u8]>) -> Result<Self> {
        Err(Error::config("value signing needs the `signing` cargo feature of cachestack"))
    }

    /// The MAC of an entry: its identity (namespace and key, each length-prefixed so that no two
    /// identities share an input) and the envelope's bytes.
    #[cfg(feature = "signing")]
    fn mac(&self, namespace: &str, key: &str, body: &[u8]) -> hmac::Hmac<sha2::Sha256> {
        use hmac::Mac;
        let mut mac = self.key.clone();
        mac.update(&(namespace.len() as u64).to_le_bytes());
        mac.update(namespace.as_bytes());
        mac.update(&(key.len() as u64).to_le_bytes());
        mac.update(key.as_bytes());
        mac.update(body);
        mac
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signer(<redacted>)")
    }
}

/// How a byte store writes values: codec, compression, signing and size limit.
///
/// ```
/// use cachestack::{Codec, Value, ValueFormat};
///
/// let format = ValueFormat::default();
/// let bytes = format.seal("user:1", &Value::new("Ada".to_string()), None).unwrap();
/// let (value, expires) = format.open("user:1", &bytes).unwrap();
/// assert_eq!(value.get::<String>().unwrap(), "Ada");
/// assert!(expires.is_none());
/// // Truncated bytes are rejected:
/// assert!(format.open("user:1", &bytes[..bytes.len() - 1]).is_err());
/// ```
#[derive(Debug, Clone)]
pub struct ValueFormat {
    /// Codec for new values.
    pub codec: Codec,
    /// Compression for new values.
    pub compression: Compression,
    /// Payloads smaller than this are never compressed.
    pub compress_min_bytes: usize,
    /// Signs new values and requires a valid signature on read.
    pub signer: Option<Signer>,
    /// Largest payload (after decompression) that is written or read.
    pub max_value_bytes: usize,
}

impl Default for ValueFormat {
    fn default() -> Self {
        ValueFormat {
            codec: Codec::Postcard,
            compression: Compression::None,
            compress_min_bytes: 512,
            signer: None,
            max_value_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Milliseconds since the Unix epoch for an expiry, 0 for none.
///
/// Through [`Deadline::at`](crate::Deadline::at): a time before the epoch is 1 (long past), one
/// past the latest deadline (end of year 9999) is that deadline, never a truncated small number.
pub(crate) fn expiry_to_millis(expires: Option<SystemTime>) -> u64 {
    expires.map_or(0, |t| crate::expiry::Deadline::at(t).unix_millis())
}

pub(crate) fn millis_to_expiry(ms: u64) -> Option<SystemTime> {
    // Read from outside: checked (a huge value becomes the latest deadline, never a panic).
    crate::expiry::Deadline::from_unix_millis(ms).map(crate::expiry::Deadline::time)
}

/// The time left before `expires`, `None` for no expiry, `Some(ZERO)` once it has passed.
pub fn remaining(expires: Option<SystemTime>, now: SystemTime) -> Option<Duration> {
    expires.map(|t| t.duration_since(now).unwrap_or(Duration::ZERO))
}

impl ValueFormat {
    /// Encodes `value` for storage under `key` outside any namespace, expiring at `expires`:
    /// [`ValueFormat::seal_in`] with the empty namespace.
    pub fn seal(&self, key: &str, value: &Value, expires: Option<SystemTime>) -> Result<Vec<u8>> {
        self.seal_in("", key, value, expires)
    }

    /// Encodes `value` for storage under `key` in `namespace`, expiring at `expires`. With a
    /// signer, the signature covers the namespace and the key: [`ValueFormat::open_in`] accepts
    /// the bytes only for the same namespace and key. Byte stores pass their namespace (memcached
    /// adds the namespace generation).
    ///
    /// ```
    /// # #[cfg(feature = "signing")] {
    /// use cachestack::{Signer, Value, ValueFormat};
    ///
    /// let format = ValueFormat { signer: Some(Signer::new("a secret of 16+ bytes").unwrap()), ..Default::default() };
    /// let bytes = format.seal_in("app", "user:1", &Value::new(7u32), None).unwrap();
    /// assert!(format.open_in("app", "user:1", &bytes).is_ok());
    /// assert!(format.open_in("other-app", "user:1", &bytes).is_err());
    /// # }
    /// ```
    pub fn seal_in(&self, namespace: &str, key: &str, value: &Value, expires: Option<SystemTime>) -> Result<Vec<u8>> {
        let stamp = value.tag_stamp();
        value.with_encoded(self.codec, |encoded| self.seal_encoded(namespace, key, encoded, expires, stamp))?
    }

    fn seal_encoded(
        &self,
        namespace: &str,
        key: &str,
        encoded: &Encoded,
        expires: Option<SystemTime>,
        stamp: Option<&TagStamp>,
    ) -> Result<Vec<u8>> {
        let raw = &encoded.payload;
        if raw.len() > self.max_value_bytes {
            return Err(Error::ValueTooLarge { size: raw.len(), limit: self.max_value_bytes });
        }
        let mut flags = 0u8;
        let compressed;
        let payload: &[u8] = if raw.len() < self.compress_min_bytes {
            raw
        } else {
            match self.compression {
                Compression::None => raw,
                Compression::Zstd { level } => {
                    compressed = compress_zstd(raw, level)?;
                    flags |= FLAG_ZSTD;
                    &compressed
                }
                Compression::Lz4 => {
                    compressed = compress_lz4(raw)?;
                    flags |= FLAG_LZ4;
                    &compressed
                }
            }
        };
        let payload_len = u32::try_from(payload.len()).map_err(|_| Error::ValueTooLarge {
            size: payload.len(),
            limit: usize::try_from(u32::MAX).unwrap_or(usize::MAX),
        })?;
        if self.signer.is_some() {
            flags |= FLAG_SIGNED;
        }
        let tag_block = stamp.map(tag_block).transpose()?;
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + tag_block.as_ref().map_or(0, Vec::len) + 32);
        out.extend_from_slice(&MAGIC);
        out.push(if tag_block.is_some() { FORMAT_TAGGED } else { FORMAT_VERSION });
        out.push(encoded.codec.id());
        out.push(flags);
        out.extend_from_slice(&encoded.type_fingerprint.to_le_bytes());
        out.extend_from_slice(&expiry_to_millis(expires).to_le_bytes());
        out.extend_from_slice(&payload_len.to_le_bytes());
        out.extend_from_slice(payload);
        if let Some(block) = &tag_block {
            out.extend_from_slice(block);
        }
        #[cfg(feature = "signing")]
        if let Some(signer) = &self.signer {
            use hmac::Mac;
            let tag = signer.mac(namespace, key, &out).finalize().into_bytes();
            out.extend_from_slice(&tag);
        }
        #[cfg(not(feature = "signing"))]
        let _ = (namespace, key);
        Ok(out)
    }

    /// Reads bytes written by [`ValueFormat::seal`] for `key`: [`ValueFormat::open_in`] with the
    /// empty namespace.
    pub fn open(&self, key: &str, bytes: &[u8]) -> Result<(Value, Option<SystemTime>)> {
        self.open_in("", key, bytes)
    }

    /// Reads bytes written by [`ValueFormat::seal_in`] for `key` in `namespace`: checks magic,
    /// version, length, signature (over namespace, key and bytes) and size, decompresses, and
    /// returns the value (decoded lazily on first typed read) with its expiry. Every failed check
    /// is [`Error::InvalidValue`].
    pub fn open_in(&self, namespace: &str, key: &str, bytes: &[u8]) -> Result<(Value, Option<SystemTime>)> {
        let header = read_header(bytes)?;
        let signed = header.flags & FLAG_SIGNED != 0;
        let trailer = if signed { 32 } else { 0 };
        // The length is read from outside: checked arithmetic (usize may be 32 bits).
        let payload_end = HEADER_LEN.checked_add(header.payload_len);
        let (stamp, end) = match (header.version, payload_end) {
            (FORMAT_TAGGED, Some(at)) => {
                let (stamp, len) = read_tag_block(bytes.get(at..).unwrap_or_default())?;
                (Some(stamp), at.checked_add(len))
            }
            (_, end) => (None, end),
        };
        let total = end.and_then(|end| end.checked_add(trailer));
        let (Some(payload_end), Some(end), Some(total)) = (payload_end, end, total) else {
            return Err(Error::invalid(format!("payload length {} overflows", header.payload_len)));
        };
        if bytes.len() != total {
            return Err(Error::invalid(format!(
                "length mismatch: {} bytes stored, header announces {total}",
                bytes.len()
            )));
        }
        match (&self.signer, signed) {
            (Some(_signer), true) => {
                #[cfg(feature = "signing")]
                {
                    use hmac::Mac;
                    _signer
                        .mac(namespace, key, &bytes[..end])
                        .verify_slice(&bytes[end..end + MAC_LEN])
                        .map_err(|_| Error::invalid("signature does not match (tampered value or another secret)"))?;
                }
            }
            (Some(_), false) => return Err(Error::invalid("unsigned value in a store that requires signatures")),
            (None, _) => {}
        }
        #[cfg(not(feature = "signing"))]
        let _ = (namespace, key, end);
        let stored = &bytes[HEADER_LEN..payload_end];
        let limit = self.max_value_bytes.min(MAX_DECODE_BYTES);
        let payload = if header.flags & FLAG_ZSTD != 0 {
            decompress_zstd(stored, limit)?
        } else if header.flags & FLAG_LZ4 != 0 {
            decompress_lz4(stored, limit)?
        } else {
            if stored.len() > limit {
                return Err(Error::ValueTooLarge { size: stored.len(), limit });
            }
            stored.to_vec()
        };
        let mut value =
            Value::from_encoded(Encoded { codec: header.codec, type_fingerprint: header.type_fingerprint, payload });
        if let Some(stamp) = stamp {
            value = value.with_stamp(stamp);
        }
        Ok((value, millis_to_expiry(header.expires_ms)))
    }
}

/// The fixed header of an envelope.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    /// The format: 1, or 2 for a tagged entry.
    pub version: u8,
    pub codec: Codec,
    pub flags: u8,
    pub type_fingerprint: u64,
    pub expires_ms: u64,
    pub payload_len: usize,
}

impl Header {
    /// The expiry this header records.
    #[cfg_attr(not(feature = "file"), allow(dead_code))]
    pub fn expires(&self) -> Option<SystemTime> {
        millis_to_expiry(self.expires_ms)
    }
}

/// Reads just the header: enough to learn the expiry without touching the payload.
pub(crate) fn read_header(bytes: &[u8]) -> Result<Header> {
    if bytes.len() < HEADER_LEN {
        return Err(Error::invalid(format!("truncated: {} bytes, the header alone is {HEADER_LEN}", bytes.len())));
    }
    if bytes[0..2] != MAGIC {
        return Err(Error::invalid("not a cachestack value (bad magic)"));
    }
    if bytes[2] != FORMAT_VERSION && bytes[2] != FORMAT_TAGGED {
        return Err(Error::invalid(format!("unsupported envelope format version {}", bytes[2])));
    }
    let codec = Codec::from_id(bytes[3]).ok_or_else(|| Error::invalid(format!("unknown codec id {}", bytes[3])))?;
    let flags = bytes[4];
    if flags & !(FLAG_ZSTD | FLAG_LZ4 | FLAG_SIGNED) != 0 || flags & (FLAG_ZSTD | FLAG_LZ4) == (FLAG_ZSTD | FLAG_LZ4) {
        return Err(Error::invalid(format!("invalid flags {flags:#04x}")));
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let mut len = [0u8; 4];
    len.copy_from_slice(&bytes[21..25]);
    let payload_len = usize::try_from(u32::from_le_bytes(len))
        .map_err(|_| Error::invalid("payload length does not fit this platform's memory"))?;
    Ok(Header { version: bytes[2], codec, flags, type_fingerprint: u64_at(5), expires_ms: u64_at(13), payload_len })
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn sealed(format: &ValueFormat) -> Vec<u8> {
        format.seal("k", &Value::new("x".repeat(2000)), Some(SystemTime::now() + Duration::from_secs(60))).unwrap()
    }

    #[test]
    fn every_byte_flip_is_rejected_or_decodes_to_the_same_value() {
        let format = ValueFormat::default();
        let bytes = sealed(&format);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x5a;
            // Without a signature a flipped payload byte may still decode (to other text):
            // what must never happen is a panic.
            let _ = format.open("k", &bad).and_then(|(v, _)| v.get::<String>());
        }
        for len in 0..bytes.len() {
            assert!(format.open("k", &bytes[..len]).is_err());
        }
    }

    #[cfg(feature = "signing")]
    #[test]
    fn signatures_reject_tampering_other_keys_and_unsigned_values() {
        let signed =
            ValueFormat { signer: Some(Signer::new("0123456789abcdef-secret").unwrap()), ..Default::default() };
        let bytes = sealed(&signed);
        assert_eq!(signed.open("k", &bytes).unwrap().0.get::<String>().unwrap().len(), 2000);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(signed.open("k", &bad).is_err(), "flip at {i} accepted");
        }
        assert!(signed.open("other-key", &bytes).is_err());
        // The namespace is signed too, and no split of namespace and key meets another.
        let in_ns = signed.seal_in("ns", "k", &Value::new("x".to_string()), None).unwrap();
        assert!(signed.open_in("ns", "k", &in_ns).is_ok());
        for (namespace, key) in [("", "k"), ("other", "k"), ("n", "sk"), ("nsk", ""), ("ns", "K")] {
            assert!(signed.open_in(namespace, key, &in_ns).is_err(), "{namespace:?}/{key:?} accepted");
        }
        assert!(signed.open("k", &sealed(&ValueFormat::default())).is_err());
        let other = ValueFormat { signer: Some(Signer::new("another-secret-of-16").unwrap()), ..Default::default() };
        assert!(other.open("k", &bytes).is_err());
    }

    #[cfg(all(feature = "zstd", feature = "lz4"))]
    #[test]
    fn compression_round_trips_and_caps_decompressed_size() {
        for compression in [Compression::Zstd { level: 3 }, Compression::Lz4] {
            let format = ValueFormat { compression, ..Default::default() };
            let bytes = sealed(&format);
            assert!(bytes.len() < 1000, "{compression:?} did not compress");
            assert_eq!(format.open("k", &bytes).unwrap().0.get::<String>().unwrap().len(), 2000);
            let tight = ValueFormat { max_value_bytes: 100, ..format };
            assert!(tight.open("k", &bytes).is_err(), "{compression:?} ignored the cap");
        }
    }

    /// The decoded payload a value read from bytes holds.
    fn payload_of(value: &Value) -> &Vec<u8> {
        &value.0.encoded().get().expect("a value read from bytes has its encoded form").payload
    }

    #[cfg(all(feature = "zstd", feature = "lz4"))]
    #[test]
    fn a_decompressed_value_holds_its_size_not_the_limit() {
        for compression in [Compression::Zstd { level: 3 }, Compression::Lz4] {
            let format = ValueFormat { compression, ..Default::default() };
            let (value, _) = format.open("k", &sealed(&format)).unwrap();
            let payload = payload_of(&value);
            assert_eq!(payload.len(), 2002, "{compression:?}");
            assert_eq!(payload.capacity(), payload.len(), "{compression:?} kept spare capacity");
        }
    }

    #[test]
    fn an_uncompressed_value_holds_its_size() {
        let (value, _) = ValueFormat::default().open("k", &sealed(&ValueFormat::default())).unwrap();
        assert_eq!(payload_of(&value).capacity(), payload_of(&value).len());
    }

    /// Rewrites the content size a zstd frame declares (the frame header's last field).
    #[cfg(feature = "zstd")]
    fn declare_zstd_size(frame: &mut [u8], declared: u64) {
        let descriptor = frame[4];
        let single_segment = descriptor & 0x20 != 0;
        let dict_len = [0, 1, 2, 4][usize::from(descriptor & 3)];
        let size_len = match descriptor >> 6 {
            0 if single_segment => 1,
            0 => panic!("frame declares no content size"),
            1 => 2,
            2 => 4,
            _ => 8,
        };
        let at = 5 + usize::from(!single_segment) + dict_len;
        let stored = if size_len == 2 { declared - 256 } else { declared };
        frame[at..at + size_len].copy_from_slice(&stored.to_le_bytes()[..size_len]);
    }

    #[cfg(feature = "zstd")]
    #[test]
    fn a_zstd_frame_that_lies_about_its_size_is_an_error() {
        let format = ValueFormat { compression: Compression::Zstd { level: 3 }, ..Default::default() };
        let bytes = sealed(&format);
        for declared in [300, 2001, 2003, 60_000] {
            let mut lying = bytes.clone();
            declare_zstd_size(&mut lying[HEADER_LEN..], declared);
            let err = format.open("k", &lying).unwrap_err();
            assert!(err.is_invalid_value(), "declared {declared}: {err}");
        }
        // A frame declaring more than the limit is refused before anything is allocated.
        let mut huge = bytes.clone();
        declare_zstd_size(&mut huge[HEADER_LEN..], 60_000);
        let tight = ValueFormat { max_value_bytes: 10_000, ..format.clone() };
        assert!(matches!(tight.open("k", &huge), Err(Error::ValueTooLarge { size: 60_000, limit: 10_000 })));
    }

    #[cfg(feature = "zstd")]
    #[test]
    fn a_zstd_frame_without_a_declared_size_streams_within_the_limit() {
        use std::io::Read;
        let raw = Codec::Postcard.serialize(&"y".repeat(5000)).unwrap();
        let frame = zstd::stream::encode_all(raw.as_slice(), 3).unwrap();
        assert!(matches!(zstd::zstd_safe::get_frame_content_size(&frame), Ok(None)));
        let envelope = |frame: &[u8]| {
            let mut out = MAGIC.to_vec();
            out.extend_from_slice(&[FORMAT_VERSION, Codec::Postcard.id(), FLAG_ZSTD]);
            out.extend_from_slice(&crate::type_fingerprint::<String>().to_le_bytes());
            out.extend_from_slice(&0u64.to_le_bytes());
            out.extend_from_slice(&u32::try_from(frame.len()).unwrap().to_le_bytes());
            out.extend_from_slice(frame);
            out
        };
        let format = ValueFormat::default();
        let (value, _) = format.open("k", &envelope(&frame)).unwrap();
        assert_eq!(payload_of(&value).capacity(), raw.len());
        assert_eq!(value.get::<String>().unwrap(), "y".repeat(5000));
        // Past the limit: refused (as too large, or because its window alone is larger).
        let tight = ValueFormat { max_value_bytes: 4000, ..format.clone() };
        let err = tight.open("k", &envelope(&frame)).unwrap_err();
        assert!(matches!(err, Error::ValueTooLarge { .. }) || err.is_invalid_value(), "{err}");
        // Bombs: 16 MiB of zeros in a few KiB, read with a 1 MiB limit. The output stops at the
        // limit; a frame whose window alone is past the limit is refused at its header.
        let small = ValueFormat { max_value_bytes: 1 << 20, ..format };
        for level in [1, 19] {
            let bomb = zstd::stream::encode_all(std::io::repeat(0).take(16 << 20), level).unwrap();
            assert!(bomb.len() < 16 << 10, "{}", bomb.len());
            let err = small.open("k", &envelope(&bomb)).unwrap_err();
            match level {
                1 => assert!(matches!(err, Error::ValueTooLarge { limit: 1_048_576, .. }), "{err}"),
                _ => assert!(err.is_invalid_value(), "{err}"),
            }
        }
    }

    #[cfg(feature = "lz4")]
    #[test]
    fn an_lz4_block_that_lies_about_its_size_is_refused_before_allocating() {
        let format = ValueFormat { compression: Compression::Lz4, ..Default::default() };
        let bytes = sealed(&format);
        let with_size = |size: u32| {
            let mut lying = bytes.clone();
            lying[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&size.to_le_bytes());
            lying
        };
        for announced in [0, 1000, 2001, 2003, 5000] {
            assert!(format.open("k", &with_size(announced)).unwrap_err().is_invalid_value(), "{announced}");
        }
        // More than the block could ever hold, or more than the limit: refused up front.
        assert!(format.open("k", &with_size(50_000_000)).unwrap_err().is_invalid_value());
        assert!(matches!(format.open("k", &with_size(u32::MAX)), Err(Error::ValueTooLarge { .. })));
    }

    #[test]
    fn a_huge_expiry_is_the_latest_deadline_never_a_wrapped_one() {
        let format = ValueFormat::default();
        let latest = crate::Deadline::after(Duration::MAX).time();
        // 2^64 + 384 milliseconds after the epoch: a `SystemTime` can hold it on 64-bit Unix;
        // truncated to 64 bits it would be 384 ms after the epoch (long expired).
        if let Some(far) = UNIX_EPOCH.checked_add(Duration::new(18_446_744_073_709_552, 0)) {
            let (_, expires) = format.open("k", &format.seal("k", &Value::new(1u8), Some(far)).unwrap()).unwrap();
            assert_eq!(expires, Some(latest));
        }
        let (_, expires) = format
            .open("k", &format.seal("k", &Value::new(1u8), Some(UNIX_EPOCH - Duration::from_secs(5))).unwrap())
            .unwrap();
        assert!(expires.is_some_and(|t| t <= UNIX_EPOCH + Duration::from_millis(1)), "before the epoch is long past");
        // Hostile expiry fields: clamped to the latest deadline, never a panic or "no expiry".
        let bytes = format.seal("k", &Value::new(1u8), None).unwrap();
        for ms in [u64::MAX, 1 << 63, u64::MAX / 1000 + 1, 253_402_300_800_000] {
            let mut hostile = bytes.clone();
            hostile[13..21].copy_from_slice(&ms.to_le_bytes());
            assert_eq!(read_header(&hostile).unwrap().expires(), Some(latest), "{ms}");
            assert_eq!(format.open("k", &hostile).unwrap().1, Some(latest), "{ms}");
        }
    }

    #[test]
    fn oversized_values_are_refused_on_write() {
        let format = ValueFormat { max_value_bytes: 10, ..Default::default() };
        assert!(matches!(format.seal("k", &Value::new("x".repeat(100)), None), Err(Error::ValueTooLarge { .. })));
    }
}
