//! The options every cache URL may share (`namespace`, `name`, `ttl`, `silent`, the timeouts and
//! the value format), parsed once for every store, and the configuration fields they go into.

// Each part serves the stores that take it: with some stores left out, some go unused.
#![cfg_attr(not(all(feature = "file", feature = "redis")), allow(dead_code))]

use std::time::Duration;

use super::CacheUrl;
use crate::error::Result;
#[cfg(any(
    feature = "file",
    feature = "redis",
    feature = "postgres",
    feature = "memcached",
    feature = "object-store"
))]
use crate::store::{ServerTimeouts, StoreSettings};
use crate::value::envelope::ValueFormat;

/// The options that mean the same thing for every store that takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    pub const NETWORK: &'static [Shared] =
        &[Shared::Namespace, Shared::Ttl, Shared::Silent, Shared::Timeouts, Shared::Name, Shared::Format];

    pub(super) fn names(self) -> &'static [&'static str] {
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
    pub fn with_timeouts(mut self, timeouts: &'a mut ServerTimeouts) -> Self {
        self.timeout = Some(&mut timeouts.operation);
        self.connect_timeout = Some(&mut timeouts.connect);
        self
    }
}

/// Options every byte store accepts.
const FORMAT_OPTIONS: &[&str] =
    &["codec", "compression", "compress_min_bytes", "secret", "secret_env", "max_value_bytes"];
