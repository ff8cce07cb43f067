//! The lock of [`MemcachedStore`] ([`LockOps`]): `add <lock key> <token> <lease>` (only one
//! `add` of an absent key succeeds), with a random token per holder. Renewal and release are
//! compare-and-set rounds against the token: `gets` the lock, and only while it still holds this
//! holder's token, `cas` it with a new expiry (renewal) or with an expiry already past (release,
//! a compare-and-delete: memcached's `delete` cannot be made conditional).
//!
//! Memcached counts expiries in whole seconds: a lease is rounded up to the next second. The lock
//! key is the namespace's wire key of a name no cache key can have (it starts with a control
//! character, so it is hashed), on the server the name routes to.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use memcache_async::ascii::Protocol;

use super::super::ops::{Op, Wire};
use super::super::server::Server;
use super::MemcachedStore;
use crate::error::Result;
use crate::store::{lease_secs, token, LockGuard, LockOps, TokenLease, TokenLock};

/// An absolute Unix time in the past (memcached reads expiries over 30 days as Unix times): an
/// item stored with it expires at once.
const EXPIRED: u32 = 2_592_001;

/// `add` of the lock: true if this holder has it (also when a retried `add` finds its own token).
struct TakeLock {
    wire: String,
    token: String,
    exptime: u32,
}

impl Op for TakeLock {
    type Out = bool;
    async fn run(&self, proto: &mut Protocol<Wire>) -> io::Result<bool> {
        match proto.add(&self.wire, self.token.as_bytes(), self.exptime).await {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                Ok(holds(proto, &self.wire, &self.token).await?.is_some())
            }
            Err(err) => Err(err),
        }
    }
}

/// The lock's CAS id if it holds `token`.
async fn holds(proto: &mut Protocol<Wire>, wire: &str, token: &str) -> io::Result<Option<u64>> {
    match proto.gets_cas(wire).await {
        Ok((bytes, cas)) => Ok((bytes == token.as_bytes()).then_some(cas)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// While the lock holds the token: store it again with `exptime`. True if done.
struct SetLockExpiry {
    wire: String,
    token: String,
    exptime: u32,
}

impl Op for SetLockExpiry {
    type Out = bool;
    async fn run(&self, proto: &mut Protocol<Wire>) -> io::Result<bool> {
        let Some(cas) = holds(proto, &self.wire, &self.token).await? else { return Ok(false) };
        match proto.cas(&self.wire, self.token.as_bytes(), cas, self.exptime).await {
            Ok(stored) => Ok(stored),
            // memcache-async does not recognise memcached's `NOT_FOUND` answer.
            Err(err) if err.kind() == io::ErrorKind::NotFound || err.to_string().starts_with("NOT_FOUND") => Ok(false),
            Err(err) => Err(err),
        }
    }
}

impl MemcachedStore {
    /// The wire key of the lock `name`.
    fn lock_wire(&self, name: &str) -> String {
        self.keys.wire(&format!("\u{1}lock:{name}"))
    }
}

#[async_trait]
impl LockOps for MemcachedStore {
    async fn try_lock(&self, name: &str, lease: Duration) -> Result<Option<Box<dyn LockGuard>>> {
        let wire = self.lock_wire(name);
        let server = self.servers[self.route(&wire)?].clone();
        let token = token();
        let take = TakeLock { wire: wire.clone(), token: token.clone(), exptime: lease_secs(lease) };
        let backend = crate::Backend::name(self).to_owned();
        let taken = server.exec(&backend, take).await?;
        Ok(TokenLock::guard(taken, LockServer { server, backend }, wire, token))
    }
}

/// The server that holds a lock this process took.
struct LockServer {
    server: Arc<Server>,
    backend: String,
}

impl LockServer {
    /// While the lock `wire` holds `token`: stores it again with `exptime`. True if done.
    async fn set_expiry(&self, wire: &str, token: &str, exptime: u32) -> Result<bool> {
        let op = SetLockExpiry { wire: wire.to_owned(), token: token.to_owned(), exptime };
        self.server.exec(&self.backend, op).await
    }
}

#[async_trait]
impl TokenLease for LockServer {
    async fn extend(&self, wire: &str, token: &str, lease: Duration) -> Result<bool> {
        self.set_expiry(wire, token, lease_secs(lease)).await
    }

    async fn remove(&self, wire: &str, token: &str) -> Result<()> {
        self.set_expiry(wire, token, EXPIRED).await.map(drop)
    }
}
