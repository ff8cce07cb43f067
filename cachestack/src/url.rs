//! Cache URLs: parsing, the options every cache shares (parsed here once for every store), and
//! the shape of the scheme table to which each store contributes its scheme(s) and options.
//!
//! This module depends on no store: each store module declares its [`Scheme`], `store::SCHEMES`
//! lists them, and [`crate::backend_from_url`] (in `connect.rs`) dispatches on it.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::store::Backend;
#[cfg(any(
    feature = "file",
    feature = "redis",
    feature = "postgres",
    feature = "memcached",
    feature = "object-store"
))]
use crate::store::{ServerTimeouts, StoreSettings};
use crate::value::envelope::{Compression, Signer, ValueFormat};

/// How a store opens from a URL whose shared options were taken out (and are given).
pub(crate) type OpenUrl = fn(&mut CacheUrl, SharedOptions) -> Result<Arc<dyn Backend>>;

/// One entry of the scheme table: the URL schemes a store answers to, the cargo feature it needs,
/// the shared options it takes, its own options, and how it opens from a URL (`None` when its
/// feature is off).
#[derive(Clone, Copy)]
pub(crate) struct Scheme {
    /// Scheme names, the first one canonical (`redis`, `rediss`...).
    pub names: &'static [&'static str],
    /// The cargo feature the store needs.
    pub feature: &'static str,
    /// Which of the shared options ([`Shared`]) the store takes.
    pub shared: &'static [Shared],
    /// The store's own options, for the "valid options" list of errors.
    pub options: &'static [&'static str],
    /// Opens the store: the URL with the shared options already taken out, and those options.
    pub open: Option<OpenUrl>,
}

impl Scheme {
    /// The entry of a store whose cargo feature is off: using it names the feature.
    #[allow(dead_code)] // used only by feature sets that leave a store out
    pub const fn disabled(names: &'static [&'static str], feature: &'static str) -> Self {
        Scheme { names, feature, shared: &[], options: &[], open: None }
    }

    #[cfg_attr(
        not(any(feature = "redis", feature = "postgres", feature = "memcached", feature = "object-store")),
        allow(dead_code)
    )]
    /// Parses `text`, a URL of this scheme, into a store's configuration: the shared options
    /// (parsed here, once for every store), then the store's own (`own`); anything left over is
    /// an error listing the valid options.
    pub fn config_from_text<C>(
        &self,
        text: &str,
        own: impl FnOnce(&mut CacheUrl, SharedOptions) -> Result<C>,
    ) -> Result<C> {
        let url = CacheUrl::parse(text)?;
        if !self.names.contains(&url.scheme.as_str()) {
            let names: Vec<String> = self.names.iter().map(|n| format!("{n}://")).collect();
            return Err(Error::config(format!("`{}` is not a {} URL", redact_url(text), names.join(" or "))));
        }
        self.open_parsed(url, own)
    }

    /// As [`Scheme::config_from_text`], for a URL already parsed.
    pub fn open_parsed<C>(
        &self,
        mut url: CacheUrl,
        own: impl FnOnce(&mut CacheUrl, SharedOptions) -> Result<C>,
    ) -> Result<C> {
        let shared = SharedOptions::take(&mut url, self.shared)?;
        let config = own(&mut url, shared)?;
        url.finish(&self.valid_options())?;
        Ok(config)
    }

    /// Every option the scheme accepts, shared ones first.
    pub fn valid_options(&self) -> Vec<&'static str> {
        let mut valid: Vec<&'static str> = self.shared.iter().flat_map(|s| s.names().iter().copied()).collect();
        valid.extend_from_slice(self.options);
        valid
    }
}

/// The options that mean the same thing for every store that takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(all(feature = "file", feature = "redis")), allow(dead_code))] // used by the stores built
pub(crate) enum Shared {
    /// `namespace`: the cache's own part of a shared store.
    Namespace,
    /// `name`: the name in stats and logs.
    Name,
    /// `ttl`: the default TTL.
    Ttl,
    /// `silent`: the [`Silent`](crate::layer::Silent) layer.
    Silent,
    /// `timeout`: the [`Timeout`](crate::layer::Timeout) layer; `connect_timeout`.
    Timeouts,
    /// `codec`, `compression`, `compress_min_bytes`, `secret`/`secret_env`, `max_value_bytes`:
    /// the envelope of byte stores.
    Format,
}

impl Shared {
    /// What a byte store on a server takes.
    #[cfg_attr(
        not(any(feature = "redis", feature = "postgres", feature = "memcached", feature = "object-store")),
        allow(dead_code)
    )]
    pub const NETWORK: &'static [Shared] =
        &[Shared::Namespace, Shared::Ttl, Shared::Silent, Shared::Timeouts, Shared::Name, Shared::Format];

    fn names(self) -> &'static [&'static str] {
        match self {
            Shared::Namespace => &["namespace"],
            Shared::Name => &["name"],
            Shared::Ttl => &["ttl"],
            Shared::Silent => &["silent"],
            Shared::Timeouts => &["timeout", "connect_timeout"],
            Shared::Format => FORMAT_OPTIONS,
        }
    }
}

/// The shared options of one URL, parsed once; `None` where the URL does not set them (the
/// store's default stays).
#[derive(Debug, Clone, Default)]
pub(crate) struct SharedOptions {
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub ttl: Option<Duration>,
    pub silent: Option<bool>,
    pub timeout: Option<Duration>,
    pub connect_timeout: Option<Duration>,
    pub format: Option<ValueFormat>,
}

impl SharedOptions {
    /// Takes the shared options in `which` out of `url`.
    pub fn take(url: &mut CacheUrl, which: &[Shared]) -> Result<Self> {
        let mut shared = SharedOptions::default();
        for option in which {
            match option {
                Shared::Namespace => shared.namespace = url.take("namespace"),
                Shared::Name => shared.name = url.take("name"),
                Shared::Ttl => shared.ttl = url.take_ttl("ttl")?,
                Shared::Silent => shared.silent = url.take_bool("silent")?,
                Shared::Timeouts => {
                    shared.timeout = url.take_ttl("timeout")?;
                    shared.connect_timeout = url.take_ttl("connect_timeout")?;
                }
                Shared::Format => shared.format = Some(url.take_format()?),
            }
        }
        Ok(shared)
    }

    /// Writes the options the URL set into a store's configuration fields.
    #[cfg_attr(
        not(any(
            feature = "memory",
            feature = "file",
            feature = "redis",
            feature = "postgres",
            feature = "memcached",
            feature = "object-store"
        )),
        allow(dead_code)
    )]
    pub fn apply(self, fields: SharedFields<'_>) {
        fn set<T>(value: Option<T>, field: Option<&mut T>) {
            if let (Some(value), Some(field)) = (value, field) {
                *field = value;
            }
        }
        set(self.namespace, fields.namespace);
        set(self.name, fields.name);
        if let Some(ttl) = self.ttl {
            *fields.default_ttl = Some(ttl);
        }
        set(self.silent, fields.silent);
        set(self.timeout, fields.timeout);
        set(self.connect_timeout, fields.connect_timeout);
        set(self.format, fields.format);
    }
}

/// A store configuration's fields for the shared options (`None`: the store has no such field).
#[derive(Debug)]
#[cfg_attr(
    not(any(
        feature = "memory",
        feature = "file",
        feature = "redis",
        feature = "postgres",
        feature = "memcached",
        feature = "object-store"
    )),
    allow(dead_code)
)]
pub(crate) struct SharedFields<'a> {
    pub namespace: Option<&'a mut String>,
    pub name: Option<&'a mut String>,
    pub default_ttl: &'a mut Option<Duration>,
    pub silent: Option<&'a mut bool>,
    pub timeout: Option<&'a mut Duration>,
    pub connect_timeout: Option<&'a mut Duration>,
    pub format: Option<&'a mut ValueFormat>,
}

#[cfg(any(feature = "file", feature = "redis", feature = "postgres", feature = "memcached", feature = "object-store"))]
impl<'a> SharedFields<'a> {
    /// The fields of a byte store's [`StoreSettings`] (and no timeouts: see
    /// [`SharedFields::with_timeouts`]).
    pub fn settings(settings: &'a mut StoreSettings) -> Self {
        SharedFields {
            namespace: Some(&mut settings.namespace),
            name: Some(&mut settings.name),
            default_ttl: &mut settings.default_ttl,
            silent: Some(&mut settings.silent),
            timeout: None,
            connect_timeout: None,
            format: Some(&mut settings.format),
        }
    }

    /// Adds the fields of a server store's [`ServerTimeouts`].
    #[cfg_attr(
        not(any(feature = "redis", feature = "postgres", feature = "memcached", feature = "object-store")),
        allow(dead_code)
    )]
    pub fn with_timeouts(mut self, timeouts: &'a mut ServerTimeouts) -> Self {
        self.timeout = Some(&mut timeouts.operation);
        self.connect_timeout = Some(&mut timeouts.connect);
        self
    }
}

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

/// Options every byte store accepts.
pub(crate) const FORMAT_OPTIONS: &[&str] =
    &["codec", "compression", "compress_min_bytes", "secret", "secret_env", "max_value_bytes"];

/// Splits what follows `scheme://` into the credentials (`user:password`, without the `@`) and
/// the rest (hosts, path, query).
///
/// A password often holds characters that URLs reserve (`/`, `?`, `#`, `@`), written without
/// percent-encoding; a host never holds `@`. So when the authority starts with `user:` (a `:`
/// before any `/`, `?` or `#`), the password ends at the *last* `@`. A URL without a password
/// (`redis://user@host`, `redis://host/0?name=a@b`) ends its credentials, if any, at an `@` before
/// the first `/`, `?` or `#`; a path (`file:///...`) or an IPv6 host (`[::1]`) has none.
pub(crate) fn split_userinfo(after_scheme: &str) -> (Option<&str>, &str) {
    if after_scheme.starts_with(['/', '[']) {
        return (None, after_scheme);
    }
    let delimiter = after_scheme.find(['/', '?', '#']).unwrap_or(after_scheme.len());
    let has_password = after_scheme[..delimiter].contains(':');
    let searched = if has_password { after_scheme } else { &after_scheme[..delimiter] };
    match searched.rfind('@') {
        Some(at) => (Some(&after_scheme[..at]), &after_scheme[at + 1..]),
        None => (None, after_scheme),
    }
}

/// Percent-encodes the characters of credentials that would end them early in a URL (`/`, `?`,
/// `#`, `@`), so that any URL parser reads the authority [`split_userinfo`] found. The `:`
/// between user and password stays; `%` stays (credentials may already be encoded).
pub(crate) fn encode_userinfo(userinfo: &str) -> std::borrow::Cow<'_, str> {
    if !userinfo.contains(['/', '?', '#', '@']) {
        return userinfo.into();
    }
    let mut out = String::with_capacity(userinfo.len() + 8);
    for c in userinfo.chars() {
        match c {
            '/' => out.push_str("%2F"),
            '?' => out.push_str("%3F"),
            '#' => out.push_str("%23"),
            '@' => out.push_str("%40"),
            c => out.push(c),
        }
    }
    out.into()
}

/// A server's connection URL, which may hold a password: `Debug` and `Display` show it as
/// [`redact_url`] does, so a configuration that holds one can derive `Debug`. It dereferences to
/// the whole URL (`&str`), which is what connecting needs.
///
/// ```
/// use cachestack::ConnectionUrl;
///
/// let url = ConnectionUrl::from("redis://app:hunter2@127.0.0.1:6379/0");
/// assert_eq!(format!("{url:?}"), "\"redis://app:***@127.0.0.1:6379/0\"");
/// assert_eq!(url.to_string(), "redis://app:***@127.0.0.1:6379/0");
/// assert_eq!(url, "redis://app:hunter2@127.0.0.1:6379/0");
/// assert!(url.starts_with("redis://"));
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct ConnectionUrl(String);

impl ConnectionUrl {
    /// The whole URL, password included.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for ConnectionUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<String> for ConnectionUrl {
    fn from(url: String) -> Self {
        ConnectionUrl(url)
    }
}

impl From<&str> for ConnectionUrl {
    fn from(url: &str) -> Self {
        ConnectionUrl(url.to_owned())
    }
}

impl PartialEq<str> for ConnectionUrl {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for ConnectionUrl {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl std::fmt::Debug for ConnectionUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&redact_url(&self.0), f)
    }
}

impl std::fmt::Display for ConnectionUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

/// Hides secrets in a URL for logs and `Debug`: the password of `user:password@` (which may hold
/// `/`, `?`, `#` and `@`: it ends at the last `@`), and the values of options whose names hold
/// `secret`, `password`, `token` or `access_key` (`secret`, `secret_access_key`,
/// `session_token`, `access_key_id`...).
///
/// ```
/// assert_eq!(
///     cachestack::redact_url("redis://app:hunter2@127.0.0.1/0?secret=abc&ttl=5m"),
///     "redis://app:***@127.0.0.1/0?secret=***&ttl=5m"
/// );
/// assert_eq!(
///     cachestack::redact_url("postgres://app:p/a?s#s@w@db:5432/cache?name=x"),
///     "postgres://app:***@db:5432/cache?name=x"
/// );
/// ```
pub fn redact_url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let tail = match text.split_once("://") {
        Some((scheme, after)) => {
            out.push_str(scheme);
            out.push_str("://");
            let (userinfo, tail) = split_userinfo(after);
            match userinfo.map(|u| u.split_once(':')) {
                Some(Some((user, _password))) => {
                    out.push_str(user);
                    out.push_str(":***@");
                }
                Some(None) => {
                    out.push_str(userinfo.unwrap_or_default());
                    out.push('@');
                }
                None => {}
            }
            tail
        }
        None => text,
    };
    let (base, query) = match tail.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (tail, None),
    };
    out.push_str(base);
    if let Some(query) = query {
        out.push('?');
        let parts: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if is_secret_option(k) => format!("{k}=***"),
                _ => pair.to_string(),
            })
            .collect();
        out.push_str(&parts.join("&"));
    }
    out
}

/// True for an option whose value is a credential: its name holds `secret`, `password`, `token`
/// or `access_key` (`secret`, `secret_access_key`, `session_token`, `access_key_id`...); not
/// `secret_env`, which names a variable.
fn is_secret_option(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name != "secret_env" && ["secret", "password", "token", "access_key"].iter().any(|part| name.contains(part))
}

/// For tests: each `(input, expected)` case fails in `parse` with an [`Error::Config`] whose
/// message contains `expected` and not the password of the input's `user:password@`.
#[cfg(test)]
#[cfg_attr(
    not(any(feature = "redis", feature = "postgres", feature = "memcached", feature = "object-store")),
    allow(dead_code)
)]
pub(crate) fn assert_config_errors<T>(cases: &[(&str, &str)], parse: impl Fn(&str) -> Result<T>) {
    for &(input, expected) in cases {
        let Err(err) = parse(input) else { panic!("{input} was accepted") };
        assert!(matches!(err, Error::Config { .. }), "{input}: {err:?}");
        let text = err.to_string();
        assert!(text.contains(expected), "{input}: {text}");
        let userinfo = input.split_once("://").and_then(|(_, rest)| rest.split_once('@')).map(|(u, _)| u);
        if let Some((_, password)) = userinfo.and_then(|u| u.split_once(':')).filter(|(_, p)| !p.is_empty()) {
            assert!(!text.contains(password), "{input}: password shown in {text}");
        }
    }
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
        assert_eq!(redact_url("redis://user@h/0"), "redis://user@h/0");
        assert_eq!(redact_url("redis://h/0?name=ops@team"), "redis://h/0?name=ops@team");
        assert_eq!(redact_url("redis://[::1]:6379/0?name=a@b"), "redis://[::1]:6379/0?name=a@b");
        assert_eq!(redact_url("file:///tmp/a@b?secret=x"), "file:///tmp/a@b?secret=***");
        assert_eq!(
            redact_url("s3://b/p?access_key_id=AK&secret_access_key=SK&session_token=ST&region=r&secret_env=V"),
            "s3://b/p?access_key_id=***&secret_access_key=***&session_token=***&region=r&secret_env=V"
        );
    }

    /// A password made of the characters URLs reserve, and its pieces (none may be shown).
    const HOSTILE_PASSWORD: &str = "PW1/PW2?PW3#PW4@PW5:PW6%2FPW7";

    #[test]
    fn passwords_with_reserved_characters_are_hidden_whole() {
        for scheme in ["redis", "rediss+cluster", "postgres", "memcached", "mem", "file"] {
            for tail in ["h", "h:1/0", "h1:1,h2:2/3?ttl=5m&secret=PW8", "[::1]:5/db?name=a#frag"] {
                let text = format!("{scheme}://app:{HOSTILE_PASSWORD}@{tail}");
                let shown = redact_url(&text);
                assert!(!shown.contains("PW"), "{text} -> {shown}");
                assert!(shown.starts_with(&format!("{scheme}://app:***@")), "{text} -> {shown}");
                let host = tail.split('?').next().unwrap_or_default();
                assert!(shown.contains(host), "{text} -> {shown}");
            }
        }
    }

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
