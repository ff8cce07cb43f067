//! Runtime switches for `#[cached]` functions: which cache commands (reads, writes) they may use,
//! per cache and for all caches (set on [`CacheRegistry`](crate::CacheRegistry)), and a scoped
//! bypass ([`bypass`], [`bypass_async`]) under which they neither read nor write.
//!
//! A switch is part of what a thread resolved for a function (changing one moves the registry's
//! generation), so an enabled cache's hit costs what it did; the bypass is one thread-local read.

use std::cell::Cell;
use std::future::Future;

/// The cache commands `#[cached]` functions may use: reads (answering from the cache) and writes
/// (storing computed values). See [`CacheRegistry::set_commands`](crate::CacheRegistry::set_commands).
///
/// ```
/// use cachestack::Commands;
///
/// assert!(Commands::ALL.reads() && Commands::ALL.writes());
/// assert!(!Commands::NONE.reads() && !Commands::NONE.writes());
/// assert!(Commands::READS.reads() && !Commands::READS.writes());
/// assert_eq!(Commands::READS.and(Commands::WRITES), Commands::NONE);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Commands {
    reads: bool,
    writes: bool,
}

impl Commands {
    /// Read and write (the default).
    pub const ALL: Commands = Commands { reads: true, writes: true };
    /// Neither: functions run their body every time and store nothing.
    pub const NONE: Commands = Commands { reads: false, writes: false };
    /// Reads only: hits are answered, computed values are not stored.
    pub const READS: Commands = Commands { reads: true, writes: false };
    /// Writes only: every call computes and stores its value (as `<fn>_refresh` does).
    pub const WRITES: Commands = Commands { reads: false, writes: true };

    /// Whether functions may answer from the cache.
    #[inline]
    pub const fn reads(self) -> bool {
        self.reads
    }

    /// Whether functions may store computed values.
    #[inline]
    pub const fn writes(self) -> bool {
        self.writes
    }

    /// The commands both allow.
    pub const fn and(self, other: Commands) -> Commands {
        Commands { reads: self.reads && other.reads, writes: self.writes && other.writes }
    }
}

impl Default for Commands {
    fn default() -> Self {
        Commands::ALL
    }
}

thread_local! {
    /// How many [`bypass`] scopes the thread is in.
    static BYPASS: Cell<u32> = const { Cell::new(0) };
}

/// Whether the current thread is inside [`bypass`] (or a poll of [`bypass_async`]).
#[inline]
pub(crate) fn bypassed() -> bool {
    BYPASS.try_with(|depth| depth.get() != 0).unwrap_or(false)
}

/// Marks the thread as bypassing until dropped (nesting allowed).
struct Scope;

impl Scope {
    fn enter() -> Scope {
        let _ = BYPASS.try_with(|depth| depth.set(depth.get().saturating_add(1)));
        Scope
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let _ = BYPASS.try_with(|depth| depth.set(depth.get().saturating_sub(1)));
    }
}

/// Runs `f` with the cache bypassed on this thread: `#[cached]` functions called inside run their
/// body and neither read nor write. Work `f` hands to other threads or tasks is not bypassed.
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
/// static RUNS: AtomicU32 = AtomicU32::new(0);
///
/// #[cachestack::cached]
/// fn answer() -> u32 { RUNS.fetch_add(1, SeqCst); 42 }
///
/// answer();
/// answer();
/// assert_eq!(RUNS.load(SeqCst), 1);
/// assert_eq!(cachestack::bypass(answer), 42); // the body runs
/// assert_eq!(RUNS.load(SeqCst), 2);
/// answer(); // cached as before
/// assert_eq!(RUNS.load(SeqCst), 2);
/// ```
pub fn bypass<T>(f: impl FnOnce() -> T) -> T {
    let _scope = Scope::enter();
    f()
}

/// Awaits `future` with the cache bypassed: every poll of it runs as inside [`bypass`], so the
/// `#[cached]` functions it calls (sync or async) run their body and neither read nor write.
/// Tasks it spawns are not bypassed.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
/// static RUNS: AtomicU32 = AtomicU32::new(0);
///
/// #[cachestack::cached]
/// async fn answer() -> u32 { RUNS.fetch_add(1, SeqCst); 42 }
///
/// answer().await;
/// assert_eq!(cachestack::bypass_async(answer()).await, 42);
/// assert_eq!(RUNS.load(SeqCst), 2);
/// answer().await; // cached as before
/// assert_eq!(RUNS.load(SeqCst), 2);
/// # });
/// ```
pub async fn bypass_async<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        let _scope = Scope::enter();
        future.as_mut().poll(cx)
    })
    .await
}
