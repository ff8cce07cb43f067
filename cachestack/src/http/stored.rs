//! [`StoredResponse`]: a response as the cache keeps it (status, the headers worth keeping, the
//! body bytes and when it was stored), serializable for every store.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{response, Response, StatusCode};
use serde::de::Error as _;
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::expiry::Deadline;

/// The `x-cache` header the layer puts on its responses.
pub(crate) const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// Headers never stored: hop-by-hop ones (RFC 9110 §7.6.1), those the layer sets itself
/// (`Age`, `x-cache`, `Content-Length` from the stored body) and cookies.
const DROPPED: [HeaderName; 11] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::AGE,
    header::SET_COOKIE,
    X_CACHE,
];

/// A response as stored: cloning it clones the header map and counts a reference to the body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredResponse {
    status: u16,
    headers: StoredHeaders,
    body: Bytes,
    /// When it was stored (Unix milliseconds), for `Age`.
    stored_at: u64,
}

impl StoredResponse {
    /// The response of `parts` and `body`, stored at `now`.
    pub(crate) fn new(parts: &response::Parts, body: Bytes, now: SystemTime) -> Self {
        let mut headers = parts.headers.clone();
        for name in &DROPPED {
            headers.remove(name);
        }
        let connection_named: Vec<HeaderName> = parts
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in &connection_named {
            headers.remove(name);
        }
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        StoredResponse {
            status: parts.status.as_u16(),
            headers: StoredHeaders(headers),
            body,
            stored_at: Deadline::at(now).unix_millis(),
        }
    }

    /// The response to send: the stored one, with `Age` (whole seconds since it was stored) as of
    /// `age_at` when given.
    pub(crate) fn into_response(self, age_at: Option<SystemTime>) -> Response<Bytes> {
        let mut response = Response::new(self.body);
        // Read from a stored status that was valid when written; a corrupt one is a 500's worth.
        *response.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        *response.headers_mut() = self.headers.0;
        if let Some(now) = age_at {
            let age = Duration::from_millis(Deadline::at(now).unix_millis().saturating_sub(self.stored_at));
            response.headers_mut().insert(header::AGE, HeaderValue::from(age.as_secs()));
        }
        response
    }
}

/// A header map, serialized as a sequence of `(name, value bytes)`.
#[derive(Debug, Clone)]
struct StoredHeaders(HeaderMap);

/// Bytes serialized as bytes (not as a sequence of numbers).
struct Raw<'a>(&'a [u8]);

impl Serialize for Raw<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

impl Serialize for StoredHeaders {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            seq.serialize_element(&(name.as_str(), Raw(value.as_bytes())))?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for StoredHeaders {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pairs = Vec::<(String, Bytes)>::deserialize(deserializer)?;
        let mut map = HeaderMap::with_capacity(pairs.len());
        for (name, value) in pairs {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(D::Error::custom)?;
            let value = HeaderValue::from_maybe_shared(value).map_err(D::Error::custom)?;
            map.append(name, value);
        }
        Ok(StoredHeaders(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Codec, Value};

    #[test]
    fn keeps_end_to_end_headers_and_survives_bytes() {
        let (mut parts, ()) = Response::new(()).into_parts();
        parts.status = StatusCode::NON_AUTHORITATIVE_INFORMATION;
        for (name, value) in [
            ("content-type", "text/plain"),
            ("x-two", "1"),
            ("x-two", "2"),
            ("connection", "x-hop"),
            ("x-hop", "gone"),
            ("transfer-encoding", "chunked"),
            ("age", "4"),
            ("content-length", "999"),
        ] {
            parts.headers.append(name, HeaderValue::from_static(value));
        }
        parts.headers.append("x-bin", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let stored = StoredResponse::new(&parts, Bytes::from_static(b"hello"), start);

        let value = Value::new(stored);
        let encoded = value.encoded(Codec::default()).unwrap();
        let back: StoredResponse = Value::from_encoded(encoded).get().unwrap();
        let response = back.clone().into_response(Some(start + Duration::from_millis(7_900)));
        assert_eq!(response.status(), StatusCode::NON_AUTHORITATIVE_INFORMATION);
        assert_eq!(response.body().as_ref(), b"hello");
        let h = response.headers();
        assert_eq!(h["content-type"], "text/plain");
        assert_eq!(h.get_all("x-two").iter().collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(h["x-bin"].as_bytes(), b"caf\xe9");
        assert_eq!(h["content-length"], "5");
        assert_eq!(h["age"], "7");
        for gone in ["connection", "x-hop", "transfer-encoding"] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        assert!(!back.into_response(None).headers().contains_key("age"));
    }
}
