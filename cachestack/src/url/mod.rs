//! Cache URLs: parsing ([`CacheUrl`]), the options every cache shares (parsed here once for every
//! store, see [`SharedOptions`]), the shape of the scheme table to which each store contributes
//! its scheme(s) and options ([`Scheme`]), and the redaction of credentials ([`redact_url`]).
//!
//! This module depends on no store: each store module declares its [`Scheme`], `store::SCHEMES`
//! lists them, and [`crate::backend_from_url`] (in `connect.rs`) dispatches on it.

mod cache_url;
mod redact;
mod shared;

use std::sync::Arc;

pub(crate) use cache_url::CacheUrl;
#[allow(unused_imports)] // used by the stores that take credentials, when built
pub(crate) use redact::{encode_userinfo, split_userinfo};
pub use redact::{redact_url, ConnectionUrl};
#[allow(unused_imports)] // `SharedFields`: used by the stores built
pub(crate) use shared::{Shared, SharedFields, SharedOptions};

use crate::error::{Error, Result};
use crate::store::Backend;

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

/// For tests: a password made of the characters URLs reserve, and its pieces (none may be shown).
#[cfg(test)]
const HOSTILE_PASSWORD: &str = "PW1/PW2?PW3#PW4@PW5:PW6%2FPW7";
