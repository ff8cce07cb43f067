//! Object store backend (feature `object-store`): a cache in S3 or an S3-compatible store (or
//! any store of the `object_store` crate). One concept per file: `config.rs` the settings and
//! `s3://` URLs, `s3.rs` the S3 client, `store.rs` the store and its reads and writes,
//! `requests.rs` the requests and their errors, `atomic.rs` conditional writes, `listing.rs`
//! what needs a listing (patterns, purge, clear).

mod atomic;
mod config;
mod listing;
mod requests;
mod s3;
mod store;

use crate::error::Result;
use crate::layer::Layered;

pub(crate) use config::SCHEME;
pub use config::{ObjectStoreConfig, S3Options};
pub use store::ObjectStoreCache;

/// A cache in an object store: an [`ObjectStoreCache`] behind its layers. For large values
/// (rendered reports, model outputs, images) that are too big or too dear for Redis.
///
/// Construction sends nothing and needs no server: an unreachable store turns into
/// per-operation errors (misses in silent mode).
///
/// ```no_run
/// use cachestack::{Cache, ObjectStoreBackend, ObjectStoreConfig, S3Options};
///
/// # async fn demo() -> cachestack::Result<()> {
/// // Credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or instance credentials):
/// let backend = ObjectStoreBackend::new(
///     ObjectStoreConfig::new(S3Options { region: Some("eu-west-1".into()), ..S3Options::new("artefacts") })
///         .with_prefix("cache")
///         .with_namespace("reports"),
/// )?;
/// let cache = Cache::new(backend);
/// cache.set("report:2026-11", &vec![0u8; 8 << 20], None).await?;
///
/// // Or from a URL, in memory over S3:
/// let cache = Cache::from_url("mem://?max_entries=1000 | s3://artefacts/cache?namespace=reports&region=eu-west-1&ttl=1d")?;
/// # Ok(()) }
/// ```
///
/// Any object_store store works too, here the in-memory one (the `object_store` crate is
/// re-exported as `cachestack::object_store`):
///
/// ```
/// use std::sync::Arc;
/// use cachestack::object_store::memory::InMemory;
/// use cachestack::{Cache, ObjectStoreBackend, ObjectStoreConfig, S3Options};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let config = ObjectStoreConfig::new(S3Options::default()).with_namespace("demo");
/// let cache = Cache::new(ObjectStoreBackend::with_store(Arc::new(InMemory::new()), config)?);
/// cache.set("user:1", &"Ada".to_string(), None).await?;
/// assert_eq!(cache.get::<String>("user:1").await?.as_deref(), Some("Ada"));
/// assert!(cache.set_if_absent("user:1", &"Bob".to_string(), None).await? == false);
/// assert_eq!(cache.incr("visits", 2).await?, 2);
/// # Ok::<(), cachestack::Error>(())
/// # }).unwrap();
/// ```
///
/// # How it works
///
/// - **Objects**: one per key, named `<prefix>/<namespace>/<xxh3-128 of the key, hex>`: any key
///   (spaces, CR/LF, `../`, unicode, kilobytes long) makes a safe name of bounded length. The
///   object holds the full key and the value's envelope in the checksummed frame of the file
///   store; a read checks the key, so two keys never share a value.
/// - **Values**: the envelope of every byte store (codec, compression, optional HMAC signature
///   over namespace, key and value). The value limit (`max_value_bytes`) defaults to 64 MiB; an
///   object larger than the limit allows is not downloaded, and counts as unusable (a miss).
/// - **Expiry**: object stores have no TTL. The deadline is sealed in the envelope when the
///   write reaches the store and every read enforces it; [`Backend::purge_expired`] lists the
///   namespace (reading only each object's first bytes) and removes what has expired. Run it
///   from time to time, or give the bucket a lifecycle rule.
/// - **Atomic operations**: `set_if_absent`, `incr` and `expire` are conditional writes (create
///   only if absent, replace only if the e-tag is unchanged, retried when another writer got
///   there first). S3 and most compatible stores support them; a store that does not answers
///   [`Error::Unsupported`](crate::Error::Unsupported), never a racy emulation.
/// - **Listing**: `keys_matching`, `delete_matching`, `purge_expired` and `clear` list the
///   namespace's folder page by page; only objects named as this store names them are touched.
///   `clear` removes this namespace's objects and nothing else.
/// - **Batches**: `get_many`, `set_many` and `delete_many` send up to `concurrency` requests at
///   once.
/// - **Layers**: [`Timeout`](crate::layer::Timeout) bounds every operation by `timeout`
///   (object_store's retries included), [`Silent`](crate::layer::Silent) counts failures and,
///   with `silent`, turns them into misses and no-ops. A server that cannot be reached is
///   [`Error::BackendUnavailable`](crate::Error::BackendUnavailable).
/// - **Credentials**: from the URL's options or the standard AWS environment variables; never
///   shown by `Debug`, stats or errors.
///
/// [`Backend::purge_expired`]: crate::Backend::purge_expired
pub type ObjectStoreBackend = Layered<ObjectStoreCache>;

impl Layered<ObjectStoreCache> {
    /// A backend over the S3 bucket of `config.s3`. Fails only on invalid settings.
    pub fn new(config: ObjectStoreConfig) -> Result<Self> {
        let layers = config.settings.layers(Some(config.timeouts.operation));
        Ok(Layered::wrap(ObjectStoreCache::new(config)?, layers))
    }

    /// A backend over any object_store store (see [`ObjectStoreCache::with_store`]).
    pub fn with_store(store: std::sync::Arc<dyn object_store::ObjectStore>, config: ObjectStoreConfig) -> Result<Self> {
        let layers = config.settings.layers(Some(config.timeouts.operation));
        Ok(Layered::wrap(ObjectStoreCache::with_store(store, config)?, layers))
    }
}
