//! `#[cached]` over backends that are not in process: an asynchronous-only backend (like a
//! network store) used by synchronous functions from plain threads and from inside both tokio
//! runtime flavours, and the file backend, which stores bytes. A value of another type under the
//! key (in memory, remote, or in a stack's front layer) is a counted miss.
#![allow(clippy::unwrap_used)]

mod macros_support;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier, Mutex, OnceLock};

use cachestack::{cached, invalidate, Backend, Cache, CacheRegistry, FileBackend};
use cachestack_tests::sync::spin_until;
use macros_support::{assert_ttl, register, register_memory, AsyncOnly};

fn async_only() -> &'static Arc<AsyncOnly> {
    static BACKEND: OnceLock<Arc<AsyncOnly>> = OnceLock::new();
    BACKEND.get_or_init(|| register("async-only", AsyncOnly::default()))
}

/// The ids `sync_remote`'s body ran for (tests run in parallel, each with its own id).
static SYNC_REMOTE_RUNS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn sync_remote_runs(id: u32) -> usize {
    SYNC_REMOTE_RUNS.lock().unwrap().iter().filter(|&&ran| ran == id).count()
}

#[cached(cache = "async-only", key = "sync-remote:<id>")]
fn sync_remote(id: u32) -> String {
    SYNC_REMOTE_RUNS.lock().unwrap().push(id);
    format!("remote {id}")
}

#[test]
fn a_sync_fn_reaches_an_async_backend_from_a_plain_thread() {
    let backend = async_only();
    assert_eq!(sync_remote(1), "remote 1");
    assert_eq!(sync_remote(1), "remote 1");
    assert_eq!(sync_remote_runs(1), 1);
    assert!(backend.contains("sync-remote:1"));
}

#[test]
fn a_sync_fn_reaches_an_async_backend_from_inside_a_current_thread_runtime() {
    async_only();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let got = rt.block_on(async {
        let first = sync_remote(2);
        let second = sync_remote(2);
        (first, second)
    });
    assert_eq!(got, ("remote 2".to_string(), "remote 2".to_string()));
    assert_eq!(sync_remote_runs(2), 1);
    assert!(async_only().contains("sync-remote:2"));
}

#[test]
fn a_sync_fn_reaches_an_async_backend_from_inside_a_multi_thread_runtime() {
    async_only();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let got = rt.block_on(async {
        // From the runtime's own task and from spawned tasks on its workers.
        let direct = sync_remote(3);
        let spawned: Vec<_> = (0..4).map(|_| tokio::spawn(async { sync_remote(3) })).collect();
        let mut all = vec![direct];
        for task in spawned {
            all.push(task.await.unwrap());
        }
        all
    });
    assert!(got.iter().all(|v| v == "remote 3"));
    assert_eq!(sync_remote_runs(3), 1);
    assert!(async_only().contains("sync-remote:3"));
}

static ASYNC_REMOTE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = "async-only", ttl = "10m", key = "async-remote:<id>")]
async fn async_remote(id: u32) -> Vec<u32> {
    ASYNC_REMOTE_RUNS.fetch_add(1, SeqCst);
    vec![id; 3]
}

#[tokio::test(flavor = "current_thread")]
async fn an_async_fn_awaits_an_async_backend() {
    async_only();
    assert_eq!(async_remote(4).await, vec![4, 4, 4]);
    assert_eq!(async_remote(4).await, vec![4, 4, 4]);
    assert_eq!(ASYNC_REMOTE_RUNS.load(SeqCst), 1);
    assert_eq!(async_remote_stats().hits, 1);
    assert_ttl(async_only().ttl_of("async-remote:4"), Some(std::time::Duration::from_secs(600)));
    assert!(async_remote_invalidate(&4).await.unwrap());
    assert!(!async_only().contains("async-remote:4"));
}

static REMOTE_STAMPEDE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = "async-only", key = "remote-stampede")]
fn remote_stampede() -> u64 {
    REMOTE_STAMPEDE_RUNS.fetch_add(1, SeqCst);
    spin_until(|| remote_stampede_stats().waits >= 15);
    99
}

#[test]
fn single_flight_holds_for_sync_callers_of_an_async_backend() {
    async_only();
    let start = Arc::new(Barrier::new(16));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                remote_stampede()
            })
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap(), 99);
    }
    assert_eq!(REMOTE_STAMPEDE_RUNS.load(SeqCst), 1);
}

// ---- the file backend -------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Report {
    id: u64,
    lines: Vec<String>,
}

fn file_root() -> &'static tempfile::TempDir {
    static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        CacheRegistry::global().register("files", Cache::new(FileBackend::open(dir.path()).unwrap()));
        dir
    })
}

static REPORT_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = "files", ttl = "1h", key = "report:<id>")]
fn report(id: u64) -> Report {
    REPORT_RUNS.fetch_add(1, SeqCst);
    Report { id, lines: vec![format!("line of {id}")] }
}

static ASYNC_REPORT_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = "files")]
async fn async_report(id: u64) -> Option<Report> {
    ASYNC_REPORT_RUNS.fetch_add(1, SeqCst);
    (id > 0).then(|| Report { id, lines: vec![] })
}

#[invalidate(cache = "files", key = "report:<id>")]
fn delete_report(id: u64) -> Result<(), String> {
    let _ = id;
    Ok(())
}

#[tokio::test]
async fn values_round_trip_through_the_file_backend() {
    let root = file_root();
    assert_eq!(report(1).lines, ["line of 1"]);
    assert_eq!(report(1).lines, ["line of 1"]);
    assert_eq!(REPORT_RUNS.load(SeqCst), 1);

    // The bytes are on disk: a second cache over the same directory reads the value back.
    let other = Cache::new(FileBackend::open(root.path()).unwrap());
    assert_eq!(other.get::<Report>("report:1").await.unwrap().unwrap().id, 1);

    assert_eq!(async_report(2).await.unwrap().id, 2);
    assert_eq!(async_report(2).await.unwrap().id, 2);
    assert_eq!(async_report(0).await, None);
    assert_eq!(async_report(0).await, None);
    assert_eq!(ASYNC_REPORT_RUNS.load(SeqCst), 2);

    delete_report(1).unwrap();
    assert_eq!(other.get::<Report>("report:1").await.unwrap(), None);
    report(1);
    assert_eq!(REPORT_RUNS.load(SeqCst), 2);
}

/// A file written by an older version of the return type is a miss, never a panic nor a
/// misread value.
#[cached(cache = "files", key = "shape:<id>")]
fn reshaped(id: u64) -> Report {
    Report { id, lines: vec!["new shape".into()] }
}

#[tokio::test]
async fn a_stored_value_of_another_type_is_a_miss() {
    file_root();
    let cache = CacheRegistry::global().get("files").unwrap();
    cache.set("shape:1", &"an old String value".to_string(), None).await.unwrap();
    assert_eq!(reshaped(1).lines, ["new shape"]);
    assert_eq!(reshaped_stats().errors, 1);
    assert_eq!(reshaped(1).lines, ["new shape"]);
    assert_eq!(reshaped_stats().hits, 1);
}

// ---- a tiered stack: memory over files ---------------------------------------------------------

fn tiered() -> &'static (tempfile::TempDir, Cache) {
    static STACK: OnceLock<(tempfile::TempDir, Cache)> = OnceLock::new();
    STACK.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let stack = cachestack::TieredCache::builder()
            .layer(cachestack::MemoryBackend::with_capacity(1000))
            .layer(FileBackend::open(dir.path()).unwrap())
            .build()
            .unwrap();
        let cache = Cache::new(stack);
        CacheRegistry::global().register("tiered", cache.clone());
        (dir, cache)
    })
}

static TIERED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = "tiered", key = "tiered:<id>")]
fn through_tiers(id: u64) -> Report {
    TIERED_RUNS.fetch_add(1, SeqCst);
    Report { id, lines: vec!["computed".into()] }
}

#[cached(cache = "tiered", key = "tiered-async:<id>")]
async fn through_tiers_async(id: u64) -> Report {
    TIERED_RUNS.fetch_add(1, SeqCst);
    Report { id, lines: vec!["computed".into()] }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiered_stack_answers_from_either_layer() {
    let (dir, _) = tiered();
    // A value only in the file layer (written by "another process") is a hit, not a run.
    let files = Cache::new(FileBackend::open(dir.path()).unwrap());
    files.set("tiered:1", &Report { id: 1, lines: vec!["from disk".into()] }, None).await.unwrap();
    let from_disk = tokio::task::spawn_blocking(|| through_tiers(1)).await.unwrap();
    assert_eq!(from_disk.lines, ["from disk"]);
    // Then from the memory layer, which the read backfilled.
    assert_eq!(tokio::task::spawn_blocking(|| through_tiers(1)).await.unwrap().lines, ["from disk"]);
    assert_eq!(through_tiers_stats().hits, 2);

    assert_eq!(through_tiers_async(2).await.lines, ["computed"]);
    assert_eq!(through_tiers_async(2).await.lines, ["computed"]);
    assert_eq!(TIERED_RUNS.load(SeqCst), 1);
    // Both layers hold it.
    assert!(files.get::<Report>("tiered-async:2").await.unwrap().is_some());
    assert!(through_tiers_async_invalidate(&2).await.unwrap());
    assert!(files.get::<Report>("tiered-async:2").await.unwrap().is_none());
}

// ---- values of another type under the key -----------------------------------------------------

static TYPED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = "typed-memory", key = "typed")]
fn typed() -> u64 {
    TYPED_RUNS.fetch_add(1, SeqCst);
    42
}

#[cached(cache = "typed-remote", key = "typed")]
async fn typed_remote() -> u64 {
    TYPED_RUNS.fetch_add(1, SeqCst);
    43
}

#[test]
fn a_value_of_another_type_under_the_key_is_a_counted_miss() {
    let memory = register_memory("typed-memory");
    memory.set_blocking("typed", &"not a number".to_string(), None).unwrap();
    assert_eq!(typed(), 42);
    let stats = typed_stats();
    assert_eq!((stats.hits, stats.misses, stats.errors), (0, 1, 1));
    assert_eq!(typed(), 42, "the right value replaced it");
    assert_eq!(typed_stats().hits, 1);
    assert_eq!(TYPED_RUNS.load(SeqCst), 1);

    let remote = Cache::from_arc(register("typed-remote", AsyncOnly::default()));
    remote.set_blocking("typed", &vec![1u8, 2], None).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert_eq!(runtime.block_on(typed_remote()), 43);
    let stats = typed_remote_stats();
    assert_eq!((stats.hits, stats.misses, stats.errors), (0, 1, 1));
    assert_eq!(runtime.block_on(typed_remote()), 43);
    assert_eq!(typed_remote_stats().hits, 1);
}

#[cached(cache = "typed-tiered", key = "typed")]
fn typed_tiered() -> u64 {
    44
}

/// On a stack whose front layer is in memory, the wrong value is seen twice (the first look
/// into the front layer, then the stack's read): it is still one failure of one call.
#[test]
fn a_value_of_another_type_in_a_stacks_front_layer_counts_one_error() {
    let front: Arc<dyn Backend> = Arc::new(cachestack::MemoryBackend::with_capacity(100));
    let stack = cachestack::TieredCache::from_layers(vec![front.clone(), Arc::new(AsyncOnly::default())]).unwrap();
    cachestack::CacheRegistry::global().register("typed-tiered", Cache::new(stack));
    Cache::from_arc(front).set_blocking("typed", &"not a number".to_string(), None).unwrap();
    assert_eq!(typed_tiered(), 44);
    let stats = typed_tiered_stats();
    assert_eq!((stats.hits, stats.misses, stats.errors), (0, 1, 1), "{stats:?}");
    assert_eq!(typed_tiered(), 44);
    assert_eq!(typed_tiered_stats().hits, 1);
}
