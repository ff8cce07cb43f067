//! How sqlx errors become cachestack errors, and which ones are worth another try.

use std::time::Duration;

use crate::error::Error;

pub(super) fn unavailable(backend: &str, source: impl Into<crate::error::BoxError>) -> Error {
    Error::BackendUnavailable { backend: backend.into(), source: source.into() }
}

/// Maps a sqlx error of the store named `backend`: connection trouble is
/// [`Error::BackendUnavailable`], a server-side statement timeout (after `timeout`) is
/// [`Error::Timeout`], the rest [`Error::Generic`].
pub(super) fn map_err(backend: &str, err: sqlx::Error, timeout: Duration) -> Error {
    match &err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => unavailable(backend, err),
        sqlx::Error::Configuration(_) => Error::config(format!("PostgreSQL connection settings: {err}")),
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            // 08: connection exception; 57P01-3: shutdown, crash, cannot connect now;
            // 53300: too many connections.
            if code.starts_with("08") || code.starts_with("57P") || code == "53300" {
                unavailable(backend, err)
            } else if code == "57014" {
                Error::Timeout { backend: backend.into(), after: timeout }
            } else {
                Error::Generic { backend: backend.into(), source: Box::new(err) }
            }
        }
        _ => Error::Generic { backend: backend.into(), source: Box::new(err) },
    }
}

/// An error from a connection the server closed (restart, idle kill, failover): worth one more
/// try on another connection. Failures to connect come back as `PoolTimedOut`, never retried.
pub(super) fn is_stale_connection(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            matches!(db.code().as_deref(), Some("57P01" | "57P02" | "08000" | "08003" | "08006"))
        }
        _ => false,
    }
}

/// An error after which the connection is still in step with the server (the server answered
/// the statement with an error), so it may go back to the pool.
pub(super) fn leaves_connection_usable(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(_) | sqlx::Error::RowNotFound | sqlx::Error::ColumnDecode { .. })
        && !is_stale_connection(err)
}

/// A concurrent creation by someone not holding cachestack's lock: unique_violation on the
/// catalog, duplicate_table, duplicate_object, duplicate_schema.
pub(super) fn is_duplicate(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("23505" | "42P07" | "42710" | "42P06")),
        _ => false,
    }
}
