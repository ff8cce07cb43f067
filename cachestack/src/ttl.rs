//! Time-to-live values: parsed from text such as `"30s"`, `"5m"`, `"2h30m"`, `"1d"`.

use std::time::Duration;

use crate::error::{Error, Result};

/// Parses a TTL written as text: a sequence of numbers with units (`ms`, `s`, `m`, `h`, `d`, `w`,
/// and the longer spellings `sec`, `min`, `hours`, `days`...), with or without spaces between
/// the parts. Zero is rejected: a cache entry that expires at once is a configuration mistake.
///
/// The same parser (humantime) checks `#[cached(ttl = "...")]` strings at compile time.
///
/// ```
/// use std::time::Duration;
/// use cachestack::parse_ttl;
///
/// assert_eq!(parse_ttl("5m").unwrap(), Duration::from_secs(300));
/// assert_eq!(parse_ttl("2h30m").unwrap(), Duration::from_secs(9000));
/// assert_eq!(parse_ttl("1d").unwrap(), Duration::from_secs(86_400));
/// assert!(parse_ttl("5 parsecs").is_err());
/// assert!(parse_ttl("0s").is_err());
/// ```
pub fn parse_ttl(text: &str) -> Result<Duration> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(Error::config("empty TTL: write a duration such as \"30s\", \"5m\" or \"2h30m\""));
    }
    let duration = humantime::parse_duration(trimmed).map_err(|e| {
        Error::config(format!(
            "invalid TTL {text:?}: {e} (write a duration such as \"30s\", \"5m\", \"2h30m\" or \"1d\")"
        ))
    })?;
    if duration.is_zero() {
        return Err(Error::config(format!("invalid TTL {text:?}: a TTL must be greater than zero")));
    }
    Ok(duration)
}

/// Formats a duration the way [`parse_ttl`] reads it (`"2h 30m"`).
///
/// ```
/// use std::time::Duration;
/// assert_eq!(cachestack::format_ttl(Duration::from_secs(9000)), "2h 30m");
/// ```
pub fn format_ttl(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_compound_and_spaced_forms() {
        assert_eq!(parse_ttl("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_ttl(" 2h 30m ").unwrap(), Duration::from_secs(9000));
        assert_eq!(parse_ttl("1d12h").unwrap(), Duration::from_secs(129_600));
        assert_eq!(parse_ttl("250ms").unwrap(), Duration::from_millis(250));
    }

    #[test]
    fn rejects_bad_text_with_a_message_naming_it() {
        for bad in ["", "abc", "5", "-5m", "5 lightyears", "0m"] {
            let err = parse_ttl(bad).unwrap_err().to_string();
            assert!(err.contains("TTL"), "{bad:?} gave {err}");
        }
    }

    #[test]
    fn format_round_trips() {
        let d = Duration::from_secs(93_784);
        assert_eq!(parse_ttl(&format_ttl(d)).unwrap(), d);
    }
}
