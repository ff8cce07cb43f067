//! The requests the store sends, as owned values: a request moves into the I/O task on
//! cachestack's runtime ([`crate::rt::io`]), so it borrows nothing from the caller.

use std::collections::HashMap;
use std::future::Future;
use std::io;

use memcache_async::ascii::Protocol;
use tokio::io::BufWriter;
use tokio::net::TcpStream;

/// The stream under memcache-async. It writes a command in several pieces (`get`, then a space
/// and a key per key...) and flushes at the end: buffering the writes turns each command into one
/// TCP segment, which TCP_NODELAY would otherwise send piece by piece.
pub(crate) type Wire = BufWriter<TcpStream>;

/// One request on a connection. Implementations leave the connection in a known state when they
/// return `Ok` (including "not found" and "already exists" answers). Every request can safely run
/// twice (a request that found its pooled connection closed is retried once).
pub(crate) trait Op: Send + Sync + 'static {
    type Out: Send + 'static;
    fn run(&self, proto: &mut Protocol<Wire>) -> impl Future<Output = io::Result<Self::Out>> + Send;
}

/// `get k1 k2 ...`: one multi-get; absent keys are absent from the map.
pub(crate) struct Get(pub Vec<String>);

impl Op for Get {
    type Out = HashMap<String, Vec<u8>>;
    async fn run(&self, proto: &mut Protocol<Wire>) -> io::Result<Self::Out> {
        proto.get_multi(&self.0).await
    }
}

/// One item to store: wire key, bytes, memcached exptime.
pub(crate) struct Item {
    pub wire: String,
    pub bytes: Vec<u8>,
    pub exptime: u32,
}

/// `set` of each item (memcache-async sends them `noreply`), then `version` as a barrier: when its
/// answer arrives memcached has processed every set before it on this connection, so a read on
/// any other connection sees them.
pub(crate) struct Store(pub Vec<Item>);

impl Op for Store {
    type Out = ();
    async fn run(&self, proto: &mut Protocol<Wire>) -> io::Result<()> {
        for item in &self.0 {
            proto.set(&item.wire, &item.bytes, item.exptime).await?;
        }
        proto.version().await.map(drop)
    }
}

/// `delete` of each key (`noreply`), then the `version` barrier.
pub(crate) struct Remove(pub Vec<String>);

impl Op for Remove {
    type Out = ();
    async fn run(&self, proto: &mut Protocol<Wire>) -> io::Result<()> {
        for key in &self.0 {
            proto.delete(key).await?;
        }
        proto.version().await.map(drop)
    }
}

/// `add` with no expiry: true if stored, false if the key already existed.
pub(crate) struct Add(pub String, pub Vec<u8>);

impl Op for Add {
    type Out = bool;
    async fn run(&self, proto: &mut Protocol<Wire>) -> io::Result<bool> {
        match proto.add(&self.0, &self.1, 0).await {
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
