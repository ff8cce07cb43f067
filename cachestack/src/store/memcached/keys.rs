//! What goes on the wire: safe keys, the stored record around an envelope, and memcached's TTL
//! rules.
//!
//! ## Keys
//!
//! memcached's ASCII protocol allows keys of at most 250 bytes without whitespace or control
//! characters, and memcache-async writes keys into the command line unchecked: a key holding
//! `\r\nflush_all` would run `flush_all`. So a key reaches the wire only in one of two forms:
//!
//! - `cs:<ns>:<key>` when `<key>` is plainly safe: printable ASCII (`!`..`~`), not starting with
//!   `#`, and the whole wire key fits in 250 bytes;
//! - `cs:<ns>:#<32 hex digits>` otherwise: the xxh3-128 of the key.
//!
//! `<ns>` is the namespace itself when it is short and made of `[A-Za-z0-9_.-]`, otherwise `#`
//! and the xxh3-128 of the namespace. Neither form can be mistaken for the other (a raw key never
//! starts with `#`, a raw namespace never contains `#` or `:`), and the namespace's generation
//! counter lives under `cs:<ns>#gen`, which no data key can equal.
//!
//! Hashing makes two keys share a wire key only if xxh3-128 collides; even then they never share
//! a value, because every record stores its namespace and key, and a read checks both.
//!
//! ## Records
//!
//! ```text
//! b"CM" | version (1) | generation u64 LE | namespace length u16 LE | key length u32 LE
//!       | namespace | key | envelope (see crate::value::envelope)
//! ```

use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::expiry::Deadline;

/// memcached's longest key.
pub(crate) const MAX_KEY_BYTES: usize = 250;
/// Namespaces longer than this are hashed in wire keys (and the hashed key form always fits).
const MAX_RAW_NAMESPACE: usize = 64;
/// Longest namespace accepted (it is stored in every record with a u16 length).
pub(crate) const MAX_NAMESPACE_BYTES: usize = 1024;
const PREFIX: &str = "cs:";

/// memcached reads an expiry time above 30 days as an absolute Unix timestamp.
pub(crate) const RELATIVE_TTL_LIMIT_SECS: u64 = 60 * 60 * 24 * 30;

/// True for a byte memcached accepts in a key (printable ASCII, no space).
#[inline]
fn safe_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

fn hash_hex(bytes: &[u8]) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(bytes))
}

/// The wire keys of one namespace.
#[derive(Debug, Clone)]
pub(crate) struct Keyspace {
    namespace: String,
    /// `cs:<ns>:`
    prefix: String,
    /// `cs:<ns>#gen`
    gen_key: String,
}

impl Keyspace {
    pub fn new(namespace: &str) -> Self {
        let raw_ok = !namespace.is_empty()
            && namespace.len() <= MAX_RAW_NAMESPACE
            && namespace.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        let ns = if raw_ok { namespace.to_string() } else { format!("#{}", hash_hex(namespace.as_bytes())) };
        Keyspace {
            namespace: namespace.to_string(),
            prefix: format!("{PREFIX}{ns}:"),
            gen_key: format!("{PREFIX}{ns}#gen"),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The key of this namespace's generation counter.
    pub fn gen_key(&self) -> &str {
        &self.gen_key
    }

    /// The key `key` is stored under: always at most 250 bytes of printable ASCII.
    pub fn wire(&self, key: &str) -> String {
        let raw = self.prefix.len() + key.len() <= MAX_KEY_BYTES && !key.starts_with('#') && key.bytes().all(safe_byte);
        let mut out = String::with_capacity(self.prefix.len() + if raw { key.len() } else { 33 });
        out.push_str(&self.prefix);
        if raw {
            out.push_str(key);
        } else {
            out.push('#');
            out.push_str(&hash_hex(key.as_bytes()));
        }
        debug_assert!(is_wire_safe(&out), "unsafe wire key {out:?}");
        out
    }
}

/// True when memcached would accept `key` as it is (checked in debug builds and tests).
pub(crate) fn is_wire_safe(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_BYTES && key.bytes().all(safe_byte)
}

const MAGIC: [u8; 2] = *b"CM";
const RECORD_VERSION: u8 = 1;
const RECORD_HEADER: usize = 2 + 1 + 8 + 2 + 4;

/// A record read back from memcached, borrowing the stored bytes.
#[derive(Debug)]
pub(crate) struct Record<'a> {
    pub generation: u64,
    pub namespace: &'a [u8],
    pub key: &'a [u8],
    pub envelope: &'a [u8],
}

impl<'a> Record<'a> {
    /// Bytes to store: the header, identity and `envelope`.
    pub fn encode(generation: u64, namespace: &str, key: &str, envelope: &[u8]) -> Result<Vec<u8>> {
        let ns_len = u16::try_from(namespace.len())
            .map_err(|_| Error::config(format!("memcached: namespace longer than {MAX_NAMESPACE_BYTES} bytes")))?;
        let key_len =
            u32::try_from(key.len()).map_err(|_| Error::ValueTooLarge { size: key.len(), limit: u32::MAX as usize })?;
        let mut out = Vec::with_capacity(RECORD_HEADER + namespace.len() + key.len() + envelope.len());
        out.extend_from_slice(&MAGIC);
        out.push(RECORD_VERSION);
        out.extend_from_slice(&generation.to_le_bytes());
        out.extend_from_slice(&ns_len.to_le_bytes());
        out.extend_from_slice(&key_len.to_le_bytes());
        out.extend_from_slice(namespace.as_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(envelope);
        Ok(out)
    }

    /// Splits stored bytes; anything malformed is [`Error::InvalidValue`].
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        if bytes.len() < RECORD_HEADER {
            return Err(Error::invalid(format!("memcached record truncated: {} bytes", bytes.len())));
        }
        if bytes[0..2] != MAGIC {
            return Err(Error::invalid("not a cachestack memcached record (bad magic)"));
        }
        if bytes[2] != RECORD_VERSION {
            return Err(Error::invalid(format!("unsupported memcached record version {}", bytes[2])));
        }
        let mut generation = [0u8; 8];
        generation.copy_from_slice(&bytes[3..11]);
        let ns_len = u16::from_le_bytes([bytes[11], bytes[12]]) as usize;
        let key_len = u32::from_le_bytes([bytes[13], bytes[14], bytes[15], bytes[16]]) as usize;
        let rest = &bytes[RECORD_HEADER..];
        if rest.len() < ns_len.saturating_add(key_len) {
            return Err(Error::invalid("memcached record truncated inside its key"));
        }
        let (namespace, rest) = rest.split_at(ns_len);
        let (key, envelope) = rest.split_at(key_len);
        Ok(Record { generation: u64::from_le_bytes(generation), namespace, key, envelope })
    }

    /// True when this record was written for `key` in `namespace`.
    pub fn is_for(&self, namespace: &str, key: &str) -> bool {
        self.namespace == namespace.as_bytes() && self.key == key.as_bytes()
    }
}

/// The namespace a record's envelope is signed for: `<namespace>#<generation>`. The signature
/// (with a signer) then covers the namespace, the generation the record was written under and the
/// key, so neither a record copied from another namespace nor one whose generation was edited
/// verifies. Unambiguous: the generation is the decimal digits after the last `#`.
pub(crate) fn signed_scope(namespace: &str, generation: u64) -> String {
    format!("{namespace}#{generation}")
}

/// The bytes a record adds around its envelope (for size checks).
pub(crate) fn record_overhead(namespace: &str, key: &str) -> usize {
    RECORD_HEADER + namespace.len() + key.len()
}

/// The expiry time to send to memcached for an entry whose deadline is `deadline`, sent at
/// `now` (memcached's own rule):
///
/// - no deadline: 0 (memcached's "never expires");
/// - up to 30 days away: the time left in whole seconds, rounded *up* (memcached has one-second
///   granularity, and 0 would mean "never"), at least 1 (a deadline already past is sent as 1 s;
///   reads never serve it);
/// - further: the deadline itself as a Unix timestamp in seconds, rounded up (memcached reads
///   any value above 30 days that way); past what a u32 holds (year 2106): 0, never.
///
/// The envelope keeps the deadline in milliseconds and reads check it, so the rounding only
/// decides when memcached frees the memory, never what a read returns.
pub(crate) fn exptime(deadline: Option<Deadline>, now: SystemTime) -> u32 {
    let Some(deadline) = deadline else { return 0 };
    let secs = ceil_secs(deadline.remaining_at(now)).max(1);
    if secs <= RELATIVE_TTL_LIMIT_SECS {
        return u32::try_from(secs).unwrap_or(u32::MAX);
    }
    u32::try_from(deadline.unix_millis().div_ceil(1000)).unwrap_or(0)
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn plain_keys_stay_readable_and_everything_else_is_hashed() {
        let ks = Keyspace::new("app");
        assert_eq!(ks.wire("user:1"), "cs:app:user:1");
        assert_eq!(ks.gen_key(), "cs:app#gen");
        let hostile = [
            "with space",
            "crlf\r\nflush_all\r\n",
            "tab\there",
            "\0nul",
            "del\x7f",
            "ünïcödé/名前/🦀",
            "#looks-hashed",
        ];
        assert!(is_wire_safe(&ks.wire("")));
        for key in hostile {
            let wire = ks.wire(key);
            assert!(wire.starts_with("cs:app:#"), "{key:?} -> {wire}");
            assert!(is_wire_safe(&wire), "{key:?} -> {wire:?}");
        }
        // The length limit counts the prefix: 250 bytes in total are fine, 251 are hashed.
        let fits = "k".repeat(MAX_KEY_BYTES - "cs:app:".len());
        assert_eq!(ks.wire(&fits).len(), MAX_KEY_BYTES);
        assert!(!ks.wire(&fits).contains('#'));
        let over = "k".repeat(MAX_KEY_BYTES - "cs:app:".len() + 1);
        assert!(ks.wire(&over).contains('#'));
        assert!(is_wire_safe(&ks.wire(&"k".repeat(100_000))));
    }

    #[test]
    fn wire_keys_are_distinct_across_keys_and_namespaces() {
        let a = Keyspace::new("a");
        let ab = Keyspace::new("a:b");
        // `a` + `b:c` and `a:b` + `c` must not meet: the second namespace is hashed.
        assert_ne!(a.wire("b:c"), ab.wire("c"));
        assert!(ab.gen_key().starts_with("cs:#"));
        let long = Keyspace::new(&"n".repeat(MAX_NAMESPACE_BYTES));
        assert!(is_wire_safe(long.gen_key()));
        assert!(is_wire_safe(&long.wire(&"x".repeat(300))));
        let mut seen = std::collections::HashSet::new();
        for ks in [&a, &ab, &long] {
            assert!(seen.insert(ks.gen_key().to_string()));
            for key in ["x", "x ", "#x", "名前", ""] {
                assert!(seen.insert(ks.wire(key)), "{key:?} collides");
            }
        }
    }

    #[test]
    fn records_round_trip_and_reject_malformed_bytes() {
        let bytes = Record::encode(42, "ns", "key", b"envelope").unwrap();
        let record = Record::parse(&bytes).unwrap();
        assert_eq!(record.generation, 42);
        assert!(record.is_for("ns", "key"));
        assert!(!record.is_for("ns", "other"));
        assert!(!record.is_for("other", "key"));
        assert_eq!(record.envelope, b"envelope");
        assert_eq!(bytes.len(), record_overhead("ns", "key") + 8);
        for len in 0..RECORD_HEADER + 5 {
            assert!(Record::parse(&bytes[..len]).is_err(), "truncated to {len} accepted");
        }
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(Record::parse(&bad).is_err());
        let mut huge = bytes.clone();
        huge[13..17].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Record::parse(&huge).is_err());
    }

    #[test]
    fn expiry_times_follow_memcached_rules() {
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        let s = Duration::from_secs;
        let exp = |ttl: Duration| exptime(Some(Deadline::after_from(now, ttl)), now);
        assert_eq!(exptime(None, now), 0);
        // Rounded up, never down to 0 ("never expires").
        assert_eq!(exp(Duration::ZERO), 1);
        assert_eq!(exp(Duration::from_millis(1)), 1);
        assert_eq!(exp(Duration::from_millis(999)), 1);
        assert_eq!(exp(s(1)), 1);
        assert_eq!(exp(Duration::from_millis(1001)), 2);
        // A deadline already past when the write is sent: the shortest expiry, never "never".
        let past = Deadline::after_from(now - s(10), s(1));
        assert_eq!(exptime(Some(past), now), 1);
        // 30 days exactly is still relative; one more second is an absolute timestamp: the
        // deadline itself, rounded up to the second.
        assert_eq!(exp(s(RELATIVE_TTL_LIMIT_SECS)), RELATIVE_TTL_LIMIT_SECS as u32);
        let over = exp(s(RELATIVE_TTL_LIMIT_SECS + 1));
        assert_eq!(over, 1_700_000_000 + RELATIVE_TTL_LIMIT_SECS as u32 + 2, "deadline rounded up");
        assert_eq!(exp(s(45 * 86_400)), 1_700_000_000 + 45 * 86_400 + 1);
        // The absolute form does not depend on when it is sent.
        let far = Deadline::after_from(now, s(45 * 86_400));
        assert_eq!(exptime(Some(far), now + s(3600)), exptime(Some(far), now));
        // Beyond 2106 a u32 cannot hold the timestamp: never expire rather than wrap around.
        assert_eq!(exp(s(200 * 365 * 86_400)), 0);
        assert_eq!(exp(Duration::MAX), 0);
    }
}
