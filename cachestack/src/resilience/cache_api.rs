//! The [`Cache`] methods of the resilience engine: `get_or_compute` and its blocking twin.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::distributed::check;
use super::engine::{read, read_local, Answer, Call, Failure, Hooks};
use super::state::Decision;
use super::{CallStatus, Clock, ComputeOptions, ComputeState, ComputeStats, Stamped, Timeout};
use crate::cache::Cache;
use crate::error::Error;
use crate::expiry::Deadline;
use crate::value::{Cacheable, Value};

impl<T: Cacheable> Hooks<T> for Cache {
    fn encode(&self, value: &T, fresh_until: Option<Deadline>) -> Option<Value> {
        Some(Stamped::encode(value, fresh_until))
    }

    fn decode(&self, key: &str, value: &Value) -> Option<(T, Option<Deadline>)> {
        Stamped::decode(self, key, value)
    }
}

/// The call's result for its caller: a computation's panic goes on in the caller, as if the
/// caller had run it.
fn finish<T, E: From<Timeout>>(answer: Answer<T, E>) -> Result<(T, CallStatus), E> {
    match answer {
        Ok(served) => Ok(served),
        Err(Failure::Err(err)) => Err(err),
        Err(Failure::Timeout(timeout)) => Err(E::from(timeout)),
        Err(Failure::Panic(payload)) => std::panic::resume_unwind(payload),
    }
}

/// A computation's future, boxed.
pub(crate) type BoxedComputation<T, E> = Pin<Box<dyn Future<Output = Result<T, Failure<E>>> + Send>>;

/// A synchronous computation as the engine runs it: on the blocking pool of cachestack's runtime
/// (a panic there is the computation's failure).
pub(crate) fn on_blocking_pool<T, E, F>(compute: F) -> impl FnOnce() -> BoxedComputation<T, E> + Send + 'static
where
    T: Send + 'static,
    E: Send + 'static,
    F: FnOnce() -> Result<T, Failure<E>> + Send + 'static,
{
    move || {
        Box::pin(async move {
            match tokio::task::spawn_blocking(compute).await {
                Ok(result) => result,
                Err(err) if err.is_panic() => Err(Failure::Panic(err.into_panic())),
                Err(err) => Err(runtime_failure(err)),
            }
        })
    }
}

/// A failure of cachestack's runtime itself (it cannot start, or a call task was lost), which
/// leaves no computation result to give: reported to the caller as a panic with this message.
pub(crate) fn runtime_failure<E>(err: impl std::fmt::Display) -> Failure<E> {
    Failure::Panic(Box::new(format!("cachestack: get_or_compute could not run on cachestack's runtime: {err}")))
}

impl Cache {
    /// This cache with `clock` as the time `get_or_compute` decides freshness by (and stamps
    /// fresh deadlines with). For tests: a [`ManualClock`](crate::ManualClock) moves TTLs
    /// forward without sleeping. Set it when building the cache: the returned cache has its own
    /// single flight and counters, not shared with `self`'s other clones.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use cachestack::{Cache, ManualClock, MemoryBackend};
    ///
    /// let clock = Arc::new(ManualClock::new());
    /// let cache = Cache::new(MemoryBackend::with_capacity(100)).with_clock(clock.clone());
    /// ```
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.compute = Arc::new(ComputeState::new(clock.clone()));
        self.tags =
            Arc::new(crate::cache::CacheTags { times: self.tags.times.clone(), tier: self.tags.tier.clone(), clock });
        self
    }

    /// The clock `get_or_compute` decides freshness by.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        self.compute.clock()
    }

    /// Reads `key`, or computes it with `compute` and stores the value, with the resilience
    /// `options`; returns the value and how it was served ([`CallStatus`]).
    ///
    /// - Fresh value: `Hit`. After `refresh_ahead` of its TTL, the hit also starts one background
    ///   refresh (single flight).
    /// - Within `stale_while_revalidate` after the TTL: `Stale` at once, and one background
    ///   refresh replaces the value.
    /// - Otherwise `compute` runs (`Miss`) under single flight: concurrent callers of the key
    ///   wait for it (`Waited`), each at most `lock_timeout`, after which it computes itself.
    /// - When `compute` fails (returns `Err` or panics) and a value within `stale_if_error` after
    ///   its TTL exists: `Stale`, and for `stale_throttle` callers get it without computing.
    ///   Without a stale value, the error is returned (a panic goes on in the caller).
    /// - `timeout` (soft): with a stale value, the caller gets it once `compute` has run this
    ///   long; `compute` goes on in the background and stores its value. `hard_timeout`: the
    ///   caller gets `Err(Timeout.into())`, and `compute` likewise goes on.
    ///
    /// `compute` runs as a task on cachestack's runtime (so it must be `Send + 'static`): its
    /// value is stored even when its caller stopped waiting, and a failure nobody waits for is
    /// counted ([`Cache::compute_stats`]) and logged. Cache errors never fail the call: they are
    /// counted and logged, and the call goes on as a miss. Timeouts run on tokio's timer of the
    /// calling runtime (which must have time enabled, as `#[tokio::main]` does); called outside
    /// any tokio runtime, the whole call runs on cachestack's runtime.
    ///
    /// Single flight across processes ([`LockMode::Distributed`](crate::LockMode::Distributed)
    /// in `options`): of all the processes sharing the store, one computes a missing key and
    /// the others wait for its value (see the README's *Distributed single flight*). The store
    /// must have a lock ([`Backend::locks`](crate::Backend::locks): Redis, PostgreSQL,
    /// Memcached, or a stack whose lowest layer is one); with any other, a call that must
    /// compute fails with [`Error::Config`] (converted into `E`), never computes without the
    /// lock it was asked for.
    ///
    /// The error type receives hard timeouts (`From<Timeout>`) and configuration errors
    /// (`From<cachestack::Error>`); `cachestack::Error` and `Box<dyn Error>` have both.
    ///
    /// The key holds the value with its fresh deadline (a small wrapper), so read it with
    /// `get_or_compute`, not [`Cache::get`]; the store keeps each entry for its TTL plus the
    /// longest stale window.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cachestack::{Cache, CallStatus, ComputeOptions, MemoryBackend};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache = Cache::new(MemoryBackend::with_capacity(1_000));
    /// let options = ComputeOptions::builder()
    ///     .ttl(Duration::from_secs(60))
    ///     .stale_if_error(Duration::from_secs(3600))
    ///     .build()?;
    ///
    /// let (user, status) = cache
    ///     .get_or_compute("user:1", &options, || async { Ok::<_, cachestack::Error>("Ada".to_string()) })
    ///     .await?;
    /// assert_eq!((user.as_str(), status), ("Ada", CallStatus::Miss));
    ///
    /// // Fresh in the cache: the computation does not run.
    /// let (user, status) = cache
    ///     .get_or_compute("user:1", &options, || async { Ok::<String, cachestack::Error>(unreachable!()) })
    ///     .await?;
    /// assert_eq!((user.as_str(), status), ("Ada", CallStatus::Hit));
    /// # Ok::<(), cachestack::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn get_or_compute<T, E, F, Fut>(
        &self,
        key: &str,
        options: &ComputeOptions,
        compute: F,
    ) -> Result<(T, CallStatus), E>
    where
        T: Cacheable,
        E: From<Timeout> + From<Error> + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let compute = move || async move { compute().await.map_err(Failure::Err) };
        if tokio::runtime::Handle::try_current().is_err() {
            // Another executor: run the call where tokio's timer is.
            check(&**self.backend(), options)?;
            let call = self.call(key, options);
            let answer = match crate::rt::handle() {
                Ok(runtime) => runtime.spawn(call.run(compute)).await.unwrap_or_else(|err| Err(runtime_failure(err))),
                Err(err) => Err(runtime_failure(err)),
            };
            return finish(answer);
        }
        let seen = self.compute.flights_ended();
        let read = read(self.backend(), &self.tags, key).await;
        let answer = match self.compute.decide::<T>(self, key, options, read) {
            Decision::Answer { value, status, refresh } => {
                Ok(self.answer_now(key, options, seen, (value, status), refresh, compute))
            }
            Decision::Compute { fallback } => {
                check(&**self.backend(), options)?;
                self.call(key, options).compute(seen, fallback, compute).await
            }
        };
        finish(answer)
    }

    /// [`Cache::get_or_compute`] for synchronous code (any thread, inside or outside a tokio
    /// runtime) and a synchronous `compute`.
    ///
    /// A fresh value in an in-process store (or a stack's in-process front) is answered on the
    /// calling thread; everything else runs on cachestack's runtime while the caller blocks:
    /// `compute` runs on its blocking pool, background refreshes on its workers, and timeouts on
    /// its timer.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cachestack::{Cache, CallStatus, ComputeOptions, MemoryBackend};
    ///
    /// let cache = Cache::new(MemoryBackend::with_capacity(1_000));
    /// let options = ComputeOptions::builder().ttl(Duration::from_secs(60)).build()?;
    /// let (n, status) = cache.get_or_compute_blocking("n", &options, || Ok::<_, cachestack::Error>(42u32))?;
    /// assert_eq!((n, status), (42, CallStatus::Miss));
    /// let (n, status) = cache.get_or_compute_blocking("n", &options, || Ok::<_, cachestack::Error>(0u32))?;
    /// assert_eq!((n, status), (42, CallStatus::Hit));
    /// # Ok::<(), cachestack::Error>(())
    /// ```
    pub fn get_or_compute_blocking<T, E, F>(
        &self,
        key: &str,
        options: &ComputeOptions,
        compute: F,
    ) -> Result<(T, CallStatus), E>
    where
        T: Cacheable,
        E: From<Timeout> + From<Error> + Send + 'static,
        F: FnOnce() -> Result<T, E> + Send + 'static,
    {
        let compute = on_blocking_pool(move || compute().map_err(Failure::Err));
        let seen = self.compute.flights_ended();
        let answer = match read_local(self.backend(), &self.tags, key) {
            Some(read) => match self.compute.decide::<T>(self, key, options, Ok(read)) {
                Decision::Answer { value, status, refresh } => {
                    Ok(self.answer_now(key, options, seen, (value, status), refresh, compute))
                }
                Decision::Compute { fallback } => {
                    check(&**self.backend(), options)?;
                    let call = self.call(key, options);
                    crate::rt::block_on(call.compute(seen, fallback, compute))
                        .unwrap_or_else(|e| Err(runtime_failure(e)))
                }
            },
            None => {
                check(&**self.backend(), options)?;
                let call = self.call(key, options);
                crate::rt::block_on(call.run(compute)).unwrap_or_else(|e| Err(runtime_failure(e)))
            }
        };
        finish(answer)
    }

    /// Counters of `get_or_compute` calls: how they were served, background refreshes and their
    /// failures, timeouts, cache errors.
    ///
    /// ```
    /// let cache = cachestack::Cache::new(cachestack::MemoryBackend::with_capacity(10));
    /// assert_eq!(cache.compute_stats().misses, 0);
    /// ```
    pub fn compute_stats(&self) -> ComputeStats {
        self.compute.stats()
    }

    /// Waits until no computation started by `get_or_compute` on this cache runs any more:
    /// background refreshes, computations whose callers stopped waiting at a timeout, and those
    /// still awaited. For graceful shutdown and for tests.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache = cachestack::Cache::new(cachestack::MemoryBackend::with_capacity(10));
    /// cache.background_idle().await;
    /// assert_eq!(cache.compute_stats().running, 0);
    /// # });
    /// ```
    pub async fn background_idle(&self) {
        self.compute.idle().await;
    }

    /// A call answered from what it read; `refresh`: start a background refresh with `compute`
    /// unless one runs already.
    fn answer_now<T, E, F, Fut>(
        &self,
        key: &str,
        options: &ComputeOptions,
        seen: u64,
        (value, status): (T, CallStatus),
        refresh: bool,
        compute: F,
    ) -> (T, CallStatus)
    where
        T: Cacheable,
        E: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Failure<E>>> + Send + 'static,
    {
        if let Some(leader) = refresh.then(|| self.compute.try_refresh(key)).flatten() {
            self.call(key, options).refresh(leader, seen, compute);
        }
        self.compute.answer(value, status)
    }

    fn call(&self, key: &str, options: &ComputeOptions) -> Call<Cache> {
        Call {
            state: self.compute.clone(),
            backend: self.backend().clone(),
            tags: self.tags.clone(),
            hooks: Arc::new(self.clone()),
            key: Arc::from(key),
            options: options.clone(),
        }
    }
}
