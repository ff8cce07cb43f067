//! [`AtomicOps`]: a store's native atomic and pattern operations, written once per store next to
//! its plain I/O and reached through [`Backend`](crate::Backend)'s methods of the same names.

use async_trait::async_trait;

use super::KeyVisitor;
use crate::error::Result;
use crate::expiry::Expiry;
use crate::pattern::KeyPattern;
use crate::value::Value;

/// A store's native atomic and pattern operations: one round trip (or one statement, or one
/// compare-and-set loop) each, on the store's own primitives.
///
/// A store that has them implements this trait and returns itself from
/// [`Backend::atomic`](crate::Backend::atomic); the [`Backend`](crate::Backend) methods of the
/// same names then call them by default. A store that cannot do one of them answers
/// [`crate::Error::Unsupported`] from it, never an emulation that could give a wrong answer.
/// Layers (silent mode, timeouts, breakers) wrap the `Backend` methods, so they apply to these
/// operations as to every other.
///
/// The contract of each method is the one of the `Backend` method of the same name.
///
/// # Example
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use cachestack::{async_trait, AtomicOps, Backend, BackendStats, Counters, Entry, Error, Expiry, KeyPattern,
///     KeyVisitor, Result, Value};
///
/// #[derive(Debug, Default)]
/// struct MapBackend { map: Mutex<HashMap<String, Entry>>, counters: Counters }
///
/// #[async_trait]
/// impl Backend for MapBackend {
///     fn name(&self) -> &str { "map" }
///     async fn get(&self, key: &str) -> Result<Option<Entry>> {
///         Ok(self.map.lock().unwrap().get(key).cloned().and_then(Entry::live))
///     }
///     async fn set(&self, key: &str, value: Value, expiry: Expiry) -> Result<()> {
///         self.map.lock().unwrap().insert(key.to_string(), Entry::new(value, expiry.resolve(None)));
///         Ok(())
///     }
///     async fn delete(&self, key: &str) -> Result<bool> {
///         Ok(self.map.lock().unwrap().remove(key).is_some())
///     }
///     async fn clear(&self) -> Result<()> {
///         self.map.lock().unwrap().clear();
///         Ok(())
///     }
///     fn stats(&self) -> BackendStats { self.counters.snapshot("map") }
///     fn atomic(&self) -> Option<&dyn AtomicOps> { Some(self) }
/// }
///
/// #[async_trait]
/// impl AtomicOps for MapBackend {
///     async fn set_if_absent(&self, key: &str, value: Value, expiry: Expiry) -> Result<bool> {
///         let mut map = self.map.lock().unwrap();
///         if map.get(key).cloned().and_then(Entry::live).is_some() {
///             return Ok(false);
///         }
///         map.insert(key.to_string(), Entry::new(value, expiry.resolve(None)));
///         Ok(true)
///     }
///     async fn incr(&self, _key: &str, _delta: i64, _expiry: Expiry) -> Result<i64> {
///         Err(Error::unsupported("incr", "map"))
///     }
///     async fn expire(&self, _key: &str, _expiry: Expiry) -> Result<bool> {
///         Err(Error::unsupported("expire", "map"))
///     }
///     async fn keys_matching(&self, pattern: &KeyPattern, _batch: usize, visit: &mut KeyVisitor<'_>) -> Result<()> {
///         let keys = self.map.lock().unwrap().keys().filter(|k| pattern.matches(k)).cloned().collect();
///         visit(keys);
///         Ok(())
///     }
///     async fn delete_matching(&self, pattern: &KeyPattern) -> Result<u64> {
///         let mut map = self.map.lock().unwrap();
///         let before = map.len();
///         map.retain(|k, _| !pattern.matches(k));
///         Ok((before - map.len()) as u64)
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let cache = cachestack::Cache::new(MapBackend::default());
/// assert!(cache.set_if_absent("k", &1u8, None).await.unwrap());
/// assert!(!cache.set_if_absent("k", &2u8, None).await.unwrap());
/// assert_eq!(cache.get::<u8>("k").await.unwrap(), Some(1));
/// assert!(matches!(cache.incr("n", 1).await, Err(Error::Unsupported { .. })));
/// # });
/// ```
#[async_trait]
pub trait AtomicOps: Send + Sync {
    /// See [`Backend::set_if_absent`](crate::Backend::set_if_absent).
    async fn set_if_absent(&self, key: &str, value: Value, expiry: Expiry) -> Result<bool>;

    /// See [`Backend::incr`](crate::Backend::incr).
    async fn incr(&self, key: &str, delta: i64, expiry: Expiry) -> Result<i64>;

    /// See [`Backend::expire`](crate::Backend::expire).
    async fn expire(&self, key: &str, expiry: Expiry) -> Result<bool>;

    /// See [`Backend::keys_matching`](crate::Backend::keys_matching).
    async fn keys_matching(&self, pattern: &KeyPattern, batch: usize, visit: &mut KeyVisitor<'_>) -> Result<()>;

    /// See [`Backend::delete_matching`](crate::Backend::delete_matching).
    async fn delete_matching(&self, pattern: &KeyPattern) -> Result<u64>;
}
