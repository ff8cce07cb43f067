//! Test backends shared by the `macros_*` end-to-end tests. Fault backends (`Down`, `Flaky`),
//! waiting helpers and `AppError` live in the `cachestack_tests` library (`tests/src`).
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cachestack::{async_trait, Backend, BackendStats, Cache, CacheRegistry, Counters, Entry, Result, Value};

/// A store that can only be reached asynchronously (no `as_local`), like a network backend: every
/// operation yields to the executor once before answering. Records the TTL of every write.
#[derive(Debug, Default)]
pub struct AsyncOnly {
    map: Mutex<HashMap<String, Value>>,
    pub ttls: Mutex<Vec<(String, Option<Duration>)>>,
    pub gets: AtomicUsize,
    pub sets: AtomicUsize,
    counters: Counters,
}

impl AsyncOnly {
    pub fn contains(&self, key: &str) -> bool {
        self.map.lock().unwrap().contains_key(key)
    }
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.map.lock().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    }
    /// The TTL the last write of `key` was given: `Some(None)` for the store's default, else
    /// the time its deadline had left when the write arrived (a few microseconds after the
    /// caller fixed it).
    pub fn ttl_of(&self, key: &str) -> Option<Option<Duration>> {
        self.ttls.lock().unwrap().iter().rev().find(|(k, _)| k == key).map(|(_, t)| *t)
    }
}

/// Asserts that a recorded TTL is the expected one, give or take the moment between the caller
/// fixing the deadline and the store receiving it (deadlines have millisecond precision).
#[track_caller]
pub fn assert_ttl(recorded: Option<Option<Duration>>, expected: Option<Duration>) {
    match (recorded, expected) {
        (Some(Some(got)), Some(want)) => assert!(
            got <= want && got + Duration::from_millis(100) >= want,
            "TTL {got:?} is not the {want:?} the caller gave"
        ),
        (got, want) => assert_eq!(got, Some(want)),
    }
}

#[async_trait]
impl Backend for AsyncOnly {
    fn name(&self) -> &str {
        "async-only"
    }
    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        tokio::task::yield_now().await;
        self.gets.fetch_add(1, Ordering::SeqCst);
        let found = self.map.lock().unwrap().get(key).cloned();
        self.counters.record_lookup(found.is_some());
        Ok(found.map(|value| Entry::new(value, None)))
    }
    async fn set(&self, key: &str, value: Value, ttl: cachestack::Expiry) -> Result<()> {
        tokio::task::yield_now().await;
        self.sets.fetch_add(1, Ordering::SeqCst);
        let ttl = match ttl {
            cachestack::Expiry::At(deadline) => Some(deadline.remaining()),
            _ => None,
        };
        self.ttls.lock().unwrap().push((key.to_string(), ttl));
        self.map.lock().unwrap().insert(key.to_string(), value);
        Ok(())
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        tokio::task::yield_now().await;
        Ok(self.map.lock().unwrap().remove(key).is_some())
    }
    async fn clear(&self) -> Result<()> {
        self.map.lock().unwrap().clear();
        Ok(())
    }
    fn stats(&self) -> BackendStats {
        self.counters.snapshot("async-only")
    }
}

/// Registers `backend` in the global registry as `name` and returns it for inspection.
pub fn register<B: Backend>(name: &str, backend: B) -> Arc<B> {
    let backend = Arc::new(backend);
    CacheRegistry::global().register(name, Cache::from_arc(backend.clone()));
    backend
}

/// Registers a fresh memory cache as `name`.
pub fn register_memory(name: &str) -> Cache {
    let cache = Cache::new(cachestack::MemoryBackend::with_capacity(10_000));
    CacheRegistry::global().register(name, cache.clone());
    cache
}
