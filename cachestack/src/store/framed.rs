//! The bytes a store keeps for one key when the medium names the entry by a hash of the key (the
//! file store's files, the object store's objects): a checksummed frame around the full key and
//! the sealed value envelope. Reads check the key, so two keys whose hashes collide never share
//! a value.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `b"CSF"` + frame format version (1) |
//! | 4 | 8 | xxh3-64 checksum of every byte from offset 12 to the end |
//! | 12 | 4 | key length `k` |
//! | 16 | k | the key (UTF-8) |
//! | 16+k | .. | the value envelope (codec, type fingerprint, sealed deadline, payload, optional HMAC) |

use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::expiry::Deadline;
use crate::store::{Entry, StoreSettings};
use crate::value::envelope::read_header;
use crate::value::Value;

/// Magic and frame format version at the start of every frame.
pub(crate) const FRAME_MAGIC: [u8; 4] = *b"CSF\x01";
/// Bytes before the key: magic, checksum, key length.
pub(crate) const FRAME_HEADER_LEN: usize = 16;
/// Fixed header of the value envelope (see `envelope.rs`).
pub(crate) const ENVELOPE_HEADER_LEN: usize = 25;

/// The name of `key`'s entry in a medium that names entries by hash: 32 hex digits of its
/// xxh3-128 (stable across platforms and Rust versions).
pub(crate) fn key_hash(key: &str) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(key.as_bytes()))
}

/// Frames an envelope for `key`.
pub(crate) fn frame(key: &str, envelope: &[u8]) -> Result<Vec<u8>> {
    let key_len =
        u32::try_from(key.len()).map_err(|_| Error::ValueTooLarge { size: key.len(), limit: u32::MAX as usize })?;
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + key.len() + envelope.len());
    out.extend_from_slice(&FRAME_MAGIC);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(envelope);
    let checksum = xxhash_rust::xxh3::xxh3_64(&out[12..]);
    out[4..12].copy_from_slice(&checksum.to_le_bytes());
    Ok(out)
}

/// Checks the frame of bytes read for `key` and returns its envelope.
pub(crate) fn unframe<'a>(key: &str, bytes: &'a [u8]) -> Result<&'a [u8]> {
    if bytes.len() < FRAME_HEADER_LEN {
        return Err(Error::invalid(format!(
            "truncated entry: {} bytes, the header alone is {FRAME_HEADER_LEN}",
            bytes.len()
        )));
    }
    if bytes[..3] != FRAME_MAGIC[..3] {
        return Err(Error::invalid("not a cachestack entry (bad magic)"));
    }
    if bytes[3] != FRAME_MAGIC[3] {
        return Err(Error::invalid(format!("unsupported entry format version {}", bytes[3])));
    }
    let mut checksum = [0u8; 8];
    checksum.copy_from_slice(&bytes[4..12]);
    if u64::from_le_bytes(checksum) != xxhash_rust::xxh3::xxh3_64(&bytes[12..]) {
        return Err(Error::invalid("checksum mismatch (truncated or corrupt entry)"));
    }
    let Some(stored_key) = key_end(bytes).and_then(|end| bytes.get(FRAME_HEADER_LEN..end)) else {
        return Err(Error::invalid("key length runs past the end of the entry"));
    };
    if stored_key != key.as_bytes() {
        return Err(Error::invalid(format!(
            "the entry holds another key ({:?}): misplaced entry or hash collision",
            String::from_utf8_lossy(stored_key)
        )));
    }
    Ok(&bytes[FRAME_HEADER_LEN + stored_key.len()..])
}

/// Where the key of a frame ends (the frame's key length read from outside: checked).
fn key_end(bytes: &[u8]) -> Option<usize> {
    let len = bytes.get(12..16)?;
    let len = usize::try_from(u32::from_le_bytes([len[0], len[1], len[2], len[3]])).ok()?;
    FRAME_HEADER_LEN.checked_add(len)
}

/// What the first bytes of a frame tell without reading the rest (no checksum: reads check it).
#[cfg(feature = "object-store")]
#[derive(Debug, PartialEq)]
pub(crate) enum Peek {
    /// The key and sealed deadline.
    Entry(String, Option<Deadline>),
    /// The first `n` bytes are needed to tell (a longer key than was read).
    Need(usize),
    /// Not a frame.
    Invalid,
}

/// Reads the key and sealed deadline from the first bytes of a frame.
#[cfg(feature = "object-store")]
pub(crate) fn peek(head: &[u8]) -> Peek {
    if head.len() < FRAME_HEADER_LEN {
        return Peek::Invalid;
    }
    if head[..4] != FRAME_MAGIC {
        return Peek::Invalid;
    }
    let Some(end) = key_end(head) else { return Peek::Invalid };
    let Some(needed) = end.checked_add(ENVELOPE_HEADER_LEN) else { return Peek::Invalid };
    if head.len() < needed {
        return Peek::Need(needed);
    }
    let Ok(key) = std::str::from_utf8(&head[FRAME_HEADER_LEN..end]) else { return Peek::Invalid };
    match read_header(&head[end..needed]) {
        Ok(header) => Peek::Entry(key.to_owned(), header.expires().map(Deadline::at)),
        Err(_) => Peek::Invalid,
    }
}

impl StoreSettings {
    /// The framed bytes of `value` for `key` expiring at `deadline`: sealed in this cache's
    /// namespace (signed with a signer), then framed with the key.
    pub(crate) fn seal_framed(&self, key: &str, value: &Value, deadline: Option<Deadline>) -> Result<Vec<u8>> {
        frame(key, &self.seal(key, value, deadline.map(Deadline::time))?)
    }

    /// The entry in framed `bytes` read for `key`, with the deadline its writer sealed in it;
    /// `None` once that deadline has passed at `now`. Every failed check is an error
    /// ([`Error::InvalidValue`] for bytes that are not a valid entry of `key`).
    #[cfg(any(feature = "object-store", test))]
    pub(crate) fn open_framed(&self, key: &str, bytes: &[u8], now: SystemTime) -> Result<Option<Entry>> {
        self.open_unframed(key, unframe(key, bytes)?, now)
    }

    /// [`open_framed`](Self::open_framed) for an envelope whose frame [`unframe`] has checked.
    /// An error here means the bytes are intact (the frame's checksum holds) but this reader
    /// cannot use them: another secret, a newer format, a larger value than this reader allows.
    pub(crate) fn open_unframed(&self, key: &str, envelope: &[u8], now: SystemTime) -> Result<Option<Entry>> {
        // The header alone first: an expired entry is not worth decoding.
        let expires = read_header(envelope)?.expires().map(Deadline::at);
        if expires.is_some_and(|deadline| deadline.has_passed_at(now)) {
            return Ok(None);
        }
        // The deadline served is the one `open` has checked (HMAC included).
        let (value, sealed) = self.open(key, envelope)?;
        let expires = sealed.map(Deadline::at);
        if expires.is_some_and(|deadline| deadline.has_passed_at(now)) {
            return Ok(None);
        }
        Ok(Some(Entry::new(value, expires)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::value::envelope::ValueFormat;

    #[test]
    fn framing_rejects_every_truncation_and_flip() {
        let envelope = ValueFormat::default().seal("key", &Value::new("value".to_string()), None).unwrap();
        let bytes = frame("key", &envelope).unwrap();
        assert_eq!(unframe("key", &bytes).unwrap(), envelope.as_slice());
        assert!(unframe("other", &bytes).is_err());
        for len in 0..bytes.len() {
            assert!(unframe("key", &bytes[..len]).is_err(), "truncated to {len}");
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                assert!(unframe("key", &bad).is_err(), "flip of bit {bit} at {i} accepted");
            }
        }
    }

    #[cfg(feature = "object-store")]
    #[test]
    fn peek_reads_key_and_deadline_from_the_head() {
        let settings = StoreSettings::new("t");
        let deadline = Deadline::from_unix_millis(4_000_000_000_000);
        let bytes = settings.seal_framed("user:1", &Value::new(5u8), deadline).unwrap();
        assert_eq!(peek(&bytes), Peek::Entry("user:1".into(), deadline));
        assert_eq!(peek(&bytes[..20]), Peek::Need(FRAME_HEADER_LEN + 6 + ENVELOPE_HEADER_LEN));
        assert_eq!(peek(b"CSF"), Peek::Invalid);
        assert_eq!(peek(&[0xff; 64]), Peek::Invalid);
        let entry = settings.open_framed("user:1", &bytes, SystemTime::now()).unwrap().unwrap();
        assert_eq!((entry.value.get::<u8>().unwrap(), entry.expires), (5, deadline));
        let later = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(5_000_000_000);
        assert!(settings.open_framed("user:1", &bytes, later).unwrap().is_none(), "expired");
        assert!(settings.open_framed("user:2", &bytes, SystemTime::now()).is_err(), "another key");
    }
}
