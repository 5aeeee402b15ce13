//! Writing a graph over Bolt: CERT loads and rollbacks in one transaction (PROD only for `wf seed`).

use super::{count, get, keys_param, list, pairs_param, props_map, to_bolt, Session};
use crate::error::StoreError;
use crate::graph::{ident, GValue, GraphConfig, KeyMap, NodeRec, RelRec, MARKER_LABEL};
use crate::refs::Side;
use neo4rs::{query, BoltMap, BoltType};
use std::collections::BTreeMap;

/// Writes CERT over Bolt in one transaction (PROD only when seeding synthetic data).
pub struct BoltWrite(Session);

impl BoltWrite {
    pub async fn open(cfg: &GraphConfig) -> Result<BoltWrite, StoreError> {
        Self::open_side(cfg, Side::Cert).await
    }

    /// Opens `side` for writing: CERT for loads; PROD only for `wf seed`'s synthetic data.
    pub async fn open_side(cfg: &GraphConfig, side: Side) -> Result<BoltWrite, StoreError> {
        Ok(BoltWrite(Session::open(cfg, side).await?))
    }
}

#[async_trait::async_trait]
impl crate::graph::GraphWrite for BoltWrite {
    fn keys(&self) -> &KeyMap {
        &self.0.keys
    }

    async fn enroll(&mut self, e: &crate::marker::Enrollment) -> Result<(), StoreError> {
        let q = format!(
            "CREATE (n:{} {{environment: $e, token: $t, enrolled_at: $a, enrolled_by: $b}}) RETURN count(n) AS c",
            crate::marker::ENROLL_LABEL
        );
        let q = query(&q)
            .param("e", e.environment.as_str())
            .param("t", e.token.as_str())
            .param("a", e.enrolled_at.as_str())
            .param("b", e.enrolled_by.as_str());
        self.0.rows(q).await.map(|_| ())
    }

    async fn has_marker(&mut self, run: &str) -> Result<bool, StoreError> {
        let q = format!("MATCH (m:{MARKER_LABEL}) WHERE m.run = $run RETURN count(m) AS c");
        let rows = self.0.rows(query(&q).param("run", run)).await?;
        Ok(rows.first().map(count).unwrap_or(0) > 0)
    }

    async fn write_marker(&mut self, run: &str) -> Result<(), StoreError> {
        let q = format!("CREATE (m:{MARKER_LABEL} {{run: $run}}) RETURN count(m) AS c");
        self.0.rows(query(&q).param("run", run)).await.map(|_| ())
    }

    async fn delete_marker(&mut self, run: &str) -> Result<(), StoreError> {
        let q =
            format!("MATCH (m:{MARKER_LABEL}) WHERE m.run = $run DELETE m RETURN count(*) AS c");
        self.0.rows(query(&q).param("run", run)).await.map(|_| ())
    }

    async fn existing_nodes(
        &mut self,
        label: &str,
        keys: &[GValue],
    ) -> Result<Vec<GValue>, StoreError> {
        let key = self.0.keys.of(label);
        let q = format!(
            "UNWIND $keys AS key MATCH (n:{} {}) RETURN {} AS k",
            ident(label),
            key.pattern("key"),
            key.expr("n")
        );
        let rows = self
            .0
            .rows(query(&q).param("keys", keys_param(keys)))
            .await?;
        Ok(rows.iter().map(|r| get(r, "k")).collect())
    }

    async fn merge_nodes(&mut self, label: &str, rows: &[NodeRec]) -> Result<(), StoreError> {
        self.write_nodes(Write::Merge, label, rows).await
    }

    async fn create_nodes(&mut self, label: &str, rows: &[NodeRec]) -> Result<(), StoreError> {
        self.write_nodes(Write::Create, label, rows).await
    }

    async fn existing_rels(
        &mut self,
        rel_type: &str,
        ends: (&str, &str),
        pairs: &[(GValue, GValue)],
    ) -> Result<Vec<(GValue, GValue)>, StoreError> {
        let q = format!(
            "UNWIND $pairs AS p MATCH (a:{} {})-[:{}]->(b:{} {}) RETURN DISTINCT p.s AS s, p.e AS e",
            ident(ends.0),
            self.0.keys.of(ends.0).pattern("p.s"),
            ident(rel_type),
            ident(ends.1),
            self.0.keys.of(ends.1).pattern("p.e")
        );
        let rows = self
            .0
            .rows(query(&q).param("pairs", pairs_param(pairs)))
            .await?;
        Ok(rows.iter().map(|r| (get(r, "s"), get(r, "e"))).collect())
    }

    async fn merge_rels(
        &mut self,
        rel_type: &str,
        ends: (&str, &str),
        rows: &[RelRec],
    ) -> Result<(), StoreError> {
        self.write_rels(Write::Merge, rel_type, ends, rows).await
    }

    async fn create_rels(
        &mut self,
        rel_type: &str,
        ends: (&str, &str),
        rows: &[RelRec],
    ) -> Result<(), StoreError> {
        self.write_rels(Write::Create, rel_type, ends, rows).await
    }

    async fn delete_rels(
        &mut self,
        rel_type: &str,
        ends: (&str, &str),
        pairs: &[(GValue, GValue)],
    ) -> Result<u64, StoreError> {
        let q = format!(
            "UNWIND $pairs AS p MATCH (a:{} {})-[x:{}]->(b:{} {}) DELETE x RETURN count(*) AS c",
            ident(ends.0),
            self.0.keys.of(ends.0).pattern("p.s"),
            ident(rel_type),
            ident(ends.1),
            self.0.keys.of(ends.1).pattern("p.e")
        );
        let rows = self
            .0
            .rows(query(&q).param("pairs", pairs_param(pairs)))
            .await?;
        Ok(rows.first().map(count).unwrap_or(0))
    }

    async fn delete_nodes(&mut self, label: &str, keys: &[GValue]) -> Result<u64, StoreError> {
        let q = format!(
            "UNWIND $keys AS key MATCH (n:{} {}) DETACH DELETE n RETURN count(*) AS c",
            ident(label),
            self.0.keys.of(label).pattern("key")
        );
        let rows = self
            .0
            .rows(query(&q).param("keys", keys_param(keys)))
            .await?;
        Ok(rows.first().map(count).unwrap_or(0))
    }

    async fn ensure_index(&mut self, label: &str) -> Result<(), StoreError> {
        let key = self.0.keys.of(label).clone();
        let on: Vec<String> = key
            .props()
            .iter()
            .map(|p| format!("n.{}", ident(p)))
            .collect();
        let q = format!(
            "CREATE INDEX IF NOT EXISTS FOR (n:{}) ON ({})",
            ident(label),
            on.join(", ")
        );
        if let Err(e) = self.0.graph.run(query(&q)).await {
            tracing::warn!(store = %self.0.store, label, "no lookup index on {label}.{key}: {e}; loads will be slow");
        }
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        self.0.end(true).await
    }

    async fn rollback(self: Box<Self>) -> Result<(), StoreError> {
        self.0.end(false).await
    }
}

/// How a load writes: MERGE finds what is there (upsert, skip-existing); CREATE does not look
/// (insert, once the validation gate has found none of the nodes in CERT).
#[derive(Clone, Copy, PartialEq)]
enum Write {
    Merge,
    Create,
}

impl BoltWrite {
    async fn write_nodes(
        &mut self,
        how: Write,
        label: &str,
        rows: &[NodeRec],
    ) -> Result<(), StoreError> {
        let key = self.0.keys.of(label).clone();
        // Extra labels cannot be parameters: one statement per distinct label set.
        let mut groups: BTreeMap<Vec<String>, Vec<&NodeRec>> = BTreeMap::new();
        for r in rows {
            let extra: Vec<String> = r.labels.iter().filter(|l| *l != label).cloned().collect();
            groups.entry(extra).or_default().push(r);
        }
        for (extra, group) in groups {
            let set_labels: String = extra.iter().map(|l| format!(", n:{}", ident(l))).collect();
            let q = match how {
                Write::Merge => format!(
                    "UNWIND $rows AS r MERGE (n:{} {}) SET n += r.p{set_labels} RETURN count(n) AS c",
                    ident(label),
                    key.pattern("r.k")
                ),
                Write::Create => format!(
                    "UNWIND $rows AS r CREATE (n:{}) SET n = r.p{set_labels} RETURN count(n) AS c",
                    ident(label)
                ),
            };
            let param = list(group.iter().map(|r| {
                let mut m = BoltMap::new();
                if how == Write::Merge {
                    let k = key.value(&r.props).unwrap_or(GValue::Null);
                    m.put("k".into(), to_bolt(&k));
                }
                m.put("p".into(), BoltType::Map(props_map(&r.props)));
                BoltType::Map(m)
            }));
            self.0.rows(query(&q).param("rows", param)).await?;
        }
        Ok(())
    }

    async fn write_rels(
        &mut self,
        how: Write,
        rel_type: &str,
        ends: (&str, &str),
        rows: &[RelRec],
    ) -> Result<(), StoreError> {
        let (verb, set) = match how {
            Write::Merge => ("MERGE", "+="),
            Write::Create => ("CREATE", "="),
        };
        // Relationships without properties (many are) are written without an empty SET per row.
        let with_props = rows.iter().any(|r| !r.props.is_empty());
        let set = match with_props {
            true => format!(" SET x {set} r.p"),
            false => String::new(),
        };
        let q = format!(
            "UNWIND $rows AS r MATCH (a:{} {}) MATCH (b:{} {}) {verb} (a)-[x:{}]->(b){set} RETURN count(x) AS c",
            ident(ends.0),
            self.0.keys.of(ends.0).pattern("r.s"),
            ident(ends.1),
            self.0.keys.of(ends.1).pattern("r.e"),
            ident(rel_type)
        );
        let param = list(rows.iter().map(|r| {
            let mut m = BoltMap::new();
            m.put("s".into(), to_bolt(&r.start.1));
            m.put("e".into(), to_bolt(&r.end.1));
            if with_props {
                m.put("p".into(), BoltType::Map(props_map(&r.props)));
            }
            BoltType::Map(m)
        }));
        let out = self.0.rows(query(&q).param("rows", param)).await?;
        let written = out.first().map(count).unwrap_or(0);
        if written < rows.len() as u64 {
            return Err(crate::graph::missing_ends(
                &self.0.store,
                rel_type,
                ends,
                rows.len() as u64 - written,
                rows.len(),
            ));
        }
        Ok(())
    }
}
