//! Graph staging files (Arrow IPC): one per label (`_labels`, then the properties as typed columns)
//! and one per relationship type and end labels (`_start`, `_end`, then properties; an end with a
//! composite key has a column per part, `_start.isbn`, `_start.lang`). Lists, maps and
//! mixed-type properties are JSON text; dates and datetimes are ISO text. `wf.type` keeps the kind.

use super::value::{column_kind, GValue};
use super::{KeyMap, NodeKey, NodeRec, RelRec};
use crate::error::StoreError;
use crate::staging::{open, value_at, ColType, FileInfo, StagingWriter, Value};
use arrow_schema::{Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufWriter, Write};
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

    /// The key such a file is staged with under `keys` (`wf.key`): its label's, or for a
    /// relationship file its start's and end's, space-separated.
    pub fn key_under(&self, keys: &KeyMap) -> String {
        match self {
            GraphFileKind::Nodes { label } => keys.of(label).to_string(),
            GraphFileKind::Rels { start, end, .. } => {
                format!("{} {}", keys.of(start), keys.of(end))
            }
        }
    }

    fn meta(&self, store: &str, keys: &KeyMap) -> HashMap<String, String> {
        let mut m = HashMap::from([
            ("wf.store".to_string(), store.to_string()),
            ("wf.table".to_string(), self.table()),
            ("wf.key".to_string(), self.key_under(keys)),
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

/// Rows of one graph file collected in a spill file first (the column types are known only once
/// every row is seen), then written to Arrow. The spill holds each row as bincode (values as
/// read: no text round trip, NaN stays NaN); it is raw data: 0600, deleted after.
pub struct Spooler {
    kind: GraphFileKind,
    spill: PathBuf,
    out: BufWriter<std::fs::File>,
    kinds: BTreeMap<String, BTreeSet<&'static str>>,
    rows: u64,
    /// The keys of a relationship file's start and end labels.
    ends: Option<(NodeKey, NodeKey)>,
}

/// The staging columns of a relationship end (`_start` / `_end`) keyed by `key`.
fn end_columns(end: &str, key: &NodeKey) -> Vec<String> {
    if key.is_composite() {
        key.props().iter().map(|p| format!("{end}.{p}")).collect()
    } else {
        vec![end.to_string()]
    }
}

impl Spooler {
    pub fn create(dir: &Path, kind: GraphFileKind, keys: &KeyMap) -> Result<Spooler, StoreError> {
        let ends = match &kind {
            GraphFileKind::Rels { start, end, .. } => {
                Some((keys.of(start).clone(), keys.of(end).clone()))
            }
            GraphFileKind::Nodes { .. } => None,
        };
        use std::os::unix::fs::OpenOptionsExt;
        let spill = dir.join(format!("{}.spill.partial", kind.table()));
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
            ends,
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
        self.line(&SpillOut {
            labels: &n.labels,
            start: &GValue::Null,
            end: &GValue::Null,
            props: &n.props,
        })
    }

    pub fn push_rel(&mut self, r: &RelRec) -> Result<(), StoreError> {
        if let Some((sk, ek)) = self.ends.clone() {
            for (end, key, v) in [("_start", &sk, &r.start.1), ("_end", &ek, &r.end.1)] {
                for (col, (_, part)) in end_columns(end, key).iter().zip(key.parts(v)) {
                    self.note(col, part);
                }
            }
        }
        for (k, v) in &r.props {
            self.note(k, v);
        }
        self.line(&SpillOut {
            labels: &[],
            start: &r.start.1,
            end: &r.end.1,
            props: &r.props,
        })
    }

    fn line(&mut self, row: &SpillOut<'_>) -> Result<(), StoreError> {
        self.rows += 1;
        bincode::serde::encode_into_std_write(row, &mut self.out, bincode::config::standard())
            .map(|_| ())
            .map_err(|e| io_err(&self.spill, e))
    }

    /// Writes the Arrow file `dir/<table>.arrow` and removes the spill.
    pub fn finish(
        mut self,
        store: &str,
        keys: &KeyMap,
        dir: &Path,
        batch_rows: usize,
    ) -> Result<(GraphFileKind, FileInfo), StoreError> {
        self.out.flush().map_err(|e| io_err(&self.spill, e))?;
        let is_nodes = matches!(self.kind, GraphFileKind::Nodes { .. });
        // Column order: _labels | _start, _end; then the key; then the rest by name.
        let mut names: Vec<String> = Vec::new();
        if is_nodes {
            names.push("_labels".into());
        } else if let Some((sk, ek)) = &self.ends {
            names.extend(end_columns("_start", sk));
            names.extend(end_columns("_end", ek));
        }
        if let GraphFileKind::Nodes { label } = &self.kind {
            for p in keys.of(label).props() {
                if self.kinds.contains_key(p) {
                    names.push(p.clone());
                }
            }
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
            self.kind.meta(store, keys),
        ));
        let path = dir.join(format!("{}.arrow", self.kind.table()));
        let mut w = StagingWriter::create(&path, schema, batch_rows)?;
        let f = std::fs::File::open(&self.spill).map_err(|e| io_err(&self.spill, e))?;
        let mut rd = std::io::BufReader::new(f);
        for _ in 0..self.rows {
            let row: SpillIn =
                bincode::serde::decode_from_std_read(&mut rd, bincode::config::standard())
                    .map_err(|e| io_err(&self.spill, e))?;
            for (i, (name, kind)) in names.iter().zip(&kinds).enumerate() {
                let labels;
                let v = match name.as_str() {
                    "_labels" if is_nodes => {
                        labels = GValue::Text(
                            serde_json::to_string(&row.labels)
                                .map_err(|e| io_err(&self.spill, e))?,
                        );
                        &labels
                    }
                    "_start" if !is_nodes => &row.start,
                    "_end" if !is_nodes => &row.end,
                    other if !is_nodes && other.starts_with("_start.") => {
                        part_of(&row.start, other, "_start", &names)
                    }
                    other if !is_nodes && other.starts_with("_end.") => {
                        part_of(&row.end, other, "_end", &names)
                    }
                    other => row.props.get(other).unwrap_or(&GValue::Null),
                };
                push_cell(&mut w, i, kind, v)?;
            }
            w.end_row()?;
        }
        let info = w.finish()?;
        std::fs::remove_file(&self.spill).map_err(|e| io_err(&self.spill, e))?;
        Ok((self.kind, info))
    }
}

/// One spilled row as written: a node's labels and properties, or a relationship's ends and
/// properties (the fields the other kind does not use are empty).
#[derive(Serialize)]
struct SpillOut<'a> {
    labels: &'a [String],
    start: &'a GValue,
    end: &'a GValue,
    props: &'a BTreeMap<String, GValue>,
}

/// One spilled row as read back (`SpillOut`'s fields, owned).
#[derive(Deserialize)]
struct SpillIn {
    labels: Vec<String>,
    start: GValue,
    end: GValue,
    props: BTreeMap<String, GValue>,
}

/// The part of a composite end value (a list) that column `name` holds: parts are in key
/// order, as their columns are.
fn part_of<'v>(v: &'v GValue, name: &str, end: &str, names: &[String]) -> &'v GValue {
    let prefix = format!("{end}.");
    let i = names
        .iter()
        .filter(|n| n.starts_with(&prefix))
        .position(|n| n == name);
    match (v, i) {
        (GValue::List(a), Some(i)) => a.get(i).unwrap_or(&GValue::Null),
        _ => &GValue::Null,
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
    /// The key the file was staged with: its label's (`isbn`, `[isbn, lang]`), or for a
    /// relationship file its start's and end's, space-separated.
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
            let (mut s_parts, mut e_parts) = (Vec::new(), Vec::new());
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
                    n if n.starts_with("_start.") => s_parts.push(g),
                    n if n.starts_with("_end.") => e_parts.push(g),
                    _ if matches!(g, GValue::Null) => {}
                    _ => {
                        props.insert(name.clone(), g);
                    }
                }
            }
            if !s_parts.is_empty() {
                s = GValue::List(s_parts);
            }
            if !e_parts.is_empty() {
                e = GValue::List(e_parts);
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
