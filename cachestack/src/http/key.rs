//! The cache key of a request: the layer's prefix, the URI's path and query, and the values of the
//! configured `Vary` headers.
//!
//! GET and HEAD share a key (a HEAD is answered from the GET's entry). The URI's path and query
//! hold no space, so a space ends them; each configured header follows as ` name=value` (its lines
//! joined with `,`, as HTTP allows), or ` name` when the request has none; the value's space, `%`,
//! control and non-ASCII bytes are percent-escaped, so two requests share a key only when they
//! have the same path, query and header values.

use std::fmt::Write;

use http::header::{HeaderMap, HeaderName};
use http::Uri;

/// The key of a request to `uri` with `headers`, `vary` being the configured headers.
pub(crate) fn request_key(prefix: &str, uri: &Uri, headers: &HeaderMap, vary: &[HeaderName]) -> String {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut key = String::with_capacity(prefix.len() + path.len() + 16 * vary.len());
    key.push_str(prefix);
    key.push_str(path);
    for name in vary {
        key.push(' ');
        key.push_str(name.as_str());
        let mut lines = headers.get_all(name).iter();
        if let Some(first) = lines.next() {
            key.push('=');
            escape_into(&mut key, first.as_bytes());
            for line in lines {
                key.push(',');
                escape_into(&mut key, line.as_bytes());
            }
        }
    }
    key
}

fn escape_into(key: &mut String, value: &[u8]) {
    for &byte in value {
        if byte.is_ascii_graphic() && byte != b'%' {
            key.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(key, "%{byte:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn key(uri: &'static str, pairs: &[(&'static str, &[u8])], vary: &[&'static str]) -> String {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_bytes(value).unwrap());
        }
        let vary: Vec<HeaderName> = vary.iter().map(|v| HeaderName::from_static(v)).collect();
        request_key("http:", &Uri::from_static(uri), &headers, &vary)
    }

    #[test]
    fn keys_hold_path_query_and_configured_headers() {
        assert_eq!(key("/a?b=1", &[], &[]), "http:/a?b=1");
        assert_eq!(key("http://example.com/a?b=1", &[], &[]), "http:/a?b=1", "the authority is not part of it");
        assert_eq!(key("/a", &[("accept-language", b"en")], &[]), "http:/a", "unconfigured headers do not count");
        assert_eq!(key("/a", &[("accept-language", b"en")], &["accept-language"]), "http:/a accept-language=en");
        assert_eq!(key("/a", &[], &["accept-language"]), "http:/a accept-language");
        assert_eq!(key("/a", &[("x", b"1"), ("x", b"2")], &["x"]), "http:/a x=1,2");
        assert_eq!(key("/a", &[("x", b"a b%\xff")], &["x"]), "http:/a x=a%20b%25%FF");
    }

    #[test]
    fn distinct_values_give_distinct_keys() {
        let vary = ["a", "b"];
        let keys = [
            key("/p", &[("a", b"1 b=2")], &vary),
            key("/p", &[("a", b"1"), ("b", b"2")], &vary),
            key("/p", &[("a", b"")], &vary),
            key("/p", &[], &vary),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
