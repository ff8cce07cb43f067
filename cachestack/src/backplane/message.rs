//! The backplane's message: who sent it, which cache, what changed; and its text encoding.
//!
//! A message travels as one line of printable ASCII (PostgreSQL's NOTIFY takes text only):
//! `cs1 <origin, 16 hex digits> <kind> <cache> [<item> ...]`, the kind one letter (`k` keys,
//! `c` clear, `p` pattern, `t` tags), every field percent-escaped so that it holds no space,
//! control character or non-ASCII byte. A message too large for the transport is split (keys,
//! tags) or becomes a clear of its cache.

use std::fmt::Write as _;

use crate::error::{Error, Result};

/// The version tag every encoded message starts with.
const VERSION: &str = "cs1";

/// What changed in a cache: what the other processes evict from their in-process layers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// These keys were written or deleted.
    Keys(Vec<String>),
    /// The whole cache was cleared.
    Clear,
    /// The keys matching this [`KeyPattern`](crate::KeyPattern) were deleted.
    Pattern(String),
    /// These tags were invalidated.
    Tags(Vec<String>),
}

/// One backplane message: the origin (the sending [`Backplane`](super::Backplane), one per
/// process in practice), the cache's name and what changed.
///
/// ```
/// use cachestack::backplane::{Change, Message};
///
/// let message = Message::new(7, "users", Change::Keys(vec!["user:1".into(), "user 2".into()]));
/// let encoded = message.encode_within(1_000);
/// assert_eq!(encoded, vec!["cs1 0000000000000007 k users user:1 user%202".to_string()]);
/// assert_eq!(Message::decode(&encoded[0]).unwrap(), message);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The sender's origin id: a process ignores the messages of its own.
    pub origin: u64,
    /// The name of the cache that changed (its registry name, or the stack's own name).
    pub cache: String,
    /// What changed.
    pub change: Change,
}

impl Message {
    /// A message from `origin` about `cache`.
    pub fn new(origin: u64, cache: impl Into<String>, change: Change) -> Self {
        Message { origin, cache: cache.into(), change }
    }

    /// The payloads that carry this message, none longer than `max` bytes: keys and tags are
    /// split over several payloads as needed; a message that cannot fit (a pattern, a key or a
    /// tag longer than `max`) becomes a [`Change::Clear`] of its cache, which always fits a
    /// sensible `max`.
    ///
    /// ```
    /// use cachestack::backplane::{Change, Message};
    /// let keys: Vec<String> = (0..100).map(|i| format!("key:{i}")).collect();
    /// let parts = Message::new(1, "c", Change::Keys(keys.clone())).encode_within(120);
    /// assert!(parts.len() > 1 && parts.iter().all(|p| p.len() <= 120));
    /// let back: Vec<String> = parts
    ///     .iter()
    ///     .flat_map(|p| match Message::decode(p).unwrap().change { Change::Keys(k) => k, _ => vec![] })
    ///     .collect();
    /// assert_eq!(back, keys);
    /// ```
    pub fn encode_within(&self, max: usize) -> Vec<String> {
        let (kind, items): (&str, &[String]) = match &self.change {
            Change::Keys(keys) => ("k", keys),
            Change::Clear => ("c", &[]),
            Change::Pattern(pattern) => ("p", std::slice::from_ref(pattern)),
            Change::Tags(tags) => ("t", tags),
        };
        let head = format!("{VERSION} {:016x} {kind} {}", self.origin, escape(&self.cache));
        let clear = || vec![format!("{VERSION} {:016x} c {}", self.origin, escape(&self.cache))];
        if items.is_empty() {
            return if head.len() <= max { vec![head] } else { clear() };
        }
        let mut out = Vec::new();
        let mut current = head.clone();
        let mut in_current = 0usize;
        for item in items {
            let item = escape(item);
            if head.len() + 1 + item.len() > max {
                // One item alone does not fit: the cache is cleared instead.
                return clear();
            }
            if current.len() + 1 + item.len() > max {
                out.push(std::mem::replace(&mut current, head.clone()));
                in_current = 0;
            }
            current.push(' ');
            current.push_str(&item);
            in_current += 1;
        }
        if in_current > 0 {
            out.push(current);
        }
        out
    }

    /// Parses one payload; fails on anything that is not a message of this version.
    ///
    /// ```
    /// use cachestack::backplane::{Change, Message};
    /// let m = Message::decode("cs1 00000000000000ff p users user:%2A").unwrap();
    /// assert_eq!((m.origin, m.cache.as_str(), m.change), (255, "users", Change::Pattern("user:*".into())));
    /// assert!(Message::decode("cs9 00 k x").is_err());
    /// assert!(Message::decode("cs1 zz k x").is_err());
    /// ```
    pub fn decode(payload: &str) -> Result<Self> {
        let bad = |why: &str| Error::Generic {
            backend: "backplane".into(),
            source: format!("not a backplane message ({why}): {:?}", truncated(payload)).into(),
        };
        let mut parts = payload.split(' ');
        if parts.next() != Some(VERSION) {
            return Err(bad("unknown version"));
        }
        let origin = parts.next().and_then(|o| u64::from_str_radix(o, 16).ok()).ok_or_else(|| bad("origin"))?;
        let kind = parts.next().ok_or_else(|| bad("kind"))?;
        let cache = unescape(parts.next().ok_or_else(|| bad("cache"))?).ok_or_else(|| bad("cache"))?;
        let items = parts.map(unescape).collect::<Option<Vec<String>>>().ok_or_else(|| bad("escape"))?;
        let change = match (kind, items.len()) {
            ("k", _) => Change::Keys(items),
            ("t", _) => Change::Tags(items),
            ("c", 0) => Change::Clear,
            ("p", 1) => Change::Pattern(items.into_iter().next().unwrap_or_default()),
            _ => return Err(bad("kind")),
        };
        Ok(Message { origin, cache, change })
    }
}

/// The first bytes of a payload, for an error message.
fn truncated(payload: &str) -> &str {
    let mut end = payload.len().min(80);
    while !payload.is_char_boundary(end) {
        end -= 1;
    }
    &payload[..end]
}

/// Percent-escapes every byte that is not printable ASCII, and `%` and space themselves.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_graphic() && byte != b'%' {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Undoes [`escape`]; `None` for a malformed escape or text that is not UTF-8.
fn unescape(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(byte);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_round_trips() {
        let odd = "ünï cödé %20 \t\n|*?".to_string();
        for change in [
            Change::Keys(vec!["a".into(), odd.clone(), String::new()]),
            Change::Clear,
            Change::Pattern("user:*".into()),
            Change::Tags(vec!["user:7".into(), odd.clone()]),
        ] {
            let message = Message::new(u64::MAX, odd.clone(), change);
            let parts = message.encode_within(8_000);
            assert_eq!(parts.len(), 1);
            assert!(parts[0].bytes().all(|b| b.is_ascii_graphic() || b == b' '), "{}", parts[0]);
            assert_eq!(Message::decode(&parts[0]).unwrap(), message);
        }
    }

    #[test]
    fn what_cannot_fit_becomes_a_clear() {
        let long = "x".repeat(200);
        for change in [Change::Keys(vec![long.clone()]), Change::Pattern(long.clone()), Change::Tags(vec![long])] {
            let parts = Message::new(1, "c", change).encode_within(100);
            assert_eq!(parts.len(), 1);
            assert_eq!(Message::decode(&parts[0]).unwrap().change, Change::Clear);
        }
    }

    #[test]
    fn tags_split_like_keys() {
        let tags: Vec<String> = (0..50).map(|i| format!("tag:{i}")).collect();
        let parts = Message::new(3, "c", Change::Tags(tags.clone())).encode_within(64);
        assert!(parts.len() > 1);
        let back: Vec<String> = parts
            .iter()
            .flat_map(|p| match Message::decode(p).unwrap().change {
                Change::Tags(t) => t,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(back, tags);
    }

    #[test]
    fn garbage_is_rejected() {
        for bad in ["", "cs1", "cs1 1", "cs1 1 k", "cs1 1 q c", "cs1 1 k c %zz", "cs1 1 c c extra", "cs1 1 k c %FF"] {
            assert!(Message::decode(bad).is_err(), "{bad:?}");
        }
    }
}
