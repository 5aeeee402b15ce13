//! Loading graph staging files into CERT and rolling a load back. One transaction: nodes first,
//! then relationships, then the marker node `(:WfLoad {run})`; a load that finds its marker has
//! already committed and does nothing (exactly-once across crashes). The manifest lists exactly the
//! nodes and relationships the load created (written before commit, trusted only once the marker
//! is committed); rollback deletes those, relationships first, and keeps CERT's own.

use super::extract::CHUNK;
use super::stage::{GraphBatch, GraphFileKind, GraphFileReader};
use super::{open_write, GValue, GraphConfig, GraphWrite, NodeRec, RelRec};
use crate::error::StoreError;
use crate::load::{HeldLoad, LoadReport, Strategy, TableReport};
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

pub use super::job::GraphLoad;
use super::job::{Created, BIG_CHUNK};
pub use super::rollback::rollback_graph;

fn io_err(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Staging {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Loads `job` into CERT.
pub async fn load_graph(cfg: &GraphConfig, job: &GraphLoad) -> Result<LoadReport, StoreError> {
    let held = load_graph_held(cfg, job).await?;
    if job.dry_run {
        let report = held.report.clone();
        held.abandon().await?;
        return Ok(report);
    }
    held.commit().await
}

/// Loads `job` into CERT in a transaction left open: the caller commits or abandons it (the
/// validation gate loads the graph while the other stores are still being checked, and its load
/// step commits once the gate has passed). A load found committed before is not held.
pub async fn load_graph_held(cfg: &GraphConfig, job: &GraphLoad) -> Result<HeldLoad, StoreError> {
    let mut w = open_write(cfg).await?;
    match load_in(w.as_mut(), cfg, job).await {
        Ok(None) => {
            w.rollback().await?;
            // Loaded before (a resume after the commit): the manifest says what went in.
            let report = LoadReport {
                already_loaded: true,
                tables: loaded_before(cfg, job)?,
                checks: Vec::new(),
            };
            Ok(HeldLoad::new(report, None))
        }
        Ok(Some(tables)) => {
            let report = LoadReport {
                already_loaded: false,
                tables,
                checks: Vec::new(),
            };
            Ok(HeldLoad::new(report, Some(Box::new(OpenGraphTx(w)))))
        }
        Err(e) => {
            let _ = w.rollback().await;
            Err(damaged_instead(job, e))
        }
    }
}

/// A load that stopped early may have stopped on a damaged file's bytes (a key that no longer
/// matches, an end node CERT lacks) before its reader reached the end, where the file is checked
/// against its recorded digest: a staged file that no longer matches is the error, so the step
/// that wrote it runs again.
fn damaged_instead(job: &GraphLoad, e: StoreError) -> StoreError {
    if matches!(e, StoreError::Corrupt { .. }) || e.is_retryable() {
        return e;
    }
    for f in &job.files {
        if let Some(m) = crate::verified::mismatch_now(f) {
            return StoreError::Corrupt {
                path: f.clone(),
                message: m.to_string(),
            };
        }
    }
    e
}

/// The open transaction of a held graph load.
struct OpenGraphTx(Box<dyn GraphWrite>);

#[async_trait::async_trait]
impl crate::load::HeldTx for OpenGraphTx {
    async fn end(self: Box<Self>, commit: bool) -> Result<(), StoreError> {
        let w = self.0;
        if commit {
            w.commit().await
        } else {
            w.rollback().await
        }
    }
}

/// Loads every staged file inside the open transaction of `w`; `None` if the run's marker is
/// already there (loaded before).
async fn load_in(
    w: &mut dyn GraphWrite,
    cfg: &GraphConfig,
    job: &GraphLoad,
) -> Result<Option<Vec<TableReport>>, StoreError> {
    if w.has_marker(&job.run_key).await? {
        return Ok(None);
    }
    let diff = match &job.replaces {
        Some(earlier) => super::diff::replace(w, cfg, job, earlier).await?,
        None => None,
    };
    let mut readers = Vec::new();
    for f in &job.files {
        readers.push(GraphFileReader::open(f)?);
    }
    readers.sort_by_key(|r| matches!(r.kind, GraphFileKind::Rels { .. }));
    for r in &readers {
        let keys = w.keys();
        let now = r.kind.key_under(keys);
        if now != r.key {
            return Err(StoreError::Query {
                store: cfg.name.clone(),
                message: format!(
                    "{}.{} was staged keyed by `{}` but [graph] now keys it by `{now}`; extract the district again before loading",
                    cfg.name,
                    r.kind.table(),
                    r.key
                ),
            });
        }
    }
    for r in &readers {
        if let GraphFileKind::Nodes { label } = &r.kind {
            w.ensure_index(label).await?;
        }
    }
    // After the indexes: the probe's lookups use them.
    if probes_apart(cfg, job) {
        let (loaded, probed) = tokio::join!(
            load_files(w, cfg, job, readers, (true, None)),
            probe(cfg, job)
        );
        probed?;
        return loaded;
    }
    load_files(w, cfg, job, readers, (false, diff.as_ref())).await
}

/// Under `insert` on a Bolt server, whether any staged node is in CERT already is asked on a
/// second session beside the load, not before each CREATE inside it: the load's transaction does
/// not change CERT's committed nodes, which are what the lookup reads, and the server runs both
/// at once. Not with `replaces` (the load deletes the replaced run's nodes first) nor on the
/// embedded graph (one writer per file).
fn probes_apart(cfg: &GraphConfig, job: &GraphLoad) -> bool {
    job.strategy == Strategy::Insert && job.replaces.is_none() && cfg.kind == super::GraphKind::Bolt
}

/// The staged nodes already in CERT, looked up by key on a session of its own; the first
/// file with any is refused as `FileLoad::nodes` refuses it.
async fn probe(cfg: &GraphConfig, job: &GraphLoad) -> Result<(), StoreError> {
    let mut r = open_write(cfg).await?;
    let found = probe_files(r.as_mut(), cfg, job).await;
    let _ = r.rollback().await;
    found
}

async fn probe_files(
    r: &mut dyn GraphWrite,
    cfg: &GraphConfig,
    job: &GraphLoad,
) -> Result<(), StoreError> {
    for f in &job.files {
        let mut rd = GraphFileReader::open(f)?;
        let GraphFileKind::Nodes { label } = rd.kind.clone() else {
            continue;
        };
        let key = r.keys().of(&label).clone();
        let table = format!("{}.{}", cfg.name, rd.kind.table());
        while let Some(batch) = rd.next_batch()? {
            let GraphBatch::Nodes(rows) = batch else {
                continue;
            };
            for chunk in rows.chunks(BIG_CHUNK) {
                // A node without its key is refused by the load itself.
                let keys: Vec<GValue> = chunk.iter().filter_map(|n| key.value(&n.props)).collect();
                let existing: HashSet<String> = r
                    .existing_nodes(&label, &keys)
                    .await?
                    .iter()
                    .map(GValue::key_text)
                    .collect();
                conflict(cfg, &table, job.strategy, &existing)?;
            }
        }
    }
    Ok(())
}

/// The files into the open transaction of `w`, nodes before relationships; with `probed`,
/// `insert` looks nothing up (see `probes_apart`).
async fn load_files(
    w: &mut dyn GraphWrite,
    cfg: &GraphConfig,
    job: &GraphLoad,
    readers: Vec<GraphFileReader>,
    (probed, diff): (bool, Option<&super::diff::GraphDiff>),
) -> Result<Option<Vec<TableReport>>, StoreError> {
    let mut manifest = Partial::create(&job.manifest)?;
    // By difference: what stays as CERT has it is skipped, and stays the run's own.
    if let Some(d) = diff {
        d.carried(|c| manifest.line(c.kept()))?;
    }
    // CREATE statements carry a whole staged batch; MERGE with its lookups goes by CHUNK.
    let size = match job.strategy {
        Strategy::Insert => BIG_CHUNK,
        _ => CHUNK,
    };
    let mut tables = Vec::new();
    for mut rd in readers {
        let mut file = FileLoad {
            w: &mut *w,
            cfg,
            strategy: job.strategy,
            table: format!("{}.{}", cfg.name, rd.kind.table()),
            probed,
            manifest: &mut manifest,
            report: TableReport {
                table: String::new(),
                rows_in_file: 0,
                inserted: 0,
            },
        };
        let kind = rd.kind.clone();
        while let Some(batch) = rd.next_batch()? {
            match (batch, &kind) {
                (GraphBatch::Nodes(mut rows), GraphFileKind::Nodes { label }) => {
                    if let Some(d) = diff {
                        let keys = file.w.keys().clone();
                        let staged = rows.len() as u64;
                        rows.retain(|n| !d.keeps_node(&keys, label, n));
                        file.report.rows_in_file += staged - rows.len() as u64;
                    }
                    for chunk in rows.chunks(size) {
                        file.nodes(label, chunk).await?;
                    }
                }
                (
                    GraphBatch::Rels(rows),
                    GraphFileKind::Rels {
                        rel_type,
                        start,
                        end,
                    },
                ) => {
                    let mut rows = rows;
                    if let Some(d) = diff {
                        let staged = rows.len() as u64;
                        rows.retain(|r| !d.keeps_rel(rel_type, (start, end), r));
                        file.report.rows_in_file += staged - rows.len() as u64;
                    }
                    for chunk in rows.chunks(size) {
                        file.rels(rel_type, (start, end), chunk).await?;
                    }
                }
                _ => {}
            }
        }
        let mut report = file.report;
        report.table = file.table;
        tables.push(report);
    }
    manifest.finish(&job.manifest)?;
    w.write_marker(&job.run_key).await?;
    Ok(Some(tables))
}

/// The manifest being written beside its final name, synced and renamed when the load is done.
struct Partial {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
}

impl Partial {
    fn create(manifest: &Path) -> Result<Partial, StoreError> {
        let path = manifest.with_extension("partial");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        }
        let f = std::fs::File::create(&path).map_err(|e| io_err(&path, e))?;
        Ok(Partial {
            out: std::io::BufWriter::new(f),
            path,
        })
    }

    fn line(&mut self, c: Created) -> Result<(), StoreError> {
        let text = serde_json::to_string(&c).map_err(|e| io_err(&self.path, e))?;
        writeln!(self.out, "{text}").map_err(|e| io_err(&self.path, e))
    }

    fn finish(self, manifest: &Path) -> Result<(), StoreError> {
        let path = self.path;
        let file = self
            .out
            .into_inner()
            .map_err(|e| io_err(&path, e.error()))?;
        file.sync_all().map_err(|e| io_err(&path, e))?;
        std::fs::rename(&path, manifest).map_err(|e| io_err(manifest, e))
    }
}

/// The load of one staged file: chunks of nodes or relationships, each checked against what CERT
/// holds, written, and recorded in the manifest.
struct FileLoad<'a> {
    w: &'a mut dyn GraphWrite,
    cfg: &'a GraphConfig,
    strategy: Strategy,
    table: String,
    /// CERT's nodes are looked up beside the load (`probe`), not here.
    probed: bool,
    manifest: &'a mut Partial,
    report: TableReport,
}

impl FileLoad<'_> {
    async fn nodes(&mut self, label: &str, chunk: &[NodeRec]) -> Result<(), StoreError> {
        let table = &self.table;
        let key = self.w.keys().of(label).clone();
        self.report.rows_in_file += chunk.len() as u64;
        let keys: Vec<GValue> = chunk
            .iter()
            .map(|n| key.value(&n.props).unwrap_or(GValue::Null))
            .collect();
        if keys.iter().any(|k| matches!(k, GValue::Null)) {
            return Err(StoreError::Query {
                store: self.cfg.name.clone(),
                message: format!("{table}: a node lacks its key `{key}`; every node needs its key"),
            });
        }
        let existing: HashSet<String> = match self.probed {
            true => HashSet::new(),
            false => self
                .w
                .existing_nodes(label, &keys)
                .await?
                .iter()
                .map(GValue::key_text)
                .collect(),
        };
        conflict(self.cfg, table, self.strategy, &existing)?;
        let fresh: Vec<_> = chunk
            .iter()
            .zip(&keys)
            .filter(|(_, k)| !existing.contains(&k.key_text()))
            .collect();
        match self.strategy {
            // The gate found none of the staged nodes in CERT and the lookup above made sure
            // (`conflict` refuses any under insert): CREATE, by BIG_CHUNK.
            Strategy::Insert => self.w.create_nodes(label, chunk).await?,
            Strategy::Upsert => self.w.merge_nodes(label, chunk).await?,
            Strategy::SkipExisting => {
                let write: Vec<_> = fresh.iter().map(|(n, _)| (*n).clone()).collect();
                self.w.merge_nodes(label, &write).await?
            }
        }
        for (_, k) in &fresh {
            self.manifest.line(Created::Node {
                label: label.to_string(),
                key: k.to_json(),
                kept: false,
            })?;
        }
        self.report.inserted += fresh.len() as u64;
        Ok(())
    }

    async fn rels(
        &mut self,
        rel_type: &str,
        (start, end): (&String, &String),
        chunk: &[RelRec],
    ) -> Result<(), StoreError> {
        self.report.rows_in_file += chunk.len() as u64;
        if self.strategy == Strategy::Insert {
            // Both ends are nodes this load created (see `nodes`): the relationships are new too.
            self.w.create_rels(rel_type, (start, end), chunk).await?;
            for r in chunk {
                self.manifest.line(Created::Rel {
                    rel: rel_type.to_string(),
                    start: start.clone(),
                    end: end.clone(),
                    s: r.start.1.to_json(),
                    e: r.end.1.to_json(),
                    kept: false,
                })?;
            }
            self.report.inserted += chunk.len() as u64;
            return Ok(());
        }
        let pairs: Vec<(GValue, GValue)> = chunk
            .iter()
            .map(|r| (r.start.1.clone(), r.end.1.clone()))
            .collect();
        let pair_text = |p: &(GValue, GValue)| (p.0.key_text(), p.1.key_text());
        let existing: HashSet<(String, String)> = self
            .w
            .existing_rels(rel_type, (start, end), &pairs)
            .await?
            .iter()
            .map(pair_text)
            .collect();
        let existing_text: HashSet<String> = existing
            .iter()
            .map(|(s, e)| format!("{s} -> {e}"))
            .collect();
        conflict(self.cfg, &self.table, self.strategy, &existing_text)?;
        let fresh: Vec<_> = chunk
            .iter()
            .zip(&pairs)
            .filter(|(_, p)| !existing.contains(&pair_text(p)))
            .collect();
        let write: Vec<_> = if self.strategy == Strategy::Upsert {
            chunk.to_vec()
        } else {
            fresh.iter().map(|(r, _)| (*r).clone()).collect()
        };
        self.w.merge_rels(rel_type, (start, end), &write).await?;
        for (_, (s, e)) in &fresh {
            self.manifest.line(Created::Rel {
                rel: rel_type.to_string(),
                start: start.clone(),
                end: end.clone(),
                s: s.to_json(),
                e: e.to_json(),
                kept: false,
            })?;
        }
        self.report.inserted += fresh.len() as u64;
        Ok(())
    }
}

fn conflict(
    cfg: &GraphConfig,
    table: &str,
    strategy: Strategy,
    existing: &HashSet<String>,
) -> Result<(), StoreError> {
    if strategy != Strategy::Insert || existing.is_empty() {
        return Ok(());
    }
    let mut keys: Vec<&String> = existing.iter().collect();
    keys.sort();
    Err(StoreError::Constraint {
        store: cfg.name.clone(),
        table: table.to_string(),
        constraint: "key already in CERT".into(),
        key: keys[0].clone(),
        message: format!(
            "{} already exist in CERT; nothing was loaded (use --strategy upsert or skip-existing)",
            existing.len()
        ),
    })
}

/// What a committed load created, per staged file, counted from its manifest.
fn loaded_before(cfg: &GraphConfig, job: &GraphLoad) -> Result<Vec<TableReport>, StoreError> {
    let mut created: BTreeMap<String, u64> = BTreeMap::new();
    if let Ok(f) = std::fs::File::open(&job.manifest) {
        for l in std::io::BufReader::new(f).lines() {
            let l = l.map_err(|e| io_err(&job.manifest, e))?;
            let table = match serde_json::from_str::<Created>(&l) {
                // Left as it was by a refresh by difference: owned, not written.
                Ok(Created::Node { kept: true, .. } | Created::Rel { kept: true, .. }) => continue,
                Ok(Created::Node { label, .. }) => label,
                Ok(Created::Rel {
                    rel, start, end, ..
                }) => format!("{start}-{rel}-{end}"),
                Err(e) => return Err(io_err(&job.manifest, e)),
            };
            *created.entry(table).or_default() += 1;
        }
    }
    let mut tables = Vec::new();
    for f in &job.files {
        let mut rd = GraphFileReader::open(f)?;
        let name = rd.kind.table();
        let mut rows_in_file = 0u64;
        while let Some(b) = rd.next_batch()? {
            rows_in_file += match b {
                GraphBatch::Nodes(n) => n.len() as u64,
                GraphBatch::Rels(r) => r.len() as u64,
            };
        }
        tables.push(TableReport {
            table: format!("{}.{name}", cfg.name),
            rows_in_file,
            inserted: created.get(&name).copied().unwrap_or(0),
        });
    }
    Ok(tables)
}

/// The nodes a load's manifest says it created, as (label, key text); none if the manifest is not
/// there (that load never got as far as writing it).
pub fn created_nodes(manifest: &Path) -> Result<Vec<(String, String)>, StoreError> {
    let Ok(f) = std::fs::File::open(manifest) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for l in std::io::BufReader::new(f).lines() {
        let l = l.map_err(|e| io_err(manifest, e))?;
        let c = serde_json::from_str::<Created>(&l).map_err(|e| io_err(manifest, e))?;
        if let Created::Node { label, key, .. } = c {
            out.push((label, GValue::from_json(&key).key_text()));
        }
    }
    Ok(out)
}
