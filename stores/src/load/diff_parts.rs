//! What a refresh's comparison produces and the pieces both ways of comparing share (the whole
//! comparison in `diff`, the one from a table's changes in `diff_delta`): the per-table result,
//! the row hasher, and the files the changed and fresh rows are filtered into.

use crate::error::StoreError;
use crate::staging::{Cells, Value};
use crate::subset::Key;
use arrow_array::{BooleanArray, RecordBatch};
use std::path::PathBuf;

/// How one table changes.
pub(crate) struct TableDiff {
    /// The table (the new run's, or the earlier run's for a table the new run has no rows of).
    pub load: super::TableLoad,
    /// The earlier run's rows staged again with other values, in a file of the new staging's
    /// schema (`None`: none): updated in place.
    pub changed: Option<PathBuf>,
    /// Staged rows whose key the earlier run did not own: written by the table's strategy.
    pub fresh: Option<PathBuf>,
    /// Rows in `changed` and `fresh`.
    pub written: u64,
    /// Rows of the new staging.
    pub staged_rows: u64,
    /// For a table not loaded with `insert`: the keys of the earlier run's rows staged again
    /// (the run owns them after the load, with the rows `fresh` inserts). With `insert` the run
    /// owns every staged row.
    pub kept: Option<Vec<Key>>,
    /// Keys of the earlier run's rows the new staging does not have.
    pub gone: Vec<Key>,
}

/// Hashes rows and their keys, 128 bits each: XXH3-128 of the cells serialized (a type tag, then
/// the value; text and bytes after their length) into two reused buffers. A row's hash is seeded
/// with the staged columns' names, so a changed schema changes every row; a key's is not, so a
/// row keeps its key. (SipHash-1-3 fed cell by cell, with the schema fetched for every row, took
/// most of a refresh's comparison.) The hashes never leave the process.
#[derive(Default)]
pub(crate) struct RowHasher {
    names: Option<u64>,
    row: Vec<u8>,
    key: Vec<u8>,
}

impl RowHasher {
    /// The key's hash and the row's, of every row of `b` (key columns at `key_idx`).
    pub(crate) fn batch(&mut self, b: &RecordBatch, key_idx: &[usize]) -> Vec<(u128, u128)> {
        let names = *self.names.get_or_insert_with(|| {
            let mut all = Vec::new();
            for f in b.schema().fields() {
                feed(&mut all, &Value::Text(f.name()));
            }
            twox_hash::XxHash3_128::oneshot(&all) as u64
        });
        let cells = Cells::of(b);
        (0..b.num_rows())
            .map(|r| {
                self.row.clear();
                self.key.clear();
                for i in 0..b.num_columns() {
                    let v = cells.value(i, r);
                    feed(&mut self.row, &v);
                    if key_idx.contains(&i) {
                        feed(&mut self.key, &v);
                    }
                }
                (
                    twox_hash::XxHash3_128::oneshot(&self.key),
                    twox_hash::XxHash3_128::oneshot_with_seed(names, &self.row),
                )
            })
            .collect()
    }
}

fn feed(buf: &mut Vec<u8>, v: &Value<'_>) {
    let counted = |buf: &mut Vec<u8>, tag: u8, bytes: &[u8]| {
        buf.push(tag);
        buf.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        buf.extend_from_slice(bytes);
    };
    match v {
        Value::Null => buf.push(0),
        Value::Int(x) => {
            buf.push(1);
            buf.extend_from_slice(&x.to_le_bytes());
        }
        Value::Float(x) => {
            buf.push(2);
            buf.extend_from_slice(&x.to_bits().to_le_bytes());
        }
        Value::Bool(x) => buf.extend_from_slice(&[3, u8::from(*x)]),
        Value::Text(s) => counted(buf, 4, s.as_bytes()),
        Value::Bytes(s) => counted(buf, 5, s),
    }
}

/// Rows of one staging file filtered into another, created at the first row kept.
pub(crate) struct Part {
    path: PathBuf,
    writer: Option<arrow_ipc::writer::FileWriter<std::fs::File>>,
}

impl Part {
    pub(crate) fn new(path: PathBuf) -> Part {
        Part { path, writer: None }
    }

    pub(crate) fn push(&mut self, b: &RecordBatch, keep: &BooleanArray) -> Result<u64, StoreError> {
        let n = keep.true_count();
        if n == 0 {
            return Ok(0);
        }
        let err = |e: arrow_schema::ArrowError| staging_err(&self.path, e);
        let part = arrow_select::filter::filter_record_batch(b, keep).map_err(err)?;
        if self.writer.is_none() {
            let f = std::fs::File::create(&self.path).map_err(|e| staging_err(&self.path, e))?;
            self.writer =
                Some(arrow_ipc::writer::FileWriter::try_new(f, &b.schema()).map_err(err)?);
        }
        if let Some(w) = self.writer.as_mut() {
            w.write(&part).map_err(err)?;
        }
        Ok(n as u64)
    }

    pub(crate) fn finish(self) -> Result<Option<PathBuf>, StoreError> {
        match self.writer {
            Some(mut w) => {
                w.finish().map_err(|e| staging_err(&self.path, e))?;
                Ok(Some(self.path))
            }
            None => Ok(None),
        }
    }
}

fn staging_err(path: &std::path::Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Staging {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}
