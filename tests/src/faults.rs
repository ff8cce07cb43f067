//! Backends that fail on request, for tests of how callers handle cache failures: [`Down`]
//! (always down), [`Flaky`] (reads and writes fail separately) and [`Faulty`] (a wrapper that
//! can be switched down, hold writes at a gate and widen race windows).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use cachestack::{async_trait, Backend, BackendStats, Entry, Error, Expiry, Result, Value};
use tokio::sync::{mpsc, Semaphore};

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

/// Wraps a backend: can be switched down (every call fails as unreachable), can hold `set` calls
/// at a gate (announcing each one first), can yield to the scheduler inside every call (to widen
/// race windows), and records the keys each `get_many` asked for.
#[derive(Debug)]
pub struct Faulty {
    pub inner: Arc<dyn Backend>,
    down: AtomicBool,
    /// Calls made to it (a gated `set` counts once it is let through).
    pub calls: AtomicU64,
    yields: u32,
    gate: Option<Gate>,
    /// The keys of each `get_many`.
    pub asked: Mutex<Vec<Vec<String>>>,
}

#[derive(Debug)]
struct Gate {
    entered: mpsc::UnboundedSender<String>,
    open: Semaphore,
}

impl Faulty {
    /// Up, without a gate, without yields.
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        Faulty {
            inner,
            down: AtomicBool::new(false),
            calls: AtomicU64::new(0),
            yields: 0,
            gate: None,
            asked: Mutex::new(Vec::new()),
        }
    }

    /// Every `set` first sends its key on the returned channel, then waits for a permit.
    pub fn gated(inner: Arc<dyn Backend>) -> (Self, mpsc::UnboundedReceiver<String>) {
        let (entered, rx) = mpsc::unbounded_channel();
        (Faulty { gate: Some(Gate { entered, open: Semaphore::new(0) }), ..Faulty::new(inner) }, rx)
    }

    /// Yields `yields` times inside every call.
    pub fn slow(inner: Arc<dyn Backend>, yields: u32) -> Self {
        Faulty { yields, ..Faulty::new(inner) }
    }

    /// Switches the wrapper down (every call fails as unreachable) or up.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, SeqCst);
    }

    /// Lets `n` held (or future) `set` calls through. Panics unless made by [`Faulty::gated`].
    pub fn release(&self, n: usize) {
        self.gate.as_ref().unwrap().open.add_permits(n);
    }

    /// Lets every held and future `set` through.
    pub fn open_gate(&self) {
        self.release(1 << 20);
    }

    async fn enter(&self) -> Result<()> {
        self.calls.fetch_add(1, SeqCst);
        for _ in 0..self.yields {
            tokio::task::yield_now().await;
        }
        if self.down.load(SeqCst) {
            return Err(Error::BackendUnavailable {
                backend: "faulty".into(),
                source: "switched off by the test".into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Backend for Faulty {
    fn name(&self) -> &str {
        "faulty"
    }
    fn default_ttl(&self) -> Option<std::time::Duration> {
        self.inner.default_ttl()
    }
    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        self.enter().await?;
        self.inner.get(key).await
    }
    async fn set(&self, key: &str, value: Value, ttl: Expiry) -> Result<()> {
        if let Some(gate) = &self.gate {
            let _ = gate.entered.send(key.to_string());
            gate.open.acquire().await.unwrap().forget();
        }
        self.enter().await?;
        self.inner.set(key, value, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        self.enter().await?;
        self.inner.delete(key).await
    }
    async fn exists(&self, key: &str) -> Result<bool> {
        self.enter().await?;
        self.inner.exists(key).await
    }
    async fn clear(&self) -> Result<()> {
        self.enter().await?;
        self.inner.clear().await
    }
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        self.asked.lock().unwrap().push(keys.iter().map(|k| k.to_string()).collect());
        self.enter().await?;
        self.inner.get_many(keys).await
    }
    async fn purge_expired(&self) -> Result<u64> {
        self.enter().await?;
        self.inner.purge_expired().await
    }
    fn stats(&self) -> BackendStats {
        self.inner.stats()
    }
}
