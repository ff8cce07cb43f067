//! Replacing a connection that stopped answering, and the TCP settings that let the kernel notice
//! a dead peer.
//!
//! A server that vanishes without closing anything (a silent failover to another machine, a
//! route or firewall that drops packets) leaves its clients' connections half-open: requests go
//! out and nothing comes back. The Timeout layer bounds each operation, but the next operation
//! takes the same dead connection, and the client library only gives up on it when the kernel
//! does (TCP retransmits unacknowledged data for about 15 minutes by default).
//!
//! A [`Recycler`] holds a store's connection (a Redis connection, a PostgreSQL pool) and counts
//! the requests in a row that got no answer: timed out, or abandoned when the caller stopped
//! waiting (the Timeout layer dropping the operation). After [`STALLS_TO_RECYCLE`] of them with
//! no answer in between, the connection is replaced by a new one: the next operation connects
//! afresh. Requests still in flight on the old connection end (or time out) there; it closes when
//! the last of them lets go. Any answer from the server, an error included, resets the count, so
//! a slow but live server is not reconnected to over and over.
//!
//! The hit path pays one relaxed atomic load to learn that nothing stalled.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::error::Result;

/// Requests in a row without an answer after which the connection is replaced.
pub(crate) const STALLS_TO_RECYCLE: u32 = 2;

/// TCP keepalive: an idle connection is probed after this long without traffic...
pub(crate) const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
/// ...then every this long...
pub(crate) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
/// ...and dropped by the kernel after this many unanswered probes (about 11 s in all).
pub(crate) const KEEPALIVE_RETRIES: u32 = 3;
/// `TCP_USER_TIMEOUT` (Linux): the kernel drops a connection whose sent data stays
/// unacknowledged this long, instead of retransmitting for about 15 minutes.
pub(crate) const USER_TIMEOUT: Duration = Duration::from_secs(10);

/// The keepalive parameters above, for socket2.
#[cfg(feature = "redis")]
pub(crate) fn keepalive() -> ::redis::io::tcp::socket2::TcpKeepalive {
    let keepalive = ::redis::io::tcp::socket2::TcpKeepalive::new().with_time(KEEPALIVE_IDLE);
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "macos", target_os = "freebsd"))]
    let keepalive = keepalive.with_interval(KEEPALIVE_INTERVAL).with_retries(KEEPALIVE_RETRIES);
    keepalive
}

/// The connection in use, numbered.
struct Slot<C> {
    generation: u64,
    conn: C,
}

/// Opens the replacement of a connection (given the one it replaces, to retire it).
type Reopen<C> = Box<dyn Fn(&C) -> Result<C> + Send + Sync>;

/// A store's connection, replaced after [`STALLS_TO_RECYCLE`] requests in a row got no answer
/// (see the module docs).
pub(crate) struct Recycler<C> {
    slot: ArcSwap<Slot<C>>,
    /// Requests in a row on the current connection that got no answer.
    stalls: AtomicU32,
    reopen: Reopen<C>,
    /// The store's name, for logs.
    name: String,
}

impl<C> std::fmt::Debug for Recycler<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recycler")
            .field("generation", &self.slot.load().generation)
            .field("stalls", &self.stalls.load(Relaxed))
            .finish()
    }
}

impl<C: Clone> Recycler<C> {
    /// Starts with `conn`; `reopen` makes a replacement (without I/O: connections are lazy).
    pub fn new(name: &str, conn: C, reopen: impl Fn(&C) -> Result<C> + Send + Sync + 'static) -> Self {
        Recycler {
            slot: ArcSwap::from_pointee(Slot { generation: 0, conn }),
            stalls: AtomicU32::new(0),
            reopen: Box::new(reopen),
            name: name.to_owned(),
        }
    }

    /// The connection in use, for work that is not watched (background tasks, stats).
    pub fn current(&self) -> C {
        self.slot.load().conn.clone()
    }

    /// How many times the connection was replaced.
    pub fn replacements(&self) -> u64 {
        self.slot.load().generation
    }

    /// One request on the connection in use: settle it with [`Request::answered`],
    /// [`Request::stalled`] or [`Request::failed`]; dropped unsettled, it counts as stalled.
    pub fn request(&self) -> Request<'_, C> {
        let slot = self.slot.load();
        Request { recycler: self, generation: slot.generation, conn: slot.conn.clone(), settled: false }
    }

    fn answered(&self, generation: u64) {
        // The common case reads one shared word and writes nothing.
        if self.stalls.load(Relaxed) != 0 && self.slot.load().generation == generation {
            self.stalls.store(0, Relaxed);
        }
    }

    fn stalled(&self, generation: u64) {
        let slot = self.slot.load_full();
        if slot.generation != generation {
            return; // a request on a connection already replaced
        }
        // Exactly one caller sees the count reach the threshold and replaces the connection.
        if self.stalls.fetch_add(1, Relaxed).wrapping_add(1) != STALLS_TO_RECYCLE {
            return;
        }
        match (self.reopen)(&slot.conn) {
            Ok(conn) => {
                let next = Arc::new(Slot { generation: generation.wrapping_add(1), conn });
                let previous = self.slot.compare_and_swap(&slot, next);
                if Arc::ptr_eq(&previous, &slot) {
                    tracing::warn!(
                        backend = %self.name,
                        "cachestack: {STALLS_TO_RECYCLE} requests in a row got no answer; replacing the connection"
                    );
                }
            }
            Err(err) => {
                tracing::warn!(backend = %self.name, error = %err, "cachestack: cannot replace a connection that stopped answering");
            }
        }
        self.stalls.store(0, Relaxed);
    }
}

/// One request on a [`Recycler`]'s connection (see [`Recycler::request`]).
pub(crate) struct Request<'a, C: Clone> {
    recycler: &'a Recycler<C>,
    generation: u64,
    /// The connection to send the request on.
    pub conn: C,
    settled: bool,
}

impl<C: Clone> Request<'_, C> {
    /// The server answered (a success, or an error of its own): the connection works.
    pub fn answered(mut self) {
        self.settled = true;
        self.recycler.answered(self.generation);
    }

    /// No answer came in time.
    pub fn stalled(mut self) {
        self.settled = true;
        self.recycler.stalled(self.generation);
    }

    /// Failed in a way that says nothing about a half-open connection (refused, reset: the
    /// client library reconnects by itself).
    pub fn failed(mut self) {
        self.settled = true;
    }
}

impl<C: Clone> Drop for Request<'_, C> {
    fn drop(&mut self) {
        if !self.settled {
            // Dropped while waiting: the caller (or the Timeout layer) gave up on it.
            self.recycler.stalled(self.generation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn counting() -> (Recycler<usize>, Arc<AtomicUsize>) {
        let opened = Arc::new(AtomicUsize::new(0));
        let count = opened.clone();
        let recycler = Recycler::new("test", 0, move |old: &usize| {
            count.fetch_add(1, Relaxed);
            Ok(old + 1)
        });
        (recycler, opened)
    }

    #[test]
    fn stalls_in_a_row_replace_the_connection_once() {
        let (recycler, opened) = counting();
        recycler.request().stalled();
        assert_eq!(recycler.current(), 0, "one stall is not enough");
        // Two requests in flight on the same connection, both dropped (cut off by a timeout).
        let (a, b, c) = (recycler.request(), recycler.request(), recycler.request());
        drop(a);
        assert_eq!(recycler.current(), 1, "the second stall in a row replaces it");
        drop(b);
        c.stalled();
        assert_eq!(recycler.current(), 1, "stalls on the replaced connection do not count");
        assert_eq!((opened.load(Relaxed), recycler.replacements()), (1, 1));
    }

    #[test]
    fn an_answer_resets_the_count() {
        let (recycler, opened) = counting();
        for _ in 0..5 {
            recycler.request().stalled();
            recycler.request().answered();
        }
        recycler.request().failed();
        assert_eq!((recycler.current(), opened.load(Relaxed)), (0, 0));
    }

    #[test]
    fn a_failed_reopen_keeps_the_connection_and_tries_again_later() {
        let recycler = Recycler::new("test", 7u8, |_: &u8| Err(crate::Error::config("no")));
        for _ in 0..4 {
            recycler.request().stalled();
        }
        assert_eq!((recycler.current(), recycler.replacements()), (7, 0));
    }
}
