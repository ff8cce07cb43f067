//! Redis pub/sub: `PUBLISH` on a multiplexed connection, `SUBSCRIBE` on a dedicated one.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;

use super::transport::{unavailable, within, Publisher, Subscriber, Transport, KEEPALIVE};
use crate::error::Result;

/// Largest payload sent: a message stays small (a bigger one is split or becomes a clear).
const MAX_PAYLOAD: usize = 64 * 1024;

pub(super) struct RedisTransport {
    client: redis::Client,
    channel: String,
    shown: String,
    connect_timeout: Duration,
    timeout: Duration,
}

impl RedisTransport {
    pub(super) fn new(
        url: &str,
        shown: String,
        channel: String,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| crate::error::Error::config(format!("backplane URL `{shown}`: {e}")))?;
        Ok(RedisTransport { client, channel, shown, connect_timeout, timeout })
    }
}

#[async_trait]
impl Transport for RedisTransport {
    fn describe(&self) -> &str {
        &self.shown
    }

    fn max_payload(&self) -> usize {
        MAX_PAYLOAD
    }

    async fn publisher(&self) -> Result<Box<dyn Publisher>> {
        let connect = async { self.client.get_multiplexed_async_connection().await.map_err(unavailable) };
        let conn = within(self.connect_timeout, "connect", connect).await?;
        Ok(Box::new(RedisPublisher { conn, channel: self.channel.clone(), timeout: self.timeout }))
    }

    async fn subscriber(&self) -> Result<Box<dyn Subscriber>> {
        let connect = async {
            let mut pubsub = self.client.get_async_pubsub().await.map_err(unavailable)?;
            pubsub.subscribe(&self.channel).await.map_err(unavailable)?;
            Ok(pubsub)
        };
        let pubsub = within(self.connect_timeout, "subscribe", connect).await?;
        Ok(Box::new(RedisSubscriber { pubsub, timeout: self.timeout }))
    }
}

struct RedisPublisher {
    conn: redis::aio::MultiplexedConnection,
    channel: String,
    timeout: Duration,
}

#[async_trait]
impl Publisher for RedisPublisher {
    async fn publish(&mut self, payload: &str) -> Result<()> {
        let publish = async {
            redis::cmd("PUBLISH")
                .arg(&self.channel)
                .arg(payload)
                .query_async::<i64>(&mut self.conn)
                .await
                .map(drop)
                .map_err(unavailable)
        };
        within(self.timeout, "publish", publish).await
    }
}

struct RedisSubscriber {
    pubsub: redis::aio::PubSub,
    timeout: Duration,
}

#[async_trait]
impl Subscriber for RedisSubscriber {
    async fn next(&mut self) -> Result<String> {
        loop {
            let next = tokio::time::timeout(KEEPALIVE, self.pubsub.on_message().next()).await;
            match next {
                Ok(Some(message)) => match message.get_payload::<String>() {
                    Ok(payload) => return Ok(payload),
                    // Not text: not ours; skipped (the decoder would reject it anyway).
                    Err(_) => continue,
                },
                Ok(None) => return Err(unavailable("the subscription's connection was closed")),
                Err(_quiet) => {
                    let ping = async { self.pubsub.ping::<String>().await.map(drop).map_err(unavailable) };
                    within(self.timeout, "ping", ping).await?;
                }
            }
        }
    }
}
