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
//!   [`Error::Unsupported`] (the text protocol has no way to list keys).

use std::io;
use std::time::SystemTime;

use memcache_async::ascii::Protocol;

use super::super::ops::{Item, Op, Wire};
use super::MemcachedStore;
use crate::error::{Error, Result};
use crate::expiry::{Deadline, Expiry};
use crate::pattern::KeyPattern;
use crate::store::cas::{cas_atomic_ops, CasRounds};
use crate::store::{Entry, KeyVisitor};
use crate::value::Value;

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

/// What a round read: the server, its generation, and the item's CAS id (`None`: no item).
pub(crate) struct Round {
    idx: usize,
    generation: u64,
    cas: Option<u64>,
}

impl CasRounds for MemcachedStore {
    type Version = Round;
    const BACKOFF: bool = false;

    async fn read_round(&self, _op: &'static str, key: &str) -> Result<(Option<Entry>, Round)> {
        let wire = self.keys.wire(key);
        let idx = self.route(&wire)?;
        let generation = self.writable_gen(idx).await?;
        let found = self.exec(idx, GetsCas(wire)).await?;
        let live = found.as_ref().and_then(|(bytes, _)| self.decode(key, Some(generation), bytes, SystemTime::now()));
        Ok((live, Round { idx, generation, cas: found.map(|(_, cas)| cas) }))
    }

    async fn write_round(
        &self,
        _op: &'static str,
        key: &str,
        round: Round,
        value: &Value,
        deadline: Option<Deadline>,
    ) -> Result<bool> {
        let target = self.target(key, Expiry::from(deadline));
        let bytes = self.record(round.generation, key, value, &target)?;
        let item = Item { wire: target.wire, bytes, exptime: target.exptime };
        match round.cas {
            None => self.exec(round.idx, AddItem(item)).await,
            Some(cas) => self.exec(round.idx, CasItem(item, cas)).await,
        }
    }
}

cas_atomic_ops! {
    impl AtomicOps for MemcachedStore {
        async fn keys_matching(&self, _: &KeyPattern, _: usize, _: &mut KeyVisitor<'_>) -> Result<()> {
            Err(Error::unsupported("keys_matching", crate::Backend::name(self)))
        }

        async fn delete_matching(&self, _: &KeyPattern) -> Result<u64> {
            Err(Error::unsupported("delete_matching", crate::Backend::name(self)))
        }
    }
}
