//! What a backplane transport provides: a connection that publishes and a dedicated one that
//! receives, both opened again by the backplane's tasks after a failure.

#![cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))] // without a transport

use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result};

/// Opens the two connections of a backplane.
#[async_trait]
pub(super) trait Transport: Send + Sync + 'static {
    /// The server, credentials redacted, for logs and stats.
    fn describe(&self) -> &str;
    /// The longest payload the transport carries.
    fn max_payload(&self) -> usize;
    /// A connection that publishes.
    async fn publisher(&self) -> Result<Box<dyn Publisher>>;
    /// A dedicated connection, subscribed to the channel when this returns.
    async fn subscriber(&self) -> Result<Box<dyn Subscriber>>;
}

/// Sends payloads on the channel.
#[async_trait]
pub(super) trait Publisher: Send {
    async fn publish(&mut self, payload: &str) -> Result<()>;
}

/// Receives the channel's payloads.
#[async_trait]
pub(super) trait Subscriber: Send {
    /// The next payload; an error when the subscription is lost (the caller reconnects).
    async fn next(&mut self) -> Result<String>;
}

/// How long a subscriber waits for a message before it checks its connection (a ping).
pub(super) const KEEPALIVE: Duration = Duration::from_secs(15);

/// The backplane's error for a transport failure.
pub(super) fn unavailable(what: impl std::fmt::Display) -> Error {
    Error::BackendUnavailable { backend: "backplane".into(), source: what.to_string().into() }
}

/// `future` within `limit`, a timeout being a transport failure.
pub(super) async fn within<T>(
    limit: Duration,
    what: &str,
    future: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| Err(unavailable(format!("{what}: no answer within {limit:?}"))))
}
