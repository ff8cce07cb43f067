//! One memcached server: its pool of connections, its health and its namespace generation.
//!
//! ## Connections
//!
//! memcache-async speaks the protocol over one stream and nothing more. Each server gets a
//! `deadpool::managed` pool of such streams (at most `pool_size`), each a `TcpStream` with
//! `TCP_NODELAY` set (without it Nagle's algorithm holds back the small writes of a request).
//! A connection is only ever returned to use if its last request completed: a request cut short
//! (an error, or a caller's timeout that dropped the future mid-response) leaves it marked
//! unclean, and the pool discards it instead of reading a stale reply on the next request. The
//! next request opens a fresh connection: that is the reconnect. A request that finds its pooled
//! connection closed (the server restarted, an idle connection was dropped on the way) retires the
//! server's other pooled connections and runs once more on a fresh one, so a quick restart costs
//! the callers nothing.
//!
//! Connections are opened on cachestack's own runtime ([`crate::rt::handle`]) and timers are
//! created there too, so the backend works from any runtime (or a caller's runtime without timers
//! or I/O enabled), and a synchronous caller blocking a current-thread runtime never stalls it.
//!
//! ## Health
//!
//! A connection failure (refused or timed-out connect, a fresh connection reset or closed), or
//! three request timeouts in a row, marks the server down: every connection opened before is retired (an epoch
//! counter), and requests for its keys fail at once (a miss in silent mode, or the next server
//! with failover) instead of each waiting for a timeout. After `retry_interval` one request is
//! let through as a probe; its success brings the server back.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::sync::atomic::{
    AtomicU32, AtomicU64, Ordering::AcqRel, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use deadpool::managed::{self, Metrics, Pool, PoolError, RecycleError, RecycleResult};
use memcache_async::ascii::Protocol;
use tokio::io::BufWriter;
use tokio::net::TcpStream;
use tokio::runtime::Handle;

use crate::error::Error;

/// Request timeouts in a row that mark a server down.
const TIMEOUTS_TO_MARK_DOWN: u32 = 3;

/// The stream under memcache-async. It writes a command in several pieces (`get`, then a space
/// and a key per key...) and flushes at the end: buffering the writes turns each command into one
/// TCP segment, which TCP_NODELAY would otherwise send piece by piece.
type Wire = BufWriter<TcpStream>;

/// A pooled connection.
pub(crate) struct Conn {
    proto: Protocol<Wire>,
    /// The server's epoch when this connection was opened.
    epoch: u64,
    /// False while a request is in flight: a connection dropped in that state is discarded.
    clean: bool,
    /// True once a request has run on this connection.
    used: bool,
}

/// The health of one server, shared with its pool manager.
#[derive(Debug)]
struct Health {
    addr: String,
    base: Instant,
    /// 0: up. Otherwise the time (ms since `base`, plus one) before which requests fail fast.
    down_until_ms: AtomicU64,
    /// Bumped on every failure: connections from an older epoch are discarded.
    epoch: AtomicU64,
    timeouts_in_row: AtomicU32,
    retry_interval: Duration,
}

impl Health {
    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64 + 1
    }

    fn is_up(&self) -> bool {
        self.down_until_ms.load(Acquire) == 0
    }

    /// Ok when a request may go to this server: it is up, or it is down and this caller won the
    /// right to probe it. Err carries the time until the next probe.
    fn admit(&self) -> Result<(), Duration> {
        let until = self.down_until_ms.load(Acquire);
        if until == 0 {
            return Ok(());
        }
        let now = self.now_ms();
        if now < until {
            return Err(Duration::from_millis(until - now));
        }
        let next = now + self.retry_interval.as_millis().max(1) as u64;
        match self.down_until_ms.compare_exchange(until, next, AcqRel, Acquire) {
            Ok(_) => Ok(()),
            Err(_) => Err(self.retry_interval),
        }
    }

    fn mark_down(&self, why: &dyn fmt::Display) {
        self.epoch.fetch_add(1, AcqRel);
        let until = self.now_ms() + self.retry_interval.as_millis().max(1) as u64;
        if self.down_until_ms.swap(until, AcqRel) == 0 {
            tracing::warn!(server = %self.addr, error = %why, retry_in = ?self.retry_interval, "cachestack: memcached server marked down");
        }
    }

    fn mark_up(&self) {
        self.timeouts_in_row.store(0, Relaxed);
        if self.down_until_ms.load(Acquire) != 0 && self.down_until_ms.swap(0, AcqRel) != 0 {
            tracing::info!(server = %self.addr, "cachestack: memcached server is back");
        }
    }

    fn record_timeout(&self, after: Duration) {
        if self.timeouts_in_row.fetch_add(1, Relaxed) + 1 >= TIMEOUTS_TO_MARK_DOWN {
            self.timeouts_in_row.store(0, Relaxed);
            self.mark_down(&format_args!("{TIMEOUTS_TO_MARK_DOWN} requests in a row timed out after {after:?}"));
        }
    }
}

/// Opens and vets connections for one server's pool.
struct ConnManager {
    health: Arc<Health>,
    connect_timeout: Duration,
    rt: Handle,
}

impl fmt::Debug for ConnManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnManager").field("server", &self.health.addr).finish()
    }
}

impl managed::Manager for ConnManager {
    type Type = Conn;
    type Error = io::Error;

    async fn create(&self) -> io::Result<Conn> {
        let health = self.health.clone();
        let epoch = health.epoch.load(Acquire);
        let connect_timeout = self.connect_timeout;
        // Connect on cachestack's runtime: the socket is registered with its reactor, which keeps
        // running whatever the caller's runtime does. A failure marks the server down even when
        // the caller gave up waiting.
        let connecting = self.rt.spawn(async move {
            let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(health.addr.as_str())).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    health.mark_down(&err);
                    return Err(err);
                }
                Err(_) => {
                    let err = io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connecting to {} timed out after {connect_timeout:?}", health.addr),
                    );
                    health.mark_down(&err);
                    return Err(err);
                }
            };
            stream.set_nodelay(true)?;
            Ok(stream)
        });
        let stream = connecting.await.map_err(io::Error::other)??;
        Ok(Conn { proto: Protocol::new(BufWriter::new(stream)), epoch, clean: true, used: false })
    }

    async fn recycle(&self, conn: &mut Conn, _: &Metrics) -> RecycleResult<io::Error> {
        if !conn.clean {
            return Err(RecycleError::message("a request on this connection did not complete"));
        }
        if conn.epoch != self.health.epoch.load(Acquire) {
            return Err(RecycleError::message("connection opened before the server failed"));
        }
        Ok(())
    }
}

/// One request on a connection. Implementations leave the connection in a known state when they
/// return `Ok` (including "not found" and "already exists" answers).
pub(crate) trait Op: Sync {
    type Out: Send;
    fn run(&self, proto: &mut Protocol<Wire>) -> impl Future<Output = io::Result<Self::Out>> + Send;
}

/// `get k1 k2 ...`: one multi-get; absent keys are absent from the map.
pub(crate) struct Get<'a>(pub &'a [&'a str]);

impl Op for Get<'_> {
    type Out = HashMap<String, Vec<u8>>;
    async fn run(&self, proto: &mut Protocol<Wire>) -> io::Result<Self::Out> {
        proto.get_multi(self.0).await
    }
}

/// `set` of each item (memcache-async sends them `noreply`), then `version` as a barrier: when its
/// answer arrives memcached has processed every set before it on this connection, so a read on
/// any other connection sees them.
pub(crate) struct Store<'a>(pub &'a [(&'a str, &'a [u8], u32)]);

impl Op for Store<'_> {
    type Out = ();
    async fn run(&self, proto: &mut Protocol<Wire>) -> io::Result<()> {
        for (key, value, exptime) in self.0 {
            proto.set(key, value, *exptime).await?;
        }
        proto.version().await.map(drop)
    }
}

/// `delete` of each key (`noreply`), then the `version` barrier.
pub(crate) struct Remove<'a>(pub &'a [&'a str]);

impl Op for Remove<'_> {
    type Out = ();
    async fn run(&self, proto: &mut Protocol<Wire>) -> io::Result<()> {
        for key in self.0 {
            proto.delete(key).await?;
        }
        proto.version().await.map(drop)
    }
}

/// `add` with no expiry: true if stored, false if the key already existed.
pub(crate) struct Add<'a>(pub &'a str, pub &'a [u8]);

impl Op for Add<'_> {
    type Out = bool;
    async fn run(&self, proto: &mut Protocol<Wire>) -> io::Result<bool> {
        match proto.add(self.0, self.1, 0).await {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(err) => Err(err),
        }
    }
}

/// `version`: the server's version string (a ping).
pub(crate) struct Version;

impl Op for Version {
    type Out = String;
    async fn run(&self, proto: &mut Protocol<Wire>) -> io::Result<String> {
        proto.version().await
    }
}

enum Failure {
    Connect(io::Error),
    Io(io::Error),
}

/// Errors that mean the connection (and probably the server) is gone.
fn is_connection_error(err: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        err.kind(),
        ConnectionRefused | ConnectionReset | ConnectionAborted | NotConnected | BrokenPipe | UnexpectedEof | TimedOut
    )
}

/// One memcached server of a backend.
pub(crate) struct Server {
    health: Arc<Health>,
    pool: Pool<ConnManager>,
    /// Seed of this server's rendezvous scores.
    seed: u64,
    /// The namespace generation last seen on this server, and when (ms since `health.base`,
    /// 0: unknown).
    gen_value: AtomicU64,
    gen_seen_ms: AtomicU64,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server").field("addr", &self.health.addr).field("up", &self.health.is_up()).finish()
    }
}

impl Server {
    pub fn new(
        addr: String,
        pool_size: usize,
        connect_timeout: Duration,
        retry_interval: Duration,
        rt: Handle,
    ) -> crate::Result<Self> {
        let seed = xxhash_rust::xxh3::xxh3_64(addr.as_bytes());
        let health = Arc::new(Health {
            addr,
            base: Instant::now(),
            down_until_ms: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            timeouts_in_row: AtomicU32::new(0),
            retry_interval,
        });
        let manager = ConnManager { health: health.clone(), connect_timeout, rt };
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .build()
            .map_err(|e| Error::config(format!("memcached: cannot build the connection pool: {e}")))?;
        Ok(Server { health, pool, seed, gen_value: AtomicU64::new(0), gen_seen_ms: AtomicU64::new(0) })
    }

    pub fn addr(&self) -> &str {
        &self.health.addr
    }

    /// This server's rendezvous score for a wire key (highest wins).
    #[inline]
    pub fn score(&self, wire: &str) -> u64 {
        xxhash_rust::xxh3::xxh3_64_with_seed(wire.as_bytes(), self.seed)
    }

    /// True when a request may go to this server now (see [`Health::admit`]).
    pub fn admit(&self) -> bool {
        self.health.admit().is_ok()
    }

    /// The error for a request refused because this server is marked down.
    pub fn down_error(&self, backend: &str) -> Error {
        let until = self.health.down_until_ms.load(Acquire);
        let retry_in = Duration::from_millis(until.saturating_sub(self.health.now_ms()));
        Error::BackendUnavailable {
            backend: backend.to_string(),
            source: format!(
                "memcached server {} is marked down after a failure; next attempt in {retry_in:?}",
                self.health.addr
            )
            .into(),
        }
    }

    /// Runs one request, bounded by `timeout` (pool wait, connect and response together).
    pub async fn exec<O: Op>(&self, backend: &str, op: O, timeout: Duration, rt: &Handle) -> crate::Result<O::Out> {
        let request = async {
            let mut retried = false;
            loop {
                let mut conn = self.pool.get().await.map_err(|err| match err {
                    PoolError::Backend(err) => Failure::Connect(err),
                    other => Failure::Connect(io::Error::other(other.to_string())),
                })?;
                let reused = std::mem::replace(&mut conn.used, true);
                conn.clean = false;
                match op.run(&mut conn.proto).await {
                    Ok(out) => {
                        conn.clean = true;
                        return Ok(out);
                    }
                    // A pooled connection found closed (the server restarted, or something on the
                    // way dropped an idle connection): retire the server's other idle connections,
                    // which are likely closed too, and try once more on a fresh one. Every request
                    // here can safely run twice.
                    Err(err) if reused && !retried && is_connection_error(&err) => {
                        tracing::debug!(server = %self.health.addr, error = %err, "cachestack: pooled memcached connection was closed; reconnecting");
                        self.health.epoch.fetch_add(1, AcqRel);
                        retried = true;
                    }
                    Err(err) => return Err(Failure::Io(err)),
                }
            }
        };
        // The timer belongs to cachestack's runtime, whatever runtime polls this future.
        let timed = {
            let _guard = rt.enter();
            tokio::time::timeout(timeout, request)
        };
        match timed.await {
            Ok(Ok(out)) => {
                self.health.mark_up();
                Ok(out)
            }
            Ok(Err(Failure::Connect(err))) => Err(Error::BackendUnavailable {
                backend: backend.to_string(),
                source: format!("cannot connect to memcached server {}: {err}", self.health.addr).into(),
            }),
            Ok(Err(Failure::Io(err))) if is_connection_error(&err) => {
                self.health.mark_down(&err);
                Err(Error::BackendUnavailable {
                    backend: backend.to_string(),
                    source: format!("connection to memcached server {} failed: {err}", self.health.addr).into(),
                })
            }
            Ok(Err(Failure::Io(err))) => Err(Error::Generic {
                backend: backend.to_string(),
                source: format!("memcached server {}: {err}", self.health.addr).into(),
            }),
            Err(_elapsed) => {
                self.health.record_timeout(timeout);
                Err(Error::Timeout { backend: backend.to_string(), after: timeout })
            }
        }
    }

    /// The generation last seen on this server, if seen within `max_age`.
    pub fn cached_gen(&self, max_age: Duration) -> Option<u64> {
        let seen = self.gen_seen_ms.load(Acquire);
        if seen == 0 || self.health.now_ms().saturating_sub(seen) > max_age.as_millis() as u64 {
            return None;
        }
        Some(self.gen_value.load(Acquire))
    }

    /// Records the generation just read from this server (`None`: it has none).
    pub fn remember_gen(&self, gen: Option<u64>) {
        match gen {
            Some(gen) => {
                self.gen_value.store(gen, Release);
                self.gen_seen_ms.store(self.health.now_ms(), Release);
            }
            None => self.gen_seen_ms.store(0, Release),
        }
    }

    /// `up` or `down`, with the pool's size, for stats.
    pub fn describe(&self) -> String {
        let status = self.pool.status();
        format!(
            "{}, {} connections ({} idle, max {})",
            if self.health.is_up() { "up" } else { "down" },
            status.size,
            status.available,
            status.max_size
        )
    }

    pub fn is_up(&self) -> bool {
        self.health.is_up()
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

    fn health(retry: Duration) -> Health {
        Health {
            addr: "127.0.0.1:1".into(),
            base: Instant::now(),
            down_until_ms: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            timeouts_in_row: AtomicU32::new(0),
            retry_interval: retry,
        }
    }

    #[test]
    fn a_down_server_fails_fast_until_one_probe_is_let_through() {
        let h = health(Duration::from_secs(3600));
        assert!(h.admit().is_ok());
        h.mark_down(&"refused");
        assert_eq!(h.epoch.load(Relaxed), 1, "connections opened before are retired");
        assert!(!h.is_up());
        assert!(h.admit().is_err(), "requests fail fast during the retry interval");
        h.down_until_ms.store(1, Relaxed); // the interval is over
        assert!(h.admit().is_ok(), "the first caller probes");
        assert!(h.admit().is_err(), "others fail fast while the probe runs");
        h.mark_up();
        assert!(h.is_up());
        assert!(h.admit().is_ok());
    }

    #[test]
    fn repeated_timeouts_mark_a_server_down_and_a_success_resets_the_count() {
        let h = health(Duration::from_secs(60));
        h.record_timeout(Duration::from_secs(1));
        h.record_timeout(Duration::from_secs(1));
        h.mark_up();
        h.record_timeout(Duration::from_secs(1));
        h.record_timeout(Duration::from_secs(1));
        assert!(h.is_up());
        h.record_timeout(Duration::from_secs(1));
        assert!(!h.is_up());
        assert!(h.admit().is_err());
    }

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
