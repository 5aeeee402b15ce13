//! Graph discovery for `wf analyze`: labels and relationship types with their counts, property keys
//! with the value kinds seen and how often (from a sample per label / type), and which labels each
//! relationship type connects.

use super::{open_read, GraphConfig};
use crate::error::StoreError;
use crate::refs::Side;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Nodes or relationships sampled per label / type.
pub const SAMPLE: u64 = 10_000;

/// One property: value kinds seen, with counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PropertyStat {
    pub name: String,
    pub kinds: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelStat {
    pub label: String,
    pub count: u64,
    /// The label's key (`[graph] keys`, else `key_property`).
    #[serde(default)]
    pub key: String,
    /// Nodes without their key: no migrate can carry them.
    #[serde(default)]
    pub without_key: u64,
    /// Properties every sampled node has, with no value twice: what `[graph] keys` could name.
    #[serde(default)]
    pub key_candidates: Vec<String>,
    pub sampled: u64,
    pub properties: Vec<PropertyStat>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelTypeStat {
    pub rel_type: String,
    pub count: u64,
    pub sampled: u64,
    /// (start label, end label) pairs seen, with counts.
    pub ends: BTreeMap<String, u64>,
    pub properties: Vec<PropertyStat>,
}

/// What discovery found in one graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphSchema {
    pub store: String,
    pub key_property: String,
    pub labels: Vec<LabelStat>,
    pub rel_types: Vec<RelTypeStat>,
}

fn stats<'a>(
    props: impl Iterator<Item = &'a BTreeMap<String, super::GValue>>,
) -> Vec<PropertyStat> {
    let mut m: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for p in props {
        for (k, v) in p {
            *m.entry(k.clone())
                .or_default()
                .entry(v.kind().to_string())
                .or_default() += 1;
        }
    }
    m.into_iter()
        .map(|(name, kinds)| PropertyStat { name, kinds })
        .collect()
}

/// Properties present on every sampled node with no value repeated, in name order.
fn key_candidates(sample: &[super::NodeRec]) -> Vec<String> {
    let mut seen: BTreeMap<&str, std::collections::BTreeSet<String>> = BTreeMap::new();
    for n in sample {
        for (k, v) in &n.props {
            seen.entry(k).or_default().insert(v.key_text());
        }
    }
    seen.into_iter()
        .filter(|(_, vals)| !sample.is_empty() && vals.len() == sample.len())
        .map(|(k, _)| k.to_string())
        .collect()
}

/// Discovers the PROD side of the graph (read only).
pub async fn discover_graph(cfg: &GraphConfig) -> Result<GraphSchema, StoreError> {
    let mut r = open_read(cfg, Side::Prod).await?;
    let mut labels = Vec::new();
    let counts = r.label_counts().await?;
    let names: Vec<String> = counts.iter().map(|(l, _)| l.clone()).collect();
    super::extract::check_key_labels(cfg, &names)?;
    for (label, count) in counts {
        let sample = r.sample_nodes(&label, SAMPLE).await?;
        let without_key = r.keyless(&label, None).await?;
        labels.push(LabelStat {
            key: r.keys().of(&label).to_string(),
            key_candidates: key_candidates(&sample),
            label,
            count,
            without_key,
            sampled: sample.len() as u64,
            properties: stats(sample.iter().map(|n| &n.props)),
        });
    }
    let mut rel_types = Vec::new();
    for (rel_type, count) in r.rel_type_counts().await? {
        let sample = r.sample_rels(&rel_type, SAMPLE).await?;
        let mut ends: BTreeMap<String, u64> = BTreeMap::new();
        for s in &sample {
            *ends
                .entry(format!("{} -> {}", s.start.0, s.end.0))
                .or_default() += 1;
        }
        rel_types.push(RelTypeStat {
            rel_type,
            count,
            sampled: sample.len() as u64,
            ends,
            properties: stats(sample.iter().map(|s| &s.props)),
        });
    }
    r.finish().await?;
    Ok(GraphSchema {
        store: cfg.name.clone(),
        key_property: cfg.key_property.clone(),
        labels,
        rel_types,
    })
}

/// The graph as a Graphviz cluster for `dependency-graph.dot`: a node per label (with its count)
/// and an edge per relationship type and pair of end labels seen in the sample.
pub fn dot_cluster(g: &GraphSchema) -> String {
    let q = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let id = |label: &str| format!("\"{}:{}\"", q(&g.store), q(label));
    let mut s = format!(
        "  subgraph \"cluster_{}\" {{\n    label=\"graph {} (default key {})\";\n    node [shape=ellipse];\n",
        q(&g.store),
        q(&g.store),
        q(&g.key_property)
    );
    for l in &g.labels {
        s.push_str(&format!(
            "    {} [label=\"{}\\nkey {}\\n{} nodes\"];\n",
            id(&l.label),
            q(&l.label),
            q(&l.key),
            l.count
        ));
    }
    for r in &g.rel_types {
        for ends in r.ends.keys() {
            let Some((a, b)) = ends.split_once(" -> ") else {
                continue;
            };
            s.push_str(&format!(
                "    {} -> {} [label=\"{} ({})\"];\n",
                id(a),
                id(b),
                q(&r.rel_type),
                r.count
            ));
        }
    }
    s.push_str("  }\n");
    s
}
