//! The connection to Redis: opening it (single server, cluster, TLS), sending commands and
//! pipelines, mapping redis-rs errors to cachestack's, and grouping keys by hash slot.
//!
//! Every command goes through the store's [`Recycler`]: redis-rs reconnects by itself when a
//! connection breaks, but not when it merely stops answering (a response timeout leaves the
//! connection in place), so after a silent failover every command would time out on the dead
//! connection until the kernel gives up on it. Requests that get no answer in a row make the
//! recycler open a new connection; TCP keepalive and `TCP_USER_TIMEOUT` let the kernel notice a
//! dead peer within seconds as well.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::{ClusterClientBuilder, ClusterConfig};
use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::{RoutingInfo, Slot};
use ::redis::io::tcp::TcpSettings;
use ::redis::{
    Cmd, ErrorKind, FromRedisValue, IntoConnectionInfo, Pipeline, RedisError, RedisResult, ServerErrorKind,
    Value as Reply,
};

use crate::error::{Error, Result};
use crate::store::recycle::{self, Recycler, Request};

use super::config::{RedisConfig, ServerUrl};
use super::Inner;

/// Keys per pipeline in bulk operations (larger batches are split and sent concurrently).
const MAX_KEYS_PER_PIPELINE: usize = 500;

#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Whether the server answered the last operation: shown as the `connected` detail of stats.
/// Starts unknown (0) until an operation reaches the server or fails to.
#[derive(Debug, Default)]
pub(super) struct Link(AtomicU8);

impl Link {
    const UP: u8 = 1;
    const DOWN: u8 = 2;

    /// Records an answer; true if the link was not known to be up before (a (re)connection).
    pub(super) fn up(&self) -> bool {
        self.0.swap(Self::UP, Ordering::Relaxed) != Self::UP
    }

    /// Records that the server could not be reached.
    pub(super) fn down(&self) {
        self.0.store(Self::DOWN, Ordering::Relaxed);
    }

    /// `true`, `false`, or `not yet` (no operation has reached the server yet).
    pub(super) fn label(&self) -> &'static str {
        match self.0.load(Ordering::Relaxed) {
            Self::UP => "true",
            Self::DOWN => "false",
            _ => "not yet",
        }
    }
}

impl Inner {
    pub(super) fn map_err(&self, err: RedisError) -> Error {
        let backend = self.config.settings.name.clone();
        if err.is_timeout() {
            return Error::Timeout { backend, after: self.config.timeouts.operation };
        }
        let unavailable = err.is_io_error()
            || err.is_connection_refusal()
            || err.is_connection_dropped()
            || err.is_unrecoverable_error()
            || matches!(
                err.kind(),
                ErrorKind::ClusterConnectionNotFound
                    | ErrorKind::Server(
                        ServerErrorKind::BusyLoading
                            | ServerErrorKind::TryAgain
                            | ServerErrorKind::ClusterDown
                            | ServerErrorKind::MasterDown
                    )
            );
        if unavailable {
            Error::BackendUnavailable { backend, source: Box::new(err) }
        } else {
            Error::Generic { backend, source: Box::new(err) }
        }
    }

    pub(super) fn generic(&self, message: String) -> Error {
        Error::Generic { backend: self.config.settings.name.clone(), source: message.into() }
    }

    pub(super) fn parse<T: FromRedisValue>(&self, reply: Reply) -> Result<T> {
        ::redis::from_redis_value(reply).map_err(|e| self.generic(format!("unexpected reply from Redis: {e}")))
    }

    pub(super) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T> {
        let mut request = self.conn.request();
        let result = match &mut request.conn {
            Conn::Single(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => cmd.query_async(c).await,
        };
        self.settle(request, result)
    }

    pub(super) async fn query_pipe<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T> {
        let mut request = self.conn.request();
        let result = match &mut request.conn {
            Conn::Single(c) => pipe.query_async(c).await,
            Conn::Cluster(c) => pipe.query_async(c).await,
        };
        self.settle(request, result)
    }

    pub(super) async fn route(&self, cmd: Cmd, routing: RoutingInfo) -> Result<Reply> {
        let mut request = self.conn.request();
        let result = match &mut request.conn {
            Conn::Cluster(c) => c.route_command(cmd, routing).await,
            Conn::Single(c) => cmd.query_async(c).await,
        };
        self.settle(request, result)
    }

    /// Tells the recycler how a request ended, and maps its error.
    fn settle<T>(&self, request: Request<'_, Conn>, result: RedisResult<T>) -> Result<T> {
        match &result {
            Err(err) if err.is_timeout() => request.stalled(),
            // Refused, reset, closed: redis-rs reconnects by itself.
            Err(err) if err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() => {
                request.failed()
            }
            // A reply, or an error the server sent.
            _ => request.answered(),
        }
        result.map_err(|e| self.map_err(e))
    }

    pub(super) fn groups(&self, keys: &[String]) -> Vec<Vec<usize>> {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.groups_of(&keys)
    }

    /// Indices of `keys` grouped so that each group is one pipeline: by hash slot on a cluster
    /// (a multi-key command or pipeline never spans slots), all together on a single server; and
    /// at most [`MAX_KEYS_PER_PIPELINE`] keys a group.
    pub(super) fn groups_of(&self, keys: &[&str]) -> Vec<Vec<usize>> {
        let groups: Vec<Vec<usize>> = match self.server.cluster {
            false => vec![(0..keys.len()).collect()],
            true => {
                let mut by_slot: HashMap<Slot, Vec<usize>> = HashMap::new();
                for (i, key) in keys.iter().enumerate() {
                    by_slot.entry(Slot::for_key(key.as_bytes())).or_default().push(i);
                }
                by_slot.into_values().collect()
            }
        };
        groups
            .into_iter()
            .flat_map(|g| g.chunks(MAX_KEYS_PER_PIPELINE).map(<[usize]>::to_vec).collect::<Vec<_>>())
            .collect()
    }
}

/// The store's connection, replaced when it stops answering: built lazily now, and again (as
/// lazily) each time the recycler gives up on it.
pub(super) fn recycled_connection(
    server: &ServerUrl,
    config: &RedisConfig,
    rt: &tokio::runtime::Handle,
) -> Result<Recycler<Conn>> {
    let conn = open_connection(server, config, rt)?;
    let (server, config, rt) = (server.clone(), config.clone(), rt.clone());
    Ok(Recycler::new(&config.settings.name.clone(), conn, move |_old| open_connection(&server, &config, &rt)))
}

/// Keepalive probes on idle connections and, on Linux, `TCP_USER_TIMEOUT` on busy ones: the
/// kernel reports a dead peer in seconds rather than after minutes of retransmissions.
fn tcp_settings() -> TcpSettings {
    let settings = TcpSettings::default().set_keepalive(recycle::keepalive());
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    let settings = settings.set_user_timeout(recycle::USER_TIMEOUT);
    settings
}

/// Builds the (lazy) connection on cachestack's runtime, so that its tasks live there.
fn open_connection(server: &ServerUrl, config: &RedisConfig, rt: &tokio::runtime::Handle) -> Result<Conn> {
    let config_error = |e: RedisError| Error::config(format!("redis URL `{}`: {e}", server.display));
    #[cfg(feature = "redis-tls")]
    let certs = tls_certificates(server, config)?;
    #[cfg(not(feature = "redis-tls"))]
    refuse_tls(server)?;
    let _entered = rt.enter();
    if server.cluster {
        let builder = ClusterClientBuilder::new(server.nodes.clone())
            .connection_timeout(config.timeouts.connect)
            .response_timeout(config.timeouts.operation)
            .retries(3)
            .min_retry_wait(10)
            .max_retry_wait(200)
            .tcp_settings(tcp_settings());
        #[cfg(feature = "redis-tls")]
        let builder = match certs {
            Some(certs) => builder.certs(certs),
            None => builder,
        };
        let client = builder.build().map_err(config_error)?;
        let cluster_config = ClusterConfig::new()
            .set_connection_timeout(config.timeouts.connect)
            .set_response_timeout(config.timeouts.operation);
        Ok(Conn::Cluster(client.get_pending_async_connection_with_config(cluster_config)))
    } else {
        let node = server.nodes.first().ok_or_else(|| Error::config("redis: no host given"))?;
        let node = node.as_str().into_connection_info().map_err(config_error)?.set_tcp_settings(tcp_settings());
        #[cfg(feature = "redis-tls")]
        let client = match certs {
            Some(certs) => ::redis::Client::build_with_tls(node, certs),
            None => ::redis::Client::open(node),
        };
        #[cfg(not(feature = "redis-tls"))]
        let client = ::redis::Client::open(node);
        let client = client.map_err(config_error)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeouts.connect))
            .set_response_timeout(Some(config.timeouts.operation))
            // A failed reconnection is retried once after a short pause, then the next operation
            // starts a new one: a restarted server is picked up within a fraction of a second.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(client, manager_config).map_err(config_error)?;
        Ok(Conn::Single(manager))
    }
}

/// Reads the TLS files of a `rediss://` server.
#[cfg(feature = "redis-tls")]
fn tls_certificates(server: &ServerUrl, config: &RedisConfig) -> Result<Option<::redis::TlsCertificates>> {
    let tls = &config.tls;
    let any_file = tls.ca_file.is_some() || tls.client_cert_file.is_some();
    if !server.tls {
        return Ok(None);
    }
    // rustls needs a process-wide crypto provider; install ring's unless the application chose one.
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    if !any_file {
        return Ok(None);
    }
    let read = |what: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| Error::config(format!("redis TLS: cannot read the {what} file {}: {e}", path.display())))
    };
    let root_cert = tls.ca_file.as_deref().map(|p| read("CA certificate", p)).transpose()?;
    let client_tls = match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(cert), Some(key)) => Some(::redis::ClientTlsConfig {
            client_cert: read("client certificate", cert)?,
            client_key: read("client key", key)?,
        }),
        _ => None,
    };
    Ok(Some(::redis::TlsCertificates { client_tls, root_cert }))
}

#[cfg(not(feature = "redis-tls"))]
fn refuse_tls(server: &ServerUrl) -> Result<()> {
    if server.tls {
        let scheme = if server.cluster { "rediss+cluster" } else { "rediss" };
        return Err(Error::FeatureDisabled { scheme: scheme.into(), feature: "redis-tls" });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_notice_a_dead_peer_within_seconds() {
        let settings = tcp_settings();
        assert!(settings.keepalive().is_some(), "keepalive probes idle connections");
        #[cfg(target_os = "linux")]
        assert_eq!(settings.user_timeout(), Some(recycle::USER_TIMEOUT));
    }
}
