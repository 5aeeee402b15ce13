//! Rolling a graph load back: the nodes and relationships its manifest lists, deleted in one
//! transaction (relationships first) if its marker says it committed; and a preview of what that
//! would delete now.

use super::job::{Created, GraphLoad, BIG_CHUNK};
use super::{open_write, GValue, GraphConfig, GraphWrite};
use crate::error::StoreError;
use std::collections::BTreeMap;
use std::io::BufRead;

/// What a load's manifest lists: node keys by label, (start, end) pairs by (type, start label,
/// end label).
type Listed = (
    BTreeMap<String, Vec<GValue>>,
    BTreeMap<(String, String, String), Vec<(GValue, GValue)>>,
);

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
    let (mut nodes, mut rels): Listed = Default::default();
    for l in std::io::BufReader::new(f).lines() {
        let l = l.map_err(|e| refuse(format!("the manifest cannot be read ({e})")))?;
        match serde_json::from_str::<Created>(&l)
            .map_err(|e| refuse(format!("the manifest is damaged ({e})")))?
        {
            Created::Node { label, key } => nodes
                .entry(label)
                .or_default()
                .push(GValue::from_json(&key)),
            Created::Rel {
                rel,
                start,
                end,
                s,
                e,
            } => rels
                .entry((rel, start, end))
                .or_default()
                .push((GValue::from_json(&s), GValue::from_json(&e))),
        }
    }
    Ok((nodes, rels))
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
/// relationships first, then its marker; counts deleted per table (`None` when not committed).
pub(super) async fn delete_created(
    w: &mut dyn GraphWrite,
    cfg: &GraphConfig,
    job: &GraphLoad,
) -> Result<Option<Vec<(String, u64)>>, StoreError> {
    if !w.has_marker(&job.run_key).await? {
        return Ok(None);
    }
    let (nodes, rels) = listed(job)?;
    let mut out = Vec::new();
    for ((rel, start, end), pairs) in &rels {
        let mut n = 0;
        for c in pairs.chunks(BIG_CHUNK) {
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
        let (nodes, rels) = listed(job)?;
        let mut out: Vec<(String, u64)> = rels
            .iter()
            .map(|((rel, start, end), pairs)| {
                (
                    format!("{}.{start}-{rel}-{end}", cfg.name),
                    pairs.len() as u64,
                )
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
