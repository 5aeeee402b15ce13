//! A graph refresh by difference (`wf refresh --incremental`, issue 16): instead of deleting every
//! node and relationship the replaced run created and loading the district's subgraph again, the
//! load compares the new anonymized staging with the replaced run's, element by element, and in
//! the same one transaction deletes what is gone, deletes and writes again what changed, writes
//! what is new, and leaves the rest as it is. CERT ends as the whole replace leaves it:
//! anonymization is deterministic under the run's key, so an unchanged PROD node stages the same.
//!
//! Only the replaced run's own elements (its manifest) are left as they are or deleted: a staged
//! node it did not create (CERT had it) is written by the strategy, as a whole replace writes it.
//! A changed node is deleted with its relationships (`DETACH DELETE`, as a whole replace deletes
//! it) and created again with them. The replaced staging only tells which of the run's own
//! elements are unchanged; without it, or keyed otherwise, the graph is replaced whole (logged).

use super::job::{Created, GraphLoad, BIG_CHUNK};
use super::stage::{GraphBatch, GraphFileKind, GraphFileReader};
use super::{GValue, GraphConfig, GraphWrite, KeyMap, NodeRec, RelRec};
use crate::error::StoreError;
use crate::keyset::{HashMap128, HashSet128};
use std::collections::BTreeMap;
use std::io::BufRead;

/// What a graph load by difference leaves, deletes and carries over.
#[derive(Default)]
pub(super) struct GraphDiff {
    /// Staged nodes left as they are (the replaced run's, staged the same), by identity.
    keep_nodes: HashSet128,
    /// Staged relationships left as they are (every parallel one of an identity), by identity.
    keep_rels: HashSet128,
    /// The replaced run's nodes to delete (gone or changed), by label.
    delete_nodes: BTreeMap<String, Vec<GValue>>,
    /// The replaced run's relationships to delete by their ends (gone or changed) whose ends both
    /// stay; those with a deleted end go with it.
    delete_rels: BTreeMap<(String, String, String), Vec<(GValue, GValue)>>,
    /// Manifest lines of what is left as it is: still owned, now by the new run.
    pub(super) carried: Vec<Created>,
}

/// A node's identity: its label and key, as its manifest line writes them.
fn node_id(label: &str, key: &serde_json::Value) -> u128 {
    crate::keyset::key_hash_of(
        [Some(label.as_bytes()), Some(key.to_string().as_bytes())].into_iter(),
    )
}

/// A relationship's identity: its type, its ends' labels and keys (parallel ones share it).
fn rel_id(
    rel: &str,
    (start, end): (&str, &str),
    s: &serde_json::Value,
    e: &serde_json::Value,
) -> u128 {
    let (s, e) = (s.to_string(), e.to_string());
    let parts = [rel, start, end, &s, &e];
    crate::keyset::key_hash_of(parts.iter().map(|p| Some(p.as_bytes())))
}

/// A staged element's contents (a node's labels and properties, a relationship's properties).
fn content(labels: &[String], props: &BTreeMap<String, GValue>) -> u128 {
    let mut labels = labels.to_vec();
    labels.sort();
    twox_hash::XxHash3_128::oneshot(format!("{labels:?} {props:?}").as_bytes())
}

/// Per identity, how many elements a staging holds and the sum of their contents' hashes (an
/// order-free digest of parallel relationships).
type Staged = HashMap128<(u64, u128)>;

fn stage(map: &mut Staged, id: u128, h: u128) {
    let e = map.entry(id).or_default();
    e.0 += 1;
    e.1 = e.1.wrapping_add(h);
}

/// The identities and contents of every element of `files`, read with `keys`; an error when a
/// file was staged keyed otherwise (the caller replaces whole).
fn staged(files: &[std::path::PathBuf], keys: &KeyMap) -> Result<(Staged, Staged), StoreError> {
    let (mut nodes, mut rels) = (Staged::default(), Staged::default());
    for f in files {
        let mut rd = GraphFileReader::open(f)?;
        let kind = rd.kind.clone();
        if rd.key != kind.key_under(keys) {
            return Err(StoreError::Staging {
                path: f.clone(),
                message: format!("staged keyed by `{}`, not as [graph] keys it now", rd.key),
            });
        }
        while let Some(b) = rd.next_batch()? {
            match (b, &kind) {
                (GraphBatch::Nodes(rows), GraphFileKind::Nodes { label }) => {
                    for n in &rows {
                        if let Some(id) = staged_node(keys, label, n) {
                            stage(&mut nodes, id, content(&n.labels, &n.props));
                        }
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
                    for r in &rows {
                        let id = staged_rel(rel_type, (start, end), r);
                        stage(&mut rels, id, content(&[], &r.props));
                    }
                }
                _ => {}
            }
        }
    }
    Ok((nodes, rels))
}

/// A staged node's identity (`None` without its key: the load refuses it).
fn staged_node(keys: &KeyMap, label: &str, n: &NodeRec) -> Option<u128> {
    Some(node_id(label, &keys.of(label).value(&n.props)?.to_json()))
}

/// A staged relationship's identity, its ends' labels those of its file (as the manifest's).
fn staged_rel(rel_type: &str, (start, end): (&str, &str), r: &RelRec) -> u128 {
    rel_id(
        rel_type,
        (start, end),
        &r.start.1.to_json(),
        &r.end.1.to_json(),
    )
}

/// What the replaced run's manifest lists: its nodes (label, key) and relationships with how
/// many of each identity.
struct Owned {
    nodes: HashMap128<(String, serde_json::Value)>,
    rels: HashMap128<(Created, u64)>,
}

fn owned(earlier: &GraphLoad) -> Result<Owned, StoreError> {
    let path = &earlier.manifest;
    let err = |e: &dyn std::fmt::Display| StoreError::Staging {
        path: path.clone(),
        message: format!("the replaced run's graph manifest: {e}"),
    };
    let f = std::fs::File::open(path).map_err(|e| err(&e))?;
    let mut out = Owned {
        nodes: HashMap128::default(),
        rels: HashMap128::default(),
    };
    for l in std::io::BufReader::new(f).lines() {
        let l = l.map_err(|e| err(&e))?;
        let c = serde_json::from_str::<Created>(&l).map_err(|e| err(&e))?;
        match &c {
            Created::Node { label, key } => {
                out.nodes
                    .insert(node_id(label, key), (label.clone(), key.clone()));
            }
            Created::Rel {
                rel,
                start,
                end,
                s,
                e,
            } => {
                let id = rel_id(rel, (start, end), s, e);
                out.rels.entry(id).or_insert((c.clone(), 0)).1 += 1;
            }
        }
    }
    Ok(out)
}

/// Deletes, in `w`'s transaction, what the replaced load `earlier` created: only what is gone or
/// changed when the job is by difference and the difference can be taken (the difference is
/// returned, to leave the rest as it is), else all of it. Nothing when its marker is not in
/// CERT (it never committed).
pub(super) async fn replace(
    w: &mut dyn GraphWrite,
    cfg: &GraphConfig,
    job: &GraphLoad,
    earlier: &GraphLoad,
) -> Result<Option<GraphDiff>, StoreError> {
    if job.by_difference && w.has_marker(&earlier.run_key).await? {
        match prepare(job, earlier, w.keys()) {
            Ok(d) => {
                d.delete(w, earlier).await?;
                let (kept, deleted) = d.counts();
                tracing::info!(graph = %cfg.name, "by difference: {kept} nodes and relationships left as they were, {deleted} of the replaced run's deleted");
                return Ok(Some(d));
            }
            Err(e) => {
                tracing::warn!(graph = %cfg.name, "replacing the district's graph whole, not by difference: {e}")
            }
        }
    }
    super::rollback::delete_created(w, cfg, earlier).await?;
    Ok(None)
}

/// The difference of `job` from the load it replaces (`earlier`, whose marker CERT holds), or
/// why there is none.
pub(super) fn prepare(
    job: &GraphLoad,
    earlier: &GraphLoad,
    keys: &KeyMap,
) -> Result<GraphDiff, StoreError> {
    let owned = owned(earlier)?;
    let (old_nodes, old_rels) = staged(&earlier.files, keys)?;
    let (new_nodes, new_rels) = staged(&job.files, keys)?;
    let mut d = GraphDiff::default();
    let mut deleted = HashSet128::default();
    for (id, (label, key)) in &owned.nodes {
        match (old_nodes.get(id), new_nodes.get(id)) {
            (Some(a), Some(b)) if a == b => {
                d.keep_nodes.insert(*id);
                d.carried.push(Created::Node {
                    label: label.clone(),
                    key: key.clone(),
                });
            }
            _ => {
                d.delete_nodes
                    .entry(label.clone())
                    .or_default()
                    .push(GValue::from_json(key));
                deleted.insert(*id);
            }
        }
    }
    for (id, (c, n)) in &owned.rels {
        let Created::Rel {
            rel,
            start,
            end,
            s,
            e,
        } = c
        else {
            continue;
        };
        if deleted.contains(&node_id(start, s)) || deleted.contains(&node_id(end, e)) {
            continue; // goes with its deleted end
        }
        match (old_rels.get(id), new_rels.get(id)) {
            // Every one of them the replaced run's, staged the same before and now.
            (Some(a), Some(b)) if a == b && a.0 == *n => {
                d.keep_rels.insert(*id);
                d.carried.extend((0..*n).map(|_| c.clone()));
            }
            _ => d
                .delete_rels
                .entry((rel.clone(), start.clone(), end.clone()))
                .or_default()
                .push((GValue::from_json(s), GValue::from_json(e))),
        }
    }
    Ok(d)
}

impl GraphDiff {
    /// Deletes the replaced run's gone and changed elements and its marker, in `w`'s transaction.
    pub(super) async fn delete(
        &self,
        w: &mut dyn GraphWrite,
        earlier: &GraphLoad,
    ) -> Result<(), StoreError> {
        for ((rel, start, end), pairs) in &self.delete_rels {
            for c in pairs.chunks(BIG_CHUNK) {
                w.delete_rels(rel, (start, end), c).await?;
            }
        }
        for (label, keys) in &self.delete_nodes {
            for c in keys.chunks(BIG_CHUNK) {
                w.delete_nodes(label, c).await?;
            }
        }
        w.delete_marker(&earlier.run_key).await
    }

    /// Whether staged node `n` of `label` stays as CERT has it.
    pub(super) fn keeps_node(&self, keys: &KeyMap, label: &str, n: &NodeRec) -> bool {
        staged_node(keys, label, n).is_some_and(|id| self.keep_nodes.contains(&id))
    }

    /// Whether staged relationship `r` of a `rel_type` file between `ends` stays as CERT has it.
    pub(super) fn keeps_rel(&self, rel_type: &str, ends: (&str, &str), r: &RelRec) -> bool {
        self.keep_rels.contains(&staged_rel(rel_type, ends, r))
    }

    /// How many elements are left as they are, and how many of the replaced run's are deleted
    /// (relationships going with a deleted node not counted).
    pub(super) fn counts(&self) -> (usize, usize) {
        let deleted = self.delete_nodes.values().map(Vec::len).sum::<usize>()
            + self.delete_rels.values().map(Vec::len).sum::<usize>();
        (self.carried.len(), deleted)
    }
}
