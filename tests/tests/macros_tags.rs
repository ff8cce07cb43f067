//! `#[cached(tags = [...])]` and `#[invalidate(tags = [...])]` end to end: tags rendered from the
//! arguments, sync and async, a tag shared by two functions, tags with keys, and the manifest.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cachestack::{cached, invalidate, Cache, CacheRegistry, ManualClock, MemoryBackend};

/// The cache, on a clock the tests move: a value computed in the very instant of an
/// invalidation is stale (the tie goes to the invalidation), so each step moves the clock.
fn cache() -> &'static (Cache, Arc<ManualClock>) {
    static CACHE: OnceLock<(Cache, Arc<ManualClock>)> = OnceLock::new();
    CACHE.get_or_init(|| {
        let clock = Arc::new(ManualClock::new());
        let cache = Cache::new(MemoryBackend::with_capacity(1_000)).with_clock(clock.clone());
        CacheRegistry::global().register("tagged", cache.clone());
        (cache, clock)
    })
}

fn tick() {
    cache().1.advance(Duration::from_millis(1));
}

/// Body executions of `profile`, per id (the tests of this file run in parallel).
static PROFILE_RUNS: [AtomicUsize; 8] = [const { AtomicUsize::new(0) }; 8];
static MEMBERS_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = "tagged", key = "profile:<id>", tags = ["user:<id>", "org:<org>"])]
fn profile(id: u64, org: u64) -> String {
    PROFILE_RUNS[id as usize].fetch_add(1, SeqCst);
    format!("user {id} of org {org}")
}

#[cached(cache = "tagged", key = "members:<org>", tags = ["org:<org>"])]
async fn members(org: u64) -> Vec<u64> {
    MEMBERS_RUNS.fetch_add(1, SeqCst);
    vec![org * 10, org * 10 + 1]
}

#[invalidate(cache = "tagged", tags = ["user:<id>"])]
fn user_changed(id: u64) {
    let _ = id;
}

#[invalidate(cache = "tagged", key = "profile:<id>", tags = ["org:<org>"])]
async fn org_changed(id: u64, org: u64) -> Result<(), String> {
    let _ = (id, org);
    Ok(())
}

/// Runs `f` and tells whether the counter moved (the body ran).
fn ran(counter: &AtomicUsize, f: impl FnOnce()) -> bool {
    let before = counter.load(SeqCst);
    f();
    counter.load(SeqCst) != before
}

#[test]
fn a_tag_invalidates_every_entry_carrying_it_and_nothing_else() {
    cache();
    assert!(ran(&PROFILE_RUNS[1], || assert_eq!(profile(1, 10), "user 1 of org 10")));
    assert!(!ran(&PROFILE_RUNS[1], || drop(profile(1, 10))), "a hit");
    assert!(ran(&PROFILE_RUNS[2], || drop(profile(2, 10))));
    tick();
    user_changed(1);
    tick();
    assert!(ran(&PROFILE_RUNS[1], || drop(profile(1, 10))), "user:1 was invalidated");
    assert!(!ran(&PROFILE_RUNS[2], || drop(profile(2, 10))), "user:2 was not");
    assert!(!ran(&PROFILE_RUNS[1], || drop(profile(1, 10))), "cached again");
}

#[tokio::test]
async fn async_functions_and_a_tag_shared_by_two_functions() {
    cache();
    let before = MEMBERS_RUNS.load(SeqCst);
    assert_eq!(members(3).await, vec![30, 31]);
    assert_eq!(members(3).await, vec![30, 31]);
    assert_eq!(MEMBERS_RUNS.load(SeqCst), before + 1);
    profile(7, 3);
    assert!(!ran(&PROFILE_RUNS[7], || drop(profile(7, 3))));
    tick();
    org_changed(7, 3).await.unwrap();
    tick();
    assert_eq!(members(3).await, vec![30, 31]);
    assert_eq!(MEMBERS_RUNS.load(SeqCst), before + 2, "org:3 was invalidated");
    assert!(ran(&PROFILE_RUNS[7], || drop(profile(7, 3))), "its key and its tag were");
}

#[test]
fn the_manifest_lists_the_tag_templates() {
    let manifest = cachestack::manifest();
    let find = |name: &str| manifest.functions.iter().find(|f| f.name == name).unwrap();
    assert_eq!(find("profile").tags, ["user:<id>", "org:<org>"]);
    assert_eq!(find("members").tags, ["org:<org>"]);
    assert_eq!(find("org_changed").tags, ["org:<org>"]);
}
