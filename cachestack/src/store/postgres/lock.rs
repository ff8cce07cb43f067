//! The lock of [`PostgresStore`] ([`LockOps`]): a session-level advisory lock
//! (`pg_try_advisory_lock`) on a 64-bit hash of the table, the namespace and the key, held on a
//! pooled connection that the holder keeps for as long as it holds the lock.
//!
//! - Release: `pg_advisory_unlock`, then the connection goes back to the pool.
//! - A holder dropped without releasing (a cancelled or panicking leader) closes its connection
//!   instead of returning it ([`Checkout`] marks it so), and the server ends the session's locks.
//! - A holder process that dies loses its connection, and with it the lock: the server releases
//!   it when it notices the session is gone (at once for a killed process, whose kernel closes
//!   the socket).
//! - Renewal is a round trip on the held connection (the session, not a lease, keeps the lock):
//!   when it fails the lock is reported lost.
//!
//! The holder's connection counts against the pool's size while it computes.

use std::time::Duration;

use async_trait::async_trait;

use super::conn::Checkout;
use super::{lock_key, Inner, PostgresStore};
use crate::error::Result;
use crate::layer::within;
use crate::store::{LockGuard, LockOps};

impl PostgresStore {
    /// The advisory-lock key of the lock `name` (a hash of the table, the namespace and `name`).
    pub fn advisory_key(&self, name: &str) -> i64 {
        let inner = &self.inner;
        lock_key(&format!("cachestack:lock:{}:{}:{name}", inner.sql.table, inner.config.settings.namespace))
    }
}

#[async_trait]
impl LockOps for PostgresStore {
    async fn try_lock(&self, name: &str, _lease: Duration) -> Result<Option<Box<dyn LockGuard>>> {
        let key = self.advisory_key(name);
        let inner = self.inner.clone();
        crate::rt::io(self.inner.name(), async move {
            let request = inner.pool.request();
            let taken = async {
                let mut conn = Checkout::take(&request.conn).await?;
                let result = sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
                    .bind(key)
                    .fetch_one(&mut *conn)
                    .await;
                conn.settle(&result);
                Ok::<_, sqlx::Error>((conn, result?))
            }
            .await;
            match taken {
                Ok((mut conn, taken)) => {
                    request.answered();
                    conn.hold();
                    Ok(taken.then(|| Box::new(PostgresLock { inner: inner.clone(), conn, key }) as Box<dyn LockGuard>))
                }
                Err(err) => {
                    request.failed();
                    Err(inner.err(err))
                }
            }
        })
        .await
    }
}

/// An advisory lock this process holds, with the connection whose session holds it.
struct PostgresLock {
    inner: std::sync::Arc<Inner>,
    conn: Checkout,
    key: i64,
}

impl std::fmt::Debug for PostgresLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresLock").field("key", &self.key).finish_non_exhaustive()
    }
}

#[async_trait]
impl LockGuard for PostgresLock {
    async fn renew(&mut self, _lease: Duration) -> Result<bool> {
        let (name, limit) = (self.inner.config.settings.name.clone(), self.inner.config.timeouts.operation);
        let ping = async {
            // (Not settled: the connection holds the lock, and closes if dropped.)
            let result = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&mut *self.conn).await;
            result.map_err(|err| self.inner.err(err))
        };
        // A session that does not answer may be gone, and its lock with it.
        Ok(within(&name, limit, ping).await.is_ok())
    }

    async fn release(mut self: Box<Self>) -> Result<()> {
        let (name, limit) = (self.inner.config.settings.name.clone(), self.inner.config.timeouts.operation);
        let key = self.key;
        let unlock = async {
            let result = sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock($1)")
                .bind(key)
                .fetch_one(&mut *self.conn)
                .await;
            // Only a clean unlock returns the connection to the pool; otherwise it is closed,
            // which ends the session's locks.
            if result.as_ref().is_ok_and(|unlocked| *unlocked) {
                self.conn.settle(&result);
            }
            result.map(drop).map_err(|err| self.inner.err(err))
        };
        within(&name, limit, unlock).await
    }
}
