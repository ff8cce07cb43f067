//! `#[invalidate(pattern = ...)]` end to end through `#[cached]` functions: on a memory cache
//! (whose typed partition keeps no key text: a pattern deletion makes every typed entry stale),
//! a file cache and Redis (which keep keys a pattern does not match); placeholder values are
//! glob-escaped, so an argument holding `*` matches only itself.
//!
//! Redis needs `CACHESTACK_TEST_REDIS_URL` (`tests/servers.sh`); without it the Redis test is
//! skipped (it fails in CI).
#![allow(clippy::unwrap_used)]

mod macros_support;

use std::sync::{Mutex, OnceLock};

use cachestack::{cached, invalidate, Cache, CacheRegistry, FileBackend};
use macros_support::register_memory;

/// Body executions per `id.field` (the tests of this file run in parallel and share functions).
struct Runs(Mutex<Vec<String>>);

impl Runs {
    const fn new() -> Self {
        Runs(Mutex::new(Vec::new()))
    }

    fn record(&self, id: &str, field: &str) {
        self.0.lock().unwrap().push(format!("{id}.{field}"));
    }

    fn count(&self, id: &str, field: &str) -> usize {
        let run = format!("{id}.{field}");
        self.0.lock().unwrap().iter().filter(|r| **r == run).count()
    }
}

/// Calls `f(id, field)` and tells whether its body ran for these arguments.
fn ran<T>(runs: &Runs, id: &str, field: &str, call: impl FnOnce() -> T) -> bool {
    let before = runs.count(id, field);
    call();
    runs.count(id, field) != before
}

// ---- memory -------------------------------------------------------------------------------------

fn memory() {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| register_memory("pat-mem"));
}

static MEM_RUNS: Runs = Runs::new();

#[cached(cache = "pat-mem", key = "user:<id>:<field>")]
fn mem_field(id: u64, field: &str) -> String {
    MEM_RUNS.record(&id.to_string(), field);
    format!("{id}.{field}")
}

#[invalidate(cache = "pat-mem", pattern = "user:<id>:*")]
fn mem_forget(id: u64) {
    let _ = id;
}

#[test]
fn a_memory_cache_recomputes_after_a_pattern_invalidation() {
    memory();
    mem_field(7, "name");
    mem_field(7, "mail");
    assert!(!ran(&MEM_RUNS, "7", "name", || mem_field(7, "name")), "cached");
    mem_forget(7);
    assert!(ran(&MEM_RUNS, "7", "name", || mem_field(7, "name")), "user:7:name is gone");
    assert!(ran(&MEM_RUNS, "7", "mail", || mem_field(7, "mail")), "user:7:mail is gone");
    assert!(!ran(&MEM_RUNS, "7", "name", || mem_field(7, "name")), "cached again");
}

// ---- file ---------------------------------------------------------------------------------------

fn files() {
    static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        CacheRegistry::global().register("pat-files", Cache::new(FileBackend::open(dir.path()).unwrap()));
        dir
    });
}

static FILE_RUNS: Runs = Runs::new();

#[cached(cache = "pat-files", namespace = "u", key = "user:<id>:<field>")]
fn file_field(id: String, field: &str) -> String {
    FILE_RUNS.record(&id, field);
    format!("{id}.{field}")
}

#[invalidate(cache = "pat-files", namespace = "u", pattern = "user:<id>:*")]
fn file_forget(id: &str) {
    let _ = id;
}

#[invalidate(cache = "pat-files", namespace = "u", pattern = "user:<id>:<field>", pattern = "user:9:?")]
async fn file_forget_async(id: &str, field: &str) {
    let _ = (id, field);
}

#[test]
fn a_file_cache_removes_matching_keys_and_keeps_the_others() {
    files();
    for id in ["7", "70", "*"] {
        file_field(id.into(), "name");
    }
    file_forget("7");
    assert!(ran(&FILE_RUNS, "7", "name", || file_field("7".into(), "name")), "user:7:name matched");
    assert!(!ran(&FILE_RUNS, "70", "name", || file_field("70".into(), "name")), "user:70:name did not match");
    assert!(!ran(&FILE_RUNS, "*", "name", || file_field("*".into(), "name")), "user:*:name did not match");

    // An argument holding `*` is literal: it removes `user:*:...` only.
    file_forget("*");
    assert!(ran(&FILE_RUNS, "*", "name", || file_field("*".into(), "name")), "user:*:name matched");
    assert!(!ran(&FILE_RUNS, "7", "name", || file_field("7".into(), "name")), "an escaped `*` matches no other id");
    assert!(!ran(&FILE_RUNS, "70", "name", || file_field("70".into(), "name")));
}

#[tokio::test]
async fn an_async_invalidation_takes_several_patterns() {
    files();
    for (id, field) in [("8", "a"), ("8", "b"), ("9", "c"), ("9", "cd")] {
        file_field(id.into(), field);
    }
    file_forget_async("8", "?").await;
    assert!(!ran(&FILE_RUNS, "8", "a", || file_field("8".into(), "a")), "an escaped `?` matches only `?`");
    file_forget_async("8", "a").await;
    assert!(ran(&FILE_RUNS, "8", "a", || file_field("8".into(), "a")), "user:8:a matched");
    assert!(!ran(&FILE_RUNS, "8", "b", || file_field("8".into(), "b")), "user:8:b did not match");
    assert!(ran(&FILE_RUNS, "9", "c", || file_field("9".into(), "c")), "user:9:? matched");
    assert!(!ran(&FILE_RUNS, "9", "cd", || file_field("9".into(), "cd")), "user:9:? does not match two characters");
}

// ---- Redis --------------------------------------------------------------------------------------

fn redis() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let Some(url) = cachestack_tests::server_url("CACHESTACK_TEST_REDIS_URL", "redis") else { return false };
        let run = std::env::var("CACHESTACK_TEST_REDIS_RUN").unwrap_or_else(|_| "run".into());
        let config = cachestack::RedisConfig::new(&url).with_namespace(format!("{run}-pattern"));
        let cache = Cache::new(cachestack::RedisBackend::new(config).unwrap());
        // Left over by an earlier run without `CACHESTACK_TEST_REDIS_RUN`.
        cache.delete_matching_blocking("*").unwrap();
        CacheRegistry::global().register("pat-redis", cache);
        true
    })
}

static REDIS_RUNS: Runs = Runs::new();

#[cached(cache = "pat-redis", ttl = "1h", key = "user:<id>:<field>")]
async fn redis_field(id: u64, field: &str) -> String {
    REDIS_RUNS.record(&id.to_string(), field);
    format!("{id}.{field}")
}

#[invalidate(cache = "pat-redis", pattern = "user:<id>:*")]
async fn redis_forget(id: u64) {
    let _ = id;
}

async fn redis_ran(id: u64, field: &str) -> bool {
    let before = REDIS_RUNS.count(&id.to_string(), field);
    redis_field(id, field).await;
    REDIS_RUNS.count(&id.to_string(), field) != before
}

#[tokio::test]
async fn redis_removes_matching_keys_and_keeps_the_others() {
    if !redis() {
        return;
    }
    for (id, field) in [(7, "name"), (7, "mail"), (70, "name")] {
        redis_field(id, field).await;
    }
    redis_forget(7).await;
    assert!(redis_ran(7, "name").await, "user:7:name matched");
    assert!(redis_ran(7, "mail").await, "user:7:mail matched");
    assert!(!redis_ran(70, "name").await, "user:70:name did not match");
}
