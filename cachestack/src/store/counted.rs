//! The plain reads, writes and removals of a byte store, counted in one place.
//!
//! A store implements [`KeyIo`] (its I/O for one key, for a batch and for the namespace,
//! uncounted but for writes) and declares its [`Backend`](crate::Backend) with
//! `counted_backend!`, which adds `name`, `get`, `set`, `delete`, their batch forms, `clear`,
//! `default_ttl` and `signing` around the store's own methods (and [`StoreParts`] from the
//! fields it is given):
//!
//! - a read counts one lookup per key (a hit when it found a live entry), after it answered;
//! - a removal counts one delete per key, before it runs (a failed delete was still asked for);
//! - a write is counted by the store itself, once stored, since a batch may store a part of its
//!   entries before it fails;
//! - an empty batch does no I/O.
//!
//! Everything is static dispatch: the generated methods call the store's own, as a hand-written
//! `Backend` impl would.

use std::future::Future;

use super::{Counters, Entry, StoreSettings};
use crate::error::Result;
use crate::expiry::Expiry;
use crate::value::Value;

/// What the counted operations need of a store besides its I/O (`counted_backend!` implements
/// it from the fields it is given).
pub(crate) trait StoreParts {
    /// The counters its stats report.
    fn counters(&self) -> &Counters;

    /// Its settings: name, default TTL and value format.
    fn settings(&self) -> &StoreSettings;
}

/// A byte store's I/O for the plain operations (see the [module](self)).
pub(crate) trait KeyIo: StoreParts + Send + Sync {
    /// The live entry under `key`.
    fn get_one(&self, key: &str) -> impl Future<Output = Result<Option<Entry>>> + Send;

    /// Stores `value` under `key` until the deadline `expiry` resolves to; counts the write.
    fn set_one(&self, key: &str, value: &Value, expiry: Expiry) -> impl Future<Output = Result<()>> + Send;

    /// Removes `key`; true if it held a live entry.
    fn delete_one(&self, key: &str) -> impl Future<Output = Result<bool>> + Send;

    /// The live entries under `keys` (not empty), one slot per key.
    fn get_each(&self, keys: &[&str]) -> impl Future<Output = Result<Vec<Option<Entry>>>> + Send;

    /// Stores `entries` (not empty) with one expiry; counts what it stored.
    fn set_each(&self, entries: &[(&str, Value)], expiry: Expiry) -> impl Future<Output = Result<()>> + Send;

    /// Removes `keys` (not empty); how many held a live entry.
    fn delete_each(&self, keys: &[&str]) -> impl Future<Output = Result<u64>> + Send;

    /// Removes every entry of the namespace.
    fn clear_all(&self) -> impl Future<Output = Result<()>> + Send;
}

/// `Backend::get`.
pub(crate) async fn get<S: KeyIo>(store: &S, key: &str) -> Result<Option<Entry>> {
    let found = store.get_one(key).await?;
    store.counters().record_lookup(found.is_some());
    Ok(found)
}

/// `Backend::delete`.
pub(crate) async fn delete<S: KeyIo>(store: &S, key: &str) -> Result<bool> {
    store.counters().record_delete();
    store.delete_one(key).await
}

/// `Backend::get_many`.
pub(crate) async fn get_many<S: KeyIo>(store: &S, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let found = store.get_each(keys).await?;
    let hits = found.iter().filter(|e| e.is_some()).count();
    store.counters().record_lookups(found.len() as u64, hits as u64);
    Ok(found)
}

/// `Backend::set_many`.
pub(crate) async fn set_many<S: KeyIo>(store: &S, entries: &[(&str, Value)], expiry: Expiry) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    store.set_each(entries, expiry).await
}

/// `Backend::delete_many`.
pub(crate) async fn delete_many<S: KeyIo>(store: &S, keys: &[&str]) -> Result<u64> {
    if keys.is_empty() {
        return Ok(0);
    }
    store.counters().record_deletes(keys.len() as u64);
    store.delete_each(keys).await
}

/// `counted_backend! { impl Backend for Store where counters = self.counters, settings =
/// self.config.settings { ...the store's other methods... } }`: the store's [`StoreParts`]
/// (those fields), and its `Backend` impl with the plain operations of its [`KeyIo`] counted
/// (see the [module](self)), then the methods given.
macro_rules! counted_backend {
    (
        impl Backend for $ty:ty where counters = self.$counters:ident, settings = self.$($settings:ident).+ {
            $($rest:tt)*
        }
    ) => {
        impl $crate::store::counted::StoreParts for $ty {
            fn counters(&self) -> &$crate::Counters {
                &self.$counters
            }
            fn settings(&self) -> &$crate::StoreSettings {
                &self.$($settings).+
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::Backend for $ty {
            fn name(&self) -> &str {
                &$crate::store::counted::StoreParts::settings(self).name
            }
            async fn get(&self, key: &str) -> $crate::Result<Option<$crate::store::Entry>> {
                $crate::store::counted::get(self, key).await
            }
            async fn set(&self, key: &str, value: $crate::Value, expiry: $crate::Expiry) -> $crate::Result<()> {
                $crate::store::KeyIo::set_one(self, key, &value, expiry).await
            }
            async fn delete(&self, key: &str) -> $crate::Result<bool> {
                $crate::store::counted::delete(self, key).await
            }
            async fn get_many(&self, keys: &[&str]) -> $crate::Result<Vec<Option<$crate::store::Entry>>> {
                $crate::store::counted::get_many(self, keys).await
            }
            async fn set_many(&self, entries: &[(&str, $crate::Value)], expiry: $crate::Expiry) -> $crate::Result<()> {
                $crate::store::counted::set_many(self, entries, expiry).await
            }
            async fn delete_many(&self, keys: &[&str]) -> $crate::Result<u64> {
                $crate::store::counted::delete_many(self, keys).await
            }
            async fn clear(&self) -> $crate::Result<()> {
                $crate::store::KeyIo::clear_all(self).await
            }
            fn default_ttl(&self) -> Option<std::time::Duration> {
                $crate::store::counted::StoreParts::settings(self).default_ttl
            }
            fn signing(&self) -> $crate::store::Signing {
                $crate::store::Signing::of(&$crate::store::counted::StoreParts::settings(self).format)
            }
            $($rest)*
        }
    };
}
pub(crate) use counted_backend;
