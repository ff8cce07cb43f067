//! The circuit breaker: one state machine ([`Circuit`]), used by the [`Breaker`] layer around
//! any store and by the tiered stack for each of its remote layers.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::expiry::{Deadline, Expiry};
use crate::pattern::KeyPattern;
use crate::store::{Backend, BackendStats, Entry, KeyVisitor};
use crate::value::Value;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A simple circuit breaker for remote stores: after `failure_threshold` failures in a row the
/// store is bypassed for `cool_down`, then probed by one call.
///
/// Failures are errors about the store (unreachable, timed out, I/O...), not about one value
/// (undecodable, too large). In-process layers of a tiered stack never fail and have no breaker.
///
/// ```
/// use std::time::Duration;
/// let breaker = cachestack::BreakerConfig::new(5, Duration::from_secs(30));
/// assert_eq!(breaker.failure_threshold, 5);
/// assert_eq!(breaker, cachestack::BreakerConfig::default());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (at least 1).
    pub failure_threshold: u32,
    /// How long an open breaker bypasses the store before probing it.
    pub cool_down: Duration,
}

impl BreakerConfig {
    /// Opens after `failure_threshold` consecutive failures, for `cool_down`.
    pub fn new(failure_threshold: u32, cool_down: Duration) -> Self {
        BreakerConfig { failure_threshold: failure_threshold.max(1), cool_down }
    }
}

/// 5 consecutive failures open the breaker for 30 s.
impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig::new(5, Duration::from_secs(30))
    }
}

/// True for errors that say the store is in trouble (as opposed to one value being unusable).
pub fn is_store_failure(err: &Error) -> bool {
    !(err.is_invalid_value() || matches!(err, Error::ValueTooLarge { .. } | Error::Unsupported { .. }))
}

/// The breaker state machine of one store: closed; open after `failure_threshold` consecutive
/// store failures; after `cool_down`, half-open: one probe call is admitted, and its outcome
/// closes the breaker or opens it for another cool-down. Its clock is tokio's
/// ([`tokio::time::Instant`]), so tests can pause and advance it.
///
/// The one implementation: the [`Breaker`] layer and the tiered stack's per-layer bypass both
/// run their calls through [`Circuit::call`].
#[derive(Debug)]
pub(crate) struct Circuit {
    /// The store's name, for logs.
    name: String,
    config: BreakerConfig,
    state: Mutex<CircuitState>,
    /// Times the breaker opened (a trip, or a failed probe).
    trips: AtomicU64,
    /// Calls refused while open (or while a probe was out).
    bypassed: AtomicU64,
}

#[derive(Debug, Default)]
struct CircuitState {
    failures: u32,
    open_until: Option<tokio::time::Instant>,
    probing: bool,
}

/// Admission of one call through a breaker; a probe that is dropped unfinished (its future was
/// cancelled) lets the next call probe instead.
struct Permit<'a> {
    circuit: &'a Circuit,
    probe: bool,
    finished: bool,
}

impl Permit<'_> {
    fn finish(mut self, failed: bool) {
        self.finished = true;
        self.circuit.record(self.probe, failed);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.finished && self.probe {
            lock(&self.circuit.state).probing = false;
        }
    }
}

impl Circuit {
    pub(crate) fn new(name: impl Into<String>, config: BreakerConfig) -> Self {
        Circuit {
            name: name.into(),
            config,
            state: Mutex::new(CircuitState::default()),
            trips: AtomicU64::new(0),
            bypassed: AtomicU64::new(0),
        }
    }

    /// Runs `op` if the breaker admits it and records its outcome (a store failure counts
    /// against the store; any other outcome closes the breaker). `None`: refused, `op` not run,
    /// the call counted as bypassed.
    pub(crate) async fn call<T>(&self, op: impl Future<Output = Result<T>>) -> Option<Result<T>> {
        let Some(permit) = self.admit() else {
            self.bypassed.fetch_add(1, Relaxed);
            return None;
        };
        let result = op.await;
        permit.finish(matches!(&result, Err(err) if is_store_failure(err)));
        Some(result)
    }

    fn admit(&self) -> Option<Permit<'_>> {
        let mut state = lock(&self.state);
        let probe = match state.open_until {
            None => false,
            Some(until) if state.probing || tokio::time::Instant::now() < until => return None,
            Some(_) => {
                state.probing = true;
                true
            }
        };
        Some(Permit { circuit: self, probe, finished: false })
    }

    fn record(&self, probe: bool, failed: bool) {
        let mut state = lock(&self.state);
        if probe {
            state.probing = false;
        }
        if failed {
            state.failures = state.failures.saturating_add(1);
            if probe || state.failures >= self.config.failure_threshold {
                if state.open_until.is_none() {
                    tracing::warn!(backend = %self.name, failures = state.failures, cool_down = ?self.config.cool_down, "cachestack: breaker open after consecutive failures; the store is bypassed");
                }
                // A trip: closed -> open, or a failed probe. (A call admitted before the breaker
                // opened that fails late only extends the cool-down.)
                if probe || state.open_until.is_none() {
                    self.trips.fetch_add(1, Relaxed);
                }
                state.open_until = tokio::time::Instant::now().checked_add(self.config.cool_down);
            }
        } else {
            if state.open_until.is_some() {
                tracing::info!(backend = %self.name, "cachestack: the store answered again; breaker closed");
            }
            state.failures = 0;
            state.open_until = None;
        }
    }

    /// `closed`, `open` or `half-open` (cool-down over, the next call probes).
    pub(crate) fn describe(&self) -> &'static str {
        let state = lock(&self.state);
        match state.open_until {
            None => "closed",
            Some(until) if tokio::time::Instant::now() < until => "open",
            Some(_) => "half-open",
        }
    }

    /// Calls refused so far.
    pub(crate) fn bypassed(&self) -> u64 {
        self.bypassed.load(Relaxed)
    }

    /// `stats` with the breaker's details: `breaker` (its state), `breaker_trips` (times it
    /// opened) and `bypassed` (calls refused).
    pub(crate) fn with_details(&self, stats: BackendStats) -> BackendStats {
        stats
            .with_detail("breaker", self.describe())
            .with_detail("breaker_trips", self.trips.load(Relaxed))
            .with_detail("bypassed", self.bypassed())
    }
}

/// Wraps a store in a circuit breaker: after [`BreakerConfig::failure_threshold`] consecutive
/// store failures (see [`is_store_failure`]) every call fails fast with
/// [`Error::BackendUnavailable`] ("breaker open") without reaching the store; after
/// [`BreakerConfig::cool_down`] one call probes the store, and its outcome closes the breaker or
/// opens it for another cool-down.
///
/// In the order of the layers (see [the module](super)) it sits between
/// [`Timeout`](super::Timeout) (inside it, so a timed-out call counts as a failure) and
/// [`Silent`](super::Silent) (outside it, so in silent mode a refused call is absorbed like any
/// other failure). Its stats' `details` show `breaker`
/// (`closed`, `open` or `half-open`), `breaker_trips` (times it opened) and `bypassed` (calls
/// refused).
///
/// ```
/// use cachestack::layer::Breaker;
/// use cachestack::{Backend, BreakerConfig, NullBackend};
///
/// let store = Breaker::new(NullBackend::default(), BreakerConfig::default());
/// assert_eq!(store.state(), "closed");
/// assert_eq!(store.stats().details["breaker"], "closed");
/// ```
#[derive(Debug)]
pub struct Breaker<B> {
    inner: B,
    circuit: Circuit,
}

impl<B: Backend> Breaker<B> {
    /// Wraps `inner` in a breaker configured by `config`.
    pub fn new(inner: B, config: BreakerConfig) -> Self {
        let circuit = Circuit::new(inner.name(), config);
        Breaker { inner, circuit }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// The breaker's configuration.
    pub fn config(&self) -> BreakerConfig {
        self.circuit.config
    }

    /// `closed`, `open` or `half-open` (the cool-down is over and the next call probes).
    pub fn state(&self) -> &'static str {
        self.circuit.describe()
    }

    async fn guard<T>(&self, op: impl Future<Output = Result<T>>) -> Result<T> {
        match self.circuit.call(op).await {
            Some(result) => result,
            None => Err(Error::BackendUnavailable {
                backend: self.inner.name().to_owned(),
                source: "circuit breaker open after consecutive failures; the call was not sent".into(),
            }),
        }
    }
}

#[async_trait]
impl<B: Backend> Backend for Breaker<B> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        self.guard(self.inner.get(key)).await
    }
    async fn set(&self, key: &str, value: Value, expiry: Expiry) -> Result<()> {
        self.guard(self.inner.set(key, value, expiry)).await
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        self.guard(self.inner.delete(key)).await
    }
    async fn exists(&self, key: &str) -> Result<bool> {
        self.guard(self.inner.exists(key)).await
    }
    async fn clear(&self) -> Result<()> {
        self.guard(self.inner.clear()).await
    }
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        self.guard(self.inner.get_many(keys)).await
    }
    async fn set_many(&self, entries: &[(&str, Value)], expiry: Expiry) -> Result<()> {
        self.guard(self.inner.set_many(entries, expiry)).await
    }
    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.guard(self.inner.delete_many(keys)).await
    }
    async fn purge_expired(&self) -> Result<u64> {
        self.guard(self.inner.purge_expired()).await
    }
    async fn set_if_absent(&self, key: &str, value: Value, expiry: Expiry) -> Result<bool> {
        self.guard(self.inner.set_if_absent(key, value, expiry)).await
    }
    async fn incr(&self, key: &str, delta: i64, expiry: Expiry) -> Result<i64> {
        self.guard(self.inner.incr(key, delta, expiry)).await
    }
    async fn expire(&self, key: &str, expiry: Expiry) -> Result<bool> {
        self.guard(self.inner.expire(key, expiry)).await
    }
    async fn ttl(&self, key: &str) -> Result<Option<Option<Deadline>>> {
        self.guard(self.inner.ttl(key)).await
    }
    async fn keys_matching(&self, pattern: &KeyPattern, batch: usize, visit: &mut KeyVisitor<'_>) -> Result<()> {
        self.guard(self.inner.keys_matching(pattern, batch, visit)).await
    }
    async fn delete_matching(&self, pattern: &KeyPattern) -> Result<u64> {
        self.guard(self.inner.delete_matching(pattern)).await
    }
    fn stats(&self) -> BackendStats {
        self.circuit.with_details(self.inner.stats())
    }
    crate::store::forward_backend!(passive: |s| s.inner);
    // Not gated: a flush waits for what the store already accepted.
    async fn flush(&self) -> Result<()> {
        self.inner.flush().await
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
    use std::sync::Arc;
    use std::time::Duration;

    use async_trait::async_trait;

    use super::{Breaker, BreakerConfig};
    use crate::error::{Error, Result};
    use crate::expiry::Expiry;
    use crate::layer::Silent;
    use crate::store::{Backend, BackendStats, Entry};
    use crate::value::Value;

    /// A store that fails on command (as unreachable) and counts the calls that reach it.
    #[derive(Debug, Default)]
    struct Faulty {
        down: AtomicBool,
        calls: AtomicU64,
    }

    impl Faulty {
        fn enter(&self) -> Result<()> {
            self.calls.fetch_add(1, SeqCst);
            if self.down.load(SeqCst) {
                return Err(Error::BackendUnavailable { backend: "faulty".into(), source: "down".into() });
            }
            Ok(())
        }
        fn calls(&self) -> u64 {
            self.calls.load(SeqCst)
        }
    }

    #[async_trait]
    impl Backend for Faulty {
        fn name(&self) -> &str {
            "faulty"
        }
        async fn get(&self, _key: &str) -> Result<Option<Entry>> {
            self.enter().map(|()| None)
        }
        async fn set(&self, _key: &str, _value: Value, _expiry: Expiry) -> Result<()> {
            self.enter()
        }
        async fn delete(&self, _key: &str) -> Result<bool> {
            self.enter().map(|()| false)
        }
        async fn clear(&self) -> Result<()> {
            self.enter()
        }
        fn stats(&self) -> BackendStats {
            BackendStats { name: "faulty".into(), ..BackendStats::default() }
        }
    }

    const COOL_DOWN: Duration = Duration::from_secs(30);

    fn breaker(store: &Arc<Faulty>) -> Breaker<Arc<Faulty>> {
        Breaker::new(store.clone(), BreakerConfig::new(3, COOL_DOWN))
    }

    fn detail(stats: &BackendStats, name: &str) -> String {
        stats.details.get(name).cloned().unwrap_or_else(|| panic!("no detail {name} in {stats:?}"))
    }

    /// Makes `breaker` trip: three failed calls, each reaching the store.
    async fn trip(store: &Faulty, breaker: &Breaker<Arc<Faulty>>) {
        store.down.store(true, SeqCst);
        let before = store.calls();
        for _ in 0..3 {
            let err = breaker.get("k").await.unwrap_err();
            assert!(err.to_string().contains("down"), "{err}");
        }
        assert_eq!(store.calls(), before + 3);
    }

    #[tokio::test(start_paused = true)]
    async fn closed_passes_calls_and_a_success_resets_the_count() {
        let store = Arc::new(Faulty::default());
        let breaker = breaker(&store);
        store.down.store(true, SeqCst);
        for _ in 0..2 {
            assert!(breaker.get("k").await.is_err());
        }
        store.down.store(false, SeqCst);
        assert!(breaker.get("k").await.unwrap().is_none());
        store.down.store(true, SeqCst);
        for _ in 0..2 {
            assert!(breaker.get("k").await.is_err());
        }
        // 2 + 2 failures, never 3 in a row: still closed.
        assert_eq!(breaker.state(), "closed");
        assert_eq!(store.calls(), 5);
        let stats = breaker.stats();
        assert_eq!(detail(&stats, "breaker"), "closed");
        assert_eq!(detail(&stats, "breaker_trips"), "0");
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_trip_it_and_it_fails_fast_without_calling_the_store() {
        let store = Arc::new(Faulty::default());
        let breaker = breaker(&store);
        trip(&store, &breaker).await;
        assert_eq!(breaker.state(), "open");

        // Every operation is refused, fast, even with the store back up.
        store.down.store(false, SeqCst);
        let err = breaker.get("k").await.unwrap_err();
        assert!(matches!(&err, Error::BackendUnavailable { backend, .. } if backend == "faulty"), "{err:?}");
        assert!(err.to_string().contains("breaker open"), "{err}");
        assert!(breaker.set("k", Value::new(1u8), Expiry::Default).await.is_err());
        assert!(breaker.delete("k").await.is_err());
        assert!(breaker.clear().await.is_err());
        assert_eq!(store.calls(), 3, "an open breaker does not call the store");

        let stats = breaker.stats();
        assert_eq!(detail(&stats, "breaker"), "open");
        assert_eq!(detail(&stats, "breaker_trips"), "1");
        assert_eq!(detail(&stats, "bypassed"), "4");

        // Still open just before the cool-down ends.
        tokio::time::advance(COOL_DOWN - Duration::from_millis(1)).await;
        assert!(breaker.get("k").await.is_err());
        assert_eq!(store.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_cool_down_a_successful_probe_closes_it() {
        let store = Arc::new(Faulty::default());
        let breaker = breaker(&store);
        trip(&store, &breaker).await;
        store.down.store(false, SeqCst);
        tokio::time::advance(COOL_DOWN).await;
        assert_eq!(breaker.state(), "half-open");

        assert!(breaker.get("k").await.unwrap().is_none());
        assert_eq!(store.calls(), 4, "the probe reached the store");
        assert_eq!(breaker.state(), "closed");
        assert!(breaker.get("k").await.unwrap().is_none());
        assert_eq!(store.calls(), 5);
        assert_eq!(detail(&breaker.stats(), "breaker_trips"), "1");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_it_for_another_cool_down() {
        let store = Arc::new(Faulty::default());
        let breaker = breaker(&store);
        trip(&store, &breaker).await;
        tokio::time::advance(COOL_DOWN).await;

        // One probe, which fails: open again at once (no threshold for a probe).
        assert!(breaker.get("k").await.is_err());
        assert_eq!(store.calls(), 4);
        assert_eq!(breaker.state(), "open");
        assert!(breaker.get("k").await.unwrap_err().to_string().contains("breaker open"));
        assert_eq!(store.calls(), 4);
        assert_eq!(detail(&breaker.stats(), "breaker_trips"), "2");

        // The next cool-down counts from the failed probe.
        tokio::time::advance(COOL_DOWN - Duration::from_millis(1)).await;
        assert_eq!(breaker.state(), "open");
        tokio::time::advance(Duration::from_millis(1)).await;
        store.down.store(false, SeqCst);
        assert!(breaker.get("k").await.unwrap().is_none());
        assert_eq!((store.calls(), breaker.state()), (5, "closed"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_value_error_is_not_a_store_failure() {
        #[derive(Debug)]
        struct TooLarge;
        #[async_trait]
        impl Backend for TooLarge {
            fn name(&self) -> &str {
                "too-large"
            }
            async fn get(&self, _key: &str) -> Result<Option<Entry>> {
                Ok(None)
            }
            async fn set(&self, _key: &str, _value: Value, _expiry: Expiry) -> Result<()> {
                Err(Error::ValueTooLarge { size: 10, limit: 1 })
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
        let breaker = Breaker::new(TooLarge, BreakerConfig::new(1, COOL_DOWN));
        for _ in 0..3 {
            assert!(matches!(
                breaker.set("k", Value::new(1u8), Expiry::Default).await,
                Err(Error::ValueTooLarge { .. })
            ));
        }
        assert_eq!(breaker.state(), "closed");
    }

    #[tokio::test(start_paused = true)]
    async fn silent_over_breaker_absorbs_the_fast_failures_and_counts_them() {
        let store = Arc::new(Faulty::default());
        let layered = Silent::new(breaker(&store), true);
        store.down.store(true, SeqCst);
        for _ in 0..3 {
            assert!(layered.get("k").await.unwrap().is_none(), "a failure is a miss in silent mode");
        }
        assert_eq!(layered.inner().state(), "open");

        // Refused by the breaker, absorbed by silent mode: misses and no-ops, counted as errors.
        assert!(layered.get("k").await.unwrap().is_none());
        layered.set("k", Value::new(1u8), Expiry::Default).await.unwrap();
        assert!(!layered.delete("k").await.unwrap());
        assert_eq!(store.calls(), 3);

        let stats = layered.stats();
        assert_eq!(stats.errors, 6, "{stats:?}");
        assert_eq!(stats.misses, 4, "{stats:?}");
        assert_eq!(detail(&stats, "breaker"), "open");
        assert_eq!(detail(&stats, "breaker_trips"), "1");
        assert_eq!(detail(&stats, "bypassed"), "3");

        // Without silent mode the refusal reaches the caller.
        let loud = Silent::new(breaker(&store), false);
        for _ in 0..3 {
            assert!(loud.get("k").await.is_err());
        }
        assert!(loud.get("k").await.unwrap_err().to_string().contains("breaker open"));
        assert_eq!(loud.stats().errors, 4);
    }
}
