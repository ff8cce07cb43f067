//! Single flight in `#[cached]` wrappers: many callers of one cold key run the body once, a
//! leader that panics or is cancelled hands over to a waiter, distinct keys never wait on each
//! other, and the lock map empties when flights end.
//!
//! Synchronisation is on events only: a leader's body holds until the function's own stats show
//! that every other caller is waiting for it, then a gate releases it.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier, Condvar, Mutex, OnceLock};
use std::time::Duration;

use cachestack::cached;

/// A one-shot gate for threads.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }
}

/// Guards against a hang turning into a stuck test run: the awaited thing must finish, and
/// within this generous bound it always does unless single flight is broken.
const HANG_GUARD: Duration = Duration::from_secs(60);

fn spin_until(condition: impl Fn() -> bool) {
    while !condition() {
        std::thread::yield_now();
    }
}

async fn yield_until(condition: impl Fn() -> bool) {
    while !condition() {
        tokio::task::yield_now().await;
    }
}

// ---- one cold key, many callers -------------------------------------------------------------

static ASYNC_RUNS: AtomicUsize = AtomicUsize::new(0);

fn async_release() -> &'static tokio::sync::Notify {
    static RELEASE: OnceLock<tokio::sync::Notify> = OnceLock::new();
    RELEASE.get_or_init(tokio::sync::Notify::new)
}

#[cached(key = "one-cold-key-async")]
async fn slow_async() -> Vec<u64> {
    ASYNC_RUNS.fetch_add(1, SeqCst);
    async_release().notified().await;
    vec![4, 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_async_callers_run_the_body_once() {
    let callers: Vec<_> = (0..1000).map(|_| tokio::spawn(slow_async())).collect();
    // The body is held until all 999 other callers wait for the first one.
    yield_until(|| slow_async_stats().waits == 999).await;
    async_release().notify_one();
    for caller in callers {
        assert_eq!(tokio::time::timeout(HANG_GUARD, caller).await.unwrap().unwrap(), vec![4, 2]);
    }
    assert_eq!(ASYNC_RUNS.load(SeqCst), 1);
    let stats = slow_async_stats();
    assert_eq!((stats.misses, stats.waits, stats.hits, stats.in_flight), (1000, 999, 0, 0));
    // Later callers are answered from the cache.
    assert_eq!(slow_async().await, vec![4, 2]);
    assert_eq!(slow_async_stats().hits, 1);
    assert_eq!(ASYNC_RUNS.load(SeqCst), 1);
}

static SYNC_RUNS: AtomicUsize = AtomicUsize::new(0);
static SYNC_RELEASE: OnceLock<Gate> = OnceLock::new();

#[cached(key = "one-cold-key-sync")]
fn slow_sync() -> String {
    SYNC_RUNS.fetch_add(1, SeqCst);
    SYNC_RELEASE.get_or_init(Gate::default).wait();
    "computed once".to_string()
}

#[test]
fn sixteen_threads_of_sync_callers_run_the_body_once() {
    let start = Arc::new(Barrier::new(16));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                slow_sync()
            })
        })
        .collect();
    spin_until(|| slow_sync_stats().waits == 15);
    SYNC_RELEASE.get_or_init(Gate::default).open();
    for thread in threads {
        assert_eq!(thread.join().unwrap(), "computed once");
    }
    assert_eq!(SYNC_RUNS.load(SeqCst), 1);
    let stats = slow_sync_stats();
    assert_eq!((stats.misses, stats.waits, stats.in_flight), (16, 15, 0));
}

// ---- leaders that fail ----------------------------------------------------------------------

static PANIC_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(key = "panics-first")]
fn panics_first() -> u32 {
    if PANIC_RUNS.fetch_add(1, SeqCst) == 0 {
        // The first leader waits until someone waits for it, then dies.
        spin_until(|| panics_first_stats().waits == 1);
        panic!("the leader fails (expected in this test)");
    }
    5
}

#[test]
fn a_sync_leader_that_panics_hands_over_to_a_waiter() {
    let leader = std::thread::spawn(panics_first);
    spin_until(|| PANIC_RUNS.load(SeqCst) == 1);
    let waiter = std::thread::spawn(panics_first);
    assert!(leader.join().is_err());
    assert_eq!(waiter.join().unwrap(), 5);
    assert_eq!(PANIC_RUNS.load(SeqCst), 2);
    assert_eq!(panics_first_stats().in_flight, 0);
    assert_eq!(panics_first(), 5);
    assert_eq!(PANIC_RUNS.load(SeqCst), 2);
}

static ASYNC_PANIC_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(key = "async-panics-first")]
async fn async_panics_first() -> u32 {
    if ASYNC_PANIC_RUNS.fetch_add(1, SeqCst) == 0 {
        yield_until(|| async_panics_first_stats().waits == 1).await;
        panic!("the leader fails (expected in this test)");
    }
    6
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_leader_that_panics_hands_over_to_a_waiter() {
    let leader = tokio::spawn(async_panics_first());
    yield_until(|| ASYNC_PANIC_RUNS.load(SeqCst) == 1).await;
    let waiter = tokio::spawn(async_panics_first());
    assert!(leader.await.unwrap_err().is_panic());
    assert_eq!(tokio::time::timeout(HANG_GUARD, waiter).await.unwrap().unwrap(), 6);
    assert_eq!(ASYNC_PANIC_RUNS.load(SeqCst), 2);
}

static CANCEL_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(key = "cancelled-first")]
async fn cancelled_first() -> u32 {
    if CANCEL_RUNS.fetch_add(1, SeqCst) == 0 {
        // The first leader never finishes on its own.
        std::future::pending::<()>().await;
    }
    9
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_leader_whose_future_is_dropped_hands_over_to_a_waiter() {
    let leader = tokio::spawn(cancelled_first());
    yield_until(|| CANCEL_RUNS.load(SeqCst) == 1).await;
    let waiter = tokio::spawn(cancelled_first());
    yield_until(|| cancelled_first_stats().waits == 1).await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    assert_eq!(tokio::time::timeout(HANG_GUARD, waiter).await.unwrap().unwrap(), 9);
    assert_eq!(CANCEL_RUNS.load(SeqCst), 2);
    assert_eq!(cancelled_first_stats().in_flight, 0);
}

static DROP_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(key = "dropped-in-place")]
async fn dropped_in_place() -> u32 {
    if DROP_RUNS.fetch_add(1, SeqCst) == 0 {
        std::future::pending::<()>().await;
    }
    10
}

#[tokio::test(flavor = "current_thread")]
async fn dropping_a_leader_future_in_place_hands_over_on_one_thread() {
    let mut leader = Box::pin(dropped_in_place());
    // Poll the leader once: it takes the flight and parks in its body.
    tokio::select! {
        biased;
        _ = &mut leader => unreachable!("the first leader never finishes"),
        _ = std::future::ready(()) => {}
    }
    assert_eq!(dropped_in_place_stats().in_flight, 1);
    let waiter = tokio::spawn(dropped_in_place());
    yield_until(|| dropped_in_place_stats().waits == 1).await;
    drop(leader);
    assert_eq!(tokio::time::timeout(HANG_GUARD, waiter).await.unwrap().unwrap(), 10);
}

static ERR_RUNS: AtomicUsize = AtomicUsize::new(0);

/// The first run fails once three callers wait for it; errors are not shared (they need not be
/// `Clone`), so each waiter then runs the body itself.
#[cached(key = "fails-first")]
async fn fails_first() -> Result<usize, String> {
    let run = ERR_RUNS.fetch_add(1, SeqCst);
    if run == 0 {
        yield_until(|| fails_first_stats().waits == 3).await;
        return Err("first run failed".into());
    }
    Ok(run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_of_a_leader_that_returned_err_run_the_body_themselves() {
    let leader = tokio::spawn(fails_first());
    yield_until(|| ERR_RUNS.load(SeqCst) == 1).await;
    let waiters: Vec<_> = (0..3).map(|_| tokio::spawn(fails_first())).collect();
    assert_eq!(leader.await.unwrap(), Err("first run failed".to_string()));
    let mut got = Vec::new();
    for waiter in waiters {
        got.push(tokio::time::timeout(HANG_GUARD, waiter).await.unwrap().unwrap().unwrap());
    }
    got.sort();
    assert_eq!(got, [1, 2, 3]);
    assert_eq!(ERR_RUNS.load(SeqCst), 4);
}

// ---- distinct keys ----------------------------------------------------------------------------

fn thousand() -> &'static tokio::sync::Barrier {
    static BARRIER: OnceLock<tokio::sync::Barrier> = OnceLock::new();
    BARRIER.get_or_init(|| tokio::sync::Barrier::new(1000))
}

/// Each body waits until all 1000 bodies run: this returns only if no key waits on another.
#[cached]
async fn distinct_async(id: u32) -> u32 {
    thousand().wait().await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_distinct_keys_run_concurrently() {
    let callers: Vec<_> = (0..1000).map(|id| tokio::spawn(distinct_async(id))).collect();
    for (id, caller) in callers.into_iter().enumerate() {
        assert_eq!(tokio::time::timeout(HANG_GUARD, caller).await.unwrap().unwrap(), id as u32);
    }
    let stats = distinct_async_stats();
    assert_eq!((stats.misses, stats.waits, stats.in_flight), (1000, 0, 0));
}

static THIRTY_TWO: OnceLock<Barrier> = OnceLock::new();

#[cached]
fn distinct_sync(id: u32) -> u32 {
    THIRTY_TWO.get_or_init(|| Barrier::new(32)).wait();
    id
}

#[test]
fn distinct_keys_of_sync_callers_run_concurrently() {
    let threads: Vec<_> = (0..32).map(|id| std::thread::spawn(move || distinct_sync(id))).collect();
    for (id, thread) in threads.into_iter().enumerate() {
        assert_eq!(thread.join().unwrap(), id as u32);
    }
    assert_eq!(distinct_sync_stats().waits, 0);
}

// ---- lock = false -----------------------------------------------------------------------------

static UNLOCKED: OnceLock<Barrier> = OnceLock::new();
static UNLOCKED_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Without single flight, 8 callers of one key all run the body at once (the barrier of 8 only
/// opens if they do).
#[cached(key = "unlocked", lock = false)]
fn unlocked() -> u32 {
    UNLOCKED_RUNS.fetch_add(1, SeqCst);
    UNLOCKED.get_or_init(|| Barrier::new(8)).wait();
    1
}

#[test]
fn lock_false_turns_single_flight_off() {
    let threads: Vec<_> = (0..8).map(|_| std::thread::spawn(unlocked)).collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap(), 1);
    }
    assert_eq!(UNLOCKED_RUNS.load(SeqCst), 8);
    assert_eq!(unlocked_stats().waits, 0);
}
