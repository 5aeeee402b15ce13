//! The exactly-once load protocol and its rollback, written once for every engine. One
//! transaction per store: check the run's marker (found: an earlier execution committed, nothing to
//! do) → write the tables in load order, each with its manifest of inserted keys → set the cycles'
//! break columns → write one marker row per table → run the business rules → commit (or roll back
//! for a dry run or any error). Rollback: nothing unless the marker committed, nothing unless every
//! manifest matches its marker, then break columns NULL, rows deleted children first, markers gone,
//! in one transaction. What differs per engine — how rows are written, keys matched, errors named —
//! is its [`Dialect`]: PostgreSQL's COPY, SQLite's multi-row inserts.

use super::dialect::{markers, DELETE_MARKERS, INSERT_MARKER};
pub(crate) use super::dialect::{Conn, Dialect, Written};
use super::diff_parts::TableDiff;
use super::manifest::{check_manifests, read_manifest};
use super::{check_count_sql, check_outcome};
use super::{LoadReport, StoreLoad, TableReport};
use crate::error::StoreError;
use crate::schema::Table;
use crate::subset::{Key, KEY_BATCH};

/// What a rollback of `job` would delete now, per table: the keys of its manifests still in
/// CERT (a tester may have deleted some); nothing when its load never committed here.
pub(crate) async fn preview<D: Dialect>(
    d: &mut D,
    job: &StoreLoad,
) -> Result<Vec<(String, u64)>, StoreError> {
    let marked = markers(d, &job.store, &job.run_key).await?;
    if marked.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for t in &job.tables {
        let mut n = 0;
        for chunk in read_manifest(&job.manifest_dir, &t.table)?.chunks(D::DELETE_BATCH) {
            n += d.count_keys(&t.table, chunk).await?;
        }
        out.push((t.table.id(), n));
    }
    Ok(out)
}

/// Loads `job` through `d` in one transaction; see the module docs.
pub(crate) async fn load<D: Dialect>(d: &mut D, job: &StoreLoad) -> Result<LoadReport, StoreError> {
    let result = begin_and_load(d, job).await;
    let commit = !job.dry_run && result.as_ref().is_ok_and(|r| !r.already_loaded);
    let ended = end(d, &job.store, commit).await;
    let report = result?;
    ended?;
    Ok(report)
}

/// Begins the transaction and loads `job` in it; a refresh by difference that CERT refuses (a
/// unique value moved from one of the run's rows to another, say) is rolled back and the same
/// transaction written again, replacing the district whole.
async fn begin_and_load<D: Dialect>(d: &mut D, job: &StoreLoad) -> Result<LoadReport, StoreError> {
    let diffs = super::diff::prepare(job);
    begin(d, &job.store).await?;
    let result = load_in_tx(d, job, diffs.as_deref()).await;
    match (result, diffs) {
        (Err(e), Some(_)) => {
            tracing::warn!(store = %job.store, "the refresh by difference failed ({e}); replacing the district whole");
            end(d, &job.store, false).await?;
            begin(d, &job.store).await?;
            load_in_tx(d, job, None).await
        }
        (result, _) => result,
    }
    .map_err(|e| damaged_instead(job, e))
}

/// A load that stopped early may have stopped on a damaged file's bytes (a constraint a changed
/// value violates) before its reader reached the end, where the file is checked against its
/// recorded digest: a staged file that no longer matches is the error, so the step that wrote
/// it runs again.
fn damaged_instead(job: &StoreLoad, e: StoreError) -> StoreError {
    if matches!(e, StoreError::Corrupt { .. }) || e.is_retryable() {
        return e;
    }
    for t in job.tables.iter().filter(|t| !t.sha256.is_empty()) {
        if let Some(m) = crate::verified::differs(&t.file, &t.sha256) {
            return StoreError::Corrupt {
                path: t.file.clone(),
                message: m.to_string(),
            };
        }
    }
    e
}

/// Loads `job` through `d` in one transaction and runs its rules, but leaves the transaction
/// open: the caller commits it once every other check passed (the validation gate hands it to
/// the store's load step), or drops it. A store where the run's markers already committed gets
/// its report and nothing to commit.
pub(crate) async fn load_held<D: Dialect + 'static>(
    mut d: D,
    job: &StoreLoad,
) -> Result<super::HeldLoad, StoreError> {
    match begin_and_load(&mut d, job).await {
        Ok(report) if report.already_loaded => {
            end(&mut d, &job.store, false).await?;
            Ok(super::HeldLoad::new(report, None))
        }
        Ok(report) => {
            let tx = Held {
                d,
                store: job.store.clone(),
            };
            Ok(super::HeldLoad::new(report, Some(Box::new(tx))))
        }
        Err(e) => {
            let _ = end(&mut d, &job.store, false).await;
            Err(e)
        }
    }
}

/// An open load transaction of one store.
#[async_trait::async_trait]
pub(crate) trait HeldTx: Send {
    async fn end(self: Box<Self>, commit: bool) -> Result<(), StoreError>;
}

struct Held<D: Dialect> {
    d: D,
    store: String,
}

#[async_trait::async_trait]
impl<D: Dialect + 'static> HeldTx for Held<D> {
    async fn end(mut self: Box<Self>, commit: bool) -> Result<(), StoreError> {
        let store = self.store.clone();
        end(&mut self.d, &store, commit).await
    }
}

/// Writes every staged row of `job` (a refresh deletes the earlier run's rows first); each
/// table's report and the rows its marker counts.
async fn write_whole<D: Dialect>(
    d: &mut D,
    job: &StoreLoad,
) -> Result<Vec<(TableReport, u64)>, StoreError> {
    if let Some(earlier) = &job.replaces {
        // A refresh: the earlier run's rows go in this transaction (nothing if it is not here,
        // say rolled back meanwhile), so readers see the old district or the new, never both.
        rollback_in_tx(d, earlier).await?;
    }
    d.before_tables(job).await?;
    let mut reports = Vec::new();
    let mut breaks = Vec::new();
    for (n, t) in job.tables.iter().enumerate() {
        let w = d.write_table(n, t, &job.manifest_dir).await?;
        if !t.deferred.is_empty() {
            breaks.push((t, w.touched));
        }
        let inserted = w.report.inserted;
        reports.push((w.report, inserted));
    }
    for (t, keys) in breaks {
        d.set_break_columns(t, keys.as_deref()).await?;
    }
    d.after_tables(job).await?;
    Ok(reports)
}

/// The protocol inside the transaction; a refresh by difference writes `diffs` (see `diff`).
async fn load_in_tx<D: Dialect>(
    d: &mut D,
    job: &StoreLoad,
    diffs: Option<&[TableDiff]>,
) -> Result<LoadReport, StoreError> {
    let marked = markers(d, &job.store, &job.run_key).await?;
    if !marked.is_empty() {
        // Loaded before (a resume after the commit): the marker rows say what went in.
        let tables = job
            .tables
            .iter()
            .filter_map(|t| {
                let (_, rows) = marked.iter().find(|(name, _)| *name == t.table.name)?;
                let rows = u64::try_from(*rows).unwrap_or(0);
                Some(TableReport {
                    table: t.table.id(),
                    rows_in_file: rows,
                    inserted: rows,
                })
            })
            .collect();
        return Ok(LoadReport {
            already_loaded: true,
            tables,
            checks: Vec::new(),
        });
    }
    let created = d.conn().run(D::CREATE_MARKERS).await;
    created.map_err(|e| StoreError::from_sqlx(&job.store, e))?;
    let by_difference = match (&job.replaces, diffs) {
        (Some(earlier), Some(diffs)) => super::diff_tx::write_in_tx(d, job, earlier, diffs).await?,
        _ => None,
    };
    let written = match by_difference {
        Some(written) => written,
        None => write_whole(d, job).await?,
    };
    let mut reports = Vec::new();
    for (t, (r, marked)) in job.tables.iter().zip(written) {
        let texts = [job.run_key.as_str(), &job.store, &t.table.name, &t.sha256];
        let added = d
            .conn()
            .rows(INSERT_MARKER, &texts, Some(marked as i64))
            .await;
        added.map_err(|e| StoreError::from_sqlx(&job.store, e))?;
        reports.push(r);
    }
    let mut counted = Vec::new();
    for c in &job.checks {
        let n = d.conn().scalar(&check_count_sql(c)).await;
        let n = n.map_err(|e| StoreError::Query {
            store: job.store.clone(),
            message: format!("validation rule `{}`: {e}", c.name),
        })?;
        counted.push((c, n));
    }
    let checks = check_outcome(&job.store, counted)?;
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
    begin(d, &job.store).await?;
    let result = rollback_in_tx(d, job).await;
    let commit = result.as_ref().is_ok_and(|r| !r.is_empty());
    let ended = end(d, &job.store, commit).await;
    let deleted = result?;
    ended?;
    Ok(deleted)
}

async fn rollback_in_tx<D: Dialect>(
    d: &mut D,
    job: &StoreLoad,
) -> Result<Vec<(String, u64)>, StoreError> {
    let marked = markers(d, &job.store, &job.run_key).await?;
    if marked.is_empty() {
        return Ok(Vec::new());
    }
    let (tables, dir) = (&job.tables, &job.manifest_dir);
    // Nothing is deleted (and the markers stay) unless every manifest matches its marker.
    check_manifests(&job.store, tables, dir, &marked)?;
    // Break the cycles first: NULL the break columns of the rows about to go.
    for t in tables.iter().filter(|t| !t.deferred.is_empty()) {
        for chunk in read_manifest(dir, &t.table)?.chunks(KEY_BATCH) {
            d.null_break_columns(t, chunk).await?;
        }
    }
    // Lookup indexes pay off for parents with many rows to go; a handful (a district, its
    // schools) is cheaper to check by scanning the child than to index a large child for.
    let many: Vec<&Table> = tables
        .iter()
        .filter(|t| {
            marked
                .iter()
                .any(|(n, rows)| *n == t.table.name && *rows >= INDEX_FROM)
        })
        .map(|t| &t.table)
        .collect();
    let made = d.before_deletes(&many).await?;
    let mut deleted = Vec::new();
    for t in tables.iter().rev() {
        let mut n = 0;
        for chunk in read_manifest(dir, &t.table)?.chunks(D::DELETE_BATCH) {
            n += d.delete_keys(&t.table, chunk).await?;
        }
        deleted.push((t.table.id(), n));
    }
    d.after_deletes(&made).await?;
    let dropped = d.conn().rows(DELETE_MARKERS, &[&job.run_key], None).await;
    dropped.map_err(|e| StoreError::from_sqlx(&job.store, e))?;
    Ok(deleted)
}

/// Rows a rollback deletes from a table before its unindexed referencing columns get an index.
const INDEX_FROM: i64 = 100;

/// A pooled connection for one load or rollback transaction: closed, not handed back to the
/// pool, if the transaction is abandoned.
pub(crate) async fn acquire<DB: sqlx::Database>(
    pool: &sqlx::Pool<DB>,
    store: &str,
) -> Result<sqlx::pool::PoolConnection<DB>, StoreError> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(|e| StoreError::from_sqlx(store, e))?;
    conn.close_on_drop();
    Ok(conn)
}

/// The key tuples (`ncols` text columns) that query `q` returns on `conn`: how each dialect reads
/// which staged keys CERT has already.
pub(crate) async fn fetch_keys<'q, DB>(
    q: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>,
    conn: &mut DB::Connection,
    ncols: usize,
    store: &str,
) -> Result<Vec<Key>, StoreError>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    Option<String>: for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
{
    use sqlx::Row;
    let rows = q
        .fetch_all(conn)
        .await
        .map_err(|e| StoreError::from_sqlx(store, e))?;
    let key = |r: &DB::Row| {
        (0..ncols)
            .map(|i| r.try_get::<Option<String>, _>(i))
            .collect()
    };
    let keys: Result<Vec<Key>, sqlx::Error> = rows.iter().map(key).collect();
    keys.map_err(|e| StoreError::from_sqlx(store, e))
}

/// Opens the transaction with the dialect's statements.
async fn begin<D: Dialect>(d: &mut D, store: &str) -> Result<(), StoreError> {
    for sql in D::BEGIN {
        let r = d.conn().run(sql).await;
        r.map_err(|e| StoreError::from_sqlx(store, e))?;
    }
    Ok(())
}

/// Commits (deferred checks run here) or rolls back.
async fn end<D: Dialect>(d: &mut D, store: &str, commit: bool) -> Result<(), StoreError> {
    let r = d
        .conn()
        .run(if commit { "commit" } else { "rollback" })
        .await;
    r.map_err(|e| D::COMMIT_ERROR(store, e))
}
