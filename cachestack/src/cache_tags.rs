//! The [`Cache`] methods of tags (see [`crate::tags`]): writing tagged entries, invalidating a
//! tag, and the in-process times of tags.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Cache, CacheTags};
use crate::error::Result;
use crate::expiry::Expiry;
use crate::tags::validate_tag;
use crate::value::{Cacheable, Value};

impl Cache {
    /// Stores a clone of `value` under `key` for `ttl` (`None`: the backend's default), tagged
    /// with `tags`: once one of them is invalidated ([`Cache::invalidate_tag`]), the entry is a
    /// miss in every tier of every process (see [`crate::tags`] for when other processes see it).
    /// The entry's write time is taken from the cache's [clock](Cache::with_clock) when this is
    /// called. No tags: [`Cache::set`].
    ///
    /// ```
    /// use cachestack::{Cache, MemoryBackend};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache = Cache::new(MemoryBackend::with_capacity(100));
    /// cache.set_with_tags("user:7:profile", &"Ada".to_string(), None, &["user:7"]).await?;
    /// cache.set_with_tags("org:3:members", &vec![7u64], None, &["org:3", "user:7"]).await?;
    /// cache.set("user:8:profile", &"Grace".to_string(), None).await?;
    ///
    /// cache.invalidate_tag("user:7").await?;
    /// assert_eq!(cache.get::<String>("user:7:profile").await?, None);
    /// assert_eq!(cache.get::<Vec<u64>>("org:3:members").await?, None);
    /// assert_eq!(cache.get::<String>("user:8:profile").await?.as_deref(), Some("Grace"));
    /// # Ok::<(), cachestack::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn set_with_tags<V: Cacheable>(
        &self,
        key: &str,
        value: &V,
        ttl: Option<Duration>,
        tags: &[&str],
    ) -> Result<()> {
        let value = self.tagged(Value::new(value.clone()), self.tags.clock.now(), tags)?;
        self.backend.set(key, value, Expiry::from_ttl(ttl)).await
    }

    /// [`Cache::set_with_tags`] from synchronous code.
    ///
    /// ```
    /// let cache = cachestack::Cache::new(cachestack::MemoryBackend::with_capacity(10));
    /// cache.set_with_tags_blocking("k", &1u8, None, &["t"]).unwrap();
    /// cache.invalidate_tag_blocking("t").unwrap();
    /// assert_eq!(cache.get_blocking::<u8>("k").unwrap(), None);
    /// ```
    pub fn set_with_tags_blocking<V: Cacheable>(
        &self,
        key: &str,
        value: &V,
        ttl: Option<Duration>,
        tags: &[&str],
    ) -> Result<()> {
        let value = self.tagged(Value::new(value.clone()), self.tags.clock.now(), tags)?;
        if let Some(local) = self.backend.as_local() {
            local.set_value(key, value, Expiry::from_ttl(ttl));
            return Ok(());
        }
        let key = key.to_owned();
        self.blocking(move |cache| async move { cache.backend.set(&key, value, Expiry::from_ttl(ttl)).await })
    }

    /// Invalidates `tag`: every entry carrying it, written up to now (by this cache's clock), is
    /// a miss from now on, in every tier. Records the time in the shared tier (the lowest layer
    /// of a stack) under [`TAG_KEY_PREFIX`](crate::tags::TAG_KEY_PREFIX)`<tag>`, without expiry;
    /// nothing is deleted. This cache sees it at once; other processes within their
    /// [tag freshness](Cache::with_tag_freshness) (or at once, with a backplane). An entry being
    /// computed while its tag is invalidated carries the time its computation started, so the
    /// invalidation wins.
    ///
    /// ```
    /// use cachestack::{Cache, MemoryBackend};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache = Cache::new(MemoryBackend::with_capacity(100));
    /// cache.set_with_tags("a", &1u8, None, &["t"]).await?;
    /// cache.invalidate_tag("t").await?;
    /// assert_eq!(cache.get::<u8>("a").await?, None);
    /// assert!(cache.invalidate_tag("").await.is_err(), "empty tags are refused");
    /// # Ok::<(), cachestack::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn invalidate_tag(&self, tag: &str) -> Result<()> {
        let now = crate::tags::unix_micros(self.tags.clock.now());
        self.tags.times.invalidate(&*self.tags.tier, tag, now).await?;
        // The other processes' caches over this stack forget the time they keep for it.
        if let Some(stack) = self.backend.as_tiered() {
            stack.announce_tags(&[tag.to_owned()]);
        }
        Ok(())
    }

    /// [`Cache::invalidate_tag`] from synchronous code.
    pub fn invalidate_tag_blocking(&self, tag: &str) -> Result<()> {
        let tag = tag.to_owned();
        self.blocking(move |cache| async move { cache.invalidate_tag(&tag).await })
    }

    /// Drops the invalidation times of `tags` this cache keeps in process, so that the next read
    /// of an entry carrying one of them reads its time from the shared tier: what a backplane
    /// calls when another process invalidated these tags. Cheap; never fails.
    ///
    /// ```
    /// let cache = cachestack::Cache::new(cachestack::MemoryBackend::with_capacity(10));
    /// cache.forget_local_tags(&["user:7".to_string()]);
    /// ```
    pub fn forget_local_tags(&self, tags: &[String]) {
        self.tags.times.forget(tags);
    }

    /// This cache trusting a tag's invalidation time it read from the shared tier for
    /// `freshness` (default [`DEFAULT_TAG_FRESHNESS`](crate::tags::DEFAULT_TAG_FRESHNESS)): the
    /// bound within which it sees another process's [`Cache::invalidate_tag`] without a
    /// backplane. Zero reads the time on every read of a tagged entry. Measured with the cache's
    /// [clock](Cache::with_clock). The returned cache starts with no times kept.
    ///
    /// ```
    /// use std::time::Duration;
    /// let cache = cachestack::Cache::new(cachestack::MemoryBackend::with_capacity(10))
    ///     .with_tag_freshness(Duration::from_millis(200));
    /// ```
    pub fn with_tag_freshness(mut self, freshness: Duration) -> Self {
        self.tags = Arc::new(CacheTags {
            times: CacheTags::watched_times(&self.backend, freshness),
            tier: self.tags.tier.clone(),
            clock: self.tags.clock.clone(),
        });
        self
    }

    /// `value` tagged with `tags` as written at `written` (checked: no empty tag, at most 64).
    pub(crate) fn tagged(&self, value: Value, written: SystemTime, tags: &[&str]) -> Result<Value> {
        if tags.is_empty() {
            return Ok(value);
        }
        if tags.len() > crate::value::envelope::MAX_TAGS {
            return Err(crate::Error::config(format!(
                "{} tags on one entry; at most {}",
                tags.len(),
                crate::value::envelope::MAX_TAGS
            )));
        }
        for tag in tags {
            validate_tag(tag)?;
        }
        Ok(value.with_tags(written, tags.iter().map(|t| t.to_string())))
    }
}
