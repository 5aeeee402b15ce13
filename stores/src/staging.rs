//! Arrow IPC staging files: one file per table, written in record batches while rows stream in.
//!
//! Column mapping: integers → Int64, floating point → Float64, booleans → Boolean, bytea/BLOB →
//! Binary, everything else (numeric, dates, times, timestamps, uuid, json, arrays, enums, …) → Utf8
//! in the database's own canonical text form, which it reads back exactly. Each field keeps the source
//! type in its metadata (`wf.type`), so a load writes back what was read.

use crate::config::StoreKind;
use crate::error::StoreError;
use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How a column is held in Arrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    Int,
    Float,
    Bool,
    Text,
    Bytes,
}

impl ColType {
    /// The staging type of a column declared as `data_type` in a store of `kind`.
    pub fn of(kind: StoreKind, data_type: &str) -> ColType {
        let t = data_type.to_ascii_lowercase();
        match kind {
            StoreKind::Postgres => match t.as_str() {
                "smallint" | "integer" | "bigint" => ColType::Int,
                "real" | "double precision" => ColType::Float,
                "boolean" => ColType::Bool,
                "bytea" => ColType::Bytes,
                _ => ColType::Text,
            },
            // SQLite affinity rules (https://sqlite.org/datatype3.html, 3.1).
            StoreKind::Sqlite => {
                if t.contains("int") || t.contains("bool") {
                    ColType::Int
                } else if t.contains("char") || t.contains("clob") || t.contains("text") {
                    ColType::Text
                } else if t.contains("blob") || t.is_empty() {
                    ColType::Bytes
                } else if t.contains("real") || t.contains("floa") || t.contains("doub") {
                    ColType::Float
                } else {
                    ColType::Text
                }
            }
        }
    }

    pub fn arrow(self) -> DataType {
        match self {
            ColType::Int => DataType::Int64,
            ColType::Float => DataType::Float64,
            ColType::Bool => DataType::Boolean,
            ColType::Text => DataType::Utf8,
            ColType::Bytes => DataType::Binary,
        }
    }

    fn from_arrow(t: &DataType) -> Option<ColType> {
        Some(match t {
            DataType::Int64 => ColType::Int,
            DataType::Float64 => ColType::Float,
            DataType::Boolean => ColType::Bool,
            DataType::Utf8 => ColType::Text,
            DataType::Binary => ColType::Bytes,
            _ => return None,
        })
    }
}

/// A staged column: name, source type, staging type.
#[derive(Debug, Clone, PartialEq)]
pub struct StagedColumn {
    pub name: String,
    pub source_type: String,
    pub col_type: ColType,
}

/// The Arrow schema of a staged table, with the source types and table identity as metadata.
pub fn arrow_schema(store: &str, table: &str, columns: &[StagedColumn]) -> SchemaRef {
    let fields: Vec<Field> = columns
        .iter()
        .map(|c| {
            Field::new(&c.name, c.col_type.arrow(), true).with_metadata(HashMap::from([(
                "wf.type".to_string(),
                c.source_type.clone(),
            )]))
        })
        .collect();
    let meta = HashMap::from([
        ("wf.store".to_string(), store.to_string()),
        ("wf.table".to_string(), table.to_string()),
    ]);
    Arc::new(Schema::new_with_metadata(fields, meta))
}

/// The staged columns described by a staging file's schema.
pub fn columns_of(schema: &Schema) -> Result<Vec<StagedColumn>, String> {
    schema
        .fields()
        .iter()
        .map(|f| {
            Ok(StagedColumn {
                name: f.name().clone(),
                source_type: f.metadata().get("wf.type").cloned().unwrap_or_default(),
                col_type: ColType::from_arrow(f.data_type()).ok_or_else(|| {
                    format!(
                        "column {} has unsupported Arrow type {}",
                        f.name(),
                        f.data_type()
                    )
                })?,
            })
        })
        .collect()
}

/// Size and checksum of a finished staging file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileInfo {
    pub path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

struct HashingWriter<W: Write> {
    inner: W,
    hasher: wf_engine::digest::Hasher,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

enum Builder {
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Text(StringBuilder),
    Bytes(BinaryBuilder),
}

/// A value as it arrives from a store.
#[derive(Debug, PartialEq)]
pub enum Value<'a> {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(&'a str),
    Bytes(&'a [u8]),
}

/// Streams rows into an Arrow IPC file, one record batch per `batch_rows` rows. Memory holds one batch.
/// The file is written as `<path>.partial` (mode 0600) and renamed when finished, so a crash never
/// leaves a truncated file under the final name.
pub struct StagingWriter {
    path: PathBuf,
    partial: PathBuf,
    schema: SchemaRef,
    writer: arrow_ipc::writer::FileWriter<HashingWriter<BufWriter<std::fs::File>>>,
    builders: Vec<Builder>,
    batch_rows: usize,
    pending: usize,
    rows: u64,
    syncer: crate::syncer::Syncer,
    /// Told the rows written so far after each batch (a step's live progress).
    progress: Option<Box<dyn Fn(u64) + Send>>,
}

pub(crate) fn staging_err(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Staging {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

impl StagingWriter {
    pub fn create(
        path: &Path,
        schema: SchemaRef,
        batch_rows: usize,
    ) -> Result<StagingWriter, StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let partial = path.with_extension("arrow.partial");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)
            .map_err(|e| staging_err(&partial, e))?;
        let sink = HashingWriter {
            inner: BufWriter::with_capacity(1 << 20, file),
            hasher: wf_engine::digest::Hasher::default(),
            bytes: 0,
        };
        let writer = arrow_ipc::writer::FileWriter::try_new(sink, &schema)
            .map_err(|e| staging_err(&partial, e))?;
        let builders = schema
            .fields()
            .iter()
            .map(|f| match ColType::from_arrow(f.data_type()) {
                Some(ColType::Int) => Builder::Int(Int64Builder::new()),
                Some(ColType::Float) => Builder::Float(Float64Builder::new()),
                Some(ColType::Bool) => Builder::Bool(BooleanBuilder::new()),
                Some(ColType::Bytes) => Builder::Bytes(BinaryBuilder::new()),
                _ => Builder::Text(StringBuilder::new()),
            })
            .collect();
        Ok(StagingWriter {
            path: path.to_path_buf(),
            partial,
            schema,
            writer,
            builders,
            batch_rows: batch_rows.max(1),
            pending: 0,
            rows: 0,
            syncer: crate::syncer::Syncer::default(),
            progress: None,
        })
    }

    /// Lets the background syncer know how far the file has grown.
    /// Calls `f` with the rows written so far after each batch.
    pub fn on_rows(&mut self, f: Box<dyn Fn(u64) + Send>) {
        self.progress = Some(f);
    }

    fn wrote(&mut self) -> Result<(), StoreError> {
        if let Some(p) = &self.progress {
            p(self.rows);
        }
        let sink = self.writer.get_ref();
        self.syncer
            .wrote(sink.inner.get_ref(), sink.bytes)
            .map_err(|e| staging_err(&self.partial, e))
    }

    /// Appends value `v` to column `col` of the current row; `end_row` closes the row.
    pub fn push(&mut self, col: usize, v: Value<'_>) -> Result<(), StoreError> {
        let name = || self.schema.field(col).name().clone();
        let mismatch = |what: &str| {
            staging_err(
                &self.partial,
                format!(
                    "column {}: a {what} value does not fit its staging type",
                    name()
                ),
            )
        };
        match (&mut self.builders[col], v) {
            (Builder::Int(b), Value::Null) => b.append_null(),
            (Builder::Int(b), Value::Int(x)) => b.append_value(x),
            (Builder::Float(b), Value::Null) => b.append_null(),
            (Builder::Float(b), Value::Float(x)) => b.append_value(x),
            (Builder::Float(b), Value::Int(x)) => b.append_value(x as f64),
            (Builder::Bool(b), Value::Null) => b.append_null(),
            (Builder::Bool(b), Value::Bool(x)) => b.append_value(x),
            (Builder::Text(b), Value::Null) => b.append_null(),
            (Builder::Text(b), Value::Text(x)) => b.append_value(x),
            (Builder::Text(b), Value::Int(x)) => b.append_value(x.to_string()),
            (Builder::Text(b), Value::Float(x)) => b.append_value(x.to_string()),
            (Builder::Bytes(b), Value::Null) => b.append_null(),
            (Builder::Bytes(b), Value::Bytes(x)) => b.append_value(x),
            (Builder::Bytes(b), Value::Text(x)) => b.append_value(x.as_bytes()),
            (_, Value::Int(_)) => return Err(mismatch("integer")),
            (_, Value::Float(_)) => return Err(mismatch("float")),
            (_, Value::Bool(_)) => return Err(mismatch("boolean")),
            (_, Value::Text(_)) => return Err(mismatch("text")),
            (_, Value::Bytes(_)) => return Err(mismatch("binary")),
        }
        Ok(())
    }

    /// Closes the current row; writes a batch when `batch_rows` rows are pending.
    pub fn end_row(&mut self) -> Result<(), StoreError> {
        self.pending += 1;
        self.rows += 1;
        if self.pending >= self.batch_rows {
            self.write_batch()?;
        }
        Ok(())
    }

    fn write_batch(&mut self) -> Result<(), StoreError> {
        if self.pending == 0 {
            return Ok(());
        }
        let arrays: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .map(|b| match b {
                Builder::Int(b) => Arc::new(b.finish()) as ArrayRef,
                Builder::Float(b) => Arc::new(b.finish()) as ArrayRef,
                Builder::Bool(b) => Arc::new(b.finish()) as ArrayRef,
                Builder::Text(b) => Arc::new(b.finish()) as ArrayRef,
                Builder::Bytes(b) => Arc::new(b.finish()) as ArrayRef,
            })
            .collect();
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|e| staging_err(&self.partial, e))?;
        self.writer
            .write(&batch)
            .map_err(|e| staging_err(&self.partial, e))?;
        self.pending = 0;
        self.wrote()
    }

    /// The columns this file is written with.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Appends a whole record batch (after any rows pushed one by one); its schema must be this
    /// file's. Column-wise writers (anonymize) build batches themselves.
    pub fn push_batch(&mut self, batch: &RecordBatch) -> Result<(), StoreError> {
        self.write_batch()?;
        if batch.schema().fields() != self.schema.fields() {
            return Err(staging_err(
                &self.partial,
                "a batch does not have this staging file's columns",
            ));
        }
        self.writer
            .write(batch)
            .map_err(|e| staging_err(&self.partial, e))?;
        self.rows += batch.num_rows() as u64;
        self.wrote()
    }

    /// Writes the last batch and the footer, syncs, and renames the file into place.
    pub fn finish(mut self) -> Result<FileInfo, StoreError> {
        self.write_batch()?;
        self.writer
            .finish()
            .map_err(|e| staging_err(&self.partial, e))?;
        let sink = self
            .writer
            .into_inner()
            .map_err(|e| staging_err(&self.partial, e))?;
        let HashingWriter {
            inner,
            hasher,
            bytes,
        } = sink;
        let file = inner
            .into_inner()
            .map_err(|e| staging_err(&self.partial, e.error()))?;
        self.syncer
            .finish()
            .map_err(|e| staging_err(&self.partial, e))?;
        file.sync_all().map_err(|e| staging_err(&self.partial, e))?;
        std::fs::rename(&self.partial, &self.path).map_err(|e| staging_err(&self.path, e))?;
        let sha256 = hasher.finish();
        crate::verified::rewritten(&self.path, &sha256);
        Ok(FileInfo {
            path: self.path,
            rows: self.rows,
            bytes,
            sha256,
        })
    }
}

/// Opens a staging file for reading batch by batch; a damaged file is a clear error naming it.
/// A file registered with `verified::expect` is checked against its digest as it is read.
pub fn open(path: &Path) -> Result<crate::verified::Staged, StoreError> {
    if let Err(e) = std::fs::metadata(path) {
        return Err(staging_err(path, e));
    }
    let due = crate::verified::due(path);
    crate::verified::Staged::open(path, due.as_deref()).map_err(|e| damaged(path, e))
}

/// Opens a staging file whose producer recorded `sha256`; reading it to the end checks it, and a
/// file that changed on disk is `StoreError::Corrupt` (at open, at a batch, or after the last one).
pub fn open_verified(path: &Path, sha256: &str) -> Result<crate::verified::Staged, StoreError> {
    if let Err(e) = std::fs::metadata(path) {
        return Err(staging_err(path, e));
    }
    crate::verified::Staged::open(path, Some(sha256)).map_err(|e| damaged(path, e))
}

/// The error for a staging file that cannot be read (at open, or a batch inside it).
pub fn damaged(path: &Path, e: arrow_schema::ArrowError) -> StoreError {
    if let Some(m) = crate::verified::mismatch(&e) {
        return StoreError::Corrupt {
            path: path.to_path_buf(),
            message: m.to_string(),
        };
    }
    staging_err(
        path,
        format!("not a readable Arrow IPC file ({e}); re-run the step that wrote it"),
    )
}

/// The value of row `row` in `array` as a store value (borrowing from the array).
pub fn value_at(array: &dyn Array, row: usize) -> Value<'_> {
    Cell::of(array).value(row)
}

/// A batch's columns downcast once, so its cells are read row by row without a downcast per
/// cell (`value_at` tries each array type in turn).
pub struct Cells<'a>(Vec<Cell<'a>>);

/// One column, downcast to the array type its values are read from.
enum Cell<'a> {
    Int(&'a Int64Array),
    Float(&'a Float64Array),
    Bool(&'a BooleanArray),
    Text(&'a StringArray),
    Bytes(&'a BinaryArray),
    /// A type no store value maps to: read as NULL.
    Other,
}

impl<'a> Cell<'a> {
    fn of(array: &'a dyn Array) -> Cell<'a> {
        let any = array.as_any();
        if let Some(a) = any.downcast_ref::<Int64Array>() {
            Cell::Int(a)
        } else if let Some(a) = any.downcast_ref::<Float64Array>() {
            Cell::Float(a)
        } else if let Some(a) = any.downcast_ref::<BooleanArray>() {
            Cell::Bool(a)
        } else if let Some(a) = any.downcast_ref::<StringArray>() {
            Cell::Text(a)
        } else if let Some(a) = any.downcast_ref::<BinaryArray>() {
            Cell::Bytes(a)
        } else {
            Cell::Other
        }
    }

    #[inline]
    fn value(&self, row: usize) -> Value<'a> {
        match self {
            Cell::Int(a) if a.is_valid(row) => Value::Int(a.value(row)),
            Cell::Float(a) if a.is_valid(row) => Value::Float(a.value(row)),
            Cell::Bool(a) if a.is_valid(row) => Value::Bool(a.value(row)),
            Cell::Text(a) if a.is_valid(row) => Value::Text(a.value(row)),
            Cell::Bytes(a) if a.is_valid(row) => Value::Bytes(a.value(row)),
            _ => Value::Null,
        }
    }
}

impl<'a> Cells<'a> {
    pub fn of(b: &'a arrow_array::RecordBatch) -> Cells<'a> {
        Cells(b.columns().iter().map(|c| Cell::of(c.as_ref())).collect())
    }

    /// The cell of column `col` at `row`: what `value_at` returns for it.
    #[inline]
    pub fn value(&self, col: usize, row: usize) -> Value<'a> {
        self.0[col].value(row)
    }
}

/// One extracted table.
#[derive(Debug, Clone)]
pub struct TableFile {
    /// `store.table`.
    pub table: String,
    pub file: FileInfo,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_batches_and_reads_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let cols = vec![
            StagedColumn {
                name: "id".into(),
                source_type: "integer".into(),
                col_type: ColType::Int,
            },
            StagedColumn {
                name: "name".into(),
                source_type: "text".into(),
                col_type: ColType::Text,
            },
            StagedColumn {
                name: "ok".into(),
                source_type: "boolean".into(),
                col_type: ColType::Bool,
            },
        ];
        let schema = arrow_schema("ids", "t", &cols);
        let path = dir.path().join("t.arrow");
        let mut w = StagingWriter::create(&path, schema, 2).unwrap();
        let told = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let t2 = told.clone();
        w.on_rows(Box::new(move |n| t2.lock().unwrap().push(n)));
        for i in 0..5 {
            w.push(0, Value::Int(i)).unwrap();
            w.push(
                1,
                if i == 3 {
                    Value::Null
                } else {
                    Value::Text("x\ty")
                },
            )
            .unwrap();
            w.push(2, Value::Bool(i % 2 == 0)).unwrap();
            w.end_row().unwrap();
        }
        assert_eq!(
            *told.lock().unwrap(),
            vec![2, 4],
            "progress after each full batch"
        );
        assert!(w.push(0, Value::Text("no")).is_err());
        let info = w.finish().unwrap();
        assert_eq!(info.rows, 5);
        assert_eq!(info.sha256, crate::staging::tests::sha(&path));
        let reader = open(&path).unwrap();
        assert_eq!(columns_of(&reader.schema()).unwrap(), cols);
        let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        assert_eq!(batches.len(), 3);
        assert!(matches!(
            value_at(batches[1].column(1).as_ref(), 1),
            Value::Null
        ));
        assert!(matches!(
            value_at(batches[2].column(0).as_ref(), 0),
            Value::Int(4)
        ));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn cells_and_value_at_read_each_type_and_null() {
        use arrow_array::{ArrayRef, RecordBatch};
        use std::sync::Arc;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(1), None])),
            Arc::new(Float64Array::from(vec![None, Some(2.5)])),
            Arc::new(BooleanArray::from(vec![Some(true), None])),
            Arc::new(StringArray::from(vec![None, Some("x")])),
            Arc::new(BinaryArray::from(vec![Some(&b"\x00"[..]), None])),
            // No store value is an Int32: read as NULL.
            Arc::new(arrow_array::Int32Array::from(vec![7, 8])),
        ];
        let b = RecordBatch::try_from_iter(
            cols.into_iter()
                .enumerate()
                .map(|(i, c)| (format!("c{i}"), c)),
        )
        .unwrap();
        let want = [
            [
                Value::Int(1),
                Value::Null,
                Value::Bool(true),
                Value::Null,
                Value::Bytes(b"\x00"),
                Value::Null,
            ],
            [
                Value::Null,
                Value::Float(2.5),
                Value::Null,
                Value::Text("x"),
                Value::Null,
                Value::Null,
            ],
        ];
        let cells = Cells::of(&b);
        for (r, row) in want.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                assert_eq!(&cells.value(c, r), v, "{c},{r}");
                assert_eq!(&value_at(b.column(c).as_ref(), r), v, "{c},{r}");
            }
        }
    }

    #[test]
    fn damaged_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.arrow");
        std::fs::write(&p, b"not arrow at all").unwrap();
        let e = open(&p).err().unwrap().to_string();
        assert!(e.contains("bad.arrow") && e.contains("re-run"), "{e}");
    }

    /// The digest a finished staging file must carry, computed here from its bytes.
    pub(crate) fn sha(path: &Path) -> String {
        let bytes = std::fs::read(path).unwrap();
        format!("xxh3:{:032x}", twox_hash::XxHash3_128::oneshot(&bytes))
    }

    #[test]
    fn sqlite_affinity_and_postgres_types_map_as_documented() {
        assert_eq!(ColType::of(StoreKind::Sqlite, "INTEGER"), ColType::Int);
        assert_eq!(ColType::of(StoreKind::Sqlite, "varchar(20)"), ColType::Text);
        assert_eq!(ColType::of(StoreKind::Sqlite, "double"), ColType::Float);
        assert_eq!(ColType::of(StoreKind::Sqlite, "date"), ColType::Text);
        assert_eq!(ColType::of(StoreKind::Postgres, "bigint"), ColType::Int);
        assert_eq!(
            ColType::of(StoreKind::Postgres, "numeric(10,2)"),
            ColType::Text
        );
        assert_eq!(ColType::of(StoreKind::Postgres, "bytea"), ColType::Bytes);
        assert_eq!(ColType::of(StoreKind::Postgres, "text[]"), ColType::Text);
    }
}
