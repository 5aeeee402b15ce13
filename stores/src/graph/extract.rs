//! The district subgraph: nodes of the district labels whose district property matches, plus nodes
//! reached along the configured relationship types (to a fixpoint or `max_depth`), plus every
//! relationship between selected nodes. One read transaction; keys in pages and chunks; the key
//! set spills to disk like the relational subset's.

use super::stage::{GraphFileKind, Spooler};
use super::{open_read, GValue, GraphConfig, GraphRead, Maps, NodeRec, RelRec, WithoutKey};
use crate::error::StoreError;
use crate::keyset::{memory_limit, KeySet, Spill};
use crate::refs::Side;
use crate::staging::FileInfo;
use crate::subset::Key;
use std::collections::BTreeMap;
use std::path::Path;

/// Keys per query (IN lists, UNWIND lists).
pub const CHUNK: usize = 1000;
/// Keys per read query of the extract (fewer round trips; ArcadeDB runs a 5,000-key UNWIND as
/// fast per key as a 1,000-key one).
const READ_CHUNK: usize = 5000;
/// One staged graph file.
#[derive(Debug, Clone)]
pub struct GraphFile {
    /// `sp.Student`, `sp.Student-ENROLLED_IN-Section`.
    pub table: String,
    pub kind: GraphFileKind,
    pub file: FileInfo,
}

/// What a graph extraction wrote.
#[derive(Debug, Clone)]
pub struct GraphExtract {
    pub files: Vec<GraphFile>,
    pub nodes: u64,
    pub rels: u64,
    /// With `without_key = "skip"`: the nodes left out for lacking their key, by where they were
    /// met (`Person nodes of the district`, `nodes reached along ENROLLED_IN from Person`).
    pub skipped: BTreeMap<String, u64>,
}

fn node_key(label: &str, k: &GValue) -> Key {
    vec![Some(label.to_string()), Some(k.key_text())]
}

/// The selected (label, key) set of the district, and the nodes without their key that were met
/// (refused unless `without_key = "skip"`).
async fn select(
    r: &mut dyn GraphRead,
    cfg: &GraphConfig,
    district: &str,
    spill: &Spill,
) -> Result<(KeySet, BTreeMap<String, u64>), StoreError> {
    let mut selected = KeySet::new(spill, memory_limit());
    let mut frontier: BTreeMap<String, Vec<GValue>> = BTreeMap::new();
    let all: Vec<String> = r
        .label_counts()
        .await?
        .into_iter()
        .map(|(l, _)| l)
        .collect();
    check_key_labels(cfg, &all)?;
    let labels: Vec<String> = if cfg.district_labels.is_empty() {
        all
    } else {
        cfg.district_labels.clone()
    };
    let keys = r.keys().clone();
    // Nodes without the key cannot be selected, staged or loaded: counted, and the district is
    // refused rather than copied without them.
    let mut keyless: BTreeMap<String, u64> = BTreeMap::new();
    let mut keyed: Vec<String> = Vec::new();
    for l in &labels {
        let n = r
            .keyless(l, Some((&cfg.district_property, district)))
            .await?;
        if n > 0 {
            keyless.insert(format!("{l} nodes of the district"), n);
            keyed.push(format!("{l} by {}", keys.of(l)));
        }
    }
    for l in &labels {
        let seeds = frontier.entry(l.clone()).or_default();
        let mut sink = |k: GValue| -> Result<(), StoreError> {
            if selected.insert(node_key(l, &k))? {
                seeds.push(k);
            }
            Ok(())
        };
        r.district_keys(l, &cfg.district_property, district, &mut sink)
            .await?;
    }
    frontier.retain(|_, keys| !keys.is_empty());
    let mut depth = 0;
    while !frontier.is_empty() && !cfg.follow.is_empty() && cfg.max_depth.is_none_or(|m| depth < m)
    {
        let mut next: BTreeMap<String, Vec<GValue>> = BTreeMap::new();
        for (label, keys) in &frontier {
            for chunk in keys.chunks(READ_CHUNK) {
                for f in &cfg.follow {
                    let reached = r.neighbours(label, chunk, &f.rel_type, f.direction).await?;
                    if reached.keyless > 0 {
                        let what = format!("nodes reached along {} from {label}", f.rel_type);
                        *keyless.entry(what).or_default() += reached.keyless;
                    }
                    for (l, k) in reached.keyed {
                        if selected.insert(node_key(&l, &k))? {
                            next.entry(l).or_default().push(k);
                        }
                    }
                }
            }
        }
        frontier = next;
        depth += 1;
    }
    if !keyless.is_empty() && cfg.without_key == WithoutKey::Refuse {
        let found: Vec<String> = keyless.iter().map(|(w, n)| format!("{n} {w}")).collect();
        return Err(StoreError::Query {
            store: cfg.name.clone(),
            message: format!(
                "district {district}: {} lack their key ({}), so wf cannot key, copy or roll them back; it copies nothing rather than drop them: give those nodes their key, set [graph] keys (per label) or key_property to properties every node has, or set [graph] without_key = \"skip\" to leave them out, counted in the report",
                found.join(", "),
                if keyed.is_empty() { format!("default key {}", keys.of("")) } else { keyed.join(", ") }
            ),
        });
    }
    Ok((selected, keyless))
}

/// Refuses `[graph] keys` entries that name a label the PROD graph does not have (a misspelling
/// would otherwise key that label by `key_property` without a word).
pub fn check_key_labels(cfg: &GraphConfig, labels: &[String]) -> Result<(), StoreError> {
    let unknown: Vec<&String> = cfg.keys.keys().filter(|l| !labels.contains(l)).collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(StoreError::Query {
        store: cfg.name.clone(),
        message: format!(
            "[graph] keys names {} that the PROD graph does not have (its labels: {}); fix the label's spelling in wf.toml",
            unknown
                .iter()
                .map(|l| format!("label `{l}`"))
                .collect::<Vec<_>>()
                .join(", "),
            labels.join(", ")
        ),
    })
}

/// Properties as `[graph] maps` stages them: under `json`, unportable values become JSON text.
fn portable(cfg: &GraphConfig, props: BTreeMap<String, GValue>) -> BTreeMap<String, GValue> {
    if cfg.maps != Maps::Json {
        return props;
    }
    props.into_iter().map(|(k, v)| (k, v.portable())).collect()
}

fn portable_node(cfg: &GraphConfig, n: NodeRec) -> NodeRec {
    NodeRec {
        props: portable(cfg, n.props),
        labels: n.labels,
    }
}

/// Extracts the district subgraph of PROD into `dir`.
pub async fn extract_graph(
    cfg: &GraphConfig,
    district: &str,
    dir: &Path,
    batch_rows: usize,
) -> Result<GraphExtract, StoreError> {
    let mut r = open_read(cfg, Side::Prod).await?;
    let spill = Spill::new()?;
    let (selected, skipped) = select(r.as_mut(), cfg, district, &spill).await?;
    let keys = r.keys().clone();
    let mut nodes: BTreeMap<String, Spooler> = BTreeMap::new();
    let mut rels: BTreeMap<(String, String, String), Spooler> = BTreeMap::new();
    let (mut n_nodes, mut n_rels) = (0u64, 0u64);
    for chunk in selected.chunks(READ_CHUNK)? {
        let mut by_label: BTreeMap<String, Vec<GValue>> = BTreeMap::new();
        for k in chunk? {
            if let [Some(l), Some(t)] = k.as_slice() {
                by_label
                    .entry(l.clone())
                    .or_default()
                    .push(GValue::from_key_text(t));
            }
        }
        for (label, chunk_keys) in by_label {
            for n in r.nodes(&label, &chunk_keys).await? {
                if !nodes.contains_key(&label) {
                    let kind = GraphFileKind::Nodes {
                        label: label.clone(),
                    };
                    nodes.insert(label.clone(), Spooler::create(dir, kind, &keys)?);
                }
                let n = portable_node(cfg, n);
                if let Some(s) = nodes.get_mut(&label) {
                    s.push_node(&n)?;
                    n_nodes += 1;
                }
            }
            for rel in r.out_rels(&label, &chunk_keys).await? {
                if !selected.contains(&node_key(&rel.end.0, &rel.end.1))? {
                    continue;
                }
                let id = (rel.rel_type.clone(), rel.start.0.clone(), rel.end.0.clone());
                if !rels.contains_key(&id) {
                    let kind = GraphFileKind::Rels {
                        rel_type: id.0.clone(),
                        start: id.1.clone(),
                        end: id.2.clone(),
                    };
                    rels.insert(id.clone(), Spooler::create(dir, kind, &keys)?);
                }
                let rel = RelRec {
                    props: portable(cfg, rel.props),
                    ..rel
                };
                if let Some(s) = rels.get_mut(&id) {
                    s.push_rel(&rel)?;
                    n_rels += 1;
                }
            }
        }
    }
    r.finish().await?;
    let mut files = Vec::new();
    for s in nodes.into_values().chain(rels.into_values()) {
        let (kind, file) = s.finish(&cfg.name, &keys, dir, batch_rows)?;
        files.push(GraphFile {
            table: format!("{}.{}", cfg.name, kind.table()),
            kind,
            file,
        });
    }
    Ok(GraphExtract {
        files,
        nodes: n_nodes,
        rels: n_rels,
        skipped,
    })
}
