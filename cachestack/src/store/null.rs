//! A backend that stores nothing: turns caching off without touching code.

use async_trait::async_trait;

use std::sync::Arc;

use crate::error::Result;
use crate::expiry::Expiry;
use crate::store::{Backend, BackendStats, Counters, Entry, LocalBackend, LocalRead};
use crate::url::{CacheUrl, Scheme, SharedOptions};
use crate::value::Value;

/// Stores nothing; every read is a miss. Register it (or the URL `null://`) to disable caching
/// for a cache name without changing the annotated code.
///
/// ```
/// use cachestack::{Cache, NullBackend};
/// let cache = Cache::new(NullBackend::default());
/// cache.set_blocking("k", &1u8, None).unwrap();
/// assert_eq!(cache.get_blocking::<u8>("k").unwrap(), None);
/// assert_eq!(cache.stats().misses, 1);
/// ```
#[derive(Debug, Default)]
pub struct NullBackend {
    counters: Counters,
}

impl LocalRead for NullBackend {
    fn get_value(&self, _key: &str) -> Option<Value> {
        self.counters.record_lookup(false);
        None
    }
    fn get_entry(&self, key: &str) -> Option<Entry> {
        self.get_value(key).map(|value| Entry::new(value, None))
    }
}

impl LocalBackend for NullBackend {
    fn set_value(&self, _key: &str, _value: Value, _expiry: Expiry) {}
    fn remove(&self, _key: &str) -> bool {
        false
    }
}

#[async_trait]
impl Backend for NullBackend {
    fn name(&self) -> &str {
        "null"
    }
    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        Ok(self.get_entry(key))
    }
    async fn set(&self, _key: &str, _value: Value, _expiry: Expiry) -> Result<()> {
        Ok(())
    }
    async fn delete(&self, _key: &str) -> Result<bool> {
        Ok(false)
    }
    async fn clear(&self) -> Result<()> {
        Ok(())
    }
    fn stats(&self) -> BackendStats {
        let mut stats = self.counters.snapshot("null");
        stats.entries = Some(0);
        stats
    }
    fn as_local(&self) -> Option<&dyn LocalBackend> {
        Some(self)
    }
}

/// `null://`: stores nothing.
pub(crate) const SCHEME: Scheme =
    Scheme { names: &["null"], feature: "", shared: &[], options: &[], open: Some(open_url) };

fn open_url(_url: &mut CacheUrl, _shared: SharedOptions) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(NullBackend::default()))
}
