//! Redis pub/sub: `PUBLISH` on a multiplexed connection, `SUBSCRIBE` on a dedicated one.

use async_trait::async_trait;
use futures_util::StreamExt;

use super::transport::{unavailable, Publisher, Subscriber, Transport};
use crate::error::Result;

/// Largest payload sent: a message stays small (a bigger one is split or becomes a clear).
const MAX_PAYLOAD: usize = 64 * 1024;

pub(super) struct RedisTransport {
    client: redis::Client,
}

impl RedisTransport {
    /// The transport to the server of `url` (`shown`: the URL as errors show it).
    pub(super) fn new(url: &str, shown: &str) -> Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| crate::error::Error::config(format!("backplane URL `{shown}`: {e}")))?;
        Ok(RedisTransport { client })
    }
}

#[async_trait]
impl Transport for RedisTransport {
    fn max_payload(&self) -> usize {
        MAX_PAYLOAD
    }

    async fn publisher(&self, channel: &str) -> Result<Box<dyn Publisher>> {
        let conn = self.client.get_multiplexed_async_connection().await.map_err(unavailable)?;
        Ok(Box::new(RedisPublisher { conn, channel: channel.to_owned() }))
    }

    async fn subscriber(&self, channel: &str) -> Result<Box<dyn Subscriber>> {
        let mut pubsub = self.client.get_async_pubsub().await.map_err(unavailable)?;
        pubsub.subscribe(channel).await.map_err(unavailable)?;
        Ok(Box::new(RedisSubscriber { pubsub }))
    }
}

struct RedisPublisher {
    conn: redis::aio::MultiplexedConnection,
    channel: String,
}

#[async_trait]
impl Publisher for RedisPublisher {
    async fn publish(&mut self, payload: &str) -> Result<()> {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(&self.channel).arg(payload);
        cmd.query_async::<i64>(&mut self.conn).await.map(drop).map_err(unavailable)
    }
}

struct RedisSubscriber {
    pubsub: redis::aio::PubSub,
}

#[async_trait]
impl Subscriber for RedisSubscriber {
    async fn recv(&mut self) -> Result<Option<String>> {
        match self.pubsub.on_message().next().await {
            // Not text: not ours; skipped (the decoder would reject it anyway).
            Some(message) => Ok(message.get_payload::<String>().ok()),
            None => Err(unavailable("the subscription's connection was closed")),
        }
    }

    async fn ping(&mut self) -> Result<()> {
        self.pubsub.ping::<String>().await.map(drop).map_err(unavailable)
    }
}
