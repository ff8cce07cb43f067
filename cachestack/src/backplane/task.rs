//! The backplane's two tasks: one sends what the outbox holds, one receives and applies; each
//! reconnects after a failure (with a growing pause), and the receiver clears the in-process
//! layers after a lost subscription.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use super::message::{Change, Message};
use super::transport::{Link, Publisher};
use super::Core;
use crate::error::Error;

/// The first pause after a failure; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

fn next_backoff(backoff: Duration) -> Duration {
    (backoff * 2).min(MAX_BACKOFF)
}

impl Core {
    /// Counts a failure and logs it at a bounded rate.
    fn failed(&self, op: &'static str, err: &Error) {
        self.errors.fetch_add(1, Relaxed);
        if let Some(since) = self.log.admit(&self.shown, op, err.kind()) {
            if op == "decode" {
                tracing::warn!(server = %self.shown, channel = %self.channel, error = %err, suppressed_since_last_line = since,
                    "cachestack: backplane message ignored (another program or version on the channel?)");
            } else {
                tracing::warn!(server = %self.shown, channel = %self.channel, op, error = %err, suppressed_since_last_line = since,
                    "cachestack: backplane unavailable; messages are kept and sent when it is back");
            }
        }
    }

    /// Applies one payload received on the channel.
    async fn receive(&self, payload: &str) {
        let message = match Message::decode(payload) {
            Ok(message) => message,
            Err(err) => return self.failed("decode", &err),
        };
        if message.origin == self.origin {
            self.own.fetch_add(1, Relaxed);
            return;
        }
        self.received.fetch_add(1, Relaxed);
        for receiver in self.live() {
            if receiver.cache_name() == message.cache {
                receiver.apply(&message.change).await;
            }
        }
    }

    /// After a lost subscription: every attached cache clears its in-process layers.
    async fn recover(&self) {
        self.recovery_clears.fetch_add(1, Relaxed);
        if let Some(since) = self.log.admit(&self.shown, "recover", "recovery") {
            tracing::warn!(server = %self.shown, channel = %self.channel, recoveries_not_logged = since,
                "cachestack: backplane subscription restored after a loss; in-process cache layers cleared (messages may have been missed)");
        }
        for receiver in self.live() {
            receiver.apply(&Change::Clear).await;
        }
    }
}

/// Receives until the subscription fails, then subscribes again; after any failure, the first
/// subscription that succeeds clears the in-process layers (messages may have been missed).
pub(super) async fn subscribe(core: Arc<Core>, link: Arc<Link>) {
    let mut suspect = false;
    let mut connected_before = false;
    let mut backoff = MIN_BACKOFF;
    loop {
        match link.subscriber().await {
            Ok(mut subscriber) => {
                core.subscribed.store(true, Relaxed);
                if connected_before {
                    core.reconnects.fetch_add(1, Relaxed);
                }
                if suspect {
                    core.recover().await;
                }
                connected_before = true;
                backoff = MIN_BACKOFF;
                let err = loop {
                    match link.next(&mut *subscriber).await {
                        Ok(payload) => core.receive(&payload).await,
                        Err(err) => break err,
                    }
                };
                core.subscribed.store(false, Relaxed);
                core.failed("subscribe", &err);
            }
            Err(err) => core.failed("subscribe", &err),
        }
        suspect = true;
        tokio::time::sleep(backoff).await;
        backoff = next_backoff(backoff);
    }
}

/// Sends what the outbox holds; on a failure puts it back, pauses and connects again.
pub(super) async fn publish(core: Arc<Core>, link: Arc<Link>) {
    let mut connection: Option<Box<dyn Publisher>> = None;
    let mut backoff = MIN_BACKOFF;
    loop {
        let batch = core.outbox.take();
        if batch.is_empty() {
            core.outbox.ready.notified().await;
            continue;
        }
        let conn = match &mut connection {
            Some(conn) => conn,
            None => match link.publisher().await {
                Ok(conn) => connection.insert(conn),
                Err(err) => {
                    core.failed("publish", &err);
                    core.outbox.put_back(batch);
                    tokio::time::sleep(backoff).await;
                    backoff = next_backoff(backoff);
                    continue;
                }
            },
        };
        match send_all(&core, &link, &mut **conn, batch).await {
            Ok(()) => backoff = MIN_BACKOFF,
            Err((err, unsent)) => {
                core.failed("publish", &err);
                core.outbox.put_back(unsent);
                connection = None;
                tokio::time::sleep(backoff).await;
                backoff = next_backoff(backoff);
            }
        }
    }
}

/// Sends `batch` in order; on a failure, the error and the messages not (or not wholly) sent.
async fn send_all(
    core: &Core,
    link: &Link,
    conn: &mut dyn Publisher,
    batch: Vec<Message>,
) -> Result<(), (Error, Vec<Message>)> {
    let max = link.max_payload();
    let mut messages = batch.into_iter();
    while let Some(mut message) = messages.next() {
        message.origin = core.origin;
        for payload in message.encode_within(max) {
            if let Err(err) = link.publish(conn, &payload).await {
                // A part already sent is sent again: an eviction is idempotent.
                return Err((err, std::iter::once(message).chain(messages).collect()));
            }
        }
        core.sent.fetch_add(1, Relaxed);
        core.outbox.sent_one();
    }
    Ok(())
}
