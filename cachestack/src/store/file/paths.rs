//! Where entries live on disk, and how this store recognises (only) the files it created.
//!
//! ```text
//! <directory>/<namespace>/<h0h1>/<h0h1...h31>.cache     one entry (h = xxh3-128 of the key, hex)
//! <directory>/<namespace>/<h0h1>/.cstmp<random>          a write in progress (renamed into place)
//! ```

use std::fs::{self, Metadata};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::Inner;

/// Extension of entry files.
pub(super) const ENTRY_SUFFIX: &str = ".cache";
/// Prefix of temporary files (writes in progress, or left behind by a crashed writer).
pub(super) const TEMP_PREFIX: &str = ".cstmp";

impl Inner {
    /// The file that holds (or would hold) `key`.
    pub(super) fn path_for(&self, key: &str) -> PathBuf {
        let hash = crate::store::framed::key_hash(key);
        let mut path = self.dir.join(&hash[..2]);
        path.push(format!("{hash}{ENTRY_SUFFIX}"));
        path
    }

    /// Entry files and their total size, by listing the namespace.
    pub(super) fn count(&self) -> io::Result<(u64, u64)> {
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
    pub(super) fn walk(&self, mut f: impl FnMut(FileKind, PathBuf, Metadata)) -> io::Result<()> {
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
pub(super) enum FileKind {
    Entry,
    Temp,
}

pub(super) fn classify(name: &std::ffi::OsStr) -> Option<FileKind> {
    let name = name.to_str()?;
    if name.starts_with(TEMP_PREFIX) {
        return Some(FileKind::Temp);
    }
    let stem = name.strip_suffix(ENTRY_SUFFIX)?;
    (stem.len() == 32 && is_lower_hex(stem)).then_some(FileKind::Entry)
}

pub(super) fn is_shard_name(name: &std::ffi::OsStr) -> bool {
    name.to_str().is_some_and(|n| n.len() == 2 && is_lower_hex(n))
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub(super) fn is_stale(meta: &Metadata, now: SystemTime, max_age: Duration) -> bool {
    meta.modified().ok().and_then(|modified| now.duration_since(modified).ok()).is_some_and(|age| age >= max_age)
}

/// Removes `path` if it is still the file `meta` describes; true if this call removed it.
pub(super) fn remove_same(path: &Path, meta: &Metadata) -> bool {
    fs::symlink_metadata(path).is_ok_and(|current| same_file(&current, meta)) && fs::remove_file(path).is_ok()
}

#[cfg(unix)]
pub(super) fn same_file(a: &Metadata, b: &Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
pub(super) fn same_file(a: &Metadata, b: &Metadata) -> bool {
    a.len() == b.len() && a.modified().ok() == b.modified().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

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
