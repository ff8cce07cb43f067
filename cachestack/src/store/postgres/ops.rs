//! The network side of each operation: statements in, stored bytes out. These run inside
//! [`crate::rt::io`]; sealing and opening envelopes happen on the caller's side
//! (see `backend.rs`).

use std::collections::{HashMap, HashSet};

use sqlx::{Encode, Postgres, Type};

use super::sql::storage_key;
use super::Inner;
use crate::error::Result;

/// Rows per statement in `set_many`.
const SET_MANY_CHUNK: usize = 1000;

/// A live row as read: the stored envelope and the row's `expires_at` in Unix milliseconds
/// (rounded down; `None`: no expiry).
#[derive(Debug, Clone)]
pub(super) struct Stored {
    pub bytes: Vec<u8>,
    pub expires_ms: Option<i64>,
}

/// A fetched row: stored value, `full_key`, `expires_at` in Unix milliseconds.
type Row = (Vec<u8>, Option<Vec<u8>>, Option<i64>);

/// A `get_many` row: the stored key, then [`Row`].
type KeyedRow = (String, Vec<u8>, Option<Vec<u8>>, Option<i64>);

/// The row if it belongs to the key whose hashed form's full key is `full` (another key's row
/// under the same stored key, from a hash collision or a plain key equal to a hashed form, is
/// not ours).
fn ours(full: Option<&[u8]>, (bytes, stored_full, expires_ms): Row) -> Option<Stored> {
    (stored_full.as_deref() == full).then_some(Stored { bytes, expires_ms })
}

impl Inner {
    pub(super) async fn fetch(&self, key: &str) -> Result<Option<Stored>> {
        let ready = self.ready().await?;
        let stored = storage_key(key, ready.ascii_keys);
        let (sql, namespace, row_key) = (&self.sql.get, &self.config.settings.namespace, &*stored.key);
        let row: Option<Row> = self
            .retry(|mut conn| async move {
                let row = sqlx::query_as(sql).bind(namespace).bind(row_key).fetch_optional(&mut *conn).await;
                (conn, row)
            })
            .await?;
        Ok(row.and_then(|row| ours(stored.full, row)))
    }

    pub(super) async fn fetch_many(&self, keys: &[String]) -> Result<Vec<Option<Stored>>> {
        let ready = self.ready().await?;
        let stored: Vec<_> = keys.iter().map(|k| storage_key(k, ready.ascii_keys)).collect();
        let mut wanted: Vec<&str> = stored.iter().map(|s| &*s.key).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let (sql, namespace, wanted) = (&self.sql.get_many, &self.config.settings.namespace, &wanted);
        let rows: Vec<KeyedRow> = self
            .retry(|mut conn| async move {
                let rows = sqlx::query_as(sql).bind(namespace).bind(wanted).fetch_all(&mut *conn).await;
                (conn, rows)
            })
            .await?;
        // Each row with the number of requested keys that map to it: a key asked for twice gets
        // the row twice (cloned for all but the last asker).
        let mut by_key: HashMap<String, (Row, usize)> =
            rows.into_iter().map(|(k, v, f, t)| (k, ((v, f, t), 0))).collect();
        for s in &stored {
            if let Some((_, uses)) = by_key.get_mut(&*s.key) {
                *uses += 1;
            }
        }
        let mut out = Vec::with_capacity(keys.len());
        for s in &stored {
            let row = match by_key.get_mut(&*s.key) {
                Some((row, uses)) if *uses > 1 => {
                    *uses -= 1;
                    Some(row.clone())
                }
                Some(_) => by_key.remove(&*s.key).map(|(row, _)| row),
                None => None,
            };
            out.push(row.and_then(|row| ours(s.full, row)));
        }
        Ok(out)
    }

    /// Writes one row expiring at `expires_ms` (Unix milliseconds; `None`: never).
    pub(super) async fn store(&self, key: &str, bytes: &[u8], expires_ms: Option<i64>) -> Result<()> {
        let ready = self.ready().await?;
        let stored = storage_key(key, ready.ascii_keys);
        self.upsert(&self.sql.set, &*stored.key, stored.full, bytes, expires_ms).await
    }

    /// Writes several rows expiring at `expires_ms`.
    pub(super) async fn store_many(&self, rows: &[(String, Vec<u8>)], expires_ms: Option<i64>) -> Result<()> {
        let ready = self.ready().await?;
        // One row per stored key (the last write wins, as with separate sets: ON CONFLICT cannot
        // touch a row twice in one statement), sorted so that concurrent batches lock rows in
        // the same order and cannot deadlock.
        let mut latest: HashMap<String, (Option<&[u8]>, &[u8])> = HashMap::with_capacity(rows.len());
        for (key, bytes) in rows {
            let stored = storage_key(key, ready.ascii_keys);
            latest.insert(stored.key.into_owned(), (stored.full, bytes.as_slice()));
        }
        let mut latest: Vec<_> = latest.into_iter().collect();
        latest.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for chunk in latest.chunks(SET_MANY_CHUNK) {
            let keys: Vec<&str> = chunk.iter().map(|(k, _)| k.as_str()).collect();
            let fulls: Vec<Option<&[u8]>> = chunk.iter().map(|(_, (f, _))| *f).collect();
            let values: Vec<&[u8]> = chunk.iter().map(|(_, (_, v))| *v).collect();
            self.upsert(&self.sql.set_many, &keys, &fulls, &values, expires_ms).await?;
        }
        Ok(())
    }

    /// Runs an upsert (`set`, `set_many`): its arguments are the namespace, the key, full key and
    /// value of one row or arrays of those of several rows, and the deadline `expires_ms`.
    async fn upsert<'q, K, F, V>(
        &'q self,
        sql: &'q str,
        key: K,
        full: F,
        value: V,
        expires_ms: Option<i64>,
    ) -> Result<()>
    where
        K: Encode<'q, Postgres> + Type<Postgres> + Copy + Send + 'q,
        F: Encode<'q, Postgres> + Type<Postgres> + Copy + Send + 'q,
        V: Encode<'q, Postgres> + Type<Postgres> + Copy + Send + 'q,
    {
        let namespace = &self.config.settings.namespace;
        self.retry(|mut conn| async move {
            let query = sqlx::query(sql).bind(namespace).bind(key).bind(full).bind(value).bind(expires_ms);
            let done = query.execute(&mut *conn).await;
            (conn, done)
        })
        .await
        .map(drop)
    }

    pub(super) async fn remove(&self, key: &str) -> Result<bool> {
        let ready = self.ready().await?;
        let stored = storage_key(key, ready.ascii_keys);
        let (sql, namespace, row_key, full) =
            (&self.sql.delete, &self.config.settings.namespace, &*stored.key, stored.full);
        let present: Option<Option<bool>> = self
            .retry(|mut conn| async move {
                let row =
                    sqlx::query_scalar(sql).bind(namespace).bind(row_key).bind(full).fetch_optional(&mut *conn).await;
                (conn, row)
            })
            .await?;
        Ok(present.flatten().unwrap_or(false))
    }

    pub(super) async fn remove_many(&self, keys: &[String]) -> Result<u64> {
        let ready = self.ready().await?;
        let stored: Vec<_> = keys.iter().map(|k| storage_key(k, ready.ascii_keys)).collect();
        let wanted: Vec<&str> = stored.iter().map(|s| &*s.key).collect();
        let (sql, namespace, wanted) = (&self.sql.delete_many, &self.config.settings.namespace, &wanted);
        let rows: Vec<(String, Option<Vec<u8>>, Option<bool>)> = self
            .retry(|mut conn| async move {
                let rows = sqlx::query_as(sql).bind(namespace).bind(wanted).fetch_all(&mut *conn).await;
                (conn, rows)
            })
            .await?;
        // A row counts when it was live and belonged to one of the requested keys.
        let requested: HashSet<(&str, Option<&[u8]>)> = stored.iter().map(|s| (&*s.key, s.full)).collect();
        let present = rows
            .iter()
            .filter(|(key, full, live)| live.unwrap_or(false) && requested.contains(&(key.as_str(), full.as_deref())))
            .count();
        Ok(present as u64)
    }
}
