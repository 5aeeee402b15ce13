//! Reading a graph over Bolt: PROD (and CERT for validation), MATCH queries only.

use super::{arrows, count, get, keys_param, labels, list, props, Session};
use crate::error::StoreError;
use crate::graph::{
    ident, primary_of, Direction, GValue, GraphConfig, KeyMap, KeySink, NodeRec, Reached, RelRec,
    MARKER_LABEL,
};
use crate::refs::Side;
use neo4rs::{query, BoltType, Row};
use std::collections::BTreeMap;

/// Reads PROD (or CERT, for validation) over Bolt; only MATCH queries are sent.
pub struct BoltRead(Session);

impl BoltRead {
    pub async fn open(cfg: &GraphConfig, side: Side) -> Result<BoltRead, StoreError> {
        Ok(BoltRead(Session::open(cfg, side).await?))
    }
}

#[async_trait::async_trait]
impl crate::graph::GraphRead for BoltRead {
    fn keys(&self) -> &KeyMap {
        &self.0.keys
    }

    async fn label_counts(&mut self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = self
            .0
            .rows(query("MATCH (n) RETURN labels(n) AS l, count(*) AS c"))
            .await?;
        let mut out: BTreeMap<String, u64> = BTreeMap::new();
        for r in &rows {
            if let Some(l) = primary_of(&labels(r, "l")) {
                if l != MARKER_LABEL && l != crate::marker::ENROLL_LABEL {
                    *out.entry(l).or_default() += count(r);
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    async fn rel_type_counts(&mut self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = self
            .0
            .rows(query("MATCH ()-[r]->() RETURN type(r) AS t, count(*) AS c"))
            .await?;
        let mut out: Vec<(String, u64)> = rows
            .iter()
            .filter_map(|r| match get(r, "t") {
                GValue::Text(t) => Some((t, count(r))),
                _ => None,
            })
            .collect();
        out.sort();
        Ok(out)
    }

    async fn sample_nodes(&mut self, label: &str, limit: u64) -> Result<Vec<NodeRec>, StoreError> {
        let q = format!(
            "MATCH (n:{}) RETURN labels(n) AS l, properties(n) AS p LIMIT $lim",
            ident(label)
        );
        let rows = self.0.rows(query(&q).param("lim", limit as i64)).await?;
        Ok(rows.iter().map(node_of).collect())
    }

    async fn sample_rels(&mut self, rel_type: &str, limit: u64) -> Result<Vec<RelRec>, StoreError> {
        let keys = &self.0.keys.clone();
        let q = format!(
            "MATCH (a)-[r:{}]->(b) RETURN labels(a) AS al, {} AS au, type(r) AS t, labels(b) AS bl, {} AS bu, properties(r) AS p LIMIT $lim",
            ident(rel_type),
            keys.union_expr("a"),
            keys.union_expr("b")
        );
        let rows = self.0.rows(query(&q).param("lim", limit as i64)).await?;
        Ok(rows.iter().filter_map(|r| rel_of(keys, r, None)).collect())
    }

    async fn district_counts(
        &mut self,
        label: &str,
        prop: &str,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let q = format!(
            "MATCH (n:{}) WHERE n.{p} IS NOT NULL RETURN n.{p} AS d, count(*) AS c",
            ident(label),
            p = ident(prop)
        );
        let rows = self.0.rows(query(&q)).await?;
        let mut out: BTreeMap<String, u64> = BTreeMap::new();
        for r in &rows {
            let d = match get(r, "d") {
                GValue::Text(t) => t,
                GValue::Int(i) => i.to_string(),
                other => other.key_text(),
            };
            *out.entry(d).or_default() += count(r);
        }
        Ok(out.into_iter().collect())
    }

    async fn district_keys(
        &mut self,
        label: &str,
        prop: &str,
        district: &str,
        sink: &mut KeySink<'_>,
    ) -> Result<(), StoreError> {
        let mut wanted = vec![BoltType::from(district)];
        if let Ok(i) = district.trim().parse::<i64>() {
            wanted.push(BoltType::from(i));
        }
        let key = self.0.keys.of(label);
        let q = format!(
            "MATCH (n:{}) WHERE n.{} IN $d AND NOT {} RETURN {} AS k",
            ident(label),
            ident(prop),
            key.missing("n"),
            key.expr("n")
        );
        self.0
            .each_row(query(&q).param("d", list(wanted)), |r| sink(get(&r, "k")))
            .await
    }

    async fn neighbours(
        &mut self,
        label: &str,
        keys: &[GValue],
        rel_type: &str,
        dir: Direction,
    ) -> Result<Reached, StoreError> {
        let (l, r) = arrows(dir);
        let km = &self.0.keys.clone();
        let q = format!(
            "UNWIND $keys AS key MATCH (n:{} {}){l}[:{}]{r}(m) WITH DISTINCT m RETURN labels(m) AS l, {} AS u, ({}) AS x",
            ident(label),
            km.of(label).pattern("key"),
            ident(rel_type),
            km.union_expr("m"),
            keyless_cond(km, "m")
        );
        let rows = self
            .0
            .rows(query(&q).param("keys", keys_param(keys)))
            .await?;
        let mut out = Reached::default();
        for row in &rows {
            if row.get::<bool>("x").unwrap_or(false) {
                out.keyless += 1;
                continue;
            }
            let key = primary_of(&labels(row, "l"))
                .and_then(|l| km.from_union(&l, &union_of(row, "u")).map(|k| (l, k)));
            match key {
                Some(k) => out.keyed.push(k),
                None => out.keyless += 1,
            }
        }
        Ok(out)
    }

    async fn keyless(
        &mut self,
        label: &str,
        district: Option<(&str, &str)>,
    ) -> Result<u64, StoreError> {
        let missing = self.0.keys.of(label).missing("n");
        let mut q = format!("MATCH (n:{}) WHERE {missing}", ident(label));
        let mut wanted = Vec::new();
        if let Some((prop, d)) = district {
            q.push_str(&format!(" AND n.{} IN $d", ident(prop)));
            wanted.push(BoltType::from(d));
            if let Ok(i) = d.trim().parse::<i64>() {
                wanted.push(BoltType::from(i));
            }
        }
        q.push_str(" RETURN count(n) AS c");
        let rows = self.0.rows(query(&q).param("d", list(wanted))).await?;
        Ok(rows.first().map(count).unwrap_or(0))
    }

    async fn nodes(&mut self, label: &str, keys: &[GValue]) -> Result<Vec<NodeRec>, StoreError> {
        let q = format!(
            "UNWIND $keys AS key MATCH (n:{} {}) RETURN labels(n) AS l, properties(n) AS p",
            ident(label),
            self.0.keys.of(label).pattern("key")
        );
        let rows = self
            .0
            .rows(query(&q).param("keys", keys_param(keys)))
            .await?;
        Ok(rows.iter().map(node_of).collect())
    }

    async fn out_rels(&mut self, label: &str, keys: &[GValue]) -> Result<Vec<RelRec>, StoreError> {
        let km = &self.0.keys.clone();
        let q = format!(
            "UNWIND $keys AS key MATCH (a:{} {})-[r]->(b) RETURN {} AS ak, type(r) AS t, labels(b) AS bl, {} AS bu, properties(r) AS p",
            ident(label),
            km.of(label).pattern("key"),
            km.of(label).expr("a"),
            km.union_expr("b")
        );
        let rows = self
            .0
            .rows(query(&q).param("keys", keys_param(keys)))
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| rel_of(km, r, Some(label)))
            .collect())
    }

    async fn enrollment(&mut self) -> Result<Option<crate::marker::Enrollment>, StoreError> {
        let q = format!(
            "MATCH (n:{}) RETURN n.environment AS e, n.token AS t, n.enrolled_at AS a, n.enrolled_by AS b LIMIT 1",
            crate::marker::ENROLL_LABEL
        );
        let rows = self.0.rows(query(&q)).await?;
        let text = |r: &Row, c: &str| match get(r, c) {
            GValue::Text(t) => t,
            _ => String::new(),
        };
        Ok(rows.first().map(|r| crate::marker::Enrollment {
            environment: text(r, "e"),
            token: text(r, "t"),
            enrolled_at: text(r, "a"),
            enrolled_by: text(r, "b"),
        }))
    }

    async fn finish(self: Box<Self>) -> Result<(), StoreError> {
        self.0.end(false).await
    }
}

fn node_of(r: &Row) -> NodeRec {
    NodeRec {
        labels: labels(r, "l"),
        props: props(r, "p"),
    }
}

/// A relationship row: its start by `start`'s key (`ak`) when the start label is known, else by
/// labels and key union (`al`, `au`); its end by labels and key union (`bl`, `bu`). `None` when
/// an end lacks its key.
fn rel_of(keys: &KeyMap, r: &Row, start: Option<&str>) -> Option<RelRec> {
    let t = match get(r, "t") {
        GValue::Text(t) => t,
        _ => return None,
    };
    let start = match start {
        Some(l) => match get(r, "ak") {
            GValue::Null => return None,
            GValue::List(parts) if parts.iter().any(|p| matches!(p, GValue::Null)) => return None,
            k => (l.to_string(), k),
        },
        None => {
            let l = primary_of(&labels(r, "al"))?;
            let k = keys.from_union(&l, &union_of(r, "au"))?;
            (l, k)
        }
    };
    let bl = primary_of(&labels(r, "bl"))?;
    let bk = keys.from_union(&bl, &union_of(r, "bu"))?;
    Some(RelRec {
        rel_type: t,
        start,
        end: (bl, bk),
        props: props(r, "p"),
    })
}

/// The `KeyMap::union_expr` values of a row's column.
fn union_of(r: &Row, col: &str) -> Vec<GValue> {
    match get(r, col) {
        GValue::List(l) => l,
        _ => Vec::new(),
    }
}

/// Cypher condition: node `m`, of any label, lacks its label's key. Labels with their own key are
/// tested by label; a node with several labels is tested against each (keys are per first label,
/// so a multi-label node with differently keyed labels may be counted when it has its key).
fn keyless_cond(keys: &KeyMap, m: &str) -> String {
    let own = keys.labelled();
    let mut parts: Vec<String> = own
        .iter()
        .map(|(l, k)| format!("({m}:{} AND {})", ident(l), k.missing(m)))
        .collect();
    let others: Vec<String> = own
        .keys()
        .map(|l| format!("NOT {m}:{}", ident(l)))
        .chain(std::iter::once(keys.of("").missing(m)))
        .collect();
    parts.push(format!("({})", others.join(" AND ")));
    parts.join(" OR ")
}
