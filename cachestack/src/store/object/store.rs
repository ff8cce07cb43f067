//! [`ObjectStoreCache`]: the store itself (without its layers) and its reads, writes and removals.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::StreamExt;
use object_store::path::{Path, PathPart};
use object_store::{ObjectStore, PutMode};

use super::config::ObjectStoreConfig;
use super::s3;
use crate::error::Result;
use crate::expiry::{Deadline, Expiry};
use crate::store::counted::counted_backend;
use crate::store::framed::{self, Peek, ENVELOPE_HEADER_LEN, FRAME_HEADER_LEN};
use crate::store::{AtomicOps, BackendStats, Counters, Entry, KeyIo};
use crate::value::Value;

/// Bytes read to learn an object's key and deadline (more when its key is longer).
const PEEK_BYTES: u64 = 1024;

/// A cache in an object store: one object per key, named `<prefix>/<namespace>/<hash>` (the
/// hash of the key, so any key makes a safe, bounded name), holding the key and the value's
/// envelope. See [`ObjectStoreBackend`](super::ObjectStoreBackend) for the design; this is the
/// store without its layers.
pub struct ObjectStoreCache {
    pub(super) store: Arc<dyn ObjectStore>,
    /// `<prefix>/<namespace>`: the folder of this cache's objects.
    pub(super) root: Path,
    pub(super) config: ObjectStoreConfig,
    pub(super) counters: Counters,
}

impl fmt::Debug for ObjectStoreCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The store by its `Display` (`AmazonS3(bucket)`), never its configuration.
        f.debug_struct("ObjectStoreCache")
            .field("store", &self.store.to_string())
            .field("root", &self.root.as_ref())
            .field("config", &self.config)
            .finish()
    }
}

impl ObjectStoreCache {
    /// The store for the S3 bucket of `config.s3` (credentials and unset options from the AWS
    /// environment variables). Builds the client only; nothing is sent until the first operation.
    pub fn new(config: ObjectStoreConfig) -> Result<Self> {
        config.validate()?;
        let store = s3::build(&config)?;
        Self::with_store(store, config)
    }

    /// The store over any object_store store (`config.s3` is not used): an in-memory store for
    /// tests, a local directory, Google Cloud Storage or Azure with object_store's features of
    /// those names (the `object_store` crate is re-exported as `cachestack::object_store`).
    pub fn with_store(store: Arc<dyn ObjectStore>, config: ObjectStoreConfig) -> Result<Self> {
        config.validate()?;
        let prefix = Path::parse(&config.prefix)
            .map_err(|e| crate::Error::config(format!("object-store: invalid prefix `{}`: {e}", config.prefix)))?;
        let root = prefix.clone().join(PathPart::from(config.settings.namespace.as_str()));
        Ok(ObjectStoreCache { store, root, config, counters: Counters::default() })
    }

    /// This store's settings.
    pub fn config(&self) -> &ObjectStoreConfig {
        &self.config
    }

    /// The object_store store underneath (to reach objects below the cache's API).
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The name of the object that holds `key`: `<prefix>/<namespace>/<32 hex digits>`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use cachestack::{object_store::memory::InMemory, ObjectStoreCache, ObjectStoreConfig, S3Options};
    ///
    /// let config = ObjectStoreConfig::new(S3Options::new("unused")).with_prefix("cache").with_namespace("app");
    /// let store = ObjectStoreCache::with_store(Arc::new(InMemory::new()), config).unwrap();
    /// let name = store.object_name("user:1 / ../../etc");
    /// assert!(name.starts_with("cache/app/") && name.len() == "cache/app/".len() + 32);
    /// ```
    pub fn object_name(&self, key: &str) -> String {
        self.path(key).to_string()
    }

    pub(super) fn path(&self, key: &str) -> Path {
        self.root.clone().join(PathPart::from(framed::key_hash(key)))
    }

    pub(super) fn name_str(&self) -> &str {
        &self.config.settings.name
    }

    /// The largest object a value for `key` can make under the configured value limit.
    pub(super) fn max_object_len(&self, key: &str) -> u64 {
        let value = self.config.settings.format.max_value_bytes as u64;
        // Headers, key, HMAC, plus the worst-case growth of compressing incompressible data.
        ((FRAME_HEADER_LEN + ENVELOPE_HEADER_LEN + 32 + 1024) as u64)
            .saturating_add(key.len() as u64)
            .saturating_add(value)
            .saturating_add(value / 128)
    }

    /// The live entry in `bytes` read for `key`; `None` (counted and logged) when they are not a
    /// valid entry of `key`.
    pub(super) fn decode(&self, key: &str, bytes: &[u8]) -> Option<Entry> {
        match self.config.settings.open_framed(key, bytes, SystemTime::now()) {
            Ok(entry) => entry,
            Err(err) => {
                self.counters.record_invalid(self.name_str(), key, &err);
                None
            }
        }
    }

    /// The live entry under `key`, and the e-tag of the object read (`None` when the object is
    /// absent; the entry is `None` when the object is dead: expired or unusable).
    pub(super) async fn read(&self, op: &'static str, key: &str) -> Result<Option<(Option<Entry>, Option<String>)>> {
        let limit = self.max_object_len(key);
        let Some(fetched) = self.fetch(op, &self.path(key), limit).await? else { return Ok(None) };
        let entry = match fetched.bytes {
            Ok(bytes) => self.decode(key, &bytes),
            Err(size) => {
                let err = crate::Error::ValueTooLarge {
                    size: usize::try_from(size).unwrap_or(usize::MAX),
                    limit: usize::try_from(limit).unwrap_or(usize::MAX),
                };
                self.counters.record_invalid(self.name_str(), key, &err);
                None
            }
        };
        Ok(Some((entry, fetched.e_tag)))
    }

    /// The key and sealed deadline of the object at `path`, of `size` bytes, from its first
    /// bytes; `None` when it is gone or not an entry.
    pub(super) async fn peek(
        &self,
        op: &'static str,
        path: &Path,
        size: u64,
    ) -> Result<Option<(String, Option<Deadline>)>> {
        let mut want = size.min(PEEK_BYTES);
        for _ in 0..2 {
            if want < (FRAME_HEADER_LEN + ENVELOPE_HEADER_LEN) as u64 {
                return Ok(None);
            }
            let Some(head) = self.fetch_range(op, path, 0..want).await? else { return Ok(None) };
            match framed::peek(&head) {
                Peek::Entry(key, deadline) => return Ok(Some((key, deadline))),
                Peek::Invalid => return Ok(None),
                Peek::Need(n) if (n as u64) <= size && (n as u64) > want => want = n as u64,
                Peek::Need(_) => return Ok(None),
            }
        }
        Ok(None)
    }

    /// The size of the object at `path`, `None` when there is none.
    async fn size_of(&self, path: &Path) -> Result<Option<u64>> {
        let (store, path) = (self.store.clone(), path.clone());
        self.call("delete", async move {
            match object_store::ObjectStoreExt::head(&*store, &path).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(err) => Err(err),
            }
        })
        .await
    }

    /// Runs `f` on every item, at most `concurrency` at once, results in order.
    pub(super) async fn each<'a, I, T, F>(&'a self, items: I, f: impl Fn(I::Item) -> F) -> Vec<T>
    where
        I: IntoIterator,
        F: std::future::Future<Output = T> + 'a,
    {
        // The futures are made first: a stream holding the closure would not be `Send` for every
        // lifetime (a limit of the compiler's higher-ranked reasoning in `async_trait` methods).
        let requests: Vec<F> = items.into_iter().map(f).collect();
        futures_util::stream::iter(requests).buffered(self.config.concurrency).collect().await
    }
}

/// The first error of `results`, or their values.
fn all<T>(results: Vec<Result<T>>) -> Result<Vec<T>> {
    results.into_iter().collect()
}

impl KeyIo for ObjectStoreCache {
    async fn get_one(&self, key: &str) -> Result<Option<Entry>> {
        Ok(self.read("get", key).await?.and_then(|(entry, _)| entry))
    }

    async fn set_one(&self, key: &str, value: &Value, expiry: Expiry) -> Result<()> {
        let deadline = expiry.resolve(self.config.settings.default_ttl);
        let bytes = self.config.settings.seal_framed(key, value, deadline)?;
        self.put("set", &self.path(key), bytes, PutMode::Overwrite).await?;
        self.counters.record_write();
        Ok(())
    }

    /// Removes `key`'s object; true if it held a live entry. An object that holds another key
    /// (a hash collision) is left alone.
    async fn delete_one(&self, key: &str) -> Result<bool> {
        let path = self.path(key);
        let size = self.size_of(&path).await?;
        let Some(size) = size else { return Ok(false) };
        let (live, ours) = match self.peek("delete", &path, size).await? {
            Some((found, deadline)) => (found == key && !deadline.is_some_and(Deadline::has_passed), found == key),
            None => (false, true),
        };
        if ours {
            self.remove("delete", &path).await?;
        }
        Ok(live)
    }

    async fn get_each(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        all(self.each(keys.iter().copied(), |key| self.get_one(key)).await)
    }

    /// Writes every entry it can (several at once), then reports the first failure.
    async fn set_each(&self, entries: &[(&str, Value)], expiry: Expiry) -> Result<()> {
        all(self.each(entries, |(key, value)| self.set_one(key, value, expiry)).await).map(drop)
    }

    async fn delete_each(&self, keys: &[&str]) -> Result<u64> {
        let removed = all(self.each(keys.iter().copied(), |key| self.delete_one(key)).await)?;
        Ok(removed.into_iter().filter(|&live| live).count() as u64)
    }

    async fn clear_all(&self) -> Result<()> {
        self.remove_all().await
    }
}

counted_backend! {
    impl Backend for ObjectStoreCache where counters = self.counters, settings = self.config.settings {
        fn atomic(&self) -> Option<&dyn AtomicOps> {
            Some(self)
        }

        async fn purge_expired(&self) -> Result<u64> {
            self.remove_expired().await
        }

        fn stats(&self) -> BackendStats {
            self.counters
                .snapshot(self.name())
                .with_detail("store", &self.store)
                .with_detail("root", &self.root)
                .with_detail("namespace", &self.config.settings.namespace)
                .with_detail("concurrency", self.config.concurrency)
        }
    }
}
