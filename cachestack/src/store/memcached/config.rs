//! The settings of a memcached store, and the `memcached://` URLs that give them.

use std::time::Duration;

use crate::error::{Error, Result};
use std::sync::Arc;

use crate::store::{Backend, ServerTimeouts, StoreSettings};
use crate::url::{CacheUrl, Scheme, Shared, SharedFields, SharedOptions};

use super::keys;

const DEFAULT_PORT: u16 = 11211;

/// Settings of a [`MemcachedBackend`](super::MemcachedBackend).
///
/// Start from `Default` and chain the setters, or assign the public fields:
///
/// ```
/// use std::time::Duration;
/// use cachestack::{MemcachedConfig, StoreSettings};
///
/// let config = MemcachedConfig {
///     servers: vec!["10.0.0.1:11211".into(), "10.0.0.2:11211".into()],
///     ..MemcachedConfig::default()
/// }
/// .with_namespace("app")
/// .with_default_ttl(Duration::from_secs(600))
/// .with_silent(true);
/// assert_eq!(config.max_item_bytes, 1024 * 1024);
///
/// // Struct update, the shared settings included:
/// let defaults = MemcachedConfig::default();
/// let same = MemcachedConfig {
///     servers: config.servers.clone(),
///     settings: StoreSettings { namespace: "app".into(), silent: true, ..defaults.settings },
///     ..defaults
/// };
/// assert_eq!(same.settings.name, "memcached");
///
/// // The same from a URL:
/// let from_url = MemcachedConfig::from_url("memcached://10.0.0.1,10.0.0.2?namespace=app&ttl=10m&silent=true").unwrap();
/// assert_eq!(from_url.servers, config.servers);
/// assert_eq!(from_url.settings.default_ttl, config.settings.default_ttl);
/// ```
#[derive(Debug, Clone)]
pub struct MemcachedConfig {
    /// Servers as `host:port` (`[v6addr]:port` for IPv6). Default `127.0.0.1:11211`.
    pub servers: Vec<String>,
    /// Namespace, name (default `memcached`), default TTL, value format, silent mode. Entries
    /// without a TTL live until evicted; the namespace is at most 1024 bytes.
    pub settings: StoreSettings,
    /// Per operation (default 1 s): waiting for pooled connections, connecting if needed, every
    /// request and response it involves. And per connection opened (default 1 s).
    pub timeouts: ServerTimeouts,
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
}

impl Default for MemcachedConfig {
    fn default() -> Self {
        MemcachedConfig {
            servers: vec![format!("127.0.0.1:{DEFAULT_PORT}")],
            settings: StoreSettings::new("memcached"),
            timeouts: ServerTimeouts::new(Duration::from_secs(1), Duration::from_secs(1)),
            pool_size: 8,
            max_item_bytes: 1024 * 1024,
            failover: false,
            retry_interval: Duration::from_secs(1),
        }
    }
}

crate::store::settings_setters!(MemcachedConfig, timeouts);

impl MemcachedConfig {
    /// Settings from a `memcached://host1:port,host2:port?options` URL (`memcache://` too; the
    /// port defaults to 11211).
    ///
    /// Options: the shared ones (`namespace`, `name`, `ttl`, `silent`, `codec`, `compression`,
    /// `secret` / `secret_env`, `max_value_bytes`: [`StoreSettings`]; `timeout`,
    /// `connect_timeout`: [`ServerTimeouts`]) and Memcached's own `pool_size`,
    /// `max_item_bytes`, `failover`, `retry_interval`. Unknown options are errors.
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
        if self.settings.namespace.len() > keys::MAX_NAMESPACE_BYTES {
            return Err(Error::config(format!(
                "memcached: the namespace is {} bytes long; at most {} are allowed",
                self.settings.namespace.len(),
                keys::MAX_NAMESPACE_BYTES
            )));
        }
        if self.pool_size == 0 {
            return Err(Error::config("memcached: pool_size must be greater than zero"));
        }
        self.timeouts.validate("memcached")?;
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

/// The configuration a URL describes, its shared options already parsed, checked.
fn config_from_url(url: &mut CacheUrl, shared: SharedOptions) -> Result<MemcachedConfig> {
    let mut config = MemcachedConfig { servers: parse_servers(&url.rest)?, ..MemcachedConfig::default() };
    shared.apply(SharedFields::settings(&mut config.settings).with_timeouts(&mut config.timeouts));
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
    config.validate()?;
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
        assert_eq!(c.settings.namespace, "app");
        assert_eq!(c.settings.default_ttl, Some(Duration::from_secs(300)));
        assert!(c.settings.silent && c.failover);
        assert_eq!(c.pool_size, 3);
        assert_eq!(c.timeouts, ServerTimeouts::new(Duration::from_millis(300), Duration::from_millis(200)));
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
        crate::url::assert_config_errors(&cases, crate::backend_from_url);
    }
}
