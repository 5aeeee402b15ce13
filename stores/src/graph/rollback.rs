//! Rolling a graph load back: the nodes and relationships its manifest lists, deleted in one
//! transaction if its marker says it committed (relationships with an end the load did not
//! create first, then the nodes with the relationships between them); and a preview of what
//! that would delete now.

use super::job::{Created, GraphLoad, BIG_CHUNK};
use super::{open_write, GValue, GraphConfig, GraphWrite};
use crate::error::StoreError;
use std::collections::{BTreeMap, HashSet};
use std::io::BufRead;

/// What a load's manifest lists: node keys by label, and relationships by (type, start label,
/// end label).
#[derive(Default)]
struct Listed {
    nodes: BTreeMap<String, Vec<GValue>>,
    rels: BTreeMap<(String, String, String), Rels>,
}

/// A relationship type's listed relationships: those with an end the load did not create,
/// deleted one by one by their (start, end) keys, and how many join two nodes it created, which
/// go with those nodes (`DETACH DELETE`: looking each one up by its ends took half the rollback).
#[derive(Default)]
struct Rels {
    by_keys: Vec<(GValue, GValue)>,
    with_nodes: u64,
}

impl Rels {
    fn listed(&self) -> u64 {
        self.by_keys.len() as u64 + self.with_nodes
    }
}

/// Reads `job`'s manifest, which must be there once its load committed.
fn listed(job: &GraphLoad) -> Result<Listed, StoreError> {
    let refuse = |message: String| StoreError::Manifest {
        store: job.store.clone(),
        table: "(graph)".into(),
        message: format!("{message} ({})", job.manifest.display()),
    };
    let f = std::fs::File::open(&job.manifest).map_err(|e| {
        refuse(format!(
            "the load committed but its manifest cannot be opened ({e}), so wf cannot tell its nodes from CERT's own"
        ))
    })?;
    let mut out = Listed::default();
    // Nodes the load created, as (label, key's JSON text); relationships until all are read.
    let mut created: HashSet<(String, String)> = HashSet::new();
    let mut rels = Vec::new();
    for l in std::io::BufReader::new(f).lines() {
        let l = l.map_err(|e| refuse(format!("the manifest cannot be read ({e})")))?;
        match serde_json::from_str::<Created>(&l)
            .map_err(|e| refuse(format!("the manifest is damaged ({e})")))?
        {
            Created::Node { label, key, .. } => {
                created.insert((label.clone(), key.to_string()));
                out.nodes
                    .entry(label)
                    .or_default()
                    .push(GValue::from_json(&key));
            }
            Created::Rel {
                rel,
                start,
                end,
                s,
                e,
                ..
            } => rels.push((rel, start, end, s, e)),
        }
    }
    for (rel, start, end, s, e) in rels {
        let inner = created.contains(&(start.clone(), s.to_string()))
            && created.contains(&(end.clone(), e.to_string()));
        let entry = out.rels.entry((rel, start, end)).or_default();
        if inner {
            entry.with_nodes += 1;
        } else {
            entry
                .by_keys
                .push((GValue::from_json(&s), GValue::from_json(&e)));
        }
    }
    Ok(out)
}

/// Deletes from CERT what `job` created, if it committed; counts deleted per table.
pub async fn rollback_graph(
    cfg: &GraphConfig,
    job: &GraphLoad,
) -> Result<Vec<(String, u64)>, StoreError> {
    let mut w = open_write(cfg).await?;
    match delete_created(w.as_mut(), cfg, job).await {
        Ok(Some(out)) => {
            w.commit().await?;
            Ok(out)
        }
        Ok(None) => {
            w.rollback().await?;
            Ok(Vec::new())
        }
        Err(e) => {
            let _ = w.rollback().await;
            Err(e)
        }
    }
}

/// Deletes, inside `w`'s transaction, what `job` created if it committed (its marker is there),
/// relationships first, then nodes, then its marker; counts deleted per table (`None` when not committed).
pub(super) async fn delete_created(
    w: &mut dyn GraphWrite,
    cfg: &GraphConfig,
    job: &GraphLoad,
) -> Result<Option<Vec<(String, u64)>>, StoreError> {
    if !w.has_marker(&job.run_key).await? {
        return Ok(None);
    }
    let Listed { nodes, rels } = listed(job)?;
    let mut out = Vec::new();
    for ((rel, start, end), listed) in &rels {
        // Those joining two created nodes are counted as listed: they go with the nodes below.
        let mut n = listed.with_nodes;
        for c in listed.by_keys.chunks(BIG_CHUNK) {
            n += w.delete_rels(rel, (start, end), c).await?;
        }
        out.push((format!("{}.{start}-{rel}-{end}", cfg.name), n));
    }
    for (label, keys) in &nodes {
        let mut n = 0;
        for c in keys.chunks(BIG_CHUNK) {
            n += w.delete_nodes(label, c).await?;
        }
        out.push((format!("{}.{label}", cfg.name), n));
    }
    w.delete_marker(&job.run_key).await?;
    Ok(Some(out))
}

/// What `rollback_graph` would delete now, per table, without deleting: the listed nodes still in
/// CERT, and the listed relationships (deleting a node takes any relationship still attached to
/// it too). Nothing when the load never committed.
pub async fn preview_rollback_graph(
    cfg: &GraphConfig,
    job: &GraphLoad,
) -> Result<Vec<(String, u64)>, StoreError> {
    let mut w = open_write(cfg).await?;
    let res: Result<Vec<(String, u64)>, StoreError> = async {
        if !w.has_marker(&job.run_key).await? {
            return Ok(Vec::new());
        }
        let Listed { nodes, rels } = listed(job)?;
        let mut out: Vec<(String, u64)> = rels
            .iter()
            .map(|((rel, start, end), listed)| {
                (format!("{}.{start}-{rel}-{end}", cfg.name), listed.listed())
            })
            .collect();
        for (label, keys) in &nodes {
            let mut n = 0;
            for c in keys.chunks(BIG_CHUNK) {
                n += w.existing_nodes(label, c).await?.len() as u64;
            }
            out.push((format!("{}.{label}", cfg.name), n));
        }
        Ok(out)
    }
    .await;
    w.rollback().await?;
    res
}
