//! Opening a cache from a URL: the scheme table (each store's entry in `store::SCHEMES`), the
//! shared options parsed once, and `a | b | c` stacks.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::store::{Backend, SCHEMES};
use crate::url::{CacheUrl, Scheme};

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
/// Options shared by the stores that have them, parsed once for all: `ttl`, `namespace`, `name`,
/// `silent` (true/false: the [`Silent`](crate::layer::Silent) layer), `timeout` and
/// `connect_timeout` (the [`Timeout`](crate::layer::Timeout) layer), and for byte stores `codec`
/// (postcard, json, msgpack, bincode), `compression` (none, zstd, lz4), `secret_env` (name of an
/// environment variable holding the signing secret; `secret=...` directly is accepted too and
/// never shown), `max_value_bytes`. An unknown option is an error that lists the valid ones. A
/// URL-built store gets the same layers as one built in code; a URL-built stack the same breaker.
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
    let url = CacheUrl::parse(text)?;
    let scheme = find(&url.scheme)?;
    let Some(open) = scheme.open else {
        return Err(Error::FeatureDisabled { scheme: url.scheme.clone(), feature: scheme.feature });
    };
    scheme.open_parsed(url, open)
}

fn find(name: &str) -> Result<&'static Scheme> {
    SCHEMES.iter().find(|s| s.names.contains(&name)).ok_or_else(|| {
        let known: Vec<String> = SCHEMES.iter().flat_map(|s| s.names.iter().map(|n| format!("{n}://"))).collect();
        Error::config(format!("unknown cache URL scheme `{name}://`; known: {}", known.join(", ")))
    })
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
    // The same layers as a stack built in code with a breaker: its remote layers are bypassed
    // while they keep failing, and replay what they missed when they come back.
    Ok(Arc::new(crate::stack::TieredCache::from_layers_with_breaker(layers, crate::BreakerConfig::default())?))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            ("mem://?colour=blue", "valid options: ttl, name, max_entries"),
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
