//! Loading staged tables into CERT, and rolling a load back.
//!
//! One transaction per store, tables in load order (parents first). Exactly-once: the load writes a
//! marker row per table into `wf_loads` (run key, store, table, rows, sha256) in the same
//! transaction, and a load that finds its run key there has already committed and does nothing.
//! Cycles: on PostgreSQL the break-point columns are loaded NULL and set once every table is in,
//! one UPDATE per staged batch (`pg_break`); on SQLite foreign keys are checked at commit (`defer_foreign_keys`).
//! Rollback deletes exactly the keys the run inserted (its manifest, written before commit and
//! trusted only once the marker committed), children first, in one transaction per store.

mod dialect;
mod diff;
pub mod diff_delta;
mod diff_parts;
pub use diff::budget as diff_memory_rows;
mod diff_tx;
mod job;
mod pg_break;
mod pg_fk_index;
pub mod postgres;
mod protocol;
pub(crate) use protocol::HeldTx;
pub mod sqlite;

pub use job::{LoadReport, SqlCheck, SqlCheckResult, StoreLoad, Strategy, TableLoad, TableReport};

use crate::error::StoreError;
use crate::schema::Table;
use crate::staging::{
    arrow_schema, open, staging_err, value_at, ColType, StagedColumn, StagingWriter, Value,
};
use crate::subset::{key_columns, Key};
use arrow_array::RecordBatch;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// A store's load done and its rules run inside a transaction still open (see
/// `RelationalStore::load_held`): `commit` ends the load as `load` would have, `abandon` rolls it
/// back (dropped without either, the server rolls it back when the connection closes).
pub struct HeldLoad {
    pub report: LoadReport,
    tx: Option<Box<dyn protocol::HeldTx>>,
}

impl std::fmt::Debug for HeldLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldLoad")
            .field("report", &self.report)
            .field("open", &self.tx.is_some())
            .finish()
    }
}

impl HeldLoad {
    pub(crate) fn new(report: LoadReport, tx: Option<Box<dyn protocol::HeldTx>>) -> HeldLoad {
        HeldLoad { report, tx }
    }

    /// Commits the load (deferred checks run here); its report.
    pub async fn commit(self) -> Result<LoadReport, StoreError> {
        if let Some(tx) = self.tx {
            tx.end(true).await?;
        }
        Ok(self.report)
    }

    /// Rolls the load back.
    pub async fn abandon(self) -> Result<(), StoreError> {
        match self.tx {
            Some(tx) => tx.end(false).await,
            None => Ok(()),
        }
    }
}

/// The count query of a check (its query as a subquery).
pub(crate) fn check_count_sql(c: &SqlCheck) -> String {
    format!(
        "select count(*) from ({}) wf_check",
        c.query.trim().trim_end_matches(';')
    )
}

/// Turns counted checks into results, or the error of the first blocking violation.
pub(crate) fn check_outcome(
    store: &str,
    counted: Vec<(&SqlCheck, i64)>,
) -> Result<Vec<SqlCheckResult>, StoreError> {
    let mut out = Vec::new();
    for (c, n) in counted {
        if c.blocking && n > 0 {
            return Err(StoreError::Rule {
                store: store.to_string(),
                rule: c.name.clone(),
                violations: n as u64,
            });
        }
        out.push(SqlCheckResult {
            name: c.name.clone(),
            severity: c.severity.clone(),
            violations: n as u64,
        });
    }
    Ok(out)
}

/// The staged rows of a file, batch by batch.
pub(crate) fn batches(path: &Path) -> Result<Vec<RecordBatch>, StoreError> {
    open(path)?
        .map(|b| b.map_err(|e| crate::staging::damaged(path, e)))
        .collect()
}

/// The key of row `row` (primary key, else all columns) as text, as the subset and manifests hold it.
pub(crate) fn key_of(batch: &RecordBatch, key_idx: &[usize], row: usize) -> Key {
    key_idx
        .iter()
        .map(|&i| value_text(value_at(batch.column(i).as_ref(), row)))
        .collect()
}

/// A staged value as text, as keys hold it.
fn value_text(v: Value<'_>) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Int(x) => Some(x.to_string()),
        Value::Float(x) => Some(x.to_string()),
        Value::Bool(x) => Some(if x { "true".into() } else { "false".into() }),
        Value::Text(t) => Some(t.to_string()),
        Value::Bytes(b) => Some(hex::encode(b)),
    }
}

/// `keyset::key_hash(&key_of(batch, key_idx, row))`, without building the key (integers are
/// formatted on the stack, text is hashed in place): run for every row of a large table.
pub(crate) fn key_hash_at(batch: &RecordBatch, key_idx: &[usize], row: usize) -> u128 {
    let mut h = crate::keyset::KeyHasher::new();
    for &i in key_idx {
        match value_at(batch.column(i).as_ref(), row) {
            Value::Int(x) => h.part(Some(itoa::Buffer::new().format(x).as_bytes())),
            Value::Text(t) => h.part(Some(t.as_bytes())),
            other => h.part(value_text(other).as_deref().map(str::as_bytes)),
        }
    }
    h.finish()
}

/// `key_hash_at` of every row of `batch`, in order: a single 64-bit integer key (the common
/// surrogate key) is hashed in one tight loop, without a per-row downcast; other keys row by row.
/// Run over every staged row of a refresh's largest tables, several times.
pub(crate) fn key_hashes(batch: &RecordBatch, key_idx: &[usize]) -> Vec<u128> {
    use arrow_array::Array;
    if let [i] = key_idx {
        let col = batch.column(*i);
        if let Some(a) = col.as_any().downcast_ref::<arrow_array::Int64Array>() {
            let mut itoa = itoa::Buffer::new();
            return (0..a.len())
                .map(|r| {
                    let mut h = crate::keyset::KeyHasher::new();
                    h.part(a.is_valid(r).then(|| itoa.format(a.value(r)).as_bytes()));
                    h.finish()
                })
                .collect();
        }
    }
    (0..batch.num_rows())
        .map(|r| key_hash_at(batch, key_idx, r))
        .collect()
}

/// Positions of the table's key columns in the staged batches.
pub(crate) fn key_positions(
    table: &Table,
    batch_schema: &arrow_schema::Schema,
) -> Result<Vec<usize>, StoreError> {
    key_columns(table)
        .iter()
        .map(|c| {
            batch_schema.index_of(c).map_err(|_| StoreError::Query {
                store: table.store.clone(),
                message: format!("staging file of {} has no key column {c}", table.name),
            })
        })
        .collect()
}

fn manifest_path(dir: &Path, table: &Table) -> PathBuf {
    dir.join(format!("{}.{}.keys.arrow", table.store, table.name))
}

/// A manifest writer for `table`: its key columns, as text.
fn manifest_writer(dir: &Path, table: &Table) -> Result<(PathBuf, StagingWriter), StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::Staging {
        path: dir.to_path_buf(),
        message: e.to_string(),
    })?;
    let cols: Vec<StagedColumn> = key_columns(table)
        .into_iter()
        .map(|c| StagedColumn {
            name: c,
            source_type: "text".into(),
            col_type: ColType::Text,
        })
        .collect();
    let path = manifest_path(dir, table);
    let w = StagingWriter::create(&path, arrow_schema(&table.store, &table.name, &cols), 8192)?;
    Ok((path, w))
}

fn push_key(w: &mut StagingWriter, key: &Key) -> Result<(), StoreError> {
    for (i, v) in key.iter().enumerate() {
        w.push(i, v.as_deref().map(Value::Text).unwrap_or(Value::Null))?;
    }
    w.end_row()
}

/// Writes the keys a load inserted into `table`.
pub(crate) fn write_manifest(
    dir: &Path,
    table: &Table,
    keys: &[Key],
) -> Result<PathBuf, StoreError> {
    let (path, mut w) = manifest_writer(dir, table)?;
    for k in keys {
        push_key(&mut w, k)?;
    }
    w.finish()?;
    Ok(path)
}

/// Writes the manifest of a table loaded whole: the key columns of every row of its staging file,
/// streamed batch by batch.
pub(crate) fn copy_manifest(dir: &Path, table: &Table, file: &Path) -> Result<PathBuf, StoreError> {
    let (path, mut w) = manifest_writer(dir, table)?;
    for b in open(file)? {
        let b = b.map_err(|e| crate::staging::damaged(file, e))?;
        let idx = key_positions(table, &b.schema())?;
        if let Some(keys) = key_text_columns(&b, &idx) {
            let keys = RecordBatch::try_new(w.schema(), keys).map_err(|e| staging_err(file, e))?;
            w.push_batch(&keys)?;
            continue;
        }
        for r in 0..b.num_rows() {
            push_key(&mut w, &key_of(&b, &idx, r))?;
        }
    }
    w.finish()?;
    Ok(path)
}

/// The key columns of `b` as the text columns a manifest holds, whole, where every one is a
/// 64-bit integer (formatted as `key_of` does) or text; `None` for other types (row by row).
fn key_text_columns(b: &RecordBatch, idx: &[usize]) -> Option<Vec<arrow_array::ArrayRef>> {
    use arrow_array::{Array, Int64Array, StringArray};
    idx.iter()
        .map(|&i| {
            let col = b.column(i);
            if col.as_any().downcast_ref::<StringArray>().is_some() {
                return Some(col.clone());
            }
            let a = col.as_any().downcast_ref::<Int64Array>()?;
            let mut itoa = itoa::Buffer::new();
            let mut out = arrow_array::builder::StringBuilder::with_capacity(a.len(), 8 * a.len());
            for r in 0..a.len() {
                match a.is_valid(r) {
                    true => out.append_value(itoa.format(a.value(r))),
                    false => out.append_null(),
                }
            }
            Some(std::sync::Arc::new(out.finish()) as arrow_array::ArrayRef)
        })
        .collect()
}

/// Reads the keys a load inserted into `table`; no manifest means nothing was inserted.
pub(crate) fn read_manifest(dir: &Path, table: &Table) -> Result<Vec<Key>, StoreError> {
    let path = manifest_path(dir, table);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let mut keys = Vec::new();
    for b in batches(&path)? {
        let idx: Vec<usize> = (0..b.num_columns()).collect();
        keys.extend((0..b.num_rows()).map(|r| key_of(&b, &idx, r)));
    }
    Ok(keys)
}

/// Rows in the manifest of `table`: `None` when there is no manifest file.
fn manifest_rows(dir: &Path, table: &Table) -> Result<Option<u64>, StoreError> {
    let path = manifest_path(dir, table);
    if !path.exists() {
        return Ok(None);
    }
    let mut n = 0;
    for b in open(&path)? {
        n += b.map_err(|e| crate::staging::damaged(&path, e))?.num_rows() as u64;
    }
    Ok(Some(n))
}

/// Before a rollback deletes anything: every table whose marker row says it received rows has a
/// readable manifest with exactly that many keys. `marked` is (table name, rows) from `wf_loads`.
pub(crate) fn check_manifests(
    store: &str,
    tables: &[TableLoad],
    dir: &Path,
    marked: &[(String, i64)],
) -> Result<(), StoreError> {
    let fail = |table: &str, message: String| StoreError::Manifest {
        store: store.to_string(),
        table: table.to_string(),
        message,
    };
    for (name, rows) in marked.iter().filter(|(_, r)| *r > 0) {
        let t = tables.iter().find(|t| &t.table.name == name).ok_or_else(|| {
            fail(
                name,
                format!("the load marker counts {rows} rows but the run's load plan has no such table"),
            )
        })?;
        let path = manifest_path(dir, &t.table);
        let found = manifest_rows(dir, &t.table).map_err(|e| {
            fail(
                name,
                format!("the rollback manifest {} is damaged ({e})", path.display()),
            )
        })?;
        match found {
            None => {
                return Err(fail(
                    name,
                    format!("the rollback manifest {} is missing ({rows} rows were loaded)", path.display()),
                ))
            }
            Some(n) if n != *rows as u64 => {
                return Err(fail(
                    name,
                    format!(
                        "the rollback manifest {} lists {n} keys but the load marker counts {rows} rows",
                        path.display()
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Checks a committed load's manifests against the per-table counts its journaled report holds,
/// without touching CERT (a rollback checks every store this way before deleting from any).
/// `by_difference`: the load was a refresh's by difference (its run's `incremental` attribute;
/// the job's own `by_difference` is not journaled).
pub fn check_job_manifests(
    job: &StoreLoad,
    report: &LoadReport,
    by_difference: bool,
) -> Result<(), StoreError> {
    if by_difference {
        return check_difference_manifests(job, report);
    }
    let marked: Vec<(String, i64)> = job
        .tables
        .iter()
        .filter_map(|t| {
            let r = report.tables.iter().find(|r| r.table == t.table.id())?;
            Some((t.table.name.clone(), r.inserted as i64))
        })
        .collect();
    check_manifests(&job.store, &job.tables, &job.manifest_dir, &marked)
}

/// `check_job_manifests` for a refresh by difference (`wf refresh --incremental`): its report
/// counts the rows it wrote, but it owns, and its marker rows count, every row it staged that the
/// earlier run owned or that it inserted. So here each manifest must be readable and list every
/// staged row under `insert` (at most the staged rows otherwise); the rollback's transaction
/// then checks it exactly against the marker rows before deleting anything.
fn check_difference_manifests(job: &StoreLoad, report: &LoadReport) -> Result<(), StoreError> {
    for t in &job.tables {
        let Some(r) = report.tables.iter().find(|r| r.table == t.table.id()) else {
            continue;
        };
        let path = manifest_path(&job.manifest_dir, &t.table);
        let fail = |message: String| StoreError::Manifest {
            store: job.store.clone(),
            table: t.table.name.clone(),
            message,
        };
        let found = manifest_rows(&job.manifest_dir, &t.table).map_err(|e| {
            fail(format!(
                "the rollback manifest {} is damaged ({e})",
                path.display()
            ))
        })?;
        let n = match found {
            Some(n) => n,
            None if r.rows_in_file == 0 => continue,
            None => {
                return Err(fail(format!(
                    "the rollback manifest {} is missing ({} rows were staged)",
                    path.display(),
                    r.rows_in_file
                )))
            }
        };
        let fits = match t.strategy {
            Strategy::Insert => n == r.rows_in_file,
            _ => n <= r.rows_in_file,
        };
        if !fits {
            return Err(fail(format!(
                "the rollback manifest {} lists {n} keys but the refresh staged {} rows",
                path.display(),
                r.rows_in_file
            )));
        }
    }
    Ok(())
}

/// Rows a committed load's manifests list: what its rollback deletes (for a refresh by
/// difference, more than the rows it wrote). A missing manifest counts none.
pub fn manifest_total(job: &StoreLoad) -> Result<u64, StoreError> {
    let mut total = 0;
    for t in &job.tables {
        total += manifest_rows(&job.manifest_dir, &t.table)?.unwrap_or(0);
    }
    Ok(total)
}

/// Rebuilds the missing or damaged manifests of a committed load from its anonymized staging:
/// possible for a table whose every staged row was inserted (`inserted == rows_in_file`) and whose
/// staging file still has the digest the load recorded. Returns the tables rebuilt.
pub fn rebuild_manifests(job: &StoreLoad, report: &LoadReport) -> Result<Vec<String>, StoreError> {
    let mut rebuilt = Vec::new();
    for t in &job.tables {
        let Some(r) = report.tables.iter().find(|r| r.table == t.table.id()) else {
            continue;
        };
        let ok =
            matches!(manifest_rows(&job.manifest_dir, &t.table), Ok(Some(n)) if n == r.inserted);
        if ok || r.inserted == 0 {
            continue;
        }
        let fail = |message: String| StoreError::Manifest {
            store: job.store.clone(),
            table: t.table.name.clone(),
            message,
        };
        if r.inserted != r.rows_in_file {
            return Err(fail(format!(
                "cannot rebuild its manifest: the load inserted {} of the {} staged rows (the others existed), so the staging does not say which; delete those rows by hand",
                r.inserted, r.rows_in_file
            )));
        }
        let sha = wf_engine::digest::file(&t.file, Some(&t.sha256)).map_err(|e| {
            fail(format!(
                "cannot rebuild its manifest: the anonymized staging {} is gone ({e})",
                t.file.display()
            ))
        })?;
        if sha != t.sha256 {
            return Err(fail(format!(
                "cannot rebuild its manifest: the anonymized staging {} changed since the load",
                t.file.display()
            )));
        }
        copy_manifest(&job.manifest_dir, &t.table, &t.file)?;
        rebuilt.push(t.table.id());
    }
    Ok(rebuilt)
}

/// Keys of `wanted` that are not in `existing`, in order.
pub(crate) fn new_keys(wanted: Vec<Key>, existing: &HashSet<Key>) -> Vec<Key> {
    wanted
        .into_iter()
        .filter(|k| !existing.contains(k))
        .collect()
}

/// How a run loads: its idempotency key, where manifests go, the strategy, dry run or not.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Prefix of the per-store run keys (`<run>/g<generation>/load`).
    pub run_key: String,
    pub manifest_dir: PathBuf,
    pub strategy: Strategy,
    pub dry_run: bool,
}

/// The per-store loads of an extraction: tables in the analysis' load order; PostgreSQL tables defer
/// their cycle break columns (non-deferrable FKs); reference tables keep what CERT already has.
pub fn plan_loads(
    cfg: &crate::Config,
    schemas: &[crate::schema::StoreSchema],
    analysis: &crate::analysis::Analysis,
    files: &[crate::staging::TableFile],
    opts: &LoadOptions,
) -> Vec<StoreLoad> {
    let LoadOptions {
        run_key,
        manifest_dir,
        strategy,
        dry_run,
    } = opts;
    let (strategy, dry_run) = (*strategy, *dry_run);
    let mut out = Vec::new();
    for s in &cfg.stores {
        let Some(schema) = schemas.iter().find(|x| x.store == s.name) else {
            continue;
        };
        let mut tables = Vec::new();
        for id in analysis
            .order
            .iter()
            .filter(|id| id.split('.').next() == Some(s.name.as_str()))
        {
            let (Some(table), Some(file)) = (
                schema.tables.iter().find(|t| &t.id() == id),
                files.iter().find(|f| &f.table == id),
            ) else {
                continue;
            };
            let deferred = if s.kind.loads_break_columns_later() {
                analysis
                    .cycles
                    .iter()
                    .filter_map(|c| c.break_fk.as_ref())
                    .filter(|e| &e.child == id && !e.is_virtual)
                    .filter(|e| {
                        !table
                            .foreign_keys
                            .iter()
                            .any(|f| f.name == e.fk && f.deferrable)
                    })
                    .flat_map(|e| e.columns.clone())
                    .collect()
            } else {
                Vec::new()
            };
            tables.push(TableLoad {
                table: table.clone(),
                file: file.file.path.clone(),
                sha256: file.file.sha256.clone(),
                strategy: if cfg.reference_tables.contains(id) {
                    Strategy::SkipExisting
                } else {
                    strategy
                },
                deferred,
            });
        }
        if !tables.is_empty() {
            out.push(StoreLoad {
                run_key: format!("{run_key}/{}", s.name),
                store: s.name.clone(),
                tables,
                manifest_dir: manifest_dir.to_path_buf(),
                dry_run,
                checks: Vec::new(),
                replaces: None,
                by_difference: false,
            });
        }
    }
    out
}

#[cfg(test)]
mod key_hash_tests {
    use super::*;
    use arrow_array::{ArrayRef, Float64Array, Int64Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn a_manifest_copied_whole_holds_each_rows_text_key() {
        use crate::schema::{Column, Table};
        let col = |name: &str| Column {
            name: name.into(),
            data_type: "text".into(),
            nullable: true,
            default: None,
        };
        let table = |pk: &[&str]| Table {
            store: "s".into(),
            name: "t".into(),
            columns: vec![col("i"), col("t"), col("f")],
            primary_key: pk.iter().map(|c| c.to_string()).collect(),
            uniques: Vec::new(),
            foreign_keys: Vec::new(),
            row_count: 0,
        };
        let cols: Vec<(&str, ArrayRef)> = vec![
            (
                "i",
                Arc::new(Int64Array::from(vec![Some(-42), None, Some(i64::MAX)])),
            ),
            (
                "t",
                Arc::new(StringArray::from(vec![Some("é\tx"), Some(""), None])),
            ),
            (
                "f",
                Arc::new(Float64Array::from(vec![Some(1.5), Some(-0.0), None])),
            ),
        ];
        let b = RecordBatch::try_from_iter(cols).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let staged = dir.path().join("staged.arrow");
        let mut w = StagingWriter::create(&staged, b.schema(), 2).unwrap();
        w.push_batch(&b).unwrap();
        w.finish().unwrap();
        // Integer and text keys take the whole-column path, a float key the row-by-row one.
        for pk in [&["i"][..], &["t", "i"], &["f", "i"]] {
            let t = table(pk);
            let idx = key_positions(&t, &b.schema()).unwrap();
            copy_manifest(dir.path(), &t, &staged).unwrap();
            let want: Vec<Key> = (0..3).map(|r| key_of(&b, &idx, r)).collect();
            assert_eq!(read_manifest(dir.path(), &t).unwrap(), want, "key {pk:?}");
        }
    }

    #[test]
    fn a_staged_key_hashes_as_its_text_key_does() {
        let cols: Vec<(&str, ArrayRef)> = vec![
            (
                "i",
                Arc::new(Int64Array::from(vec![Some(-42), None, Some(7)])),
            ),
            (
                "t",
                Arc::new(StringArray::from(vec![Some("é\tx"), Some(""), None])),
            ),
            (
                "f",
                Arc::new(Float64Array::from(vec![Some(1.5), Some(-0.0), None])),
            ),
        ];
        let b = RecordBatch::try_from_iter(cols).unwrap();
        for idx in [vec![0], vec![1], vec![2], vec![0, 1, 2], vec![2, 0]] {
            for r in 0..3 {
                let text = crate::keyset::key_hash(&key_of(&b, &idx, r));
                assert_eq!(key_hash_at(&b, &idx, r), text, "columns {idx:?}, row {r}");
                assert_eq!(key_hashes(&b, &idx)[r], text, "columns {idx:?}, row {r}");
            }
        }
        assert_ne!(
            key_hash_at(&b, &[0], 0),
            key_hash_at(&b, &[0], 2),
            "other keys, other hashes"
        );
    }
}
