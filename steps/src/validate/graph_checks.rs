//! Graph checks on the anonymized staging: node keys unique per label, relationship ends among
//! the staged nodes, links to relational rows resolving inside the subset.

use super::cells::KeySet;
use super::cells::{hash_key, set_id};
use super::input::ValidateInput;
use super::rules::Severity;
use super::Tally;
use std::collections::{BTreeMap, HashMap, HashSet};
use wf_stores::config::ColumnRef;
use wf_stores::graph::stage::{GraphBatch, GraphFileKind, GraphFileReader};
use wf_stores::graph::GraphConfig;
use wf_stores::subset::Key;
use wf_stores::StoreError;

/// Graph: node keys unique per label, relationship ends among the staged nodes, links resolve,
/// no parallel relationships where the load MERGEs them.
pub(super) fn graph_checks(
    tally: &mut Tally,
    inp: &ValidateInput<'_>,
    sets: &HashMap<String, KeySet>,
) -> Result<(), StoreError> {
    let Some(g) = &inp.config.graph else {
        return Ok(());
    };
    let mut nodes: HashMap<String, HashSet<String>> = HashMap::new();
    let mut rel_files = Vec::new();
    for path in &inp.graph_files {
        let rd = GraphFileReader::open(path)?;
        let GraphFileKind::Nodes { label } = rd.kind.clone() else {
            rel_files.push(path);
            continue;
        };
        let keys = nodes.entry(label.clone()).or_default();
        node_file(tally, g, &label, rd, keys, sets)?;
    }
    for path in rel_files {
        let merges = inp.strategy != wf_stores::load::Strategy::Insert;
        rel_file(tally, g, GraphFileReader::open(path)?, &nodes, merges)?;
    }
    Ok(())
}

/// The links of `label`'s nodes to relational rows: (property, referenced column).
fn links_of(g: &GraphConfig, label: &str) -> Vec<(String, ColumnRef)> {
    g.links
        .iter()
        .filter_map(|l| {
            l.from
                .split_once('.')
                .filter(|(lab, _)| *lab == label)
                .map(|(_, p)| (p.to_string(), ColumnRef::parse(&l.to)))
        })
        .filter_map(|(p, r)| r.map(|r| (p, r)))
        .collect()
}

/// One node file: keys unique within the label (collected into `keys`), links resolve inside
/// the subset's key `sets`.
fn node_file(
    tally: &mut Tally,
    g: &GraphConfig,
    label: &str,
    mut rd: GraphFileReader,
    keys: &mut HashSet<String>,
    sets: &HashMap<String, KeySet>,
) -> Result<(), StoreError> {
    let table = format!("{}.{label}", g.name);
    let links = links_of(g, label);
    let (mut dup, mut dex) = (0u64, Vec::new());
    let mut keyless = 0u64;
    let mut unportable = Unportable::default();
    let key = g.key_map().of(label).clone();
    let mut dangling: BTreeMap<String, (u64, Vec<String>)> = BTreeMap::new();
    while let Some(b) = rd.next_batch()? {
        let GraphBatch::Nodes(ns) = b else { continue };
        for n in ns {
            unportable.note(&n.props);
            let Some(k) = key.value(&n.props).map(|v| v.key_text()) else {
                // A rule that nulls a key part leaves a node CERT cannot identify.
                keyless += 1;
                continue;
            };
            if !keys.insert(k.clone()) {
                dup += 1;
                if dex.len() < super::EXAMPLES {
                    dex.push(k.clone());
                }
            }
            for (prop, r) in &links {
                let Some(v) = n.props.get(prop) else { continue };
                let key: Key = vec![Some(v.staging_text())];
                if !sets
                    .get(&set_id(&r.table_id(), std::slice::from_ref(&r.column)))
                    .is_some_and(|s| s.contains(&hash_key(&key)))
                {
                    let e = dangling.entry(prop.clone()).or_default();
                    e.0 += 1;
                    if e.1.len() < super::EXAMPLES {
                        e.1.push(k.clone());
                    }
                }
            }
        }
    }
    tally.check(
        "graph",
        "node key unique",
        &table,
        Severity::Error,
        dup,
        dex,
        format!("{dup} {label} nodes share a key"),
    );
    tally.check(
        "graph",
        "node key present",
        &table,
        Severity::Error,
        keyless,
        vec![],
        format!("{keyless} staged {label} nodes lack their key `{key}` (a rule nulled or removed it); give the key's properties a rule that keeps a value (hmac, fake)"),
    );
    unportable.check(tally, g, &table);
    for (prop, r) in &links {
        let (n, ex) = dangling.remove(prop).unwrap_or_default();
        tally.check(
            "referential_integrity",
            &format!("link {label}.{prop} -> {}.{}", r.table_id(), r.column),
            &table,
            Severity::Error,
            n,
            ex,
            format!(
                "{n} {label} nodes link to {} rows that are not in the subset",
                r.table_id()
            ),
        );
    }
    Ok(())
}

/// One relationship file: both ends of every relationship are among the staged `nodes`.
fn rel_file(
    tally: &mut Tally,
    g: &GraphConfig,
    mut rd: GraphFileReader,
    nodes: &HashMap<String, HashSet<String>>,
    merges: bool,
) -> Result<(), StoreError> {
    let GraphFileKind::Rels { start, end, .. } = rd.kind.clone() else {
        return Ok(());
    };
    let table = format!("{}.{}", g.name, rd.kind.table());
    let (mut n, mut ex) = (0u64, Vec::new());
    let mut unportable = Unportable::default();
    let mut parallel = Parallel::default();
    let ok = |label: &str, v: &wf_stores::graph::GValue| {
        nodes.get(label).is_some_and(|s| s.contains(&v.key_text()))
    };
    while let Some(b) = rd.next_batch()? {
        let GraphBatch::Rels(rs) = b else { continue };
        for r in rs {
            unportable.note(&r.props);
            parallel.note(&r);
            if !ok(&start, &r.start.1) || !ok(&end, &r.end.1) {
                n += 1;
                if ex.len() < super::EXAMPLES {
                    ex.push(format!(
                        "{} -> {}",
                        r.start.1.key_text(),
                        r.end.1.key_text()
                    ));
                }
            }
        }
    }
    tally.check(
        "graph",
        "relationship ends present",
        &table,
        Severity::Error,
        n,
        ex,
        format!("{n} relationships have an end node missing from the subgraph"),
    );
    unportable.check(tally, g, &table);
    parallel.check(tally, &table, merges);
    Ok(())
}

/// Relationships of one staged file that repeat another between the same two nodes (one file
/// holds one type): `upsert` and `skip-existing` MERGE relationships by (type, start, end), so
/// they would keep one of them while the report counted every one; `insert` CREATEs each.
#[derive(Default)]
struct Parallel {
    seen: KeySet,
    repeats: u64,
    examples: Vec<String>,
}

impl Parallel {
    fn note(&mut self, r: &wf_stores::graph::RelRec) {
        let (s, e) = (r.start.1.key_text(), r.end.1.key_text());
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&(&s, &e), &mut h);
        if !self.seen.insert(std::hash::Hasher::finish(&h)) {
            self.repeats += 1;
            if self.examples.len() < super::EXAMPLES {
                self.examples.push(format!("{s} -> {e}"));
            }
        }
    }

    fn check(self, tally: &mut Tally, table: &str, merges: bool) {
        let n = self.repeats;
        let sev = if merges {
            Severity::Error
        } else {
            Severity::Info
        };
        let message = if merges {
            format!("{n} relationships repeat another of their type between the same two nodes; this strategy MERGEs relationships by type and ends and would keep one of each: load with --strategy insert, which creates every one")
        } else {
            format!("{n} relationships repeat another of their type between the same two nodes (parallel relationships); insert creates each, and a rollback deletes them together")
        };
        tally.check(
            "graph",
            "parallel relationships",
            table,
            sev,
            n,
            self.examples,
            message,
        );
    }
}

/// Properties of one staged file whose values a Bolt server may refuse (maps, nested or mixed
/// lists), counted per property; a gate error under `[graph] maps = "refuse"`.
#[derive(Default)]
struct Unportable(BTreeMap<String, u64>);

impl Unportable {
    fn note(&mut self, props: &BTreeMap<String, wf_stores::graph::GValue>) {
        for (k, v) in props {
            if !v.is_portable() {
                *self.0.entry(k.clone()).or_default() += 1;
            }
        }
    }

    fn check(self, tally: &mut Tally, g: &GraphConfig, table: &str) {
        if g.maps != wf_stores::graph::Maps::Refuse {
            return;
        }
        let n: u64 = self.0.values().sum();
        let ex: Vec<String> = self.0.iter().map(|(p, c)| format!("{p} ({c})")).collect();
        tally.check(
            "graph",
            "property types the server accepts",
            table,
            Severity::Error,
            n,
            ex.clone(),
            format!(
                "{n} values are maps, nested lists or lists of mixed kinds, which Neo4j refuses: {}; set [graph] maps = \"json\" to load them as JSON text, or \"keep\" if the CERT server stores them",
                ex.join(", ")
            ),
        );
    }
}
