//! Single flight: of N callers that miss the same key at the same time, one (the leader) computes
//! the value and the others (the waiters) receive it.
//!
//! This is what `#[cached]` wrappers use against cache stampedes, for synchronous and
//! asynchronous callers alike; it is public so that hand-written caching code can use it too.
//!
//! The rules:
//!
//! - **Per key, in process.** Distinct keys never wait on each other. The map holds only keys
//!   whose computation is in flight: an entry leaves the map when its flight ends, so the map
//!   stays as small as the number of concurrent computations.
//! - **Waiters get the leader's value** ([`Outcome::Shared`]), a cheap [`Value`] handle, when the
//!   leader has one to share. A leader may finish without one ([`Outcome::NotShared`], e.g. its
//!   function returned an error, which need not be `Clone`); the waiters then compute for
//!   themselves.
//! - **No one waits forever.** A leader that is dropped before it completes, because its thread
//!   panicked or its future was cancelled, ends the flight with [`Outcome::Abandoned`]: waiters
//!   wake up and one of them takes over on its next [`SingleFlight::join`].
//! - **A waiter can bound its wait.** [`Waiter::wait_for`] and [`Waiter::wait_async_for`] give
//!   up after a timeout and answer `None`: a leader that hangs (neither finishes nor fails) then
//!   no longer blocks its waiters, which compute for themselves (`lock_timeout`).
//! - **Sync waiters inside tokio.** [`Waiter::wait`] on a worker of a multi-thread runtime steps
//!   out of the worker (`block_in_place`) so the runtime's other tasks, which the leader may
//!   need, keep running; on a current-thread runtime it blocks the runtime's thread.
//! - **Re-entrancy is detected.** A leader that asks for its own key again while computing it
//!   (a recursive function called with the same arguments) would wait for itself forever; instead
//!   [`SingleFlight::join`] answers [`Join::Reentrant`] and the caller computes without the lock.
//!   Detection covers the leader's own thread while it runs [`Leader::run`] and every poll of the
//!   future passed to [`Leader::run_async`]; a leader that hands its own key to another task or
//!   thread and waits for it is not detected.
//!
//! ```
//! use cachestack::singleflight::{Join, Outcome, SingleFlight};
//! use cachestack::Value;
//!
//! let flights = SingleFlight::new();
//! let Join::Leader(leader) = flights.join("user:1") else { unreachable!() };
//! // A second caller of the same key, while the first computes, becomes a waiter:
//! let Join::Waiter(waiter) = flights.join("user:1") else { unreachable!() };
//!
//! let value = leader.run(|| "Ada".to_string());
//! leader.complete(|| Some(Value::new(value.clone())));
//!
//! match waiter.wait() {
//!     Outcome::Shared(shared) => assert_eq!(shared.get::<String>().unwrap(), "Ada"),
//!     other => panic!("unexpected {other:?}"),
//! }
//! assert_eq!(flights.in_flight(), 0);
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::value::Value;

/// How a flight ended, as seen by its waiters.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The leader's value.
    Shared(Value),
    /// The leader finished without a value to share (for `#[cached]`: its function returned an
    /// `Err`). Compute the value yourself.
    NotShared,
    /// The leader was dropped before completing (it panicked or its future was cancelled). Join
    /// again: one of the waiters becomes the new leader.
    Abandoned,
}

/// One computation in flight.
struct Flight {
    outcome: Mutex<Option<Outcome>>,
    /// Wakes synchronous waiters.
    done: Condvar,
    /// Wakes asynchronous waiters.
    notify: tokio::sync::Notify,
    /// Callers that joined as waiters (counted under the map lock, so the count is final once the
    /// flight has left the map).
    waiters: AtomicUsize,
}

impl Flight {
    fn new() -> Self {
        Flight {
            outcome: Mutex::new(None),
            done: Condvar::new(),
            notify: tokio::sync::Notify::new(),
            waiters: AtomicUsize::new(0),
        }
    }

    fn id(self: &Arc<Self>) -> usize {
        Arc::as_ptr(self) as usize
    }

    fn outcome(&self) -> Option<Outcome> {
        lock(&self.outcome).clone()
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked (every critical section
/// here is a single assignment or map operation).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

thread_local! {
    /// The flights this thread is computing right now (as leader), innermost last.
    static LEADING: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

fn leading_here(id: usize) -> bool {
    LEADING.with(|leading| leading.try_borrow().map(|ids| ids.contains(&id)).unwrap_or(false))
}

/// Marks the current thread as computing a flight until dropped (also on unwind).
struct LeadingScope;

impl LeadingScope {
    fn enter(id: usize) -> Self {
        LEADING.with(|leading| leading.borrow_mut().push(id));
        LeadingScope
    }
}

impl Drop for LeadingScope {
    fn drop(&mut self) {
        LEADING.with(|leading| {
            leading.borrow_mut().pop();
        });
    }
}

/// A map of in-flight computations, keyed by cache key. See the [module docs](self).
pub struct SingleFlight {
    flights: Mutex<BTreeMap<Arc<str>, Arc<Flight>>>,
    /// Flights ended so far (bumped under the map lock, before the flight leaves the map).
    ended: AtomicU64,
}

impl fmt::Debug for SingleFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SingleFlight").field("in_flight", &self.in_flight()).finish()
    }
}

impl Default for SingleFlight {
    fn default() -> Self {
        Self::new()
    }
}

/// What [`SingleFlight::join`] made of the caller.
#[derive(Debug)]
pub enum Join<'a> {
    /// Nobody is computing this key: compute it, then [`Leader::complete`].
    Leader(Leader<'a>),
    /// Somebody is: wait for them.
    Waiter(Waiter),
    /// The caller is itself computing this key, further up its own stack: waiting would deadlock,
    /// so compute without the lock.
    Reentrant,
}

impl SingleFlight {
    /// An empty map (usable in a `static`).
    pub const fn new() -> Self {
        SingleFlight { flights: Mutex::new(BTreeMap::new()), ended: AtomicU64::new(0) }
    }

    /// Joins the flight for `key`: as its leader if there is none, else as a waiter.
    pub fn join(&self, key: &str) -> Join<'_> {
        self.join_as(key, true, || Flights::Borrowed(self)).unwrap_or(Join::Reentrant)
    }

    /// As [`SingleFlight::join`], for a map shared through an `Arc`: the leader holds its own
    /// reference to the map, so it can be moved into a spawned task and complete the flight
    /// there, after the caller that joined has returned.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use cachestack::singleflight::{Join, SingleFlight};
    ///
    /// let flights = Arc::new(SingleFlight::new());
    /// let Join::Leader(leader) = flights.join_shared("k") else { unreachable!() };
    /// std::thread::spawn(move || leader.complete(|| None)).join().unwrap();
    /// assert_eq!(flights.in_flight(), 0);
    /// ```
    pub fn join_shared(self: &Arc<Self>, key: &str) -> Join<'static> {
        self.join_as(key, true, || Flights::Shared(self.clone())).unwrap_or(Join::Reentrant)
    }

    /// Leads the flight for `key` if nobody is computing it; `None` (and nothing registered) if
    /// somebody is, or if the caller itself is (re-entrancy). For work nobody waits for, such as a
    /// background refresh: of many callers that ask at once, exactly one gets the leader.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use cachestack::singleflight::SingleFlight;
    ///
    /// let flights = Arc::new(SingleFlight::new());
    /// let leader = flights.try_lead("k").expect("nobody computes k yet");
    /// assert!(flights.try_lead("k").is_none(), "one refresh at a time");
    /// leader.complete(|| None);
    /// assert!(flights.try_lead("k").is_some());
    /// ```
    pub fn try_lead(self: &Arc<Self>, key: &str) -> Option<Leader<'static>> {
        match self.join_as(key, false, || Flights::Shared(self.clone()))? {
            Join::Leader(leader) => Some(leader),
            Join::Waiter(_) | Join::Reentrant => None,
        }
    }

    /// Joins `key`; `wait`: register as a waiter when a flight exists (else answer `None`).
    fn join_as<'a>(&self, key: &str, wait: bool, flights_ref: impl FnOnce() -> Flights<'a>) -> Option<Join<'a>> {
        let mut flights = lock(&self.flights);
        if let Some(flight) = flights.get(key) {
            if leading_here(flight.id()) {
                return Some(Join::Reentrant);
            }
            if !wait {
                return None;
            }
            flight.waiters.fetch_add(1, Ordering::Relaxed);
            return Some(Join::Waiter(Waiter { flight: flight.clone() }));
        }
        let key: Arc<str> = Arc::from(key);
        let flight = Arc::new(Flight::new());
        flights.insert(key.clone(), flight.clone());
        Some(Join::Leader(Leader { flights: flights_ref(), key, flight, finished: false }))
    }

    /// How many flights have ended so far. A caller that reads a store *before* joining compares
    /// this before its read and after becoming a leader: if it moved, a flight ended meanwhile and
    /// may have stored the key after the read looked, so the store is worth reading again.
    pub(crate) fn ended(&self) -> u64 {
        self.ended.load(Ordering::Relaxed)
    }

    /// Number of keys being computed right now.
    pub fn in_flight(&self) -> usize {
        lock(&self.flights).len()
    }
}

/// The map a leader belongs to: borrowed ([`SingleFlight::join`]) or shared
/// ([`SingleFlight::join_shared`], a leader that can move into a spawned task).
enum Flights<'a> {
    Borrowed(&'a SingleFlight),
    Shared(Arc<SingleFlight>),
}

impl std::ops::Deref for Flights<'_> {
    type Target = SingleFlight;
    fn deref(&self) -> &SingleFlight {
        match self {
            Flights::Borrowed(flights) => flights,
            Flights::Shared(flights) => flights,
        }
    }
}

/// The caller that computes a key. Dropping it without [`Leader::complete`] (a panic, a cancelled
/// future) ends the flight as [`Outcome::Abandoned`], so waiters never hang.
pub struct Leader<'a> {
    flights: Flights<'a>,
    key: Arc<str>,
    flight: Arc<Flight>,
    finished: bool,
}

impl fmt::Debug for Leader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leader").field("key", &self.key).finish()
    }
}

impl Leader<'_> {
    /// The key this leader computes.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Runs the computation, marking this thread as the key's leader meanwhile (so that a nested
    /// [`SingleFlight::join`] of the same key answers [`Join::Reentrant`] instead of deadlocking).
    pub fn run<R>(&self, compute: impl FnOnce() -> R) -> R {
        let _scope = LeadingScope::enter(self.flight.id());
        compute()
    }

    /// Awaits the computation, marking this thread as the key's leader during each of its polls.
    pub async fn run_async<F: Future>(&self, compute: F) -> F::Output {
        let id = self.flight.id();
        let mut compute = pin!(compute);
        std::future::poll_fn(move |cx| {
            let _scope = LeadingScope::enter(id);
            compute.as_mut().poll(cx)
        })
        .await
    }

    /// Ends the flight. `share` is called only if somebody is waiting, and gives the value they
    /// receive (`None`: nothing to share, they compute for themselves).
    pub fn complete(mut self, share: impl FnOnce() -> Option<Value>) {
        self.finish(|| share().map_or(Outcome::NotShared, Outcome::Shared));
    }

    fn finish(&mut self, outcome: impl FnOnce() -> Outcome) {
        {
            let mut flights = lock(&self.flights.flights);
            if flights.get(&*self.key).is_some_and(|f| Arc::ptr_eq(f, &self.flight)) {
                // Under the lock: whoever joins after the removal sees the new count.
                self.flights.ended.fetch_add(1, Ordering::Relaxed);
                flights.remove(&*self.key);
            }
        }
        // Out of the map: no waiter can join any more, so the count is final.
        let outcome = if self.flight.waiters.load(Ordering::Relaxed) > 0 { outcome() } else { Outcome::NotShared };
        // Finished only once the outcome exists: if building it panicked (the value's `Clone`,
        // say), `Drop` still ends the flight as abandoned and the waiters take over.
        self.finished = true;
        *lock(&self.flight.outcome) = Some(outcome);
        self.flight.done.notify_all();
        self.flight.notify.notify_waiters();
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.finish(|| Outcome::Abandoned);
        }
    }
}

/// A caller waiting for another caller's computation of the same key.
pub struct Waiter {
    flight: Arc<Flight>,
}

impl fmt::Debug for Waiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiter").finish_non_exhaustive()
    }
}

impl Waiter {
    /// Blocks the thread until the flight ends.
    ///
    /// On a worker thread of a multi-thread tokio runtime, the wait steps out of the worker
    /// (`tokio::task::block_in_place`), so the runtime keeps running its other tasks meanwhile,
    /// including any the leader needs to finish. On a current-thread runtime, the runtime's thread
    /// blocks until the leader is done, as it would if it computed the value itself; the leader
    /// then runs on another thread (a synchronous leader never gives its thread back to the
    /// runtime before completing).
    pub fn wait(self) -> Outcome {
        let on_multi_thread_runtime = tokio::runtime::Handle::try_current()
            .is_ok_and(|runtime| runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if on_multi_thread_runtime {
            tokio::task::block_in_place(|| self.block())
        } else {
            self.block()
        }
    }

    fn block(self) -> Outcome {
        let mut outcome = lock(&self.flight.outcome);
        loop {
            if let Some(done) = &*outcome {
                return done.clone();
            }
            outcome = self.flight.done.wait(outcome).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// As [`Waiter::wait`], giving up after `timeout`: `None` when the leader has neither
    /// finished nor failed by then (it hangs, or is slow). The caller then computes for itself;
    /// the leader's flight goes on and ends as usual.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cachestack::singleflight::{Join, SingleFlight};
    ///
    /// let flights = SingleFlight::new();
    /// let Join::Leader(_hung) = flights.join("k") else { unreachable!() };
    /// let Join::Waiter(waiter) = flights.join("k") else { unreachable!() };
    /// assert!(waiter.wait_for(Duration::from_millis(1)).is_none());
    /// ```
    pub fn wait_for(self, timeout: Duration) -> Option<Outcome> {
        let on_multi_thread_runtime = tokio::runtime::Handle::try_current()
            .is_ok_and(|runtime| runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if on_multi_thread_runtime {
            tokio::task::block_in_place(|| self.block_for(timeout))
        } else {
            self.block_for(timeout)
        }
    }

    fn block_for(self, timeout: Duration) -> Option<Outcome> {
        // A timeout too large to add to now is as good as none.
        let Some(give_up) = Instant::now().checked_add(timeout) else { return Some(self.block()) };
        let mut outcome = lock(&self.flight.outcome);
        loop {
            if let Some(done) = &*outcome {
                return Some(done.clone());
            }
            let left = give_up.checked_duration_since(Instant::now()).filter(|left| !left.is_zero())?;
            outcome = self.flight.done.wait_timeout(outcome, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Waits for the end of the flight without blocking the thread (any executor).
    pub async fn wait_async(self) -> Outcome {
        loop {
            let mut notified = pin!(self.flight.notify.notified());
            // Register before looking, so a completion between the look and the await still
            // wakes this waiter.
            notified.as_mut().enable();
            if let Some(done) = self.flight.outcome() {
                return done;
            }
            notified.await;
        }
    }

    /// As [`Waiter::wait_async`], giving up after `timeout` (on tokio's timer: call it inside a
    /// tokio runtime with time enabled): `None` when the leader has neither finished nor failed
    /// by then. See [`Waiter::wait_for`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use cachestack::singleflight::{Join, SingleFlight};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let flights = SingleFlight::new();
    /// let Join::Leader(_hung) = flights.join("k") else { unreachable!() };
    /// let Join::Waiter(waiter) = flights.join("k") else { unreachable!() };
    /// assert!(waiter.wait_async_for(Duration::from_millis(1)).await.is_none());
    /// # });
    /// ```
    pub async fn wait_async_for(self, timeout: Duration) -> Option<Outcome> {
        tokio::time::timeout(timeout, self.wait_async()).await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader<'a>(join: Join<'a>) -> Leader<'a> {
        match join {
            Join::Leader(l) => l,
            other => panic!("expected a leader, got {other:?}"),
        }
    }

    fn waiter(join: Join<'_>) -> Waiter {
        match join {
            Join::Waiter(w) => w,
            other => panic!("expected a waiter, got {other:?}"),
        }
    }

    #[test]
    fn distinct_keys_lead_independently() {
        let sf = SingleFlight::new();
        let a = leader(sf.join("a"));
        let b = leader(sf.join("b"));
        assert_eq!(sf.in_flight(), 2);
        a.complete(|| None);
        b.complete(|| None);
        assert_eq!(sf.in_flight(), 0);
    }

    #[test]
    fn dropped_leader_abandons_and_next_join_leads() {
        let sf = SingleFlight::new();
        let l = leader(sf.join("k"));
        let w = waiter(sf.join("k"));
        drop(l);
        assert!(matches!(w.wait(), Outcome::Abandoned));
        let _next = leader(sf.join("k"));
    }

    #[test]
    fn nothing_is_shared_without_waiters() {
        let sf = SingleFlight::new();
        let l = leader(sf.join("k"));
        l.complete(|| panic!("no waiter: the value must not be built"));
    }

    #[test]
    fn a_leader_that_panics_while_building_the_shared_value_abandons() {
        let sf = SingleFlight::new();
        let l = leader(sf.join("k"));
        let w = waiter(sf.join("k"));
        let completed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            l.complete(|| panic!("the value cannot be cloned (expected in this test)"))
        }));
        assert!(completed.is_err());
        // Checked without waiting, so a regression fails instead of hanging.
        assert!(matches!(w.flight.outcome(), Some(Outcome::Abandoned)));
        assert!(matches!(w.wait(), Outcome::Abandoned));
        assert_eq!(sf.in_flight(), 0);
        let _next = leader(sf.join("k"));
    }

    #[test]
    fn reentrant_join_is_detected_inside_run() {
        let sf = SingleFlight::new();
        let l = leader(sf.join("k"));
        let inner = l.run(|| matches!(sf.join("k"), Join::Reentrant));
        assert!(inner);
        // Outside `run`, the same thread is an ordinary waiter again.
        assert!(matches!(sf.join("k"), Join::Waiter(_)));
        l.complete(|| None);
    }

    #[test]
    fn async_waiter_wakes_on_completion() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let sf = SingleFlight::new();
            let l = leader(sf.join("k"));
            let w = waiter(sf.join("k"));
            let wait = w.wait_async();
            l.complete(|| Some(Value::new(5u8)));
            match wait.await {
                Outcome::Shared(v) => assert_eq!(v.get::<u8>().unwrap(), 5),
                other => panic!("{other:?}"),
            }
        });
    }

    #[test]
    fn a_waiter_of_a_hung_leader_gives_up_after_its_timeout() {
        let sf = SingleFlight::new();
        let hung = leader(sf.join("k"));
        // The leader never completes: without a bound this wait would never return.
        assert!(waiter(sf.join("k")).wait_for(Duration::from_millis(5)).is_none());
        // A leader that finishes in time is still seen by a bounded waiter.
        let w = waiter(sf.join("k"));
        hung.complete(|| Some(Value::new(1u8)));
        assert!(matches!(w.wait_for(Duration::from_secs(3600)), Some(Outcome::Shared(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn an_async_waiter_of_a_hung_leader_gives_up_after_its_timeout() {
        let sf = SingleFlight::new();
        let _hung = leader(sf.join("k"));
        let started = tokio::time::Instant::now();
        assert!(waiter(sf.join("k")).wait_async_for(Duration::from_secs(5)).await.is_none());
        assert_eq!(started.elapsed(), Duration::from_secs(5), "paused time: exactly the timeout");
    }

    #[test]
    fn try_lead_leads_once_and_registers_no_waiter() {
        let sf = Arc::new(SingleFlight::new());
        let first = sf.try_lead("k").unwrap();
        assert!(sf.try_lead("k").is_none());
        assert_eq!(first.flight.waiters.load(Ordering::Relaxed), 0);
        // A shared leader completes from another thread.
        std::thread::spawn(move || first.complete(|| panic!("nobody waits: nothing to build"))).join().unwrap();
        assert_eq!(sf.in_flight(), 0);
        assert!(sf.try_lead("k").is_some());
    }

    #[test]
    fn a_shared_leader_dropped_in_another_thread_abandons() {
        let sf = Arc::new(SingleFlight::new());
        let Join::Leader(l) = sf.join_shared("k") else { panic!("expected a leader") };
        let w = waiter(sf.join("k"));
        std::thread::spawn(move || drop(l)).join().unwrap();
        assert!(matches!(w.wait(), Outcome::Abandoned));
    }
}
