//! Backends that fail on request, for tests of how callers handle cache failures.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;

use cachestack::{async_trait, Backend, BackendStats, Entry, Error, Expiry, Result, Value};

fn unavailable(backend: &str) -> Error {
    Error::BackendUnavailable { backend: backend.into(), source: "connection refused".into() }
}

/// A store that is down: every operation fails with [`Error::BackendUnavailable`]. Counts the
/// calls it refused.
#[derive(Debug, Default)]
pub struct Down {
    pub calls: AtomicUsize,
}

impl Down {
    fn fail(&self) -> Error {
        self.calls.fetch_add(1, SeqCst);
        unavailable("down")
    }
}

#[async_trait]
impl Backend for Down {
    fn name(&self) -> &str {
        "down"
    }
    async fn get(&self, _key: &str) -> Result<Option<Entry>> {
        Err(self.fail())
    }
    async fn set(&self, _key: &str, _value: Value, _ttl: Expiry) -> Result<()> {
        Err(self.fail())
    }
    async fn delete(&self, _key: &str) -> Result<bool> {
        Err(self.fail())
    }
    async fn clear(&self) -> Result<()> {
        Err(self.fail())
    }
    fn stats(&self) -> BackendStats {
        BackendStats::default()
    }
}

/// An async-only store (every read and write yields once) whose reads and writes can be made to
/// fail separately, with `fail_get` and `fail_set`.
#[derive(Debug, Default)]
pub struct Flaky {
    pub map: Mutex<HashMap<String, Value>>,
    pub fail_get: AtomicBool,
    pub fail_set: AtomicBool,
}

#[async_trait]
impl Backend for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }
    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        tokio::task::yield_now().await;
        if self.fail_get.load(SeqCst) {
            return Err(unavailable("flaky"));
        }
        Ok(self.map.lock().unwrap().get(key).cloned().map(|value| Entry::new(value, None)))
    }
    async fn set(&self, key: &str, value: Value, _ttl: Expiry) -> Result<()> {
        tokio::task::yield_now().await;
        if self.fail_set.load(SeqCst) {
            return Err(unavailable("flaky"));
        }
        self.map.lock().unwrap().insert(key.to_string(), value);
        Ok(())
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        Ok(self.map.lock().unwrap().remove(key).is_some())
    }
    async fn clear(&self) -> Result<()> {
        self.map.lock().unwrap().clear();
        Ok(())
    }
    fn stats(&self) -> BackendStats {
        BackendStats::default()
    }
}
