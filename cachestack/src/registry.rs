//! [`CacheRegistry`]: named caches and a default, configured in code, from URLs or from the
//! environment.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use crate::backplane::Backplane;
use crate::cache::Cache;
use crate::connect::backend_from_url;
use crate::error::{Error, Result};
use crate::store::Backend;
use crate::switches::Commands;
use crate::url::redact_url;

/// Environment variable read for the default cache's URL.
pub const DEFAULT_URL_VAR: &str = "CACHESTACK_URL";

/// Prefix of the environment variables read for named caches: the cache `user-sessions` is read
/// from `CACHESTACK_CACHE_USER_SESSIONS` (upper case, every character that is not a letter or a
/// digit turned into `_`).
pub const NAMED_URL_PREFIX: &str = "CACHESTACK_CACHE_";

/// The bound of [`CacheRegistry::shutdown`] for all caches together.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Entries of the memory cache used as the default when nothing is configured.
pub const FALLBACK_MAX_ENTRIES: u64 = 10_000;

#[derive(Clone)]
struct Registered {
    cache: Cache,
    /// The URL it was built from, with secrets redacted.
    source: Option<String>,
}

/// The name the default cache has in metrics and spans.
pub(crate) const DEFAULT_NAME: &str = "default";

impl Registered {
    /// `cache` registered as `name` (which its store learns, for metrics and spans).
    fn new(name: &str, cache: Cache, source: Option<String>) -> Self {
        cache.backend().bind_cache_name(name);
        Registered { cache, source }
    }
}

#[derive(Default)]
pub(crate) struct State {
    named: HashMap<String, Registered>,
    /// Prefix routes (`"user:"` -> `"users"`), see `routes.rs`.
    pub(crate) routes: crate::routes::Routes,
    default: Option<Registered>,
    /// Runtime switches: per named cache, for the default cache, for all caches.
    switches: HashMap<String, Commands>,
    default_switch: Commands,
    global_switch: Commands,
    /// The backplane set in code, put on every stack registered.
    pub(crate) backplane: Option<Backplane>,
}

/// Named caches and a default cache.
///
/// `#[cached]` functions use the default cache unless they name one with `cache = "name"`.
/// Lookups of a name that was not registered in code fall back to the environment
/// (`CACHESTACK_CACHE_<NAME>`), and the default to `CACHESTACK_URL`; with nothing configured
/// the default is an in-process memory cache of 10 000 entries, so annotated code runs as is.
///
/// ```
/// use cachestack::{Cache, CacheRegistry, MemoryBackend};
///
/// let registry = CacheRegistry::new();
/// registry.register_url("sessions", "mem://?max_entries=1000&ttl=30m").unwrap();
/// registry.register("users", Cache::new(MemoryBackend::with_capacity(50_000)));
/// assert!(registry.get("sessions").is_ok());
/// assert!(registry.get("nope").is_err());
///
/// // An unusable URL is a clear error naming what is wrong:
/// let err = registry.register_url("x", "mem://?max_entries=lots").unwrap_err();
/// assert!(err.to_string().contains("max_entries=lots"));
/// ```
pub struct CacheRegistry {
    /// Shared with the [routed cache](CacheRegistry::routed)s made from this registry.
    shared: Arc<Shared>,
}

struct Shared {
    state: RwLock<State>,
    generation: AtomicU64,
    /// The backplane `CACHESTACK_BACKPLANE_URL` describes, read once.
    env_backplane: OnceLock<Option<Backplane>>,
}

impl std::fmt::Debug for CacheRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.read();
        let mut names: Vec<_> = state.named.iter().map(|(k, r)| (k.clone(), r.source.clone())).collect();
        names.sort();
        f.debug_struct("CacheRegistry")
            .field("named", &names)
            .field("default", &state.default.as_ref().map(|r| r.source.clone()))
            .finish()
    }
}

impl Default for CacheRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl CacheRegistry {
    /// An empty registry (most programs use [`CacheRegistry::global`]).
    pub fn new() -> Self {
        CacheRegistry {
            shared: Arc::new(Shared {
                state: RwLock::new(State::default()),
                generation: AtomicU64::new(1),
                env_backplane: OnceLock::new(),
            }),
        }
    }

    /// Another handle on this registry (the same caches, routes and switches).
    pub(crate) fn handle(&self) -> CacheRegistry {
        CacheRegistry { shared: self.shared.clone() }
    }

    /// The process-wide registry that `#[cached]` functions use.
    pub fn global() -> &'static CacheRegistry {
        static GLOBAL: OnceLock<CacheRegistry> = OnceLock::new();
        GLOBAL.get_or_init(CacheRegistry::new)
    }

    pub(crate) fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` half-updated (every write is a
        // single insert or replace), so a poisoned lock is safe to keep using.
        self.shared.state.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.shared.state.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The backplane `CACHESTACK_BACKPLANE_URL` describes, once read (see `backplane/registry.rs`).
    pub(crate) fn env_backplane(&self) -> &OnceLock<Option<Backplane>> {
        &self.shared.env_backplane
    }

    pub(crate) fn bump(&self) {
        self.shared.generation.fetch_add(1, Ordering::Release);
    }

    /// A number that changes whenever a cache is registered, replaced or removed, a switch is
    /// flipped or a [route](CacheRegistry::route) changes. Generated code
    /// keeps the `Cache` it resolved together with this number and resolves again only when the
    /// number has moved, so a hit costs one atomic load instead of a map lookup.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    /// Sets which commands `#[cached]` functions using the cache `name` may use (registered or
    /// not yet): [`Commands::NONE`] makes them run their body and neither read nor write,
    /// [`Commands::READS`] / [`Commands::WRITES`] allow one of the two (like cashews'
    /// `disable(Command.GET)`), [`Commands::ALL`] is the default. Takes effect on the next call
    /// of every thread. Direct use of the [`Cache`] is not affected.
    ///
    /// ```
    /// use cachestack::{CacheRegistry, Commands};
    ///
    /// let registry = CacheRegistry::global();
    /// registry.set_commands("reports", Commands::READS);
    /// assert_eq!(registry.commands(Some("reports")), Commands::READS);
    /// registry.disable_all();
    /// assert_eq!(registry.commands(Some("reports")), Commands::NONE);
    /// registry.enable_all();
    /// registry.enable("reports");
    /// assert_eq!(registry.commands(Some("reports")), Commands::ALL);
    /// ```
    pub fn set_commands(&self, name: &str, commands: Commands) {
        let mut state = self.write();
        if commands == Commands::ALL {
            state.switches.remove(name);
        } else {
            state.switches.insert(name.to_string(), commands);
        }
        drop(state);
        self.bump();
    }

    /// [`CacheRegistry::set_commands`] for the default cache (functions that name no cache).
    pub fn set_default_commands(&self, commands: Commands) {
        self.write().default_switch = commands;
        self.bump();
    }

    /// [`CacheRegistry::set_commands`] for every cache: a command is allowed when this switch and
    /// the cache's own both allow it.
    pub fn set_global_commands(&self, commands: Commands) {
        self.write().global_switch = commands;
        self.bump();
    }

    /// `#[cached]` functions using the cache `name` run their body and neither read nor write.
    pub fn disable(&self, name: &str) {
        self.set_commands(name, Commands::NONE);
    }

    /// Undoes [`CacheRegistry::disable`] (and any [`CacheRegistry::set_commands`]) for `name`.
    pub fn enable(&self, name: &str) {
        self.set_commands(name, Commands::ALL);
    }

    /// [`CacheRegistry::disable`] for the default cache.
    pub fn disable_default(&self) {
        self.set_default_commands(Commands::NONE);
    }

    /// [`CacheRegistry::enable`] for the default cache.
    pub fn enable_default(&self) {
        self.set_default_commands(Commands::ALL);
    }

    /// Disables every cache for `#[cached]` functions (the per-cache switches are kept for
    /// [`CacheRegistry::enable_all`]).
    pub fn disable_all(&self) {
        self.set_global_commands(Commands::NONE);
    }

    /// Undoes [`CacheRegistry::disable_all`].
    pub fn enable_all(&self) {
        self.set_global_commands(Commands::ALL);
    }

    /// The commands `#[cached]` functions using the cache `name` (`None`: the default cache) may
    /// use now: the global switch and the cache's own, combined.
    pub fn commands(&self, name: Option<&str>) -> Commands {
        let state = self.read();
        let own = match name {
            Some(name) => state.switches.get(name).copied().unwrap_or_default(),
            None => state.default_switch,
        };
        own.and(state.global_switch)
    }

    /// Registers (or replaces) the cache `name`.
    pub fn register(&self, name: impl Into<String>, cache: Cache) {
        let name = name.into();
        let registered = Registered::new(&name, cache.clone(), None);
        self.write().named.insert(name, registered);
        self.join_backplane(&cache);
        self.bump();
    }

    /// Registers a backend under `name`.
    pub fn register_backend(&self, name: impl Into<String>, backend: impl Backend) {
        self.register(name, Cache::new(backend));
    }

    /// Builds the cache described by `url` and registers it as `name`.
    pub fn register_url(&self, name: impl Into<String>, url: &str) -> Result<Cache> {
        let (name, cache) = (name.into(), Cache::from_url(url)?);
        let registered = Registered::new(&name, cache.clone(), Some(redact_url(url)));
        self.write().named.insert(name, registered);
        self.join_backplane(&cache);
        self.bump();
        Ok(cache)
    }

    /// Makes `cache` the default.
    pub fn set_default(&self, cache: Cache) {
        self.write().default = Some(Registered::new(DEFAULT_NAME, cache.clone(), None));
        self.join_backplane(&cache);
        self.bump();
    }

    /// Builds the cache described by `url` and makes it the default.
    pub fn set_default_url(&self, url: &str) -> Result<Cache> {
        let cache = Cache::from_url(url)?;
        self.write().default = Some(Registered::new(DEFAULT_NAME, cache.clone(), Some(redact_url(url))));
        self.join_backplane(&cache);
        self.bump();
        Ok(cache)
    }

    /// Removes the cache `name`; returns it if it was registered.
    pub fn remove(&self, name: &str) -> Option<Cache> {
        let removed = self.write().named.remove(name).map(|r| r.cache);
        self.bump();
        removed
    }

    /// The cache registered as `name`; if there is none, the one described by the environment
    /// variable `CACHESTACK_CACHE_<NAME>` (registered on first use).
    pub fn get(&self, name: &str) -> Result<Cache> {
        if let Some(found) = self.read().named.get(name) {
            return Ok(found.cache.clone());
        }
        let var = env_var_for(name);
        match std::env::var(&var) {
            Ok(url) => {
                let cache = Cache::from_url(&url)
                    .map_err(|e| Error::config(format!("cache `{name}` from environment variable {var}: {e}")))?;
                let mut state = self.write();
                // Another thread may have registered it meanwhile: keep the first.
                let entry = state
                    .named
                    .entry(name.to_string())
                    .or_insert_with(|| Registered::new(name, cache, Some(redact_url(&url))))
                    .cache
                    .clone();
                drop(state);
                self.join_backplane(&entry);
                self.bump();
                Ok(entry)
            }
            Err(_) => Err(Error::UnknownCache { name: name.to_string() }),
        }
    }

    /// The default cache: the one set with [`CacheRegistry::set_default`], else the one described
    /// by `CACHESTACK_URL`, else an in-process memory cache of 10 000 entries. Fails only when
    /// `CACHESTACK_URL` is set to an unusable URL.
    pub fn try_default_cache(&self) -> Result<Cache> {
        if let Some(found) = &self.read().default {
            return Ok(found.cache.clone());
        }
        let (cache, source) = match std::env::var(DEFAULT_URL_VAR) {
            Ok(url) => (
                Cache::from_url(&url).map_err(|e| {
                    Error::config(format!("default cache from environment variable {DEFAULT_URL_VAR}: {e}"))
                })?,
                Some(redact_url(&url)),
            ),
            Err(_) => (Cache::new(fallback_memory()), None),
        };
        let mut state = self.write();
        let chosen = state.default.get_or_insert_with(|| Registered::new(DEFAULT_NAME, cache, source)).cache.clone();
        drop(state);
        self.join_backplane(&chosen);
        self.bump();
        Ok(chosen)
    }

    /// Like [`CacheRegistry::try_default_cache`], but an unusable `CACHESTACK_URL` is logged and
    /// replaced by the in-process memory cache, so callers always get a cache.
    pub fn default_cache(&self) -> Cache {
        match self.try_default_cache() {
            Ok(cache) => cache,
            Err(err) => {
                tracing::error!(error = %err, "cachestack: falling back to an in-process memory cache");
                let cache = Cache::new(fallback_memory());
                self.set_default(cache.clone());
                cache
            }
        }
    }

    /// For an orderly exit: [closes](Cache::close) every registered cache (the named ones and the
    /// default), all at once, within [`SHUTDOWN_TIMEOUT`]: each stores the writes its write-back
    /// queue still holds and writes through from then on, so nothing written later is lost. Call
    /// it (or [`CacheRegistry::shutdown_blocking`]) before the process exits: queued writes still
    /// waiting then are otherwise lost. Fails with the first cache's error, or with
    /// [`Error::Timeout`] past the bound (the remaining writes carry on in the background, until
    /// the process exits). The caches stay usable.
    ///
    /// ```
    /// use cachestack::{Cache, CacheRegistry, MemoryBackend, TieredCache, WriteBackConfig};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let registry = CacheRegistry::new();
    /// let stack = TieredCache::builder()
    ///     .layer(MemoryBackend::with_capacity(10))
    ///     .layer(MemoryBackend::with_capacity(10))
    ///     .write_back(WriteBackConfig::default())
    ///     .build()
    ///     .unwrap();
    /// registry.register("users", Cache::new(stack));
    /// registry.get("users").unwrap().set("user:1", &"Ada".to_string(), None).await.unwrap();
    /// registry.shutdown().await.unwrap(); // at exit: the queued write is stored
    /// # });
    /// ```
    pub async fn shutdown(&self) -> Result<()> {
        self.shutdown_within(SHUTDOWN_TIMEOUT).await
    }

    /// [`CacheRegistry::shutdown`] with another bound.
    pub async fn shutdown_within(&self, limit: Duration) -> Result<()> {
        let started = std::time::Instant::now();
        let closed = close_all(self.caches(), limit).await;
        // The messages of the last changes (the writes just stored included) reach the others.
        let flushed = match self.backplane() {
            Some(backplane) => backplane.flush(limit.saturating_sub(started.elapsed())).await,
            None => Ok(()),
        };
        closed.and(flushed)
    }

    /// [`CacheRegistry::shutdown`] from synchronous code, such as the end of `main` (see
    /// [`crate::rt::block_on`]; prefer `shutdown().await` inside a runtime).
    ///
    /// ```
    /// cachestack::CacheRegistry::global().shutdown_blocking().unwrap();
    /// ```
    pub fn shutdown_blocking(&self) -> Result<()> {
        let caches = self.caches();
        crate::rt::block_on(close_all(caches, SHUTDOWN_TIMEOUT))?
    }

    /// Every registered cache, once each (a cache registered under two names is one cache).
    fn caches(&self) -> Vec<Cache> {
        self.named_caches().into_iter().map(|(_, cache)| cache).collect()
    }

    /// Every registered cache once, with a name it is registered under (the first in order,
    /// [`DEFAULT_NAME`] for the default cache when it has no other name).
    pub(crate) fn named_caches(&self) -> Vec<(String, Cache)> {
        let state = self.read();
        let mut named: Vec<(&String, &Registered)> = state.named.iter().collect();
        named.sort_by(|a, b| a.0.cmp(b.0));
        let default_name = DEFAULT_NAME.to_owned();
        let all = named.into_iter().chain(state.default.as_ref().map(|r| (&default_name, r)));
        let mut caches: Vec<(String, Cache)> = Vec::new();
        for (name, registered) in all {
            if !caches.iter().any(|(_, c)| Arc::ptr_eq(c.backend(), registered.cache.backend())) {
                caches.push((name.clone(), registered.cache.clone()));
            }
        }
        caches
    }

    /// The names registered so far, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.read().named.keys().cloned().collect();
        names.sort();
        names
    }

    /// The URL (secrets redacted) a registered cache was built from, if any.
    pub fn source(&self, name: &str) -> Option<String> {
        self.read().named.get(name).and_then(|r| r.source.clone())
    }
}

/// Closes `caches` concurrently on cachestack's runtime, within `limit` for all of them.
async fn close_all(caches: Vec<Cache>, limit: Duration) -> Result<()> {
    let rt = crate::rt::handle()?;
    let closing: Vec<_> = caches
        .into_iter()
        .map(|cache| {
            rt.spawn(async move {
                let closed = cache.close().await;
                if let Err(err) = &closed {
                    tracing::warn!(backend = cache.backend().name(), error = %err, "cachestack: shutdown: a cache failed to close");
                }
                closed
            })
        })
        .collect();
    crate::layer::within("registry", limit, async move {
        let mut first = Ok(());
        for task in closing {
            let closed = task.await.unwrap_or_else(|err| {
                Err(Error::Generic {
                    backend: "registry".into(),
                    source: format!("closing a cache failed: {err}").into(),
                })
            });
            if first.is_ok() {
                first = closed;
            }
        }
        first
    })
    .await
}

#[cfg(feature = "memory")]
fn fallback_memory() -> crate::store::memory::MemoryBackend {
    crate::store::memory::MemoryBackend::with_capacity(FALLBACK_MAX_ENTRIES)
}

#[cfg(not(feature = "memory"))]
fn fallback_memory() -> crate::store::null::NullBackend {
    tracing::warn!("cachestack: the `memory` feature is off and no cache is configured: caching is disabled");
    crate::store::null::NullBackend::default()
}

/// The environment variable read for the cache `name`.
///
/// ```
/// assert_eq!(cachestack::registry::env_var_for("user-sessions"), "CACHESTACK_CACHE_USER_SESSIONS");
/// ```
pub fn env_var_for(name: &str) -> String {
    let mut var = String::from(NAMED_URL_PREFIX);
    var.extend(name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }));
    var
}

impl Cache {
    /// The cache a URL describes: see [`backend_from_url`] for the schemes and options.
    ///
    /// ```
    /// let cache = cachestack::Cache::from_url("mem://?max_entries=100").unwrap();
    /// assert_eq!(cache.backend().name(), "memory");
    /// // A bad option fails (with the `redis` feature) and a disabled feature fails (without it);
    /// // either way the password stays out of the message.
    /// let err = cachestack::Cache::from_url("redis://:hunter2@127.0.0.1/0?colour=red").unwrap_err();
    /// assert!(!err.to_string().contains("hunter2"), "{err}");
    /// ```
    pub fn from_url(url: &str) -> Result<Cache> {
        backend_from_url(url).map(Cache::from_arc).map_err(|e| match e {
            Error::Config { message } => Error::Config { message: format!("{message} (in `{}`)", redact_url(url)) },
            other => other,
        })
    }
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered").field("source", &self.source).finish()
    }
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<CacheRegistry>();
    check::<Arc<dyn Backend>>();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_moves_on_every_change() {
        let r = CacheRegistry::new();
        let g0 = r.generation();
        r.register_url("a", "mem://").unwrap();
        let g1 = r.generation();
        assert!(g1 > g0);
        r.remove("a");
        assert!(r.generation() > g1);
    }

    #[test]
    fn default_is_memory_and_stable() {
        let r = CacheRegistry::new();
        let a = r.default_cache();
        let b = r.default_cache();
        assert!(Arc::ptr_eq(a.backend(), b.backend()));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let r = CacheRegistry::new();
        let _ = r.register_url("s", "mem://?max_entries=3");
        let shown = format!("{r:?}");
        assert!(shown.contains("mem://?max_entries=3"));
        assert!(!redact_url("redis://u:topsecret@h/0").contains("topsecret"));
    }
}
