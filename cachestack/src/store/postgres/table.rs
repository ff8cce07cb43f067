//! Table preparation: the schema, table and indexes are created on first use (once, under an
//! advisory lock), and an existing table is checked to be a cachestack table.

use sqlx::Connection;

use super::conn::Checkout;
use super::errors::is_duplicate;
use super::sql::REQUIRED_COLUMNS;
use super::Inner;
use crate::error::{Error, Result};

/// What table preparation learned.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ready {
    /// The database encoding cannot hold every Unicode key (neither UTF8 nor SQL_ASCII): store
    /// only ASCII keys as they are and hash the others.
    pub ascii_keys: bool,
}

struct Probe {
    table: bool,
    expires_index: bool,
    written_index: bool,
    schema: bool,
    encoding: String,
    persistence: Option<String>,
}

impl Inner {
    /// The table, prepared on first call (a call cancelled midway leaves it for the next one).
    pub(super) async fn ready(&self) -> Result<Ready> {
        Ok(*self.ready.get_or_try_init(|| self.prepare_table()).await?)
    }

    /// Makes sure the schema, table and indexes exist (creating them under an advisory lock) and
    /// that the table has cachestack's columns.
    async fn prepare_table(&self) -> Result<Ready> {
        let sized = self.trimmer.is_some();
        let mut probe = self.probe().await?;
        if probe.table {
            // Before any DDL touches it (an index on a column it lacks would be the first error).
            self.check_columns().await?;
        }
        let missing = |p: &Probe| !(p.table && p.expires_index && (p.written_index || !sized) && p.schema);
        if missing(&probe) {
            if !self.config.create_table {
                return Err(Error::config(format!(
                    "table {} (or its indexes) does not exist in {} and create_table is off",
                    self.sql.table, self.server
                )));
            }
            let mut attempt = 0;
            loop {
                match self.create_table(sized).await {
                    Ok(()) => break,
                    // Someone outside cachestack's lock created one of the objects at the same
                    // moment (IF NOT EXISTS does not cover a creation still in flight): now that
                    // it is committed, IF NOT EXISTS sees it.
                    Err(err) if is_duplicate(&err) && attempt < 3 => attempt += 1,
                    Err(err) => return Err(self.err(err)),
                }
            }
            probe = self.probe().await?;
            if missing(&probe) {
                return Err(Error::Generic {
                    backend: self.name().into(),
                    source: format!("table {} is still missing after creating it", self.sql.table).into(),
                });
            }
            self.check_columns().await?;
        }
        if probe.persistence.as_deref() == Some("p") && self.config.unlogged {
            tracing::warn!(table = %self.sql.table, "cachestack: `unlogged` is set but the existing table is a regular (logged) table");
        }
        let encoding = probe.encoding.to_ascii_uppercase();
        Ok(Ready { ascii_keys: encoding != "UTF8" && encoding != "SQL_ASCII" })
    }

    async fn probe(&self) -> Result<Probe> {
        let sql = &self.sql;
        let (table, expires_index, written_index, schema, encoding, persistence) = self
            .retry(|mut conn| async move {
                let row = sqlx::query_as::<_, (bool, bool, bool, bool, String, Option<String>)>(sql.probe)
                    .bind(&sql.table)
                    .bind(&sql.expires_index)
                    .bind(&sql.written_index)
                    .bind(sql.schema.as_deref())
                    .fetch_one(&mut *conn)
                    .await;
                (conn, row)
            })
            .await?;
        Ok(Probe { table, expires_index, written_index, schema, encoding, persistence })
    }

    async fn create_table(&self, sized: bool) -> std::result::Result<(), sqlx::Error> {
        let mut conn = Checkout::take(&self.pool.current()).await?;
        let result = async {
            let mut tx = conn.begin().await?;
            // Serialises creators of this table across processes; released at commit.
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(self.create_lock).execute(&mut *tx).await?;
            let mut statements: Vec<&str> = Vec::new();
            if let Some(create_schema) = &self.sql.create_schema {
                statements.push(create_schema);
            }
            statements.push(&self.sql.create_table);
            statements.push(&self.sql.create_expires_index);
            if sized {
                statements.push(&self.sql.create_written_index);
            }
            for statement in statements {
                sqlx::query(statement).persistent(false).execute(&mut *tx).await?;
            }
            tx.commit().await
        }
        .await;
        conn.settle(&result);
        result?;
        tracing::debug!(table = %self.sql.table, server = %self.server, "cachestack: cache table ready");
        Ok(())
    }

    async fn check_columns(&self) -> Result<()> {
        let sql = &self.sql;
        let columns: Vec<(String, String)> = self
            .retry(|mut conn| async move {
                let rows = sqlx::query_as(sql.columns).bind(&sql.table).fetch_all(&mut *conn).await;
                (conn, rows)
            })
            .await?;
        let wrong: Vec<String> = REQUIRED_COLUMNS
            .iter()
            .filter(|(name, ty)| !columns.iter().any(|(n, t)| n == name && t == ty))
            .map(|(name, ty)| format!("{name} {ty}"))
            .collect();
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(Error::config(format!(
                "table {} in {} is not a cachestack cache table (missing or mistyped: {}); choose another table name",
                self.sql.table,
                self.server,
                wrong.join(", ")
            )))
        }
    }
}
