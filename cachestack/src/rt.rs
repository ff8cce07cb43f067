//! The bridge that lets synchronous code use asynchronous backends.
//!
//! cachestack owns a small multi-thread tokio runtime, started on first use. Synchronous callers
//! run backend futures to completion through [`block_on`], which works from plain threads and from
//! the threads of a multi-thread tokio runtime (where calling `Runtime::block_on` would panic):
//! there, the future is spawned on cachestack's runtime and the calling thread waits for its
//! result inside `block_in_place`, so the caller's other tasks keep running.
//!
//! On a **current-thread** runtime the calling thread is the runtime's only thread, and waiting
//! blocks it. The operation still runs on cachestack's runtime, so it completes unless it needs
//! the caller's runtime (a lock held by one of its tasks, a task it must answer): that is a
//! deadlock, which cachestack cannot see coming. So there the wait is bounded by
//! [`CURRENT_THREAD_WAIT`]: past it the operation is cancelled and the call fails with an error
//! that names the cause, instead of hanging forever. Prefer the async API on such runtimes.
//!
//! [`block_on_within`] also bounds the wait: past its limit the future is cancelled and the call
//! fails with [`Error::Timeout`], so a blocking call never hangs forever on a store that does not
//! answer.
//!
//! Network backends spawn their connection tasks on this runtime too ([`handle`]), so a
//! synchronous caller that blocks its thread never blocks the tasks its own request needs.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use crate::error::{Error, Result};

/// The longest a blocking call made on a current-thread tokio runtime waits (see the
/// [module](self)); past it, it fails with an error naming the probable deadlock.
pub const CURRENT_THREAD_WAIT: Duration = Duration::from_secs(5);

static RUNTIME: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> = OnceLock::new();

fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("cachestack-io")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::Generic {
            backend: "runtime".into(),
            source: format!("cannot start cachestack's runtime: {e}").into(),
        })
}

/// A handle to cachestack's own runtime, for backends that spawn long-lived connection tasks.
///
/// ```
/// let handle = cachestack::rt::handle().unwrap();
/// let answer = std::thread::spawn(move || handle.block_on(async { 40 + 2 })).join().unwrap();
/// assert_eq!(answer, 42);
/// ```
pub fn handle() -> Result<tokio::runtime::Handle> {
    Ok(runtime()?.handle().clone())
}

/// Runs `future` to completion from synchronous code, wherever that code runs. On a
/// current-thread runtime the wait is bounded by [`CURRENT_THREAD_WAIT`] (see the
/// [module](self)): a deadlock there is an error, not a hang.
///
/// ```
/// // From a plain thread:
/// assert_eq!(cachestack::rt::block_on(async { 1 + 1 }).unwrap(), 2);
///
/// // From a multi-thread runtime (where `Runtime::block_on` would panic):
/// let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap();
/// rt.block_on(async {
///     assert_eq!(cachestack::rt::block_on(async { 2 + 2 }).unwrap(), 4);
/// });
///
/// // From inside a current-thread runtime (its only thread waits, within CURRENT_THREAD_WAIT):
/// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// assert_eq!(rt.block_on(async { cachestack::rt::block_on(async { 3 }) }).unwrap(), 3);
/// ```
pub fn block_on<F>(future: F) -> Result<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    block_on_within(None, future)
}

/// [`block_on`] with a bound: past `limit` (if given) the future is cancelled and the call fails
/// with [`Error::Timeout`].
///
/// ```
/// use std::time::Duration;
/// let err = cachestack::rt::block_on_within(Some(Duration::from_millis(10)), std::future::pending::<()>()).unwrap_err();
/// assert!(matches!(err, cachestack::Error::Timeout { .. }), "{err}");
/// assert_eq!(cachestack::rt::block_on_within(Some(Duration::from_secs(5)), async { 7 }).unwrap(), 7);
/// ```
pub fn block_on_within<F>(limit: Option<Duration>, future: F) -> Result<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let rt = runtime()?;
    let timed_out = |after| Error::Timeout { backend: "runtime".into(), after };
    let current = match tokio::runtime::Handle::try_current() {
        Err(_) => {
            // A plain thread: drive the future from here.
            return match limit {
                None => Ok(rt.block_on(future)),
                // The timer is made inside the runtime (it needs its time driver).
                Some(limit) => {
                    rt.block_on(async move { tokio::time::timeout(limit, future).await }).map_err(|_| timed_out(limit))
                }
            };
        }
        Ok(current) => current,
    };
    // Run the future on cachestack's runtime and wait for it on a plain channel (entering a
    // runtime from here would panic): inside `block_in_place` on a multi-thread runtime; on a
    // current-thread runtime, blocking its only thread, for at most CURRENT_THREAD_WAIT.
    let multi_thread = current.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread;
    let wait_limit = match (multi_thread, limit) {
        (true, limit) => limit,
        (false, Some(limit)) => Some(limit.min(CURRENT_THREAD_WAIT)),
        (false, None) => Some(CURRENT_THREAD_WAIT),
    };
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let task = rt.spawn(async move {
        let _ = tx.send(future.await);
    });
    let wait = move || match wait_limit {
        None => rx.recv().map_err(|_| std::sync::mpsc::RecvTimeoutError::Disconnected),
        Some(wait_limit) => rx.recv_timeout(wait_limit),
    };
    let received = if multi_thread { tokio::task::block_in_place(wait) } else { wait() };
    match (received, wait_limit) {
        (Ok(output), _) => Ok(output),
        (Err(std::sync::mpsc::RecvTimeoutError::Timeout), Some(waited)) => {
            task.abort();
            if limit == Some(waited) {
                Err(timed_out(waited))
            } else {
                Err(Error::Generic {
                    backend: "runtime".into(),
                    source: format!(
                        "a blocking cache call (a `*_blocking` method, or a synchronous #[cached] function over a \
                         remote cache) made on a current-thread tokio runtime got no answer within {CURRENT_THREAD_WAIT:?}: \
                         it blocks the runtime's only thread, which deadlocks when the operation needs that runtime \
                         (a lock or a task of it); use the async API, a multi-thread runtime or a plain thread"
                    )
                    .into(),
                })
            }
        }
        (Err(_), _) => Err(Error::Generic {
            backend: "runtime".into(),
            source: "a cache operation panicked on cachestack's runtime".into(),
        }),
    }
}

/// The one I/O rule of the network stores: their I/O runs on cachestack's runtime (so that a
/// caller that blocks its own runtime, or has none, never starves the tasks its request needs),
/// and **dropping the returned future aborts the I/O** (a caller that stops waiting, or the
/// [`Timeout`](crate::layer::Timeout) layer giving up, cancels the request; nothing keeps running
/// unbounded behind its back). Encoding, decoding and HMAC checks stay on the caller's side:
/// pass `io` only the network part.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let n = cachestack::rt::io("demo", async { Ok(21 * 2) }).await.unwrap();
/// assert_eq!(n, 42);
/// # });
/// ```
pub async fn io<F, T>(backend: &str, future: F) -> Result<T>
where
    F: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);
    impl<T> Drop for AbortOnDrop<T> {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let mut task = AbortOnDrop(runtime()?.spawn(future));
    match (&mut task.0).await {
        Ok(result) => result,
        Err(err) => Err(Error::Generic {
            backend: backend.to_owned(),
            source: if err.is_panic() { "a cache operation panicked" } else { "a cache operation was cancelled" }
                .into(),
        }),
    }
}
