//! What is special to the file backend: layout on disk, directories, damaged and planted files,
//! purging, LRU bounds, concurrent and crashing writers. The behaviour every backend shares is
//! checked by the conformance suite.

// A test that cannot set up its files should stop right there, loudly.
#![allow(clippy::unwrap_used)]

#[path = "../src/bin/file_writer/record.rs"]
mod record;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime};

use cachestack::{Backend, Cache, Error, FileBackend, FileConfig, Signer, Value, ValueFormat};
use tempfile::TempDir;

// ---- the shared conformance suite ----------------------------------------------------------------

/// Every namespace of one run shares a temporary root, which lives as long as the harness.
fn file_harness() -> cachestack_tests::conformance::Harness {
    let root = Arc::new(tempdir());
    let open = {
        let root = Arc::clone(&root);
        move |namespace: &str| FileBackend::new(FileConfig::new(root.path()).with_namespace(namespace)).unwrap()
    };
    let plant_with = open.clone();
    let mut harness = cachestack_tests::conformance::Harness::new(move |namespace| Arc::new(open(namespace)));
    harness.raw_writer = Some(Arc::new(move |namespace: &str, key: &str, bytes: &[u8]| {
        let path = plant_with(namespace).path_for(key);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }));
    harness
}

cachestack_tests::conformance_suite!(conformance, file_harness);

fn tempdir() -> TempDir {
    tempfile::tempdir().expect("temporary directory")
}

fn string(value: &str) -> Value {
    Value::new(value.to_string())
}

async fn get_string(backend: &FileBackend, key: &str) -> Option<String> {
    let entry = backend.get(key).await.expect("get");
    entry.map(|e| e.value.get::<String>().expect("a String"))
}

/// Every regular file under `dir`, recursively, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn temp_files_under(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(".cstmp")))
        .collect()
}

// ---- layout and directories ---------------------------------------------------------------------

#[tokio::test]
async fn entries_live_in_sharded_files_named_by_a_stable_hash_of_the_key() {
    let dir = tempdir();
    let backend = FileBackend::open(dir.path()).unwrap();
    backend.set("user:1", string("Ada"), cachestack::Expiry::Default).await.unwrap();

    // xxh3-128 of "user:1": pinned, so files written by one build are found by the next.
    let hash = "b3ce4d642bd86c75568dc3fbb5023b0c";
    let root = fs::canonicalize(dir.path()).unwrap();
    let expected = root.join("default").join(&hash[..2]).join(format!("{hash}.cache"));
    assert_eq!(backend.path_for("user:1"), expected);
    assert_eq!(files_under(dir.path()), vec![expected]);
    assert_eq!(get_string(&backend, "user:1").await.as_deref(), Some("Ada"));
}

#[cfg(unix)]
#[tokio::test]
async fn a_relative_directory_is_resolved_to_an_absolute_path_at_start() {
    let dir = tempdir();
    // A relative path from the current directory to `dir/cache` (cwd is not changed: tests run
    // in parallel threads of one process).
    let cwd = std::env::current_dir().unwrap();
    let ups = cwd.components().count() - 1;
    let mut relative: PathBuf = (0..ups).map(|_| "..").collect();
    relative.push(dir.path().strip_prefix("/").unwrap());
    relative.push("cache");
    assert!(relative.is_relative());

    let backend = FileBackend::open(&relative).unwrap();
    let expected = fs::canonicalize(dir.path()).unwrap().join("cache");
    assert!(backend.directory().is_absolute());
    assert_eq!(backend.root(), expected);
    assert_eq!(backend.directory(), expected.join("default"));
    assert_eq!(backend.stats().details["directory"], expected.join("default").display().to_string());
    backend.set("k", string("v"), cachestack::Expiry::Default).await.unwrap();
    assert!(backend.path_for("k").starts_with(&expected));
}

#[tokio::test]
async fn a_missing_directory_is_created() {
    let dir = tempdir();
    let nested = dir.path().join("a").join("b").join("c");
    let backend = FileBackend::new(FileConfig::new(&nested).with_namespace("ns")).unwrap();
    assert!(nested.join("ns").is_dir());
    backend.set("k", string("v"), cachestack::Expiry::Default).await.unwrap();
    assert_eq!(get_string(&backend, "k").await.as_deref(), Some("v"));
}

#[test]
fn invalid_settings_are_config_errors() {
    let dir = tempdir();
    let long = "n".repeat(65);
    for namespace in ["", ".", "..", "../escape", "a/b", "a\\b", ".hidden", "with space", "é", long.as_str()] {
        let err = FileBackend::new(FileConfig::new(dir.path()).with_namespace(namespace)).unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{namespace:?}: {err}");
        assert!(err.to_string().contains("namespace"), "{err}");
    }
    assert!(matches!(FileBackend::new(FileConfig::new(dir.path()).with_max_entries(0)), Err(Error::Config { .. })));
    assert!(matches!(FileBackend::new(FileConfig::new(dir.path()).with_max_bytes(0)), Err(Error::Config { .. })));
    assert!(matches!(FileBackend::new(FileConfig::new("")), Err(Error::Config { .. })));
    // Nothing was created for the rejected configurations.
    assert!(files_under(dir.path()).is_empty());
}

/// Tests run as root here, where permission bits do not stop writes; a path that runs through a
/// regular file fails for every user (`ENOTDIR`), so that is the unusable directory used.
#[test]
fn a_directory_that_cannot_be_created_is_an_error_at_construction() {
    let dir = tempdir();
    let blocker = dir.path().join("not-a-directory");
    fs::write(&blocker, b"a regular file").unwrap();

    for directory in [blocker.join("cache"), blocker.clone()] {
        let err = FileBackend::open(&directory).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        let message = format!("{err}: {}", std::error::Error::source(&err).map(|s| s.to_string()).unwrap_or_default());
        assert!(message.contains("cannot create cache directory"), "{message}");
        assert!(message.contains(&blocker.display().to_string()), "{message}");
    }
    assert_eq!(fs::read(&blocker).unwrap(), b"a regular file");
}

/// Permission bits: only meaningful without root privileges (CAP_DAC_OVERRIDE ignores them). The
/// test checks whether the read-only directory really refuses writes and says so when it does not.
#[cfg(unix)]
#[test]
fn a_read_only_directory_is_an_error_at_construction() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    let namespace = dir.path().join("default");
    fs::create_dir(&namespace).unwrap();
    fs::set_permissions(&namespace, fs::Permissions::from_mode(0o555)).unwrap();
    let privileged = fs::write(namespace.join("probe"), b"x").is_ok();
    if privileged {
        eprintln!("running with root privileges: permission bits do not bite; read-only check skipped");
    } else {
        let err = FileBackend::open(dir.path()).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        let source = std::error::Error::source(&err).map(|s| s.to_string()).unwrap_or_default();
        assert!(source.contains("not writable"), "{source}");
    }
    fs::set_permissions(&namespace, fs::Permissions::from_mode(0o755)).unwrap();
}

/// The directory breaks after start (a regular file where a shard directory belongs): operations
/// fail with `Error::Io`, or, in silent mode, become misses and no-ops that are counted.
#[tokio::test]
async fn an_unusable_shard_fails_operations_or_is_absorbed_in_silent_mode() {
    let dir = tempdir();
    let loud = FileBackend::open(dir.path()).unwrap();
    let silent = FileBackend::new(FileConfig::new(dir.path()).with_silent(true)).unwrap();
    let shard = loud.path_for("k").parent().unwrap().to_path_buf();
    fs::write(&shard, b"in the way").unwrap();

    assert!(matches!(loud.set("k", string("v"), cachestack::Expiry::Default).await, Err(Error::Io { .. })));
    assert!(matches!(loud.get("k").await, Err(Error::Io { .. })));
    assert!(matches!(loud.delete("k").await, Err(Error::Io { .. })));
    assert_eq!(loud.stats().errors, 3);

    silent.set("k", string("v"), cachestack::Expiry::Default).await.unwrap();
    assert!(silent.get("k").await.unwrap().is_none());
    assert!(!silent.delete("k").await.unwrap());
    assert!(silent.get_many(&["k"]).await.unwrap()[0].is_none());
    let stats = silent.stats();
    assert_eq!((stats.errors, stats.misses, stats.hits, stats.writes), (4, 2, 0, 0));

    // Keys in other shards are unaffected; the blocking file is not touched by clear.
    let other = (0..).map(|i| format!("other:{i}")).find(|k| !silent.path_for(k).starts_with(&shard)).unwrap();
    silent.set(&other, string("fine"), cachestack::Expiry::Default).await.unwrap();
    assert_eq!(get_string(&silent, &other).await.as_deref(), Some("fine"));
    silent.clear().await.unwrap();
    assert_eq!(fs::read(&shard).unwrap(), b"in the way");
}

// ---- a hostile directory ------------------------------------------------------------------------

/// Runs `get` on a plain thread (so a read stuck in a FIFO cannot wedge the test's runtime) and
/// waits for it with the hang guard.
fn get_off_thread(backend: &Arc<FileBackend>, key: &str) -> cachestack::Result<Option<cachestack::Entry>> {
    let (backend, key) = (Arc::clone(backend), key.to_string());
    let rx =
        cachestack_tests::sync::on_thread(move || cachestack::rt::block_on(async move { backend.get(&key).await }));
    match rx.recv_timeout(cachestack_tests::sync::HANG_GUARD) {
        Ok(result) => result.unwrap(),
        Err(_) => panic!("HANG: a read did not return within {:?}", cachestack_tests::sync::HANG_GUARD),
    }
}

#[cfg(unix)]
#[test]
fn a_fifo_at_an_entry_path_is_a_miss_and_never_blocks_a_read() {
    let dir = tempdir();
    let backend = Arc::new(FileBackend::open(dir.path()).unwrap());
    let path = backend.path_for("k");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let made = Command::new("mkfifo").arg(&path).status().unwrap();
    assert!(made.success());
    assert!(get_off_thread(&backend, "k").unwrap().is_none());
    assert_eq!(backend.stats().errors, 1, "counted as an unusable file");
    assert!(fs::symlink_metadata(&path).is_err(), "the FIFO is removed");
    // The sweep walks past FIFOs too.
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    assert!(Command::new("mkfifo").arg(&path).status().unwrap().success());
    let purge = {
        let backend = Arc::clone(&backend);
        cachestack_tests::sync::on_thread(move || {
            cachestack::rt::block_on(async move { backend.purge_expired().await })
        })
    };
    assert_eq!(purge.recv_timeout(cachestack_tests::sync::HANG_GUARD).unwrap().unwrap().unwrap(), 0);
}

/// A link planted at an entry path is never followed: not to a genuine entry file elsewhere (whose
/// key and checksum would pass), and not to a device that reads forever.
#[cfg(unix)]
#[test]
fn a_symbolic_link_at_an_entry_path_is_never_followed() {
    let dir = tempdir();
    let elsewhere = tempdir();
    let backend = Arc::new(FileBackend::open(dir.path()).unwrap());
    let outside = FileBackend::open(elsewhere.path()).unwrap();
    cachestack::rt::block_on({
        let outside = Arc::new(outside);
        let o = Arc::clone(&outside);
        async move { o.set("k", string("planted through a link"), cachestack::Expiry::Default).await }
    })
    .unwrap()
    .unwrap();
    let target = FileBackend::open(elsewhere.path()).unwrap().path_for("k");
    assert!(target.is_file());
    let path = backend.path_for("k");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    for target in [target.as_path(), Path::new("/dev/zero")] {
        std::os::unix::fs::symlink(target, &path).unwrap();
        assert!(get_off_thread(&backend, "k").unwrap().is_none(), "link to {} followed", target.display());
        assert!(fs::symlink_metadata(&path).is_err(), "the link is removed");
    }
    assert!(target.is_file(), "the link's target is left alone");
    assert_eq!(backend.stats().errors, 2);
}

/// The read is bounded by the size a value may take, whatever the file's size was when opened.
#[tokio::test]
async fn an_oversized_file_is_a_miss_without_being_read_whole() {
    let dir = tempdir();
    let format = ValueFormat { max_value_bytes: 1024, ..ValueFormat::default() };
    let backend = FileBackend::new(FileConfig::new(dir.path()).with_format(format)).unwrap();
    backend.set("k", string("small"), cachestack::Expiry::Default).await.unwrap();
    let path = backend.path_for("k");
    let mut bytes = fs::read(&path).unwrap();
    bytes.resize(64 * 1024, b'x');
    fs::write(&path, &bytes).unwrap();
    assert!(backend.get("k").await.unwrap().is_none());
    assert_eq!(backend.stats().errors, 1);
    // Not removed (a cache with a larger value limit may have written it); a write replaces it.
    assert_eq!(fs::metadata(&path).unwrap().len(), 64 * 1024);
    backend.set("k", string("small again"), cachestack::Expiry::Default).await.unwrap();
    assert_eq!(get_string(&backend, "k").await.as_deref(), Some("small again"));
}

#[cfg(unix)]
#[test]
fn the_directories_it_creates_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    let root = dir.path().join("made").join("root");
    let backend = Arc::new(FileBackend::new(FileConfig::new(&root).with_namespace("ns")).unwrap());
    let b = Arc::clone(&backend);
    cachestack::rt::block_on(async move { b.set("k", string("v"), cachestack::Expiry::Default).await })
        .unwrap()
        .unwrap();
    let shard = backend.path_for("k").parent().unwrap().to_path_buf();
    for made in [dir.path().join("made"), root.clone(), root.join("ns"), shard] {
        let mode = fs::metadata(&made).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} is {mode:o}", made.display());
    }
}

/// A cache directory another local user could control is refused at construction, with a clear
/// error naming it: writable by others (the shared `/tmp` case), owned by another user
/// (pre-created by someone else), or a symbolic link.
#[cfg(unix)]
#[test]
fn a_directory_another_user_could_control_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let base = tempdir();
    let refused = |config: FileConfig, why: &str| {
        let err = FileBackend::new(config).unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{why}: {err}");
        assert!(err.to_string().contains(why), "{err}");
    };

    let open = base.path().join("world-writable");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    refused(FileConfig::new(&open), "writable by group or others");
    // The namespace directory is checked too.
    let root = base.path().join("root");
    fs::create_dir_all(root.join("default")).unwrap();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(root.join("default"), fs::Permissions::from_mode(0o770)).unwrap();
    refused(FileConfig::new(&root), "writable by group or others");
    fs::set_permissions(root.join("default"), fs::Permissions::from_mode(0o700)).unwrap();
    FileBackend::new(FileConfig::new(&root)).unwrap();

    let link = base.path().join("link");
    std::os::unix::fs::symlink(&root, &link).unwrap();
    refused(FileConfig::new(&link), "symbolic link");

    // Another owner: only root can make one here.
    let foreign = base.path().join("foreign");
    fs::create_dir(&foreign).unwrap();
    fs::set_permissions(&foreign, fs::Permissions::from_mode(0o700)).unwrap();
    if std::os::unix::fs::chown(&foreign, Some(65534), None).is_ok() {
        refused(FileConfig::new(&foreign), "owned by uid 65534");
    } else {
        eprintln!("not running as root: cannot make a directory owned by another user; owner check skipped");
    }
}

/// The default directory is per user, not one shared name under `/tmp` that anyone can create
/// first.
#[test]
fn the_default_directory_is_per_user() {
    let default = FileConfig::default().directory;
    assert_ne!(default, std::env::temp_dir().join("cachestack"));
    let name = default.file_name().unwrap().to_str().unwrap().to_string();
    assert!(name == "cachestack" || name.starts_with("cachestack-"), "{}", default.display());
    if name == "cachestack" {
        assert!(!default.starts_with(std::env::temp_dir()), "{}", default.display());
    }
}

// ---- namespaces ---------------------------------------------------------------------------------

#[tokio::test]
async fn namespaces_are_isolated_and_clear_removes_only_its_own_entries() {
    let dir = tempdir();
    let a = FileBackend::new(FileConfig::new(dir.path()).with_namespace("a")).unwrap();
    let b = FileBackend::new(FileConfig::new(dir.path()).with_namespace("b")).unwrap();
    a.set("k", string("from a"), cachestack::Expiry::Default).await.unwrap();
    b.set("k", string("from b"), cachestack::Expiry::Default).await.unwrap();
    b.set("k2", string("only b"), cachestack::Expiry::Default).await.unwrap();
    assert_eq!(get_string(&a, "k").await.as_deref(), Some("from a"));
    assert_eq!(get_string(&b, "k").await.as_deref(), Some("from b"));
    assert_eq!(get_string(&a, "k2").await, None);

    // Files the backend did not create survive, in the root, the namespace and a shard.
    let foreign =
        [dir.path().join("README"), a.directory().join("notes.txt"), a.path_for("k").parent().unwrap().join("keep.me")];
    for path in &foreign {
        fs::write(path, b"not cache data").unwrap();
    }

    a.clear().await.unwrap();
    assert_eq!(get_string(&a, "k").await, None);
    assert_eq!(a.stats().entries, Some(0));
    assert_eq!(get_string(&b, "k").await.as_deref(), Some("from b"));
    assert_eq!(get_string(&b, "k2").await.as_deref(), Some("only b"));
    for path in &foreign {
        assert_eq!(fs::read(path).unwrap(), b"not cache data", "{}", path.display());
    }
}

// ---- damaged and planted files ------------------------------------------------------------------

#[tokio::test]
async fn truncated_files_are_misses_counted_and_removed() {
    let dir = tempdir();
    let backend = FileBackend::open(dir.path()).unwrap();
    backend.set("k", string(&"x".repeat(300)), cachestack::Expiry::Default).await.unwrap();
    let path = backend.path_for("k");
    let full = fs::read(&path).unwrap();

    for len in 0..full.len() {
        fs::write(&path, &full[..len]).unwrap();
        assert!(backend.get("k").await.unwrap().is_none(), "truncated to {len} bytes was a hit");
        assert!(!path.exists(), "truncated file of {len} bytes was kept");
    }
    let stats = backend.stats();
    assert_eq!(stats.errors, full.len() as u64);
    assert_eq!((stats.hits, stats.misses), (0, full.len() as u64));

    fs::write(&path, &full).unwrap();
    assert_eq!(get_string(&backend, "k").await.unwrap().len(), 300);
}

#[tokio::test]
async fn byte_flipped_files_are_misses_counted_and_removed() {
    let dir = tempdir();
    let backend = FileBackend::open(dir.path()).unwrap();
    backend.set("k", string("a value that must never come back altered"), cachestack::Expiry::Default).await.unwrap();
    let path = backend.path_for("k");
    let good = fs::read(&path).unwrap();

    for i in 0..good.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut bad = good.clone();
            bad[i] ^= mask;
            fs::write(&path, &bad).unwrap();
            assert!(backend.get("k").await.unwrap().is_none(), "flip {mask:#04x} at byte {i} was a hit");
            assert!(!path.exists(), "flipped file kept (byte {i})");
        }
    }
    assert_eq!(backend.stats().errors, 3 * good.len() as u64);
    assert_eq!(backend.stats().hits, 0);
}

#[tokio::test]
async fn garbage_and_empty_files_are_misses() {
    let dir = tempdir();
    let backend = FileBackend::open(dir.path()).unwrap();
    backend.set("k", string("v"), cachestack::Expiry::Default).await.unwrap();
    let path = backend.path_for("k");
    for junk in [&b""[..], b"CSF", b"hello world, not a cache file", &[0u8; 4096]] {
        fs::write(&path, junk).unwrap();
        assert!(backend.get("k").await.unwrap().is_none());
        assert!(!path.exists());
    }
    assert_eq!(backend.stats().errors, 4);
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Celsius {
    degrees: u64,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Fahrenheit {
    degrees: u64,
}

#[tokio::test]
async fn a_file_written_for_another_type_is_a_miss_through_cache() {
    let dir = tempdir();
    let cache = Cache::new(FileBackend::open(dir.path()).unwrap());
    cache.set("temp", &Celsius { degrees: 21 }, None).await.unwrap();
    cache.set("n", &7u64, None).await.unwrap();

    // Same shape, another type: the type fingerprint in the envelope tells them apart.
    assert_eq!(cache.get::<Fahrenheit>("temp").await.unwrap(), None);
    assert_eq!(cache.get::<String>("n").await.unwrap(), None);
    assert_eq!(cache.get::<u32>("n").await.unwrap(), None);
    let stats = cache.stats();
    assert_eq!((stats.errors, stats.misses, stats.hits), (3, 3, 0));

    // A fresh backend (no typed value cached in memory) reads the right types back.
    let fresh = Cache::new(FileBackend::open(dir.path()).unwrap());
    assert_eq!(fresh.get::<Celsius>("temp").await.unwrap(), Some(Celsius { degrees: 21 }));
    assert_eq!(fresh.get::<u64>("n").await.unwrap(), Some(7));
    assert_eq!(fresh.get::<Fahrenheit>("temp").await.unwrap(), None);
}

#[tokio::test]
async fn a_file_for_another_key_planted_at_this_keys_path_is_a_miss() {
    let dir = tempdir();
    let backend = FileBackend::open(dir.path()).unwrap();
    backend.set("account:alice", string("alice's data"), cachestack::Expiry::Default).await.unwrap();
    let planted = backend.path_for("account:mallory");
    fs::create_dir_all(planted.parent().unwrap()).unwrap();
    fs::copy(backend.path_for("account:alice"), &planted).unwrap();

    assert_eq!(get_string(&backend, "account:mallory").await, None);
    assert!(!planted.exists());
    assert_eq!(backend.stats().errors, 1);
    assert_eq!(get_string(&backend, "account:alice").await.as_deref(), Some("alice's data"));
}

#[tokio::test]
async fn a_signed_store_rejects_files_without_a_valid_signature() {
    let dir = tempdir();
    let format = |secret: Option<&str>| ValueFormat {
        signer: secret.map(|s| Signer::new(s).unwrap()),
        ..ValueFormat::default()
    };
    let signed =
        FileBackend::new(FileConfig::new(dir.path()).with_format(format(Some("first secret, 16+ bytes")))).unwrap();
    let other =
        FileBackend::new(FileConfig::new(dir.path()).with_format(format(Some("second secret, 16+ bytes")))).unwrap();
    let unsigned = FileBackend::new(FileConfig::new(dir.path()).with_format(format(None))).unwrap();

    signed.set("k", string("genuine"), cachestack::Expiry::Default).await.unwrap();
    assert_eq!(get_string(&signed, "k").await.as_deref(), Some("genuine"));

    // Files with valid framing and checksum, but planted by programs without the secret: never
    // served, and left where they are (intact entries another configuration may own); a write
    // replaces them.
    for (planter, what) in [(&unsigned, "unsigned"), (&other, "another secret")] {
        planter.set("k", string("planted"), cachestack::Expiry::Default).await.unwrap();
        assert_eq!(get_string(&signed, "k").await, None, "{what} accepted");
        assert_eq!(get_string(&signed, "k").await, None, "{what} accepted on a second read");
        assert_eq!(get_string(planter, "k").await.as_deref(), Some("planted"), "{what} entry destroyed");
    }
    signed.set("k", string("genuine again"), cachestack::Expiry::Default).await.unwrap();
    assert_eq!(get_string(&signed, "k").await.as_deref(), Some("genuine again"));
    // A genuine signed file moved to another key's path.
    signed.set("a", string("for a"), cachestack::Expiry::Default).await.unwrap();
    let moved = signed.path_for("b");
    fs::create_dir_all(moved.parent().unwrap()).unwrap();
    fs::copy(signed.path_for("a"), &moved).unwrap();
    assert_eq!(get_string(&signed, "b").await, None);
    assert!(!moved.exists(), "an entry of another key is removed from this key's path");
    assert_eq!(signed.stats().errors, 5);
    assert_eq!(get_string(&signed, "a").await.as_deref(), Some("for a"));
}

#[tokio::test]
async fn a_reader_that_cannot_open_an_intact_entry_leaves_it_for_the_others() {
    let dir = tempdir();
    let with_secret =
        |secret: &str| ValueFormat { signer: Some(Signer::new(secret).unwrap()), ..ValueFormat::default() };
    let small = ValueFormat { max_value_bytes: 64, ..ValueFormat::default() };
    let owner =
        FileBackend::new(FileConfig::new(dir.path()).with_format(with_secret("the right secret, 16+"))).unwrap();
    let wrong =
        FileBackend::new(FileConfig::new(dir.path()).with_format(with_secret("a wrong secret, 16+ b"))).unwrap();
    let unsigned_big = FileBackend::open(dir.path()).unwrap();
    let unsigned_small = FileBackend::new(FileConfig::new(dir.path()).with_format(small)).unwrap();

    owner.set("signed", string("owned"), cachestack::Expiry::Default).await.unwrap();
    unsigned_big.set("big", string(&"x".repeat(4096)), cachestack::Expiry::Default).await.unwrap();

    // Misconfigured readers: misses, counted, and the files stay.
    assert_eq!(get_string(&wrong, "signed").await, None);
    assert_eq!(get_string(&unsigned_small, "big").await, None);
    assert_eq!(wrong.stats().errors, 1);
    assert_eq!(unsigned_small.stats().errors, 1);
    assert!(owner.path_for("signed").exists() && unsigned_big.path_for("big").exists());

    // The readers they belong to still find them.
    assert_eq!(get_string(&owner, "signed").await.as_deref(), Some("owned"));
    assert_eq!(get_string(&unsigned_big, "big").await.map(|s| s.len()), Some(4096));
}

// ---- expiry and purging -------------------------------------------------------------------------

#[tokio::test]
async fn expired_files_are_never_returned_and_are_removed_when_read() {
    let dir = tempdir();
    let backend = FileBackend::open(dir.path()).unwrap();
    backend.set("gone", string("v"), cachestack::Expiry::after(Duration::ZERO)).await.unwrap();
    assert!(backend.path_for("gone").exists());
    assert!(!backend.exists("gone").await.unwrap());
    assert!(backend.get("gone").await.unwrap().is_none());
    assert!(!backend.path_for("gone").exists());
    assert_eq!(backend.stats().entries, Some(0));
    assert_eq!(backend.stats().errors, 0);
}

/// Absolute expiry: the deadline a writer fixed travels unchanged. A write whose deadline has
/// already passed is never served, and a read returns the writer's deadline (same Unix
/// millisecond), not a TTL recomputed on arrival.
#[tokio::test]
async fn a_deadline_is_kept_as_the_writer_fixed_it_and_a_past_one_is_never_served() {
    use cachestack::{Deadline, Expiry};
    let dir = tempdir();
    let backend = FileBackend::new(FileConfig::new(dir.path()).with_default_ttl(Duration::from_secs(3600))).unwrap();

    let past = Deadline::at(SystemTime::now() - Duration::from_secs(5));
    backend.set("past", string("v"), Expiry::At(past)).await.unwrap();
    backend.set_many(&[("past:bulk", string("v"))], Expiry::At(past)).await.unwrap();
    assert!(backend.get("past").await.unwrap().is_none());
    assert!(!backend.exists("past:bulk").await.unwrap());
    assert!(backend.get_many(&["past", "past:bulk"]).await.unwrap().iter().all(Option::is_none));
    assert_eq!(backend.stats().hits, 0);

    let deadline = Deadline::after(Duration::from_secs(90));
    backend.set("fixed", string("v"), Expiry::At(deadline)).await.unwrap();
    backend.set_many(&[("fixed:bulk", string("v"))], Expiry::At(deadline)).await.unwrap();
    for key in ["fixed", "fixed:bulk"] {
        let entry = backend.get(key).await.unwrap().unwrap();
        assert_eq!(entry.expires.map(Deadline::unix_millis), Some(deadline.unix_millis()), "{key}");
    }
    // What a read returned, written elsewhere, keeps the same deadline.
    let entry = backend.get("fixed").await.unwrap().unwrap();
    let other = FileBackend::open(dir.path().join("other")).unwrap();
    other.set("copy", entry.value, Expiry::from(entry.expires)).await.unwrap();
    assert_eq!(other.get("copy").await.unwrap().unwrap().expires, Some(deadline));
    // `Expiry::Never` is never overridden by the default TTL.
    backend.set("never", string("v"), Expiry::Never).await.unwrap();
    assert_eq!(backend.get("never").await.unwrap().unwrap().expires, None);
}

#[tokio::test]
async fn the_default_ttl_applies_to_writes_without_one() {
    let dir = tempdir();
    let hour = Duration::from_secs(3600);
    let backend = FileBackend::new(FileConfig::new(dir.path()).with_default_ttl(hour)).unwrap();
    backend.set("default", string("v"), cachestack::Expiry::Default).await.unwrap();
    backend.set("explicit", string("v"), cachestack::Expiry::after(Duration::from_secs(60))).await.unwrap();
    let ttl = backend.get("default").await.unwrap().unwrap().ttl().unwrap();
    assert!(ttl <= hour && ttl > Duration::from_secs(3000), "{ttl:?}");
    let ttl = backend.get("explicit").await.unwrap().unwrap().ttl().unwrap();
    assert!(ttl <= Duration::from_secs(60), "{ttl:?}");

    let forever = FileBackend::open(dir.path().join("forever")).unwrap();
    forever.set("k", string("v"), cachestack::Expiry::Default).await.unwrap();
    assert_eq!(forever.get("k").await.unwrap().unwrap().ttl(), None);
}

/// A temporary file as a crashed writer leaves it, last modified `age` ago.
fn plant_temp_file(shard: &Path, name: &str, age: Duration) -> PathBuf {
    fs::create_dir_all(shard).unwrap();
    let path = shard.join(format!(".cstmp{name}"));
    fs::write(&path, b"half a val").unwrap();
    let file = fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
    path
}

#[tokio::test]
async fn purge_expired_removes_expired_entries_and_stale_temp_files_only() {
    let dir = tempdir();
    let backend = FileBackend::open(dir.path()).unwrap();
    for key in ["old:1", "old:2", "old:3"] {
        backend.set(key, string("expired"), cachestack::Expiry::after(Duration::ZERO)).await.unwrap();
    }
    backend.set("live:ttl", string("v"), cachestack::Expiry::after(Duration::from_secs(3600))).await.unwrap();
    backend.set("live:forever", string("v"), cachestack::Expiry::Default).await.unwrap();
    let shard = backend.path_for("live:ttl").parent().unwrap().to_path_buf();
    let stale = plant_temp_file(&shard, "stale1", Duration::from_secs(3600));
    let fresh = plant_temp_file(&shard, "fresh1", Duration::ZERO);
    let foreign = backend.directory().join("notes.txt");
    fs::write(&foreign, b"keep").unwrap();

    assert_eq!(backend.purge_expired().await.unwrap(), 3);
    for key in ["old:1", "old:2", "old:3"] {
        assert!(!backend.path_for(key).exists(), "{key}");
    }
    assert!(!stale.exists());
    assert!(fresh.exists(), "a write in progress must not be disturbed");
    assert!(foreign.exists());
    assert_eq!(get_string(&backend, "live:ttl").await.as_deref(), Some("v"));
    assert_eq!(get_string(&backend, "live:forever").await.as_deref(), Some("v"));
    assert_eq!(backend.stats().entries, Some(2));
    assert_eq!(backend.purge_expired().await.unwrap(), 0);
}

#[tokio::test]
async fn auto_purge_runs_during_a_write_once_the_interval_has_passed() {
    let dir = tempdir();
    let planter = FileBackend::open(dir.path()).unwrap();
    planter.set("old", string("expired"), cachestack::Expiry::after(Duration::ZERO)).await.unwrap();

    // An interval of zero has always passed: every write purges.
    let purging = FileBackend::new(FileConfig::new(dir.path()).with_auto_purge_interval(Duration::ZERO)).unwrap();
    assert!(planter.path_for("old").exists(), "construction must not purge");
    purging.set("new", string("fresh"), cachestack::Expiry::Default).await.unwrap();
    assert!(!planter.path_for("old").exists());
    assert_eq!(get_string(&purging, "new").await.as_deref(), Some("fresh"));
    assert_eq!(purging.stats().entries, Some(1));
}

#[tokio::test]
async fn auto_purge_waits_for_its_interval() {
    let dir = tempdir();
    let planter = FileBackend::open(dir.path()).unwrap();
    planter.set("old", string("expired"), cachestack::Expiry::after(Duration::ZERO)).await.unwrap();
    let hourly =
        FileBackend::new(FileConfig::new(dir.path()).with_auto_purge_interval(Duration::from_secs(3600))).unwrap();
    for i in 0..20 {
        hourly.set(&format!("new:{i}"), string("fresh"), cachestack::Expiry::Default).await.unwrap();
    }
    assert!(planter.path_for("old").exists(), "purged before the interval passed");
    assert_eq!(hourly.purge_expired().await.unwrap(), 1);
}

// ---- bounds and LRU eviction --------------------------------------------------------------------

#[tokio::test]
async fn max_entries_evicts_the_least_recently_used_entry() {
    let dir = tempdir();
    let backend = FileBackend::new(FileConfig::new(dir.path()).with_max_entries(3)).unwrap();
    for key in ["a", "b", "c"] {
        backend.set(key, string(key), cachestack::Expiry::Default).await.unwrap();
    }
    assert_eq!(backend.stats().evictions, 0);
    // Reading `a` makes it the most recently used: `b` is now the oldest.
    assert!(backend.get("a").await.unwrap().is_some());
    backend.set("d", string("d"), cachestack::Expiry::Default).await.unwrap();

    assert!(!backend.path_for("b").exists());
    for key in ["a", "c", "d"] {
        assert_eq!(get_string(&backend, key).await.as_deref(), Some(key), "{key}");
    }
    let stats = backend.stats();
    assert_eq!((stats.evictions, stats.entries), (1, Some(3)));
    assert_eq!(files_under(backend.directory()).len(), 3);
}

#[tokio::test]
async fn max_bytes_evicts_the_least_recently_used_entries() {
    let dir = tempdir();
    let probe = FileBackend::open(dir.path().join("probe")).unwrap();
    probe.set("a", string(&"x".repeat(1000)), cachestack::Expiry::Default).await.unwrap();
    let size = fs::metadata(probe.path_for("a")).unwrap().len();

    // Room for three files and a half.
    let backend = FileBackend::new(FileConfig::new(dir.path()).with_max_bytes(size * 7 / 2)).unwrap();
    for key in ["a", "b", "c"] {
        backend.set(key, string(&"x".repeat(1000)), cachestack::Expiry::Default).await.unwrap();
    }
    assert_eq!(backend.stats().evictions, 0);
    assert!(backend.get("a").await.unwrap().is_some());
    backend.set("d", string(&"x".repeat(1000)), cachestack::Expiry::Default).await.unwrap();

    assert!(!backend.path_for("b").exists());
    for key in ["a", "c", "d"] {
        assert!(backend.path_for(key).exists(), "{key}");
    }
    let stats = backend.stats();
    assert_eq!(stats.evictions, 1);
    assert_eq!(stats.details["bytes_on_disk"], (3 * size).to_string());

    // One value larger than the whole bound is refused, not stored and evicted.
    let err = backend.set("huge", string(&"x".repeat(10_000)), cachestack::Expiry::Default).await.unwrap_err();
    assert!(matches!(err, Error::ValueTooLarge { .. }), "{err}");
    assert!(!backend.path_for("huge").exists());
}

#[tokio::test]
async fn bounds_see_entries_written_before_start() {
    let dir = tempdir();
    let first = FileBackend::open(dir.path()).unwrap();
    for i in 0..10 {
        first.set(&format!("k{i}"), string("v"), cachestack::Expiry::Default).await.unwrap();
    }
    let bounded = FileBackend::new(FileConfig::new(dir.path()).with_max_entries(5)).unwrap();
    assert_eq!(bounded.stats().entries, Some(10));
    bounded.set("new", string("v"), cachestack::Expiry::Default).await.unwrap();
    // 11 entries over a bound of 5: evicted down to 5 - 5/10 = 5, the new entry kept.
    assert_eq!(bounded.stats().entries, Some(5));
    assert_eq!(bounded.stats().evictions, 6);
    assert!(bounded.path_for("new").exists());
    assert_eq!(files_under(bounded.directory()).len(), 5);
}

// ---- bulk operations and stats ------------------------------------------------------------------

#[tokio::test]
async fn bulk_operations_and_stats() {
    let dir = tempdir();
    let backend = FileBackend::new(FileConfig::new(dir.path()).with_namespace("bulk")).unwrap();
    backend.set_many(&[("a", string("1")), ("b", string("2"))], cachestack::Expiry::Default).await.unwrap();
    let got = backend.get_many(&["a", "missing", "b"]).await.unwrap();
    let got: Vec<Option<String>> = got.into_iter().map(|e| e.map(|e| e.value.get::<String>().unwrap())).collect();
    assert_eq!(got, vec![Some("1".into()), None, Some("2".into())]);
    assert_eq!(backend.delete_many(&["a", "missing", "b"]).await.unwrap(), 2);
    assert!(backend.get("a").await.unwrap().is_none());

    backend.set("c", string("3"), cachestack::Expiry::Default).await.unwrap();
    let size = fs::metadata(backend.path_for("c")).unwrap().len();
    let stats = backend.stats();
    assert_eq!(stats.name, "file");
    assert_eq!((stats.hits, stats.misses, stats.writes, stats.deletes), (2, 2, 3, 3));
    assert_eq!(stats.entries, Some(1));
    assert_eq!(stats.details["namespace"], "bulk");
    assert_eq!(stats.details["directory"], backend.directory().display().to_string());
    assert_eq!(stats.details["bytes_on_disk"], size.to_string());

    // A new backend on the same directory counts what is there.
    let again = FileBackend::new(FileConfig::new(dir.path()).with_namespace("bulk")).unwrap();
    assert_eq!(again.stats().entries, Some(1));
}

// ---- concurrency and crashes --------------------------------------------------------------------

/// Threads writing the same keys through two backends on one directory (as two processes would),
/// with readers running alongside: every read is a complete value of one writer, or a miss.
#[test]
fn concurrent_writers_on_the_same_keys_never_expose_partial_values() {
    const WRITERS: u32 = 8;
    const READERS: usize = 4;
    const WRITES: u64 = 60;
    let dir = tempdir();
    let config = FileConfig::new(dir.path()).with_max_entries(6).with_auto_purge_interval(Duration::ZERO);
    let caches = [Cache::new(FileBackend::new(config.clone()).unwrap()), Cache::new(FileBackend::new(config).unwrap())];
    let start = Arc::new(Barrier::new(WRITERS as usize + READERS));
    let writers_done = AtomicBool::new(false);
    let (reads, hits) = (AtomicU64::new(0), AtomicU64::new(0));

    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (cache, start) = (&caches[w as usize % 2], Arc::clone(&start));
                scope.spawn(move || {
                    start.wait();
                    for seq in 0..WRITES {
                        cache.set_blocking(&record::key(seq), &record::record(w, seq), None).unwrap();
                    }
                })
            })
            .collect();
        for r in 0..READERS {
            let (cache, start) = (&caches[r % 2], Arc::clone(&start));
            let (writers_done, reads, hits) = (&writers_done, &reads, &hits);
            scope.spawn(move || {
                start.wait();
                let mut seq = 0;
                while !writers_done.load(Ordering::Acquire) {
                    let found = cache.get_blocking::<record::Record>(&record::key(seq)).unwrap();
                    if let Some(found) = found {
                        assert!(record::is_complete(&found), "partial value from writer {}", found.0);
                        hits.fetch_add(1, Ordering::Relaxed);
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                    seq += 1;
                }
            });
        }
        for writer in writers {
            writer.join().unwrap();
        }
        writers_done.store(true, Ordering::Release);
    });

    for cache in &caches {
        assert_eq!(cache.stats().errors, 0, "{:?}", cache.stats());
        for seq in 0..record::KEYS {
            if let Some(found) = cache.get_blocking::<record::Record>(&record::key(seq)).unwrap() {
                assert!(record::is_complete(&found));
            }
        }
    }
    // Each writer's last write may land after the last sweep listed the directory.
    assert!(files_under(dir.path()).len() <= 6 + WRITERS as usize, "bound not enforced");
    assert!(temp_files_under(dir.path()).is_empty(), "temporary files left by successful writes");
    eprintln!("{} concurrent reads, {} hits", reads.into_inner(), hits.into_inner());
}

/// Kills the child processes when a test fails half-way.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Two writer processes write the same keys and are killed with SIGKILL while writing, twenty
/// times over. Afterwards every key holds a complete value (a killed write never damages the
/// previous value), no read reports a damaged file, and a purge clears the temporary files the
/// killed writers left.
#[test]
fn writers_killed_with_sigkill_leave_only_complete_values() {
    const ROUNDS: u64 = 20;
    let dir = tempdir();
    for round in 0..ROUNDS {
        let mut children = Children(Vec::new());
        let mut ready = Vec::new();
        for w in 0..2u64 {
            // Vary how long each child runs before the kill.
            let ready_after = 1 + (round * 13 + w * 29) % 64;
            let mut child = Command::new(env!("CARGO_BIN_EXE_file_writer"))
                .arg(dir.path())
                .arg((round * 2 + w).to_string())
                .arg(ready_after.to_string())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn file_writer");
            ready.push(BufReader::new(child.stdout.take().expect("child stdout")));
            children.0.push(child);
        }
        for stdout in &mut ready {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("read from file_writer");
            assert_eq!(line.trim(), "ready", "file_writer stopped before its writes (round {round})");
        }
        for child in &mut children.0 {
            child.kill().expect("kill file_writer");
            let status = child.wait().expect("wait for file_writer");
            #[cfg(unix)]
            {
                use std::os::unix::process::ExitStatusExt;
                assert_eq!(status.signal(), Some(9), "file_writer was not killed but exited: {status}");
            }
            #[cfg(not(unix))]
            assert!(!status.success());
        }
        drop(ready);

        let cache = Cache::new(FileBackend::open(dir.path()).unwrap());
        for seq in 0..record::KEYS {
            let found = cache.get_blocking::<record::Record>(&record::key(seq)).unwrap();
            let found = found.unwrap_or_else(|| panic!("key {seq} lost after round {round}"));
            assert!(record::is_complete(&found), "partial value for key {seq} after round {round}");
        }
        assert_eq!(cache.stats().errors, 0, "damaged file after round {round}");
    }

    let leftovers = temp_files_under(dir.path()).len();
    eprintln!("{leftovers} temporary files left by killed writers");
    let cleaner = FileBackend::new(FileConfig::new(dir.path()).with_temp_max_age(Duration::ZERO)).unwrap();
    cachestack::rt::block_on(async move {
        assert_eq!(cleaner.purge_expired().await.unwrap(), 0);
        assert!(temp_files_under(dir.path()).is_empty());
        assert_eq!(cleaner.stats().entries, Some(record::KEYS));
    })
    .unwrap();
}
