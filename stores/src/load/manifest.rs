//! Rollback manifests: per table, the keys a load inserted (an Arrow file of text key columns
//! beside the run), written before the load commits, checked against the load's marker rows and
//! journaled counts before a rollback deletes anything, and rebuilt from the anonymized staging
//! where that is exact.

use super::job::{LoadReport, StoreLoad, Strategy, TableLoad};
use super::keys::{batches, key_of, key_positions};
use crate::error::StoreError;
use crate::schema::Table;
use crate::staging::{
    arrow_schema, open, staging_err, ColType, StagedColumn, StagingWriter, Value,
};
use crate::subset::{key_columns, Key};
use arrow_array::RecordBatch;
use std::path::{Path, PathBuf};

/// Where `table`'s manifest is in `dir`.
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

#[cfg(test)]
mod tests {
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
}
