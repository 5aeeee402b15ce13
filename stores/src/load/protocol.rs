//! The exactly-once load protocol and its rollback, written once for every engine. One
//! transaction per store: check the run's marker (found: an earlier execution committed, nothing to
//! do) → write the tables in load order, each with its manifest of inserted keys → set the cycles'
//! break columns → write one marker row per table → run the business rules → commit (or roll back
//! for a dry run or any error). Rollback: nothing unless the marker committed, nothing unless every
//! manifest matches its marker, then break columns NULL, rows deleted children first, markers gone,
//! in one transaction. What differs per engine — how rows are written, keys matched, errors named —
//! is its [`Dialect`]: PostgreSQL's COPY, SQLite's multi-row inserts.

use super::{check_count_sql, check_manifests, check_outcome, read_manifest};
use super::{LoadReport, StoreLoad, TableLoad, TableReport};
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
    /// The store's name, for errors.
    fn store(&self) -> &str;
    /// Opens the transaction, foreign-key checks deferred to commit as far as the engine allows.
    async fn begin(&mut self) -> Result<(), StoreError>;
    /// Commits (deferred checks run here) or rolls back.
    async fn end(&mut self, commit: bool) -> Result<(), StoreError>;
    /// The marker rows `(table, rows)` of `run_key`; none when no load ever ran here.
    async fn markers(&mut self, run_key: &str) -> Result<Vec<(String, i64)>, StoreError>;
    /// Creates the marker table if it is missing.
    async fn create_markers(&mut self) -> Result<(), StoreError>;
    /// Records that `run_key` loaded `rows` rows of `table` from the file with `sha256`.
    async fn add_marker(
        &mut self,
        run_key: &str,
        table: &str,
        rows: u64,
        sha256: &str,
    ) -> Result<(), StoreError>;
    /// Deletes the marker rows of `run_key`.
    async fn drop_markers(&mut self, run_key: &str) -> Result<(), StoreError>;
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
    /// The single number a business rule's count query returns.
    async fn count(&mut self, rule: &str, sql: &str) -> Result<i64, StoreError>;
    /// Sets the break columns of rows `keys` of `t` NULL (rollback of a cycle).
    async fn null_break_columns(
        &mut self,
        _t: &TableLoad,
        _keys: &[Key],
    ) -> Result<(), StoreError> {
        Ok(())
    }
    /// Deletes the rows of `table` with keys `keys` (at most `KEY_BATCH`); rows deleted.
    async fn delete_keys(&mut self, table: &Table, keys: &[Key]) -> Result<u64, StoreError>;
}

/// Loads `job` through `d` in one transaction; see the module docs.
pub(crate) async fn load<D: Dialect>(d: &mut D, job: &StoreLoad) -> Result<LoadReport, StoreError> {
    d.begin().await?;
    let result = load_in_tx(d, job).await;
    let commit = !job.dry_run && result.as_ref().is_ok_and(|r| !r.already_loaded);
    let ended = d.end(commit).await;
    let report = result?;
    ended?;
    Ok(report)
}

async fn load_in_tx<D: Dialect>(d: &mut D, job: &StoreLoad) -> Result<LoadReport, StoreError> {
    if !d.markers(&job.run_key).await?.is_empty() {
        return Ok(LoadReport {
            already_loaded: true,
            tables: Vec::new(),
            checks: Vec::new(),
        });
    }
    d.create_markers().await?;
    d.before_tables(job).await?;
    let mut reports = Vec::new();
    let mut breaks = Vec::new();
    for (n, t) in job.tables.iter().enumerate() {
        let w = d.write_table(n, t, &job.manifest_dir).await?;
        if !t.deferred.is_empty() {
            breaks.push((t, w.touched));
        }
        reports.push(w.report);
    }
    for (t, keys) in breaks {
        d.set_break_columns(t, keys.as_deref()).await?;
    }
    d.after_tables(job).await?;
    for (t, r) in job.tables.iter().zip(&reports) {
        d.add_marker(&job.run_key, &t.table.name, r.inserted, &t.sha256)
            .await?;
    }
    let mut counted = Vec::new();
    for c in &job.checks {
        counted.push((c, d.count(&c.name, &check_count_sql(c)).await?));
    }
    let checks = check_outcome(d.store(), counted)?;
    Ok(LoadReport {
        already_loaded: false,
        tables: reports,
        checks,
    })
}

/// Deletes what `job` loaded through `d`, if that load committed; rows deleted per table.
pub(crate) async fn rollback<D: Dialect>(
    d: &mut D,
    job: &StoreLoad,
) -> Result<Vec<(String, u64)>, StoreError> {
    d.begin().await?;
    let result = rollback_in_tx(d, job).await;
    let commit = result.as_ref().is_ok_and(|r| !r.is_empty());
    let ended = d.end(commit).await;
    let deleted = result?;
    ended?;
    Ok(deleted)
}

async fn rollback_in_tx<D: Dialect>(
    d: &mut D,
    job: &StoreLoad,
) -> Result<Vec<(String, u64)>, StoreError> {
    let marked = d.markers(&job.run_key).await?;
    if marked.is_empty() {
        return Ok(Vec::new());
    }
    let (tables, dir) = (&job.tables, &job.manifest_dir);
    // Nothing is deleted (and the markers stay) unless every manifest matches its marker.
    check_manifests(d.store(), tables, dir, &marked)?;
    // Break the cycles first: NULL the break columns of the rows about to go.
    for t in tables.iter().filter(|t| !t.deferred.is_empty()) {
        for chunk in read_manifest(dir, &t.table)?.chunks(KEY_BATCH) {
            d.null_break_columns(t, chunk).await?;
        }
    }
    let mut deleted = Vec::new();
    for t in tables.iter().rev() {
        let mut n = 0;
        for chunk in read_manifest(dir, &t.table)?.chunks(KEY_BATCH) {
            n += d.delete_keys(&t.table, chunk).await?;
        }
        deleted.push((t.table.id(), n));
    }
    d.drop_markers(&job.run_key).await?;
    Ok(deleted)
}

/// The marker statements, in `$n` placeholders, which SQLite accepts as well as PostgreSQL.
pub(crate) const SELECT_MARKERS: &str = "select tbl, rows from wf_loads where run_key = $1";
pub(crate) const INSERT_MARKER: &str =
    "insert into wf_loads (run_key, store, tbl, sha256, rows) values ($1, $2, $3, $4, $5)";
pub(crate) const DELETE_MARKERS: &str = "delete from wf_loads where run_key = $1";

/// The marker rows `(table, rows)` of `run_key` through `exec` (the table exists).
pub(crate) async fn select_markers<'e, DB, E>(
    exec: E,
    run_key: &str,
) -> Result<Vec<(String, i64)>, sqlx::Error>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'e, Database = DB>,
    String: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    (String, i64): for<'r> sqlx::FromRow<'r, DB::Row>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
{
    sqlx::query_as(SELECT_MARKERS)
        .bind(run_key.to_string())
        .fetch_all(exec)
        .await
}

/// Runs a marker statement binding `texts`, then `rows` if given (`INSERT_MARKER`,
/// `DELETE_MARKERS`).
pub(crate) async fn marker_statement<'e, DB, E>(
    exec: E,
    sql: &'static str,
    texts: &[&str],
    rows: Option<i64>,
) -> Result<(), sqlx::Error>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'e, Database = DB>,
    String: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
{
    let mut q = sqlx::query(sql);
    for t in texts {
        q = q.bind(t.to_string());
    }
    if let Some(n) = rows {
        q = q.bind(n);
    }
    q.execute(exec).await.map(|_| ())
}
