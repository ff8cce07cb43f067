//! Writes and removals: an entry file is written to a temporary file and renamed into place;
//! the store keeps approximate counts of its entries and bytes.

use std::fs::{self, Metadata};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::SystemTime;

use super::paths::{is_stale, same_file, FileKind, TEMP_PREFIX};
use super::secure::create_private_dir_all;
use super::Inner;
use crate::error::{Error, Result};
use crate::expiry::Deadline;
use crate::value::Value;

impl Inner {
    /// The bytes of the entry file for `value` expiring at `deadline` (the CPU side of a write:
    /// encoding, compression, signing). Fails if the value cannot be encoded or exceeds a bound.
    /// A deadline that has already passed is written as it is: reads never serve it.
    pub(super) fn record(&self, key: &str, value: &Value, deadline: Option<Deadline>) -> Result<Vec<u8>> {
        let bytes = self.config.settings.seal_framed(key, value, deadline)?;
        if let Some(max) = self.config.max_bytes
            && bytes.len() as u64 > max
        {
            return Err(Error::ValueTooLarge { size: bytes.len(), limit: usize::try_from(max).unwrap_or(usize::MAX) });
        }
        Ok(bytes)
    }

    /// Stores `bytes` (see [`Inner::record`]) as the entry file of `key` (the I/O side of a
    /// write).
    pub(super) fn set_one(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let now = SystemTime::now();
        let path = self.path_for(key);
        let temp = self.write_temp(&path, bytes, now)?;
        let previous = fs::symlink_metadata(&path).ok().filter(Metadata::is_file);
        temp.persist(&path).map_err(|e| self.io("cannot rename a temporary file to", &path, e.error))?;
        self.note_written(bytes.len() as u64, previous.map(|old| old.len()));
        Ok(())
    }

    /// Accounts for an entry file of `new_len` bytes written in place of one of `old_len` bytes
    /// (`None`: there was none).
    pub(super) fn note_written(&self, new_len: u64, old_len: Option<u64>) {
        self.counters.record_write();
        match old_len {
            Some(old) => {
                add(&self.bytes, new_len);
                saturating_sub(&self.bytes, old);
            }
            None => {
                add(&self.entries, 1);
                add(&self.bytes, new_len);
            }
        }
    }

    /// A temporary file holding `bytes` next to `path` (the entry file it is meant to become),
    /// stamped with `now` as its recency.
    pub(super) fn write_temp(&self, path: &Path, bytes: &[u8], now: SystemTime) -> Result<tempfile::NamedTempFile> {
        let shard = path.parent().unwrap_or(&self.dir);
        let mut temp = match tempfile::Builder::new().prefix(TEMP_PREFIX).tempfile_in(shard) {
            Ok(temp) => temp,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                create_private_dir_all(shard).map_err(|e| self.io("cannot create shard directory", shard, e))?;
                tempfile::Builder::new()
                    .prefix(TEMP_PREFIX)
                    .tempfile_in(shard)
                    .map_err(|e| self.io("cannot create a temporary file in", shard, e))?
            }
            Err(e) => return Err(self.io("cannot create a temporary file in", shard, e)),
        };
        temp.write_all(bytes).map_err(|e| self.io("cannot write", temp.path(), e))?;
        // The modification time is the recency used for LRU eviction; set it from the same clock
        // read hits use (the kernel stamps files with a coarser clock).
        let _ = temp.as_file().set_modified(now);
        Ok(temp)
    }

    /// Removes the entry file of `key`; true if there was one.
    pub(super) fn delete_one(&self, key: &str) -> Result<bool> {
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
    pub(super) fn remove_if_same(&self, path: &Path, meta: &Metadata) -> bool {
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

    pub(super) fn clear_all(&self) -> Result<()> {
        let mut first_error = None;
        let now = SystemTime::now();
        self.walk(|kind, path, meta| {
            let remove = match kind {
                FileKind::Entry => true,
                FileKind::Temp => is_stale(&meta, now, self.config.temp_max_age),
            };
            if remove
                && let Err(e) = fs::remove_file(&path)
                && e.kind() != io::ErrorKind::NotFound
                && first_error.is_none()
            {
                first_error = Some(self.io("cannot remove", &path, e));
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
}

fn add(counter: &AtomicU64, n: u64) {
    let _ = counter.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_add(n)));
}

fn saturating_sub(counter: &AtomicU64, n: u64) {
    let _ = counter.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(n)));
}
