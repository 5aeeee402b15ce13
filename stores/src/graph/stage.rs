//! Graph staging files (Arrow IPC): one per label (`_labels`, then the properties as typed columns)
//! and one per relationship type and end labels (`_start`, `_end`, then properties). Lists, maps and
//! mixed-type properties are JSON text; dates and datetimes are ISO text. `wf.type` keeps the kind.

use super::value::{column_kind, GValue};
use super::{NodeRec, RelRec};
use crate::error::StoreError;
use crate::staging::{open, value_at, ColType, FileInfo, StagingWriter, Value};
use arrow_schema::{Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a graph staging file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GraphFileKind {
    Nodes {
        label: String,
    },
    Rels {
        rel_type: String,
        start: String,
        end: String,
    },
}

impl GraphFileKind {
    /// The table name used in field ids and file names: `Student`, `Student-ENROLLED_IN-Section`.
    pub fn table(&self) -> String {
        match self {
            GraphFileKind::Nodes { label } => label.clone(),
            GraphFileKind::Rels {
                rel_type,
                start,
                end,
            } => format!("{start}-{rel_type}-{end}"),
        }
    }

    fn meta(&self, store: &str, key: &str) -> HashMap<String, String> {
        let mut m = HashMap::from([
            ("wf.store".to_string(), store.to_string()),
            ("wf.table".to_string(), self.table()),
            ("wf.key".to_string(), key.to_string()),
        ]);
        match self {
            GraphFileKind::Nodes { label } => {
                m.insert("wf.graph".into(), "nodes".into());
                m.insert("wf.label".into(), label.clone());
            }
            GraphFileKind::Rels {
                rel_type,
                start,
                end,
            } => {
                m.insert("wf.graph".into(), "rels".into());
                m.insert("wf.rel_type".into(), rel_type.clone());
                m.insert("wf.start_label".into(), start.clone());
                m.insert("wf.end_label".into(), end.clone());
            }
        }
        m
    }

    /// Reads the kind back from a staging file's schema metadata.
    pub fn from_schema(schema: &Schema) -> Option<(GraphFileKind, String)> {
        let m = schema.metadata();
        let key = m.get("wf.key")?.clone();
        let kind = match m.get("wf.graph")?.as_str() {
            "nodes" => GraphFileKind::Nodes {
                label: m.get("wf.label")?.clone(),
            },
            "rels" => GraphFileKind::Rels {
                rel_type: m.get("wf.rel_type")?.clone(),
                start: m.get("wf.start_label")?.clone(),
                end: m.get("wf.end_label")?.clone(),
            },
            _ => return None,
        };
        Some((kind, key))
    }
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Staging {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Rows of one graph file collected as JSON lines first (the column types are known only once
/// every row is seen), then written to Arrow. The spill file is raw data: 0600, deleted after.
pub struct Spooler {
    kind: GraphFileKind,
    spill: PathBuf,
    out: BufWriter<std::fs::File>,
    kinds: BTreeMap<String, BTreeSet<&'static str>>,
    rows: u64,
}

impl Spooler {
    pub fn create(dir: &Path, kind: GraphFileKind) -> Result<Spooler, StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let spill = dir.join(format!("{}.jsonl.partial", kind.table()));
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&spill)
            .map_err(|e| io_err(&spill, e))?;
        Ok(Spooler {
            kind,
            spill,
            out: BufWriter::new(f),
            kinds: BTreeMap::new(),
            rows: 0,
        })
    }

    fn note(&mut self, name: &str, v: &GValue) {
        if !self.kinds.contains_key(name) {
            self.kinds.insert(name.to_string(), BTreeSet::new());
        }
        if let Some(s) = self.kinds.get_mut(name) {
            s.insert(v.kind());
        }
    }

    pub fn push_node(&mut self, n: &NodeRec) -> Result<(), StoreError> {
        for (k, v) in &n.props {
            self.note(k, v);
        }
        let line = serde_json::json!({
            "l": n.labels,
            "p": GValue::Map(n.props.clone()).to_json(),
        });
        self.line(line)
    }

    pub fn push_rel(&mut self, r: &RelRec) -> Result<(), StoreError> {
        self.note("_start", &r.start.1);
        self.note("_end", &r.end.1);
        for (k, v) in &r.props {
            self.note(k, v);
        }
        let line = serde_json::json!({
            "s": r.start.1.to_json(),
            "e": r.end.1.to_json(),
            "p": GValue::Map(r.props.clone()).to_json(),
        });
        self.line(line)
    }

    fn line(&mut self, v: serde_json::Value) -> Result<(), StoreError> {
        self.rows += 1;
        writeln!(self.out, "{v}").map_err(|e| io_err(&self.spill, e))
    }

    /// Writes the Arrow file `dir/<table>.arrow` and removes the spill.
    pub fn finish(
        mut self,
        store: &str,
        key: &str,
        dir: &Path,
        batch_rows: usize,
    ) -> Result<(GraphFileKind, FileInfo), StoreError> {
        self.out.flush().map_err(|e| io_err(&self.spill, e))?;
        let is_nodes = matches!(self.kind, GraphFileKind::Nodes { .. });
        // Column order: _labels | _start, _end; then the key; then the rest by name.
        let mut names: Vec<String> = Vec::new();
        if is_nodes {
            names.push("_labels".into());
        } else {
            names.push("_start".into());
            names.push("_end".into());
        }
        if is_nodes && self.kinds.contains_key(key) {
            names.push(key.to_string());
        }
        for n in self.kinds.keys() {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        let kinds: Vec<&'static str> = names
            .iter()
            .map(|n| {
                if n == "_labels" {
                    "labels"
                } else {
                    column_kind(self.kinds.get(n).into_iter().flatten().copied())
                }
            })
            .collect();
        let fields: Vec<Field> = names
            .iter()
            .zip(&kinds)
            .map(|(n, k)| {
                Field::new(n, col_type(k).arrow(), true)
                    .with_metadata(HashMap::from([("wf.type".to_string(), k.to_string())]))
            })
            .collect();
        let schema: SchemaRef = Arc::new(Schema::new_with_metadata(
            fields,
            self.kind.meta(store, key),
        ));
        let path = dir.join(format!("{}.arrow", self.kind.table()));
        let mut w = StagingWriter::create(&path, schema, batch_rows)?;
        let f = std::fs::File::open(&self.spill).map_err(|e| io_err(&self.spill, e))?;
        for line in std::io::BufReader::new(f).lines() {
            let line = line.map_err(|e| io_err(&self.spill, e))?;
            let row: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| io_err(&self.spill, e))?;
            let props = match GValue::from_json(&row["p"]) {
                GValue::Map(m) => m,
                _ => BTreeMap::new(),
            };
            for (i, (name, kind)) in names.iter().zip(&kinds).enumerate() {
                let v = match name.as_str() {
                    "_labels" if is_nodes => GValue::Text(row["l"].to_string()),
                    "_start" if !is_nodes => GValue::from_json(&row["s"]),
                    "_end" if !is_nodes => GValue::from_json(&row["e"]),
                    other => props.get(other).cloned().unwrap_or(GValue::Null),
                };
                push_cell(&mut w, i, kind, &v)?;
            }
            w.end_row()?;
        }
        let info = w.finish()?;
        std::fs::remove_file(&self.spill).map_err(|e| io_err(&self.spill, e))?;
        Ok((self.kind, info))
    }
}

fn col_type(kind: &str) -> ColType {
    match kind {
        "integer" => ColType::Int,
        "float" => ColType::Float,
        "boolean" => ColType::Bool,
        _ => ColType::Text,
    }
}

fn push_cell(w: &mut StagingWriter, i: usize, kind: &str, v: &GValue) -> Result<(), StoreError> {
    match (kind, v) {
        (_, GValue::Null) => w.push(i, Value::Null),
        ("integer", GValue::Int(x)) => w.push(i, Value::Int(*x)),
        ("float", GValue::Int(x)) => w.push(i, Value::Float(*x as f64)),
        ("float", GValue::Float(x)) => w.push(i, Value::Float(*x)),
        ("boolean", GValue::Bool(x)) => w.push(i, Value::Bool(*x)),
        ("labels", GValue::Text(t)) => w.push(i, Value::Text(t)),
        ("json", v) => w.push(i, Value::Text(&v.to_json().to_string())),
        (_, v) => w.push(i, Value::Text(&v.staging_text())),
    }
}

/// A staged cell back as a graph value, by its column's kind.
fn cell(kind: &str, v: Value<'_>) -> Result<GValue, String> {
    Ok(match v {
        Value::Null => GValue::Null,
        Value::Int(x) => GValue::Int(x),
        Value::Float(x) => GValue::Float(x),
        Value::Bool(x) => GValue::Bool(x),
        Value::Bytes(b) => GValue::Text(String::from_utf8_lossy(b).into_owned()),
        Value::Text(t) => GValue::from_staging_text(kind, t)?,
    })
}

/// One batch of a graph staging file, as records.
pub enum GraphBatch {
    Nodes(Vec<NodeRec>),
    Rels(Vec<RelRec>),
}

/// Reads a graph staging file batch by batch (memory holds one batch).
pub struct GraphFileReader {
    pub kind: GraphFileKind,
    /// The key property of the graph the file came from.
    pub key: String,
    path: PathBuf,
    reader: crate::verified::Staged,
    names: Vec<String>,
    kinds: Vec<String>,
}

impl GraphFileReader {
    pub fn open(path: &Path) -> Result<GraphFileReader, StoreError> {
        let reader = open(path)?;
        let schema = reader.schema();
        let (kind, key) = GraphFileKind::from_schema(&schema)
            .ok_or_else(|| io_err(path, "not a graph staging file (no wf.graph metadata)"))?;
        let kinds = schema
            .fields()
            .iter()
            .map(|f| f.metadata().get("wf.type").cloned().unwrap_or_default())
            .collect();
        let names = schema.fields().iter().map(|f| f.name().clone()).collect();
        Ok(GraphFileReader {
            kind,
            key,
            path: path.to_path_buf(),
            reader,
            names,
            kinds,
        })
    }

    /// The next batch, or `None` at the end.
    pub fn next_batch(&mut self) -> Result<Option<GraphBatch>, StoreError> {
        let Some(b) = self.reader.next() else {
            return Ok(None);
        };
        let path = self.path.clone();
        let b = b.map_err(|e| crate::staging::damaged(&path, e))?;
        let mut nodes = Vec::new();
        let mut rels = Vec::new();
        for r in 0..b.num_rows() {
            let mut props = BTreeMap::new();
            let (mut labels, mut s, mut e) = (Vec::new(), GValue::Null, GValue::Null);
            for (i, name) in self.names.iter().enumerate() {
                let v = value_at(b.column(i).as_ref(), r);
                if self.kinds[i] == "labels" {
                    if let Value::Text(t) = v {
                        labels = serde_json::from_str(t).map_err(|e| io_err(&path, e))?;
                    }
                    continue;
                }
                let g =
                    cell(&self.kinds[i], v).map_err(|m| io_err(&path, format!("{name}: {m}")))?;
                match name.as_str() {
                    "_start" => s = g,
                    "_end" => e = g,
                    _ if matches!(g, GValue::Null) => {}
                    _ => {
                        props.insert(name.clone(), g);
                    }
                }
            }
            match &self.kind {
                GraphFileKind::Nodes { .. } => nodes.push(NodeRec { labels, props }),
                GraphFileKind::Rels {
                    rel_type,
                    start,
                    end,
                } => rels.push(RelRec {
                    rel_type: rel_type.clone(),
                    start: (start.clone(), s),
                    end: (end.clone(), e),
                    props,
                }),
            }
        }
        Ok(Some(match self.kind {
            GraphFileKind::Nodes { .. } => GraphBatch::Nodes(nodes),
            GraphFileKind::Rels { .. } => GraphBatch::Rels(rels),
        }))
    }
}
