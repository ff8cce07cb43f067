//! The pieces a computation runs with: the watch between a computation and its caller, the
//! counters of running and waiting calls, the task a computation runs as, and the bounded wait.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;

use super::engine::Failure;
use super::state::ComputeState;

/// Where a computation's caller stands: still waiting, gone, or the computation is done. The
/// computation and its caller each mark their end; whoever marks second learns what the other
/// did (a failure after the caller left is a background failure, counted and logged).
pub(super) struct Watch(AtomicU8);

const RUNNING: u8 = 0;
const DONE: u8 = 1;
const DETACHED: u8 = 2;

impl Watch {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Watch(AtomicU8::new(RUNNING)))
    }
    /// The caller stops waiting; false if the computation is already done (its result is ready).
    pub(super) fn detach(&self) -> bool {
        self.0.compare_exchange(RUNNING, DETACHED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }
    /// The computation is done; true if its caller had already left.
    pub(super) fn finish(&self) -> bool {
        self.0.swap(DONE, Ordering::AcqRel) == DETACHED
    }
}

/// Marks the caller gone if its future is dropped while the computation runs.
pub(super) struct DetachOnDrop(pub(super) Arc<Watch>);

impl Drop for DetachOnDrop {
    fn drop(&mut self) {
        self.0.detach();
    }
}

/// Counts a running computation until dropped.
pub(super) struct Running(Arc<ComputeState>);

impl Running {
    pub(super) fn start(state: &Arc<ComputeState>) -> Self {
        state.running.fetch_add(1, Ordering::AcqRel);
        Running(state.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Counts a waiting caller until dropped.
pub(super) struct Waiting<'a>(&'a ComputeState);

impl<'a> Waiting<'a> {
    pub(super) fn enter(state: &'a ComputeState) -> Self {
        state.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(state)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Polls `future`, turning a panic into `Err(payload)`.
pub(super) async fn catch_unwind<F: Future>(future: F) -> std::result::Result<F::Output, Box<dyn Any + Send>> {
    let mut future = pin!(future);
    std::future::poll_fn(move |cx| match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
        Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
        Ok(Poll::Pending) => Poll::Pending,
        Err(payload) => Poll::Ready(Err(payload)),
    })
    .await
}

/// A computation's task: on cachestack's runtime, or (if that runtime cannot start) run in place
/// by the caller.
pub(super) enum Task<T, E> {
    Spawned(tokio::task::JoinHandle<std::result::Result<T, Failure<E>>>),
    Inline(Pin<Box<dyn Future<Output = std::result::Result<T, Failure<E>>> + Send>>),
}

impl<T, E> Future for Task<T, E> {
    type Output = std::result::Result<T, Failure<E>>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Task::Spawned(handle) => Pin::new(handle).poll(cx).map(|joined| {
                joined.unwrap_or_else(|err| {
                    Err(Failure::Panic(if err.is_panic() {
                        err.into_panic()
                    } else {
                        Box::new("cachestack: the computation's task was cancelled (runtime shut down)")
                    }))
                })
            }),
            Task::Inline(future) => future.as_mut().poll(cx),
        }
    }
}

pub(super) fn spawn<T, E>(
    future: impl Future<Output = std::result::Result<T, Failure<E>>> + Send + 'static,
) -> Task<T, E>
where
    T: Send + 'static,
    E: Send + 'static,
{
    match crate::rt::handle() {
        Ok(runtime) => Task::Spawned(runtime.spawn(future)),
        Err(err) => {
            tracing::warn!(error = %err, "cachestack: computation runs on the caller: cachestack's runtime is unavailable");
            Task::Inline(Box::pin(future))
        }
    }
}

/// How long a caller waits for a computation.
#[derive(Clone, Copy)]
pub(super) struct Bounds {
    /// The soft timeout (only when a stale value can answer).
    pub(super) soft_at: Option<Instant>,
    /// The hard timeout.
    pub(super) hard_at: Option<Instant>,
}

pub(super) enum Awaited<R> {
    Done(R),
    Soft,
    Hard,
}

/// Awaits `task`, giving up at `soft_at` or `hard_at`. A caller that gives up detaches from the
/// computation, which goes on in the background; if the computation finished just as the caller
/// gave up, its result is taken after all.
pub(super) async fn await_bounded<T, E>(
    task: &mut Task<T, E>,
    watch: &Watch,
    soft_at: Option<Instant>,
    hard_at: Option<Instant>,
) -> Awaited<std::result::Result<T, Failure<E>>> {
    for (at, gave_up) in [(soft_at, Awaited::Soft), (hard_at, Awaited::Hard)] {
        let Some(at) = at else { continue };
        return match tokio::time::timeout_at(at, &mut *task).await {
            Ok(result) => Awaited::Done(result),
            Err(_) if watch.detach() => gave_up,
            Err(_) => Awaited::Done(task.await),
        };
    }
    Awaited::Done(task.await)
}
