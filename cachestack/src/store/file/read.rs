//! Reads: an entry file is opened, checked (frame, key, envelope, sealed deadline) and either
//! served, removed or left alone.
//!
//! What a read removes: expired entries, corrupt files (a frame that fails its checksum, a file
//! in the place of another key) and things that are not regular files. What it leaves alone,
//! counted and logged as a miss: an intact entry this reader cannot use (signed with another
//! secret, unsigned where this cache requires signatures, written by a newer format, larger than
//! this reader's value limit). Another process configured differently may own that entry; a
//! misconfigured reader must not destroy it. A write of the key replaces it as usual.

use std::fs::{self, File, Metadata};
use std::path::Path;
use std::time::SystemTime;

use super::format::{ENVELOPE_HEADER_LEN, FILE_HEADER_LEN};
use super::secure::{open_regular, read_bounded, untrusting, Opened};
use super::Inner;
use crate::error::{Error, Result};
use crate::store::framed::unframe;
use crate::store::Entry;

/// What a read found in an entry file.
pub(super) enum Found {
    Live(Entry),
    Expired,
}

impl Inner {
    /// The live entry under `key`, counted as a hit or a miss. I/O failures are returned (and
    /// counted by the layers, not here).
    pub(super) fn get_one(&self, key: &str) -> Result<Option<Entry>> {
        let found = self.read_entry(key, self.limited())?;
        let entry = match found {
            Some(Found::Live(entry)) => Some(entry),
            Some(Found::Expired) | None => None,
        };
        self.counters.record_lookup(entry.is_some());
        Ok(entry)
    }

    pub(super) fn exists_one(&self, key: &str) -> Result<bool> {
        Ok(matches!(self.read_entry(key, false)?, Some(Found::Live(_))))
    }

    /// Reads and checks the file of `key`. Expired and unusable files are removed (an unusable
    /// one is also counted as an error); only I/O failures are errors.
    pub(super) fn read_entry(&self, key: &str, touch: bool) -> Result<Option<Found>> {
        let path = self.path_for(key);
        let (mut file, meta) = match open_regular(&path) {
            Ok(Opened::Regular(file, meta)) => (file, meta),
            Ok(Opened::Missing) => return Ok(None),
            Ok(Opened::Other(meta, what)) => {
                let err = Error::invalid(format!("{what} where an entry file belongs: not read"));
                self.reject(key, &path, &meta, &err);
                return Ok(None);
            }
            Err(e) => return Err(self.io("cannot open", &path, e)),
        };
        let limit = self.max_file_len(key);
        let too_large = || Error::invalid(format!("file exceeds the {limit} bytes a value may take"));
        if meta.len() > limit {
            // Possibly written by a cache with a larger value limit: not this reader's to remove.
            self.refuse(key, &too_large());
            return Ok(None);
        }
        // Bounded whatever fstat said: the file may be growing.
        let bytes = match read_bounded(&mut file, limit, meta.len()) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                self.refuse(key, &too_large());
                return Ok(None);
            }
            Err(e) => return Err(self.io("cannot read", &path, e)),
        };
        let envelope = match unframe(key, &bytes) {
            Ok(envelope) => envelope,
            Err(err) => {
                self.reject(key, &path, &meta, &err);
                return Ok(None);
            }
        };
        let now = SystemTime::now();
        match self.config.settings.open_unframed(key, envelope, now) {
            Ok(Some(entry)) => {
                if touch {
                    touch_file(&file, &path, now);
                }
                Ok(Some(Found::Live(entry)))
            }
            Ok(None) => {
                self.remove_if_same(&path, &meta);
                Ok(Some(Found::Expired))
            }
            Err(err) => {
                self.refuse(key, &err);
                Ok(None)
            }
        }
    }

    /// Counts and logs a corrupt or misplaced file, then removes it.
    fn reject(&self, key: &str, path: &Path, meta: &Metadata, err: &Error) {
        self.refuse(key, err);
        self.remove_if_same(path, meta);
    }

    /// Counts and logs an intact entry this reader cannot use; the file stays.
    fn refuse(&self, key: &str, err: &Error) {
        self.counters.record_invalid(&self.config.settings.name, key, err);
    }

    /// Largest entry file a value for `key` can produce under the configured value limit.
    fn max_file_len(&self, key: &str) -> u64 {
        let value = self.config.settings.format.max_value_bytes as u64;
        // Headers, key, HMAC, plus the worst-case growth of compressing incompressible data.
        ((FILE_HEADER_LEN + ENVELOPE_HEADER_LEN + 32 + 1024) as u64)
            .saturating_add(key.len() as u64)
            .saturating_add(value)
            .saturating_add(value / 128)
    }
}

/// Marks a read hit for LRU eviction. Best effort: a file owned by another user may refuse.
fn touch_file(file: &File, path: &Path, now: SystemTime) {
    if file.set_modified(now).is_err() {
        // Some platforms (Windows) need a handle opened for writing to change times; never
        // through a link planted since the read.
        let _ = untrusting(fs::OpenOptions::new().write(true)).open(path).and_then(|f| f.set_modified(now));
    }
}
