//! `#[invalidate]` end to end: after the body (only on `Ok` for `Result` functions) or before it,
//! several keys, named caches, namespace and version, methods, sync and async, and cache
//! failures (ignored by default, propagated on request).
#![allow(clippy::unwrap_used)]

mod macros_support;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::OnceLock;

use cachestack::{cached, invalidate, Cache, Error};
use cachestack_tests::errors::AppError;
use cachestack_tests::faults::Down;
use macros_support::{register, register_memory, AsyncOnly};

fn memory() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| register_memory("inv"))
}

/// Whether a text-keyed entry is present (what methods keep: they have no typed partition).
fn present(key: &str) -> bool {
    memory().get_blocking::<String>(key).unwrap().is_some()
}

/// Body executions of `user`, per id (the tests of this file run in parallel).
static USER_RUNS: [AtomicUsize; 8] = [const { AtomicUsize::new(0) }; 8];

#[cached(cache = "inv", key = "user:<id>")]
fn user(id: u64) -> String {
    USER_RUNS[id as usize].fetch_add(1, SeqCst);
    format!("user {id}")
}

/// Whether `user(id)` is cached: calls it and tells whether its body did not run. (Its results
/// live in its typed partition of the memory cache, which a text-keyed read does not see; an
/// absent entry is computed, and cached again, by this check.)
fn user_cached(id: u64) -> bool {
    let before = USER_RUNS[id as usize].load(SeqCst);
    user(id);
    USER_RUNS[id as usize].load(SeqCst) == before
}

#[invalidate(cache = "inv", key = "user:<id>")]
fn rename(id: u64, fail: bool) -> Result<(), String> {
    if fail {
        return Err("rename failed".into());
    }
    Ok(())
}

#[test]
fn after_the_body_and_only_on_ok() {
    memory();
    user(1);
    assert!(user_cached(1));
    assert!(rename(1, true).is_err());
    assert!(user_cached(1), "an Err leaves the entry alone");
    rename(1, false).unwrap();
    assert!(!user_cached(1), "the entry is gone: the body runs again");
    assert!(user_cached(1));
}

#[invalidate(cache = "inv", key = "user:<id>", before = true)]
fn rename_first(id: u64, fail: bool) -> Result<(), String> {
    // The entry is already gone when the body runs.
    assert!(!user_cached(id));
    if fail {
        Err("failed".into())
    } else {
        Ok(())
    }
}

#[test]
fn before_the_body_whatever_it_returns() {
    memory();
    user(2);
    assert!(rename_first(2, true).is_err());
    // (`rename_first` checked that the entry was gone, and computed it again.)
    assert!(user_cached(2));
}

#[invalidate(cache = "inv", key = "user:<a>", key = "user:<b>")]
fn swap(a: u64, b: u64) {
    let _ = (a, b);
}

#[invalidate(cache = "inv", key = "user:<id>")]
fn touch(mut id: u64) -> u64 {
    id += 1;
    id
}

#[test]
fn several_keys_and_plain_return_types() {
    memory();
    user(3);
    user(4);
    swap(3, 4);
    assert!(!user_cached(3) && !user_cached(4));
    user(5);
    // Keys are rendered from the arguments as passed, before the body runs.
    assert_eq!(touch(5), 6);
    assert!(!user_cached(5));
}

struct Tenant {
    id: u32,
}

impl Tenant {
    #[cached(cache = "inv", namespace = "t", version = 2, key = "<self.id>:doc:<doc>")]
    fn doc(&self, doc: u32) -> String {
        format!("{}/{doc}", self.id)
    }

    #[invalidate(cache = "inv", namespace = "t", version = 2, key = "<self.id>:doc:<doc>")]
    fn edit(&self, doc: u32) {
        let _ = doc;
    }
}

#[test]
fn methods_with_namespace_and_version() {
    memory();
    let tenant = Tenant { id: 7 };
    tenant.doc(1);
    assert_eq!(tenant.doc_key(&1), "t:v2:7:doc:1");
    assert!(present("t:v2:7:doc:1"));
    tenant.edit(1);
    assert!(!present("t:v2:7:doc:1"));
}

fn remote() -> &'static std::sync::Arc<AsyncOnly> {
    static BACKEND: OnceLock<std::sync::Arc<AsyncOnly>> = OnceLock::new();
    BACKEND.get_or_init(|| register("inv-remote", AsyncOnly::default()))
}

#[cached(cache = "inv-remote", key = "item:<id>")]
async fn item(id: u64) -> u64 {
    id
}

#[invalidate(cache = "inv-remote", key = "item:<id>")]
async fn update_item(id: u64) -> Result<u64, String> {
    tokio::task::yield_now().await;
    Ok(id)
}

#[invalidate(cache = "inv-remote", key = "item:<id>")]
fn update_item_sync(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[tokio::test]
async fn async_and_sync_functions_on_an_async_backend() {
    let backend = remote();
    item(1).await;
    assert!(backend.contains("item:1"));
    assert_eq!(update_item(1).await, Ok(1));
    assert!(!backend.contains("item:1"));

    item(2).await;
    // A sync function inside a runtime, on an async-only backend.
    assert_eq!(update_item_sync(2), Ok(2));
    assert!(!backend.contains("item:2"));
}

static STRICT_RUNS: AtomicUsize = AtomicUsize::new(0);

#[invalidate(cache = "inv-down", key = "k:<id>", on_cache_error = "propagate")]
fn strict(id: u64) -> Result<u64, AppError> {
    STRICT_RUNS.fetch_add(1, SeqCst);
    Ok(id)
}

#[invalidate(cache = "inv-down", key = "k:<id>", before = true, on_cache_error = "propagate")]
async fn strict_before(id: u64) -> Result<u64, AppError> {
    STRICT_RUNS.fetch_add(100, SeqCst);
    Ok(id)
}

#[invalidate(cache = "inv-down", key = "k:<id>")]
fn lenient(id: u64) -> Result<u64, AppError> {
    Ok(id)
}

#[tokio::test]
async fn removal_failures_are_ignored_unless_propagated() {
    register("inv-down", Down::default());
    assert_eq!(lenient(1).unwrap(), 1);
    assert!(matches!(strict(1), Err(AppError::Cache(Error::BackendUnavailable { .. }))));
    assert_eq!(STRICT_RUNS.load(SeqCst), 1, "after the body: the body ran");
    assert!(matches!(strict_before(1).await, Err(AppError::Cache(Error::BackendUnavailable { .. }))));
    assert_eq!(STRICT_RUNS.load(SeqCst), 1, "before the body: the body did not run");
}
