//! PostgreSQL LISTEN/NOTIFY: `pg_notify` on one connection, `LISTEN` on a dedicated one.

use async_trait::async_trait;
use sqlx::postgres::{PgConnection, PgListener};
use sqlx::Connection;

use super::transport::{unavailable, Publisher, Subscriber, Transport};
use crate::error::Result;

/// NOTIFY payloads must be shorter than 8000 bytes.
const MAX_PAYLOAD: usize = 7_900;

pub(super) struct PostgresTransport {
    url: String,
}

impl PostgresTransport {
    /// The transport to the server of `url`.
    pub(super) fn new(url: String) -> Self {
        PostgresTransport { url }
    }
}

#[async_trait]
impl Transport for PostgresTransport {
    fn max_payload(&self) -> usize {
        MAX_PAYLOAD
    }

    fn verbs(&self) -> (&'static str, &'static str) {
        ("listen", "notify")
    }

    async fn publisher(&self, channel: &str) -> Result<Box<dyn Publisher>> {
        let conn = PgConnection::connect(&self.url).await.map_err(unavailable)?;
        Ok(Box::new(PostgresPublisher { conn, channel: channel.to_owned() }))
    }

    async fn subscriber(&self, channel: &str) -> Result<Box<dyn Subscriber>> {
        let mut listener = PgListener::connect(&self.url).await.map_err(unavailable)?;
        // A lost connection must end `try_recv` at once (`Ok(None)`, then the backplane
        // subscribes again and recovers): by default the listener first connects again, which
        // waits for a stopped server (its pool's 30 s, cut by the keepalive and a failed ping),
        // and the loss went unnoticed for 20 s while the other nodes already saw it.
        listener.eager_reconnect(false);
        listener.listen(channel).await.map_err(unavailable)?;
        Ok(Box::new(PostgresSubscriber { listener }))
    }
}

struct PostgresPublisher {
    conn: PgConnection,
    channel: String,
}

#[async_trait]
impl Publisher for PostgresPublisher {
    async fn publish(&mut self, payload: &str) -> Result<()> {
        let notify = sqlx::query("SELECT pg_notify($1, $2)").bind(&self.channel).bind(payload);
        notify.execute(&mut self.conn).await.map(drop).map_err(unavailable)
    }
}

struct PostgresSubscriber {
    listener: PgListener,
}

#[async_trait]
impl Subscriber for PostgresSubscriber {
    async fn recv(&mut self) -> Result<Option<String>> {
        // `try_recv` answers `None` when the connection was lost; the listener would reconnect
        // by itself on the next call, but the notifications sent meanwhile are lost: the
        // backplane reconnects itself instead, and counts and recovers from the loss.
        match self.listener.try_recv().await {
            Ok(Some(notification)) => Ok(Some(notification.payload().to_owned())),
            Ok(None) => Err(unavailable("the LISTEN connection was closed")),
            Err(err) => Err(unavailable(err)),
        }
    }

    async fn ping(&mut self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&mut self.listener).await.map(drop).map_err(unavailable)
    }
}
