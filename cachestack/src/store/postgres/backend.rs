//! [`PostgresStore`] as a [`Backend`]: the caller's side of every operation (deadlines, sealing
//! and opening envelopes, counters) around the network side in [`crate::rt::io`].

use async_trait::async_trait;

use super::ops::Stored;
use super::PostgresStore;
use crate::error::Result;
use crate::expiry::{Deadline, Expiry};
use crate::rt;
use crate::store::{Backend, BackendStats, Entry};
use crate::value::{counter, Value};

/// The latest deadline a row gets, 9999-12-31T23:59:59.999Z in Unix milliseconds: later
/// deadlines (a TTL of centuries) are brought forward to it, in the row and in the sealed
/// envelope alike, which only ever shortens an entry's life.
pub(super) const LATEST_DEADLINE_MS: u64 = 253_402_300_799_999;

/// The deadline a write is stored with.
pub(super) fn table_deadline(deadline: Option<Deadline>) -> Option<Deadline> {
    deadline.map(|d| Deadline::from_unix_millis(LATEST_DEADLINE_MS).map_or(d, |latest| d.min(latest)))
}

/// The `expires_at` parameter of a write: its deadline in Unix milliseconds (`None`: never).
pub(super) fn expires_param(deadline: Option<Deadline>) -> Option<i64> {
    table_deadline(deadline).map(|d| i64::try_from(d.unix_millis()).unwrap_or(i64::MAX))
}

impl PostgresStore {
    /// Opens a stored envelope on the caller's side: the entry, with the earlier of the deadline
    /// sealed by its writer and the row's `expires_at`, if that has not passed. An envelope that
    /// fails its checks is counted and is a miss.
    pub(super) fn decode(&self, key: &str, stored: Stored) -> Option<Entry> {
        let opened = match counter::parse(&stored.bytes) {
            // A counter: its deadline is the row's.
            Some(n) => Ok((Value::new(n), None)),
            None => self.inner.config.settings.open(key, &stored.bytes),
        };
        let (value, sealed) = match opened {
            Ok(opened) => opened,
            Err(err) => {
                self.inner.counters.record_invalid(self.inner.name(), key, &err);
                return None;
            }
        };
        let row = match stored.expires_ms {
            None => None,
            // At or before the epoch: long past (the query only returns live rows, by the
            // server's clock; this is the client's own check).
            Some(ms) => Some(u64::try_from(ms).ok().and_then(Deadline::from_unix_millis)?),
        };
        Entry::new(value, Deadline::earliest(sealed.map(Deadline::at), row)).live()
    }

    pub(super) fn note_writes(&self, n: u64) {
        self.inner.counters.record_writes(n);
        if let Some(trimmer) = &self.inner.trimmer {
            trimmer.note_writes(n);
        }
    }
}

#[async_trait]
impl Backend for PostgresStore {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        let (inner, owned) = (self.inner.clone(), key.to_owned());
        let stored = rt::io(self.inner.name(), async move { inner.fetch(&owned).await }).await?;
        let found = stored.and_then(|stored| self.decode(key, stored));
        self.inner.counters.record_lookup(found.is_some());
        Ok(found)
    }

    async fn set(&self, key: &str, value: Value, expiry: Expiry) -> Result<()> {
        // The deadline is fixed here, once; the envelope and the row carry the same one.
        let deadline = table_deadline(expiry.resolve(self.inner.config.settings.default_ttl));
        let bytes = self.inner.config.settings.seal(key, &value, deadline.map(Deadline::time))?;
        let (inner, owned, expires_ms) = (self.inner.clone(), key.to_owned(), expires_param(deadline));
        rt::io(self.inner.name(), async move { inner.store(&owned, &bytes, expires_ms).await }).await?;
        self.note_writes(1);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.inner.counters.record_delete();
        let (inner, owned) = (self.inner.clone(), key.to_owned());
        rt::io(self.inner.name(), async move { inner.remove(&owned).await }).await
    }

    async fn clear(&self) -> Result<()> {
        let inner = self.inner.clone();
        rt::io(self.inner.name(), async move { inner.delete_all(|sql| &sql.clear_batch).await.map(|_| ()) }).await
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let (inner, owned) = (self.inner.clone(), keys.iter().map(|k| (*k).to_owned()).collect::<Vec<_>>());
        let stored = rt::io(self.inner.name(), async move { inner.fetch_many(&owned).await }).await?;
        let found: Vec<Option<Entry>> =
            keys.iter().zip(stored).map(|(key, stored)| stored.and_then(|s| self.decode(key, s))).collect();
        let hits = found.iter().filter(|e| e.is_some()).count();
        self.inner.counters.record_lookups(keys.len() as u64, hits as u64);
        Ok(found)
    }

    async fn set_many(&self, entries: &[(&str, Value)], expiry: Expiry) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let deadline = table_deadline(expiry.resolve(self.inner.config.settings.default_ttl));
        let sealed_until = deadline.map(Deadline::time);
        let rows = entries
            .iter()
            .map(|(key, value)| {
                let sealed = self.inner.config.settings.seal(key, value, sealed_until)?;
                Ok(((*key).to_owned(), sealed))
            })
            .collect::<Result<Vec<(String, Vec<u8>)>>>()?;
        let (inner, expires_ms) = (self.inner.clone(), expires_param(deadline));
        rt::io(self.inner.name(), async move { inner.store_many(&rows, expires_ms).await }).await?;
        self.note_writes(entries.len() as u64);
        Ok(())
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.inner.counters.record_deletes(keys.len() as u64);
        let (inner, owned) = (self.inner.clone(), keys.iter().map(|k| (*k).to_owned()).collect::<Vec<_>>());
        rt::io(self.inner.name(), async move { inner.remove_many(&owned).await }).await
    }

    async fn purge_expired(&self) -> Result<u64> {
        let inner = self.inner.clone();
        rt::io(self.inner.name(), async move { inner.delete_all(|sql| &sql.purge_batch).await }).await
    }

    fn atomic(&self) -> Option<&dyn crate::store::AtomicOps> {
        Some(self)
    }

    fn locks(&self) -> Option<&dyn crate::store::LockOps> {
        Some(self)
    }

    fn stats(&self) -> BackendStats {
        let inner = &self.inner;
        let config = &inner.config;
        let pool = inner.pool.current();
        let mut stats = inner
            .counters
            .snapshot(inner.name())
            .with_detail("server", &inner.server)
            .with_detail("table", &inner.sql.table)
            .with_detail("namespace", &config.settings.namespace)
            .with_detail("unlogged", config.unlogged)
            .with_detail("table_ready", inner.ready.initialized())
            .with_detail("pool_size", pool.size())
            .with_detail("pool_idle", pool.num_idle())
            .with_detail("pools_replaced", inner.pool.replacements())
            .with_detail("pool_max", config.pool_max);
        if let Some(n) = config.max_entries {
            stats = stats.with_detail("max_entries", n);
        }
        if let Some(n) = config.max_bytes {
            stats = stats.with_detail("max_bytes", n);
        }
        if let Some(ttl) = config.settings.default_ttl {
            stats = stats.with_detail("ttl", crate::ttl::format_ttl(ttl));
        }
        stats
    }

    fn default_ttl(&self) -> Option<std::time::Duration> {
        self.inner.config.settings.default_ttl
    }

    fn signing(&self) -> crate::store::Signing {
        crate::store::Signing::of(&self.inner.config.settings.format)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn deadlines_are_kept_to_the_millisecond_and_capped_at_year_9999() {
        assert_eq!(expires_param(None), None);
        let soon = Deadline::from_unix_millis(1_800_000_000_123).unwrap();
        assert_eq!(expires_param(Some(soon)), Some(1_800_000_000_123));
        assert_eq!(table_deadline(Some(soon)), Some(soon));
        let far = Deadline::after(Duration::MAX);
        assert_eq!(expires_param(Some(far)), Some(LATEST_DEADLINE_MS as i64));
        assert_eq!(table_deadline(Some(far)).map(Deadline::unix_millis), Some(LATEST_DEADLINE_MS));
    }
}
