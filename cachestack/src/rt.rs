//! The bridge that lets synchronous code use asynchronous backends.
//!
//! cachestack owns a small multi-thread tokio runtime, started on first use. Synchronous callers
//! run backend futures to completion through [`block_on`], which works from plain threads and from
//! inside any tokio runtime (where calling `Runtime::block_on` would panic): inside a runtime, the
//! future is spawned on cachestack's runtime and the calling thread waits for its result
//! (with `block_in_place` on multi-thread runtimes, so the caller's other tasks keep running).
//!
//! Network backends spawn their connection tasks on this runtime too ([`handle`]), so a
//! synchronous caller that blocks a single-threaded runtime never blocks the tasks its own request
//! needs.

use std::future::Future;
use std::sync::OnceLock;

use crate::error::{Error, Result};

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

/// Runs `future` to completion from synchronous code, wherever that code runs.
///
/// ```
/// // From a plain thread:
/// assert_eq!(cachestack::rt::block_on(async { 1 + 1 }).unwrap(), 2);
///
/// // From inside a single-threaded tokio runtime (where `Runtime::block_on` would panic):
/// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// rt.block_on(async {
///     assert_eq!(cachestack::rt::block_on(async { 2 + 2 }).unwrap(), 4);
/// });
/// ```
pub fn block_on<F>(future: F) -> Result<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let rt = runtime()?;
    match tokio::runtime::Handle::try_current() {
        Err(_) => Ok(rt.block_on(future)),
        Ok(current) => {
            // Inside a runtime: run the future on cachestack's runtime and wait for it on a plain
            // channel (entering a runtime from here would panic).
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            rt.spawn(async move {
                let _ = tx.send(future.await);
            });
            let wait = move || rx.recv();
            let received = match current.runtime_flavor() {
                tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(wait),
                _ => wait(),
            };
            received.map_err(|_| Error::Generic {
                backend: "runtime".into(),
                source: "a cache operation panicked on cachestack's runtime".into(),
            })
        }
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
