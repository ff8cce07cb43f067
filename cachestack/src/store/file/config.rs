//! The settings of a file store.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::store::StoreSettings;

/// Settings of a [`FileBackend`](super::FileBackend).
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
    /// Root directory, created if missing (mode `0700`, as is every directory the store creates)
    /// and resolved to an absolute path at construction. It and the namespace directory must be
    /// real directories owned by the process's user and not writable by group or others:
    /// construction refuses anything else with [`Error::Config`].
    ///
    /// Default: a per-user directory: `$XDG_CACHE_HOME/cachestack`, else
    /// `$HOME/.cache/cachestack`, else `cachestack-<uid>` under the system temporary directory
    /// (on Windows `%LOCALAPPDATA%\cachestack`, else `cachestack` under the temporary directory).
    pub directory: PathBuf,
    /// Namespace, name (default `file`), default TTL, value format, silent mode. The namespace
    /// is the subdirectory of `directory` holding this cache's entries: 1 to 64 characters from
    /// `A-Z a-z 0-9 _ - .`, not starting with a dot.
    pub settings: StoreSettings,
    /// Passive purge: a write that finds this much time passed since the last purge runs
    /// [`Backend::purge_expired`](crate::Backend::purge_expired) inline (only one purge runs at a time; a write that finds one
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
    /// purges and [`Backend::clear`](crate::Backend::clear). Default 10 minutes.
    pub temp_max_age: Duration,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            directory: super::secure::default_directory(),
            settings: StoreSettings::new("file"),
            auto_purge_interval: None,
            max_bytes: None,
            max_entries: None,
            temp_max_age: Duration::from_secs(600),
        }
    }
}

crate::store::settings_setters!(FileConfig);

impl FileConfig {
    /// Default settings with `directory` as the root.
    ///
    /// ```
    /// let config = cachestack::FileConfig::new("/var/cache/app");
    /// assert_eq!(config.settings.namespace, "default");
    /// ```
    pub fn new(directory: impl Into<PathBuf>) -> Self {
        FileConfig { directory: directory.into(), ..FileConfig::default() }
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
}

/// Checks a namespace: 1 to 64 characters from `A-Z a-z 0-9 _ - .`, not starting with a dot
/// (so never `.`, `..` or a path).
pub(super) fn validate_namespace(namespace: &str) -> Result<()> {
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

#[cfg(test)]
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
}
