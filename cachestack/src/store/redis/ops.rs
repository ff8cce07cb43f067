//! The cache operations of [`RedisStore`]: I/O only. Sealing and opening envelopes run on the
//! caller's side; only the round trips run on cachestack's runtime ([`crate::rt::io`]). Failures
//! are returned as they are: silent mode and operation timeouts are the layers' business
//! ([`crate::layer`]).

use std::time::{Duration, SystemTime};

use ::redis::{Pipeline, Value as Reply};
use async_trait::async_trait;
use futures_util::future::join_all;

use crate::error::{Error, Result};
use crate::expiry::{Deadline, Expiry};
use crate::store::{Backend, BackendStats, Entry};
use crate::value::counter;
use crate::value::Value;

use super::{Inner, RedisStore};

/// The latest expiry given to Redis (`PXAT`, 9999-12-31T23:59:59.999Z); a later deadline is
/// sent as this one. The envelope keeps the writer's deadline.
const MAX_PXAT_MS: u64 = 253_402_300_799_999;

/// What a write asks of Redis, decided once from the entry's deadline before the write is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Write {
    /// `SET` without expiry.
    Forever,
    /// `SET ... PXAT <unix ms>`: Redis drops the key at the writer's deadline.
    At(u64),
    /// The deadline has already passed: the entry is gone, so the write removes the key.
    Gone,
}

impl Write {
    /// The write for an entry expiring at `deadline`, at `now`.
    pub(super) fn for_deadline(deadline: Option<Deadline>, now: SystemTime) -> Self {
        match deadline {
            None => Write::Forever,
            Some(d) if d.has_passed_at(now) => Write::Gone,
            Some(d) => Write::At(d.unix_millis().min(MAX_PXAT_MS)),
        }
    }

    fn command(self, pipe: &mut Pipeline, key: &str, bytes: &[u8]) {
        match self {
            Write::Forever => pipe.cmd("SET").arg(key).arg(bytes).ignore(),
            Write::At(ms) => pipe.cmd("SET").arg(key).arg(bytes).arg("PXAT").arg(ms).ignore(),
            Write::Gone => pipe.cmd("DEL").arg(key).ignore(),
        };
    }
}

#[async_trait]
impl Backend for RedisStore {
    fn name(&self) -> &str {
        &self.inner.config.settings.name
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        let full = self.inner.redis_key(key);
        let inner = self.inner.clone();
        let (full, bytes, exists) = self
            .io(async move {
                // MGET rather than GET: a key of another Redis type (a hash another program
                // wrote) reads as nil instead of failing with WRONGTYPE; EXISTS tells it apart.
                let mut pipe = ::redis::pipe();
                pipe.cmd("MGET").arg(&full).cmd("EXISTS").arg(&full);
                let (mut bytes, exists): (Vec<Option<Vec<u8>>>, i64) = inner.query_pipe(&pipe).await?;
                Ok((full, bytes.pop().flatten(), exists > 0))
            })
            .await?;
        if let Some(n) = bytes.as_deref().and_then(counter::parse) {
            let found = self.counter_entry(full, n).await?;
            self.inner.counters.record_lookup(found.is_some());
            return Ok(found);
        }
        // Opening runs on the caller's side, not on the runtime's I/O workers.
        let found = self.inner.read(key, bytes, exists);
        self.inner.counters.record_lookup(found.is_some());
        Ok(found)
    }

    async fn set(&self, key: &str, value: Value, expiry: Expiry) -> Result<()> {
        let deadline = expiry.resolve(self.inner.config.settings.default_ttl);
        let full = self.inner.redis_key(key);
        let bytes = self.inner.config.settings.seal(key, &value, deadline.map(Deadline::time))?;
        let write = Write::for_deadline(deadline, SystemTime::now());
        let inner = self.inner.clone();
        self.io(async move {
            let mut pipe = ::redis::pipe();
            write.command(&mut pipe, &full, &bytes);
            inner.query_pipe::<()>(&pipe).await
        })
        .await?;
        self.inner.counters.record_write();
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.inner.counters.record_delete();
        let full = self.inner.redis_key(key);
        let inner = self.inner.clone();
        self.io(async move { inner.query::<i64>(::redis::cmd("DEL").arg(&full)).await.map(|n| n > 0) }).await
    }

    /// `EXISTS`: true while Redis holds the key (it does not read or check the value; Redis
    /// drops the key at its deadline).
    async fn exists(&self, key: &str) -> Result<bool> {
        let full = self.inner.redis_key(key);
        let inner = self.inner.clone();
        self.io(async move { inner.query::<i64>(::redis::cmd("EXISTS").arg(&full)).await.map(|n| n > 0) }).await
    }

    /// `SCAN MATCH` + `UNLINK` over the namespace (on every master of a cluster), each round
    /// trip bounded by [`timeouts.operation`](crate::ServerTimeouts::operation).
    async fn clear(&self) -> Result<()> {
        let inner = self.inner.clone();
        self.io(async move { inner.clear_namespace().await }).await
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let full: Vec<String> = keys.iter().map(|k| self.inner.redis_key(k)).collect();
        let inner = self.inner.clone();
        let (full, found) = self.io(async move { inner.fetch_many(full).await }).await?;
        let mut out: Vec<Option<Entry>> = Vec::with_capacity(keys.len());
        for (key, (full, (bytes, exists))) in keys.iter().zip(full.into_iter().zip(found)) {
            out.push(match bytes.as_deref().and_then(counter::parse) {
                Some(n) => self.counter_entry(full, n).await?,
                None => self.inner.read(key, bytes, exists),
            });
        }
        let found = out;
        let hits = found.iter().filter(|e| e.is_some()).count() as u64;
        self.inner.counters.record_lookups(found.len() as u64, hits);
        Ok(found)
    }

    async fn set_many(&self, entries: &[(&str, Value)], expiry: Expiry) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let deadline = expiry.resolve(self.inner.config.settings.default_ttl);
        let expires = deadline.map(Deadline::time);
        let sealed = entries
            .iter()
            .map(|(key, value)| {
                let full = self.inner.redis_key(key);
                let bytes = self.inner.config.settings.seal(key, value, expires)?;
                Ok((full, bytes))
            })
            .collect::<Result<Vec<(String, Vec<u8>)>>>()?;
        let write = Write::for_deadline(deadline, SystemTime::now());
        let inner = self.inner.clone();
        self.io(async move {
            let keys: Vec<&str> = sealed.iter().map(|(k, _)| k.as_str()).collect();
            let groups = inner.groups_of(&keys);
            let replies = join_all(groups.iter().map(|group| {
                let mut pipe = ::redis::pipe();
                for &i in group {
                    write.command(&mut pipe, &sealed[i].0, &sealed[i].1);
                }
                let inner = &inner;
                async move { inner.query_pipe::<()>(&pipe).await }
            }))
            .await;
            replies.into_iter().collect::<Result<Vec<()>>>().map(drop)
        })
        .await?;
        self.inner.counters.record_writes(entries.len() as u64);
        Ok(())
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.inner.counters.record_deletes(keys.len() as u64);
        let full: Vec<String> = keys.iter().map(|k| self.inner.redis_key(k)).collect();
        let inner = self.inner.clone();
        self.io(async move {
            let groups = inner.groups(&full);
            let replies = join_all(groups.iter().map(|group| {
                let mut cmd = ::redis::cmd("DEL");
                for &i in group {
                    cmd.arg(&full[i]);
                }
                let inner = &inner;
                async move { inner.query::<u64>(&cmd).await }
            }))
            .await;
            replies.into_iter().sum::<Result<u64>>()
        })
        .await
    }

    fn atomic(&self) -> Option<&dyn crate::store::AtomicOps> {
        Some(self)
    }

    fn locks(&self) -> Option<&dyn crate::store::LockOps> {
        Some(self)
    }

    fn stats(&self) -> BackendStats {
        self.stats_snapshot()
    }

    fn default_ttl(&self) -> Option<Duration> {
        self.inner.config.settings.default_ttl
    }

    fn signing(&self) -> crate::store::Signing {
        crate::store::Signing::of(&self.inner.config.settings.format)
    }
}

impl Inner {
    /// `MGET` + `EXISTS` for `full`, one pipeline per group (per hash slot on a cluster), sent
    /// concurrently: each key's stored bytes, and whether the key exists at all.
    #[allow(clippy::type_complexity)]
    async fn fetch_many(&self, full: Vec<String>) -> Result<(Vec<String>, Vec<(Option<Vec<u8>>, bool)>)> {
        let groups = self.groups(&full);
        let replies = join_all(groups.iter().map(|group| {
            let mut pipe = ::redis::pipe();
            pipe.cmd("MGET");
            for &i in group {
                pipe.arg(&full[i]);
            }
            for &i in group {
                pipe.cmd("EXISTS").arg(&full[i]);
            }
            async move { self.query_pipe::<Vec<Reply>>(&pipe).await }
        }))
        .await;
        let mut found: Vec<(Option<Vec<u8>>, bool)> = vec![(None, false); full.len()];
        for (group, reply) in groups.iter().zip(replies) {
            let mut reply = reply?.into_iter();
            let values: Vec<Option<Vec<u8>>> = self.parse(reply.next().unwrap_or(Reply::Nil))?;
            let exists: Vec<i64> = reply.map(|r| self.parse(r)).collect::<Result<_>>()?;
            if values.len() != group.len() || exists.len() != group.len() {
                return Err(self.generic(format!(
                    "MGET/EXISTS pipeline answered {} values and {} flags for {} keys",
                    values.len(),
                    exists.len(),
                    group.len()
                )));
            }
            for ((&i, value), exists) in group.iter().zip(values).zip(exists) {
                found[i] = (value, exists > 0);
            }
        }
        Ok((full, found))
    }

    /// What a read found: the entry with the deadline its writer sealed in the envelope, or a
    /// miss (absent, past its deadline, or unusable: counted as an error).
    fn read(&self, key: &str, bytes: Option<Vec<u8>>, exists: bool) -> Option<Entry> {
        match bytes {
            Some(bytes) => match self.config.settings.open(key, &bytes) {
                Ok((value, expires)) => Entry::new(value, expires.map(Deadline::at)).live(),
                Err(err) => {
                    self.counters.record_invalid(&self.config.settings.name, key, &err);
                    None
                }
            },
            // Nil from MGET while the key exists: it holds another Redis type.
            None if exists => {
                let err = Error::invalid("the key holds a value of another Redis type, not a string");
                self.counters.record_invalid(&self.config.settings.name, key, &err);
                None
            }
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn writes_carry_the_writers_deadline() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(Write::for_deadline(None, now), Write::Forever);
        let later = Deadline::after_from(now, Duration::from_millis(1500));
        assert_eq!(Write::for_deadline(Some(later), now), Write::At(1_001_500));
        assert_eq!(Write::for_deadline(Some(Deadline::at(now)), now), Write::Gone);
        let earlier = Deadline::at(now - Duration::from_secs(1));
        assert_eq!(Write::for_deadline(Some(earlier), now), Write::Gone);
        let far = Deadline::after_from(now, Duration::MAX);
        assert_eq!(Write::for_deadline(Some(far), now), Write::At(MAX_PXAT_MS));
    }
}
