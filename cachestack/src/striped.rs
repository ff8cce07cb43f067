//! A counter bumped on every cache hit by many threads at once.
//!
//! One `AtomicU64` bumped from several cores moves its cache line from core to core on every
//! increment, and even uncontended, a locked read-modify-write costs about 20 cycles: two of them
//! per hit (the function's and the backend's hit counters) were a measurable share of a memory
//! hit. A [`StripedCounter`] gives each thread a stripe of its own, on its own cache lines, that
//! only that thread writes: an increment is a plain load and store, no lock prefix, no sharing.
//! Reads (stats) sum the stripes.
//!
//! Threads lease a stripe index on their first increment and give it back when they exit, so a
//! stripe always has at most one writer. Threads beyond [`OWNED`] at once (and code running
//! during thread-local destruction) share one more stripe with atomic read-modify-writes: still
//! exact, merely contended.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Threads that can hold a stripe of their own at the same time.
const OWNED: usize = 32;

/// One stripe on its own 128-byte block (two cache lines: x86 prefetches lines in pairs).
#[repr(align(128))]
struct Stripe(AtomicU64);

/// An exact counter split in per-thread stripes: `add` touches only the calling thread's stripe
/// (without a locked instruction when the thread leases one), `get` sums them all.
pub(crate) struct StripedCounter {
    owned: [Stripe; OWNED],
    shared: Stripe,
}

impl StripedCounter {
    /// A counter at zero (all zero bytes: in a `static`, its pages are touched only when used).
    pub(crate) const fn new() -> Self {
        StripedCounter { owned: [const { Stripe(AtomicU64::new(0)) }; OWNED], shared: Stripe(AtomicU64::new(0)) }
    }

    /// Adds `n`.
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        match lease() {
            Some(index) => {
                // The only writer of this stripe (see `lease`): load and store need no lock.
                let stripe = &self.owned[index].0;
                stripe.store(stripe.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
            }
            None => {
                self.shared.0.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// The total: exact for every `add` that happened before this call.
    pub(crate) fn get(&self) -> u64 {
        self.owned.iter().chain([&self.shared]).map(|s| s.0.load(Ordering::Relaxed)).fold(0, u64::wrapping_add)
    }
}

impl Default for StripedCounter {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for StripedCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.get(), f)
    }
}

/// Stripe indices leased by live threads, one bit each.
static LEASED: AtomicU64 = AtomicU64::new(0);

const UNASSIGNED: u8 = u8::MAX;
const NONE_FREE: u8 = u8::MAX - 1;

/// A thread's stripe index, given back when the thread exits.
struct Lease(Cell<u8>);

impl Drop for Lease {
    fn drop(&mut self) {
        let index = self.0.replace(NONE_FREE);
        if usize::from(index) < OWNED {
            // Release: the next holder of this index sees every store this thread made to it.
            LEASED.fetch_and(!(1u64 << index), Ordering::Release);
        }
    }
}

thread_local! {
    static LEASE: Lease = const { Lease(Cell::new(UNASSIGNED)) };
}

/// The calling thread's own stripe index, leased on first use; `None` when every index is
/// leased or thread-locals are being destroyed (use the shared stripe).
#[inline]
fn lease() -> Option<usize> {
    LEASE
        .try_with(|lease| {
            let mut index = lease.0.get();
            if index == UNASSIGNED {
                index = claim();
                lease.0.set(index);
            }
            (usize::from(index) < OWNED).then_some(usize::from(index))
        })
        .ok()
        .flatten()
}

#[cold]
fn claim() -> u8 {
    let all = (1u64 << OWNED) - 1;
    let mut leased = LEASED.load(Ordering::Relaxed);
    loop {
        let free = !leased & all;
        if free == 0 {
            return NONE_FREE;
        }
        let index = free.trailing_zeros();
        // Acquire: see every store the previous holder of this index made to it.
        match LEASED.compare_exchange_weak(leased, leased | (1 << index), Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return index as u8,
            Err(now) => leased = now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_exactly_across_threads_including_more_threads_than_stripes() {
        let counter = StripedCounter::new();
        let threads = OWNED + 8;
        let barrier = std::sync::Barrier::new(threads);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    // All alive at once: some run without a stripe of their own.
                    barrier.wait();
                    for _ in 0..1000 {
                        counter.add(1);
                    }
                    barrier.wait();
                });
            }
        });
        counter.add(5);
        assert_eq!(counter.get(), threads as u64 * 1000 + 5);
        assert_eq!(format!("{counter:?}"), counter.get().to_string());
    }

    #[test]
    fn stripes_are_given_back_by_exiting_threads() {
        let counter = StripedCounter::new();
        // Far more threads over time than stripes: each exit frees its index for the next.
        for _ in 0..(3 * OWNED) {
            std::thread::scope(|s| {
                s.spawn(|| counter.add(2));
            });
        }
        assert_eq!(counter.get(), 3 * OWNED as u64 * 2);
        // Without give-backs, all but the first OWNED threads would have used the shared stripe.
        assert!(counter.shared.0.load(Ordering::Relaxed) < OWNED as u64 * 2);
    }

    #[test]
    fn stripes_do_not_share_cache_lines() {
        assert!(std::mem::align_of::<Stripe>() >= 128);
        assert_eq!(std::mem::size_of::<StripedCounter>(), (OWNED + 1) * 128);
    }
}
