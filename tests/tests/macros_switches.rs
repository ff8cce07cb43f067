//! Runtime switches through `#[cached]` functions: a cache disabled by name (memory and file),
//! reads only, writes only, the default cache, every cache at once, and the scoped bypass (sync
//! and async). Switches are process-wide, so the tests of this file take turns.
#![allow(clippy::unwrap_used)]

mod macros_support;

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Mutex, MutexGuard, OnceLock};

use cachestack::{cached, Cache, CacheRegistry, Commands, FileBackend};
use macros_support::register_memory;

/// One test at a time (a switch of one test must not meet the calls of another).
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    caches();
    guard
}

fn caches() {
    static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
    ROOT.get_or_init(|| {
        register_memory("sw-mem");
        let dir = tempfile::tempdir().unwrap();
        CacheRegistry::global().register("sw-file", Cache::new(FileBackend::open(dir.path()).unwrap()));
        dir
    });
}

/// Every body execution gets a new number, so a value tells which execution computed it.
static RUNS: AtomicU64 = AtomicU64::new(0);

fn next() -> u64 {
    RUNS.fetch_add(1, SeqCst) + 1
}

#[cached(cache = "sw-mem")]
fn mem(id: u64) -> (u64, u64) {
    (id, next())
}

#[cached(cache = "sw-file")]
fn file(id: u64) -> (u64, u64) {
    (id, next())
}

#[cached(cache = "sw-file")]
async fn file_async(id: u64) -> (u64, u64) {
    (id, next())
}

#[cached]
fn default_cache(id: u64) -> (u64, u64) {
    (id, next())
}

/// Checks `f` against the switch `commands` set by `set` (and undone by `reset`): reads answer
/// a value cached before; writes store what is computed.
fn check(commands: Commands, f: fn(u64) -> (u64, u64), set: impl Fn(), reset: impl Fn(), ids: (u64, u64)) {
    let (cached_before, fresh) = ids;
    let before = f(cached_before);
    assert_eq!(f(cached_before), before, "cached while enabled");
    set();
    let read = f(cached_before);
    assert_eq!(read == before, commands.reads(), "reads allowed: {}", commands.reads());
    let computed = f(fresh);
    reset();
    assert_eq!(f(fresh) == computed, commands.writes(), "writes allowed: {}", commands.writes());
    if commands.writes() && !commands.reads() {
        assert_eq!(f(cached_before), read, "writes only: the value computed while switched replaced the old one");
    }
}

#[test]
fn a_disabled_cache_neither_reads_nor_writes() {
    let _serial = serial();
    let registry = CacheRegistry::global();
    check(Commands::NONE, mem, || registry.disable("sw-mem"), || registry.enable("sw-mem"), (1, 2));
    check(Commands::NONE, file, || registry.disable("sw-file"), || registry.enable("sw-file"), (1, 2));
}

#[test]
fn disabling_one_cache_leaves_the_others_alone() {
    let _serial = serial();
    let registry = CacheRegistry::global();
    let before = mem(10);
    registry.disable("sw-file");
    assert_eq!(mem(10), before);
    registry.enable("sw-file");
}

#[test]
fn reads_only_answers_hits_and_stores_nothing() {
    let _serial = serial();
    let registry = CacheRegistry::global();
    for (f, name) in [(mem as fn(u64) -> (u64, u64), "sw-mem"), (file, "sw-file")] {
        check(Commands::READS, f, || registry.set_commands(name, Commands::READS), || registry.enable(name), (3, 4));
    }
}

#[test]
fn writes_only_computes_every_call_and_stores_it() {
    let _serial = serial();
    let registry = CacheRegistry::global();
    for (f, name) in [(mem as fn(u64) -> (u64, u64), "sw-mem"), (file, "sw-file")] {
        check(Commands::WRITES, f, || registry.set_commands(name, Commands::WRITES), || registry.enable(name), (5, 6));
    }
}

#[test]
fn the_default_cache_and_the_global_switch() {
    let _serial = serial();
    let registry = CacheRegistry::global();
    check(Commands::NONE, default_cache, || registry.disable_default(), || registry.enable_default(), (7, 8));
    check(Commands::NONE, mem, || registry.disable_all(), || registry.enable_all(), (7, 8));
    // The global switch and a cache's own combine: reads only and writes only make neither.
    let both = || {
        registry.set_global_commands(Commands::READS);
        registry.set_commands("sw-file", Commands::WRITES);
        assert_eq!(registry.commands(Some("sw-file")), Commands::NONE);
    };
    let reset = || {
        registry.enable_all();
        registry.enable("sw-file");
        assert_eq!(registry.commands(Some("sw-file")), Commands::ALL);
    };
    check(Commands::NONE, file, both, reset, (7, 8));
}

#[test]
fn bypass_runs_the_body_and_keeps_the_cache_as_it_was() {
    let _serial = serial();
    for f in [mem as fn(u64) -> (u64, u64), file] {
        let before = f(9);
        assert_ne!(cachestack::bypass(|| f(9)), before, "the body ran");
        assert_eq!(f(9), before, "nothing was written");
        let fresh = cachestack::bypass(|| f(19));
        assert_ne!(f(19), fresh, "nothing was stored for a key computed under the bypass");
        assert_ne!(cachestack::bypass(|| cachestack::bypass(|| f(9))), before, "nesting");
        assert_eq!(f(9), before, "the bypass ends with its scope");
    }
}

// (The guard serialises the tests of this file; the test runs on a current-thread runtime.)
#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn bypass_async_covers_async_and_sync_functions_it_awaits() {
    let _serial = serial();
    let before = file_async(11).await;
    assert_ne!(cachestack::bypass_async(file_async(11)).await, before, "the body ran");
    assert_eq!(file_async(11).await, before, "nothing was written");
    let sync_before = mem(11);
    assert_ne!(cachestack::bypass_async(async { mem(11) }).await, sync_before);
    assert_eq!(mem(11), sync_before);
}
