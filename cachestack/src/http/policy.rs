//! The HTTP caching rules: what a request's `Cache-Control` asks of the cache, and whether a
//! response may be stored and for how long (RFC 9111, for a shared cache).

use std::time::Duration;

use http::header::{HeaderMap, HeaderName, AUTHORIZATION, CACHE_CONTROL, PRAGMA, SET_COOKIE, VARY};
use http::{Response, StatusCode};

/// The largest `max-age` / `s-maxage` honoured: RFC 9111 §1.2.2 caps delta-seconds at 2^31.
const MAX_DELTA_SECONDS: u64 = 1 << 31;

/// What a request's `Cache-Control` (or, without one, `Pragma: no-cache`) asks of the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RequestRules {
    /// `no-store`: neither read nor write the cache; the handler answers.
    pub(crate) no_store: bool,
    /// `no-cache` or `max-age=0`: do not answer from the cache; the handler answers and its
    /// response replaces the entry.
    pub(crate) no_cache: bool,
}

impl RequestRules {
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let mut rules = RequestRules::default();
        let mut has_cache_control = false;
        for (name, value) in directives(headers, &CACHE_CONTROL) {
            has_cache_control = true;
            match name.as_str() {
                "no-store" => rules.no_store = true,
                "no-cache" => rules.no_cache = true,
                "max-age" if value.and_then(delta_seconds) == Some(0) => rules.no_cache = true,
                _ => {}
            }
        }
        // HTTP/1.0 clients: `Pragma: no-cache` counts only without a `Cache-Control`.
        if !has_cache_control && directives(headers, &PRAGMA).any(|(name, _)| name == "no-cache") {
            rules.no_cache = true;
        }
        rules
    }
}

/// Whether a response may be stored and how long it is fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Storable {
    /// Store it, fresh for this long (`None`: the layer's TTL).
    Yes(Option<Duration>),
    /// Do not store it (the reason, for the log).
    No(&'static str),
}

/// The rules a layer was configured with.
#[derive(Debug, Clone)]
pub(crate) struct ResponseRules {
    /// Statuses that may be stored.
    pub(crate) statuses: Vec<StatusCode>,
    /// Request headers that are part of the key (lowercase names).
    pub(crate) vary: Vec<HeaderName>,
}

impl ResponseRules {
    /// Whether `response`, the answer to a request that carried `Authorization` when
    /// `authorized`, may be stored, and for how long.
    ///
    /// Not stored: a status outside the configured list; `Cache-Control` `no-store`, `private`
    /// or `no-cache` (this cache does not revalidate); `max-age=0` / `s-maxage=0`; a `Set-Cookie`
    /// header; a `Vary` of `*` or of a header the key does not hold; the answer to a request with
    /// `Authorization` unless the response says `public`, `s-maxage` or `must-revalidate`
    /// (RFC 9111 §3.5). Fresh for `s-maxage` when given (a shared cache), else `max-age`, else
    /// the layer's TTL.
    pub(crate) fn storable<B>(&self, response: &Response<B>, authorized: bool) -> Storable {
        if !self.statuses.contains(&response.status()) {
            return Storable::No("status not cacheable");
        }
        let headers = response.headers();
        if headers.contains_key(SET_COOKIE) {
            return Storable::No("Set-Cookie");
        }
        for (name, _) in directives(headers, &VARY) {
            if name == "*" {
                return Storable::No("Vary: *");
            }
            if !self.vary.iter().any(|configured| configured.as_str() == name) {
                return Storable::No("Vary names a header the key does not hold");
            }
        }
        let (mut max_age, mut s_maxage) = (None, None);
        let mut shared_ok = false;
        for (name, value) in directives(headers, &CACHE_CONTROL) {
            match name.as_str() {
                "no-store" => return Storable::No("Cache-Control: no-store"),
                "private" => return Storable::No("Cache-Control: private"),
                "no-cache" => return Storable::No("Cache-Control: no-cache"),
                "public" | "must-revalidate" => shared_ok = true,
                "max-age" if max_age.is_none() => max_age = Some(value.and_then(delta_seconds)),
                "s-maxage" if s_maxage.is_none() => {
                    shared_ok = true;
                    s_maxage = Some(value.and_then(delta_seconds));
                }
                _ => {}
            }
        }
        if authorized && !shared_ok {
            return Storable::No("request had Authorization and the response is not public");
        }
        // s-maxage wins for a shared cache; an unreadable value is treated as already stale.
        match s_maxage.or(max_age) {
            None => Storable::Yes(None),
            Some(None) | Some(Some(0)) => Storable::No("max-age 0 or unreadable"),
            Some(Some(seconds)) => Storable::Yes(Some(Duration::from_secs(seconds))),
        }
    }
}

/// True when a request carries credentials (RFC 9111 §3.5).
pub(crate) fn is_authorized(headers: &HeaderMap) -> bool {
    headers.contains_key(AUTHORIZATION)
}

/// The directives of every `header` line: lowercase names with their values (quotes removed).
/// Lines that are not text are skipped.
pub(crate) fn directives<'a>(
    headers: &'a HeaderMap,
    header: &HeaderName,
) -> impl Iterator<Item = (String, Option<&'a str>)> + 'a {
    headers.get_all(header).iter().filter_map(|line| line.to_str().ok()).flat_map(|line| line.split(',')).filter_map(
        |directive| {
            let directive = directive.trim();
            if directive.is_empty() {
                return None;
            }
            Some(match directive.split_once('=') {
                Some((name, value)) => {
                    let value = value.trim();
                    let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
                    (name.trim().to_ascii_lowercase(), Some(value))
                }
                None => (directive.to_ascii_lowercase(), None),
            })
        },
    )
}

/// Delta-seconds (RFC 9111 §1.2.2): digits only; larger than 2^31 counts as 2^31.
fn delta_seconds(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse::<u64>().map_or(MAX_DELTA_SECONDS, |n| n.min(MAX_DELTA_SECONDS)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn response(pairs: &[(&'static str, &'static str)]) -> Response<()> {
        let mut response = Response::new(());
        *response.headers_mut() = headers(pairs);
        response
    }

    fn rules() -> ResponseRules {
        ResponseRules { statuses: vec![StatusCode::OK], vary: vec![HeaderName::from_static("accept-language")] }
    }

    #[test]
    fn request_directives() {
        assert_eq!(RequestRules::of(&headers(&[])), RequestRules::default());
        assert!(RequestRules::of(&headers(&[("cache-control", "No-Store")])).no_store);
        assert!(RequestRules::of(&headers(&[("cache-control", "max-stale, no-cache")])).no_cache);
        assert!(RequestRules::of(&headers(&[("cache-control", "max-age=0")])).no_cache);
        assert!(!RequestRules::of(&headers(&[("cache-control", "max-age=5")])).no_cache);
        assert!(RequestRules::of(&headers(&[("pragma", "no-cache")])).no_cache);
        let both = headers(&[("pragma", "no-cache"), ("cache-control", "max-age=5")]);
        assert!(!RequestRules::of(&both).no_cache, "Cache-Control wins over Pragma");
    }

    #[test]
    fn response_rules() {
        let r = rules();
        let s = Duration::from_secs;
        assert_eq!(r.storable(&response(&[]), false), Storable::Yes(None));
        assert_eq!(
            r.storable(&response(&[("cache-control", "public, max-age=60")]), false),
            Storable::Yes(Some(s(60)))
        );
        let both = response(&[("cache-control", "max-age=60"), ("cache-control", "s-maxage=\"5\"")]);
        assert_eq!(r.storable(&both, false), Storable::Yes(Some(s(5))), "s-maxage wins");
        assert_eq!(
            r.storable(&response(&[("cache-control", "max-age=99999999999999999999999")]), false),
            Storable::Yes(Some(s(MAX_DELTA_SECONDS)))
        );
        for bad in ["no-store", "private", "no-cache", "max-age=0", "max-age=-1", "max-age=soon", "s-maxage=0"] {
            let value = HeaderValue::from_str(bad).unwrap();
            let mut resp = response(&[]);
            resp.headers_mut().insert(CACHE_CONTROL, value);
            assert!(matches!(r.storable(&resp, false), Storable::No(_)), "{bad}");
        }
        assert!(matches!(r.storable(&response(&[("set-cookie", "a=b")]), false), Storable::No(_)));
        assert!(matches!(r.storable(&response(&[("vary", "*")]), false), Storable::No(_)));
        assert!(matches!(r.storable(&response(&[("vary", "Accept-Language, Cookie")]), false), Storable::No(_)));
        assert_eq!(r.storable(&response(&[("vary", "Accept-Language")]), false), Storable::Yes(None));
        let mut not_found = response(&[]);
        *not_found.status_mut() = StatusCode::NOT_FOUND;
        assert!(matches!(r.storable(&not_found, false), Storable::No(_)));
    }

    #[test]
    fn authorized_requests_need_a_shared_response() {
        let r = rules();
        assert!(matches!(r.storable(&response(&[]), true), Storable::No(_)));
        assert!(matches!(r.storable(&response(&[("cache-control", "max-age=9")]), true), Storable::No(_)));
        assert_eq!(r.storable(&response(&[("cache-control", "public")]), true), Storable::Yes(None));
        let shared = response(&[("cache-control", "s-maxage=9")]);
        assert_eq!(r.storable(&shared, true), Storable::Yes(Some(Duration::from_secs(9))));
    }
}
