//! Connections under the one I/O rule: a statement's connection is closed, never returned to the
//! pool, when the statement did not finish.
//!
//! [`crate::rt::io`] aborts an operation's task when the caller stops waiting (or the timeout
//! layer gives up). sqlx is not cancel-safe mid-statement: a connection dropped while a statement
//! is in flight still has that statement's replies coming, and sqlx would return it to the pool
//! and have the next user drain them (waiting for the abandoned statement). Every statement
//! therefore runs on a [`Checkout`], which marks its pooled connection `close_on_drop` unless the
//! statement finished (or the server answered it with an error, which leaves the connection in
//! step): an aborted operation closes its connection, the pool opens a fresh one when needed,
//! and the server stops the abandoned statement at `statement_timeout` at the latest.
//!
//! Each operation's statements run on the pool of the store's [`Recycler`](crate::store::recycle):
//! when operations in a row get no answer (a statement cut off by the timeout, or no connection
//! in time), the pool is replaced by a new one and the old one closed, so the connections a silent
//! failover left half-open (and sqlx's unbounded ping of a connection it takes back) are given up
//! on after a couple of timeouts instead of one timeout each, or the kernel's minutes.

use std::future::Future;
use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};

use super::errors::{is_stale_connection, leaves_connection_usable};
use super::Inner;
use crate::error::Result;

/// A pooled connection taken for one statement (or one transaction): closed when dropped unless
/// [`Checkout::finished`] was called.
pub(super) struct Checkout {
    conn: PoolConnection<Postgres>,
    finished: bool,
}

impl Checkout {
    /// A connection from `pool`, waiting at most the pool's acquire timeout.
    pub(super) async fn take(pool: &PgPool) -> std::result::Result<Self, sqlx::Error> {
        Ok(Checkout { conn: pool.acquire().await?, finished: false })
    }

    /// The statement ended with `result`: keep the connection when the server's replies were
    /// all read (success, or an error the server reported).
    pub(super) fn settle<T>(&mut self, result: &std::result::Result<T, sqlx::Error>) {
        self.finished = match result {
            Ok(_) => true,
            Err(err) => leaves_connection_usable(err),
        };
    }
}

impl Checkout {
    /// Closes the connection when dropped from now on, even after a finished statement (until
    /// [`Checkout::settle`] keeps it again): for a connection whose session holds an advisory
    /// lock, which must never go back to the pool with it.
    pub(super) fn hold(&mut self) {
        self.finished = false;
    }
}

impl Deref for Checkout {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for Checkout {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if !self.finished {
            // Dropped mid-statement (an aborted operation) or after a broken exchange: sqlx
            // closes it instead of handing it to the next user.
            self.conn.close_on_drop();
        }
    }
}

impl Inner {
    /// Runs one statement on a [`Checkout`], again on another connection when it failed on a
    /// pooled connection that the server had closed (after a server restart, every idle
    /// connection is such a one; pinging each before use would double the round trips of every
    /// operation). The statements retried are idempotent; the caller's timeout bounds the
    /// attempts, and at most `pool_max` are made.
    ///
    /// `attempt` gets the connection and gives it back with the statement's result.
    pub(super) async fn retry<T, F, Fut>(&self, attempt: F) -> Result<T>
    where
        F: FnMut(Checkout) -> Fut,
        Fut: Future<Output = (Checkout, std::result::Result<T, sqlx::Error>)>,
    {
        self.attempts(self.config.pool_max, attempt).await
    }

    /// Like [`Self::retry`], for a statement that is not idempotent: one attempt only.
    pub(super) async fn once<T, F, Fut>(&self, attempt: F) -> Result<T>
    where
        F: FnMut(Checkout) -> Fut,
        Fut: Future<Output = (Checkout, std::result::Result<T, sqlx::Error>)>,
    {
        self.attempts(0, attempt).await
    }

    async fn attempts<T, F, Fut>(&self, retries: u32, mut attempt: F) -> Result<T>
    where
        F: FnMut(Checkout) -> Fut,
        Fut: Future<Output = (Checkout, std::result::Result<T, sqlx::Error>)>,
    {
        let request = self.pool.request();
        let mut tries = 0;
        let outcome = loop {
            let conn = match Checkout::take(&request.conn).await {
                Ok(conn) => conn,
                Err(err) => break Err(err),
            };
            let (mut conn, result) = attempt(conn).await;
            conn.settle(&result);
            drop(conn);
            match result {
                Ok(value) => break Ok(value),
                Err(err) if is_stale_connection(&err) && tries < retries => {
                    tries += 1;
                    tracing::debug!(error = %err, "cachestack: postgres connection was closed by the server; retrying on another");
                }
                Err(err) => break Err(err),
            }
        };
        match &outcome {
            Ok(_) => request.answered(),
            Err(err) if leaves_connection_usable(err) => request.answered(),
            // No connection in time: every pooled one busy, or stuck (half-open).
            Err(sqlx::Error::PoolTimedOut) => request.stalled(),
            Err(_) => request.failed(),
        }
        outcome.map_err(|e| self.err(e))
    }
}
