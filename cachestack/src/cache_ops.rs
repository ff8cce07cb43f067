//! The rest of [`Cache`]'s API: typed bulk operations, get-or-set with single flight, atomic
//! operations (set if absent, counters, deadlines) and key patterns, each with a `_blocking` twin.

use std::future::Future;
use std::time::Duration;

use super::Cache;
use crate::error::{Error, Result};
use crate::expiry::{Deadline, Expiry};
use crate::pattern::KeyPattern;
use crate::singleflight::{Join, Outcome};
use crate::store::PATTERN_BATCH;
use crate::value::{Cacheable, Value};

impl Cache {
    /// Reads several keys as `V`; one slot per key, in order (`None`: a miss, or a value that
    /// cannot be read as `V`).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache = cachestack::Cache::new(cachestack::MemoryBackend::with_capacity(100));
    /// cache.set_many(&[("a", &1u32), ("b", &2u32)], None).await.unwrap();
    /// let found = cache.get_many::<u32>(&["a", "missing", "b"]).await.unwrap();
    /// assert_eq!(found, vec![Some(1), None, Some(2)]);
    /// # });
    /// ```
    pub async fn get_many<V: Cacheable>(&self, keys: &[&str]) -> Result<Vec<Option<V>>> {
        // A tagged entry that is not current is a miss (see `crate::tags`).
        let found = self.tags.read_many(&*self.backend, keys).await?;
        Ok(keys.iter().zip(found).map(|(key, entry)| entry.and_then(|e| self.decode::<V>(key, &e.value))).collect())
    }

    /// Stores clones of several values for `ttl` (`None`: the backend's default).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use std::time::Duration;
    /// let cache = cachestack::Cache::new(cachestack::MemoryBackend::with_capacity(100));
    /// cache.set_many(&[("x", &"one".to_string()), ("y", &"two".to_string())], Some(Duration::from_secs(60))).await.unwrap();
    /// assert_eq!(cache.get::<String>("y").await.unwrap().as_deref(), Some("two"));
    /// # });
    /// ```
    pub async fn set_many<V: Cacheable>(&self, entries: &[(&str, &V)], ttl: Option<Duration>) -> Result<()> {
        let values: Vec<(&str, Value)> = entries.iter().map(|(k, v)| (*k, Value::new((*v).clone()))).collect();
        self.backend.set_many(&values, Expiry::from_ttl(ttl)).await
    }

    /// Removes several keys; returns how many were present.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache = cachestack::Cache::new(cachestack::MemoryBackend::with_capacity(100));
    /// cache.set_many(&[("a", &1u8), ("b", &2u8)], None).await.unwrap();
    /// assert_eq!(cache.delete_many(&["a", "b", "c"]).await.unwrap(), 2);
    /// # });
    /// ```
    pub async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.backend.delete_many(keys).await
    }

    /// The value under `key`, or the one `compute` returns, stored for `ttl` (`None`: the
    /// backend's default). Single flight per key in this process: of the callers that miss the
    /// same key at the same time (through this `Cache` or its clones), one computes and the others
    /// receive its value. A value that was computed but could not be stored is still returned
    /// (the failure is logged).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache = cachestack::Cache::new(cachestack::MemoryBackend::with_capacity(100));
    /// let v = cache.get_or_set_async("answer", None, || async { 42u32 }).await.unwrap();
    /// assert_eq!(v, 42);
    /// // Now a hit: the closure is not called.
    /// let v: u32 = cache.get_or_set_async("answer", None, || async { 0 }).await.unwrap();
    /// assert_eq!(v, 42);
    /// # });
    /// ```
    pub async fn get_or_set_async<V, F, Fut>(&self, key: &str, ttl: Option<Duration>, compute: F) -> Result<V>
    where
        V: Cacheable,
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let mut compute = Some(compute);
        loop {
            let ended = self.flights.ended();
            if let Some(v) = self.get::<V>(key).await? {
                return Ok(v);
            }
            let leader = match self.flights.join(key) {
                Join::Leader(leader) => Some(leader),
                Join::Reentrant => None,
                Join::Waiter(waiter) => {
                    if let Outcome::Shared(value) = waiter.wait_async().await
                        && let Some(v) = self.decode::<V>(key, &value)
                    {
                        return Ok(v);
                    }
                    continue;
                }
            };
            // A flight that ended between the read and the join may have stored the key.
            if leader.is_some()
                && self.flights.ended() != ended
                && let Some(v) = self.get::<V>(key).await?
            {
                if let Some(leader) = leader {
                    leader.complete(|| Some(Value::new(v.clone())));
                }
                return Ok(v);
            }
            let compute = compute.take().ok_or_else(|| internal("get_or_set computed twice"))?;
            let value = match &leader {
                Some(leader) => leader.run_async(compute()).await,
                None => compute().await,
            };
            if let Err(err) = self.set(key, &value, ttl).await {
                tracing::warn!(backend = self.backend.name(), key, error = %err, "cachestack: get_or_set could not store the computed value");
            }
            if let Some(leader) = leader {
                leader.complete(|| Some(Value::new(value.clone())));
            }
            return Ok(value);
        }
    }

    /// [`Cache::get_or_set_async`] for synchronous code: `compute` runs on the calling thread.
    ///
    /// ```
    /// let cache = cachestack::Cache::new(cachestack::MemoryBackend::with_capacity(100));
    /// assert_eq!(cache.get_or_set("k", None, || 7u8).unwrap(), 7);
    /// assert_eq!(cache.get_or_set("k", None, || 8u8).unwrap(), 7);
    /// ```
    pub fn get_or_set<V, F>(&self, key: &str, ttl: Option<Duration>, compute: F) -> Result<V>
    where
        V: Cacheable,
        F: FnOnce() -> V,
    {
        let mut compute = Some(compute);
        loop {
            let ended = self.flights.ended();
            if let Some(v) = self.get_blocking::<V>(key)? {
                return Ok(v);
            }
            let leader = match self.flights.join(key) {
                Join::Leader(leader) => Some(leader),
                Join::Reentrant => None,
                Join::Waiter(waiter) => {
                    if let Outcome::Shared(value) = waiter.wait()
                        && let Some(v) = self.decode::<V>(key, &value)
                    {
                        return Ok(v);
                    }
                    continue;
                }
            };
            if leader.is_some()
                && self.flights.ended() != ended
                && let Some(v) = self.get_blocking::<V>(key)?
            {
                if let Some(leader) = leader {
                    leader.complete(|| Some(Value::new(v.clone())));
                }
                return Ok(v);
            }
            let compute = compute.take().ok_or_else(|| internal("get_or_set computed twice"))?;
            let value = match &leader {
                Some(leader) => leader.run(compute),
                None => compute(),
            };
            if let Err(err) = self.set_blocking(key, &value, ttl) {
                tracing::warn!(backend = self.backend.name(), key, error = %err, "cachestack: get_or_set could not store the computed value");
            }
            if let Some(leader) = leader {
                leader.complete(|| Some(Value::new(value.clone())));
            }
            return Ok(value);
        }
    }

    /// Stores a clone of `value` under `key` only if `key` holds no live entry; true if this call
    /// stored it. Atomic in every store that supports it (of racing callers, one wins); stores
    /// that cannot do it atomically answer [`Error::Unsupported`].
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache = cachestack::Cache::new(cachestack::MemoryBackend::with_capacity(100));
    /// assert!(cache.set_if_absent("lock:job", &"worker-1".to_string(), None).await.unwrap());
    /// assert!(!cache.set_if_absent("lock:job", &"worker-2".to_string(), None).await.unwrap());
    /// assert_eq!(cache.get::<String>("lock:job").await.unwrap().as_deref(), Some("worker-1"));
    /// # });
    /// ```
    pub async fn set_if_absent<V: Cacheable>(&self, key: &str, value: &V, ttl: Option<Duration>) -> Result<bool> {
        self.backend.set_if_absent(key, Value::new(value.clone()), Expiry::from_ttl(ttl)).await
    }

    /// Adds `delta` (negative to subtract) to the `i64` counter under `key` and returns the new
    /// value; an absent counter starts at 0 and gets the backend's default TTL. Atomic across
    /// processes on shared stores. Read a counter with `get::<i64>`.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache = cachestack::Cache::new(cachestack::MemoryBackend::with_capacity(100));
    /// assert_eq!(cache.incr("hits", 1).await.unwrap(), 1);
    /// assert_eq!(cache.incr("hits", 10).await.unwrap(), 11);
    /// assert_eq!(cache.incr("hits", -2).await.unwrap(), 9);
    /// assert_eq!(cache.get::<i64>("hits").await.unwrap(), Some(9));
    /// # });
    /// ```
    pub async fn incr(&self, key: &str, delta: i64) -> Result<i64> {
        self.incr_with_ttl(key, delta, None).await
    }

    /// [`Cache::incr`] with the TTL a counter gets when this call creates it (`None`: the
    /// backend's default); an existing counter keeps its deadline.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use std::time::Duration;
    /// let cache = cachestack::Cache::new(cachestack::MemoryBackend::with_capacity(100));
    /// cache.incr_with_ttl("rate:ip", 1, Some(Duration::from_secs(60))).await.unwrap();
    /// let left = cache.ttl("rate:ip").await.unwrap().flatten().unwrap();
    /// assert!(left <= Duration::from_secs(60));
    /// # });
    /// ```
    pub async fn incr_with_ttl(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64> {
        self.backend.incr(key, delta, Expiry::from_ttl(ttl)).await
    }

    /// Gives the live entry under `key` a new TTL counted from now (`None`: no expiry); true if
    /// there was a live entry. The value is unchanged.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use std::time::Duration;
    /// let cache = cachestack::Cache::new(cachestack::MemoryBackend::with_capacity(100));
    /// cache.set("session", &1u8, Some(Duration::from_secs(5))).await.unwrap();
    /// assert!(cache.expire("session", Some(Duration::from_secs(3600))).await.unwrap());
    /// assert!(cache.ttl("session").await.unwrap().flatten().unwrap() > Duration::from_secs(5));
    /// assert!(cache.expire("session", None).await.unwrap());
    /// assert_eq!(cache.ttl("session").await.unwrap(), Some(None), "no expiry now");
    /// assert!(!cache.expire("missing", None).await.unwrap());
    /// # });
    /// ```
    pub async fn expire(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        let expiry = ttl.map_or(Expiry::Never, Expiry::after);
        self.backend.expire(key, expiry).await
    }

    /// The remaining time of the live entry under `key`: `None` when there is no live entry,
    /// `Some(None)` when it never expires.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use std::time::Duration;
    /// let cache = cachestack::Cache::new(cachestack::MemoryBackend::with_capacity(100));
    /// assert_eq!(cache.ttl("missing").await.unwrap(), None);
    /// cache.set("k", &1u8, Some(Duration::from_secs(30))).await.unwrap();
    /// assert!(cache.ttl("k").await.unwrap().flatten().is_some_and(|left| left <= Duration::from_secs(30)));
    /// # });
    /// ```
    pub async fn ttl(&self, key: &str) -> Result<Option<Option<Duration>>> {
        Ok(self.backend.ttl(key).await?.map(|deadline| deadline.map(Deadline::remaining)))
    }

    /// Removes every key of this cache's namespace that matches the glob `pattern` (`*` any
    /// run of characters, `?` one character, `\` escapes; see [`KeyPattern`]); returns how many
    /// were removed. Never touches another namespace.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache = cachestack::Cache::new(cachestack::MemoryBackend::with_capacity(100));
    /// for key in ["user:7:name", "user:7:mail", "user:70:name"] {
    ///     cache.set(key, &1u8, None).await.unwrap();
    /// }
    /// assert_eq!(cache.delete_matching("user:7:*").await.unwrap(), 2);
    /// assert!(cache.exists("user:70:name").await.unwrap());
    /// # });
    /// ```
    pub async fn delete_matching(&self, pattern: &str) -> Result<u64> {
        self.backend.delete_matching(&KeyPattern::new(pattern)?).await
    }

    /// The keys of this cache's namespace that match `pattern` (see
    /// [`Cache::delete_matching`]), in no particular order. For many keys, prefer
    /// [`Cache::for_each_key_matching`], which hands them over in batches.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache = cachestack::Cache::new(cachestack::MemoryBackend::with_capacity(100));
    /// cache.set("a:1", &1u8, None).await.unwrap();
    /// cache.set("b:1", &1u8, None).await.unwrap();
    /// assert_eq!(cache.keys_matching("a:*").await.unwrap(), vec!["a:1".to_string()]);
    /// # });
    /// ```
    pub async fn keys_matching(&self, pattern: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        self.for_each_key_matching(pattern, PATTERN_BATCH, |batch| {
            keys.extend(batch);
            true
        })
        .await?;
        Ok(keys)
    }

    /// Hands the keys matching `pattern` to `visit` in batches of about `batch` keys, as the
    /// store finds them (a Redis `SCAN` page, a PostgreSQL page...), until they run out or
    /// `visit` returns false.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache = cachestack::Cache::new(cachestack::MemoryBackend::with_capacity(100));
    /// for i in 0..10 {
    ///     cache.set(&format!("job:{i}"), &i, None).await.unwrap();
    /// }
    /// let mut seen = 0;
    /// cache.for_each_key_matching("job:*", 4, |batch| { seen += batch.len(); true }).await.unwrap();
    /// assert_eq!(seen, 10);
    /// # });
    /// ```
    pub async fn for_each_key_matching(
        &self,
        pattern: &str,
        batch: usize,
        mut visit: impl FnMut(Vec<String>) -> bool + Send,
    ) -> Result<()> {
        let pattern = KeyPattern::new(pattern)?;
        self.backend.keys_matching(&pattern, batch.max(1), &mut visit).await
    }

    /// [`Cache::get_many`] from synchronous code.
    ///
    /// ```
    /// let cache = cachestack::Cache::new(cachestack::MemoryBackend::with_capacity(10));
    /// cache.set_many_blocking(&[("a", &1u8)], None).unwrap();
    /// assert_eq!(cache.get_many_blocking::<u8>(&["a", "b"]).unwrap(), vec![Some(1), None]);
    /// ```
    pub fn get_many_blocking<V: Cacheable>(&self, keys: &[&str]) -> Result<Vec<Option<V>>> {
        let keys = owned(keys);
        self.blocking(move |c| async move { c.get_many::<V>(&refs(&keys)).await })
    }

    /// [`Cache::set_many`] from synchronous code.
    pub fn set_many_blocking<V: Cacheable>(&self, entries: &[(&str, &V)], ttl: Option<Duration>) -> Result<()> {
        let entries: Vec<(String, V)> = entries.iter().map(|(k, v)| ((*k).to_owned(), (*v).clone())).collect();
        self.blocking(move |c| async move {
            let borrowed: Vec<(&str, &V)> = entries.iter().map(|(k, v)| (k.as_str(), v)).collect();
            c.set_many(&borrowed, ttl).await
        })
    }

    /// [`Cache::delete_many`] from synchronous code.
    pub fn delete_many_blocking(&self, keys: &[&str]) -> Result<u64> {
        let keys = owned(keys);
        self.blocking(move |c| async move { c.delete_many(&refs(&keys)).await })
    }

    /// [`Cache::set_if_absent`] from synchronous code.
    ///
    /// ```
    /// let cache = cachestack::Cache::new(cachestack::MemoryBackend::with_capacity(10));
    /// assert!(cache.set_if_absent_blocking("k", &1u8, None).unwrap());
    /// assert!(!cache.set_if_absent_blocking("k", &2u8, None).unwrap());
    /// ```
    pub fn set_if_absent_blocking<V: Cacheable>(&self, key: &str, value: &V, ttl: Option<Duration>) -> Result<bool> {
        let (key, value) = (key.to_owned(), value.clone());
        self.blocking(move |c| async move { c.set_if_absent(&key, &value, ttl).await })
    }

    /// [`Cache::incr`] from synchronous code.
    ///
    /// ```
    /// let cache = cachestack::Cache::new(cachestack::MemoryBackend::with_capacity(10));
    /// assert_eq!(cache.incr_blocking("n", 5).unwrap(), 5);
    /// ```
    pub fn incr_blocking(&self, key: &str, delta: i64) -> Result<i64> {
        self.incr_with_ttl_blocking(key, delta, None)
    }

    /// [`Cache::incr_with_ttl`] from synchronous code.
    pub fn incr_with_ttl_blocking(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64> {
        let key = key.to_owned();
        self.blocking(move |c| async move { c.incr_with_ttl(&key, delta, ttl).await })
    }

    /// [`Cache::expire`] from synchronous code.
    pub fn expire_blocking(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        let key = key.to_owned();
        self.blocking(move |c| async move { c.expire(&key, ttl).await })
    }

    /// [`Cache::ttl`] from synchronous code.
    pub fn ttl_blocking(&self, key: &str) -> Result<Option<Option<Duration>>> {
        let key = key.to_owned();
        self.blocking(move |c| async move { c.ttl(&key).await })
    }

    /// [`Cache::delete_matching`] from synchronous code.
    ///
    /// ```
    /// let cache = cachestack::Cache::new(cachestack::MemoryBackend::with_capacity(10));
    /// cache.set_blocking("t:1", &1u8, None).unwrap();
    /// assert_eq!(cache.delete_matching_blocking("t:*").unwrap(), 1);
    /// ```
    pub fn delete_matching_blocking(&self, pattern: &str) -> Result<u64> {
        let pattern = pattern.to_owned();
        self.blocking(move |c| async move { c.delete_matching(&pattern).await })
    }

    /// [`Cache::keys_matching`] from synchronous code.
    pub fn keys_matching_blocking(&self, pattern: &str) -> Result<Vec<String>> {
        let pattern = pattern.to_owned();
        self.blocking(move |c| async move { c.keys_matching(&pattern).await })
    }
}

fn owned(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| (*k).to_owned()).collect()
}

fn refs(keys: &[String]) -> Vec<&str> {
    keys.iter().map(String::as_str).collect()
}

fn internal(message: &'static str) -> Error {
    Error::Generic { backend: "cache".into(), source: message.into() }
}

#[cfg(all(test, feature = "memory"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use crate::{Cache, MemoryBackend};

    /// Of 16 callers missing one key together, one computes; the others get its value. The
    /// leader's computation waits until every caller has run up to its first wait, so without
    /// single flight all 16 would compute.
    #[tokio::test(flavor = "current_thread")]
    async fn get_or_set_computes_once_for_concurrent_callers() {
        let cache = Cache::new(MemoryBackend::with_capacity(100));
        let computed = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::watch::channel(false);
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (cache, computed, mut released) = (cache.clone(), computed.clone(), released.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_set_async("k", None, || async move {
                            computed.fetch_add(1, Ordering::SeqCst);
                            let _ = released.wait_for(|go| *go).await;
                            42u32
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        // On a current-thread runtime, each yield lets every spawned task run to its next wait.
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        release.send(true).unwrap();
        for task in tasks {
            assert_eq!(task.await.unwrap(), 42);
        }
        assert_eq!(computed.load(Ordering::SeqCst), 1, "single flight let several callers compute");
        assert_eq!(cache.get::<u32>("k").await.unwrap(), Some(42));
    }

    #[test]
    fn blocking_twins_work_outside_a_runtime() {
        let cache = Cache::new(MemoryBackend::with_capacity(100));
        assert_eq!(cache.get_or_set("k", None, || 1u8).unwrap(), 1);
        assert_eq!(cache.get_or_set("k", None, || 2u8).unwrap(), 1);
        assert_eq!(cache.incr_with_ttl_blocking("n", 2, Some(std::time::Duration::from_secs(60))).unwrap(), 2);
        assert!(cache.ttl_blocking("n").unwrap().flatten().is_some());
        assert!(cache.expire_blocking("n", None).unwrap());
        assert_eq!(cache.ttl_blocking("n").unwrap(), Some(None));
        cache.set_many_blocking(&[("a:1", &1u8), ("a:2", &2u8)], None).unwrap();
        assert_eq!(cache.get_many_blocking::<u8>(&["a:1", "a:2"]).unwrap(), vec![Some(1), Some(2)]);
        let mut keys = cache.keys_matching_blocking("a:*").unwrap();
        keys.sort();
        assert_eq!(keys, vec!["a:1".to_string(), "a:2".to_string()]);
        assert_eq!(cache.delete_many_blocking(&["a:1"]).unwrap(), 1);
        assert_eq!(cache.delete_matching_blocking("a:*").unwrap(), 1);
        assert!(cache.set_if_absent_blocking("a:1", &3u8, None).unwrap());
        assert!(matches!(cache.delete_matching_blocking("bad\\"), Err(crate::Error::Config { .. })));
    }
}
