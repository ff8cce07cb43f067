//! The settings of a memcached store, and the `memcached://` URLs that give them.

use std::time::Duration;

use crate::error::{Error, Result};
use std::sync::Arc;

use crate::store::Backend;
use crate::url::{CacheUrl, Scheme, Shared, SharedFields, SharedOptions};
use crate::value::envelope::ValueFormat;

use super::keys;

const DEFAULT_PORT: u16 = 11211;

/// Settings of a [`MemcachedBackend`](super::MemcachedBackend).
///
/// ```
/// use std::time::Duration;
/// use cachestack::MemcachedConfig;
///
/// let config = MemcachedConfig {
///     servers: vec!["10.0.0.1:11211".into(), "10.0.0.2:11211".into()],
///     namespace: "app".into(),
///     default_ttl: Some(Duration::from_secs(600)),
///     silent: true,
///     ..MemcachedConfig::default()
/// };
/// assert_eq!(config.max_item_bytes, 1024 * 1024);
///
/// // The same from a URL:
/// let from_url = MemcachedConfig::from_url("memcached://10.0.0.1,10.0.0.2?namespace=app&ttl=10m&silent=true").unwrap();
/// assert_eq!(from_url.servers, config.servers);
/// assert_eq!(from_url.default_ttl, config.default_ttl);
/// ```
#[derive(Debug, Clone)]
pub struct MemcachedConfig {
    /// Servers as `host:port` (`[v6addr]:port` for IPv6). Default `127.0.0.1:11211`.
    pub servers: Vec<String>,
    /// Keys live under this namespace; [`Backend::clear`](crate::Backend::clear) empties only it. Default `default`.
    pub namespace: String,
    /// TTL for writes that give none. `None`: entries live until evicted.
    pub default_ttl: Option<Duration>,
    /// Codec, compression and signing of stored values.
    pub format: ValueFormat,
    /// Failures become misses and no-ops (counted and logged) instead of errors: the
    /// [`Silent`](crate::layer::Silent) layer.
    pub silent: bool,
    /// Deadline for opening a connection. Default 1 s.
    pub connect_timeout: Duration,
    /// Bound on one operation (the [`Timeout`](crate::layer::Timeout) layer): waiting for pooled
    /// connections, connecting if needed, every request and response it involves. Default 1 s.
    pub timeout: Duration,
    /// Most connections held open to each server. Default 8.
    pub pool_size: usize,
    /// The servers' item size limit (memcached's `-I`, 1 MiB by default): larger values are
    /// refused with [`Error::ValueTooLarge`] before they are sent. Keep it at or below the
    /// servers' limit: memcache-async sends writes as `noreply`, so an item the server itself
    /// refuses is dropped without an error (the connection stays usable).
    pub max_item_bytes: usize,
    /// When a key's server is down, use the next server in the key's ranking instead of missing.
    /// Off by default. When the server comes back, a process that failed over retires what it
    /// held (a fresh namespace generation on it), so a value deleted or overwritten during the
    /// outage does not reappear from it; a value written to the other server during the outage
    /// lives on there and may be served again if the same server fails once more.
    pub failover: bool,
    /// How long a failed server is left alone before one request probes it. Default 1 s.
    pub retry_interval: Duration,
    /// Name shown in stats and logs. Default `memcached`.
    pub name: String,
}

impl Default for MemcachedConfig {
    fn default() -> Self {
        MemcachedConfig {
            servers: vec![format!("127.0.0.1:{DEFAULT_PORT}")],
            namespace: "default".into(),
            default_ttl: None,
            format: ValueFormat::default(),
            silent: false,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            pool_size: 8,
            max_item_bytes: 1024 * 1024,
            failover: false,
            retry_interval: Duration::from_secs(1),
            name: "memcached".into(),
        }
    }
}

impl MemcachedConfig {
    /// Settings from a `memcached://host1:port,host2:port?options` URL (`memcache://` too; the
    /// port defaults to 11211).
    ///
    /// Options: `namespace`, `ttl`, `silent`, `pool_size`, `connect_timeout`, `timeout`,
    /// `max_item_bytes`, `failover`, `retry_interval`, and the byte-store options `codec`,
    /// `compression`, `secret` / `secret_env`, `max_value_bytes`. Unknown options are errors.
    ///
    /// ```
    /// use cachestack::MemcachedConfig;
    /// let config = MemcachedConfig::from_url("memcached://127.0.0.1:11311?timeout=250ms&pool_size=4").unwrap();
    /// assert_eq!(config.servers, ["127.0.0.1:11311"]);
    /// assert_eq!(config.pool_size, 4);
    /// assert!(MemcachedConfig::from_url("memcached://127.0.0.1?colour=blue").is_err());
    /// ```
    pub fn from_url(text: &str) -> Result<Self> {
        SCHEME.config_from_text(text, config_from_url)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.servers.is_empty() {
            return Err(Error::config("memcached: no servers given"));
        }
        let mut seen = std::collections::HashSet::new();
        for server in &self.servers {
            if !seen.insert(parse_server(server)?) {
                return Err(Error::config(format!("memcached: server `{server}` is listed twice")));
            }
        }
        if self.namespace.len() > keys::MAX_NAMESPACE_BYTES {
            return Err(Error::config(format!(
                "memcached: the namespace is {} bytes long; at most {} are allowed",
                self.namespace.len(),
                keys::MAX_NAMESPACE_BYTES
            )));
        }
        if self.pool_size == 0 {
            return Err(Error::config("memcached: pool_size must be greater than zero"));
        }
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(Error::config("memcached: timeout and connect_timeout must be greater than zero"));
        }
        if self.max_item_bytes < 1024 {
            return Err(Error::config(format!(
                "memcached: max_item_bytes={} is below memcached's smallest item limit (1 KiB)",
                self.max_item_bytes
            )));
        }
        Ok(())
    }
}

/// `h1:11211,h2,[::1]:11212` into `host:port` strings.
fn parse_servers(rest: &str) -> Result<Vec<String>> {
    // Credentials first, found the way every URL is read (a password may hold `/`, `?`, `#`,
    // `@`), and never echoed.
    if let (Some(_), after) = crate::url::split_userinfo(rest) {
        return Err(Error::config(format!(
            "memcached URL `***@{after}`: credentials are not supported (the ASCII protocol has no authentication)"
        )));
    }
    let hosts = rest.strip_suffix('/').unwrap_or(rest);
    if hosts.contains('/') {
        return Err(Error::config(format!(
            "memcached URLs take no path (got `{rest}`); write memcached://host:11211,host2:11211?namespace=app"
        )));
    }
    if hosts.trim().is_empty() {
        return Err(Error::config("memcached URL names no server; write memcached://host:11211"));
    }
    hosts.split(',').map(|h| parse_server(h.trim())).collect()
}

/// Checks one `host[:port]` and returns it with the port filled in.
pub(crate) fn parse_server(host: &str) -> Result<String> {
    if host.is_empty() {
        return Err(Error::config("memcached: empty server name in the server list (`a,,b`?)"));
    }
    if let Some((_, after)) = host.rsplit_once('@') {
        // Never echo what comes before `@`: it may be a password.
        return Err(Error::config(format!(
            "memcached server `***@{after}`: credentials are not supported (the ASCII protocol has no authentication)"
        )));
    }
    let (name, port) = if let Some(v6) = host.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err(Error::config(format!("memcached server `{host}`: unclosed `[` in an IPv6 address")));
        };
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| Error::config(format!("memcached server `{host}`: expected `]:port`")))?,
            ),
        };
        (format!("[{addr}]"), port)
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name.to_string(), Some(port)),
            None => (host.to_string(), None),
        }
    };
    if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == ':' && !name.starts_with('[')) {
        return Err(Error::config(format!("memcached server `{host}`: invalid host name")));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| Error::config(format!("memcached server `{host}`: invalid port `{p}`")))?,
    };
    Ok(format!("{name}:{port}"))
}

/// `memcached://host1:port,host2:port` (or `memcache://`): the Memcached store's entry in the
/// scheme table.
pub(crate) const SCHEME: Scheme = Scheme {
    names: crate::store::MEMCACHED_NAMES,
    feature: "memcached",
    shared: Shared::NETWORK,
    options: &["pool_size", "max_item_bytes", "failover", "retry_interval"],
    open: Some(open_url),
};

fn open_url(url: &mut CacheUrl, shared: SharedOptions) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(crate::store::memcached::MemcachedBackend::new(config_from_url(url, shared)?)?))
}

/// The configuration a URL describes, its shared options already parsed.
fn config_from_url(url: &mut CacheUrl, shared: SharedOptions) -> Result<MemcachedConfig> {
    let mut config = MemcachedConfig { servers: parse_servers(&url.rest)?, ..MemcachedConfig::default() };
    shared.apply(SharedFields {
        namespace: Some(&mut config.namespace),
        name: Some(&mut config.name),
        default_ttl: &mut config.default_ttl,
        silent: Some(&mut config.silent),
        timeout: Some(&mut config.timeout),
        connect_timeout: Some(&mut config.connect_timeout),
        format: Some(&mut config.format),
    });
    if let Some(n) = url.take_parsed::<usize>("pool_size")? {
        config.pool_size = n;
    }
    if let Some(n) = url.take_parsed::<usize>("max_item_bytes")? {
        config.max_item_bytes = n;
    }
    if let Some(failover) = url.take_bool("failover")? {
        config.failover = failover;
    }
    if let Some(d) = url.take_ttl("retry_interval")? {
        config.retry_interval = d;
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_servers_and_options() {
        let c = MemcachedConfig::from_url(
            "memcached://h1:11211, h2 ,[::1]:11300/?namespace=app&ttl=5m&silent=true&pool_size=3&connect_timeout=200ms&timeout=300ms&max_item_bytes=2097152&failover=true&retry_interval=2s&codec=postcard",
        )
        .unwrap();
        assert_eq!(c.servers, ["h1:11211", "h2:11211", "[::1]:11300"]);
        assert_eq!(c.namespace, "app");
        assert_eq!(c.default_ttl, Some(Duration::from_secs(300)));
        assert!(c.silent && c.failover);
        assert_eq!(c.pool_size, 3);
        assert_eq!(c.connect_timeout, Duration::from_millis(200));
        assert_eq!(c.timeout, Duration::from_millis(300));
        assert_eq!(c.max_item_bytes, 2 * 1024 * 1024);
        assert_eq!(c.retry_interval, Duration::from_secs(2));
        assert!(MemcachedConfig::from_url("memcache://localhost").is_ok());
    }

    #[test]
    fn bad_urls_are_clear_config_errors() {
        let cases = [
            ("memcached://", "names no server"),
            ("memcached://h1,,h2", "empty server name"),
            ("memcached://h1:notaport", "invalid port"),
            ("memcached://h1:0", "invalid port"),
            ("memcached://h1:99999", "invalid port"),
            ("memcached://user:pw@h1", "credentials are not supported"),
            ("memcached://h1/db", "take no path"),
            ("memcached://[::1", "unclosed"),
            ("memcached://h1?colour=blue", "valid options: namespace"),
            ("memcached://h1?pool_size=0", "pool_size must be greater than zero"),
            ("memcached://h1?pool_size=many", "pool_size=many"),
            ("memcached://h1?timeout=soon", "timeout=soon"),
            ("memcached://h1?max_item_bytes=10", "max_item_bytes=10"),
            ("memcached://h1?silent=maybe", "silent=maybe"),
            ("memcached://h1,h1:11211", "listed twice"),
        ];
        for (url, expected) in cases {
            let err = match crate::backend_from_url(url) {
                Ok(b) => panic!("{url} was accepted: {b:?}"),
                Err(e) => e,
            };
            assert!(matches!(err, Error::Config { .. }), "{url}: {err:?}");
            assert!(err.to_string().contains(expected), "{url}: {err}");
            assert!(!err.to_string().contains("pw@"), "{url}: password shown in {err}");
        }
    }
}
