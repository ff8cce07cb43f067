//! Credentials in URLs: where they end ([`split_userinfo`]), how they are written back
//! ([`encode_userinfo`]), and how logs, errors and `Debug` hide them ([`redact_url`],
//! [`ConnectionUrl`]).

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::url::HOSTILE_PASSWORD;

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
}
