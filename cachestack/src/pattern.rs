//! Key patterns for [`Backend::delete_matching`](crate::Backend::delete_matching) and
//! [`Backend::keys_matching`](crate::Backend::keys_matching).
//!
//! A pattern is a glob over the cache's own keys (never the namespace prefix a store adds): `*`
//! matches any run of characters (none included), `?` exactly one character, and `\` makes the
//! next character literal (`\*`, `\?`, `\\`). Every other character, `[` and `%` included, is
//! itself. A pattern always matches whole keys: `user:*` matches `user:7` but not `olduser:7`.

use std::fmt;

use crate::error::{Error, Result};

/// One piece of a parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// Characters that must appear as they are.
    Literal(String),
    /// `*`: any run of characters.
    Any,
    /// `?`: exactly one character.
    One,
}

/// A parsed key pattern: `*` any run, `?` one character, `\` escapes the next character.
///
/// ```
/// use cachestack::KeyPattern;
///
/// let p = KeyPattern::new("user:7:*").unwrap();
/// assert!(p.matches("user:7:name"));
/// assert!(p.matches("user:7:"));
/// assert!(!p.matches("user:70:name"));
/// assert!(!p.matches("x-user:7:name"), "patterns match whole keys");
///
/// let q = KeyPattern::new("a?c").unwrap();
/// assert!(q.matches("abc") && q.matches("a✓c") && !q.matches("ac"));
///
/// let literal = KeyPattern::new(r"100\%\*").unwrap();
/// assert!(literal.matches("100%*") && !literal.matches("100%x"));
/// assert!(KeyPattern::new("dangling\\").is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPattern {
    text: String,
    tokens: Vec<Token>,
}

impl fmt::Debug for KeyPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPattern({:?})", self.text)
    }
}

impl fmt::Display for KeyPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for KeyPattern {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        KeyPattern::new(s)
    }
}

impl KeyPattern {
    /// Parses `pattern`; a trailing lone `\` is an error.
    pub fn new(pattern: &str) -> Result<Self> {
        let mut tokens = Vec::new();
        let mut literal = String::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            let special = match c {
                '*' => Some(Token::Any),
                '?' => Some(Token::One),
                '\\' => {
                    let Some(next) = chars.next() else {
                        return Err(Error::config(format!(
                            "key pattern {pattern:?} ends with a lone `\\` (write `\\\\` for a backslash)"
                        )));
                    };
                    literal.push(next);
                    None
                }
                other => {
                    literal.push(other);
                    None
                }
            };
            if let Some(token) = special {
                if !literal.is_empty() {
                    tokens.push(Token::Literal(std::mem::take(&mut literal)));
                }
                // `**` is `*`.
                if !(token == Token::Any && tokens.last() == Some(&Token::Any)) {
                    tokens.push(token);
                }
            }
        }
        if !literal.is_empty() {
            tokens.push(Token::Literal(literal));
        }
        Ok(KeyPattern { text: pattern.to_owned(), tokens })
    }

    /// Appends `text` to `pattern` escaped, so that it matches itself literally: `*`, `?` and
    /// `\` get a `\` in front. `#[invalidate(pattern = ...)]` renders placeholder values with it.
    ///
    /// ```
    /// use cachestack::KeyPattern;
    ///
    /// let mut text = String::from("user:");
    /// KeyPattern::escape_into(&mut text, "a*b");
    /// text.push_str(":*");
    /// let p = KeyPattern::new(&text).unwrap();
    /// assert!(p.matches("user:a*b:name"));
    /// assert!(!p.matches("user:aXb:name"), "the argument's `*` is literal");
    /// ```
    pub fn escape_into(pattern: &mut String, text: &str) {
        escape_into(pattern, text, &['*', '?', '\\']);
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The literal text every matching key starts with (empty when the pattern starts with a
    /// wildcard).
    ///
    /// ```
    /// assert_eq!(cachestack::KeyPattern::new("user:7:*").unwrap().literal_prefix(), "user:7:");
    /// ```
    pub fn literal_prefix(&self) -> &str {
        match self.tokens.first() {
            Some(Token::Literal(text)) => text,
            _ => "",
        }
    }

    /// True if the pattern has no wildcard: it matches exactly one key.
    pub(crate) fn is_literal(&self) -> bool {
        self.tokens.iter().all(|t| matches!(t, Token::Literal(_)))
    }

    /// True if `key` matches the whole pattern.
    pub fn matches(&self, key: &str) -> bool {
        // Iterative glob matching with one backtrack point (the last `*`): linear in practice,
        // O(pattern x key) at worst, never exponential.
        let key: Vec<char> = key.chars().collect();
        let mut pieces: Vec<Piece> = Vec::new();
        for token in &self.tokens {
            match token {
                Token::Literal(text) => pieces.extend(text.chars().map(Piece::Char)),
                Token::One => pieces.push(Piece::One),
                Token::Any => pieces.push(Piece::Any),
            }
        }
        let (mut p, mut k) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while k < key.len() {
            match pieces.get(p) {
                Some(Piece::Char(c)) if *c == key[k] => {
                    p += 1;
                    k += 1;
                }
                Some(Piece::One) => {
                    p += 1;
                    k += 1;
                }
                Some(Piece::Any) => {
                    star = Some((p, k));
                    p += 1;
                }
                _ => match star {
                    Some((sp, sk)) => {
                        p = sp + 1;
                        k = sk + 1;
                        star = Some((sp, sk + 1));
                    }
                    None => return false,
                },
            }
        }
        pieces[p..].iter().all(|piece| matches!(piece, Piece::Any))
    }

    /// The pattern in Redis `MATCH` syntax after `prefix` (taken literally): Redis's own glob
    /// characters (`*?[]\`) in the prefix and in literal parts are escaped.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn to_redis_glob(&self, prefix: &str) -> String {
        let mut out = String::with_capacity(prefix.len() + self.text.len() + 8);
        escape_into(&mut out, prefix, &['*', '?', '[', ']', '\\']);
        for token in &self.tokens {
            match token {
                Token::Literal(text) => escape_into(&mut out, text, &['*', '?', '[', ']', '\\']),
                Token::Any => out.push('*'),
                Token::One => out.push('?'),
            }
        }
        out
    }

    /// The pattern as an SQL `LIKE` pattern with `\` as the escape character: `%`, `_` and `\`
    /// in literal parts are escaped.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn to_like(&self) -> String {
        let mut out = String::with_capacity(self.text.len() + 8);
        for token in &self.tokens {
            match token {
                Token::Literal(text) => escape_into(&mut out, text, &['%', '_', '\\']),
                Token::Any => out.push('%'),
                Token::One => out.push('_'),
            }
        }
        out
    }
}

enum Piece {
    Char(char),
    One,
    Any,
}

fn escape_into(out: &mut String, text: &str, special: &[char]) {
    for c in text.chars() {
        if special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> KeyPattern {
        KeyPattern::new(s).unwrap()
    }

    #[test]
    fn globs_match_whole_keys() {
        assert!(p("*").matches("") && p("*").matches("anything"));
        assert!(p("a*b*c").matches("abc") && p("a*b*c").matches("aXbYbZc"));
        assert!(!p("a*b*c").matches("aXbYbZ"));
        assert!(p("*:7").matches("user:7") && !p("*:7").matches("user:70"));
        assert!(p("??").matches("日本") && !p("??").matches("日"));
        assert!(p("a**b").matches("ab"));
        assert!(!p("user:*").matches("xuser:1"));
        assert!(p("[x]").matches("[x]") && !p("[x]").matches("x"));
        assert!(p(r"a\*").matches("a*") && !p(r"a\*").matches("ab"));
        assert!(p(r"a\\b").matches(r"a\b"));
    }

    #[test]
    fn translations_escape_literals() {
        assert_eq!(p("user:*").to_redis_glob("cs:n[1]*:"), r"cs:n\[1\]\*:user:*");
        assert_eq!(p(r"a?b\*c[").to_redis_glob(""), r"a?b\*c\[");
        assert_eq!(p("100%_x*").to_like(), r"100\%\_x%");
        assert_eq!(p(r"a\\?").to_like(), r"a\\_");
        assert_eq!(p("user:7:*").literal_prefix(), "user:7:");
        assert_eq!(p("*x").literal_prefix(), "");
    }
}
