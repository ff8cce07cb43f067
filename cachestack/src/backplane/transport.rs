//! What a backplane transport provides (a connection that publishes and a dedicated one that
//! receives, on a channel), and what the backplane does with any transport, written once
//! ([`Link`]): every step bounded by its timeouts, and a quiet subscription checked by a ping.
//! The backplane's tasks open the connections again after a failure.

#![cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))] // without a transport

use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result};

/// Opens the two connections of a backplane on a server.
#[async_trait]
pub(super) trait Transport: Send + Sync + 'static {
    /// The longest payload the transport carries.
    fn max_payload(&self) -> usize;
    /// What the transport calls subscribing and publishing, for errors.
    fn verbs(&self) -> (&'static str, &'static str) {
        ("subscribe", "publish")
    }
    /// A connection that publishes on `channel`.
    async fn publisher(&self, channel: &str) -> Result<Box<dyn Publisher>>;
    /// A dedicated connection, subscribed to `channel` when this returns.
    async fn subscriber(&self, channel: &str) -> Result<Box<dyn Subscriber>>;
}

/// Sends payloads on the channel.
#[async_trait]
pub(super) trait Publisher: Send {
    async fn publish(&mut self, payload: &str) -> Result<()>;
}

/// Receives the channel's payloads.
#[async_trait]
pub(super) trait Subscriber: Send {
    /// The next message: its payload, or `None` for one that is not ours (skipped); an error when
    /// the subscription is lost (the caller reconnects).
    async fn recv(&mut self) -> Result<Option<String>>;
    /// A round trip on the connection, to check it while no message comes.
    async fn ping(&mut self) -> Result<()>;
}

/// How long a subscriber waits for a message before it checks its connection (a ping).
pub(super) const KEEPALIVE: Duration = Duration::from_secs(15);

/// A transport with the backplane's channel and timeouts.
pub(super) struct Link {
    transport: Box<dyn Transport>,
    /// The server, credentials redacted, for logs and stats.
    shown: String,
    channel: String,
    connect_timeout: Duration,
    timeout: Duration,
}

impl Link {
    pub(super) fn new(
        transport: Box<dyn Transport>,
        shown: String,
        channel: String,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Self {
        Link { transport, shown, channel, connect_timeout, timeout }
    }

    /// The server, credentials redacted.
    pub(super) fn describe(&self) -> &str {
        &self.shown
    }

    /// The longest payload the transport carries.
    pub(super) fn max_payload(&self) -> usize {
        self.transport.max_payload()
    }

    /// A connection that publishes, within the connect timeout.
    pub(super) async fn publisher(&self) -> Result<Box<dyn Publisher>> {
        within(self.connect_timeout, "connect", self.transport.publisher(&self.channel)).await
    }

    /// Publishes `payload` on `conn`, within the operation timeout.
    pub(super) async fn publish(&self, conn: &mut dyn Publisher, payload: &str) -> Result<()> {
        within(self.timeout, self.transport.verbs().1, conn.publish(payload)).await
    }

    /// A subscribed connection, within the connect timeout.
    pub(super) async fn subscriber(&self) -> Result<Box<dyn Subscriber>> {
        within(self.connect_timeout, self.transport.verbs().0, self.transport.subscriber(&self.channel)).await
    }

    /// The next payload `subscriber` receives; after [`KEEPALIVE`] without one, a ping (within
    /// the operation timeout) checks the connection. An error when the subscription is lost.
    pub(super) async fn next(&self, subscriber: &mut dyn Subscriber) -> Result<String> {
        loop {
            match tokio::time::timeout(KEEPALIVE, subscriber.recv()).await {
                Ok(Ok(Some(payload))) => return Ok(payload),
                Ok(Ok(None)) => continue,
                Ok(Err(err)) => return Err(err),
                Err(_quiet) => within(self.timeout, "ping", subscriber.ping()).await?,
            }
        }
    }
}

/// The backplane's error for a transport failure.
pub(super) fn unavailable(what: impl std::fmt::Display) -> Error {
    Error::BackendUnavailable { backend: "backplane".into(), source: what.to_string().into() }
}

/// `future` within `limit`, a timeout being a transport failure.
async fn within<T>(limit: Duration, what: &str, future: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| Err(unavailable(format!("{what}: no answer within {limit:?}"))))
}
