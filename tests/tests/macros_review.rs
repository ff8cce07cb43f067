//! Review of `#[cached]`: single flight under real concurrency (hand-over when a leader fails at
//! any point, no stranded waiter, no leaked lock entry, re-entrancy after panics, sync waiters
//! inside tokio runtimes), default keys that must not collide, cache failures on each path, and
//! stats that add up.
//!
//! Synchronisation is on events only (barriers, channels, the function's own stats, manual polls
//! of futures). `HANG_GUARD` only turns a hang into a failure; nothing asserts a duration.
#![allow(clippy::unwrap_used)]

mod macros_support;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use cachestack::{async_trait, cached, Backend, BackendStats, Cache, Entry, Error, Result, Value};
use macros_support::{register, register_memory, AsyncOnly};

/// Generous bound that turns a hang (a stranded waiter, a deadlock) into a test failure.
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

/// Runs `f` on a new thread; its result arrives on the returned channel.
fn on_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> mpsc::Receiver<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx
}

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

/// Polls a future once, by hand (deterministic interleavings on one thread).
fn poll_once<F: Future + ?Sized>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
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
#[cached(key = "review:fragile", condition = |_| false)]
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

#[cached(key = "review:condition-panics", condition = |_: &usize| {
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

#[cached(key = "review:handover")]
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

#[cached(key = "review:reused")]
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
#[cached(key = "review:needs-runtime")]
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

#[cached(key = "review:current-thread")]
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

// ---- default keys --------------------------------------------------------------------------------

#[cached]
fn scaled<const FACTOR: u64>(x: u64) -> u64 {
    x * FACTOR
}

#[test]
fn const_generic_parameters_are_part_of_the_default_key() {
    assert_eq!(scaled::<2>(5), 10);
    assert_eq!(scaled::<3>(5), 15);
    assert_ne!(scaled_key::<2>(&5), scaled_key::<3>(&5));
    assert_eq!(scaled_key::<2>(&5), "macros_review::scaled::<2>(5)");
}

fn first_scope() -> u32 {
    #[cached]
    fn local(n: u32) -> u32 {
        n + 1
    }
    local(1)
}

fn second_scope() -> u32 {
    #[cached]
    fn local(n: u32) -> u32 {
        n + 100
    }
    local(1)
}

#[test]
fn cached_fns_of_one_name_in_two_fn_bodies_do_not_share_keys() {
    assert_eq!(first_scope(), 2);
    assert_eq!(second_scope(), 101);
    assert_eq!(first_scope(), 2);
}

mod one {
    #[cachestack::cached]
    pub fn same_name(n: u32) -> u32 {
        n + 1
    }
}

mod two {
    #[cachestack::cached]
    pub fn same_name(n: u32) -> u32 {
        n + 2
    }
}

#[test]
fn cached_fns_of_one_name_in_two_modules_do_not_share_keys() {
    assert_eq!(one::same_name(1), 2);
    assert_eq!(two::same_name(1), 3);
    assert_ne!(one::same_name_key(&1), two::same_name_key(&1));
}

#[cached]
fn two_texts(a: &str, b: &str) -> String {
    format!("{a}|{b}")
}

#[test]
fn distinct_argument_tuples_never_share_a_default_key() {
    let parts = ["", "a", ",", ")", "(", "\\", "\"", "a,b", "a)", "\\,", "\\)", ",\"", "\",\"", "a\\"];
    let mut keys = std::collections::HashSet::new();
    for a in parts {
        for b in parts {
            assert!(keys.insert(two_texts_key(a, b)), "{a:?}, {b:?} collides");
        }
    }
    assert_eq!(two_texts("a,", "b"), "a,|b");
    assert_eq!(two_texts("a", ",b"), "a|,b");
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
        tokio::time::timeout(HANG_GUARD, task).await.unwrap().unwrap();
    }
    for runs in &ASYNC_COUNTED_RUNS {
        assert_eq!(runs.load(SeqCst), 1);
    }
    let stats = async_counted_stats();
    assert_eq!(stats.hits + stats.misses, u64::from(TASKS * CALLS), "{stats:?}");
    assert!(stats.waits + u64::from(KEYS) <= stats.misses, "{stats:?}");
    assert_eq!((stats.errors, stats.in_flight), (0, 0));
}

// ---- cache failures ------------------------------------------------------------------------------

/// An async-only store whose reads and writes can be made to fail separately.
#[derive(Debug, Default)]
struct Flaky {
    map: Mutex<std::collections::HashMap<String, Value>>,
    fail_get: AtomicBool,
    fail_set: AtomicBool,
}

fn down() -> Error {
    Error::BackendUnavailable { backend: "flaky".into(), source: "connection refused".into() }
}

#[async_trait]
impl Backend for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }
    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        tokio::task::yield_now().await;
        if self.fail_get.load(SeqCst) {
            return Err(down());
        }
        Ok(self.map.lock().unwrap().get(key).cloned().map(|value| Entry::new(value, None)))
    }
    async fn set(&self, key: &str, value: Value, _ttl: cachestack::Expiry) -> Result<()> {
        tokio::task::yield_now().await;
        if self.fail_set.load(SeqCst) {
            return Err(down());
        }
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

#[derive(Debug)]
enum AppError {
    Cache(Error),
}

impl From<Error> for AppError {
    fn from(err: Error) -> Self {
        AppError::Cache(err)
    }
}

static READS_FAIL_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = "review-reads-fail")]
fn reads_fail(n: u32) -> u32 {
    READS_FAIL_RUNS.fetch_add(1, SeqCst);
    n
}

#[cached(cache = "review-reads-fail")]
async fn reads_fail_async(n: u32) -> u32 {
    READS_FAIL_RUNS.fetch_add(1, SeqCst);
    n
}

#[test]
fn reads_that_fail_call_through_and_count_one_error_per_call() {
    let flaky = register("review-reads-fail", Flaky::default());
    flaky.fail_get.store(true, SeqCst);
    assert_eq!(reads_fail(1), 1);
    assert_eq!(reads_fail(1), 1);
    assert_eq!(READS_FAIL_RUNS.load(SeqCst), 2);
    assert!(flaky.map.lock().unwrap().len() == 1, "the writes succeeded");
    let stats = reads_fail_stats();
    assert_eq!((stats.hits, stats.misses, stats.errors), (0, 2, 2));
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert_eq!(runtime.block_on(reads_fail_async(2)), 2);
    assert_eq!(reads_fail_async_stats().errors, 1);
    // Reads come back: a hit.
    flaky.fail_get.store(false, SeqCst);
    assert_eq!(reads_fail(1), 1);
    assert_eq!(reads_fail_stats().hits, 1);
}

static WRITES_FAIL_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = "review-writes-fail")]
fn writes_fail(n: u32) -> u32 {
    WRITES_FAIL_RUNS.fetch_add(1, SeqCst);
    n
}

#[cached(cache = "review-writes-fail", on_cache_error = "propagate")]
fn writes_fail_strict(n: u32) -> std::result::Result<u32, AppError> {
    WRITES_FAIL_RUNS.fetch_add(1, SeqCst);
    Ok(n)
}

#[cached(cache = "review-writes-fail", on_cache_error = "propagate")]
async fn writes_fail_strict_async(n: u32) -> std::result::Result<u32, AppError> {
    Ok(n)
}

#[test]
fn writes_that_fail_are_ignored_or_propagated_on_request() {
    let flaky = register("review-writes-fail", Flaky::default());
    flaky.fail_set.store(true, SeqCst);
    assert_eq!(writes_fail(1), 1);
    assert_eq!(writes_fail(1), 1);
    let stats = writes_fail_stats();
    assert_eq!((stats.hits, stats.misses, stats.errors), (0, 2, 2));
    assert!(matches!(writes_fail_strict(1), Err(AppError::Cache(Error::BackendUnavailable { .. }))));
    assert_eq!(WRITES_FAIL_RUNS.load(SeqCst), 3, "the body ran, then the write failed");
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert!(matches!(runtime.block_on(writes_fail_strict_async(1)), Err(AppError::Cache(_))));
    assert_eq!(writes_fail_strict_async_stats().errors, 1);
}

static TYPED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = "review-typed", key = "review:typed")]
fn typed() -> u64 {
    TYPED_RUNS.fetch_add(1, SeqCst);
    42
}

#[cached(cache = "review-typed-remote", key = "review:typed")]
async fn typed_remote() -> u64 {
    TYPED_RUNS.fetch_add(1, SeqCst);
    43
}

#[test]
fn a_value_of_another_type_under_the_key_is_a_counted_miss() {
    let memory = register_memory("review-typed");
    memory.set_blocking("review:typed", &"not a number".to_string(), None).unwrap();
    assert_eq!(typed(), 42);
    let stats = typed_stats();
    assert_eq!((stats.hits, stats.misses, stats.errors), (0, 1, 1));
    assert_eq!(typed(), 42, "the right value replaced it");
    assert_eq!(typed_stats().hits, 1);
    assert_eq!(TYPED_RUNS.load(SeqCst), 1);

    let remote = Cache::from_arc(register("review-typed-remote", AsyncOnly::default()));
    remote.set_blocking("review:typed", &vec![1u8, 2], None).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert_eq!(runtime.block_on(typed_remote()), 43);
    let stats = typed_remote_stats();
    assert_eq!((stats.hits, stats.misses, stats.errors), (0, 1, 1));
    assert_eq!(runtime.block_on(typed_remote()), 43);
    assert_eq!(typed_remote_stats().hits, 1);
}

#[cached]
fn parsed<T: cachestack::Cacheable + std::str::FromStr>(text: &str) -> Option<T> {
    text.parse().ok()
}

#[test]
fn type_parameters_that_only_the_return_type_names_key_each_instantiation_apart() {
    assert_eq!(parsed::<u8>("300"), None);
    assert_eq!(parsed::<u16>("300"), Some(300));
    assert_eq!(parsed_key::<u16>("300"), "macros_review::parsed::<u16>(\"300\")");
    assert!(parsed_invalidate::<u16>("300").unwrap());
    assert_eq!(parsed_refresh::<u32>("7"), Some(7));
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

#[cached(cache = "review-in-flight-reads", key = "review:raced")]
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
    register("review-in-flight-reads", InFlightReads::default());
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

// ---- shapes: lifetimes, where clauses, impl Trait next to type parameters ----------------------

#[cached]
fn described<'a, T>(value: &'a T, label: &'a str) -> String
where
    T: std::fmt::Debug + ?Sized + 'a,
{
    format!("{label}{value:?}")
}

#[cached]
fn mixed<T: std::fmt::Debug>(a: T, b: impl std::fmt::Debug) -> String {
    format!("{a:?}{b:?}")
}

struct Holder<T>(T);

impl<T> Holder<T>
where
    T: std::fmt::Debug + Sync,
{
    #[cached]
    fn show<U: std::fmt::Debug + cachestack::Cacheable>(&self, extra: U) -> String {
        format!("{:?}{extra:?}", self.0)
    }
}

#[test]
fn lifetimes_where_clauses_and_impl_trait_next_to_type_parameters() {
    assert_eq!(described("x", "l:"), "l:\"x\"");
    assert_eq!(described(&[1u8][..], "s:"), "s:[1]");
    assert_ne!(described_key("x", "l:"), described_key(&[1u8][..], "l:"));
    assert_eq!(mixed(1u8, "b"), "1\"b\"");
    assert_eq!(mixed_key::<u8>(&1, &"b"), "macros_review::mixed::<u8>(1,\"b\")");
    assert_eq!(Holder(1).show(2u8), "12");
    assert_eq!(Holder("a").show(2u8), "\"a\"2");
    assert_eq!(Holder(1).show_key(&2u16), "macros_review::Holder<i32>::show::<u16>(2)");
}

#[cached(cache = "review-typed-tiered", key = "review:typed")]
fn typed_tiered() -> u64 {
    44
}

/// On a stack whose front layer is in memory, the wrong value is seen twice (the first look
/// into the front layer, then the stack's read): it is still one failure of one call.
#[test]
fn a_value_of_another_type_in_a_stacks_front_layer_counts_one_error() {
    let front: Arc<dyn Backend> = Arc::new(cachestack::MemoryBackend::with_capacity(100));
    let stack = cachestack::TieredCache::from_layers(vec![front.clone(), Arc::new(AsyncOnly::default())]).unwrap();
    cachestack::CacheRegistry::global().register("review-typed-tiered", Cache::new(stack));
    Cache::from_arc(front).set_blocking("review:typed", &"not a number".to_string(), None).unwrap();
    assert_eq!(typed_tiered(), 44);
    let stats = typed_tiered_stats();
    assert_eq!((stats.hits, stats.misses, stats.errors), (0, 1, 1), "{stats:?}");
    assert_eq!(typed_tiered(), 44);
    assert_eq!(typed_tiered_stats().hits, 1);
}
