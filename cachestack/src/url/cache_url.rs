//! [`CacheUrl`]: a cache URL split into scheme, the text between `://` and `?`, and its query
//! options, which the shared and the store's own option parsers take out one by one.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use super::redact::{encode_userinfo, split_userinfo};
use super::redact_url;
use crate::error::{Error, Result};
use crate::value::envelope::{Compression, Signer, ValueFormat};

/// The parts of a cache URL: scheme, the text between `://` and `?`, and the query options.
/// (Parts of it go unused when every backend feature is off.)
#[derive(Clone)]
#[cfg_attr(not(any(feature = "memory", feature = "file")), allow(dead_code))]
pub(crate) struct CacheUrl {
    pub scheme: String,
    pub rest: String,
    options: BTreeMap<String, String>,
}

#[cfg_attr(not(feature = "file"), allow(dead_code))]
impl CacheUrl {
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let Some((scheme, after)) = text.split_once("://") else {
            return Err(Error::config(format!(
                "`{}` is not a cache URL: expected scheme://... (mem://, file://, redis://, postgres://, memcached://, null://)",
                redact_url(text)
            )));
        };
        if scheme.is_empty() || !scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) {
            return Err(Error::config(format!("invalid URL scheme {scheme:?} in `{}`", redact_url(text))));
        }
        // The query starts after the credentials: a password may hold `?` (or `/`, `#`, `@`).
        let (userinfo, hosts) = split_userinfo(after);
        let (hosts, query) = hosts.split_once('?').unwrap_or((hosts, ""));
        let rest = match userinfo {
            // Written back percent-encoded, so that the stores' URL parsers see one authority.
            Some(userinfo) => format!("{}@{hosts}", encode_userinfo(userinfo)),
            None => hosts.to_string(),
        };
        let mut options = BTreeMap::new();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            if options.insert(k.to_string(), v.to_string()).is_some() {
                return Err(Error::config(format!("option `{k}` is given twice in `{}`", redact_url(text))));
            }
        }
        Ok(CacheUrl { scheme: scheme.to_ascii_lowercase(), rest, options })
    }

    /// [`CacheUrl::rest`] as errors may show it: credentials hidden.
    pub fn rest_shown(&self) -> String {
        let full = redact_url(&format!("{}://{}", self.scheme, self.rest));
        full.split_once("://").map_or(full.clone(), |(_, rest)| rest.to_string())
    }

    /// Removes and returns option `name`.
    pub fn take(&mut self, name: &str) -> Option<String> {
        self.options.remove(name)
    }

    /// Removes option `name` and parses it with `parse`, naming the option in the error.
    pub fn take_with<T>(&mut self, name: &str, parse: impl FnOnce(&str) -> Result<T>) -> Result<Option<T>> {
        match self.take(name) {
            None => Ok(None),
            Some(v) => parse(&v).map(Some).map_err(|e| Error::config(format!("option `{name}={v}`: {e}"))),
        }
    }

    /// Removes option `name` and parses it with `FromStr`.
    pub fn take_parsed<T: FromStr>(&mut self, name: &str) -> Result<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        self.take_with(name, |v| v.parse::<T>().map_err(|e| Error::config(e.to_string())))
    }

    /// `ttl` as a duration.
    pub fn take_ttl(&mut self, name: &str) -> Result<Option<Duration>> {
        self.take_with(name, crate::ttl::parse_ttl)
    }

    /// `silent=true|false`.
    pub fn take_bool(&mut self, name: &str) -> Result<Option<bool>> {
        self.take_with(name, |v| match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(Error::config("expected true or false")),
        })
    }

    /// The byte-store options: codec, compression, signing, size limit.
    pub fn take_format(&mut self) -> Result<ValueFormat> {
        let mut format = ValueFormat::default();
        if let Some(codec) = self.take_parsed("codec")? {
            format.codec = codec;
        }
        if let Some(compression) = self.take_parsed::<Compression>("compression")? {
            format.compression = compression;
        }
        if let Some(limit) = self.take_parsed::<usize>("max_value_bytes")? {
            format.max_value_bytes = limit;
        }
        if let Some(threshold) = self.take_parsed::<usize>("compress_min_bytes")? {
            format.compress_min_bytes = threshold;
        }
        let secret = match (self.take("secret"), self.take("secret_env")) {
            (Some(_), Some(_)) => return Err(Error::config("give either `secret` or `secret_env`, not both")),
            (Some(secret), None) => Some(secret),
            (None, Some(var)) => Some(std::env::var(&var).map_err(|_| {
                Error::config(format!("option `secret_env={var}`: environment variable `{var}` is not set"))
            })?),
            (None, None) => None,
        };
        if let Some(secret) = secret {
            format.signer = Some(Signer::new(secret)?);
        }
        Ok(format)
    }

    /// Fails if any option was not consumed, listing the valid ones.
    pub fn finish(self, valid: &[&str]) -> Result<()> {
        if let Some(unknown) = self.options.keys().next() {
            return Err(Error::config(format!(
                "unknown option `{unknown}` for {}:// URLs; valid options: {}",
                self.scheme,
                valid.join(", ")
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::url::HOSTILE_PASSWORD;

    #[test]
    fn the_query_starts_after_the_password() {
        let url = CacheUrl::parse(&format!("redis://app:{HOSTILE_PASSWORD}@h:1/0?ttl=5m")).unwrap();
        assert_eq!(url.rest, "app:PW1%2FPW2%3FPW3%23PW4%40PW5:PW6%2FPW7@h:1/0");
        assert_eq!(url.options.keys().collect::<Vec<_>>(), ["ttl"]);
        let url = CacheUrl::parse("redis://h/0?name=ops@team").unwrap();
        assert_eq!((url.rest.as_str(), url.options.get("name").map(String::as_str)), ("h/0", Some("ops@team")));
        assert_eq!(split_userinfo("u@h/0"), (Some("u"), "h/0"));
        assert_eq!(split_userinfo("/tmp/x@y"), (None, "/tmp/x@y"));
    }
}
