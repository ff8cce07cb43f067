//! File store: one file per key, written atomically, under sharded directories.
//!
//! [`FileStore`] does the file I/O and nothing else; [`FileBackend`] is that store behind its
//! [layers](crate::layer) (the [`Silent`](crate::layer::Silent) layer counts failed operations
//! and, with `settings.silent`, absorbs them). The layout, the file format and the
//! concurrency rules are documented on [`FileStore`].
//!
//! # The one I/O rule, for files
//!
//! File I/O is blocking, so the file store does not use [`rt::io`](crate::rt::io) (which runs
//! network futures on cachestack's runtime): every operation runs its I/O as one task on tokio's
//! blocking pool (`spawn_blocking`) of the caller's runtime, so the async executor is never
//! blocked, and runs inline when called outside a tokio runtime. A blocking call cannot be
//! aborted: when the caller's future is dropped, the call in progress finishes (a write still
//! lands whole, through its atomic rename) and its result is discarded. Encoding, compression and
//! signing of a write happen on the caller's side, before the blocking task.
//!
//! # Expiry
//!
//! A write's [`Expiry`] becomes a [`Deadline`] when the write reaches the store
//! ([`Expiry::Default`] resolves to `settings.default_ttl` from then); the deadline is sealed
//! in the value envelope and read back unchanged: [`Backend::get`] returns the writer's deadline
//! (same Unix millisecond), never a recomputed TTL, and never an entry whose deadline has passed.

mod atomic;
mod config;
mod format;
mod paths;
mod read;
mod secure;
mod sweep;
mod url;
mod write;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

pub use config::FileConfig;
pub(crate) use url::SCHEME;

use crate::error::{Error, Result};
use crate::expiry::{Deadline, Expiry};
use crate::layer::Layered;
use crate::pattern::KeyPattern;
use crate::store::{Backend, BackendStats, Counters, Entry, KeyVisitor};
use crate::value::Value;
use config::validate_namespace;
use paths::TEMP_PREFIX;

/// A file cache: a [`FileStore`] behind its layers (silent mode when
/// `settings.silent` is set). The store's own methods ([`FileStore::path_for`],
/// [`FileStore::directory`]...) are reachable through `Deref`.
///
/// # Example
///
/// ```
/// use cachestack::{Cache, FileBackend};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let cache = Cache::new(FileBackend::open(dir.path()).unwrap());
/// cache.set("user:1", &"Ada".to_string(), None).await.unwrap();
/// assert_eq!(cache.get::<String>("user:1").await.unwrap().as_deref(), Some("Ada"));
/// assert_eq!(cache.stats().entries, Some(1));
/// # });
/// ```
pub type FileBackend = Layered<FileStore>;

impl Layered<FileStore> {
    /// A file cache with the given settings: the [`FileStore`] (see [`FileStore::new`]) behind
    /// the [`Silent`](crate::layer::Silent) layer, silent when `settings.silent` is set.
    ///
    /// Fails with [`Error::Config`] for an invalid namespace, an empty directory path or a zero
    /// bound, and with [`Error::Io`] (naming the directory) when the directory cannot be created
    /// or written.
    ///
    /// ```
    /// use cachestack::{Error, FileBackend, FileConfig};
    ///
    /// let err = FileBackend::new(FileConfig::new("/tmp/x").with_namespace("../etc")).unwrap_err();
    /// assert!(matches!(err, Error::Config { .. }));
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = FileBackend::new(FileConfig::new(dir.path()).with_silent(true)).unwrap();
    /// assert!(cache.layers().silent);
    /// ```
    pub fn new(config: FileConfig) -> Result<Self> {
        let layers = config.settings.layers(None);
        Ok(Layered::wrap(FileStore::new(config)?, layers))
    }

    /// A file cache in `directory` with default settings (namespace `"default"`, no TTL, no
    /// bound, not silent).
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = cachestack::FileBackend::open(dir.path()).unwrap();
    /// assert!(cache.directory().is_absolute());
    /// ```
    pub fn open(directory: impl Into<PathBuf>) -> Result<Self> {
        Self::new(FileConfig::new(directory))
    }
}

/// A cache on the local file system: one file per key, atomic writes, safe to share between
/// processes.
///
/// - Expired entries are never returned; a read that finds one removes it, and
///   [`Backend::purge_expired`] (or the passive [`FileConfig::auto_purge_interval`]) sweeps the
///   rest.
/// - With [`FileConfig::max_entries`] or [`FileConfig::max_bytes`], least recently used entries
///   are evicted: recency is the file's modification time, which writes set and read hits
///   refresh. The bound is approximate: each backend counts the files it writes and deletes,
///   and every sweep (eviction, purge) recounts the directory, so files written by other
///   processes are seen at the next sweep. A sweep that finds the namespace over a bound
///   deletes the oldest entries until it is 10% under it, so sweeps stay rare.
/// - Truncated, corrupt, tampered or misplaced files are a miss plus an error count, and are
///   deleted.
///
/// - Stats: hits, misses, writes, deletes, errors (rejected files; behind its layers, as
///   [`FileBackend`], failed operations too), evictions; `entries` and the `bytes_on_disk` detail are the approximate counters above; the details
///   also name the `directory` and `namespace`.
///
/// Construction creates the directory (`0700`), refuses one that another local user could
/// control (a symbolic link, owned by another user, writable by group or others), checks that it
/// is writable, and lists it once to count the entries (one `stat` per file).
///
/// Nothing found in the directory is trusted: an entry file is opened without following links
/// and without blocking, read only if it is a regular file, and never beyond the size a value may
/// take; anything else is a miss, counted, and removed when it is corrupt (a failed checksum,
/// another key's entry, not a regular file). An intact entry this reader cannot open (signed
/// with another secret, written by a newer format, larger than this reader's value limit) is a
/// miss, counted, and left for the readers it belongs to; a write of the key replaces it.
///
/// # Layout on disk
///
/// ```text
/// <directory>/<namespace>/<h0h1>/<h0h1...h31>.cache     one entry (h = xxh3-128 of the key, hex)
/// <directory>/<namespace>/<h0h1>/.cstmp<random>          a write in progress (renamed into place)
/// ```
///
/// The file name is the lower-case hex of `xxh3_128(key)` (stable across Rust versions and
/// platforms); the first two hex digits name the shard directory, so no directory holds more than
/// about 1/256 of the entries.
///
/// # File format (integers little-endian)
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 4 | magic `b"CSF"` + file format version (1) |
/// | 4 | 8 | xxh3-64 checksum of every byte from offset 12 to the end |
/// | 12 | 4 | key length `k` |
/// | 16 | k | the key (UTF-8) |
/// | 16+k | .. | the value envelope ([`ValueFormat::seal`](crate::ValueFormat::seal): codec, type fingerprint, expiry, payload, optional HMAC) |
///
/// The key is stored in the file and compared on read, so a file planted at another key's path
/// (or a hash collision) is a miss, never another key's value. The checksum turns a truncated or
/// bit-flipped file into a miss; the optional HMAC of the envelope rejects deliberate tampering.
///
/// # Writes and concurrency
///
/// A write goes to a temporary file in the shard directory, which is then renamed over the entry
/// (`tempfile`'s `persist`): rename is atomic, so a reader, in this process or another, sees the old
/// file or the new one, never a partial one, and a writer killed mid-write leaves only a temporary
/// file behind (removed by [`Backend::purge_expired`] once older than
/// [`FileConfig::temp_max_age`]). Files are not fsynced: a cache needs integrity, not durability,
/// and after a power loss a damaged file fails its checksum and is a miss.
///
/// # I/O: the one I/O rule, for files
///
/// File I/O is blocking, so every operation runs its I/O as one task on tokio's blocking pool
/// (`spawn_blocking`) of the caller's runtime, never on the async executor (outside a tokio
/// runtime the call runs inline). A blocking call cannot be aborted: when the caller's future is
/// dropped, the call in progress finishes (a write still lands whole, through its atomic rename)
/// and its result is discarded. Encoding, compression and signing of a write happen on the
/// caller's side, before the blocking task.
///
/// # Errors and expiry
///
/// A failed operation is returned as an error; counting it and silent mode are the layers'
/// business ([`FileBackend`]). Unusable stored files are this store's: a miss, counted in
/// `errors` (and removed when corrupt, see above). A write's [`Expiry`] becomes a [`Deadline`] when it reaches the store
/// ([`Expiry::Default`]: `settings.default_ttl` from then), sealed in the file and returned
/// unchanged by reads, which never serve it once passed.
///
/// ```
/// use cachestack::{Backend, FileConfig, FileStore};
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = FileStore::new(FileConfig::new(dir.path())).unwrap();
/// assert_eq!(store.name(), "file");
/// assert!(store.path_for("k").starts_with(store.directory()));
/// ```
pub struct FileStore {
    inner: Arc<Inner>,
}

struct Inner {
    config: FileConfig,
    /// Absolute root directory.
    root: PathBuf,
    /// Absolute namespace directory (`root/namespace`).
    dir: PathBuf,
    counters: Counters,
    /// Entry files in the namespace, approximately (see the type docs).
    entries: AtomicU64,
    /// Bytes of entry files in the namespace, approximately.
    bytes: AtomicU64,
    /// Held by the one sweep (purge and/or eviction) running at a time.
    sweep: Mutex<()>,
    /// When the last purge started.
    last_purge: Mutex<Instant>,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("directory", &self.inner.dir)
            .field("config", &self.inner.config)
            .field("entries", &self.inner.entries.load(Relaxed))
            .finish()
    }
}

impl FileStore {
    /// The store alone, without layers (most code wants [`FileBackend::new`]): validates the
    /// settings, creates the namespace directory if needed, checks it is writable, and counts
    /// the entries already there. `settings.silent` is ignored here: it selects a layer.
    ///
    /// Fails with [`Error::Config`] for an invalid namespace, an empty directory path or a zero
    /// bound, and with [`Error::Io`] (naming the directory) when the directory cannot be created
    /// or written.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = cachestack::FileStore::new(cachestack::FileConfig::new(dir.path())).unwrap();
    /// assert!(store.root().is_absolute());
    /// ```
    pub fn new(config: FileConfig) -> Result<Self> {
        validate_namespace(&config.settings.namespace)?;
        if config.directory.as_os_str().is_empty() {
            return Err(Error::config("file cache: the directory must not be empty"));
        }
        if config.max_entries == Some(0) {
            return Err(Error::config("file cache: max_entries must be greater than zero"));
        }
        if config.max_bytes == Some(0) {
            return Err(Error::config("file cache: max_bytes must be greater than zero"));
        }
        let root = std::path::absolute(&config.directory).map_err(|e| {
            Error::config(format!("file cache: cannot resolve directory {}: {e}", config.directory.display()))
        })?;
        let dir = root.join(&config.settings.namespace);
        // Created 0700; refused if another local user could control it (see `secure.rs`).
        secure::prepare_directories(&config.settings.name, &root, &dir)?;
        // Resolve `..` and symlinks once the directory exists. (On Windows `canonicalize` returns
        // verbatim `\\?\` paths, so the absolute path is kept as it is.)
        #[cfg(not(windows))]
        let (root, dir) = {
            let canonical = |p: &Path| {
                std::fs::canonicalize(p)
                    .map_err(|e| io_error(&config.settings.name, "cannot resolve cache directory", p, e))
            };
            (canonical(&root)?, canonical(&dir)?)
        };
        let probe = tempfile::Builder::new().prefix(TEMP_PREFIX).tempfile_in(&dir);
        if let Err(e) = probe {
            return Err(io_error(&config.settings.name, "cache directory is not writable", &dir, e));
        }
        let inner = Inner {
            root,
            dir,
            counters: Counters::default(),
            entries: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            sweep: Mutex::new(()),
            last_purge: Mutex::new(Instant::now()),
            config,
        };
        let (entries, bytes) = inner.count().map_err(|e| inner.io("cannot list cache directory", &inner.dir, e))?;
        inner.entries.store(entries, Relaxed);
        inner.bytes.store(bytes, Relaxed);
        Ok(FileStore { inner: Arc::new(inner) })
    }

    /// The settings this cache runs with.
    pub fn config(&self) -> &FileConfig {
        &self.inner.config
    }

    /// The absolute directory of this cache's namespace (`<directory>/<namespace>`).
    pub fn directory(&self) -> &Path {
        &self.inner.dir
    }

    /// The absolute root directory ([`FileConfig::directory`], resolved).
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The file that holds (or would hold) `key`.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = cachestack::FileBackend::open(dir.path()).unwrap();
    /// let path = cache.path_for("user:1");
    /// assert!(path.starts_with(cache.directory()));
    /// assert!(path.extension().is_some_and(|e| e == "cache"));
    /// ```
    pub fn path_for(&self, key: &str) -> PathBuf {
        self.inner.path_for(key)
    }

    /// The deadline a write with `expiry` made now gets in this store.
    fn deadline(&self, expiry: Expiry) -> Option<Deadline> {
        expiry.resolve(self.inner.config.settings.default_ttl)
    }

    /// Runs the blocking `f` on tokio's blocking pool (inline outside a runtime). If the caller's
    /// future is dropped, `f` still runs to its end and its result is discarded.
    async fn run<T, F>(&self, op: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return f(&inner) };
        match handle.spawn_blocking(move || f(&inner)).await {
            Ok(result) => result,
            Err(join) => Err(Error::Generic {
                backend: self.inner.config.settings.name.clone(),
                source: format!("file cache operation `{op}` did not complete: {join}").into(),
            }),
        }
    }
}

#[async_trait]
impl Backend for FileStore {
    fn name(&self) -> &str {
        &self.inner.config.settings.name
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        let key = key.to_owned();
        self.run("get", move |s| s.get_one(&key)).await
    }

    async fn set(&self, key: &str, value: Value, expiry: Expiry) -> Result<()> {
        let record = self.inner.record(key, &value, self.deadline(expiry))?;
        let key = key.to_owned();
        let write = move |s: &Inner| {
            s.set_one(&key, &record)?;
            s.maintain();
            Ok(())
        };
        self.run("set", write).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let key = key.to_owned();
        self.run("delete", move |s| s.delete_one(&key)).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let key = key.to_owned();
        self.run("exists", move |s| s.exists_one(&key)).await
    }

    async fn clear(&self) -> Result<()> {
        self.run("clear", Inner::clear_all).await
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        let owned: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        self.run("get_many", move |s| owned.iter().map(|key| s.get_one(key)).collect()).await
    }

    async fn set_many(&self, entries: &[(&str, Value)], expiry: Expiry) -> Result<()> {
        let deadline = self.deadline(expiry);
        let records = entries
            .iter()
            .map(|(key, value)| Ok(((*key).to_owned(), self.inner.record(key, value, deadline)?)))
            .collect::<Result<Vec<(String, Vec<u8>)>>>()?;
        let write = move |s: &Inner| {
            let written = records.iter().try_for_each(|(key, record)| s.set_one(key, record));
            s.maintain();
            written
        };
        self.run("set_many", write).await
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        let owned: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        let remove = move |s: &Inner| {
            owned.iter().try_fold(0u64, |removed, key| Ok(removed.saturating_add(u64::from(s.delete_one(key)?))))
        };
        self.run("delete_many", remove).await
    }

    async fn purge_expired(&self) -> Result<u64> {
        let purge = |s: &Inner| {
            let guard = s.sweep.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            s.sweep_locked(&guard, true).map(|report| report.expired)
        };
        self.run("purge_expired", purge).await
    }

    async fn set_if_absent(&self, key: &str, value: Value, expiry: Expiry) -> Result<bool> {
        let record = self.inner.record(key, &value, self.deadline(expiry))?;
        let key = key.to_owned();
        let write = move |s: &Inner| {
            let stored = s.insert_if_absent(&key, &record)?;
            s.maintain();
            Ok(stored)
        };
        self.run("set_if_absent", write).await
    }

    async fn incr(&self, key: &str, delta: i64, expiry: Expiry) -> Result<i64> {
        let (key, deadline) = (key.to_owned(), self.deadline(expiry));
        self.run("incr", move |s| s.add(&key, delta, deadline)).await
    }

    async fn expire(&self, key: &str, expiry: Expiry) -> Result<bool> {
        let (key, deadline) = (key.to_owned(), self.deadline(expiry));
        self.run("expire", move |s| s.re_expire(&key, deadline)).await
    }

    /// Walks the namespace (in a blocking task), then hands the keys over in batches.
    async fn keys_matching(&self, pattern: &KeyPattern, batch: usize, visit: &mut KeyVisitor<'_>) -> Result<()> {
        let owned = pattern.clone();
        let keys = self.run("keys_matching", move |s| s.matching_keys(&owned)).await?;
        for chunk in keys.chunks(batch.max(1)) {
            if !visit(chunk.to_vec()) {
                break;
            }
        }
        Ok(())
    }

    async fn delete_matching(&self, pattern: &KeyPattern) -> Result<u64> {
        let owned = pattern.clone();
        self.run("delete_matching", move |s| s.remove_matching(&owned)).await
    }

    fn stats(&self) -> BackendStats {
        let s = &self.inner;
        let mut stats = s.counters.snapshot(&s.config.settings.name);
        stats.entries = Some(s.entries.load(Relaxed));
        let mut stats = stats
            .with_detail("directory", s.dir.display())
            .with_detail("namespace", &s.config.settings.namespace)
            .with_detail("bytes_on_disk", s.bytes.load(Relaxed))
            .with_detail("codec", s.config.settings.format.codec.name())
            .with_detail("signed", s.config.settings.format.signer.is_some());
        if let Some(max) = s.config.max_entries {
            stats = stats.with_detail("max_entries", max);
        }
        if let Some(max) = s.config.max_bytes {
            stats = stats.with_detail("max_bytes", max);
        }
        if let Some(ttl) = s.config.settings.default_ttl {
            stats = stats.with_detail("default_ttl", crate::ttl::format_ttl(ttl));
        }
        if let Some(interval) = s.config.auto_purge_interval {
            stats = stats.with_detail("auto_purge_interval", crate::ttl::format_ttl(interval));
        }
        stats
    }

    fn default_ttl(&self) -> Option<Duration> {
        self.inner.config.settings.default_ttl
    }

    fn signing(&self) -> crate::store::Signing {
        crate::store::Signing::of(&self.inner.config.settings.format)
    }
}

impl Inner {
    fn io(&self, what: &str, path: &Path, err: io::Error) -> Error {
        io_error(&self.config.settings.name, what, path, err)
    }

    fn limited(&self) -> bool {
        self.config.max_entries.is_some() || self.config.max_bytes.is_some()
    }
}

fn io_error(backend: &str, what: &str, path: &Path, err: io::Error) -> Error {
    Error::Io {
        backend: backend.to_string(),
        source: io::Error::new(err.kind(), format!("{what} {}: {err}", path.display())),
    }
}
