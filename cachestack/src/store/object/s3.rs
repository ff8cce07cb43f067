//! The S3 client of an [`ObjectStoreConfig`]: object_store's `AmazonS3`, its HTTP on reqwest with
//! rustls over ring (no other TLS or crypto library).

use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use super::config::ObjectStoreConfig;
use crate::error::{Error, Result};

/// The client for `config.s3`: the standard AWS environment variables first, the options set in
/// `config` over them. Sends nothing.
pub(super) fn build(config: &ObjectStoreConfig) -> Result<Arc<dyn ObjectStore>> {
    install_tls_provider();
    let s3 = &config.s3;
    let allow_http = s3.allow_http || std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    let client = ClientOptions::new()
        .with_timeout(config.timeouts.operation)
        .with_connect_timeout(config.timeouts.connect)
        .with_allow_http(allow_http);
    let retry = RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: config.retries,
        retry_timeout: config.timeouts.operation,
    };
    let mut builder =
        AmazonS3Builder::from_env().with_bucket_name(&s3.bucket).with_client_options(client).with_retry(retry);
    let set = |builder: AmazonS3Builder, value: &Option<String>, f: fn(AmazonS3Builder, String) -> AmazonS3Builder| {
        match value {
            Some(value) => f(builder, value.clone()),
            None => builder,
        }
    };
    builder = set(builder, &s3.region, |b, v| b.with_region(v));
    builder = set(builder, &s3.access_key_id, |b, v| b.with_access_key_id(v));
    builder = set(builder, &s3.secret_access_key, |b, v| b.with_secret_access_key(v));
    builder = set(builder, &s3.session_token, |b, v| b.with_token(v));
    if let Some(endpoint) = &s3.endpoint {
        builder = builder.with_endpoint(endpoint).with_virtual_hosted_style_request(false);
    }
    let store = builder.build().map_err(|err| {
        // object_store's configuration errors name options, never their values.
        Error::config(format!("object-store: cannot set up S3 for bucket `{}`: {err}", s3.bucket))
    })?;
    Ok(Arc::new(store))
}

/// reqwest's TLS (rustls) needs a process-wide crypto provider: ring, unless the application
/// installed one.
fn install_tls_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: a provider is installed either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
