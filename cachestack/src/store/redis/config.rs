//! [`RedisConfig`]: which Redis server or cluster the backend talks to, and how it stores entries.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use std::sync::Arc;

use crate::store::{Backend, ServerTimeouts, StoreSettings};
use crate::url::{
    encode_userinfo, redact_url, split_userinfo, CacheUrl, ConnectionUrl, Scheme, Shared, SharedFields, SharedOptions,
};

/// `redis://`, `rediss://` (TLS), `redis+cluster://h1:p1,h2:p2`: the Redis store's entry in the
/// scheme table.
pub(crate) const SCHEME: Scheme = Scheme {
    names: crate::store::REDIS_NAMES,
    feature: "redis",
    shared: Shared::NETWORK,
    options: &["cluster", "scan_batch", "tls_ca", "tls_cert", "tls_key"],
    open: Some(open_url),
};

fn open_url(url: &mut CacheUrl, shared: SharedOptions) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(crate::store::redis::RedisBackend::new(config_from_url(url, shared)?)?))
}

/// Certificates for `rediss://` connections (feature `redis-tls`, rustls).
///
/// Without a CA file the system's root certificates are trusted. Server certificates are always
/// verified, host name included: there is no switch that turns verification off.
#[derive(Debug, Clone, Default)]
pub struct RedisTlsConfig {
    /// PEM file with the certificate(s) of the authority that signed the server's certificate
    /// (a private CA, a self-signed server certificate). URL option `tls_ca`.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for servers that require mutual TLS (`tls-auth-clients yes`). URL
    /// option `tls_cert`; needs `client_key_file` too.
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`. URL option `tls_key`.
    pub client_key_file: Option<PathBuf>,
}

/// Settings of a [`RedisBackend`](crate::RedisBackend).
///
/// Start from [`RedisConfig::new`] (or `Default`) and chain the setters, or assign the public
/// fields; `Debug` never shows the password:
///
/// ```
/// use std::time::Duration;
/// use cachestack::RedisConfig;
///
/// let config = RedisConfig::new("redis://:secret@127.0.0.1:6379/2")
///     .with_namespace("users")
///     .with_default_ttl(Duration::from_secs(300))
///     .with_timeout(Duration::from_millis(250));
/// assert!(!format!("{config:?}").contains("secret"));
/// ```
///
/// Struct update works too, the shared [`StoreSettings`] included:
///
/// ```
/// use cachestack::{RedisConfig, StoreSettings};
///
/// let defaults = RedisConfig::new("redis://127.0.0.1:6379/2");
/// let config = RedisConfig {
///     scan_batch: 100,
///     settings: StoreSettings { namespace: "users".into(), silent: true, ..defaults.settings },
///     ..defaults
/// };
/// assert_eq!((config.settings.name.as_str(), config.scan_batch), ("redis", 100));
/// ```
///
/// The same settings as a URL (see [`RedisConfig::from_url`]):
/// `redis://:secret@127.0.0.1:6379/2?namespace=users&ttl=5m&timeout=250ms`.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// The server: `redis://[user:password@]host[:port][/db]`, `rediss://...` for TLS (feature
    /// `redis-tls`), `redis+cluster://[user:password@]host1:port1,host2:port2` (or
    /// `rediss+cluster://`) for a Redis Cluster given by some of its nodes. No `?options` here:
    /// they are fields of this struct. `Debug` shows it without the password.
    pub url: ConnectionUrl,
    /// Treat the URL's hosts as Redis Cluster seed nodes even with a plain `redis://` scheme.
    pub cluster: bool,
    /// Namespace, name (default `redis`), default TTL, value format, silent mode. Every key is
    /// stored as `cachestack:<namespace>:<key>`, and [`clear`](crate::Backend::clear) removes
    /// exactly the keys under that prefix, so the namespace must not be empty nor contain `:`
    /// (which would let `a` and `a:b` overlap).
    pub settings: StoreSettings,
    /// Per operation (default 1 s) and per connection attempt (default 2 s). `clear` also
    /// applies the operation bound to each of its round trips.
    pub timeouts: ServerTimeouts,
    /// Keys asked for per `SCAN` round trip (and deleted per `UNLINK`) by `clear`.
    pub scan_batch: usize,
    /// Certificates for `rediss://`.
    pub tls: RedisTlsConfig,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379/0".into(),
            cluster: false,
            settings: StoreSettings::new("redis"),
            timeouts: ServerTimeouts::new(Duration::from_secs(1), Duration::from_secs(2)),
            scan_batch: 1000,
            tls: RedisTlsConfig::default(),
        }
    }
}

crate::store::settings_setters!(RedisConfig, timeouts);

impl RedisConfig {
    /// Default settings for the server (or cluster) at `url`.
    ///
    /// ```
    /// let config = cachestack::RedisConfig::new("redis+cluster://10.0.0.1:7000,10.0.0.2:7000");
    /// assert_eq!(config.settings.namespace, "default");
    /// ```
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig { url: url.into().into(), ..Default::default() }
    }

    /// Reads a cache URL: the server URL with cache options after `?`: the shared ones
    /// (`namespace`, `name`, `ttl`, `silent`, `codec`, `compression`, `secret`, `secret_env`,
    /// `max_value_bytes`: [`StoreSettings`]; `timeout`, `connect_timeout`: [`ServerTimeouts`])
    /// and Redis's own:
    ///
    /// | option | field |
    /// |---|---|
    /// | `cluster`, `scan_batch` | same name |
    /// | `tls_ca`, `tls_cert`, `tls_key` | [`RedisTlsConfig`] files |
    ///
    /// An unknown option is an [`Error::Config`] that lists the valid ones.
    ///
    /// ```
    /// use cachestack::RedisConfig;
    ///
    /// let config = RedisConfig::from_url("redis://:pw@127.0.0.1:6380/3?namespace=users&ttl=5m&silent=true").unwrap();
    /// assert_eq!(config.url, "redis://:pw@127.0.0.1:6380/3");
    /// assert_eq!((config.settings.namespace.as_str(), config.settings.silent), ("users", true));
    ///
    /// let cluster = RedisConfig::from_url("redis+cluster://10.0.0.1:7000,10.0.0.2:7001").unwrap();
    /// assert_eq!(cluster.url, "redis+cluster://10.0.0.1:7000,10.0.0.2:7001");
    ///
    /// let err = RedisConfig::from_url("redis://127.0.0.1?colour=blue").unwrap_err();
    /// assert!(err.to_string().contains("valid options: namespace"));
    /// ```
    pub fn from_url(text: &str) -> Result<Self> {
        SCHEME.config_from_text(text, config_from_url)
    }

    /// Checks the settings that do not need the server URL parsed.
    pub(crate) fn validate(&self) -> Result<()> {
        let namespace = &self.settings.namespace;
        if namespace.is_empty() {
            return Err(Error::config("redis: the namespace must not be empty"));
        }
        if namespace.contains(':') {
            return Err(Error::config(format!(
                "redis: namespace {namespace:?} contains `:`, which separates the namespace from keys (namespaces `a` and `a:b` would overlap); use `.`, `-` or `_` instead"
            )));
        }
        self.timeouts.validate("redis")?;
        if self.scan_batch == 0 {
            return Err(Error::config("redis: scan_batch must be at least 1"));
        }
        if self.tls.client_cert_file.is_some() != self.tls.client_key_file.is_some() {
            return Err(Error::config(
                "redis: a TLS client certificate needs its key, and a key its certificate (tls_cert and tls_key)",
            ));
        }
        Ok(())
    }
}

/// The configuration a URL describes, its shared options already parsed, checked: the store's
/// own options are taken out of `url`, and the server URL is left in `config.url`.
pub(crate) fn config_from_url(url: &mut CacheUrl, shared: SharedOptions) -> Result<RedisConfig> {
    let mut config = RedisConfig { url: format!("{}://{}", url.scheme, url.rest).into(), ..RedisConfig::default() };
    shared.apply(SharedFields::settings(&mut config.settings).with_timeouts(&mut config.timeouts));
    if let Some(cluster) = url.take_bool("cluster")? {
        config.cluster = cluster;
    }
    if let Some(n) = url.take_parsed::<usize>("scan_batch")? {
        config.scan_batch = n;
    }
    config.tls.ca_file = url.take("tls_ca").map(PathBuf::from);
    config.tls.client_cert_file = url.take("tls_cert").map(PathBuf::from);
    config.tls.client_key_file = url.take("tls_key").map(PathBuf::from);
    config.validate()?;
    Ok(config)
}

/// A server URL taken apart: what redis-rs needs to connect.
#[derive(Clone)]
pub(crate) struct ServerUrl {
    /// `rediss://`: connect with TLS.
    pub tls: bool,
    /// A Redis Cluster given by seed nodes.
    pub cluster: bool,
    /// One connection URL per node, credentials included (never shown).
    pub nodes: Vec<String>,
    /// The URL with the password hidden, for stats and logs.
    pub display: String,
}

impl fmt::Debug for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerUrl").field("url", &self.display).field("cluster", &self.cluster).finish()
    }
}

/// Parses `redis://[user:password@]host[:port][/db]` and its TLS and cluster variants.
pub(crate) fn parse_server_url(text: &str, force_cluster: bool) -> Result<ServerUrl> {
    let text = text.trim();
    let display = redact_url(text);
    let fail = |why: String| Err(Error::config(format!("redis URL `{display}`: {why}")));
    let Some((scheme, rest)) = text.split_once("://") else {
        return fail("expected redis://host:port/db, rediss://..., or redis+cluster://host1:port1,host2:port2".into());
    };
    let (tls, cluster_scheme) = match scheme.to_ascii_lowercase().as_str() {
        "redis" => (false, false),
        "rediss" => (true, false),
        "redis+cluster" => (false, true),
        "rediss+cluster" => (true, true),
        other => {
            return fail(format!(
                "unknown scheme `{other}://`; expected redis://, rediss://, redis+cluster:// or rediss+cluster://"
            ))
        }
    };
    let cluster = cluster_scheme || force_cluster;
    // The password may hold `/`, `?`, `#` or `@`: it ends at the last `@` (see `split_userinfo`).
    let (userinfo, rest) = split_userinfo(rest);
    if rest.contains('?') || rest.contains('#') {
        return fail("the server URL takes no `?options` here; set them as RedisConfig fields, or build the backend from the whole URL with RedisConfig::from_url".into());
    }
    let (hosts, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let db_text = path.trim_matches('/');
    let db: u32 = if db_text.is_empty() {
        0
    } else {
        match db_text.parse() {
            Ok(db) => db,
            Err(_) => return fail(format!("the path must be a database number (`/0`, `/3`), not `/{db_text}`")),
        }
    };
    if cluster && db != 0 {
        return fail(format!("Redis Cluster has only database 0, the URL asks for database {db}"));
    }
    let mut nodes = Vec::new();
    for host in hosts.split(',') {
        let host = host.trim();
        if host.is_empty() {
            return fail("missing host (write redis://127.0.0.1:6379; several hosts are separated by commas)".into());
        }
        let (name, port) = match split_host_port(host) {
            Ok(parts) => parts,
            Err(why) => return fail(why),
        };
        let scheme = if tls { "rediss" } else { "redis" };
        let credentials = userinfo.map(|u| format!("{}@", encode_userinfo(u))).unwrap_or_default();
        let node = format!("{scheme}://{credentials}{name}:{port}/{db}");
        if let Err(e) = url::Url::parse(&node) {
            return fail(format!("host `{host}` does not form a valid URL: {e}"));
        }
        nodes.push(node);
    }
    if nodes.len() > 1 && !cluster {
        return fail(format!(
            "{} hosts given: several hosts name the seed nodes of a Redis Cluster, write redis+cluster://h1:p1,h2:p2 (or set cluster=true)",
            nodes.len()
        ));
    }
    Ok(ServerUrl { tls, cluster, nodes, display })
}

/// `host`, `host:port`, `[::1]`, `[::1]:port` -> (host as written, port).
fn split_host_port(host: &str) -> std::result::Result<(&str, u16), String> {
    let (name, port) = if let Some(after) = host.strip_prefix('[') {
        let Some(close) = after.find(']') else {
            return Err(format!("unclosed `[` in host `{host}`"));
        };
        let name = &host[..close + 2];
        match &after[close + 1..] {
            "" => (name, None),
            tail => match tail.strip_prefix(':') {
                Some(port) => (name, Some(port)),
                None => return Err(format!("unexpected `{tail}` after the IPv6 address in `{host}`")),
            },
        }
    } else {
        match host.split_once(':') {
            None => (host, None),
            Some((name, port)) if !port.contains(':') => (name, Some(port)),
            Some(_) => {
                return Err(format!("host `{host}` has several `:`; write IPv6 addresses in brackets, [::1]:6379"))
            }
        }
    };
    if name.is_empty() || name == "[]" {
        return Err(format!("missing host name in `{host}`"));
    }
    let port = match port {
        None => 6379,
        Some(p) => match p.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err(format!("invalid port `{p}` in `{host}`")),
        },
    };
    Ok((name, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Signer, ValueFormat};

    #[test]
    fn server_urls_are_taken_apart() {
        let single = parse_server_url("redis://:pw@127.0.0.1:6380/3", false).unwrap();
        assert_eq!(single.nodes, ["redis://:pw@127.0.0.1:6380/3"]);
        assert!(!single.cluster && !single.tls);
        assert_eq!(single.display, "redis://:***@127.0.0.1:6380/3");
        assert!(!format!("{single:?}").contains("pw"));

        let default_port = parse_server_url("redis://localhost", false).unwrap();
        assert_eq!(default_port.nodes, ["redis://localhost:6379/0"]);

        let tls = parse_server_url("rediss://user:pw@cache.internal/1", false).unwrap();
        assert!(tls.tls);
        assert_eq!(tls.nodes, ["rediss://user:pw@cache.internal:6379/1"]);

        let cluster = parse_server_url("redis+cluster://a:pw@10.0.0.1:7000, 10.0.0.2:7001,[::1]:7002", false).unwrap();
        assert!(cluster.cluster);
        assert_eq!(
            cluster.nodes,
            ["redis://a:pw@10.0.0.1:7000/0", "redis://a:pw@10.0.0.2:7001/0", "redis://a:pw@[::1]:7002/0"]
        );
        let forced = parse_server_url("redis://10.0.0.1:7000,10.0.0.2:7001", true).unwrap();
        assert!(forced.cluster);
        assert!(parse_server_url("rediss+cluster://10.0.0.1:7000", false).unwrap().tls);
    }

    #[test]
    fn a_password_with_reserved_characters_connects_and_is_never_shown() {
        let parsed = parse_server_url("redis://app:PW1/PW2?PW3#PW4@PW5@127.0.0.1:6380/3", false).unwrap();
        assert_eq!(parsed.nodes, ["redis://app:PW1%2FPW2%3FPW3%23PW4%40PW5@127.0.0.1:6380/3"]);
        let node = url::Url::parse(&parsed.nodes[0]).unwrap();
        assert_eq!(
            (node.host_str(), node.port(), node.password()),
            (Some("127.0.0.1"), Some(6380), Some("PW1%2FPW2%3FPW3%23PW4%40PW5"))
        );
        assert_eq!(parsed.display, "redis://app:***@127.0.0.1:6380/3");
        let config = RedisConfig::from_url("redis://app:PW1/PW2?PW3#PW4@PW5@127.0.0.1:6380/3?namespace=n").unwrap();
        assert!(!format!("{config:?}").contains("PW"), "{config:?}");
        for bad in [
            "redis://app:PW1/PW2?PW3#PW4@PW5@h:notaport/0",
            "redis://app:PW1/PW2?PW3@h1:1,h2:2",
            "redis://app:PW1/PW2?PW3@h/0?colour=PW9",
        ] {
            let err = RedisConfig::from_url(bad).and_then(|c| parse_server_url(&c.url, false).map(|_| c)).unwrap_err();
            assert!(!err.to_string().contains("PW1") && !err.to_string().contains("PW3"), "{bad}: {err}");
        }
    }

    #[test]
    fn bad_server_urls_are_clear_config_errors() {
        let cases = [
            ("127.0.0.1:6379", "expected redis://"),
            ("http://127.0.0.1", "unknown scheme"),
            ("redis://", "missing host"),
            ("redis://h1,,h2", "missing host"),
            ("redis://127.0.0.1:notaport", "invalid port `notaport`"),
            ("redis://127.0.0.1:0", "invalid port `0`"),
            ("redis://127.0.0.1:70000", "invalid port"),
            ("redis://127.0.0.1/db", "database number"),
            ("redis://::1:6379", "brackets"),
            ("redis://[::1", "unclosed"),
            ("redis://h1:1,h2:2", "redis+cluster://"),
            ("redis+cluster://h1:1/2", "only database 0"),
            ("redis://h?namespace=x", "takes no `?options`"),
            ("redis://:secret@h:1,h:2", "redis+cluster://"),
        ];
        crate::url::assert_config_errors(&cases, |url| parse_server_url(url, false));
    }

    #[test]
    fn cache_urls_fill_the_config() {
        let config = RedisConfig::from_url(
            "rediss://u:pw@127.0.0.1:6390/2?namespace=users&ttl=5m&silent=yes&timeout=250ms&connect_timeout=1s\
             &scan_batch=10&tls_ca=/tmp/ca.pem&tls_cert=/tmp/c.pem&tls_key=/tmp/k.pem&codec=json&name=sessions",
        )
        .unwrap();
        assert_eq!(config.url, "rediss://u:pw@127.0.0.1:6390/2");
        assert_eq!(config.settings.namespace, "users");
        assert_eq!(config.settings.name, "sessions");
        assert_eq!(config.settings.default_ttl, Some(Duration::from_secs(300)));
        assert!(config.settings.silent);
        assert_eq!(config.timeouts, ServerTimeouts::new(Duration::from_millis(250), Duration::from_secs(1)));
        assert_eq!(config.scan_batch, 10);
        assert_eq!(config.tls.ca_file.as_deref(), Some(std::path::Path::new("/tmp/ca.pem")));
        assert_eq!(config.settings.format.codec, crate::Codec::Json);
        let debug = format!("{config:?}");
        assert!(!debug.contains("pw") && debug.contains("u:***@"), "{debug}");

        assert!(RedisConfig::from_url("redis://h1:1,h2:2?cluster=true").unwrap().cluster);
    }

    #[test]
    fn setters_fill_the_shared_settings_and_debug_hides_every_secret() {
        let format = ValueFormat { signer: Signer::new("0123456789abcdef-secret").ok(), ..ValueFormat::default() };
        let config = RedisConfig::new("redis://app:hunter2@127.0.0.1:6379/1")
            .with_namespace("users")
            .with_name("sessions")
            .with_default_ttl(Duration::from_secs(60))
            .with_format(format)
            .with_silent(true)
            .with_timeout(Duration::from_millis(250))
            .with_connect_timeout(Duration::from_millis(750));
        let settings = &config.settings;
        assert_eq!((settings.namespace.as_str(), settings.name.as_str()), ("users", "sessions"));
        assert_eq!(settings.default_ttl, Some(Duration::from_secs(60)));
        assert!(settings.silent);
        assert_eq!(config.timeouts, ServerTimeouts::new(Duration::from_millis(250), Duration::from_millis(750)));
        let debug = format!("{config:?}");
        assert!(debug.contains("app:***@127.0.0.1"), "{debug}");
        assert!(!debug.contains("hunter2") && !debug.contains("abcdef-secret"), "{debug}");

        let err = crate::RedisBackend::new(config.with_connect_timeout(Duration::ZERO)).unwrap_err();
        assert!(err.to_string().contains("redis: connect_timeout must be greater than zero"), "{err}");
    }

    #[test]
    fn bad_cache_urls_are_clear_config_errors() {
        let cases = [
            ("redis://h?namespace=a:b", "contains `:`"),
            ("redis://h?namespace=", "must not be empty"),
            ("redis://h?timeout=soon", "timeout=soon"),
            ("redis://h?timeout=0s", "greater than zero"),
            ("redis://h?scan_batch=0", "at least 1"),
            ("redis://h?silent=maybe", "silent=maybe"),
            ("redis://h?tls_cert=/c.pem", "needs its key"),
            ("redis://h?colour=blue", "valid options: namespace, ttl"),
            ("memcached://h", "is not a redis://"),
        ];
        crate::url::assert_config_errors(&cases, RedisConfig::from_url);
    }
}
