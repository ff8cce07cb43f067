//! The settings of an object store cache, and the `s3://` URLs that give them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::store::{Backend, ServerTimeouts, StoreSettings};
use crate::url::{CacheUrl, Scheme, Shared, SharedFields, SharedOptions};

/// The longest namespace, in bytes (it is one segment of every object name).
pub(super) const MAX_NAMESPACE_BYTES: usize = 255;

/// Where and how to reach an S3 bucket (AWS, or an S3-compatible server: MinIO, Ceph, moto...).
///
/// Anything left `None` comes from the standard AWS environment variables when the store is
/// built (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` /
/// `AWS_DEFAULT_REGION`, `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`), then from object_store's defaults
/// (instance credentials, region `us-east-1`).
///
/// `Debug` never shows the credentials:
///
/// ```
/// use cachestack::S3Options;
/// let s3 = S3Options {
///     access_key_id: Some("AKIAEXAMPLE".into()),
///     secret_access_key: Some("wJalrXUtnFEMI/K7MDENG".into()),
///     ..S3Options::new("reports")
/// };
/// let shown = format!("{s3:?}");
/// assert!(shown.contains("reports") && !shown.contains("AKIAEXAMPLE") && !shown.contains("wJalr"));
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    /// The bucket.
    pub bucket: String,
    /// The region (`eu-west-1`...).
    pub region: Option<String>,
    /// The endpoint of an S3-compatible server (`http://127.0.0.1:9000`); requests then use
    /// path-style URLs.
    pub endpoint: Option<String>,
    /// Allow plain `http://` endpoints (off by default; `AWS_ALLOW_HTTP=true` also allows them).
    pub allow_http: bool,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Session token of temporary credentials.
    pub session_token: Option<String>,
}

impl S3Options {
    /// The options of `bucket`, everything else from the environment.
    pub fn new(bucket: impl Into<String>) -> Self {
        S3Options { bucket: bucket.into(), ..S3Options::default() }
    }
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |set: &Option<String>| if set.is_some() { "<redacted>" } else { "<from environment>" };
        f.debug_struct("S3Options")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint.as_deref().map(crate::redact_url))
            .field("allow_http", &self.allow_http)
            .field("access_key_id", &hidden(&self.access_key_id))
            .field("secret_access_key", &hidden(&self.secret_access_key))
            .field("session_token", &hidden(&self.session_token))
            .finish()
    }
}

/// Settings of an [`ObjectStoreBackend`](super::ObjectStoreBackend).
///
/// ```
/// use std::time::Duration;
/// use cachestack::{ObjectStoreConfig, S3Options};
///
/// let config = ObjectStoreConfig::new(S3Options::new("artefacts"))
///     .with_prefix("cache/v1")
///     .with_namespace("reports")
///     .with_default_ttl(Duration::from_secs(24 * 3600));
/// assert_eq!(config.settings.name, "object-store");
///
/// // The same from a URL (credentials from the environment here):
/// let from_url = ObjectStoreConfig::from_url("s3://artefacts/cache/v1?namespace=reports&ttl=1d").unwrap();
/// assert_eq!(from_url.s3.bucket, "artefacts");
/// assert_eq!(from_url.prefix, config.prefix);
/// assert_eq!(from_url.settings.default_ttl, config.settings.default_ttl);
/// ```
#[derive(Debug, Clone)]
pub struct ObjectStoreConfig {
    /// The bucket and how to reach it (used by [`ObjectStoreBackend::new`](super::ObjectStoreBackend::new);
    /// ignored by [`ObjectStoreBackend::with_store`](super::ObjectStoreBackend::with_store)).
    pub s3: S3Options,
    /// The folder of the bucket that holds every namespace's objects (`cache/v1`; empty: the
    /// bucket's root). Each namespace is one folder below it.
    pub prefix: String,
    /// Namespace (at most 255 bytes), name (default `object-store`), default TTL, value format
    /// (the value limit defaults to 64 MiB here), silent mode.
    pub settings: StoreSettings,
    /// Per operation (default 10 s): every request of the operation, retries included. And per
    /// connection opened (default 2 s).
    pub timeouts: ServerTimeouts,
    /// Requests in flight at once for batches, listings and purges. Default 16.
    pub concurrency: usize,
    /// How often a request that failed on the network or with a server error is retried
    /// (within the operation's timeout). Default 2.
    pub retries: usize,
}

impl ObjectStoreConfig {
    /// The defaults for the bucket `s3` describes.
    pub fn new(s3: S3Options) -> Self {
        let mut settings = StoreSettings::new("object-store");
        settings.format.max_value_bytes = 64 * 1024 * 1024;
        ObjectStoreConfig {
            s3,
            prefix: String::new(),
            settings,
            timeouts: ServerTimeouts::new(Duration::from_secs(10), Duration::from_secs(2)),
            concurrency: 16,
            retries: 2,
        }
    }

    /// Sets [`ObjectStoreConfig::prefix`].
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Settings from an `s3://bucket/prefix?options` URL.
    ///
    /// Options: the shared ones (`namespace`, `name`, `ttl`, `silent`, `codec`, `compression`,
    /// `secret` / `secret_env`, `max_value_bytes`: [`StoreSettings`]; `timeout`,
    /// `connect_timeout`: [`ServerTimeouts`]), S3's `region`, `endpoint`, `allow_http`,
    /// `access_key_id`, `secret_access_key`, `session_token` ([`S3Options`]; credentials are
    /// better left to the environment), and `concurrency`, `retries`. Unknown options are errors;
    /// errors never show credentials.
    ///
    /// ```
    /// use cachestack::ObjectStoreConfig;
    /// let config = ObjectStoreConfig::from_url(
    ///     "s3://cache-bucket?endpoint=http://127.0.0.1:9000&allow_http=true&region=eu-west-1&timeout=2s",
    /// )
    /// .unwrap();
    /// assert_eq!(config.s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
    /// assert!(config.s3.allow_http && config.prefix.is_empty());
    /// assert!(ObjectStoreConfig::from_url("s3://cache-bucket?colour=blue").is_err());
    /// ```
    pub fn from_url(text: &str) -> Result<Self> {
        SCHEME.config_from_text(text, config_from_url)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let namespace = &self.settings.namespace;
        if namespace.is_empty() || namespace.len() > MAX_NAMESPACE_BYTES {
            return Err(Error::config(format!(
                "object-store: the namespace must be 1 to {MAX_NAMESPACE_BYTES} bytes long (got {})",
                namespace.len()
            )));
        }
        if self.concurrency == 0 {
            return Err(Error::config("object-store: concurrency must be greater than zero"));
        }
        self.timeouts.validate("object-store")?;
        object_store::path::Path::parse(&self.prefix)
            .map_err(|e| Error::config(format!("object-store: invalid prefix `{}`: {e}", self.prefix)))?;
        Ok(())
    }
}

crate::store::settings_setters!(ObjectStoreConfig, timeouts);

/// `s3://bucket/prefix`: the object store's entry in the scheme table.
pub(crate) const SCHEME: Scheme = Scheme {
    names: crate::store::OBJECT_STORE_NAMES,
    feature: "object-store",
    shared: Shared::NETWORK,
    options: &[
        "region",
        "endpoint",
        "allow_http",
        "access_key_id",
        "secret_access_key",
        "session_token",
        "concurrency",
        "retries",
    ],
    open: Some(open_url),
};

fn open_url(url: &mut CacheUrl, shared: SharedOptions) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(super::ObjectStoreBackend::new(config_from_url(url, shared)?)?))
}

/// The configuration a URL describes, its shared options already parsed, checked.
fn config_from_url(url: &mut CacheUrl, shared: SharedOptions) -> Result<ObjectStoreConfig> {
    // Credentials belong in options or the environment; never echo what precedes `@`.
    if let (Some(_), after) = crate::url::split_userinfo(&url.rest) {
        return Err(Error::config(format!(
            "s3 URL `s3://***@{after}`: credentials go in the options `access_key_id` and `secret_access_key`, or the AWS environment variables"
        )));
    }
    let (bucket, prefix) = url.rest.split_once('/').unwrap_or((&url.rest, ""));
    if bucket.is_empty() || bucket.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(Error::config(format!(
            "s3 URL `s3://{}` names no valid bucket; write s3://bucket/prefix",
            url.rest
        )));
    }
    let mut s3 = S3Options::new(bucket);
    let prefix = prefix.trim_end_matches('/').to_owned();
    s3.region = url.take("region");
    s3.endpoint = url.take("endpoint");
    s3.allow_http = url.take_bool("allow_http")?.unwrap_or(false);
    s3.access_key_id = url.take("access_key_id");
    s3.secret_access_key = url.take("secret_access_key");
    s3.session_token = url.take("session_token");
    let mut config = ObjectStoreConfig::new(s3).with_prefix(prefix);
    shared.apply(SharedFields::settings(&mut config.settings).with_timeouts(&mut config.timeouts));
    if let Some(n) = url.take_parsed::<usize>("concurrency")? {
        config.concurrency = n;
    }
    if let Some(n) = url.take_parsed::<usize>("retries")? {
        config.retries = n;
    }
    config.validate()?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_bucket_prefix_and_options() {
        let c = ObjectStoreConfig::from_url(
            "s3://bucket-1/a/b/?region=eu-west-1&endpoint=http://127.0.0.1:9000&allow_http=true&access_key_id=AK&secret_access_key=SK&session_token=ST&namespace=app&ttl=5m&timeout=3s&concurrency=4&retries=0",
        )
        .unwrap();
        assert_eq!((c.s3.bucket.as_str(), c.prefix.as_str()), ("bucket-1", "a/b"));
        assert_eq!(c.s3.region.as_deref(), Some("eu-west-1"));
        assert_eq!(c.s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(c.s3.allow_http);
        assert_eq!(
            (c.s3.access_key_id.as_deref(), c.s3.secret_access_key.as_deref(), c.s3.session_token.as_deref()),
            (Some("AK"), Some("SK"), Some("ST"))
        );
        assert_eq!(c.settings.namespace, "app");
        assert_eq!(c.settings.default_ttl, Some(Duration::from_secs(300)));
        assert_eq!(c.timeouts.operation, Duration::from_secs(3));
        assert_eq!((c.concurrency, c.retries), (4, 0));
        let shown = format!("{c:?}");
        assert!(!shown.contains("AK\"") && !shown.contains("SK") && !shown.contains("ST\""), "{shown}");
    }

    #[test]
    fn bad_urls_are_clear_config_errors_that_show_no_credentials() {
        let cases = [
            ("s3://", "names no valid bucket"),
            ("s3:///prefix", "names no valid bucket"),
            ("s3://AKIA:pw/se@cret@bucket/p", "credentials go in the options"),
            ("s3://bucket?colour=blue", "valid options: namespace"),
            ("s3://bucket?concurrency=0", "concurrency must be greater than zero"),
            ("s3://bucket?allow_http=maybe", "allow_http=maybe"),
            ("s3://bucket?timeout=0s", "timeout=0s"),
            ("s3://bucket/a//b", "invalid prefix"),
        ];
        crate::url::assert_config_errors(&cases, crate::backend_from_url);
        let err = crate::backend_from_url("s3://bucket?secret_access_key=TOPSECRET&colour=blue").unwrap_err();
        assert!(!err.to_string().contains("TOPSECRET"), "{err}");
    }
}
