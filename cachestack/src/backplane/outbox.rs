//! The messages waiting to be sent: bounded, and on overflow collapsed into a clear of the cache
//! whose message did not fit (an invalidation is idempotent and commutes with the others, so
//! replacing a cache's queued messages by one clear loses nothing but L1 entries).

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use tokio::sync::Notify;

use super::message::{Change, Message};

pub(super) struct Outbox {
    state: Mutex<State>,
    capacity: usize,
    /// Wakes the sending task when something was queued.
    pub(super) ready: Notify,
    /// Messages dropped (collapsed into a clear of their cache).
    pub(super) dropped: AtomicU64,
    /// Wakes [`Outbox::drained`] waiters when the last message taken was sent.
    empty: Notify,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Message>,
    /// Caches whose messages overflowed: one clear each is sent instead.
    collapsed: BTreeSet<String>,
    /// Messages taken by the sending task and not sent yet.
    in_flight: usize,
}

impl Outbox {
    pub(super) fn new(capacity: usize) -> Self {
        Outbox {
            state: Mutex::default(),
            capacity: capacity.max(1),
            ready: Notify::new(),
            dropped: AtomicU64::new(0),
            empty: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `message` (never waits); on overflow the cache's queued messages and this one
    /// become one clear of the cache.
    pub(super) fn push(&self, message: Message) {
        let mut state = self.state();
        self.push_locked(&mut state, message);
        drop(state);
        self.ready.notify_one();
    }

    fn push_locked(&self, state: &mut State, message: Message) {
        if state.collapsed.contains(&message.cache) {
            // A clear of this cache is already due: it covers this message.
            self.dropped.fetch_add(1, Relaxed);
            return;
        }
        if state.queue.len() < self.capacity {
            state.queue.push_back(message);
            return;
        }
        let before = state.queue.len();
        state.queue.retain(|queued| queued.cache != message.cache);
        self.dropped.fetch_add((before - state.queue.len()) as u64 + 1, Relaxed);
        state.collapsed.insert(message.cache);
    }

    /// Everything queued, the clears of collapsed caches first.
    pub(super) fn take(&self) -> Vec<Message> {
        let mut state = self.state();
        let collapsed = std::mem::take(&mut state.collapsed);
        let mut out: Vec<Message> = Vec::with_capacity(collapsed.len() + state.queue.len());
        out.extend(collapsed.into_iter().map(|cache| Message { origin: 0, cache, change: Change::Clear }));
        out.extend(state.queue.drain(..));
        state.in_flight = out.len();
        out
    }

    /// One message taken was sent.
    pub(super) fn sent_one(&self) {
        let mut state = self.state();
        state.in_flight = state.in_flight.saturating_sub(1);
        let empty = state.in_flight == 0 && state.queue.is_empty() && state.collapsed.is_empty();
        drop(state);
        if empty {
            self.empty.notify_waiters();
        }
    }

    /// Returns once nothing is waiting or being sent.
    pub(super) async fn drained(&self) {
        loop {
            let mut notified = std::pin::pin!(self.empty.notified());
            notified.as_mut().enable();
            if self.len() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Puts back messages that could not be sent, ahead of what was queued since (within the
    /// bound: what does not fit collapses as in [`Outbox::push`]).
    pub(super) fn put_back(&self, messages: Vec<Message>) {
        let mut state = self.state();
        state.in_flight = 0;
        let newer: Vec<Message> = state.queue.drain(..).collect();
        for message in messages.into_iter().chain(newer) {
            if message.change == Change::Clear {
                state.queue.retain(|queued| queued.cache != message.cache);
                state.collapsed.insert(message.cache);
            } else {
                self.push_locked(&mut state, message);
            }
        }
    }

    /// Messages waiting or being sent (collapsed clears included).
    pub(super) fn len(&self) -> usize {
        let state = self.state();
        state.queue.len() + state.collapsed.len() + state.in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(cache: &str, key: &str) -> Message {
        Message::new(1, cache, Change::Keys(vec![key.into()]))
    }

    #[test]
    fn overflow_collapses_into_one_clear_of_that_cache() {
        let outbox = Outbox::new(3);
        outbox.push(keys("a", "1"));
        outbox.push(keys("b", "1"));
        outbox.push(keys("a", "2"));
        outbox.push(keys("a", "3")); // full: a's two and this one become a clear of `a`
        outbox.push(keys("a", "4")); // covered by that clear
        assert_eq!(outbox.dropped.load(Relaxed), 4);
        assert_eq!(outbox.len(), 2);
        let taken = outbox.take();
        assert_eq!(taken[0].cache, "a");
        assert_eq!(taken[0].change, Change::Clear);
        assert_eq!(taken[1], keys("b", "1"));
        assert_eq!(outbox.len(), 2, "taken, not sent yet");
        outbox.sent_one();
        outbox.sent_one();
        assert_eq!(outbox.len(), 0);
    }

    #[test]
    fn put_back_keeps_collapsed_clears_and_order() {
        let outbox = Outbox::new(2);
        outbox.push(keys("a", "1"));
        outbox.push(keys("a", "2"));
        outbox.push(keys("a", "3"));
        let taken = outbox.take();
        outbox.push(keys("b", "1"));
        outbox.put_back(taken);
        let again = outbox.take();
        assert_eq!(again.len(), 2);
        assert_eq!((again[0].cache.as_str(), &again[0].change), ("a", &Change::Clear));
        assert_eq!(again[1], keys("b", "1"));
    }

    #[tokio::test]
    async fn drained_waits_for_the_last_message_sent() {
        let outbox = Outbox::new(10);
        outbox.drained().await; // nothing queued
        outbox.push(keys("a", "1"));
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(20), outbox.drained()).await;
        assert!(waiting.is_err(), "a queued message is not drained");
        let taken = outbox.take();
        assert_eq!(taken.len(), 1);
        let (drained, ()) = tokio::join!(outbox.drained(), async { outbox.sent_one() });
        let () = drained;
        assert_eq!(outbox.len(), 0);
    }
}
