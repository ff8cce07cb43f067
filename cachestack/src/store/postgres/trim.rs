//! Batched deletion: `clear`, `purge_expired`, and the size bounds (`max_entries`, `max_bytes`)
//! enforced by a background task, one process at a time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::Connection;
use tokio::sync::Notify;

use super::conn::Checkout;
use super::sql::Sql;
use super::Inner;
use crate::error::Result;
use crate::layer::within;

/// Wakes the background trim task.
#[derive(Debug)]
pub(super) struct Trimmer {
    notify: Notify,
    writes: AtomicU64,
    every: u64,
    closed: AtomicBool,
}

impl Trimmer {
    /// A trimmer that wakes after every `max_entries / 10` writes (1000 for a bytes-only bound).
    pub(super) fn new(max_entries: Option<u64>) -> Self {
        let every = match max_entries {
            Some(n) => (n / 10).clamp(1, 10_000),
            None => 1000,
        };
        Trimmer { notify: Notify::new(), writes: AtomicU64::new(0), every, closed: AtomicBool::new(false) }
    }

    pub(super) fn note_writes(&self, n: u64) {
        if self.writes.fetch_add(n, Relaxed).saturating_add(n) >= self.every {
            self.writes.store(0, Relaxed);
            self.notify.notify_one();
        }
    }

    /// Ends the background task.
    pub(super) fn close(&self) {
        self.closed.store(true, Relaxed);
        self.notify.notify_one();
    }
}

/// Background size-bound enforcement: runs after enough local writes or every `interval`,
/// until the store is dropped.
pub(super) async fn trim_loop(inner: Weak<Inner>, trimmer: Arc<Trimmer>, interval: Duration) {
    loop {
        // Woken by local writes, or by the interval passing.
        let _ = tokio::time::timeout(interval, trimmer.notify.notified()).await;
        if trimmer.closed.load(Relaxed) {
            return;
        }
        let Some(inner) = inner.upgrade() else { return };
        if let Err(err) = inner.trim_pass(false).await {
            // Not behind the store's layers: counted here.
            inner.counters.record_error();
            tracing::warn!(table = %inner.sql.table, error = %err, "cachestack: background trim failed");
        }
    }
}

impl Inner {
    /// One batch of `sql` (`$1` namespace, `$2` limit); returns the rows deleted.
    async fn delete_batch(&self, sql: &str) -> Result<u64> {
        let (namespace, limit) = (&self.config.settings.namespace, i64::from(self.config.batch_size));
        let done = self
            .retry(|mut conn| async move {
                let done = sqlx::query(sql).bind(namespace).bind(limit).execute(&mut *conn).await;
                (conn, done)
            })
            .await?;
        Ok(done.rows_affected())
    }

    /// Deletes in batches until a batch comes back short; each batch is bounded by the
    /// configured timeout.
    pub(super) async fn delete_all(&self, which: fn(&Sql) -> &str) -> Result<u64> {
        let mut total: u64 = 0;
        loop {
            let n = within(self.name(), self.config.timeouts.operation, async {
                self.ready().await?;
                self.delete_batch(which(&self.sql)).await
            })
            .await?;
            total = total.saturating_add(n);
            if n < u64::from(self.config.batch_size) {
                return Ok(total);
            }
        }
    }

    /// Purges expired rows, then deletes the oldest rows above the size bounds (one process at
    /// a time: with `wait`, after the one trimming now; without, the pass ends if another is
    /// trimming). Returns the rows deleted; only the second kind count as evictions.
    pub(super) async fn trim_pass(&self, wait: bool) -> Result<u64> {
        let purged = self.delete_all(|sql| &sql.purge_batch).await?;
        if self.trimmer.is_none() {
            return Ok(purged);
        }
        let mut evicted: u64 = 0;
        loop {
            let n = within(self.name(), self.config.timeouts.operation, async {
                self.ready().await?;
                self.trim_batch(wait).await
            })
            .await?;
            let Some(n) = n else { break };
            evicted = evicted.saturating_add(n);
            if n < u64::from(self.config.batch_size) {
                break;
            }
        }
        self.counters.record_evictions(evicted);
        if evicted > 0 {
            tracing::debug!(table = %self.sql.table, namespace = %self.config.settings.namespace, evicted, "cachestack: trimmed to the size bound");
        }
        Ok(purged.saturating_add(evicted))
    }

    /// One trim batch, or `None` when another process holds the trim lock and `wait` is off.
    async fn trim_batch(&self, wait: bool) -> Result<Option<u64>> {
        let to_i64 = |bound: Option<u64>| bound.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
        let mut conn = Checkout::take(&self.pool.current()).await.map_err(|e| self.err(e))?;
        let result = async {
            let mut tx = conn.begin().await?;
            let lock = if wait {
                "SELECT pg_advisory_xact_lock($1) IS NOT NULL"
            } else {
                "SELECT pg_try_advisory_xact_lock($1)"
            };
            let locked: bool = sqlx::query_scalar(lock).bind(self.trim_lock).fetch_one(&mut *tx).await?;
            if !locked {
                tx.rollback().await?;
                return Ok(None);
            }
            let done = sqlx::query(&self.sql.trim_batch)
                .bind(&self.config.settings.namespace)
                .bind(to_i64(self.config.max_entries))
                .bind(to_i64(self.config.max_bytes))
                .bind(i64::from(self.config.batch_size))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Some(done.rows_affected()))
        }
        .await;
        conn.settle(&result);
        result.map_err(|e| self.err(e))
    }
}
