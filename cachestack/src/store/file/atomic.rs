//! The file store's atomic and pattern operations.
//!
//! - `set_if_absent` creates the entry file with a hard link from a complete temporary file,
//!   which fails if the entry file exists (the `create_new` of a file that is already written):
//!   exactly one creator wins, across processes. An expired or unusable file is removed first
//!   (only if it is still the same file).
//! - `incr` and `expire` read, change and rename under an OS file lock (one of
//!   [`LOCK_STRIPES`] lock files of the namespace, chosen by the key's hash), so they are atomic
//!   with respect to each other across processes; `incr` creates a counter as `set_if_absent`
//!   does. Just before the rename they check that the entry file is still the one they read, so
//!   a plain `set` or `delete` racing with them is overwritten only within that last instant.
//!   Counters are ordinary `i64` entries (sealed, signed when the store signs).
//! - Patterns walk the namespace and read each entry file's key from its header.

use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::format::{ENVELOPE_HEADER_LEN, FILE_HEADER_LEN, FILE_MAGIC};
use super::paths::{same_file, FileKind};
use super::read::Found;
use super::secure;
use super::Inner;
use crate::error::{Error, Result};
use crate::expiry::Deadline;
use crate::pattern::KeyPattern;
use crate::value::counter::overflow;
use crate::value::envelope::read_header;
use crate::value::Value;

/// Lock files per namespace (`<namespace>/.locks/00` to `3f`).
pub(super) const LOCK_STRIPES: u64 = 64;
/// How often a create or a compare-and-rename is retried when the file keeps changing.
const ATTEMPTS: usize = 64;
/// The longest key the pattern walk reads from a file header.
const MAX_LISTED_KEY: usize = 1 << 20;

/// An OS lock on one of the namespace's lock files, released when dropped.
pub(super) struct KeyLock(File);

impl Drop for KeyLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

impl Inner {
    /// Locks the stripe of `key` (blocking until it is free).
    fn lock_key(&self, key: &str) -> Result<KeyLock> {
        let dir = self.dir.join(".locks");
        let stripe = xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % LOCK_STRIPES;
        let path = dir.join(format!("{stripe:02x}"));
        let open = |path: &Path| {
            secure::untrusting(fs::OpenOptions::new().create(true).truncate(false).write(true)).open(path)
        };
        let file = match open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                secure::create_private_dir_all(&dir)
                    .map_err(|e| self.io("cannot create the lock directory", &dir, e))?;
                open(&path).map_err(|e| self.io("cannot open the lock file", &path, e))?
            }
            Err(e) => return Err(self.io("cannot open the lock file", &path, e)),
        };
        file.lock().map_err(|e| self.io("cannot lock", &path, e))?;
        Ok(KeyLock(file))
    }

    /// Creates the entry file of `key` holding `bytes` if there is none; true if created.
    fn create_one(&self, key: &str, bytes: &[u8]) -> Result<bool> {
        let path = self.path_for(key);
        let temp = self.write_temp(&path, bytes, SystemTime::now())?;
        match fs::hard_link(temp.path(), &path) {
            Ok(()) => {
                self.note_written(bytes.len() as u64, None);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                Err(Error::unsupported("set_if_absent", &self.config.settings.name))
            }
            Err(e) => Err(self.io("cannot link a temporary file to", &path, e)),
        }
        // The temporary file is removed when `temp` drops; the entry file stays linked.
    }

    /// Renames `bytes` into place as the entry file of `key` if that is still the file `read`
    /// describes; false if it changed meanwhile.
    fn replace_if_same(&self, key: &str, read: &Metadata, bytes: &[u8]) -> Result<bool> {
        let path = self.path_for(key);
        let temp = self.write_temp(&path, bytes, SystemTime::now())?;
        if !fs::symlink_metadata(&path).is_ok_and(|current| same_file(&current, read)) {
            return Ok(false);
        }
        temp.persist(&path).map_err(|e| self.io("cannot rename a temporary file to", &path, e.error))?;
        self.note_written(bytes.len() as u64, Some(read.len()));
        Ok(true)
    }

    /// The live entry of `key` and the metadata of its file, or `None` (an expired or unusable
    /// file is removed on the way).
    fn read_live(&self, key: &str) -> Result<Option<(crate::store::Entry, Metadata)>> {
        let path = self.path_for(key);
        let Ok(meta) = fs::symlink_metadata(&path) else { return Ok(None) };
        match self.read_entry(key, false)? {
            Some(Found::Live(entry)) => Ok(Some((entry, meta))),
            _ => Ok(None),
        }
    }

    pub(super) fn insert_if_absent(&self, key: &str, bytes: &[u8]) -> Result<bool> {
        for _ in 0..ATTEMPTS {
            if self.create_one(key, bytes)? {
                return Ok(true);
            }
            // There is a file: a live entry, or one that `read_live` just removed.
            if self.read_live(key)?.is_some() {
                return Ok(false);
            }
        }
        Err(self.changing("set_if_absent"))
    }

    pub(super) fn add(&self, key: &str, delta: i64, deadline: Option<Deadline>) -> Result<i64> {
        let _lock = self.lock_key(key)?;
        for _ in 0..ATTEMPTS {
            match self.read_live(key)? {
                Some((entry, meta)) => {
                    let n = entry
                        .value
                        .get::<i64>()
                        .map_err(|err| Error::invalid(format!("`{key}` does not hold a counter (i64): {err}")))?;
                    let sum = n.checked_add(delta).ok_or_else(|| overflow(key, n, delta))?;
                    let bytes = self.record(key, &Value::new(sum), entry.expires)?;
                    if self.replace_if_same(key, &meta, &bytes)? {
                        return Ok(sum);
                    }
                }
                None => {
                    let bytes = self.record(key, &Value::new(delta), deadline)?;
                    if self.create_one(key, &bytes)? {
                        return Ok(delta);
                    }
                }
            }
        }
        Err(self.changing("incr"))
    }

    pub(super) fn re_expire(&self, key: &str, deadline: Option<Deadline>) -> Result<bool> {
        let _lock = self.lock_key(key)?;
        for _ in 0..ATTEMPTS {
            let Some((entry, meta)) = self.read_live(key)? else { return Ok(false) };
            let bytes = self.record(key, &entry.value, deadline)?;
            if self.replace_if_same(key, &meta, &bytes)? {
                return Ok(true);
            }
        }
        Err(self.changing("expire"))
    }

    /// The live keys matching `pattern`.
    pub(super) fn matching_keys(&self, pattern: &KeyPattern) -> Result<Vec<String>> {
        let now = SystemTime::now();
        let mut keys = Vec::new();
        self.walk(|kind, path, _| {
            if kind != FileKind::Entry {
                return;
            }
            if let Some((key, deadline)) = read_key(&path)
                && !deadline.is_some_and(|d| d.has_passed_at(now))
                && pattern.matches(&key)
            {
                keys.push(key);
            }
        })
        .map_err(|e| self.io("cannot list cache directory", &self.dir, e))?;
        Ok(keys)
    }

    /// Removes the entry files whose keys match `pattern`; returns how many were live.
    pub(super) fn remove_matching(&self, pattern: &KeyPattern) -> Result<u64> {
        let now = SystemTime::now();
        let mut doomed: Vec<(PathBuf, Metadata, bool)> = Vec::new();
        self.walk(|kind, path, meta| {
            if kind != FileKind::Entry {
                return;
            }
            if let Some((key, deadline)) = read_key(&path)
                && pattern.matches(&key)
            {
                doomed.push((path, meta, !deadline.is_some_and(|d| d.has_passed_at(now))));
            }
        })
        .map_err(|e| self.io("cannot list cache directory", &self.dir, e))?;
        let mut removed = 0u64;
        for (path, meta, live) in doomed {
            if self.remove_if_same(&path, &meta) && live {
                removed += 1;
            }
        }
        self.counters.record_deletes(removed);
        Ok(removed)
    }

    fn changing(&self, op: &str) -> Error {
        Error::contended(&self.config.settings.name, op, ATTEMPTS)
    }
}

/// The key and sealed deadline in an entry file's headers (`None`: unreadable, not an entry).
/// The checksum is not checked: reads of the key do that.
fn read_key(path: &Path) -> Option<(String, Option<Deadline>)> {
    // Not following links nor opening FIFOs or devices (see `secure`).
    let secure::Opened::Regular(mut file, _) = secure::open_regular(path).ok()? else { return None };
    let mut head = [0u8; FILE_HEADER_LEN];
    file.read_exact(&mut head).ok()?;
    if head[..4] != FILE_MAGIC {
        return None;
    }
    let key_len = usize::try_from(u32::from_le_bytes([head[12], head[13], head[14], head[15]])).ok()?;
    if key_len > MAX_LISTED_KEY {
        return None;
    }
    let mut key = vec![0u8; key_len];
    file.read_exact(&mut key).ok()?;
    let mut envelope = [0u8; ENVELOPE_HEADER_LEN];
    file.read_exact(&mut envelope).ok()?;
    let deadline = read_header(&envelope).ok()?.expires().map(Deadline::at);
    Some((String::from_utf8(key).ok()?, deadline))
}
