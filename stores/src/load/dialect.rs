//! What the load protocol (`protocol`) and the refresh by difference (`diff`) run on: each
//! engine's [`Dialect`] inside a transaction, the [`Conn`] calls every sqlx engine answers the same
//! way, and the marker rows (`wf_loads`) that make a load exactly-once.

use super::{StoreLoad, TableLoad, TableReport};
use crate::error::StoreError;
use crate::schema::Table;
use crate::subset::{Key, KEY_BATCH};
use std::path::Path;

/// One table written: its report, and which rows' break columns to set afterwards (`None`: every
/// staged row; only read when the table has break columns).
pub(crate) struct Written {
    pub report: TableReport,
    pub touched: Option<Vec<Key>>,
}

/// What one engine does inside the protocol's transaction.
#[async_trait::async_trait]
pub(crate) trait Dialect: Send {
    /// The connection holding the transaction.
    fn conn(&mut self) -> &mut dyn Conn;
    /// The statements that open the transaction, foreign-key checks deferred to commit as far
    /// as the engine allows.
    const BEGIN: &'static [&'static str];
    /// The error of a failed commit of store `.0` (deferred checks run there), naming what broke.
    const COMMIT_ERROR: fn(&str, sqlx::Error) -> StoreError;
    /// Creates the marker table `wf_loads` if it is missing.
    const CREATE_MARKERS: &'static str;
    /// One row `(name, n)`, `n` > 0 when the marker table exists (no load ever ran here when it
    /// does not).
    const HAS_MARKERS: &'static str;
    /// Before the first table: CERT's user triggers, as configured.
    async fn before_tables(&mut self, _job: &StoreLoad) -> Result<(), StoreError> {
        Ok(())
    }
    /// Writes one staged table (break columns NULL) by its strategy, and its manifest.
    async fn write_table(
        &mut self,
        n: usize,
        t: &TableLoad,
        manifests: &Path,
    ) -> Result<Written, StoreError>;
    /// Sets the break columns of `t`'s rows `keys` (`None`: every staged row) from the staging.
    async fn set_break_columns(
        &mut self,
        _t: &TableLoad,
        _keys: Option<&[Key]>,
    ) -> Result<(), StoreError> {
        Ok(())
    }
    /// After the last table: triggers back on, sequences past the loaded values (not in a dry run).
    async fn after_tables(&mut self, _job: &StoreLoad) -> Result<(), StoreError> {
        Ok(())
    }
    /// Sets the break columns of rows `keys` of `t` NULL (rollback of a cycle).
    async fn null_break_columns(
        &mut self,
        _t: &TableLoad,
        _keys: &[Key],
    ) -> Result<(), StoreError> {
        Ok(())
    }
    /// Before a rollback's deletes from `tables`: what makes them fast (see `pg_fk_index`); the
    /// names of what `after_deletes` must undo.
    async fn before_deletes(&mut self, _tables: &[&Table]) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }
    /// After a rollback's deletes, undoes `before_deletes`.
    async fn after_deletes(&mut self, _made: &[String]) -> Result<(), StoreError> {
        Ok(())
    }
    /// Keys per `delete_keys` call: statements binding one parameter per key value stay at
    /// `KEY_BATCH`; engines that bind whole arrays take more at once.
    const DELETE_BATCH: usize = KEY_BATCH;
    /// Deletes the rows of `table` with keys `keys` (at most `DELETE_BATCH`); rows deleted.
    async fn delete_keys(&mut self, table: &Table, keys: &[Key]) -> Result<u64, StoreError>;
    /// How many of `keys` are rows of `table` now.
    async fn count_keys(&mut self, table: &Table, keys: &[Key]) -> Result<u64, StoreError>;
}

/// The marker statements, in `$n` placeholders, which SQLite accepts as well as PostgreSQL.
pub(crate) const SELECT_MARKERS: &str = "select tbl, rows from wf_loads where run_key = $1";
pub(crate) const INSERT_MARKER: &str =
    "insert into wf_loads (run_key, store, tbl, sha256, rows) values ($1, $2, $3, $4, $5)";
pub(crate) const DELETE_MARKERS: &str = "delete from wf_loads where run_key = $1";

/// The marker rows `(table, rows)` of `run_key`; none when no load ever ran here.
pub(crate) async fn markers<D: Dialect>(
    d: &mut D,
    store: &str,
    run_key: &str,
) -> Result<Vec<(String, i64)>, StoreError> {
    let err = |e| StoreError::from_sqlx(store, e);
    let has = d.conn().rows(D::HAS_MARKERS, &[], None).await;
    if !has.map_err(err)?.iter().any(|(_, n)| *n > 0) {
        return Ok(Vec::new());
    }
    let rows = d.conn().rows(SELECT_MARKERS, &[run_key], None).await;
    rows.map_err(err)
}

/// What the protocol runs on a dialect's connection: the same calls on every sqlx engine.
#[async_trait::async_trait]
pub(crate) trait Conn: Send {
    /// Runs statements without parameters.
    async fn run(&mut self, sql: &str) -> Result<(), sqlx::Error>;
    /// Runs `sql` binding `texts`, then `rows` if given; the `(text, number)` rows it returns
    /// (none for a write).
    async fn rows(
        &mut self,
        sql: &'static str,
        texts: &[&str],
        rows: Option<i64>,
    ) -> Result<Vec<(String, i64)>, sqlx::Error>;
    /// The single number `sql` returns.
    async fn scalar(&mut self, sql: &str) -> Result<i64, sqlx::Error>;
}

/// `Conn` for the pooled connections of the sqlx engines named, written once.
macro_rules! sqlx_conn {
    ($($db:ty),*) => {$(
        #[async_trait::async_trait]
        impl Conn for sqlx::pool::PoolConnection<$db> {
            async fn run(&mut self, sql: &str) -> Result<(), sqlx::Error> {
                let sql = sqlx::AssertSqlSafe(sql.to_string());
                sqlx::raw_sql(sql).execute(&mut **self).await.map(|_| ())
            }

            async fn rows(
                &mut self,
                sql: &'static str,
                texts: &[&str],
                rows: Option<i64>,
            ) -> Result<Vec<(String, i64)>, sqlx::Error> {
                let mut q = sqlx::query_as(sql);
                for t in texts {
                    q = q.bind(t.to_string());
                }
                if let Some(n) = rows {
                    q = q.bind(n);
                }
                q.fetch_all(&mut **self).await
            }

            async fn scalar(&mut self, sql: &str) -> Result<i64, sqlx::Error> {
                let sql = sqlx::AssertSqlSafe(sql.to_string());
                sqlx::query_scalar(sql).fetch_one(&mut **self).await
            }
        }
    )*};
}
sqlx_conn!(sqlx::Postgres, sqlx::Sqlite);
