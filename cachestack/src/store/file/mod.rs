//! File backend: one file per key, written atomically, under sharded directories. The layout,
//! the file format and the concurrency rules are documented on [`FileBackend`].

use std::fs::{self, File, Metadata};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::expiry::{Deadline, Expiry};
use crate::store::{Backend, BackendStats, Counters, Entry};
use crate::value::envelope::{read_header, ValueFormat};
use crate::value::Value;

/// Magic and file format version at the start of every entry file.
const FILE_MAGIC: [u8; 4] = *b"CSF\x01";
/// Bytes before the key: magic, checksum, key length.
const FILE_HEADER_LEN: usize = 16;
/// Fixed header of the value envelope (see `envelope.rs`).
const ENVELOPE_HEADER_LEN: usize = 25;
/// Extension of entry files.
const ENTRY_SUFFIX: &str = ".cache";
/// Prefix of temporary files (writes in progress, or left behind by a crashed writer).
const TEMP_PREFIX: &str = ".cstmp";

/// Settings of a [`FileBackend`].
///
/// The struct is `#[non_exhaustive]`: start from [`FileConfig::new`] (or `Default`) and chain the
/// `with_*` methods, or assign the public fields.
///
/// ```
/// use std::time::Duration;
/// use cachestack::{FileBackend, FileConfig};
///
/// let dir = tempfile::tempdir().unwrap();
/// let config = FileConfig::new(dir.path())
///     .with_namespace("reports")
///     .with_default_ttl(Duration::from_secs(3600))
///     .with_max_entries(10_000)
///     .with_auto_purge_interval(Duration::from_secs(600));
/// let cache = FileBackend::new(config).unwrap();
/// assert!(cache.directory().ends_with("reports"));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FileConfig {
    /// Root directory, created if missing and resolved to an absolute path at construction.
    /// Default: `cachestack` under the system temporary directory.
    pub directory: PathBuf,
    /// Subdirectory of `directory` holding this cache's entries; [`Backend::clear`] empties only
    /// it. 1 to 64 characters from `A-Z a-z 0-9 _ - .`, not starting with a dot. Default
    /// `"default"`.
    pub namespace: String,
    /// TTL for writes that give none. `None`: entries never expire.
    pub default_ttl: Option<Duration>,
    /// Codec, compression, signing and size limit of stored values.
    pub format: ValueFormat,
    /// Turn I/O errors into misses and no-ops (counted in stats and logged) instead of errors.
    pub silent: bool,
    /// Passive purge: a write that finds this much time passed since the last purge runs
    /// [`Backend::purge_expired`] inline (only one purge runs at a time; a write that finds one
    /// running skips it). `None`: purge only when asked. `Some(Duration::ZERO)` purges after
    /// every write.
    pub auto_purge_interval: Option<Duration>,
    /// Bound on the bytes of all entry files of the namespace; least recently used entries are
    /// evicted beyond it.
    pub max_bytes: Option<u64>,
    /// Bound on the number of entry files of the namespace; least recently used entries are
    /// evicted beyond it.
    pub max_entries: Option<u64>,
    /// Temporary files older than this are leftovers of crashed writers and are removed by
    /// purges and [`Backend::clear`]. Default 10 minutes.
    pub temp_max_age: Duration,
    /// Name shown in stats and logs. Default `"file"`.
    pub name: String,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            directory: std::env::temp_dir().join("cachestack"),
            namespace: "default".into(),
            default_ttl: None,
            format: ValueFormat::default(),
            silent: false,
            auto_purge_interval: None,
            max_bytes: None,
            max_entries: None,
            temp_max_age: Duration::from_secs(600),
            name: "file".into(),
        }
    }
}

impl FileConfig {
    /// Default settings with `directory` as the root.
    ///
    /// ```
    /// let config = cachestack::FileConfig::new("/var/cache/app");
    /// assert_eq!(config.namespace, "default");
    /// ```
    pub fn new(directory: impl Into<PathBuf>) -> Self {
        FileConfig { directory: directory.into(), ..FileConfig::default() }
    }

    /// Sets [`FileConfig::namespace`].
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Sets [`FileConfig::default_ttl`].
    pub fn with_default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = Some(ttl);
        self
    }

    /// Sets [`FileConfig::format`].
    pub fn with_format(mut self, format: ValueFormat) -> Self {
        self.format = format;
        self
    }

    /// Sets [`FileConfig::silent`].
    pub fn with_silent(mut self, silent: bool) -> Self {
        self.silent = silent;
        self
    }

    /// Sets [`FileConfig::auto_purge_interval`].
    pub fn with_auto_purge_interval(mut self, interval: Duration) -> Self {
        self.auto_purge_interval = Some(interval);
        self
    }

    /// Sets [`FileConfig::max_bytes`].
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = Some(max_bytes);
        self
    }

    /// Sets [`FileConfig::max_entries`].
    pub fn with_max_entries(mut self, max_entries: u64) -> Self {
        self.max_entries = Some(max_entries);
        self
    }

    /// Sets [`FileConfig::temp_max_age`].
    pub fn with_temp_max_age(mut self, age: Duration) -> Self {
        self.temp_max_age = age;
        self
    }

    /// Sets [`FileConfig::name`].
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
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
/// - Stats: hits, misses, writes, deletes, errors (I/O failures and rejected files), evictions;
///   `entries` and the `bytes_on_disk` detail are the approximate counters above; the details
///   also name the `directory` and `namespace`.
///
/// Construction creates the directory, checks that it is writable, and lists it once to count
/// the entries (one `stat` per file).
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
/// | 16+k | .. | the value envelope ([`ValueFormat::seal`]: codec, type fingerprint, expiry, payload, optional HMAC) |
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
/// Every operation runs on tokio's blocking pool (`spawn_blocking`, one task per call, including
/// the bulk calls), so file I/O never blocks the async executor. Outside a tokio runtime the call
/// runs inline.
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
pub struct FileBackend {
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

impl std::fmt::Debug for FileBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileBackend")
            .field("directory", &self.inner.dir)
            .field("config", &self.inner.config)
            .field("entries", &self.inner.entries.load(Relaxed))
            .finish()
    }
}

impl FileBackend {
    /// A file cache with the given settings: validates them, creates the namespace directory if
    /// needed, checks it is writable, and counts the entries already there.
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
    /// ```
    pub fn new(config: FileConfig) -> Result<Self> {
        validate_namespace(&config.namespace)?;
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
        let dir = root.join(&config.namespace);
        fs::create_dir_all(&dir).map_err(|e| io_error(&config.name, "cannot create cache directory", &dir, e))?;
        // Resolve `..` and symlinks once the directory exists. (On Windows `canonicalize` returns
        // verbatim `\\?\` paths, so the absolute path is kept as it is.)
        #[cfg(not(windows))]
        let (root, dir) = {
            let canonical = |p: &Path| {
                fs::canonicalize(p).map_err(|e| io_error(&config.name, "cannot resolve cache directory", p, e))
            };
            (canonical(&root)?, canonical(&dir)?)
        };
        let probe = tempfile::Builder::new().prefix(TEMP_PREFIX).tempfile_in(&dir);
        if let Err(e) = probe {
            return Err(io_error(&config.name, "cache directory is not writable", &dir, e));
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
        Ok(FileBackend { inner: Arc::new(inner) })
    }

    /// A file cache in `directory` with default settings (namespace `"default"`, no TTL, no
    /// bound).
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = cachestack::FileBackend::open(dir.path()).unwrap();
    /// assert!(cache.directory().is_absolute());
    /// ```
    pub fn open(directory: impl Into<PathBuf>) -> Result<Self> {
        Self::new(FileConfig::new(directory))
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

    /// Runs `f` on tokio's blocking pool (inline outside a runtime). `f` applies the silent
    /// policy itself; `fallback` is the answer when the blocking task itself fails (it panicked,
    /// or the runtime is shutting down) in silent mode.
    async fn run<T, F>(&self, op: &'static str, f: F, fallback: impl FnOnce() -> T) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return f(&inner) };
        match handle.spawn_blocking(move || f(&inner)).await {
            Ok(result) => result,
            Err(join) => {
                let err = Error::Generic {
                    backend: self.inner.config.name.clone(),
                    source: format!("file cache operation `{op}` did not complete: {join}").into(),
                };
                self.inner.absorb(op, Err(err), fallback)
            }
        }
    }
}

#[async_trait]
impl Backend for FileBackend {
    fn name(&self) -> &str {
        &self.inner.config.name
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        let key = key.to_owned();
        self.run(
            "get",
            move |s| s.get_absorbed(&key),
            || {
                self.inner.counters.record_lookup(false);
                None
            },
        )
        .await
    }

    async fn set(&self, key: &str, value: Value, expiry: Expiry) -> Result<()> {
        let ttl = expiry.legacy_ttl();
        let key = key.to_owned();
        let write = move |s: &Inner| {
            let written = s.set_absorbed(&key, &value, ttl);
            s.maintain();
            written
        };
        self.run("set", write, || ()).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let key = key.to_owned();
        self.run("delete", move |s| s.delete_absorbed(&key), || false).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let key = key.to_owned();
        self.run("exists", move |s| s.absorb("exists", s.exists_one(&key), || false), || false).await
    }

    async fn clear(&self) -> Result<()> {
        self.run("clear", |s| s.absorb("clear", s.clear_all(), || ()), || ()).await
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        let owned: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        let n = keys.len();
        self.run(
            "get_many",
            move |s| owned.iter().map(|key| s.get_absorbed(key)).collect(),
            || {
                self.inner.counters.record_lookups(n as u64, 0);
                vec![None; n]
            },
        )
        .await
    }

    async fn set_many(&self, entries: &[(&str, Value)], expiry: Expiry) -> Result<()> {
        let ttl = expiry.legacy_ttl();
        let owned: Vec<(String, Value)> = entries.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        let write = move |s: &Inner| {
            let written = owned.iter().try_for_each(|(key, value)| s.set_absorbed(key, value, ttl));
            s.maintain();
            written
        };
        self.run("set_many", write, || ()).await
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        let owned: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        let remove = move |s: &Inner| {
            owned.iter().try_fold(0u64, |removed, key| Ok(removed + u64::from(s.delete_absorbed(key)?)))
        };
        self.run("delete_many", remove, || 0).await
    }

    async fn purge_expired(&self) -> Result<u64> {
        let purge = |s: &Inner| {
            let guard = s.sweep.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let swept = s.sweep_locked(&guard, true);
            s.absorb("purge_expired", swept.map(|report| report.expired), || 0)
        };
        self.run("purge_expired", purge, || 0).await
    }

    fn stats(&self) -> BackendStats {
        let s = &self.inner;
        let mut stats = s.counters.snapshot(&s.config.name);
        stats.entries = Some(s.entries.load(Relaxed));
        let mut stats = stats
            .with_detail("directory", s.dir.display())
            .with_detail("namespace", &s.config.namespace)
            .with_detail("bytes_on_disk", s.bytes.load(Relaxed))
            .with_detail("codec", s.config.format.codec.name())
            .with_detail("signed", s.config.format.signer.is_some());
        if let Some(max) = s.config.max_entries {
            stats = stats.with_detail("max_entries", max);
        }
        if let Some(max) = s.config.max_bytes {
            stats = stats.with_detail("max_bytes", max);
        }
        if let Some(ttl) = s.config.default_ttl {
            stats = stats.with_detail("default_ttl", crate::ttl::format_ttl(ttl));
        }
        if let Some(interval) = s.config.auto_purge_interval {
            stats = stats.with_detail("auto_purge_interval", crate::ttl::format_ttl(interval));
        }
        stats
    }
}

/// What one sweep of the namespace did.
#[derive(Debug, Default)]
struct SweepReport {
    expired: u64,
    evicted: u64,
}

/// What a read found in an entry file.
enum Found {
    Live(Entry),
    Expired,
}

impl Inner {
    fn absorb<T>(&self, op: &'static str, result: Result<T>, fallback: impl FnOnce() -> T) -> Result<T> {
        self.counters.absorb(&self.config.name, op, self.config.silent, result, fallback)
    }

    fn io(&self, what: &str, path: &Path, err: io::Error) -> Error {
        io_error(&self.config.name, what, path, err)
    }

    fn path_for(&self, key: &str) -> PathBuf {
        let hash = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(key.as_bytes()));
        let mut path = self.dir.join(&hash[..2]);
        path.push(format!("{hash}{ENTRY_SUFFIX}"));
        path
    }

    fn limited(&self) -> bool {
        self.config.max_entries.is_some() || self.config.max_bytes.is_some()
    }

    // ---- reads -------------------------------------------------------------------------------

    /// `get_one` under the silent policy, counting a miss when an error is absorbed.
    fn get_absorbed(&self, key: &str) -> Result<Option<Entry>> {
        let found = self.get_one(key);
        self.absorb("get", found, || {
            self.counters.record_lookup(false);
            None
        })
    }

    fn get_one(&self, key: &str) -> Result<Option<Entry>> {
        let found = self.read_entry(key, self.limited())?;
        let entry = match found {
            Some(Found::Live(entry)) => Some(entry),
            Some(Found::Expired) | None => None,
        };
        self.counters.record_lookup(entry.is_some());
        Ok(entry)
    }

    fn exists_one(&self, key: &str) -> Result<bool> {
        Ok(matches!(self.read_entry(key, false)?, Some(Found::Live(_))))
    }

    /// Reads and checks the file of `key`. Expired and unusable files are removed (an unusable
    /// one is also counted as an error); only I/O failures are errors.
    fn read_entry(&self, key: &str, touch: bool) -> Result<Option<Found>> {
        let path = self.path_for(key);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io("cannot open", &path, e)),
        };
        let meta = file.metadata().map_err(|e| self.io("cannot stat", &path, e))?;
        let limit = self.max_file_len(key);
        if meta.len() > limit {
            let err =
                Error::invalid(format!("file of {} bytes exceeds the {limit} bytes a value may take", meta.len()));
            self.reject(key, &path, &meta, &err);
            return Ok(None);
        }
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        if let Err(e) = file.read_to_end(&mut bytes) {
            return Err(self.io("cannot read", &path, e));
        }
        let now = SystemTime::now();
        match self.decode(key, &bytes, now) {
            Ok(Some((value, expires))) => {
                if touch {
                    touch_file(&file, &path, now);
                }
                Ok(Some(Found::Live(Entry::new(value, expires.map(Deadline::at)))))
            }
            Ok(None) => {
                self.remove_if_same(&path, &meta);
                Ok(Some(Found::Expired))
            }
            Err(err) => {
                self.reject(key, &path, &meta, &err);
                Ok(None)
            }
        }
    }

    /// The value in `bytes` with its expiry, `None` when it has expired.
    fn decode(&self, key: &str, bytes: &[u8], now: SystemTime) -> Result<Option<(Value, Option<SystemTime>)>> {
        let envelope = parse_file(key, bytes)?;
        let expires = read_header(envelope)?.expires();
        if expires.is_some_and(|t| t <= now) {
            return Ok(None);
        }
        let (value, expires) = self.config.format.open(key, envelope)?;
        Ok(Some((value, expires)))
    }

    /// Counts and logs an unusable file, then removes it.
    fn reject(&self, key: &str, path: &Path, meta: &Metadata, err: &Error) {
        self.counters.record_invalid(&self.config.name, key, err);
        self.remove_if_same(path, meta);
    }

    /// Largest entry file a value for `key` can produce under the configured value limit.
    fn max_file_len(&self, key: &str) -> u64 {
        let value = self.config.format.max_value_bytes as u64;
        // Headers, key, HMAC, plus the worst-case growth of compressing incompressible data.
        (FILE_HEADER_LEN + ENVELOPE_HEADER_LEN + 32 + 1024) as u64 + key.len() as u64 + value + value / 128
    }

    // ---- writes ------------------------------------------------------------------------------

    /// `set_one` under the silent policy.
    fn set_absorbed(&self, key: &str, value: &Value, ttl: Option<Duration>) -> Result<()> {
        let written = self.set_one(key, value, ttl);
        self.absorb("set", written, || ())
    }

    fn set_one(&self, key: &str, value: &Value, ttl: Option<Duration>) -> Result<()> {
        let now = SystemTime::now();
        let expires = ttl.or(self.config.default_ttl).and_then(|ttl| now.checked_add(ttl));
        let envelope = self.config.format.seal(key, value, expires)?;
        let bytes = encode_file(key, &envelope)?;
        if let Some(max) = self.config.max_bytes {
            if bytes.len() as u64 > max {
                return Err(Error::ValueTooLarge {
                    size: bytes.len(),
                    limit: usize::try_from(max).unwrap_or(usize::MAX),
                });
            }
        }
        let path = self.path_for(key);
        let shard = path.parent().unwrap_or(&self.dir);
        let mut temp = match tempfile::Builder::new().prefix(TEMP_PREFIX).tempfile_in(shard) {
            Ok(temp) => temp,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(shard).map_err(|e| self.io("cannot create shard directory", shard, e))?;
                tempfile::Builder::new()
                    .prefix(TEMP_PREFIX)
                    .tempfile_in(shard)
                    .map_err(|e| self.io("cannot create a temporary file in", shard, e))?
            }
            Err(e) => return Err(self.io("cannot create a temporary file in", shard, e)),
        };
        temp.write_all(&bytes).map_err(|e| self.io("cannot write", temp.path(), e))?;
        // The modification time is the recency used for LRU eviction; set it from the same clock
        // read hits use (the kernel stamps files with a coarser clock).
        let _ = temp.as_file().set_modified(now);
        let previous = fs::symlink_metadata(&path).ok().filter(Metadata::is_file);
        temp.persist(&path).map_err(|e| self.io("cannot rename a temporary file to", &path, e.error))?;
        self.counters.record_write();
        let new_len = bytes.len() as u64;
        match previous {
            Some(old) => {
                self.bytes.fetch_add(new_len, Relaxed);
                saturating_sub(&self.bytes, old.len());
            }
            None => {
                self.entries.fetch_add(1, Relaxed);
                self.bytes.fetch_add(new_len, Relaxed);
            }
        }
        Ok(())
    }

    /// After writes: the passive purge when it is due, eviction when over a bound. Runs inline in
    /// the writing call (already on the blocking pool); a write that finds a sweep running skips
    /// it. Failures are counted and logged; the write itself has succeeded.
    fn maintain(&self) {
        let purge_due = self.config.auto_purge_interval.is_some_and(|interval| {
            self.last_purge.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).elapsed() >= interval
        });
        if !purge_due && !self.over_limit() {
            return;
        }
        let guard = match self.sweep.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::WouldBlock) => return,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        };
        let swept = self.sweep_locked(&guard, purge_due);
        if let Err(err) = swept {
            self.counters.record_error();
            tracing::warn!(backend = %self.config.name, error = %err, "cachestack: file cache sweep failed");
        }
    }

    fn over_limit(&self) -> bool {
        self.config.max_entries.is_some_and(|max| self.entries.load(Relaxed) > max)
            || self.config.max_bytes.is_some_and(|max| self.bytes.load(Relaxed) > max)
    }

    // ---- deletes -----------------------------------------------------------------------------

    /// `delete_one` under the silent policy.
    fn delete_absorbed(&self, key: &str) -> Result<bool> {
        let removed = self.delete_one(key);
        self.absorb("delete", removed, || false)
    }

    fn delete_one(&self, key: &str) -> Result<bool> {
        self.counters.record_delete();
        let path = self.path_for(key);
        let len = fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
        match fs::remove_file(&path) {
            Ok(()) => {
                self.forget(len);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.io("cannot remove", &path, e)),
        }
    }

    /// Removes the file at `path` if it is still the file described by `meta`: a file another
    /// writer has just renamed into place is left alone. Failures are ignored (another process
    /// may have removed it first).
    fn remove_if_same(&self, path: &Path, meta: &Metadata) -> bool {
        let same = fs::symlink_metadata(path).is_ok_and(|current| same_file(&current, meta));
        if same && fs::remove_file(path).is_ok() {
            self.forget(meta.len());
            return true;
        }
        false
    }

    /// Accounts for an entry file of `len` bytes that was removed.
    fn forget(&self, len: u64) {
        saturating_sub(&self.entries, 1);
        saturating_sub(&self.bytes, len);
    }

    fn clear_all(&self) -> Result<()> {
        let mut first_error = None;
        let now = SystemTime::now();
        self.walk(|kind, path, meta| {
            let remove = match kind {
                FileKind::Entry => true,
                FileKind::Temp => is_stale(&meta, now, self.config.temp_max_age),
            };
            if remove {
                if let Err(e) = fs::remove_file(&path) {
                    if e.kind() != io::ErrorKind::NotFound && first_error.is_none() {
                        first_error = Some(self.io("cannot remove", &path, e));
                    }
                }
            }
        })
        .map_err(|e| self.io("cannot list cache directory", &self.dir, e))?;
        if let Some(err) = first_error {
            return Err(err);
        }
        // Recount rather than assume zero: other processes may be writing.
        let (entries, bytes) = self.count().map_err(|e| self.io("cannot list cache directory", &self.dir, e))?;
        self.entries.store(entries, Relaxed);
        self.bytes.store(bytes, Relaxed);
        Ok(())
    }

    // ---- sweeps ------------------------------------------------------------------------------

    /// One pass over the namespace, holding the sweep lock: removes expired and unreadable
    /// entries and stale temporary files, recounts entries and bytes, and evicts the least
    /// recently used entries while over a bound. `purge` records the pass as a purge (for the
    /// auto-purge interval).
    fn sweep_locked(&self, _guard: &MutexGuard<'_, ()>, purge: bool) -> Result<SweepReport> {
        if purge {
            *self.last_purge.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Instant::now();
        }
        let now = SystemTime::now();
        let mut report = SweepReport::default();
        let mut live: Vec<(SystemTime, PathBuf, Metadata)> = Vec::new();
        let mut stale_temps = 0u64;
        let mut unreadable = 0u64;
        self.walk(|kind, path, meta| match kind {
            FileKind::Temp => {
                if is_stale(&meta, now, self.config.temp_max_age) && fs::remove_file(&path).is_ok() {
                    stale_temps += 1;
                }
            }
            FileKind::Entry => match read_expiry(&path) {
                Ok(Some(expires)) if expires <= now => {
                    if remove_same(&path, &meta) {
                        report.expired += 1;
                    }
                }
                Ok(_) => live.push((meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), path, meta)),
                Err(ReadError::Gone) => {}
                Err(ReadError::Invalid(err)) => {
                    if remove_same(&path, &meta) {
                        unreadable += 1;
                        self.counters.record_invalid(&self.config.name, &path.display().to_string(), &err);
                    }
                }
                Err(ReadError::Io(err)) => {
                    tracing::debug!(backend = %self.config.name, path = %path.display(), error = %err, "cachestack: file cache sweep skipped a file");
                    live.push((meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), path, meta));
                }
            },
        })
        .map_err(|e| self.io("cannot list cache directory", &self.dir, e))?;

        let mut entries = live.len() as u64;
        let mut bytes: u64 = live.iter().map(|(_, _, meta)| meta.len()).sum();
        let over = |entries: u64, bytes: u64, slack: bool| {
            let bound = |max: u64| if slack { max - max / 10 } else { max };
            self.config.max_entries.is_some_and(|max| entries > bound(max))
                || self.config.max_bytes.is_some_and(|max| bytes > bound(max))
        };
        if over(entries, bytes, false) {
            // Oldest first; evict until 10% under the bound so the next sweep is far away.
            live.sort_by_key(|(modified, _, _)| *modified);
            for (_, path, meta) in &live {
                if !over(entries, bytes, true) {
                    break;
                }
                if remove_same(path, meta) {
                    report.evicted += 1;
                }
                // Removed here or by someone else: either way it no longer counts.
                entries -= 1;
                bytes = bytes.saturating_sub(meta.len());
            }
            self.counters.record_evictions(report.evicted);
        }
        self.entries.store(entries, Relaxed);
        self.bytes.store(bytes, Relaxed);
        if report.expired + report.evicted + stale_temps + unreadable > 0 {
            tracing::debug!(
                backend = %self.config.name,
                expired = report.expired,
                evicted = report.evicted,
                stale_temps,
                unreadable,
                "cachestack: file cache sweep"
            );
        }
        Ok(report)
    }

    /// Entry files and their total size, by listing the namespace.
    fn count(&self) -> io::Result<(u64, u64)> {
        let (mut entries, mut bytes) = (0, 0);
        self.walk(|kind, _, meta| {
            if kind == FileKind::Entry {
                entries += 1;
                bytes += meta.len();
            }
        })?;
        Ok((entries, bytes))
    }

    /// Calls `f` for every regular file this backend may have created in the namespace: shard
    /// directories named by two hex digits, entry and temporary files named as this module names
    /// them. Symbolic links are never followed and other files are never touched. Files that
    /// vanish while listing are skipped.
    fn walk(&self, mut f: impl FnMut(FileKind, PathBuf, Metadata)) -> io::Result<()> {
        let shards = match fs::read_dir(&self.dir) {
            Ok(shards) => shards,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for shard in shards {
            let shard = shard?;
            if !is_shard_name(&shard.file_name()) || !shard.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let files = match fs::read_dir(shard.path()) {
                Ok(files) => files,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for file in files {
                let Ok(file) = file else { continue };
                let Some(kind) = classify(&file.file_name()) else { continue };
                // `DirEntry::metadata` does not follow symbolic links.
                let Ok(meta) = file.metadata() else { continue };
                if meta.is_file() {
                    f(kind, file.path(), meta);
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Entry,
    Temp,
}

fn classify(name: &std::ffi::OsStr) -> Option<FileKind> {
    let name = name.to_str()?;
    if name.starts_with(TEMP_PREFIX) {
        return Some(FileKind::Temp);
    }
    let stem = name.strip_suffix(ENTRY_SUFFIX)?;
    (stem.len() == 32 && is_lower_hex(stem)).then_some(FileKind::Entry)
}

fn is_shard_name(name: &std::ffi::OsStr) -> bool {
    name.to_str().is_some_and(|n| n.len() == 2 && is_lower_hex(n))
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_stale(meta: &Metadata, now: SystemTime, max_age: Duration) -> bool {
    meta.modified().ok().and_then(|modified| now.duration_since(modified).ok()).is_some_and(|age| age >= max_age)
}

/// Checks a namespace: 1 to 64 characters from `A-Z a-z 0-9 _ - .`, not starting with a dot
/// (so never `.`, `..` or a path).
fn validate_namespace(namespace: &str) -> Result<()> {
    let valid = !namespace.is_empty()
        && namespace.len() <= 64
        && !namespace.starts_with('.')
        && namespace.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(Error::config(format!(
            "file cache: invalid namespace {namespace:?}: use 1 to 64 characters from A-Z a-z 0-9 _ - . \
             not starting with a dot (no path separators)"
        )))
    }
}

fn io_error(backend: &str, what: &str, path: &Path, err: io::Error) -> Error {
    Error::Io {
        backend: backend.to_string(),
        source: io::Error::new(err.kind(), format!("{what} {}: {err}", path.display())),
    }
}

/// Frames an envelope into the bytes of an entry file.
fn encode_file(key: &str, envelope: &[u8]) -> Result<Vec<u8>> {
    let key_len =
        u32::try_from(key.len()).map_err(|_| Error::ValueTooLarge { size: key.len(), limit: u32::MAX as usize })?;
    let mut out = Vec::with_capacity(FILE_HEADER_LEN + key.len() + envelope.len());
    out.extend_from_slice(&FILE_MAGIC);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(envelope);
    let checksum = xxhash_rust::xxh3::xxh3_64(&out[12..]);
    out[4..12].copy_from_slice(&checksum.to_le_bytes());
    Ok(out)
}

/// Checks the framing of an entry file read for `key` and returns its envelope.
fn parse_file<'a>(key: &str, bytes: &'a [u8]) -> Result<&'a [u8]> {
    if bytes.len() < FILE_HEADER_LEN {
        return Err(Error::invalid(format!(
            "truncated file: {} bytes, the header alone is {FILE_HEADER_LEN}",
            bytes.len()
        )));
    }
    if bytes[..3] != FILE_MAGIC[..3] {
        return Err(Error::invalid("not a cachestack file (bad magic)"));
    }
    if bytes[3] != FILE_MAGIC[3] {
        return Err(Error::invalid(format!("unsupported file format version {}", bytes[3])));
    }
    let mut checksum = [0u8; 8];
    checksum.copy_from_slice(&bytes[4..12]);
    if u64::from_le_bytes(checksum) != xxhash_rust::xxh3::xxh3_64(&bytes[12..]) {
        return Err(Error::invalid("checksum mismatch (truncated or corrupt file)"));
    }
    let key_len = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) as usize;
    let Some(stored_key) = bytes.get(FILE_HEADER_LEN..FILE_HEADER_LEN + key_len) else {
        return Err(Error::invalid("key length runs past the end of the file"));
    };
    if stored_key != key.as_bytes() {
        return Err(Error::invalid(format!(
            "the file holds another key ({:?}): misplaced file or hash collision",
            String::from_utf8_lossy(stored_key)
        )));
    }
    Ok(&bytes[FILE_HEADER_LEN + key_len..])
}

enum ReadError {
    /// The file disappeared (removed by another process).
    Gone,
    /// The file is not a valid entry.
    Invalid(Error),
    /// Reading failed.
    Io(io::Error),
}

/// Reads only the expiry of an entry file (framing and envelope header, not the payload, no
/// checksum: reads check that).
fn read_expiry(path: &Path) -> std::result::Result<Option<SystemTime>, ReadError> {
    let io = |e: io::Error| match e.kind() {
        io::ErrorKind::NotFound => ReadError::Gone,
        io::ErrorKind::UnexpectedEof => ReadError::Invalid(Error::invalid("truncated file")),
        _ => ReadError::Io(e),
    };
    let mut file = File::open(path).map_err(io)?;
    let mut head = [0u8; FILE_HEADER_LEN];
    file.read_exact(&mut head).map_err(io)?;
    if head[..4] != FILE_MAGIC {
        return Err(ReadError::Invalid(Error::invalid("not a cachestack file (bad magic or version)")));
    }
    let key_len = u64::from(u32::from_le_bytes([head[12], head[13], head[14], head[15]]));
    file.seek(SeekFrom::Start(FILE_HEADER_LEN as u64 + key_len)).map_err(io)?;
    let mut envelope = [0u8; ENVELOPE_HEADER_LEN];
    file.read_exact(&mut envelope).map_err(io)?;
    read_header(&envelope).map(|header| header.expires()).map_err(ReadError::Invalid)
}

/// Removes `path` if it is still the file `meta` describes; true if this call removed it.
fn remove_same(path: &Path, meta: &Metadata) -> bool {
    fs::symlink_metadata(path).is_ok_and(|current| same_file(&current, meta)) && fs::remove_file(path).is_ok()
}

#[cfg(unix)]
fn same_file(a: &Metadata, b: &Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(a: &Metadata, b: &Metadata) -> bool {
    a.len() == b.len() && a.modified().ok() == b.modified().ok()
}

/// Marks a read hit for LRU eviction. Best effort: a file owned by another user may refuse.
fn touch_file(file: &File, path: &Path, now: SystemTime) {
    if file.set_modified(now).is_err() {
        // Some platforms (Windows) need a handle opened for writing to change times.
        let _ = fs::OpenOptions::new().write(true).open(path).and_then(|f| f.set_modified(now));
    }
}

fn saturating_sub(counter: &AtomicU64, n: u64) {
    let _ = counter.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(n)));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_plain_names() {
        for ok in ["default", "app-1", "a.b_c", "X"] {
            assert!(validate_namespace(ok).is_ok(), "{ok}");
        }
        let long = "x".repeat(65);
        for bad in ["", ".", "..", ".hidden", "a/b", "a\\b", "../x", "a b", "ü", long.as_str()] {
            assert!(matches!(validate_namespace(bad), Err(Error::Config { .. })), "{bad:?}");
        }
    }

    #[test]
    fn file_framing_rejects_every_truncation_and_flip() {
        let envelope = ValueFormat::default().seal("key", &Value::new("value".to_string()), None).unwrap();
        let bytes = encode_file("key", &envelope).unwrap();
        assert_eq!(parse_file("key", &bytes).unwrap(), envelope.as_slice());
        assert!(parse_file("other", &bytes).is_err());
        for len in 0..bytes.len() {
            assert!(parse_file("key", &bytes[..len]).is_err(), "truncated to {len}");
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                assert!(parse_file("key", &bad).is_err(), "flip of bit {bit} at {i} accepted");
            }
        }
    }

    #[test]
    fn names_are_classified_strictly() {
        let entry = format!("{}{ENTRY_SUFFIX}", "0123456789abcdef".repeat(2));
        assert_eq!(classify(entry.as_ref()), Some(FileKind::Entry));
        assert_eq!(classify(".cstmpAbC123".as_ref()), Some(FileKind::Temp));
        assert_eq!(classify("notes.txt".as_ref()), None);
        assert_eq!(classify(entry.to_uppercase().as_ref()), None);
        assert!(is_shard_name("0f".as_ref()));
        assert!(!is_shard_name("0F".as_ref()) && !is_shard_name("abc".as_ref()));
    }
}
