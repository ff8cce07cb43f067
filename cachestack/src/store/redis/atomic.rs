//! The atomic and pattern operations of [`RedisStore`]: `SET NX PXAT`, counters (`SET NX PXAT`
//! then `INCRBY`, in one transaction), deadline changes (a compare-and-set script, since the
//! deadline is sealed in the envelope too), and `SCAN MATCH` over the namespace on every master.
//!
//! Counters are plain decimals (see [`crate::value::counter`]); Redis keeps their deadline
//! (`PTTL`), envelopes keep their own (Redis's expiry is the same point in time).

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures_util::future::join_all;

use super::{Inner, RedisStore};
use crate::error::{Error, Result};
use crate::expiry::{Deadline, Expiry};
use crate::pattern::KeyPattern;
use crate::store::{AtomicOps, Entry, KeyVisitor};
use crate::value::{counter, Value};

/// The latest expiry Redis is given (see `ops::MAX_PXAT_MS`).
const MAX_PXAT_MS: u64 = 253_402_300_799_999;

/// Compare-and-set of an entry's deadline: if the key still holds `ARGV[1]`, write `ARGV[2]` (the
/// value re-sealed with the new deadline; empty for a counter, which is kept) and give the key the
/// expiry `ARGV[3]` (0: none). Returns 1, or 0 if the key changed meanwhile.
const EXPIRE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' then redis.call('SET', KEYS[1], ARGV[2]) end
if ARGV[3] == '0' then redis.call('PERSIST', KEYS[1]) else redis.call('PEXPIREAT', KEYS[1], ARGV[3]) end
return 1";

/// How often `expire` retries when the entry keeps changing under it.
const EXPIRE_ATTEMPTS: usize = 64;

/// The `PXAT` / `PEXPIREAT` argument for a deadline: 0 for none (deadlines are never 0).
fn expiry_ms(deadline: Option<Deadline>) -> u64 {
    deadline.map_or(0, |d| d.unix_millis().min(MAX_PXAT_MS))
}

impl RedisStore {
    /// The entry of a counter: its deadline from `PTTL`, counted from before the request so
    /// that it is never later than the real one. `None` if the key vanished meanwhile.
    pub(super) async fn counter_entry(&self, full: String, n: i64) -> Result<Option<Entry>> {
        let inner = self.inner.clone();
        let before = SystemTime::now();
        let pttl = self.io(async move { inner.query::<i64>(::redis::cmd("PTTL").arg(&full)).await }).await?;
        Ok(match pttl {
            -1 => Some(Entry::new(Value::new(n), None)),
            ms if ms > 0 => {
                Some(Entry::new(Value::new(n), Some(Deadline::after_from(before, Duration::from_millis(ms as u64)))))
            }
            _ => None,
        })
    }
}

impl Inner {
    /// The key a Redis key of this namespace stands for (`None`: not this namespace's, or not
    /// UTF-8).
    fn user_key(&self, full: &[u8]) -> Option<String> {
        let rest = full.strip_prefix(self.prefix.as_bytes())?;
        String::from_utf8(rest.to_vec()).ok()
    }
}

/// A script error about the stored value (not a counter, or the sum overflows) as
/// [`Error::InvalidValue`]; anything else as it is.
fn not_a_counter(key: &str, err: Error) -> Error {
    let text = err.to_string();
    if text.contains("not an integer") || text.contains("overflow") {
        Error::invalid(format!("`incr` of `{key}`: the key does not hold a counter, or the sum overflows i64 ({text})"))
    } else {
        err
    }
}

#[async_trait]
impl AtomicOps for RedisStore {
    async fn set_if_absent(&self, key: &str, value: Value, expiry: Expiry) -> Result<bool> {
        let deadline = expiry.resolve(self.inner.config.settings.default_ttl);
        let full = self.inner.redis_key(key);
        let bytes = self.inner.config.settings.seal(key, &value, deadline.map(Deadline::time))?;
        let ms = expiry_ms(deadline);
        let inner = self.inner.clone();
        let stored = self
            .io(async move {
                let mut cmd = ::redis::cmd("SET");
                cmd.arg(&full).arg(bytes).arg("NX");
                if ms != 0 {
                    cmd.arg("PXAT").arg(ms);
                }
                inner.query::<Option<String>>(&cmd).await.map(|reply| reply.is_some())
            })
            .await?;
        if stored {
            self.inner.counters.record_write();
        }
        Ok(stored)
    }

    async fn incr(&self, key: &str, delta: i64, expiry: Expiry) -> Result<i64> {
        let ms = expiry_ms(expiry.resolve(self.inner.config.settings.default_ttl));
        let full = self.inner.redis_key(key);
        let inner = self.inner.clone();
        let key = key.to_owned();
        let n = self
            .io(async move {
                // One transaction: create the counter at 0 with its expiry if absent, then add.
                // (Not a script: Lua numbers are doubles, exact only to 2^53.)
                let mut pipe = ::redis::pipe();
                pipe.atomic().cmd("SET").arg(&full).arg(0).arg("NX");
                if ms != 0 {
                    pipe.arg("PXAT").arg(ms);
                }
                pipe.ignore().cmd("INCRBY").arg(&full).arg(delta);
                let (n,): (i64,) = inner.query_pipe(&pipe).await.map_err(|err| not_a_counter(&key, err))?;
                Ok(n)
            })
            .await?;
        self.inner.counters.record_write();
        Ok(n)
    }

    async fn expire(&self, key: &str, expiry: Expiry) -> Result<bool> {
        let deadline = expiry.resolve(self.inner.config.settings.default_ttl);
        let full = self.inner.redis_key(key);
        for _ in 0..EXPIRE_ATTEMPTS {
            let inner = self.inner.clone();
            let read = full.clone();
            let current =
                self.io(async move { inner.query::<Option<Vec<u8>>>(::redis::cmd("GET").arg(&read)).await }).await?;
            let Some(current) = current else { return Ok(false) };
            let resealed = if counter::parse(&current).is_some() {
                Vec::new()
            } else {
                match self.inner.config.settings.open(key, &current) {
                    Ok((value, expires)) if expires.is_none_or(|t| t > SystemTime::now()) => {
                        self.inner.config.settings.seal(key, &value, deadline.map(Deadline::time))?
                    }
                    // Past its deadline or unusable: not a live entry.
                    _ => return Ok(false),
                }
            };
            let ms = expiry_ms(deadline);
            let inner = self.inner.clone();
            let target = full.clone();
            let done = self
                .io(async move {
                    let mut cmd = ::redis::cmd("EVAL");
                    cmd.arg(EXPIRE).arg(1).arg(&target).arg(current).arg(resealed).arg(ms);
                    inner.query::<i64>(&cmd).await
                })
                .await?;
            if done == 1 {
                self.inner.counters.record_write();
                return Ok(true);
            }
        }
        Err(Error::contended(&self.inner.config.settings.name, "expire", EXPIRE_ATTEMPTS))
    }

    async fn keys_matching(&self, pattern: &KeyPattern, batch: usize, visit: &mut KeyVisitor<'_>) -> Result<()> {
        let glob = pattern.to_redis_glob(&self.inner.prefix);
        let inner = self.inner.clone();
        let nodes = self.io(async move { inner.scan_nodes().await }).await?;
        for node in nodes {
            let mut cursor = 0u64;
            loop {
                let (inner, glob, node) = (self.inner.clone(), glob.clone(), node.clone());
                let (next, keys) =
                    self.io(async move { inner.scan_page(node.as_ref(), cursor, &glob, batch).await }).await?;
                let keys: Vec<String> = keys.iter().filter_map(|full| self.inner.user_key(full)).collect();
                if !keys.is_empty() && !visit(keys) {
                    return Ok(());
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(())
    }

    async fn delete_matching(&self, pattern: &KeyPattern) -> Result<u64> {
        let glob = pattern.to_redis_glob(&self.inner.prefix);
        let inner = self.inner.clone();
        let removed = self
            .io(async move {
                let nodes = inner.scan_nodes().await?;
                let results = join_all(nodes.iter().map(|node| inner.unlink_node(node.as_ref(), &glob))).await;
                results.into_iter().try_fold(0u64, |sum, n| Ok::<_, Error>(sum.saturating_add(n?)))
            })
            .await?;
        self.inner.counters.record_deletes(removed);
        Ok(removed)
    }
}
