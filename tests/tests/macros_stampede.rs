//! Single flight in `#[cached]` wrappers: many callers of one cold key run the body once, a
//! leader that panics or is cancelled hands over to a waiter, distinct keys never wait on each
//! other, and the lock map empties when flights end (panicking and cancelled leaders of many
//! keys, a leader that fails while sharing its value, re-entrancy on pool threads). Sync waiters
//! inside tokio runtimes, a remote read that races the leader's write, and stats that add up
//! under concurrency.
//!
//! Synchronisation is on events only (`cachestack_tests::sync`): a leader's body holds until the
//! function's own stats show that every other caller is waiting for it, then a gate releases it;
//! on one thread, futures are polled by hand. `HANG_GUARD` only turns a hang into a failure;
//! nothing asserts a duration.
#![allow(clippy::unwrap_used)]

mod macros_support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Barrier, Mutex, OnceLock};
use std::task::Poll;

use cachestack::{async_trait, cached, Backend, BackendStats, Entry, Result, Value};
use cachestack_tests::sync::{on_thread, poll_once, spin_until, within_guard, yield_until, Gate, HANG_GUARD};
use macros_support::register;

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
        assert_eq!(within_guard(caller).await.unwrap(), vec![4, 2]);
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
    assert_eq!(within_guard(waiter).await.unwrap(), 6);
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
    assert_eq!(within_guard(waiter).await.unwrap(), 9);
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
    assert_eq!(within_guard(waiter).await.unwrap(), 10);
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
        got.push(within_guard(waiter).await.unwrap().unwrap());
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
        assert_eq!(within_guard(caller).await.unwrap(), id as u32);
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

// ---- single flight: a leader that fails while handing its value over ---------------------------

static FRAGILE_BREAK: AtomicBool = AtomicBool::new(false);

/// A value whose `Clone` panics once when `FRAGILE_BREAK` is set.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Fragile(usize);

impl Clone for Fragile {
    fn clone(&self) -> Self {
        if FRAGILE_BREAK.swap(false, SeqCst) {
            panic!("clone fails (expected in this test)");
        }
        Fragile(self.0)
    }
}

static FRAGILE_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Not stored (`condition` is false), so the value is cloned for the waiters only when the
/// leader completes its flight: the first run makes that clone panic.
#[cached(key = "fragile", condition = |_| false)]
fn fragile() -> Fragile {
    let run = FRAGILE_RUNS.fetch_add(1, SeqCst);
    if run == 0 {
        spin_until(|| fragile_stats().waits == 1);
        FRAGILE_BREAK.store(true, SeqCst);
    }
    Fragile(run)
}

#[test]
fn a_leader_that_panics_while_sharing_its_value_does_not_strand_its_waiters() {
    let leader = std::thread::spawn(fragile);
    spin_until(|| FRAGILE_RUNS.load(SeqCst) == 1);
    let waiter = on_thread(fragile);
    assert!(leader.join().is_err(), "the leader's clone panicked");
    let got = waiter.recv_timeout(HANG_GUARD).expect("the waiter was stranded by a leader that panicked in complete");
    assert_eq!(got, Fragile(1));
    assert_eq!(FRAGILE_RUNS.load(SeqCst), 2);
    assert_eq!(fragile_stats().in_flight, 0);
}

static PANICKY_CONDITION: AtomicBool = AtomicBool::new(false);
static CONDITION_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(key = "condition-panics", condition = |_: &usize| {
    if PANICKY_CONDITION.swap(false, SeqCst) {
        panic!("condition fails (expected in this test)");
    }
    true
})]
fn condition_panics_first() -> usize {
    let run = CONDITION_RUNS.fetch_add(1, SeqCst);
    if run == 0 {
        spin_until(|| condition_panics_first_stats().waits == 1);
        PANICKY_CONDITION.store(true, SeqCst);
    }
    run
}

#[test]
fn a_condition_that_panics_hands_the_flight_over() {
    let leader = std::thread::spawn(condition_panics_first);
    spin_until(|| CONDITION_RUNS.load(SeqCst) == 1);
    let waiter = on_thread(condition_panics_first);
    assert!(leader.join().is_err(), "the condition's panic reaches the caller");
    assert_eq!(waiter.recv_timeout(HANG_GUARD).expect("stranded waiter"), 1);
    assert_eq!(condition_panics_first_stats().in_flight, 0);
    // The waiter's run was stored.
    assert_eq!(condition_panics_first(), 1);
    assert_eq!(CONDITION_RUNS.load(SeqCst), 2);
}

// ---- single flight: stats of waiters whose leader was abandoned ------------------------------

static HANDOVER_RUNS: AtomicUsize = AtomicUsize::new(0);
static HANDOVER_RELEASE: AtomicBool = AtomicBool::new(false);

#[cached(key = "handover")]
async fn handover() -> usize {
    let run = HANDOVER_RUNS.fetch_add(1, SeqCst);
    // Every run parks until released (the first one is dropped before that).
    std::future::poll_fn(|_| if HANDOVER_RELEASE.load(SeqCst) { Poll::Ready(()) } else { Poll::Pending }).await;
    run
}

/// One thread, futures polled by hand: a waiter whose leader is dropped rejoins, finds a new
/// leader, and waits again. That is still one call that waited.
#[test]
fn a_waiter_that_waits_for_two_leaders_counts_one_wait() {
    let mut first = Box::pin(handover());
    assert!(poll_once(first.as_mut()).is_pending());
    let mut waiter = Box::pin(handover());
    assert!(poll_once(waiter.as_mut()).is_pending());
    assert_eq!(handover_stats().waits, 1);

    drop(first); // the leader is cancelled
    let mut second = Box::pin(handover());
    assert!(poll_once(second.as_mut()).is_pending(), "a new caller leads the next flight");
    assert!(poll_once(waiter.as_mut()).is_pending(), "the waiter waits for the new leader");
    let stats = handover_stats();
    assert_eq!((stats.misses, stats.waits, stats.in_flight), (3, 1, 1), "{stats:?}");

    HANDOVER_RELEASE.store(true, SeqCst);
    assert_eq!(poll_once(second.as_mut()), Poll::Ready(1));
    assert_eq!(poll_once(waiter.as_mut()), Poll::Ready(1));
    let stats = handover_stats();
    assert_eq!((stats.misses, stats.waits, stats.in_flight), (3, 1, 0), "{stats:?}");
    assert!(stats.waits <= stats.misses);
}

// ---- single flight: no leaked entries, many keys -----------------------------------------------

#[cached]
fn panics_for(id: u32, gate: bool) -> u32 {
    if gate {
        panic!("leader {id} fails (expected in this test)");
    }
    id
}

#[cached]
async fn parks_for(id: u32) -> u32 {
    std::future::pending::<()>().await;
    id
}

#[test]
fn panicking_and_cancelled_leaders_of_many_keys_leave_no_entry_behind() {
    let threads: Vec<_> = (0..8u32)
        .map(|t| {
            std::thread::spawn(move || {
                for id in (t * 125)..(t + 1) * 125 {
                    assert!(std::panic::catch_unwind(|| panics_for(id, true)).is_err());
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(panics_for_stats().in_flight, 0);
    // The same thread, after its panics, still leads and caches normally.
    assert_eq!(panics_for(1, false), 1);
    assert_eq!(panics_for(1, false), 1);
    assert_eq!(panics_for_stats().hits, 1);

    let mut futures: Vec<_> = (0..1000).map(|id| Box::pin(parks_for(id))).collect();
    for future in &mut futures {
        assert!(poll_once(future.as_mut()).is_pending());
    }
    assert_eq!(parks_for_stats().in_flight, 1000);
    drop(futures);
    assert_eq!(parks_for_stats().in_flight, 0);
}

// ---- re-entrancy on reused threads -------------------------------------------------------------

static REUSED_RUNS: AtomicUsize = AtomicUsize::new(0);
static REUSED_ENTERED: AtomicUsize = AtomicUsize::new(0);
static REUSED_GATE: OnceLock<Gate> = OnceLock::new();

#[cached(key = "reused")]
fn reused(fail: bool) -> u32 {
    REUSED_RUNS.fetch_add(1, SeqCst);
    if fail {
        panic!("fails (expected in this test)");
    }
    REUSED_ENTERED.fetch_add(1, SeqCst);
    REUSED_GATE.get_or_init(Gate::default).wait();
    3
}

/// A pool thread whose leader panicked must not believe it still leads that flight: its next
/// call of the same key waits for the current leader like any caller (a stale "leading" mark
/// would make it run the body uncached).
#[test]
fn a_pool_thread_whose_leader_panicked_joins_later_flights_as_a_waiter() {
    let pool = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap();
    assert!(pool.block_on(pool.spawn(async { reused(true) })).unwrap_err().is_panic());
    assert_eq!(reused_stats().in_flight, 0);
    let leader = std::thread::spawn(|| reused(false));
    spin_until(|| REUSED_ENTERED.load(SeqCst) == 1);
    let waiter = pool.spawn(async { reused(false) });
    // Either it waits (right) or it runs the body itself (a stale mark).
    spin_until(|| reused_stats().waits == 1 || REUSED_ENTERED.load(SeqCst) == 2);
    REUSED_GATE.get_or_init(Gate::default).open();
    assert_eq!(leader.join().unwrap(), 3);
    assert_eq!(pool.block_on(waiter).unwrap(), 3);
    assert_eq!((REUSED_RUNS.load(SeqCst), reused_stats().waits), (2, 1));
}

// ---- sync waiters inside tokio runtimes --------------------------------------------------------

static NEEDS_RUNTIME_VALUE: Mutex<Option<tokio::sync::oneshot::Receiver<u32>>> = Mutex::new(None);

/// A body that needs a task of a tokio runtime to finish (here: a value sent by one; in real
/// life, an I/O driver or a connection task of the caller's runtime).
#[cached(key = "needs-runtime")]
fn needs_runtime(runtime: &tokio::runtime::Handle, started: &mpsc::Sender<()>) -> u32 {
    let value = NEEDS_RUNTIME_VALUE.lock().unwrap().take().expect("one run only");
    started.send(()).unwrap();
    runtime.block_on(value).unwrap()
}

/// A synchronous waiter on a worker of a multi-thread runtime must not hold the worker hostage:
/// here the runtime has one worker, and the leader (another thread) needs a task of that runtime
/// to finish. Blocking the worker would deadlock; the waiter steps out of the worker instead.
#[test]
fn a_sync_waiter_on_a_runtime_worker_does_not_starve_the_tasks_its_leader_needs() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (value_tx, value_rx) = tokio::sync::oneshot::channel();
    *NEEDS_RUNTIME_VALUE.lock().unwrap() = Some(value_rx);
    let (started_tx, started_rx) = mpsc::channel();
    let handle = runtime.handle().clone();
    let leader = std::thread::spawn(move || needs_runtime(&handle, &started_tx));
    started_rx.recv().unwrap();

    // The task the leader needs runs once a task of the same runtime waits for the leader.
    runtime.spawn(async move {
        yield_until(|| needs_runtime_stats().waits == 1).await;
        value_tx.send(7).unwrap();
    });
    let (done_tx, done_rx) = mpsc::channel();
    let handle = runtime.handle().clone();
    runtime.spawn(async move {
        let (unused_tx, _unused_rx) = mpsc::channel();
        done_tx.send(needs_runtime(&handle, &unused_tx)).unwrap();
    });
    let got = done_rx.recv_timeout(HANG_GUARD);
    runtime.shutdown_background();
    assert_eq!(got, Ok(7), "the waiter blocked the only worker its leader needed");
    assert_eq!(leader.join().unwrap(), 7);
    let stats = needs_runtime_stats();
    assert_eq!((stats.misses, stats.waits, stats.in_flight), (2, 1, 0));
}

static CURRENT_THREAD_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(key = "current-thread")]
fn current_thread_value() -> u32 {
    if CURRENT_THREAD_RUNS.fetch_add(1, SeqCst) == 0 {
        spin_until(|| current_thread_value_stats().waits == 1);
    }
    11
}

/// On a current-thread runtime a synchronous waiter blocks the runtime's thread until the
/// leader is done, just as running the body itself would. The leader is always another thread:
/// a synchronous leader runs its body to the end without giving its thread back, so two tasks
/// of one current-thread runtime never wait for each other.
#[test]
fn a_sync_waiter_on_a_current_thread_runtime_receives_the_leaders_value() {
    let leader = std::thread::spawn(current_thread_value);
    spin_until(|| CURRENT_THREAD_RUNS.load(SeqCst) == 1);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let got = runtime.block_on(async {
        let a = tokio::spawn(async { current_thread_value() });
        let b = tokio::spawn(async { current_thread_value() });
        (a.await.unwrap(), b.await.unwrap())
    });
    assert_eq!(got, (11, 11));
    assert_eq!(leader.join().unwrap(), 11);
    assert_eq!(CURRENT_THREAD_RUNS.load(SeqCst), 1);
    let stats = current_thread_value_stats();
    assert_eq!((stats.hits + stats.misses, stats.waits, stats.in_flight), (3, 1, 0));
}

// ---- stats under concurrency ---------------------------------------------------------------------

const KEYS: u32 = 16;
static COUNTED_RUNS: [AtomicUsize; KEYS as usize] = [const { AtomicUsize::new(0) }; KEYS as usize];

#[cached]
fn counted(key: u32) -> u32 {
    COUNTED_RUNS[key as usize].fetch_add(1, SeqCst);
    key * 2
}

#[test]
fn stats_add_up_and_each_key_runs_once_under_concurrency() {
    const THREADS: u32 = 8;
    const CALLS: u32 = 400;
    let start = Arc::new(Barrier::new(THREADS as usize));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                for i in 0..CALLS {
                    let key = (i / 8 + t) % KEYS;
                    assert_eq!(counted(key), key * 2);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    for runs in &COUNTED_RUNS {
        assert_eq!(runs.load(SeqCst), 1);
    }
    let stats = counted_stats();
    assert_eq!(stats.hits + stats.misses, u64::from(THREADS * CALLS), "{stats:?}");
    assert!(stats.waits + u64::from(KEYS) <= stats.misses, "{stats:?}");
    assert_eq!((stats.errors, stats.in_flight), (0, 0));
}

static ASYNC_COUNTED_RUNS: [AtomicUsize; KEYS as usize] = [const { AtomicUsize::new(0) }; KEYS as usize];

#[cached]
async fn async_counted(key: u32) -> u32 {
    ASYNC_COUNTED_RUNS[key as usize].fetch_add(1, SeqCst);
    tokio::task::yield_now().await;
    key * 3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_stats_add_up_and_each_key_runs_once_under_concurrency() {
    const TASKS: u32 = 64;
    const CALLS: u32 = 50;
    let start = Arc::new(tokio::sync::Barrier::new(TASKS as usize));
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                for i in 0..CALLS {
                    let key = (i + t) % KEYS;
                    assert_eq!(async_counted(key).await, key * 3);
                }
            })
        })
        .collect();
    for task in tasks {
        within_guard(task).await.unwrap();
    }
    for runs in &ASYNC_COUNTED_RUNS {
        assert_eq!(runs.load(SeqCst), 1);
    }
    let stats = async_counted_stats();
    assert_eq!(stats.hits + stats.misses, u64::from(TASKS * CALLS), "{stats:?}");
    assert!(stats.waits + u64::from(KEYS) <= stats.misses, "{stats:?}");
    assert_eq!((stats.errors, stats.in_flight), (0, 0));
}

// ---- single flight over a remote cache: a caller whose read raced the leader's write ---------

/// A remote store whose reads answer with what the store held when the request was sent: the
/// reply arrives one poll later (like a network round trip), so a write can land in between.
#[derive(Debug, Default)]
struct InFlightReads {
    map: Mutex<std::collections::HashMap<String, Value>>,
}

#[async_trait]
impl Backend for InFlightReads {
    fn name(&self) -> &str {
        "in-flight-reads"
    }
    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        let snapshot = self.map.lock().unwrap().get(key).cloned();
        tokio::task::yield_now().await;
        Ok(snapshot.map(|value| Entry::new(value, None)))
    }
    async fn set(&self, key: &str, value: Value, _ttl: cachestack::Expiry) -> Result<()> {
        self.map.lock().unwrap().insert(key.to_string(), value);
        Ok(())
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        Ok(self.map.lock().unwrap().remove(key).is_some())
    }
    async fn clear(&self) -> Result<()> {
        self.map.lock().unwrap().clear();
        Ok(())
    }
    fn stats(&self) -> BackendStats {
        BackendStats::default()
    }
}

static RACED_RUNS: AtomicUsize = AtomicUsize::new(0);
static RACED_RELEASE: AtomicBool = AtomicBool::new(false);

#[cached(cache = "in-flight-reads", key = "raced")]
async fn raced() -> usize {
    let run = RACED_RUNS.fetch_add(1, SeqCst);
    std::future::poll_fn(|_| if RACED_RELEASE.load(SeqCst) { Poll::Ready(()) } else { Poll::Pending }).await;
    run
}

/// One thread, futures polled by hand: the second caller's read is sent before the leader
/// stores its value and answered (a miss) after the leader's flight ended. Joining then finds no
/// flight; the caller must not run the body a second time.
#[test]
fn a_caller_whose_remote_read_raced_the_leaders_write_does_not_run_the_body_again() {
    register("in-flight-reads", InFlightReads::default());
    let mut leader = Box::pin(raced());
    assert!(poll_once(leader.as_mut()).is_pending(), "read sent");
    assert!(poll_once(leader.as_mut()).is_pending(), "read answered (a miss): the leader runs the body");
    assert_eq!(RACED_RUNS.load(SeqCst), 1);
    let mut late = Box::pin(raced());
    assert!(poll_once(late.as_mut()).is_pending(), "read sent while the key is still missing");
    RACED_RELEASE.store(true, SeqCst);
    assert_eq!(poll_once(leader.as_mut()), Poll::Ready(0), "stored, flight ended");
    // The late caller's stale miss arrives; it may read again (one more round trip).
    let late_result = (0..4).find_map(|_| match poll_once(late.as_mut()) {
        Poll::Ready(value) => Some(value),
        Poll::Pending => None,
    });
    assert_eq!(late_result, Some(0), "the late caller gets the stored value");
    assert_eq!(RACED_RUNS.load(SeqCst), 1);
}
