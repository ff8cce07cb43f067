//! Exit and blocking calls: queued write-back writes reach the lower layers on `Cache::flush`,
//! `Cache::close` and `CacheRegistry::shutdown`; a blocking call that deadlocks a current-thread
//! runtime is a clear error after a bound, not a hang.
//!
//! Tests wait on events (the gate of a held store, a channel), never on a sleep; a hang turns
//! into a failure after the hang guard.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use cachestack::{
    async_trait, Backend, BackendStats, Cache, CacheRegistry, Entry, MemoryBackend, Result, TieredCache, Value,
    WriteBackConfig,
};
use cachestack_tests::faults::Faulty;
use cachestack_tests::sync::{on_thread, within_guard, HANG_GUARD};

fn mem() -> Arc<MemoryBackend> {
    Arc::new(MemoryBackend::with_capacity(1000))
}

/// A write-back stack over memory and a lower layer that holds every write at a gate.
fn held_stack() -> (Cache, Arc<Faulty>, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (l2, entered) = Faulty::gated(mem());
    let l2 = Arc::new(l2);
    let stack = TieredCache::builder()
        .layer_arc(mem())
        .layer_arc(l2.clone())
        .write_back(WriteBackConfig::new(100))
        .build()
        .unwrap();
    (Cache::new(stack), l2, entered)
}

async fn below(l2: &Faulty, key: &str) -> Option<u64> {
    l2.inner.get(key).await.unwrap().map(|e| e.value.get::<u64>().unwrap())
}

/// Writes `keys` through `cache`, waits until they are all held at the gate of `l2`, starts
/// `finish` (a flush, a close, a shutdown), and only then opens the gate: once `finish` returns,
/// every write is in the lower layer.
async fn held_writes_land_when<F>(
    cache: &Cache,
    l2: &Arc<Faulty>,
    entered: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    finish: F,
) where
    F: std::future::Future<Output = Result<()>> + Send + 'static,
{
    const KEYS: u64 = 5;
    for i in 0..KEYS {
        cache.set(&format!("k{i}"), &i, None).await.unwrap();
    }
    for _ in 0..KEYS {
        within_guard(entered.recv()).await.unwrap();
    }
    let finishing = tokio::spawn(finish);
    tokio::task::yield_now().await;
    assert!(below(l2, "k0").await.is_none(), "held at the gate");
    l2.open_gate();
    within_guard(finishing).await.unwrap().unwrap();
    for i in 0..KEYS {
        assert_eq!(below(l2, &format!("k{i}")).await, Some(i), "k{i} not stored when the call returned");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_returns_once_the_queued_writes_are_stored() {
    let (cache, l2, mut entered) = held_stack();
    let flushing = cache.clone();
    held_writes_land_when(&cache, &l2, &mut entered, async move { flushing.flush().await }).await;
    // Still write-back after a flush.
    cache.set("later", &9u64, None).await.unwrap();
    within_guard(cache.flush()).await.unwrap();
    assert_eq!(below(&l2, "later").await, Some(9));
    assert_eq!(cache.stats().details["queue_enqueued"], "6");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_stores_the_queue_and_later_writes_go_through() {
    let (cache, l2, mut entered) = held_stack();
    let closing = cache.clone();
    held_writes_land_when(&cache, &l2, &mut entered, async move { closing.close().await }).await;
    cache.set("later", &9u64, None).await.unwrap();
    assert_eq!(below(&l2, "later").await, Some(9), "written through after close, nothing left to lose");
    assert_eq!(cache.stats().details["queue_enqueued"], "5");
    cache.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_shutdown_stores_every_caches_queued_writes() {
    let registry = Arc::new(CacheRegistry::new());
    let (named, named_l2, mut named_entered) = held_stack();
    let (default, default_l2, mut default_entered) = held_stack();
    registry.register("held", named.clone());
    registry.register("same-again", named.clone());
    registry.set_default(default.clone());

    default.set("d", &7u64, None).await.unwrap();
    within_guard(default_entered.recv()).await.unwrap();
    default_l2.open_gate();
    let shutting = registry.clone();
    held_writes_land_when(&named, &named_l2, &mut named_entered, async move { shutting.shutdown().await }).await;
    assert_eq!(below(&default_l2, "d").await, Some(7), "the default cache was closed too");

    // Synchronous twin, from a multi-thread runtime's thread.
    named.set("sync", &1u64, None).await.unwrap(); // written through: closed
    let sync = registry.clone();
    tokio::task::spawn_blocking(move || sync.shutdown_blocking()).await.unwrap().unwrap();
    assert_eq!(below(&named_l2, "sync").await, Some(1));
}

#[test]
fn the_blocking_twins_flush_and_close_from_a_plain_thread() {
    let (cache, l2, mut entered) = held_stack();
    cache.set_blocking("k", &1u64, None).unwrap();
    assert_eq!(entered.blocking_recv().as_deref(), Some("k"));
    l2.open_gate();
    cache.flush_blocking().unwrap();
    let inner = l2.clone();
    assert_eq!(cachestack::rt::block_on(async move { below(&inner, "k").await }).unwrap(), Some(1));
    cache.close_blocking().unwrap();
}

/// A store whose reads are answered by a task of the caller's runtime: blocking that runtime's
/// only thread would never let the answer come.
#[derive(Debug)]
struct AnsweredByTheCallersRuntime {
    answer: Mutex<Option<tokio::sync::oneshot::Receiver<u64>>>,
}

#[async_trait]
impl Backend for AnsweredByTheCallersRuntime {
    fn name(&self) -> &str {
        "answered-by-the-callers-runtime"
    }
    async fn get(&self, _key: &str) -> Result<Option<Entry>> {
        let answer = self.answer.lock().unwrap().take();
        Ok(match answer {
            Some(answer) => answer.await.ok().map(|v| Entry::new(Value::new(v), None)),
            None => None,
        })
    }
    async fn set(&self, _key: &str, _value: Value, _expiry: cachestack::Expiry) -> Result<()> {
        Ok(())
    }
    async fn delete(&self, _key: &str) -> Result<bool> {
        Ok(false)
    }
    async fn clear(&self) -> Result<()> {
        Ok(())
    }
    fn stats(&self) -> BackendStats {
        BackendStats::default()
    }
}

#[test]
fn a_blocking_call_that_deadlocks_a_current_thread_runtime_is_an_error_not_a_hang() {
    let outcome = on_thread(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let cache = Cache::new(AnsweredByTheCallersRuntime { answer: Mutex::new(Some(rx)) });
            tokio::spawn(async move {
                let _ = tx.send(1u64);
            });
            cache.get_blocking::<u64>("k").map_err(|e| e.to_string())
        })
    });
    let result = outcome.recv_timeout(HANG_GUARD).expect("HANG: the blocking call deadlocked its runtime");
    let err = result.unwrap_err();
    assert!(err.contains("current-thread") && err.contains("deadlock"), "{err}");
}
