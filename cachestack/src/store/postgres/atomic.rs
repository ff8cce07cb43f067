//! The atomic and pattern operations of [`PostgresStore`], each one statement where it can be:
//!
//! - `set_if_absent`: `INSERT ... ON CONFLICT DO UPDATE ... WHERE` the row there is expired or
//!   another key's (a hashed key's collision): a live row is kept, an expired one is absent.
//! - `incr`: the same upsert adding to the stored decimal (`UPDATE ... RETURNING` in effect);
//!   counters are plain decimals (see [`crate::value::counter`]).
//! - `expire`: a compare-and-set `UPDATE` of the row's value (re-sealed with the new deadline)
//!   and `expires_at`, retried if the value changed meanwhile.
//! - patterns: `LIKE` on the key column with `%`, `_` and `\` escaped, page by page in key
//!   order; hashed keys (long or unusual keys, whose column holds a hash) are matched on their
//!   full key by the client.

use async_trait::async_trait;
use sqlx::Row as _;

use super::backend::{expires_param, table_deadline};
use super::ops::Stored;
use super::sql::storage_key;
use super::{Inner, PostgresStore};
use crate::error::{Error, Result};
use crate::expiry::{Deadline, Expiry};
use crate::pattern::KeyPattern;
use crate::rt;
use crate::store::{AtomicOps, KeyVisitor};
use crate::value::{counter, Value};

/// A deadline in Unix milliseconds (`$5`) as a timestamptz; NULL stays NULL (no expiry).
const DEADLINE: &str = "(timestamptz 'epoch' + $5::int8 * interval '1 millisecond')";
/// The row `c` is live and is this key's (not another key's under the same hashed form).
const KEEP: &str =
    "(c.expires_at IS NULL OR c.expires_at > now()) AND c.full_key IS NOT DISTINCT FROM EXCLUDED.full_key";
/// How often `expire` retries when the entry keeps changing under it.
const EXPIRE_ATTEMPTS: usize = 64;

impl Inner {
    async fn insert_if_absent(&self, key: &str, bytes: &[u8], expires_ms: Option<i64>) -> Result<bool> {
        let ready = self.ready().await?;
        let stored = storage_key(key, ready.ascii_keys);
        let sql = format!(
            "INSERT INTO {t} AS c (namespace, key, full_key, value, expires_at, written_at) \
             VALUES ($1, $2, $3, $4, {DEADLINE}, now()) \
             ON CONFLICT (namespace, key) DO UPDATE SET full_key = EXCLUDED.full_key, value = EXCLUDED.value, \
             expires_at = EXCLUDED.expires_at, written_at = EXCLUDED.written_at WHERE NOT ({KEEP}) RETURNING true",
            t = self.sql.table
        );
        let (sql, namespace, row_key, full) = (&sql, &self.config.settings.namespace, &*stored.key, stored.full);
        // Idempotent: a retry after a dropped reply finds its own row and answers false, which
        // only errs on the side of "not stored by this call".
        let stored: Option<bool> = self
            .retry(|mut conn| async move {
                let row = sqlx::query_scalar(sql)
                    .bind(namespace)
                    .bind(row_key)
                    .bind(full)
                    .bind(bytes)
                    .bind(expires_ms)
                    .fetch_optional(&mut *conn)
                    .await;
                (conn, row)
            })
            .await?;
        Ok(stored.unwrap_or(false))
    }

    async fn add(&self, key: &str, delta: i64, expires_ms: Option<i64>) -> Result<i64> {
        let ready = self.ready().await?;
        let stored = storage_key(key, ready.ascii_keys);
        let sql = format!(
            "INSERT INTO {t} AS c (namespace, key, full_key, value, expires_at, written_at) \
             VALUES ($1, $2, $3, $4, {DEADLINE}, now()) \
             ON CONFLICT (namespace, key) DO UPDATE SET \
             value = CASE WHEN {KEEP} THEN convert_to((convert_from(c.value, 'UTF8')::int8 + $6::int8)::text, 'UTF8') \
                     ELSE EXCLUDED.value END, \
             expires_at = CASE WHEN {KEEP} THEN c.expires_at ELSE EXCLUDED.expires_at END, \
             full_key = EXCLUDED.full_key, written_at = now() \
             RETURNING value",
            t = self.sql.table
        );
        let initial = delta.to_string().into_bytes();
        let (sql, namespace, row_key, full, initial) =
            (&sql, &self.config.settings.namespace, &*stored.key, stored.full, &initial);
        // Not retried: an increment is not idempotent. A value that is not a counter (22P02,
        // 22021: an envelope) or a sum out of range (22003) is the server's answer, not a failure
        // of the connection: it comes back as `Ok(Err(message))`.
        let result: std::result::Result<Vec<u8>, String> = self
            .once(|mut conn| async move {
                let result: std::result::Result<Vec<u8>, sqlx::Error> = sqlx::query_scalar(sql)
                    .bind(namespace)
                    .bind(row_key)
                    .bind(full)
                    .bind(initial)
                    .bind(expires_ms)
                    .bind(delta)
                    .fetch_one(&mut *conn)
                    .await;
                let result = match result {
                    Err(sqlx::Error::Database(db))
                        if matches!(db.code().as_deref(), Some("22P02" | "22021" | "22003")) =>
                    {
                        Ok(Err(db.to_string()))
                    }
                    other => other.map(Ok),
                };
                (conn, result)
            })
            .await?;
        let bytes = result.map_err(|db| {
            Error::invalid(format!(
                "`incr` of `{key}`: the key does not hold a counter, or the sum overflows i64 ({db})"
            ))
        })?;
        counter::parse(&bytes).ok_or_else(|| Error::invalid(format!("`incr` of `{key}`: the result is not a counter")))
    }

    /// Replaces the live row of `key` holding `old` with `new` expiring at `expires_ms`; false if
    /// the row changed (or went) meanwhile.
    async fn swap(&self, key: &str, old: &[u8], new: &[u8], expires_ms: Option<i64>) -> Result<bool> {
        let ready = self.ready().await?;
        let stored = storage_key(key, ready.ascii_keys);
        let sql = format!(
            "UPDATE {t} SET value = $6, expires_at = {DEADLINE} \
             WHERE namespace = $1 AND key = $2 AND full_key IS NOT DISTINCT FROM $3 AND value = $4 \
             AND (expires_at IS NULL OR expires_at > now()) RETURNING true",
            t = self.sql.table
        );
        let (sql, namespace, row_key, full) = (&sql, &self.config.settings.namespace, &*stored.key, stored.full);
        let done: Option<bool> = self
            .retry(|mut conn| async move {
                let row = sqlx::query_scalar(sql)
                    .bind(namespace)
                    .bind(row_key)
                    .bind(full)
                    .bind(old)
                    .bind(expires_ms)
                    .bind(new)
                    .fetch_optional(&mut *conn)
                    .await;
                (conn, row)
            })
            .await?;
        Ok(done.unwrap_or(false))
    }

    /// One page of the live keys matching `like` (plain keys) or stored hashed (matched by the
    /// caller), in key order after `after`: (column key, key, is hashed).
    async fn page(&self, like: &str, after: Option<&str>, limit: usize) -> Result<Vec<(String, String, bool)>> {
        let sql = format!(
            "SELECT key, full_key FROM {t} WHERE namespace = $1 AND ($2::text IS NULL OR key > $2) \
             AND (expires_at IS NULL OR expires_at > now()) AND (full_key IS NOT NULL OR key LIKE $3 ESCAPE $4) \
             ORDER BY key LIMIT $5",
            t = self.sql.table
        );
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        let (sql, namespace) = (&sql, &self.config.settings.namespace);
        let rows = self
            .retry(|mut conn| async move {
                let rows = sqlx::query(sql)
                    .bind(namespace)
                    .bind(after)
                    .bind(like)
                    .bind("\\")
                    .bind(limit)
                    .fetch_all(&mut *conn)
                    .await;
                (conn, rows)
            })
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let column: String = row.try_get(0).map_err(|e| self.err(e))?;
            let full: Option<Vec<u8>> = row.try_get(1).map_err(|e| self.err(e))?;
            let (key, hashed) = match full {
                Some(full) => (String::from_utf8_lossy(&full).into_owned(), true),
                None => (column.clone(), false),
            };
            out.push((column, key, hashed));
        }
        Ok(out)
    }
}

impl PostgresStore {
    /// The next page of keys matching `pattern` after `after` (moved on to the page's last key),
    /// and whether more may follow; `None` at the end.
    async fn next_page(
        &self,
        pattern: &KeyPattern,
        like: &str,
        after: &mut Option<String>,
        batch: usize,
    ) -> Result<Option<(Vec<String>, bool)>> {
        let batch = batch.max(1);
        let (inner, like, from) = (self.inner.clone(), like.to_owned(), after.clone());
        let page = rt::io(self.inner.name(), async move { inner.page(&like, from.as_deref(), batch).await }).await?;
        let Some((last, _, _)) = page.last() else { return Ok(None) };
        *after = Some(last.clone());
        let more = page.len() >= batch;
        let keys = page.into_iter().filter(|(_, key, hashed)| !hashed || pattern.matches(key)).map(|(_, k, _)| k);
        Ok(Some((keys.collect(), more)))
    }
}

#[async_trait]
impl AtomicOps for PostgresStore {
    async fn set_if_absent(&self, key: &str, value: Value, expiry: Expiry) -> Result<bool> {
        let deadline = table_deadline(expiry.resolve(self.inner.config.settings.default_ttl));
        let bytes = self.inner.config.settings.seal(key, &value, deadline.map(Deadline::time))?;
        let (inner, owned, expires_ms) = (self.inner.clone(), key.to_owned(), expires_param(deadline));
        let stored =
            rt::io(self.inner.name(), async move { inner.insert_if_absent(&owned, &bytes, expires_ms).await }).await?;
        if stored {
            self.note_writes(1);
        }
        Ok(stored)
    }

    async fn incr(&self, key: &str, delta: i64, expiry: Expiry) -> Result<i64> {
        let deadline = table_deadline(expiry.resolve(self.inner.config.settings.default_ttl));
        let (inner, owned, expires_ms) = (self.inner.clone(), key.to_owned(), expires_param(deadline));
        let n = rt::io(self.inner.name(), async move { inner.add(&owned, delta, expires_ms).await }).await?;
        self.note_writes(1);
        Ok(n)
    }

    async fn expire(&self, key: &str, expiry: Expiry) -> Result<bool> {
        let deadline = table_deadline(expiry.resolve(self.inner.config.settings.default_ttl));
        for _ in 0..EXPIRE_ATTEMPTS {
            let (inner, owned) = (self.inner.clone(), key.to_owned());
            let Some(Stored { bytes, .. }) =
                rt::io(self.inner.name(), async move { inner.fetch(&owned).await }).await?
            else {
                return Ok(false);
            };
            let new = if counter::parse(&bytes).is_some() {
                bytes.clone()
            } else {
                let stored = Stored { bytes: bytes.clone(), expires_ms: None };
                let Some(entry) = self.decode(key, stored) else { return Ok(false) };
                self.inner.config.settings.seal(key, &entry.value, deadline.map(Deadline::time))?
            };
            let (inner, owned, expires_ms) = (self.inner.clone(), key.to_owned(), expires_param(deadline));
            if rt::io(self.inner.name(), async move { inner.swap(&owned, &bytes, &new, expires_ms).await }).await? {
                self.note_writes(1);
                return Ok(true);
            }
        }
        Err(Error::contended(self.inner.name(), "expire", EXPIRE_ATTEMPTS))
    }

    async fn keys_matching(&self, pattern: &KeyPattern, batch: usize, visit: &mut KeyVisitor<'_>) -> Result<()> {
        let (like, mut after) = (pattern.to_like(), None);
        while let Some((keys, more)) = self.next_page(pattern, &like, &mut after, batch).await? {
            if (!keys.is_empty() && !visit(keys)) || !more {
                break;
            }
        }
        Ok(())
    }

    /// Lists a page (in key order, so removals do not disturb the walk), removes it, and so on.
    async fn delete_matching(&self, pattern: &KeyPattern) -> Result<u64> {
        let (like, mut after, mut removed) = (pattern.to_like(), None, 0u64);
        while let Some((keys, more)) = self.next_page(pattern, &like, &mut after, crate::store::PATTERN_BATCH).await? {
            if !keys.is_empty() {
                self.inner.counters.record_deletes(keys.len() as u64);
                let inner = self.inner.clone();
                removed = removed
                    .saturating_add(rt::io(self.inner.name(), async move { inner.remove_many(&keys).await }).await?);
            }
            if !more {
                break;
            }
        }
        Ok(removed)
    }
}
