//! The graph store (sp): a property graph in Neo4j over Bolt (neo4rs) or in an embedded file, behind
//! `GraphRead` / `GraphWrite`. Nodes are identified by (label, key) (see `key`); a node's label is its
//! first label in name order, and all its labels travel with it. Relationships are identified by
//! (type, start node, end node): `insert` CREATEs each (parallel ones too); `upsert` and
//! `skip-existing` MERGE them, so the validation gate refuses parallel ones under those.

pub mod bolt;
pub mod config;
mod diff;
pub mod discover;
pub mod embedded;
pub mod extract;
mod job;
pub mod key;
pub mod load;
pub mod rollback;
pub mod stage;
pub mod value;

pub use config::{Direction, Follow, GraphConfig, GraphKind, GraphLink, Maps, WithoutKey};
pub use key::{KeyMap, KeySpec, NodeKey};
pub use value::GValue;

use crate::error::StoreError;
use crate::refs::Side;
use std::collections::BTreeMap;

/// The label that marks committed loads in CERT; never discovered, extracted or loaded.
pub const MARKER_LABEL: &str = "WfLoad";

/// A node as read: all its labels and its properties (the key property among them).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRec {
    pub labels: Vec<String>,
    pub props: BTreeMap<String, GValue>,
}

impl NodeRec {
    /// The label a node is filed under: the first of its labels in name order.
    pub fn primary_label(&self) -> Option<&str> {
        self.labels.iter().map(String::as_str).min()
    }
}

/// A relationship as read: its type, both ends as (label, key), its properties.
#[derive(Debug, Clone, PartialEq)]
pub struct RelRec {
    pub rel_type: String,
    pub start: (String, GValue),
    pub end: (String, GValue),
    pub props: BTreeMap<String, GValue>,
}

/// The first label in name order of a label list (how a node is filed).
pub fn primary_of(labels: &[String]) -> Option<String> {
    labels.iter().min().cloned()
}

/// Takes keys as a query streams them.
pub type KeySink<'a> = dyn FnMut(GValue) -> Result<(), StoreError> + Send + 'a;

/// What one hop reached: the nodes with their key, and the count of those without it.
#[derive(Debug, Default)]
pub struct Reached {
    pub keyed: Vec<(String, GValue)>,
    pub keyless: u64,
}

/// Reads one side of a graph, inside one read transaction where the server has them.
#[async_trait::async_trait]
pub trait GraphRead: Send {
    /// Every label's key (from the configuration the store was opened with).
    fn keys(&self) -> &KeyMap;
    /// Node counts per primary label (counted, not taken from a catalog that may list empty labels).
    async fn label_counts(&mut self) -> Result<Vec<(String, u64)>, StoreError>;
    /// Relationship counts per type.
    async fn rel_type_counts(&mut self) -> Result<Vec<(String, u64)>, StoreError>;
    /// Up to `limit` nodes of `label` (for discovery).
    async fn sample_nodes(&mut self, label: &str, limit: u64) -> Result<Vec<NodeRec>, StoreError>;
    /// Up to `limit` relationships of `rel_type` (for discovery); ends by `key`.
    async fn sample_rels(&mut self, rel_type: &str, limit: u64) -> Result<Vec<RelRec>, StoreError>;
    /// How many `label` nodes hold each value of `prop` (a district's nodes, for
    /// `wf select-districts`); values as text, so `2` and `"2"` count together.
    async fn district_counts(
        &mut self,
        label: &str,
        prop: &str,
    ) -> Result<Vec<(String, u64)>, StoreError>;
    /// Keys of the `label` nodes whose `prop` equals the district (as text or integer), handed
    /// to `sink` as they arrive (one query, no sort; nodes without their key are left out and
    /// counted by `keyless`).
    async fn district_keys(
        &mut self,
        label: &str,
        prop: &str,
        district: &str,
        sink: &mut KeySink<'_>,
    ) -> Result<(), StoreError>;
    /// The nodes one `rel_type` hop away from the given `label` nodes: (label, key) of those
    /// with their key, and how many lack it (one query, so a district's BFS pays one round trip
    /// per chunk and relationship type).
    async fn neighbours(
        &mut self,
        label: &str,
        keys: &[GValue],
        rel_type: &str,
        dir: Direction,
    ) -> Result<Reached, StoreError>;
    /// How many `label` nodes lack the `key` property; of one district when `district` is given
    /// as (district property, district).
    async fn keyless(
        &mut self,
        label: &str,
        district: Option<(&str, &str)>,
    ) -> Result<u64, StoreError>;
    /// The `label` nodes with these keys.
    async fn nodes(&mut self, label: &str, keys: &[GValue]) -> Result<Vec<NodeRec>, StoreError>;
    /// Every relationship leaving the `label` nodes with these keys.
    async fn out_rels(&mut self, label: &str, keys: &[GValue]) -> Result<Vec<RelRec>, StoreError>;
    /// The CERT enrollment marker, if this graph carries one (see `crate::guard`).
    async fn enrollment(&mut self) -> Result<Option<crate::marker::Enrollment>, StoreError>;
    /// Ends the read transaction.
    async fn finish(self: Box<Self>) -> Result<(), StoreError>;
}

/// Writes one side of a graph (CERT only) inside one transaction.
#[async_trait::async_trait]
pub trait GraphWrite: Send {
    /// Every label's key (from the configuration the store was opened with).
    fn keys(&self) -> &KeyMap;
    /// Writes the CERT enrollment marker (see `crate::guard`).
    async fn enroll(&mut self, e: &crate::marker::Enrollment) -> Result<(), StoreError>;
    async fn has_marker(&mut self, run: &str) -> Result<bool, StoreError>;
    async fn write_marker(&mut self, run: &str) -> Result<(), StoreError>;
    async fn delete_marker(&mut self, run: &str) -> Result<(), StoreError>;
    /// Which of these `label` keys exist.
    async fn existing_nodes(
        &mut self,
        label: &str,
        keys: &[GValue],
    ) -> Result<Vec<GValue>, StoreError>;
    /// MERGE by (label, key), then add the properties (and extra labels).
    async fn merge_nodes(&mut self, label: &str, rows: &[NodeRec]) -> Result<(), StoreError>;
    /// CREATEs the nodes without looking for them first: the `insert` strategy, once the
    /// validation gate has found none of them in CERT. Engines without a faster path merge.
    async fn create_nodes(&mut self, label: &str, rows: &[NodeRec]) -> Result<(), StoreError> {
        self.merge_nodes(label, rows).await
    }
    /// Which of these (start, end) pairs already have a `rel_type` relationship.
    async fn existing_rels(
        &mut self,
        rel_type: &str,
        ends: (&str, &str),
        pairs: &[(GValue, GValue)],
    ) -> Result<Vec<(GValue, GValue)>, StoreError>;
    /// MERGE each relationship between its (existing) ends, then add its properties.
    async fn merge_rels(
        &mut self,
        rel_type: &str,
        ends: (&str, &str),
        rows: &[RelRec],
    ) -> Result<(), StoreError>;
    /// CREATEs the relationships between their (existing) ends, as `create_nodes`.
    async fn create_rels(
        &mut self,
        rel_type: &str,
        ends: (&str, &str),
        rows: &[RelRec],
    ) -> Result<(), StoreError> {
        self.merge_rels(rel_type, ends, rows).await
    }
    /// Deletes these relationships; how many went.
    async fn delete_rels(
        &mut self,
        rel_type: &str,
        ends: (&str, &str),
        pairs: &[(GValue, GValue)],
    ) -> Result<u64, StoreError>;
    /// Deletes these nodes and any relationship still attached; how many went.
    async fn delete_nodes(&mut self, label: &str, keys: &[GValue]) -> Result<u64, StoreError>;
    /// Makes sure a lookup index on `label`'s key exists (outside the transaction on servers that
    /// need it); best effort.
    async fn ensure_index(&mut self, label: &str) -> Result<(), StoreError>;
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
    async fn rollback(self: Box<Self>) -> Result<(), StoreError>;
}

/// Opens `side` of the graph for reading. PROD is only ever read.
pub async fn open_read(cfg: &GraphConfig, side: Side) -> Result<Box<dyn GraphRead>, StoreError> {
    match cfg.kind {
        GraphKind::Bolt => Ok(Box::new(bolt::BoltRead::open(cfg, side).await?)),
        GraphKind::Embedded => Ok(Box::new(embedded::EmbeddedRead::open(cfg, side).await?)),
    }
}

/// Opens CERT for writing, in a transaction.
pub async fn open_write(cfg: &GraphConfig) -> Result<Box<dyn GraphWrite>, StoreError> {
    match cfg.kind {
        GraphKind::Bolt => Ok(Box::new(bolt::BoltWrite::open(cfg).await?)),
        GraphKind::Embedded => Ok(Box::new(embedded::EmbeddedWrite::open(cfg).await?)),
    }
}

/// The error of a relationship load whose end nodes are not all in CERT.
pub(crate) fn missing_ends(
    store: &str,
    rel_type: &str,
    ends: (&str, &str),
    missing: u64,
    total: usize,
) -> StoreError {
    StoreError::Constraint {
        store: store.to_string(),
        table: format!("{}-{rel_type}-{}", ends.0, ends.1),
        constraint: "end nodes exist".into(),
        key: "-".into(),
        message: format!("{missing} of {total} relationships have an end node missing in CERT"),
    }
}

/// Backtick-quotes a label, type or property name for Cypher.
pub(crate) fn ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}
