//! Writing a graph over Bolt: CERT loads and rollbacks in one transaction (PROD only for `wf seed`).

use super::{count, get, keys_param, list, pairs_param, props_map, to_bolt, Session};
use crate::error::StoreError;
use crate::graph::{ident, GValue, GraphConfig, KeyMap, NodeKey, NodeRec, RelRec, MARKER_LABEL};
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
        // Extra labels cannot be parameters, and properties are written as an inline map that
        // names them: one statement per distinct label set and property names.
        let mut groups: BTreeMap<(Vec<&str>, Vec<&str>), Vec<&NodeRec>> = BTreeMap::new();
        for r in rows {
            let extra: Vec<&str> = r
                .labels
                .iter()
                .map(String::as_str)
                .filter(|l| *l != label)
                .collect();
            groups
                .entry((extra, present(&r.props)))
                .or_default()
                .push(r);
        }
        if groups.len() > MAX_SHAPES {
            return self.nodes_as_maps(how, label, &key, rows).await;
        }
        for ((extra, names), group) in groups {
            let q = node_statement(how, label, &key, &extra, &names);
            let param = list(group.iter().map(|r| {
                let k = match how {
                    Write::Merge => Some(to_bolt(&key.value(&r.props).unwrap_or(GValue::Null))),
                    Write::Create => None,
                };
                row_list(k.into_iter(), &names, &r.props)
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
        // Properties are written as an inline map naming them (a relationship created and then
        // SET costs ArcadeDB several times the commit): one statement per property names.
        let mut groups: BTreeMap<Vec<&str>, Vec<&RelRec>> = BTreeMap::new();
        for r in rows {
            groups.entry(present(&r.props)).or_default().push(r);
        }
        let written = match groups.len() > MAX_SHAPES {
            true => self.rels_as_maps(how, rel_type, ends, rows).await?,
            false => self.rels_as_lists(how, rel_type, ends, groups).await?,
        };
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

    /// Relationships as list rows, one statement per property names; how many were written.
    async fn rels_as_lists(
        &mut self,
        how: Write,
        rel_type: &str,
        ends: (&str, &str),
        groups: BTreeMap<Vec<&str>, Vec<&RelRec>>,
    ) -> Result<u64, StoreError> {
        let mut written = 0;
        for (names, group) in groups {
            // Row `r` is a list: the start's key, the end's key, then the properties' values.
            let map = inline_map(&names, 2);
            let (verb, inline, set) = match (how, names.is_empty()) {
                (Write::Merge, true) => ("MERGE", String::new(), String::new()),
                (Write::Merge, false) => ("MERGE", String::new(), format!(" SET x += {map}")),
                (Write::Create, true) => ("CREATE", String::new(), String::new()),
                (Write::Create, false) => ("CREATE", format!(" {map}"), String::new()),
            };
            let write = format!("{verb} (a)-[x:{}{inline}]->(b){set}", ident(rel_type));
            let q = rel_statement(&self.0.keys, ends, ("r[0]", "r[1]"), &write);
            let param = list(group.iter().map(|r| {
                let ends = [to_bolt(&r.start.1), to_bolt(&r.end.1)];
                row_list(ends.into_iter(), &names, &r.props)
            }));
            let out = self.0.rows(query(&q).param("rows", param)).await?;
            written += out.first().map(count).unwrap_or(0);
        }
        Ok(written)
    }

    /// Nodes of many property shapes as map rows (`SET n = r.p`): a statement per label set,
    /// not one per shape, at the commit cost `write_nodes` otherwise avoids.
    async fn nodes_as_maps(
        &mut self,
        how: Write,
        label: &str,
        key: &NodeKey,
        rows: &[NodeRec],
    ) -> Result<(), StoreError> {
        let mut groups: BTreeMap<Vec<&str>, Vec<&NodeRec>> = BTreeMap::new();
        for r in rows {
            let extra = r.labels.iter().map(String::as_str).filter(|l| *l != label);
            groups.entry(extra.collect()).or_default().push(r);
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

    /// Relationships of many property shapes as map rows (`SET x = r.p`) in one statement; how
    /// many were written.
    async fn rels_as_maps(
        &mut self,
        how: Write,
        rel_type: &str,
        ends: (&str, &str),
        rows: &[RelRec],
    ) -> Result<u64, StoreError> {
        let (verb, set) = match how {
            Write::Merge => ("MERGE", "+="),
            Write::Create => ("CREATE", "="),
        };
        let write = format!("{verb} (a)-[x:{}]->(b) SET x {set} r.p", ident(rel_type));
        let q = rel_statement(&self.0.keys, ends, ("r.s", "r.e"), &write);
        let param = list(rows.iter().map(|r| {
            let mut m = BoltMap::new();
            m.put("s".into(), to_bolt(&r.start.1));
            m.put("e".into(), to_bolt(&r.end.1));
            m.put("p".into(), BoltType::Map(props_map(&r.props)));
            BoltType::Map(m)
        }));
        let out = self.0.rows(query(&q).param("rows", param)).await?;
        Ok(out.first().map(count).unwrap_or(0))
    }
}

/// `UNWIND $rows AS r MATCH (a) MATCH (b) <write> RETURN count(x) AS c`: the ends found through
/// their labels' key indexes by the key values `at` of row `r`; `write` makes `x` between them.
fn rel_statement(keys: &KeyMap, ends: (&str, &str), at: (&str, &str), write: &str) -> String {
    format!(
        "UNWIND $rows AS r MATCH (a:{} {}) MATCH (b:{} {}) {write} RETURN count(x) AS c",
        ident(ends.0),
        keys.of(ends.0).pattern(at.0),
        ident(ends.1),
        keys.of(ends.1).pattern(at.1),
    )
}

/// Property shapes (label sets and property names) of a chunk written as lists, one statement
/// each; beyond it (sparse properties) the chunk goes as maps in a statement or a few.
const MAX_SHAPES: usize = 8;

/// The statement writing nodes of `label` with `extra` labels and properties `names`, reading
/// list rows: under MERGE the key first, then the properties' values.
fn node_statement(
    how: Write,
    label: &str,
    key: &NodeKey,
    extra: &[&str],
    names: &[&str],
) -> String {
    let map = inline_map(names, usize::from(how == Write::Merge));
    match how {
        Write::Merge => {
            let mut set: Vec<String> = extra.iter().map(|l| format!("n:{}", ident(l))).collect();
            if !names.is_empty() {
                set.insert(0, format!("n += {map}"));
            }
            let set = match set.is_empty() {
                true => String::new(),
                false => format!(" SET {}", set.join(", ")),
            };
            format!(
                "UNWIND $rows AS r MERGE (n:{} {}){set} RETURN count(n) AS c",
                ident(label),
                key.pattern("r[0]")
            )
        }
        Write::Create => {
            let labels: String = std::iter::once(label)
                .chain(extra.iter().copied())
                .map(|l| format!(":{}", ident(l)))
                .collect();
            let map = match names.is_empty() {
                true => String::new(),
                false => format!(" {map}"),
            };
            format!("UNWIND $rows AS r CREATE (n{labels}{map}) RETURN count(n) AS c")
        }
    }
}

/// The names of the properties `props` has a value for (a NULL is no property in a graph).
fn present(props: &BTreeMap<String, GValue>) -> Vec<&str> {
    props
        .iter()
        .filter(|(_, v)| !matches!(v, GValue::Null))
        .map(|(k, _)| k.as_str())
        .collect()
}

/// Cypher map literal of `names` read from list row `r` from index `first` on:
/// `` {`name`: r[1], `score`: r[2]} ``. Lists of values cost the server less than maps.
fn inline_map(names: &[&str], first: usize) -> String {
    let parts: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{}: r[{}]", ident(n), first + i))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// One row of an UNWIND list: `head`, then the values of `names` in `props`.
fn row_list(
    head: impl Iterator<Item = BoltType>,
    names: &[&str],
    props: &BTreeMap<String, GValue>,
) -> BoltType {
    list(head.chain(names.iter().map(|n| {
        props
            .get(*n)
            .map(to_bolt)
            .unwrap_or(BoltType::Null(neo4rs::BoltNull))
    })))
}
