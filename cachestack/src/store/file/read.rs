//! Reads: an entry file is opened, checked (frame, key, envelope, sealed deadline) and either
//! served or removed.

use std::fs::{self, File, Metadata};
use std::path::Path;
use std::time::SystemTime;

use super::format::{ENVELOPE_HEADER_LEN, FILE_HEADER_LEN};
use super::secure::{open_regular, read_bounded, untrusting, Opened};
use super::Inner;
use crate::error::{Error, Result};
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
            self.reject(key, &path, &meta, &too_large());
            return Ok(None);
        }
        // Bounded whatever fstat said: the file may be growing.
        let bytes = match read_bounded(&mut file, limit, meta.len()) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                self.reject(key, &path, &meta, &too_large());
                return Ok(None);
            }
            Err(e) => return Err(self.io("cannot read", &path, e)),
        };
        let now = SystemTime::now();
        match self.decode(key, &bytes, now) {
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
                self.reject(key, &path, &meta, &err);
                Ok(None)
            }
        }
    }

    /// The entry in `bytes` with the deadline its writer sealed in it; `None` once that deadline
    /// has passed at `now`.
    fn decode(&self, key: &str, bytes: &[u8], now: SystemTime) -> Result<Option<Entry>> {
        self.config.settings.open_framed(key, bytes, now)
    }

    /// Counts and logs an unusable file, then removes it.
    fn reject(&self, key: &str, path: &Path, meta: &Metadata, err: &Error) {
        self.counters.record_invalid(&self.config.settings.name, key, err);
        self.remove_if_same(path, meta);
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
