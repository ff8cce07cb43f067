//! Waiting helpers for tests that synchronise threads and tasks.
//!
//! Tests wait on events only (a condition becoming true, a gate opening, a value arriving on a
//! channel), never on a fixed sleep. [`HANG_GUARD`] only turns a hang (a stranded waiter, a
//! deadlock) into a loud failure; nothing asserts a duration.

use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::{mpsc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Generous bound that turns a hang into a test failure. Within it the awaited event always
/// happens unless the code under test is broken.
pub const HANG_GUARD: Duration = Duration::from_secs(60);

#[track_caller]
fn hung(what: &str, at: &Location<'_>) -> ! {
    panic!("HANG: {what} did not happen within {HANG_GUARD:?} (waiting at {at})")
}

/// Spins (yielding the thread) until `condition` holds; panics after [`HANG_GUARD`].
#[track_caller]
pub fn spin_until(condition: impl Fn() -> bool) {
    let at = Location::caller();
    let start = Instant::now();
    while !condition() {
        if start.elapsed() > HANG_GUARD {
            hung("the awaited condition", at);
        }
        std::thread::yield_now();
    }
}

/// Yields to the executor until `condition` holds; panics after [`HANG_GUARD`].
#[track_caller]
pub fn yield_until(condition: impl Fn() -> bool) -> impl Future<Output = ()> {
    let at = Location::caller();
    async move {
        let start = Instant::now();
        while !condition() {
            if start.elapsed() > HANG_GUARD {
                hung("the awaited condition", at);
            }
            tokio::task::yield_now().await;
        }
    }
}

/// Awaits `future`; panics if it has not finished after [`HANG_GUARD`]. Needs a tokio runtime
/// with its time driver enabled.
#[track_caller]
pub fn within_guard<F: Future>(future: F) -> impl Future<Output = F::Output> {
    let at = Location::caller();
    async move {
        match tokio::time::timeout(HANG_GUARD, future).await {
            Ok(output) => output,
            Err(_) => hung("the awaited future", at),
        }
    }
}

/// Runs `f` on a new thread; its result arrives on the returned channel (nothing arrives if
/// `f` panics).
pub fn on_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> mpsc::Receiver<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx
}

/// A one-shot gate for threads: [`Gate::wait`] blocks until [`Gate::open`] is called.
#[derive(Debug, Default)]
pub struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    /// Opens the gate: every waiter, present and future, passes.
    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    /// Blocks until the gate is open; panics after [`HANG_GUARD`].
    #[track_caller]
    pub fn wait(&self) {
        let at = Location::caller();
        let open = self.open.lock().unwrap();
        let (open, _) = self.opened.wait_timeout_while(open, HANG_GUARD, |open| !*open).unwrap();
        if !*open {
            hung("the gate opening", at);
        }
    }
}

/// Polls a future once, by hand, with a waker that does nothing (deterministic interleavings on
/// one thread).
pub fn poll_once<F: Future + ?Sized>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}
