//! What the file store trusts on disk, and how it checks it.
//!
//! The cache directory may be shared with other programs and, under `/tmp`, reachable by other
//! local users, so nothing found there is trusted:
//!
//! - **Directories**: the root and namespace directories (and every parent directory the store
//!   creates) are created `0700` and must be real directories (not symbolic links), owned by the
//!   user the process runs as, and not writable by group or others; anything else is refused at
//!   construction with [`Error::Config`] naming the directory. Shard directories are created
//!   `0700` too.
//! - **Files**: an entry file is opened without following a symbolic link (`O_NOFOLLOW`), without
//!   blocking on a FIFO (`O_NONBLOCK`) and without becoming a controlling terminal (`O_NOCTTY`),
//!   and is used only if `fstat` says it is a regular file. Its size is checked against the bound
//!   before reading, and the read itself stops one byte past the bound, so a file that grows (or
//!   a device) never costs more memory than the bound.
//!
//! On platforms other than Unix the ownership and mode checks do not exist; links and
//! non-regular files are still refused (after opening) and reads are still bounded.

use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What opening an entry file found.
pub(super) enum Opened {
    /// No file at that path.
    Missing,
    /// A regular file, opened for reading, with its metadata (`fstat`).
    Regular(File, Metadata),
    /// Something that is not a regular file (a symbolic link, a FIFO, a device, a directory...),
    /// with its metadata (not following links) and what it is. Never read.
    Other(Metadata, &'static str),
}

/// Makes `options` open without following a symbolic link, without blocking on a FIFO and
/// without making a terminal the controlling one (no-op off Unix).
pub(super) fn untrusting(options: &mut fs::OpenOptions) -> &mut fs::OpenOptions {
    #[cfg(unix)]
    {
        use rustix::fs::OFlags;
        use std::os::unix::fs::OpenOptionsExt;
        let flags = OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY;
        options.custom_flags(i32::try_from(flags.bits()).unwrap_or(0));
    }
    options
}

/// Opens `path` for reading if it is a regular file, without following a link or blocking.
pub(super) fn open_regular(path: &Path) -> io::Result<Opened> {
    match untrusting(fs::OpenOptions::new().read(true)).open(path) {
        Ok(file) => {
            let meta = file.metadata()?;
            if meta.is_file() {
                Ok(Opened::Regular(file, meta))
            } else {
                let kind = kind_of(&meta);
                Ok(Opened::Other(meta, kind))
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Opened::Missing),
        // `O_NOFOLLOW` on a link fails (ELOOP on Linux, EMLINK on some BSDs): tell a link from a
        // real failure by looking at the path itself.
        Err(e) => match fs::symlink_metadata(path) {
            Ok(meta) if !meta.is_file() => {
                let kind = kind_of(&meta);
                Ok(Opened::Other(meta, kind))
            }
            Err(missing) if missing.kind() == io::ErrorKind::NotFound => Ok(Opened::Missing),
            _ => Err(e),
        },
    }
}

/// A short description of a non-regular file, for error messages.
fn kind_of(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_symlink() {
        return "a symbolic link";
    }
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

/// Reads the whole of `file` if it holds at most `limit` bytes; `None` if it holds more (only
/// `limit + 1` bytes are ever read).
pub(super) fn read_bounded(file: &mut File, limit: u64, size_hint: u64) -> io::Result<Option<Vec<u8>>> {
    let capacity = usize::try_from(size_hint.min(limit)).unwrap_or(0);
    let mut bytes = Vec::with_capacity(capacity);
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Ok(None);
    }
    Ok(Some(bytes))
}

/// Creates `dir` and its missing parents (`0700` on Unix).
pub(super) fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Creates the namespace directory `dir` under `root` (and any missing parent, `0700`), then
/// checks the directories this store relies on: `root`, `dir`, and every parent it had to
/// create. `name` is the backend's name for error messages.
pub(super) fn prepare_directories(name: &str, root: &Path, dir: &Path) -> Result<()> {
    // The directories that do not exist yet are the ones this call creates.
    let mut checked: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|p| !p.as_os_str().is_empty() && fs::symlink_metadata(p).is_err())
        .map(Path::to_path_buf)
        .collect();
    create_private_dir_all(dir).map_err(|e| super::io_error(name, "cannot create cache directory", dir, e))?;
    for must in [root, dir] {
        if !checked.iter().any(|p| p == must) {
            checked.push(must.to_path_buf());
        }
    }
    checked.iter().try_for_each(|path| check_private_dir(name, path))
}

/// Refuses a directory that another local user could control: a symbolic link, not a directory,
/// owned by another user, or writable by group or others.
pub(super) fn check_private_dir(name: &str, path: &Path) -> Result<()> {
    let meta =
        fs::symlink_metadata(path).map_err(|e| super::io_error(name, "cannot inspect cache directory", path, e))?;
    let refuse = |why: String| {
        Err(Error::config(format!(
            "{name}: refusing cache directory {}: {why} (another local user could plant or read values)",
            path.display()
        )))
    };
    if meta.file_type().is_symlink() {
        return refuse("it is a symbolic link; give the real directory".into());
    }
    if !meta.is_dir() {
        return refuse("it is not a directory".into());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return refuse(format!("it is owned by uid {}, not by this process's uid {me}", meta.uid()));
        }
        if meta.mode() & 0o022 != 0 {
            return refuse(format!(
                "it is writable by group or others (mode {:o}); run `chmod go-w` on it",
                meta.mode() & 0o7777
            ));
        }
    }
    Ok(())
}

/// The default root directory: a per-user cache directory.
///
/// On Unix: `$XDG_CACHE_HOME/cachestack` when `XDG_CACHE_HOME` is an absolute path, else
/// `$HOME/.cache/cachestack` when `HOME` is, else `<temp dir>/cachestack-<uid>` (checked like any
/// cache directory, so a copy planted by another user is refused). Elsewhere:
/// `%LOCALAPPDATA%\cachestack`, else `<temp dir>/cachestack`.
pub(super) fn default_directory() -> PathBuf {
    let absolute = |var: &str| std::env::var_os(var).map(PathBuf::from).filter(|p| p.is_absolute());
    #[cfg(unix)]
    {
        if let Some(xdg) = absolute("XDG_CACHE_HOME") {
            return xdg.join("cachestack");
        }
        if let Some(home) = absolute("HOME") {
            return home.join(".cache").join("cachestack");
        }
        std::env::temp_dir().join(format!("cachestack-{}", rustix::process::geteuid().as_raw()))
    }
    #[cfg(not(unix))]
    {
        absolute("LOCALAPPDATA").map_or_else(|| std::env::temp_dir().join("cachestack"), |d| d.join("cachestack"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bounded_reads_stop_one_byte_past_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, vec![7u8; 100]).unwrap();
        let Opened::Regular(mut file, meta) = open_regular(&path).unwrap() else { panic!("not regular") };
        assert_eq!(read_bounded(&mut file, 100, meta.len()).unwrap().unwrap().len(), 100);
        let Opened::Regular(mut file, _) = open_regular(&path).unwrap() else { panic!("not regular") };
        assert!(read_bounded(&mut file, 99, meta.len()).unwrap().is_none());
        assert!(matches!(open_regular(&dir.path().join("missing")).unwrap(), Opened::Missing));
    }

    #[cfg(unix)]
    #[test]
    fn links_fifos_and_devices_are_never_opened_as_entries() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(matches!(open_regular(&link).unwrap(), Opened::Other(_, "a symbolic link")));
        assert!(matches!(open_regular(Path::new("/dev/zero")).unwrap(), Opened::Other(_, "a device")));
        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR).unwrap();
        // Returns at once (no writer on the other end): a FIFO never blocks a read.
        assert!(matches!(open_regular(&fifo).unwrap(), Opened::Other(_, "a FIFO")));
    }

    #[cfg(unix)]
    #[test]
    fn directories_others_could_control_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("a/b/root");
        let dir = root.join("ns");
        prepare_directories("file", &root, &dir).unwrap();
        for created in [base.path().join("a"), base.path().join("a/b"), root.clone(), dir.clone()] {
            assert_eq!(fs::metadata(&created).unwrap().permissions().mode() & 0o777, 0o700, "{}", created.display());
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let err = prepare_directories("file", &root, &dir).unwrap_err();
        assert!(
            matches!(err, Error::Config { .. }) && err.to_string().contains("writable by group or others"),
            "{err}"
        );
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        let link = base.path().join("link");
        std::os::unix::fs::symlink(&root, &link).unwrap();
        let err = prepare_directories("file", &link, &link.join("ns")).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }
}
