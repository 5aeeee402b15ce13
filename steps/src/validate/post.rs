//! Post-load validation (`wf validate <run>`): the run's rows in CERT equal the anonymized staging
//! (row counts and an order-independent checksum per table, compared by primary key), every
//! reference of those rows resolves in CERT (virtual FKs too), the graph's nodes and relationships
//! are there, and the PII leak scan runs again on what CERT holds.

use super::rules::Severity;
use super::{Tally, ValidationReport};
use crate::anonymize::leak::tag_id;
use crate::anonymize::originals::Originals;
use crate::anonymize::AnonKey;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use wf_stores::config::Side;
use wf_stores::extract::{open_snapshot, Snap};
use wf_stores::graph::stage::{GraphBatch, GraphFileKind, GraphFileReader};
use wf_stores::graph::GValue;
use wf_stores::schema::{StoreSchema, Table};
use wf_stores::snapshot::SnapshotReader;
use wf_stores::staging::{columns_of, open, value_at, ColType};
use wf_stores::subset::Key;
use wf_stores::{Config, StoreError};

/// What post-load validation looks at.
pub struct PostInput<'a> {
    pub config: &'a Config,
    /// PROD schemas, virtual FKs included.
    pub schemas: &'a [StoreSchema],
    pub files: Vec<(String, PathBuf)>,
    pub graph_files: Vec<PathBuf>,
    /// Fields the run's leak scan covered, with their domains (`field:…`, `detector:…`); an
    /// empty list (a run from before domains) compares with every original.
    pub scanned_fields: HashMap<String, Vec<String>>,
    /// The keyed hashes of the originals (in memory, or looked up in their file).
    pub originals: crate::anonymize::originals::Originals,
    pub key: Option<&'a AnonKey>,
}

const LOOKUP: usize = 1000;

/// A cell in one canonical text form, whichever side it was read from.
fn canon(t: ColType, s: &str) -> String {
    match t {
        ColType::Float => s
            .parse::<f64>()
            .map(|f| f.to_string())
            .unwrap_or_else(|_| s.into()),
        ColType::Bool => match s {
            "t" | "true" | "1" => "true".into(),
            "f" | "false" | "0" => "false".into(),
            other => other.into(),
        },
        ColType::Bytes => s.trim_start_matches("\\x").to_lowercase(),
        _ => s.into(),
    }
}

fn row_hash(types: &[ColType], row: &[Option<String>]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (t, v) in types.iter().zip(row) {
        v.as_deref().map(|s| canon(*t, s)).hash(&mut h);
    }
    h.finish()
}

/// Checks CERT against the run's anonymized staging.
pub async fn validate_loaded(inp: PostInput<'_>) -> Result<ValidationReport, StoreError> {
    let started = std::time::Instant::now();
    let mut tally = Tally::default();
    let mut cert: HashMap<String, (StoreSchema, Snap)> = HashMap::new();
    for s in &inp.config.stores {
        cert.insert(s.name.clone(), open_snapshot(s, Side::Cert).await?);
    }
    let prod: Vec<&Table> = inp.schemas.iter().flat_map(|s| &s.tables).collect();
    let mut rows_total = 0;
    for (table, path) in &inp.files {
        let (store, name) = table.split_once('.').unwrap_or(("", table));
        let found = cert.get_mut(store).and_then(|(schema, snap)| {
            let ct = schema.tables.iter().find(|t| t.name == name).cloned();
            ct.map(|ct| (ct, snap))
        });
        let Some((ct, snap)) = found else {
            tally.check(
                "cert_contents",
                "table exists",
                table,
                Severity::Error,
                1,
                vec![],
                format!("CERT has no table {table}"),
            );
            continue;
        };
        let cols = columns_of(&open(path)?.schema()).map_err(|m| StoreError::Staging {
            path: path.clone(),
            message: m,
        })?;
        let t = Loaded {
            table,
            ct: &ct,
            path,
            names: cols.iter().map(|c| c.name.clone()).collect(),
            types: cols.iter().map(|c| c.col_type).collect(),
        };
        let Some(rows) = compare_rows(&mut tally, &inp, snap, &t).await? else {
            continue;
        };
        rows_total += rows;
        if let Some(pt) = prod.iter().find(|pt| pt.id() == *table) {
            references_resolve(&mut tally, &mut cert, &t, pt).await?;
        }
    }
    if let Some(g) = &inp.config.graph {
        graph_present(&mut tally, g, &inp.graph_files).await?;
    }
    let n = inp.files.len() as u64;
    Ok(tally.finish(n, rows_total, started.elapsed().as_secs_f64()))
}

/// One staged table that the run loaded, with its CERT definition and staged columns.
struct Loaded<'a> {
    table: &'a str,
    ct: &'a Table,
    path: &'a PathBuf,
    names: Vec<String>,
    types: Vec<ColType>,
}

/// Per column of `t`: the tag ids of its leak-scan domains (`None`: not scanned).
fn scan_tags(inp: &PostInput<'_>, t: &Loaded<'_>) -> Vec<Option<Vec<u64>>> {
    let Some(key) = inp.key else {
        return vec![None; t.names.len()];
    };
    t.names
        .iter()
        .map(|n| {
            inp.scanned_fields
                .get(&format!("{}.{n}", t.table))
                .map(|tags| tags.iter().map(|tag| tag_id(key, tag)).collect())
        })
        .collect()
}

/// Compares `t`'s staged rows with CERT's by primary key: row count, checksum, and the leak scan
/// of what CERT holds. Returns the staged row count, or `None` for a table without a primary
/// key (reported as not comparable).
async fn compare_rows(
    tally: &mut Tally,
    inp: &PostInput<'_>,
    snap: &mut Snap,
    t: &Loaded<'_>,
) -> Result<Option<u64>, StoreError> {
    let (table, ct, path) = (t.table, t.ct, t.path);
    let pk: Vec<usize> = ct
        .primary_key
        .iter()
        .filter_map(|k| t.names.iter().position(|n| n == k))
        .collect();
    if pk.is_empty() || pk.len() != ct.primary_key.len() {
        tally.check(
            "cert_contents",
            "rows comparable by primary key",
            table,
            Severity::Warning,
            1,
            vec![],
            format!("{table} has no primary key: its rows are not compared"),
        );
        return Ok(None);
    }
    let scan_tags = scan_tags(inp, t);
    let (mut staged_sum, mut cert_sum, mut staged_n, mut found_n) = (0u64, 0u64, 0u64, 0u64);
    let mut leaks = 0u64;
    let mut chunk: Vec<Key> = Vec::new();
    let mut batches = open(path)?.peekable();
    while let Some(b) = batches.next() {
        let b = b.map_err(|e| wf_stores::staging::damaged(path, e))?;
        let last_batch = batches.peek().is_none();
        for r in 0..b.num_rows() {
            let row: Vec<Option<String>> = (0..t.names.len())
                .map(|i| super::cells::text(&value_at(b.column(i).as_ref(), r)))
                .collect();
            staged_sum = staged_sum.wrapping_add(row_hash(&t.types, &row));
            staged_n += 1;
            chunk.push(pk.iter().map(|&i| row[i].clone()).collect());
            if chunk.len() >= LOOKUP || (last_batch && r + 1 == b.num_rows()) {
                for got in snap.rows_in(ct, &ct.primary_key, &chunk, &t.names).await? {
                    found_n += 1;
                    cert_sum = cert_sum.wrapping_add(row_hash(&t.types, &got));
                    if let Some(key) = inp.key {
                        leaks += leaks_in(key, &got, &scan_tags, &inp.originals)?;
                    }
                }
                chunk.clear();
            }
        }
    }
    let missing = staged_n.saturating_sub(found_n);
    tally.check(
        "cert_contents",
        "row count",
        table,
        Severity::Error,
        missing,
        vec![],
        format!("{missing} of {staged_n} staged rows are missing from CERT"),
    );
    tally.check("cert_contents", "checksum", table, Severity::Error, u64::from(staged_sum != cert_sum), vec![],
        format!("CERT rows differ from the anonymized staging (checksum {cert_sum:016x} vs {staged_sum:016x})"));
    tally.check(
        "pii",
        "no original value in CERT",
        table,
        Severity::Critical,
        leaks,
        vec![],
        format!("{leaks} original values found in CERT"),
    );
    Ok(Some(staged_n))
}

/// Every foreign key of the loaded rows of `t` (PROD definition `pt`) resolves in CERT.
async fn references_resolve(
    tally: &mut Tally,
    cert: &mut HashMap<String, (StoreSchema, Snap)>,
    t: &Loaded<'_>,
    pt: &Table,
) -> Result<(), StoreError> {
    for f in &pt.foreign_keys {
        let idx: Vec<usize> = f
            .columns
            .iter()
            .filter_map(|c| t.names.iter().position(|n| n == c))
            .collect();
        if idx.len() != f.columns.len() {
            continue;
        }
        let (ps, pn) = f.ref_table.split_once('.').unwrap_or(("", &f.ref_table));
        let Some((pschema, psnap)) = cert.get_mut(ps) else {
            continue;
        };
        let Some(ptable) = pschema.tables.iter().find(|t| t.name == pn).cloned() else {
            continue;
        };
        let keys: Vec<Key> = staged_keys(t.path, &idx)?.into_iter().collect();
        let mut missing = keys.len() as u64;
        for c in keys.chunks(LOOKUP) {
            missing -= psnap
                .rows_in(&ptable, &f.ref_columns, c, &f.ref_columns)
                .await?
                .len() as u64;
        }
        tally.check(
            "referential_integrity",
            &format!("{} -> {}", f.name, f.ref_table),
            t.table,
            Severity::Error,
            missing,
            vec![],
            format!("{missing} referenced {} keys are not in CERT", f.ref_table),
        );
    }
    Ok(())
}

/// The distinct non-NULL key tuples of columns `idx` in a staged file.
fn staged_keys(path: &std::path::Path, idx: &[usize]) -> Result<HashSet<Key>, StoreError> {
    let mut values: HashSet<Key> = HashSet::new();
    for b in open(path)? {
        let b = b.map_err(|e| wf_stores::staging::damaged(path, e))?;
        for r in 0..b.num_rows() {
            let k: Option<Key> = idx
                .iter()
                .map(|&i| super::cells::text(&value_at(b.column(i).as_ref(), r)).map(Some))
                .collect();
            if let Some(k) = k {
                values.insert(k);
            }
        }
    }
    Ok(values)
}

/// Every staged node (with its properties) and relationship is in the CERT graph.
async fn graph_present(
    tally: &mut Tally,
    g: &wf_stores::graph::GraphConfig,
    files: &[PathBuf],
) -> Result<(), StoreError> {
    let mut r = wf_stores::graph::open_read(g, Side::Cert).await?;
    for path in files {
        let mut rd = GraphFileReader::open(path)?;
        let table = format!("{}.{}", g.name, rd.kind.table());
        let kind = rd.kind.clone();
        let (mut missing, mut differ, mut total) = (0u64, 0u64, 0u64);
        while let Some(b) = rd.next_batch()? {
            match (b, &kind) {
                (GraphBatch::Nodes(ns), GraphFileKind::Nodes { label }) => {
                    for chunk in ns.chunks(LOOKUP) {
                        total += chunk.len() as u64;
                        let key = g.key_map().of(label).clone();
                        let text = |p: &_| key.value(p).map(|v| v.key_text()).unwrap_or_default();
                        let keys: Vec<GValue> =
                            chunk.iter().filter_map(|n| key.value(&n.props)).collect();
                        let got: HashMap<String, _> = r
                            .nodes(label, &keys)
                            .await?
                            .into_iter()
                            .map(|n| (text(&n.props), n.props))
                            .collect();
                        for n in chunk {
                            let k = text(&n.props);
                            match got.get(&k) {
                                None => missing += 1,
                                Some(p) if *p != n.props => differ += 1,
                                Some(_) => {}
                            }
                        }
                    }
                }
                (
                    GraphBatch::Rels(rs),
                    GraphFileKind::Rels {
                        rel_type, start, ..
                    },
                ) => {
                    for chunk in rs.chunks(LOOKUP) {
                        total += chunk.len() as u64;
                        let keys: Vec<GValue> = chunk.iter().map(|x| x.start.1.clone()).collect();
                        let have: HashSet<(String, String)> = r
                            .out_rels(start, &keys)
                            .await?
                            .into_iter()
                            .filter(|x| &x.rel_type == rel_type)
                            .map(|x| (x.start.1.key_text(), x.end.1.key_text()))
                            .collect();
                        missing += chunk
                            .iter()
                            .filter(|x| !have.contains(&(x.start.1.key_text(), x.end.1.key_text())))
                            .count() as u64;
                    }
                }
                _ => {}
            }
        }
        tally.check(
            "cert_contents",
            "graph elements present",
            &table,
            Severity::Error,
            missing,
            vec![],
            format!("{missing} of {total} staged graph elements are missing from CERT"),
        );
        tally.check(
            "cert_contents",
            "graph properties equal",
            &table,
            Severity::Error,
            differ,
            vec![],
            format!("{differ} nodes have other properties in CERT than staged"),
        );
    }
    r.finish().await
}

/// How many cells of a CERT row are originals of their column's leak-scan domains (no tags: of
/// any domain, as runs from before domains were scanned).
fn leaks_in(
    key: &AnonKey,
    row: &[Option<String>],
    scan_tags: &[Option<Vec<u64>>],
    originals: &Originals,
) -> Result<u64, StoreError> {
    let mut n = 0;
    for (v, tags) in row.iter().zip(scan_tags) {
        if let (Some(v), Some(tags)) = (v, tags) {
            let hit = originals
                .has(key, v, tags)
                .map_err(|e| StoreError::Staging {
                    path: originals.path().map(Path::to_path_buf).unwrap_or_default(),
                    message: format!("cannot read the originals' hashes: {e}"),
                })?;
            n += u64::from(hit);
        }
    }
    Ok(n)
}
