//! Building caches from URLs (documented on [`backend_from_url`]).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::store::Backend;
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
        let (rest, query) = after.split_once('?').unwrap_or((after, ""));
        let mut options = BTreeMap::new();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            if options.insert(k.to_string(), v.to_string()).is_some() {
                return Err(Error::config(format!("option `{k}` is given twice in `{}`", redact_url(text))));
            }
        }
        Ok(CacheUrl { scheme: scheme.to_ascii_lowercase(), rest: rest.to_string(), options })
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

/// Options every byte store accepts (the network backends list them in their errors).
#[cfg_attr(not(any(feature = "redis", feature = "postgres", feature = "memcached")), allow(dead_code))]
pub(crate) const FORMAT_OPTIONS: &[&str] = &["codec", "compression", "secret", "secret_env", "max_value_bytes"];

/// Hides secrets in a URL for logs and `Debug`: the password of `user:password@`, and the values
/// of `secret`, `password` and `token` options.
///
/// ```
/// assert_eq!(
///     cachestack::redact_url("redis://app:hunter2@127.0.0.1/0?secret=abc&ttl=5m"),
///     "redis://app:***@127.0.0.1/0?secret=***&ttl=5m"
/// );
/// ```
pub fn redact_url(text: &str) -> String {
    let (base, query) = match text.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (text, None),
    };
    let mut out = String::with_capacity(text.len());
    match base.split_once("://") {
        Some((scheme, rest)) => {
            out.push_str(scheme);
            out.push_str("://");
            // Multi-host URLs (`h1,h2`) may carry credentials on the first host only.
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    match userinfo.split_once(':') {
                        Some((user, _)) => {
                            out.push_str(user);
                            out.push_str(":***");
                        }
                        None => out.push_str(userinfo),
                    }
                    out.push('@');
                    out.push_str(host);
                }
                None => out.push_str(authority),
            }
            out.push_str(path);
        }
        None => out.push_str(base),
    }
    if let Some(query) = query {
        out.push('?');
        let parts: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if ["secret", "password", "token"].contains(&k.to_ascii_lowercase().as_str()) => {
                    format!("{k}=***")
                }
                _ => pair.to_string(),
            })
            .collect();
        out.push_str(&parts.join("&"));
    }
    out
}

/// Builds the backend a URL describes; `A | B | C` builds a tiered stack.
///
/// | URL | backend | feature |
/// |---|---|---|
/// | `mem://?max_entries=10000&ttl=5m` (or `memory://`) | [`crate::MemoryBackend`] | `memory` |
/// | `file:///var/cache/app?ttl=1h&namespace=app`, `file://./relative/dir` | `FileBackend` | `file` |
/// | `null://` | [`crate::NullBackend`] | always |
/// | `redis://`, `rediss://`, `redis+cluster://` | Redis | `redis` |
/// | `postgres://`, `postgresql://` | PostgreSQL | `postgres` |
/// | `memcached://` | Memcached | `memcached` |
/// | `A \| B \| C` | a tiered stack, fastest first | as for each layer |
///
/// Options shared by byte stores: `ttl`, `namespace`, `codec` (postcard, json, msgpack, bincode),
/// `compression` (none, zstd, lz4), `secret_env` (name of an environment variable holding the
/// signing secret; `secret=...` directly is accepted too and never shown), `max_value_bytes`,
/// `silent` (true/false). An unknown option is an error that lists the valid ones.
///
/// ```
/// let backend = cachestack::backend_from_url("mem://?max_entries=1000&ttl=5m").unwrap();
/// assert_eq!(backend.name(), "memory");
/// let err = cachestack::backend_from_url("mem://?max_entries=many").unwrap_err();
/// assert!(err.to_string().contains("max_entries=many"));
/// ```
pub fn backend_from_url(text: &str) -> Result<Arc<dyn Backend>> {
    if text.contains('|') {
        return tiered_from_urls(text);
    }
    let mut url = CacheUrl::parse(text)?;
    match url.scheme.as_str() {
        "mem" | "memory" => memory_from_url(&mut url).and_then(|b| url.finish(MEMORY_OPTIONS).map(|()| b)),
        "file" => file_from_url(url),
        "null" => {
            url.finish(&[])?;
            Ok(Arc::new(crate::store::null::NullBackend::default()))
        }
        "redis" | "rediss" | "redis+cluster" | "rediss+cluster" => redis_from_url(url),
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => crate::store::postgres::backend_from_url(url),
        #[cfg(not(feature = "postgres"))]
        "postgres" | "postgresql" => disabled(&url.scheme, "postgres"),
        #[cfg(feature = "memcached")]
        "memcached" | "memcache" => crate::store::memcached::from_url(url),
        #[cfg(not(feature = "memcached"))]
        "memcached" | "memcache" => disabled(&url.scheme, "memcached"),
        other => Err(Error::config(format!(
            "unknown cache URL scheme `{other}://`; known: mem://, file://, null://, redis://, rediss://, redis+cluster://, postgres://, memcached://"
        ))),
    }
}

#[cfg(feature = "redis")]
fn redis_from_url(mut url: CacheUrl) -> Result<Arc<dyn Backend>> {
    let config = crate::store::redis::config_from_url(&mut url)?;
    url.finish(&crate::store::redis::valid_url_options())?;
    Ok(Arc::new(crate::store::redis::RedisBackend::new(config)?))
}

#[cfg(not(feature = "redis"))]
fn redis_from_url(url: CacheUrl) -> Result<Arc<dyn Backend>> {
    disabled(&url.scheme, "redis")
}

// Unused only when every backend feature is on.
#[cfg_attr(
    all(feature = "memory", feature = "file", feature = "redis", feature = "postgres", feature = "memcached"),
    allow(dead_code)
)]
fn disabled(scheme: &str, feature: &'static str) -> Result<Arc<dyn Backend>> {
    Err(Error::FeatureDisabled { scheme: scheme.to_string(), feature })
}

fn tiered_from_urls(text: &str) -> Result<Arc<dyn Backend>> {
    let layers = text
        .split('|')
        .map(|part| {
            let part = part.trim();
            if part.is_empty() {
                return Err(Error::config("empty layer in a tiered cache URL (`a | | b`)"));
            }
            backend_from_url(part)
        })
        .collect::<Result<Vec<_>>>()?;
    build_tiered(layers)
}

fn build_tiered(layers: Vec<Arc<dyn Backend>>) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(crate::stack::TieredCache::from_layers(layers)?))
}

const MEMORY_OPTIONS: &[&str] = &["max_entries", "max_bytes", "ttl"];

#[cfg(feature = "memory")]
fn memory_from_url(url: &mut CacheUrl) -> Result<Arc<dyn Backend>> {
    if !url.rest.is_empty() && url.rest != "/" {
        return Err(Error::config(format!(
            "mem:// URLs take no host or path (got `{}`); write mem://?max_entries=10000",
            url.rest
        )));
    }
    let mut config = crate::store::memory::MemoryConfig::default();
    if let Some(n) = url.take_parsed::<u64>("max_entries")? {
        config.max_entries = n;
    }
    config.max_bytes = url.take_parsed::<u64>("max_bytes")?;
    config.default_ttl = url.take_ttl("ttl")?;
    Ok(Arc::new(crate::store::memory::MemoryBackend::new(config)?))
}

#[cfg(not(feature = "memory"))]
fn memory_from_url(url: &mut CacheUrl) -> Result<Arc<dyn Backend>> {
    disabled(&url.scheme.clone(), "memory")
}

#[cfg(not(feature = "file"))]
fn file_from_url(url: CacheUrl) -> Result<Arc<dyn Backend>> {
    disabled(&url.scheme, "file")
}

#[cfg(feature = "file")]
const FILE_OPTIONS: &[&str] = &[
    "ttl",
    "namespace",
    "silent",
    "max_entries",
    "max_bytes",
    "auto_purge",
    "codec",
    "compression",
    "secret",
    "secret_env",
    "max_value_bytes",
];

/// `file:///absolute/dir` or `file://./relative/dir` (percent-decoded).
#[cfg(feature = "file")]
fn file_from_url(mut url: CacheUrl) -> Result<Arc<dyn Backend>> {
    let path = file_url_path(&url.rest)?;
    let mut config = crate::store::file::FileConfig::new(path).with_format(url.take_format()?);
    if let Some(namespace) = url.take("namespace") {
        config = config.with_namespace(namespace);
    }
    if let Some(ttl) = url.take_ttl("ttl")? {
        config = config.with_default_ttl(ttl);
    }
    if let Some(silent) = url.take_bool("silent")? {
        config = config.with_silent(silent);
    }
    if let Some(n) = url.take_parsed::<u64>("max_entries")? {
        config = config.with_max_entries(n);
    }
    if let Some(n) = url.take_parsed::<u64>("max_bytes")? {
        config = config.with_max_bytes(n);
    }
    if let Some(every) = url.take_ttl("auto_purge")? {
        config = config.with_auto_purge_interval(every);
    }
    url.finish(FILE_OPTIONS)?;
    Ok(Arc::new(crate::store::file::FileBackend::new(config)?))
}

#[cfg_attr(not(feature = "file"), allow(dead_code))]
fn file_url_path(rest: &str) -> Result<std::path::PathBuf> {
    // `file:///abs` leaves `/abs`; `file://./rel` and `file://rel` are relative to the working
    // directory; a host name (`file://server/share`) is not supported.
    if rest.is_empty() {
        return Err(Error::config("file:// URL has no directory: write file:///var/cache/app or file://./cache"));
    }
    let decoded = url::form_urlencoded::parse(format!("p={}", rest.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if decoded.contains('\0') {
        return Err(Error::config("file:// URL path contains a NUL character"));
    }
    Ok(std::path::PathBuf::from(decoded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_passwords_and_secrets() {
        assert_eq!(redact_url("postgres://u:p@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("memcached://h1:11211,h2:11211"), "memcached://h1:11211,h2:11211");
        assert_eq!(redact_url("file:///tmp/x?secret=s3&ttl=1h"), "file:///tmp/x?secret=***&ttl=1h");
        assert_eq!(redact_url("redis://:pw@h"), "redis://:***@h");
    }

    #[test]
    fn file_url_paths() {
        assert_eq!(file_url_path("/var/cache/app").unwrap(), std::path::PathBuf::from("/var/cache/app"));
        assert_eq!(file_url_path("./cache").unwrap(), std::path::PathBuf::from("./cache"));
        assert_eq!(file_url_path("/tmp/a%20b+c").unwrap(), std::path::PathBuf::from("/tmp/a b+c"));
        assert!(file_url_path("").is_err());
        assert!(file_url_path("/tmp/%00x").is_err());
    }

    #[cfg(feature = "file")]
    #[test]
    fn file_urls_build_configured_backends() {
        let dir = std::env::temp_dir().join(format!("cachestack-url-{}", std::process::id()));
        let url = format!("file://{}?ttl=1h&namespace=app&max_entries=10&codec=postcard", dir.display());
        let backend = backend_from_url(&url).unwrap();
        let stats = backend.stats();
        assert_eq!(stats.details["namespace"], "app");
        assert!(backend_from_url(&format!("file://{}?colour=red", dir.display()))
            .unwrap_err()
            .to_string()
            .contains("valid options: ttl, namespace"));
        assert!(backend_from_url(&format!("file://{}?namespace=../up", dir.display())).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[cfg(feature = "file")]
    #[test]
    fn tiered_urls_stack_their_layers_in_order() {
        let dir = std::env::temp_dir().join(format!("cachestack-url-tiered-{}", std::process::id()));
        let url = format!("mem://?max_entries=100 | file://{}?namespace=t | null://", dir.display());
        let stats = backend_from_url(&url).unwrap().stats();
        let names: Vec<&str> = stats.layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["memory", "file", "null"]);
        let err = backend_from_url("mem:// | mem://?bogus=1").unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn memory_urls() {
        let b = backend_from_url("mem://?max_entries=5&ttl=5m").unwrap();
        assert_eq!(b.stats().details["max_entries"], "5");
        assert!(backend_from_url("memory://").is_ok());
    }

    #[test]
    fn bad_urls_are_clear_config_errors() {
        let cases = [
            ("nonsense", "not a cache URL"),
            ("ftp://x", "unknown cache URL scheme"),
            ("mem://?max_entries=ten", "max_entries=ten"),
            ("mem://?ttl=5 parsecs", "invalid TTL"),
            ("mem://?colour=blue", "valid options: max_entries"),
            ("mem://?ttl=1m&ttl=2m", "given twice"),
            ("mem://host", "take no host"),
            ("mem://?max_entries=0", "greater than zero"),
            ("null://?x=1", "unknown option"),
            ("mem:// | ", "empty layer"),
        ];
        for (url, expected) in cases {
            let err = backend_from_url(url).unwrap_err().to_string();
            assert!(err.contains(expected), "{url}: {err}");
        }
    }

    #[test]
    fn disabled_features_are_named() {
        for (url, feature) in [("redis://127.0.0.1/0", "redis"), ("postgres://u:pw@127.0.0.1/db", "postgres")] {
            if (feature == "postgres" && cfg!(feature = "postgres")) || (feature == "redis" && cfg!(feature = "redis"))
            {
                continue;
            }
            match backend_from_url(url) {
                Err(Error::FeatureDisabled { feature: f, .. }) => assert_eq!(f, feature),
                other => panic!("{url}: {other:?}"),
            }
        }
        if !cfg!(feature = "memcached") {
            let err = backend_from_url("memcached://127.0.0.1:11211").unwrap_err().to_string();
            assert!(err.contains("`memcached` cargo feature"), "{err}");
        }
    }
}
