//! Counters in byte stores: the store's native counter (Redis `INCRBY`, an SQL `UPDATE`,
//! memcached `incr`) adds to a plain decimal number, so byte stores keep counters as ASCII
//! decimals rather than in the envelope. The envelope's magic (`CS`) never parses as one, so the
//! two never mix up. Reads turn a counter into an `i64` value.
//!
//! Counters are not sealed: [signing](crate::Signer) does not cover them.

/// The counter `bytes` hold: an optional `-` and 1 to 19 ASCII digits that fit in an `i64`.
///
/// The longest `i64` is 20 characters (`-9223372036854775808`).
#[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
pub(crate) fn parse(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() || bytes.len() > 20 {
        return None;
    }
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// The error for a counter under `key` holding `n` that `delta` would take outside `i64`.
#[cfg_attr(
    not(any(feature = "memory", feature = "file", feature = "memcached", feature = "object-store")),
    allow(dead_code)
)]
pub(crate) fn overflow(key: &str, n: i64, delta: i64) -> crate::Error {
    crate::Error::invalid(format!("incrementing the counter `{key}` ({n}) by {delta} overflows i64"))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn only_plain_decimals_are_counters() {
        assert_eq!(parse(b"0"), Some(0));
        assert_eq!(parse(b"-42"), Some(-42));
        assert_eq!(parse(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [&b""[..], b"-", b"+1", b" 1", b"1 ", b"9223372036854775808", b"CS\x01", b"1e3", b"0x10"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
