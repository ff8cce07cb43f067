//! [`CacheRegistry::routed`]: one [`Cache`] whose every operation goes to the cache its key
//! routes to (cashews' single `cache` object set up with several `prefix`es).

use std::sync::Arc;

use async_trait::async_trait;

use super::same_cache;
use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::expiry::{Deadline, Expiry};
use crate::pattern::KeyPattern;
use crate::registry::CacheRegistry;
use crate::store::{delete_listed, Backend, BackendStats, Entry, KeyVisitor, Signing};
use crate::tags::TagCheck;
use crate::value::Value;

impl CacheRegistry {
    /// One [`Cache`] over every cache of this registry: each operation goes to the cache its
    /// key [routes](CacheRegistry::route) to, or to the default cache when no route matches,
    /// resolved at call time (re-routing takes effect on the next call). This is cashews'
    /// single `cache` object set up with several `prefix`es; it sees the same entries as
    /// [`CacheRegistry::cache_for_key`] and the `#[cached]` functions that name no cache.
    ///
    /// - Key operations (`get`, `set`, `delete`, `exists`, `set_if_absent`, `incr`, `expire`,
    ///   `ttl`, `get_or_set`...) go to the key's cache. `get_many` / `set_many` /
    ///   `delete_many` make one bulk call per cache and answer in the caller's order.
    /// - `keys_matching` / `delete_matching` reach every cache the pattern can reach (the cache
    ///   its literal start routes to and those of longer routes starting with it) and only
    ///   list or remove, in each cache, the keys that route to it. When a single cache is
    ///   reachable, `delete_matching` is that store's native one.
    /// - `clear`, `purge_expired`, `flush` and `close` apply to the default cache and to every
    ///   cache a route names, *whole*: `clear` also removes what those caches hold under keys
    ///   that do not route to them.
    /// - [`Cache::stats`] sums the stats of those caches (their whole traffic, not only this
    ///   handle's), each cache's own stats in `layers`, default cache first.
    ///
    /// A route to a cache that is not registered fails, at the call that needs it, with
    /// [`Error::UnknownCache`]. The handle keeps the registry alive; do not route to it, or make it
    /// the default, in its own registry (a call that would reach itself fails with
    /// [`Error::Config`]).
    ///
    /// ```
    /// use cachestack::{Cache, CacheRegistry, MemoryBackend};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let registry = CacheRegistry::new();
    /// registry.set_default(Cache::new(MemoryBackend::with_capacity(100)));
    /// registry.register("users", Cache::new(MemoryBackend::with_capacity(100)));
    /// registry.route("user:", "users").unwrap();
    ///
    /// let cache = registry.routed();
    /// cache.set_many(&[("user:1", &1u32), ("order:1", &2u32)], None).await.unwrap();
    /// let users = registry.get("users").unwrap();
    /// assert_eq!(users.get::<u32>("user:1").await.unwrap(), Some(1));
    /// assert_eq!(users.get::<u32>("order:1").await.unwrap(), None); // in the default cache
    /// assert_eq!(cache.get_many::<u32>(&["order:1", "user:1"]).await.unwrap(), vec![Some(2), Some(1)]);
    /// assert_eq!(cache.keys_matching("user:*").await.unwrap(), vec!["user:1".to_string()]);
    /// # });
    /// ```
    pub fn routed(&self) -> Cache {
        Cache::new(RoutedBackend { registry: self.handle() })
    }
}

/// The backend of [`CacheRegistry::routed`].
#[derive(Debug)]
struct RoutedBackend {
    registry: CacheRegistry,
}

impl RoutedBackend {
    /// Refuses a cache that is this backend itself (a route or the default leading back here).
    fn checked(&self, cache: Cache) -> Result<Cache> {
        if std::ptr::addr_eq(Arc::as_ptr(cache.backend()), self as *const Self) {
            return Err(Error::config(
                "the routed cache reaches itself (a route to it, or it is the default cache of its own registry)",
            ));
        }
        Ok(cache)
    }

    /// The backend of the cache `key` routes to.
    fn backend_for(&self, key: &str) -> Result<Arc<dyn Backend>> {
        Ok(self.checked(self.registry.cache_for_key(key)?)?.backend().clone())
    }

    /// `keys` grouped by destination: each cache with the positions of its keys.
    fn groups<'k>(&self, keys: impl IntoIterator<Item = &'k str>) -> Result<Vec<(Cache, Vec<usize>)>> {
        let groups = self.registry.group_by_route(keys)?;
        groups.into_iter().map(|(cache, at)| Ok((self.checked(cache)?, at))).collect()
    }

    /// The caches `pattern` can reach, or (`None`) the default cache and every routed cache.
    fn caches(&self, pattern: Option<&KeyPattern>) -> Result<Vec<Cache>> {
        let caches = match pattern {
            Some(pattern) => self.registry.caches_for_pattern(pattern)?,
            None => self.registry.default_and_routed_caches()?,
        };
        caches.into_iter().map(|cache| self.checked(cache)).collect()
    }

    /// One bulk read per cache, answered in the caller's order; with `check`, each cache's
    /// [`Backend::get_many_current`].
    async fn get_many_checked(&self, keys: &[&str], check: Option<&dyn TagCheck>) -> Result<Vec<Option<Entry>>> {
        let mut found: Vec<Option<Entry>> = vec![None; keys.len()];
        for (cache, at) in self.groups(keys.iter().copied())? {
            let group: Vec<&str> = at.iter().map(|&i| keys[i]).collect();
            let entries = match check {
                Some(check) => cache.backend().get_many_current(&group, check).await?,
                None => cache.backend().get_many(&group).await?,
            };
            for (i, entry) in at.into_iter().zip(entries) {
                found[i] = entry;
            }
        }
        Ok(found)
    }

    /// Whether `key` routes to `cache` now (a key whose route names an unknown cache does not).
    fn routes_to(&self, key: &str, cache: &Cache) -> bool {
        self.registry.cache_for_key(key).is_ok_and(|target| same_cache(&target, cache))
    }
}

#[async_trait]
impl Backend for RoutedBackend {
    fn name(&self) -> &str {
        "routed"
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        self.backend_for(key)?.get(key).await
    }

    async fn get_current(&self, key: &str, check: &dyn TagCheck) -> Result<Option<Entry>> {
        self.backend_for(key)?.get_current(key, check).await
    }

    async fn set(&self, key: &str, value: Value, expiry: Expiry) -> Result<()> {
        self.backend_for(key)?.set(key, value, expiry).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.backend_for(key)?.delete(key).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.backend_for(key)?.exists(key).await
    }

    async fn exists_current(&self, key: &str, check: &dyn TagCheck) -> Result<bool> {
        self.backend_for(key)?.exists_current(key, check).await
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        self.get_many_checked(keys, None).await
    }

    async fn get_many_current(&self, keys: &[&str], check: &dyn TagCheck) -> Result<Vec<Option<Entry>>> {
        self.get_many_checked(keys, Some(check)).await
    }

    async fn set_many(&self, entries: &[(&str, Value)], expiry: Expiry) -> Result<()> {
        for (cache, at) in self.groups(entries.iter().map(|(key, _)| *key))? {
            let group: Vec<(&str, Value)> = at.iter().map(|&i| entries[i].clone()).collect();
            cache.backend().set_many(&group, expiry).await?;
        }
        Ok(())
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        let mut removed = 0u64;
        for (cache, at) in self.groups(keys.iter().copied())? {
            let group: Vec<&str> = at.iter().map(|&i| keys[i]).collect();
            removed = removed.saturating_add(cache.backend().delete_many(&group).await?);
        }
        Ok(removed)
    }

    async fn set_if_absent(&self, key: &str, value: Value, expiry: Expiry) -> Result<bool> {
        self.backend_for(key)?.set_if_absent(key, value, expiry).await
    }

    async fn incr(&self, key: &str, delta: i64, expiry: Expiry) -> Result<i64> {
        self.backend_for(key)?.incr(key, delta, expiry).await
    }

    async fn expire(&self, key: &str, expiry: Expiry) -> Result<bool> {
        self.backend_for(key)?.expire(key, expiry).await
    }

    async fn ttl(&self, key: &str) -> Result<Option<Option<Deadline>>> {
        self.backend_for(key)?.ttl(key).await
    }

    /// Lists each reachable cache in turn, keeping the keys that route to it.
    async fn keys_matching(&self, pattern: &KeyPattern, batch: usize, visit: &mut KeyVisitor<'_>) -> Result<()> {
        let caches = self.caches(Some(pattern))?;
        // With one reachable cache, every matching key routes to it.
        let filter = caches.len() > 1;
        for cache in &caches {
            let mut go_on = true;
            let mut keep = |keys: Vec<String>| {
                let mine: Vec<String> =
                    if filter { keys.into_iter().filter(|key| self.routes_to(key, cache)).collect() } else { keys };
                go_on = mine.is_empty() || visit(mine);
                go_on
            };
            cache.backend().keys_matching(pattern, batch, &mut keep).await?;
            if !go_on {
                break;
            }
        }
        Ok(())
    }

    /// The store's own `delete_matching` when one cache is reachable; otherwise the routed keys
    /// are listed and removed in batches.
    async fn delete_matching(&self, pattern: &KeyPattern) -> Result<u64> {
        match self.caches(Some(pattern))?.as_slice() {
            [only] => only.backend().delete_matching(pattern).await,
            _ => delete_listed(self, pattern).await,
        }
    }

    async fn clear(&self) -> Result<()> {
        for cache in self.caches(None)? {
            cache.backend().clear().await?;
        }
        Ok(())
    }

    async fn purge_expired(&self) -> Result<u64> {
        let mut purged = 0u64;
        for cache in self.caches(None)? {
            purged = purged.saturating_add(cache.backend().purge_expired().await?);
        }
        Ok(purged)
    }

    async fn flush(&self) -> Result<()> {
        for cache in self.caches(None)? {
            cache.backend().flush().await?;
        }
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        for cache in self.caches(None)? {
            cache.backend().close().await?;
        }
        Ok(())
    }

    fn stats(&self) -> BackendStats {
        let layers: Vec<BackendStats> = match self.caches(None) {
            Ok(caches) => caches.iter().map(Cache::stats).collect(),
            Err(err) => {
                tracing::debug!(error = %err, "cachestack: routed cache stats without its caches");
                Vec::new()
            }
        };
        let sum = |field: fn(&BackendStats) -> u64| layers.iter().map(field).fold(0u64, u64::saturating_add);
        BackendStats {
            name: "routed".to_string(),
            hits: sum(|s| s.hits),
            misses: sum(|s| s.misses),
            writes: sum(|s| s.writes),
            deletes: sum(|s| s.deletes),
            errors: sum(|s| s.errors),
            evictions: sum(|s| s.evictions),
            backfills: sum(|s| s.backfills),
            entries: layers.iter().try_fold(0u64, |total, s| total.checked_add(s.entries?)),
            layers,
            ..BackendStats::default()
        }
    }

    /// [`Signing::Signed`] only if every cache it routes to signs.
    fn signing(&self) -> Signing {
        Signing::combined(self.caches(None).unwrap_or_default().iter().map(|cache| cache.backend().signing()))
    }
}
