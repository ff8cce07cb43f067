//! The atomic operations of [`MemcachedStore`], as compare-and-set rounds on records: `gets` the
//! item with its CAS id, decide, then `add` (no item) or `cas` (the item read), again if another
//! writer got there first.
//!
//! - `set_if_absent` writes only over no item, or over a dead one (expired, of an older
//!   generation, another key's, unusable): of racing callers exactly one wins.
//! - `incr` adds to an `i64` record. Memcached's own `incr` is not used: it works on a bare
//!   unsigned decimal, which has no room for what every record carries (the generation that
//!   [`clear`](crate::Backend::clear) moves, the key that guards against hash collisions, the
//!   deadline and signature of the envelope), and cannot go below zero. Each increment is two
//!   round trips, more when writers contend.
//! - `expire` re-seals the live value with the new deadline (the envelope's deadline is the one
//!   reads obey; memcached's `touch` alone would only move the server's).
//! - Key patterns: memcached cannot list keys, so `keys_matching` and `delete_matching` answer
//!   [`Error::Unsupported`](crate::Error::Unsupported) (the text protocol has no way to list keys).

use std::io;
use std::time::SystemTime;

use async_trait::async_trait;
use memcache_async::ascii::Protocol;

use super::super::ops::{Item, Op, Wire};
use super::MemcachedStore;
use crate::error::{Error, Result};
use crate::expiry::Expiry;
use crate::pattern::KeyPattern;
use crate::store::cas::{self, Decision};
use crate::store::{AtomicOps, Entry, KeyVisitor};
use crate::value::Value;

/// How often a compare-and-set round is retried when other writers keep changing the item.
const ATTEMPTS: usize = 256;

/// `gets`: the item's bytes and CAS id, or `None`.
struct GetsCas(String);

impl Op for GetsCas {
    type Out = Option<(Vec<u8>, u64)>;
    async fn run(&self, proto: &mut Protocol<Wire>) -> io::Result<Self::Out> {
        match proto.gets_cas(&self.0).await {
            Ok(found) => Ok(Some(found)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }
}

/// `add` of one item: true if stored, false if the key exists.
struct AddItem(Item);

impl Op for AddItem {
    type Out = bool;
    async fn run(&self, proto: &mut Protocol<Wire>) -> io::Result<bool> {
        match proto.add(&self.0.wire, &self.0.bytes, self.0.exptime).await {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(err) => Err(err),
        }
    }
}

/// `cas` of one item against a CAS id: true if stored, false if the item changed or went.
struct CasItem(Item, u64);

impl Op for CasItem {
    type Out = bool;
    async fn run(&self, proto: &mut Protocol<Wire>) -> io::Result<bool> {
        match proto.cas(&self.0.wire, &self.0.bytes, self.1, self.0.exptime).await {
            Ok(stored) => Ok(stored),
            // memcache-async does not recognise memcached's `NOT_FOUND` answer.
            Err(err) if err.kind() == io::ErrorKind::NotFound || err.to_string().starts_with("NOT_FOUND") => Ok(false),
            Err(err) => Err(err),
        }
    }
}

impl MemcachedStore {
    /// Compare-and-set rounds on `key` until one stores (or `decide` keeps): `decide` gets the
    /// live entry, or `None` when there is none (absent, or a dead item that will be replaced).
    async fn update<T>(
        &self,
        op: &'static str,
        key: &str,
        mut decide: impl FnMut(Option<&Entry>) -> Result<Decision<T>>,
    ) -> Result<T> {
        let wire = self.keys.wire(key);
        for _ in 0..ATTEMPTS {
            let idx = self.route(&wire)?;
            let generation = self.writable_gen(idx).await?;
            let found = self.exec(idx, GetsCas(wire.clone())).await?;
            let live =
                found.as_ref().and_then(|(bytes, _)| self.decode(key, Some(generation), bytes, SystemTime::now()));
            let (value, deadline, answer) = match decide(live.as_ref())? {
                Decision::Keep(answer) => return Ok(answer),
                Decision::Write(value, deadline, answer) => (value, deadline, answer),
            };
            let target = self.target(key, Expiry::from(deadline));
            let bytes = self.record(generation, key, &value, &target)?;
            let item = Item { wire: target.wire, bytes, exptime: target.exptime };
            let stored = match found {
                None => self.exec(idx, AddItem(item)).await?,
                Some((_, cas)) => self.exec(idx, CasItem(item, cas)).await?,
            };
            if stored {
                self.counters.record_write();
                return Ok(answer);
            }
        }
        Err(Error::contended(&self.config.settings.name, op, ATTEMPTS))
    }
}

#[async_trait]
impl AtomicOps for MemcachedStore {
    async fn set_if_absent(&self, key: &str, value: Value, expiry: Expiry) -> Result<bool> {
        let deadline = expiry.resolve(self.config.settings.default_ttl);
        self.update("set_if_absent", key, cas::set_if_absent(value, deadline)).await
    }

    async fn incr(&self, key: &str, delta: i64, expiry: Expiry) -> Result<i64> {
        let deadline = expiry.resolve(self.config.settings.default_ttl);
        self.update("incr", key, cas::incr(key, delta, deadline)).await
    }

    async fn expire(&self, key: &str, expiry: Expiry) -> Result<bool> {
        let deadline = expiry.resolve(self.config.settings.default_ttl);
        self.update("expire", key, cas::expire(deadline)).await
    }

    async fn keys_matching(&self, _: &KeyPattern, _: usize, _: &mut KeyVisitor<'_>) -> Result<()> {
        Err(Error::unsupported("keys_matching", crate::Backend::name(self)))
    }

    async fn delete_matching(&self, _: &KeyPattern) -> Result<u64> {
        Err(Error::unsupported("delete_matching", crate::Backend::name(self)))
    }
}
