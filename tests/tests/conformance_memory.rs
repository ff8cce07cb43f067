//! The conformance suite against the memory backend and against a backend defined right here,
//! as a user would write one: if a user's backend passes, it works anywhere a built-in one does.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use cachestack::layer::Layers;
use cachestack::{
    async_trait, Backend, BackendStats, Counters, Entry, MemoryBackend, MemoryConfig, Result, Value, ValueFormat,
};
use cachestack_tests::conformance::Harness;

/// The memory backend's harness on `engine`.
fn memory_harness(engine: cachestack::MemoryEngine) -> Harness {
    let mut h = Harness::new(move |_namespace| {
        Arc::new(MemoryBackend::new(MemoryConfig { max_entries: 100_000, engine, ..MemoryConfig::default() }).unwrap())
    });
    h.stores_bytes = false;
    h.ttl_unit = Duration::from_millis(20);
    h.max_value_bytes = 4 * 1024 * 1024;
    h
}

cachestack_tests::conformance_suite!(memory, || super::memory_harness(cachestack::MemoryEngine::QuickCache));

cachestack_tests::conformance_suite!(memory_moka, || super::memory_harness(cachestack::MemoryEngine::Moka));

/// A byte store written the way a user would: a map of sealed envelopes shared by namespaces.
#[derive(Debug)]
struct SharedBytes {
    namespace: String,
    store: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    format: ValueFormat,
    counters: Counters,
}

impl SharedBytes {
    fn full_key(&self, key: &str) -> String {
        format!("{}\u{1f}{key}", self.namespace)
    }

    fn plant(&self, key: &str, bytes: &[u8]) {
        self.store.lock().unwrap().insert(self.full_key(key), bytes.to_vec());
    }
}

#[async_trait]
impl Backend for SharedBytes {
    fn name(&self) -> &str {
        "shared-bytes"
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        let bytes = self.store.lock().unwrap().get(&self.full_key(key)).cloned();
        let Some(bytes) = bytes else {
            self.counters.record_lookup(false);
            return Ok(None);
        };
        match self.format.open(key, &bytes) {
            Ok((value, expires)) => {
                let now = SystemTime::now();
                if expires.is_some_and(|t| t <= now) {
                    self.counters.record_lookup(false);
                    return Ok(None);
                }
                self.counters.record_lookup(true);
                Ok(Some(Entry::new(value, expires.map(cachestack::Deadline::at))))
            }
            Err(err) => {
                self.counters.record_invalid("shared-bytes", key, &err);
                self.counters.record_lookup(false);
                Ok(None)
            }
        }
    }

    async fn set(&self, key: &str, value: Value, expiry: cachestack::Expiry) -> Result<()> {
        let expires = expiry.resolve(None).map(|d| d.time());
        let bytes = self.format.seal(key, &value, expires)?;
        self.counters.record_write();
        self.store.lock().unwrap().insert(self.full_key(key), bytes);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.counters.record_delete();
        Ok(self.store.lock().unwrap().remove(&self.full_key(key)).is_some())
    }

    async fn clear(&self) -> Result<()> {
        let prefix = self.full_key("");
        self.store.lock().unwrap().retain(|k, _| !k.starts_with(&prefix));
        Ok(())
    }

    fn stats(&self) -> BackendStats {
        self.counters.snapshot("shared-bytes")
    }
}

cachestack_tests::conformance_suite!(user_defined_byte_store, || {
    let store: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::new(Mutex::new(HashMap::new()));
    let open = {
        let store = store.clone();
        move |namespace: &str| SharedBytes {
            namespace: namespace.to_string(),
            store: store.clone(),
            format: ValueFormat::default(),
            counters: Counters::default(),
        }
    };
    let plant_with = open.clone();
    let mut h = Harness::new(move |namespace| Arc::new(open(namespace)));
    h.raw_writer =
        Some(Arc::new(move |namespace: &str, key: &str, bytes: &[u8]| plant_with(namespace).plant(key, bytes)));
    // The same store with its medium gone, behind the silent layer a built-in store gets.
    h.unreachable_silent = Some(Arc::new(|_namespace: &str| Layers::new().silent(true).wrap(Gone)));
    // A store that implements only the required methods: the defaults answer Unsupported for
    // what cannot be emulated correctly, and emulate the rest (ttl, delete_many).
    h.unsupported = vec!["set_if_absent", "incr", "expire", "keys_matching", "delete_matching"];
    h
});

/// A user-written store whose medium is gone: every operation fails.
#[derive(Debug)]
struct Gone;

#[async_trait]
impl Backend for Gone {
    fn name(&self) -> &str {
        "gone"
    }
    async fn get(&self, _key: &str) -> Result<Option<Entry>> {
        Err(gone())
    }
    async fn set(&self, _key: &str, _value: Value, _expiry: cachestack::Expiry) -> Result<()> {
        Err(gone())
    }
    async fn delete(&self, _key: &str) -> Result<bool> {
        Err(gone())
    }
    async fn clear(&self) -> Result<()> {
        Err(gone())
    }
    async fn get_many(&self, _keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        Err(gone())
    }
    fn stats(&self) -> BackendStats {
        Counters::default().snapshot("gone")
    }
}

fn gone() -> cachestack::Error {
    cachestack::Error::BackendUnavailable { backend: "gone".into(), source: "the medium is gone".into() }
}
