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
//!
//! Memory: 128-bit identities and content hashes only, not the manifest's lines; the replaced
//! run's manifest is read again for what to delete and what to carry over. At scale 25 (304,500
//! nodes and relationships) the graph's load peaked at 201-207 MB this way, 332 MB holding the
//! lines, 174-192 MB replacing whole.

use super::job::{Created, GraphLoad, BIG_CHUNK};
use super::stage::{GraphBatch, GraphFileKind, GraphFileReader};
use super::{GValue, GraphConfig, GraphWrite, KeyMap, NodeRec, RelRec};
use crate::error::StoreError;
use crate::keyset::{HashMap128, HashSet128};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

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
    /// The replaced run's manifest: its lines of what stays are carried into the new one.
    earlier_manifest: PathBuf,
    /// How many of its lines stay.
    kept: usize,
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

/// The identity of a manifest line's element.
fn line_id(c: &Created) -> u128 {
    match c {
        Created::Node { label, key, .. } => node_id(label, key),
        Created::Rel {
            rel,
            start,
            end,
            s,
            e,
            ..
        } => rel_id(rel, (start, end), s, e),
    }
}

/// A staged element's contents (a node's labels and properties, a relationship's properties),
/// hashed from a compact encoding written into `buf` (reused from one element to the next:
/// formatting each element as text took most of the comparison's time).
fn content(buf: &mut Vec<u8>, labels: &[String], props: &BTreeMap<String, GValue>) -> u128 {
    buf.clear();
    if labels.is_sorted() {
        labels.iter().for_each(|l| text(buf, l));
    } else {
        let mut sorted: Vec<&String> = labels.iter().collect();
        sorted.sort();
        sorted.iter().for_each(|l| text(buf, l));
    }
    buf.push(0xff);
    encode_map(buf, props);
    twox_hash::XxHash3_128::oneshot(buf)
}

fn text(buf: &mut Vec<u8>, t: &str) {
    buf.extend_from_slice(&(t.len() as u64).to_le_bytes());
    buf.extend_from_slice(t.as_bytes());
}

fn encode_map(buf: &mut Vec<u8>, m: &BTreeMap<String, GValue>) {
    buf.extend_from_slice(&(m.len() as u64).to_le_bytes());
    for (k, v) in m {
        text(buf, k);
        encode(buf, v);
    }
}

/// A value as a tag and its bytes (lengths first, so no two values share an encoding).
fn encode(buf: &mut Vec<u8>, v: &GValue) {
    match v {
        GValue::Null => buf.push(0),
        GValue::Bool(b) => buf.extend_from_slice(&[1, u8::from(*b)]),
        GValue::Int(i) => {
            buf.push(2);
            buf.extend_from_slice(&i.to_le_bytes());
        }
        GValue::Float(f) => {
            buf.push(3);
            buf.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        GValue::Text(t) => {
            buf.push(4);
            text(buf, t);
        }
        GValue::Date(d) => {
            buf.push(5);
            text(buf, &d.to_string());
        }
        GValue::DateTime(d) => {
            buf.push(6);
            text(buf, &d.to_string());
        }
        GValue::List(l) => {
            buf.push(7);
            buf.extend_from_slice(&(l.len() as u64).to_le_bytes());
            l.iter().for_each(|x| encode(buf, x));
        }
        GValue::Map(m) => {
            buf.push(8);
            encode_map(buf, m);
        }
    }
}

/// Per identity, how many elements a staging holds and the sum of their contents' hashes (an
/// order-free digest of parallel relationships).
type Staged = HashMap128<(u64, u128)>;

fn stage(map: &mut Staged, id: u128, h: u128) {
    let e = map.entry(id).or_default();
    e.0 += 1;
    e.1 = e.1.wrapping_add(h);
}

/// One staged element: a node's or relationship's identity and contents.
enum Element {
    Node(u128, u128),
    Rel(u128, u128),
}

/// Calls `f` with every element of `files` read with `keys`, node files first; an error when a
/// file was staged keyed otherwise (the caller replaces whole).
fn each_staged(
    files: &[PathBuf],
    keys: &KeyMap,
    mut f: impl FnMut(Element),
) -> Result<(), StoreError> {
    let mut readers = files
        .iter()
        .map(|p| GraphFileReader::open(p).map(|r| (p, r)))
        .collect::<Result<Vec<_>, _>>()?;
    readers.sort_by_key(|(_, r)| matches!(r.kind, GraphFileKind::Rels { .. }));
    let mut buf = Vec::new();
    for (path, mut rd) in readers {
        let kind = rd.kind.clone();
        if rd.key != kind.key_under(keys) {
            return Err(StoreError::Staging {
                path: path.clone(),
                message: format!("staged keyed by `{}`, not as [graph] keys it now", rd.key),
            });
        }
        while let Some(b) = rd.next_batch()? {
            match (b, &kind) {
                (GraphBatch::Nodes(rows), GraphFileKind::Nodes { label }) => {
                    for n in &rows {
                        if let Some(id) = staged_node(keys, label, n) {
                            f(Element::Node(id, content(&mut buf, &n.labels, &n.props)));
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
                        f(Element::Rel(id, content(&mut buf, &[], &r.props)));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
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

/// The lines of a load's manifest, one by one.
fn manifest_lines(
    path: &Path,
) -> Result<impl Iterator<Item = Result<Created, StoreError>> + '_, StoreError> {
    let err = move |e: &dyn std::fmt::Display| StoreError::Staging {
        path: path.to_path_buf(),
        message: format!("the replaced run's graph manifest: {e}"),
    };
    let f = std::fs::File::open(path).map_err(|e| err(&e))?;
    Ok(std::io::BufReader::new(f).lines().map(move |l| {
        let l = l.map_err(|e| err(&e))?;
        serde_json::from_str::<Created>(&l).map_err(|e| err(&e))
    }))
}

/// The identities the replaced run created: its nodes, and its relationships with how many of
/// each identity.
fn owned(earlier: &GraphLoad) -> Result<(HashSet128, HashMap128<u64>), StoreError> {
    let (mut nodes, mut rels) = (HashSet128::default(), HashMap128::<u64>::default());
    for c in manifest_lines(&earlier.manifest)? {
        let c = c?;
        match c {
            Created::Node { .. } => {
                nodes.insert(line_id(&c));
            }
            Created::Rel { .. } => *rels.entry(line_id(&c)).or_default() += 1,
        }
    }
    Ok((nodes, rels))
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
        let started = std::time::Instant::now();
        match prepare(job, earlier, w.keys()) {
            Ok(d) => {
                let compared = started.elapsed().as_secs_f64();
                d.delete(w, earlier).await?;
                let (kept, deleted) = d.counts();
                tracing::info!(graph = %cfg.name, "by difference: {kept} nodes and relationships left as they were, {deleted} of the replaced run's deleted (compared in {compared:.2} s)");
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
/// why there is none. Only the replaced run's own elements are compared: a node stays when it is
/// staged the same before and now; a relationship when every one of its identity is the run's,
/// staged the same, and both its ends stay.
pub(super) fn prepare(
    job: &GraphLoad,
    earlier: &GraphLoad,
    keys: &KeyMap,
) -> Result<GraphDiff, StoreError> {
    let (owned_nodes, owned_rels) = owned(earlier)?;
    let is_owned = |id: &u128| owned_nodes.contains(id) || owned_rels.contains_key(id);
    let mut old = Staged::default();
    each_staged(&earlier.files, keys, |e| match e {
        Element::Node(id, h) | Element::Rel(id, h) if is_owned(&id) => stage(&mut old, id, h),
        _ => {}
    })?;
    let mut d = GraphDiff {
        earlier_manifest: earlier.manifest.clone(),
        ..GraphDiff::default()
    };
    let mut new_rels = Staged::default();
    each_staged(&job.files, keys, |e| match e {
        Element::Node(id, h) if old.get(&id) == Some(&(1, h)) => {
            d.keep_nodes.insert(id);
        }
        Element::Rel(id, h) if owned_rels.contains_key(&id) => stage(&mut new_rels, id, h),
        _ => {}
    })?;
    let gone = |label: &str, key: &serde_json::Value| {
        let id = node_id(label, key);
        owned_nodes.contains(&id) && !d.keep_nodes.contains(&id)
    };
    let (mut keep_rels, mut decided) = (HashSet128::default(), HashSet128::default());
    for c in manifest_lines(&earlier.manifest)? {
        let c = c?;
        let id = line_id(&c);
        match &c {
            Created::Node { label, key, .. } if gone(label, key) => d
                .delete_nodes
                .entry(label.clone())
                .or_default()
                .push(GValue::from_json(key)),
            Created::Node { .. } => d.kept += 1,
            Created::Rel {
                start, s, end, e, ..
            } if gone(start, s) || gone(end, e) => {}
            Created::Rel {
                rel,
                start,
                end,
                s,
                e,
                ..
            } => {
                let n = owned_rels.get(&id).copied().unwrap_or(0);
                let same = old
                    .get(&id)
                    .is_some_and(|o| o.0 == n && new_rels.get(&id) == Some(o));
                if same {
                    keep_rels.insert(id);
                    d.kept += 1;
                } else if decided.insert(id) {
                    d.delete_rels
                        .entry((rel.clone(), start.clone(), end.clone()))
                        .or_default()
                        .push((GValue::from_json(s), GValue::from_json(e)));
                }
            }
        }
    }
    d.keep_rels = keep_rels;
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

    /// Calls `f` with every line of the replaced run's manifest whose element stays (it stays
    /// owned, now by the new run).
    pub(super) fn carried(
        &self,
        mut f: impl FnMut(Created) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for c in manifest_lines(&self.earlier_manifest)? {
            let c = c?;
            let id = line_id(&c);
            if self.keep_nodes.contains(&id) || self.keep_rels.contains(&id) {
                f(c)?;
            }
        }
        Ok(())
    }

    /// How many elements are left as they are, and how many of the replaced run's are deleted
    /// (relationships going with a deleted node not counted).
    pub(super) fn counts(&self) -> (usize, usize) {
        let deleted = self.delete_nodes.values().map(Vec::len).sum::<usize>()
            + self.delete_rels.values().map(Vec::len).sum::<usize>();
        (self.kept, deleted)
    }
}
