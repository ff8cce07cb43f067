//! PostgreSQL LISTEN/NOTIFY: `pg_notify` on one connection, `LISTEN` on a dedicated one.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnection, PgListener};
use sqlx::Connection;

use super::transport::{unavailable, within, Publisher, Subscriber, Transport, KEEPALIVE};
use crate::error::Result;

/// NOTIFY payloads must be shorter than 8000 bytes.
const MAX_PAYLOAD: usize = 7_900;

pub(super) struct PostgresTransport {
    url: String,
    channel: String,
    shown: String,
    connect_timeout: Duration,
    timeout: Duration,
}

impl PostgresTransport {
    pub(super) fn new(
        url: String,
        shown: String,
        channel: String,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Self {
        PostgresTransport { url, channel, shown, connect_timeout, timeout }
    }
}

#[async_trait]
impl Transport for PostgresTransport {
    fn describe(&self) -> &str {
        &self.shown
    }

    fn max_payload(&self) -> usize {
        MAX_PAYLOAD
    }

    async fn publisher(&self) -> Result<Box<dyn Publisher>> {
        let connect = async { PgConnection::connect(&self.url).await.map_err(unavailable) };
        let conn = within(self.connect_timeout, "connect", connect).await?;
        Ok(Box::new(PostgresPublisher { conn, channel: self.channel.clone(), timeout: self.timeout }))
    }

    async fn subscriber(&self) -> Result<Box<dyn Subscriber>> {
        let connect = async {
            let mut listener = PgListener::connect(&self.url).await.map_err(unavailable)?;
            // A lost connection must end `try_recv` at once (`Ok(None)`, then the backplane
            // subscribes again and recovers): by default the listener first connects again, which
            // waits for a stopped server (its pool's 30 s, cut by the keepalive and a failed ping),
            // and the loss went unnoticed for 20 s while the other nodes already saw it.
            listener.eager_reconnect(false);
            listener.listen(&self.channel).await.map_err(unavailable)?;
            Ok(listener)
        };
        let listener = within(self.connect_timeout, "listen", connect).await?;
        Ok(Box::new(PostgresSubscriber { listener, timeout: self.timeout }))
    }
}

struct PostgresPublisher {
    conn: PgConnection,
    channel: String,
    timeout: Duration,
}

#[async_trait]
impl Publisher for PostgresPublisher {
    async fn publish(&mut self, payload: &str) -> Result<()> {
        let notify = async {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(&self.channel)
                .bind(payload)
                .execute(&mut self.conn)
                .await
                .map(drop)
                .map_err(unavailable)
        };
        within(self.timeout, "notify", notify).await
    }
}

struct PostgresSubscriber {
    listener: PgListener,
    timeout: Duration,
}

#[async_trait]
impl Subscriber for PostgresSubscriber {
    async fn next(&mut self) -> Result<String> {
        loop {
            // `try_recv` answers `None` when the connection was lost; the listener would reconnect
            // by itself on the next call, but the notifications sent meanwhile are lost: the
            // backplane reconnects itself instead, and counts and recovers from the loss.
            match tokio::time::timeout(KEEPALIVE, self.listener.try_recv()).await {
                Ok(Ok(Some(notification))) => return Ok(notification.payload().to_owned()),
                Ok(Ok(None)) => return Err(unavailable("the LISTEN connection was closed")),
                Ok(Err(err)) => return Err(unavailable(err)),
                Err(_quiet) => {
                    let ping = async {
                        sqlx::query("SELECT 1").execute(&mut self.listener).await.map(drop).map_err(unavailable)
                    };
                    within(self.timeout, "ping", ping).await?;
                }
            }
        }
    }
}
