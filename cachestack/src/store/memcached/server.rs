//! One memcached server: its pool of connections, its availability and its namespace generation.
//!
//! memcache-async speaks the protocol over one stream and nothing more. Each server gets a
//! `deadpool::managed` pool of such streams (at most `pool_size`), each a `TcpStream` with
//! `TCP_NODELAY` set (without it Nagle's algorithm holds back the small writes of a request).
//! A connection is only ever returned to use if its last request completed: a request cut short
//! (an error, or a timeout or caller that dropped the future mid-response) leaves it marked
//! unclean, and the pool discards it instead of reading a stale reply on the next request. The
//! next request opens a fresh connection: that is the reconnect. A request that finds its pooled
//! connection closed (the server restarted, an idle connection was dropped on the way) retires the
//! server's other pooled connections and runs once more on a fresh one, so a quick restart costs
//! the callers nothing.
//!
//! Requests run through [`crate::rt::io`]: on cachestack's runtime (so connections and timers
//! belong to it, whatever runtime the caller has), and aborted when the caller's future is
//! dropped. Encoding and decoding stay with the caller.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::AcqRel, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool::managed::{self, Metrics, Pool, RecycleError, RecycleResult};
use memcache_async::ascii::Protocol;
use tokio::io::BufWriter;
use tokio::net::TcpStream;

use super::availability::{Availability, InFlight};
use super::ops::{Op, Wire};
use crate::error::Error;

/// A pooled connection.
pub(crate) struct Conn {
    proto: Protocol<Wire>,
    /// The server's connection epoch when this connection was opened.
    epoch: u64,
    /// False while a request is in flight: a connection dropped in that state is discarded.
    clean: bool,
    /// True once a request has run on this connection.
    used: bool,
}

/// Opens and vets connections for one server's pool.
struct ConnManager {
    availability: Arc<Availability>,
    connect_timeout: Duration,
}

impl fmt::Debug for ConnManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnManager").field("server", &self.availability.addr()).finish()
    }
}

impl managed::Manager for ConnManager {
    type Type = Conn;
    type Error = io::Error;

    async fn create(&self) -> io::Result<Conn> {
        let availability = &self.availability;
        let epoch = availability.epoch();
        let connect = TcpStream::connect(availability.addr());
        let stream = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                availability.mark_down(&err);
                return Err(err);
            }
            Err(_) => {
                let err = io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connecting to {} timed out after {:?}", availability.addr(), self.connect_timeout),
                );
                availability.mark_down(&err);
                return Err(err);
            }
        };
        stream.set_nodelay(true)?;
        Ok(Conn { proto: Protocol::new(BufWriter::new(stream)), epoch, clean: true, used: false })
    }

    async fn recycle(&self, conn: &mut Conn, _: &Metrics) -> RecycleResult<io::Error> {
        if !conn.clean {
            return Err(RecycleError::message("a request on this connection did not complete"));
        }
        if conn.epoch != self.availability.epoch() {
            return Err(RecycleError::message("connection opened before the server failed"));
        }
        Ok(())
    }
}

/// Errors that mean the connection (and probably the server) is gone.
fn is_connection_error(err: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        err.kind(),
        ConnectionRefused | ConnectionReset | ConnectionAborted | NotConnected | BrokenPipe | UnexpectedEof | TimedOut
    )
}

/// One memcached server of a store.
pub(crate) struct Server {
    availability: Arc<Availability>,
    pool: Pool<ConnManager>,
    /// Seed of this server's rendezvous scores.
    seed: u64,
    /// The namespace generation last seen on this server, and when (ms on the availability's
    /// clock, 0: unknown).
    gen_value: AtomicU64,
    gen_seen_ms: AtomicU64,
    /// Bumped whenever one of this server's keys is sent to another server (failover) while it
    /// is down: what it still holds may since have been overwritten or deleted elsewhere, so its
    /// namespace generation is renewed before it serves again.
    distrusted: AtomicU64,
    /// The `distrusted` count the last renewed generation covers.
    renewed: AtomicU64,
    /// Bound of one request (pool wait included): every request ends, also those of the
    /// multi-request operations (`clear`, namespace generations) that the Timeout layer does not
    /// bound as a whole.
    request_timeout: Duration,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr()).field("up", &self.is_up()).finish()
    }
}

impl Server {
    pub fn new(
        addr: String,
        pool_size: usize,
        connect_timeout: Duration,
        request_timeout: Duration,
        retry_interval: Duration,
    ) -> crate::Result<Self> {
        let seed = xxhash_rust::xxh3::xxh3_64(addr.as_bytes());
        let availability = Arc::new(Availability::new(addr, retry_interval));
        let manager = ConnManager { availability: availability.clone(), connect_timeout };
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .build()
            .map_err(|e| Error::config(format!("memcached: cannot build the connection pool: {e}")))?;
        Ok(Server {
            availability,
            pool,
            seed,
            gen_value: AtomicU64::new(0),
            gen_seen_ms: AtomicU64::new(0),
            distrusted: AtomicU64::new(0),
            renewed: AtomicU64::new(0),
            request_timeout,
        })
    }

    pub fn addr(&self) -> &str {
        self.availability.addr()
    }

    /// This server's rendezvous score for a wire key (highest wins).
    #[inline]
    pub fn score(&self, wire: &str) -> u64 {
        xxhash_rust::xxh3::xxh3_64_with_seed(wire.as_bytes(), self.seed)
    }

    /// True when a request may go to this server now (see [`Availability::admit`]).
    pub fn admit(&self) -> bool {
        self.availability.admit().is_ok()
    }

    pub fn is_up(&self) -> bool {
        self.availability.is_up()
    }

    /// The error for a request refused because this server is marked down.
    pub fn down_error(&self, backend: &str) -> Error {
        Error::BackendUnavailable {
            backend: backend.to_string(),
            source: format!(
                "memcached server {} is marked down after a failure; next attempt in {:?}",
                self.addr(),
                self.availability.retry_in()
            )
            .into(),
        }
    }

    /// Runs one request on cachestack's runtime; dropping the returned future aborts it.
    pub async fn exec<O: Op>(self: &Arc<Self>, backend: &str, op: O) -> crate::Result<O::Out> {
        let server = self.clone();
        let name = backend.to_owned();
        let limit = self.request_timeout;
        let request = async move { server.run(&name, op).await };
        crate::layer::within(backend, limit, crate::rt::io(backend, request)).await
    }

    async fn run<O: Op>(&self, backend: &str, op: O) -> crate::Result<O::Out> {
        let mut retried = false;
        loop {
            let mut conn = self.pool.get().await.map_err(|err| Error::BackendUnavailable {
                backend: backend.to_string(),
                source: format!("cannot connect to memcached server {}: {err}", self.addr()).into(),
            })?;
            let reused = std::mem::replace(&mut conn.used, true);
            conn.clean = false;
            let flight = InFlight::start(&self.availability);
            let result = op.run(&mut conn.proto).await;
            flight.land();
            match result {
                Ok(out) => {
                    conn.clean = true;
                    self.availability.mark_up();
                    return Ok(out);
                }
                // A pooled connection found closed (the server restarted, or something on the way
                // dropped an idle connection): retire the server's other idle connections, which
                // are likely closed too, and try once more on a fresh one.
                Err(err) if reused && !retried && is_connection_error(&err) => {
                    tracing::debug!(server = %self.addr(), error = %err, "cachestack: pooled memcached connection was closed; reconnecting");
                    self.availability.retire_connections();
                    retried = true;
                }
                Err(err) if is_connection_error(&err) => {
                    self.availability.mark_down(&err);
                    return Err(Error::BackendUnavailable {
                        backend: backend.to_string(),
                        source: format!("connection to memcached server {} failed: {err}", self.addr()).into(),
                    });
                }
                Err(err) => {
                    return Err(Error::Generic {
                        backend: backend.to_string(),
                        source: format!("memcached server {}: {err}", self.addr()).into(),
                    })
                }
            }
        }
    }

    /// The generation last seen on this server, if seen within `max_age`.
    pub fn cached_gen(&self, max_age: Duration) -> Option<u64> {
        let seen = self.gen_seen_ms.load(Acquire);
        let max_age = u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX);
        if seen == 0 || self.availability.now_ms().saturating_sub(seen) > max_age {
            return None;
        }
        Some(self.gen_value.load(Acquire))
    }

    /// Records the generation just read from this server (`None`: it has none).
    pub fn remember_gen(&self, generation: Option<u64>) {
        match generation {
            Some(generation) => {
                self.gen_value.store(generation, Release);
                self.gen_seen_ms.store(self.availability.now_ms(), Release);
            }
            None => self.gen_seen_ms.store(0, Release),
        }
    }

    /// Records that a key of this server was sent to another server.
    pub fn distrust(&self) {
        self.distrusted.fetch_add(1, AcqRel);
    }

    /// `Some(mark)` while this server has not had its generation renewed since it was last
    /// distrusted; pass `mark` to [`Server::trust_again`] once a fresh generation is written.
    pub fn distrust_mark(&self) -> Option<u64> {
        let mark = self.distrusted.load(Acquire);
        (mark != self.renewed.load(Acquire)).then_some(mark)
    }

    /// Records the fresh generation `generation`, written after [`Server::distrust_mark`] returned
    /// `mark`: the server is trusted again, unless distrusted again since.
    pub fn trust_again(&self, mark: u64, generation: u64) {
        self.renewed.fetch_max(mark, AcqRel);
        self.remember_gen(Some(generation));
    }

    /// `up` or `down`, with the pool's size, for stats.
    pub fn describe(&self) -> String {
        let status = self.pool.status();
        format!(
            "{}, {} connections ({} idle, max {})",
            if self.is_up() { "up" } else { "down" },
            status.size,
            status.available,
            status.max_size
        )
    }
}

/// Parses a generation counter as stored (ASCII decimal).
pub(crate) fn parse_gen(bytes: Option<&[u8]>) -> Option<u64> {
    std::str::from_utf8(bytes?).ok()?.trim().parse().ok()
}

/// A generation no one has used: derived from the time, the process and a counter.
pub(crate) fn fresh_generation(salt: &str) -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let mut seed = Vec::with_capacity(32 + salt.len());
    seed.extend_from_slice(&nanos.to_le_bytes());
    seed.extend_from_slice(&std::process::id().to_le_bytes());
    seed.extend_from_slice(&COUNTER.fetch_add(1, Relaxed).to_le_bytes());
    seed.extend_from_slice(salt.as_bytes());
    xxhash_rust::xxh3::xxh3_64(&seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_parse_and_fresh_ones_differ() {
        assert_eq!(parse_gen(Some(b"12345")), Some(12345));
        assert_eq!(parse_gen(Some(b"18446744073709551615")), Some(u64::MAX));
        assert_eq!(parse_gen(Some(b"nope")), None);
        assert_eq!(parse_gen(None), None);
        let a = fresh_generation("x");
        let b = fresh_generation("x");
        assert_ne!(a, b);
    }
}
