//! Neo4j (or any Bolt + OpenCypher server, ArcadeDB in the tests) through neo4rs. Portable Cypher
//! only: no APOC, no internal ids, labels counted rather than listed.

use super::{ident, primary_of, Direction, GValue, GraphConfig, NodeRec, RelRec, MARKER_LABEL};
use crate::error::StoreError;
use crate::refs::Side;
use neo4rs::{
    query, BoltDate, BoltList, BoltLocalDateTime, BoltMap, BoltNull, BoltString, BoltType,
    ConfigBuilder, Graph, Query, Row, Txn,
};
use std::collections::BTreeMap;

/// Classifies a neo4rs error: connection trouble and server "transient" errors are retryable.
fn bolt_err(store: &str, side: Side, e: neo4rs::Error) -> StoreError {
    use neo4rs::Error as E;
    match &e {
        E::IOError { .. } | E::ConnectionError => StoreError::Transient {
            store: store.into(),
            message: format!("{} graph server: {e}", side.as_str()),
        },
        E::AuthenticationError(m) => StoreError::Connect {
            store: store.into(),
            side: side.as_str(),
            message: format!("authentication refused ({m}); check the graph user and password"),
        },
        E::Neo4j(n) if matches!(n.kind(), neo4rs::Neo4jErrorKind::Transient) => {
            StoreError::Transient {
                store: store.into(),
                message: format!("{}: {}", n.code(), n.message()),
            }
        }
        E::Neo4j(n) if n.code().contains("ConstraintValidationFailed") => StoreError::Constraint {
            store: store.into(),
            table: "(graph)".into(),
            constraint: n.code().into(),
            key: "-".into(),
            message: n.message().into(),
        },
        E::Neo4j(n) => StoreError::Query {
            store: store.into(),
            message: format!("the server refused a query: {} ({})", n.message(), n.code()),
        },
        E::UnexpectedMessage(m) => {
            let message = server_text(m).unwrap_or_else(|| e.to_string());
            if m.contains("DatabaseNotFound") {
                StoreError::Connect {
                    store: store.into(),
                    side: side.as_str(),
                    message: format!(
                        "{message}; check the graph's {} database name",
                        side.as_str()
                    ),
                }
            } else {
                StoreError::Query {
                    store: store.into(),
                    message,
                }
            }
        }
        _ => StoreError::Query {
            store: store.into(),
            message: e.to_string(),
        },
    }
}

/// The server's own message and code out of neo4rs' debug dump of a Bolt FAILURE.
fn server_text(dump: &str) -> Option<String> {
    let field = |name: &str| {
        let key = format!("value: \"{name}\" }}: String(BoltString {{ value: \"");
        let start = dump.find(&key)? + key.len();
        let end = dump[start..].find("\" })")? + start;
        Some(dump[start..end].to_string())
    };
    let message = field("message")?;
    Some(match field("code") {
        Some(code) => format!("{message} ({code})"),
        None => message,
    })
}

/// A Bolt value as a graph value; types wf does not stage (points, durations, times) become text.
pub fn from_bolt(v: BoltType) -> GValue {
    match v {
        BoltType::Null(_) => GValue::Null,
        BoltType::Boolean(b) => GValue::Bool(b.value),
        BoltType::Integer(i) => GValue::Int(i.value),
        BoltType::Float(f) => GValue::Float(f.value),
        BoltType::String(s) => GValue::Text(s.value),
        BoltType::List(l) => GValue::List(l.value.into_iter().map(from_bolt).collect()),
        BoltType::Map(m) => GValue::Map(
            m.value
                .into_iter()
                .map(|(k, v)| (k.value, from_bolt(v)))
                .collect(),
        ),
        BoltType::Date(d) => chrono::NaiveDate::try_from(&d)
            .map(GValue::Date)
            .unwrap_or(GValue::Null),
        BoltType::LocalDateTime(d) => chrono::NaiveDateTime::try_from(&d)
            .map(GValue::DateTime)
            .unwrap_or(GValue::Null),
        BoltType::DateTime(d) => chrono::DateTime::<chrono::FixedOffset>::try_from(&d)
            .map(|d| GValue::DateTime(d.naive_utc()))
            .unwrap_or(GValue::Null),
        BoltType::DateTimeZoneId(d) => chrono::NaiveDateTime::try_from(&d)
            .map(GValue::DateTime)
            .unwrap_or(GValue::Null),
        other => GValue::Text(other.to_string()),
    }
}

/// A graph value as a Bolt parameter.
pub fn to_bolt(v: &GValue) -> BoltType {
    match v {
        GValue::Null => BoltType::Null(BoltNull),
        GValue::Bool(b) => BoltType::from(*b),
        GValue::Int(i) => BoltType::from(*i),
        GValue::Float(f) => BoltType::from(*f),
        GValue::Text(s) => BoltType::from(s.as_str()),
        GValue::Date(d) => BoltType::Date(BoltDate::from(*d)),
        GValue::DateTime(d) => BoltType::LocalDateTime(BoltLocalDateTime::from(*d)),
        GValue::List(l) => {
            BoltType::List(BoltList::from(l.iter().map(to_bolt).collect::<Vec<_>>()))
        }
        GValue::Map(m) => BoltType::Map(props_map(m)),
    }
}

pub(crate) fn props_map(m: &BTreeMap<String, GValue>) -> BoltMap {
    let mut out = BoltMap::new();
    for (k, v) in m {
        if !matches!(v, GValue::Null) {
            out.put(BoltString::from(k.as_str()), to_bolt(v));
        }
    }
    out
}

pub(crate) fn list(values: impl IntoIterator<Item = BoltType>) -> BoltType {
    BoltType::List(BoltList::from(values.into_iter().collect::<Vec<_>>()))
}

pub(crate) fn get(row: &Row, col: &str) -> GValue {
    row.get::<BoltType>(col)
        .map(from_bolt)
        .unwrap_or(GValue::Null)
}

fn labels(row: &Row, col: &str) -> Vec<String> {
    match get(row, col) {
        GValue::List(l) => l
            .into_iter()
            .filter_map(|v| match v {
                GValue::Text(s) => Some(s),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn props(row: &Row, col: &str) -> BTreeMap<String, GValue> {
    match get(row, col) {
        GValue::Map(m) => m,
        _ => BTreeMap::new(),
    }
}

/// The two halves of a relationship pattern in `dir`: `-[…]->`, `<-[…]-` or `-[…]-`.
fn arrows(dir: Direction) -> (&'static str, &'static str) {
    match dir {
        Direction::Out => ("-", "->"),
        Direction::In => ("<-", "-"),
        Direction::Both => ("-", "-"),
    }
}

pub(crate) fn count(row: &Row) -> u64 {
    match get(row, "c") {
        GValue::Int(c) => c.max(0) as u64,
        _ => 0,
    }
}

/// A connection with its own transaction.
pub(crate) struct Session {
    pub(crate) store: String,
    side: Side,
    pub(crate) graph: Graph,
    txn: Option<Txn>,
}

impl Session {
    pub(crate) async fn open(cfg: &GraphConfig, side: Side) -> Result<Session, StoreError> {
        let addr = cfg.url(side)?;
        let (user, pw) = cfg.credentials(side)?;
        let mut b = ConfigBuilder::default()
            .uri(addr.as_str())
            .user(user.as_str())
            .password(pw.as_str())
            .fetch_size(2000)
            .max_connections(4);
        if let Some(db) = cfg.database(side) {
            b = b.db(db);
        }
        let conf = b.build().map_err(|e| StoreError::Connect {
            store: cfg.name.clone(),
            side: side.as_str(),
            message: format!("bad graph address `{addr}`: {e}"),
        })?;
        // Unreachable (refused, reset) is transient, as a server restart is: the runner retries.
        let fail = |e: neo4rs::Error| match bolt_err(&cfg.name, side, e) {
            StoreError::Transient { message, .. } => StoreError::Transient {
                store: cfg.name.clone(),
                message: format!(
                    "cannot reach the {} graph at {addr}: {message}",
                    side.as_str()
                ),
            },
            StoreError::Query { message, .. } => StoreError::Connect {
                store: cfg.name.clone(),
                side: side.as_str(),
                message: format!("cannot reach the graph at {addr}: {message}"),
            },
            other => other,
        };
        let graph = Graph::connect(conf).await.map_err(fail)?;
        // Connections are lazy: a wrong password or database only shows at the first query. It is
        // run in the transaction, since `Graph::run` retries connection errors for a minute.
        let mut txn = graph.start_txn().await.map_err(fail)?;
        txn.run(query("RETURN 1")).await.map_err(fail)?;
        Ok(Session {
            store: cfg.name.clone(),
            side,
            graph,
            txn: Some(txn),
        })
    }

    fn err(&self, e: neo4rs::Error) -> StoreError {
        bolt_err(&self.store, self.side, e)
    }

    pub(crate) async fn rows(&mut self, q: Query) -> Result<Vec<Row>, StoreError> {
        let (store, side) = (self.store.clone(), self.side);
        let txn = self.txn.as_mut().ok_or_else(|| StoreError::Query {
            store: store.clone(),
            message: "the graph transaction is already closed".into(),
        })?;
        let mut stream = txn
            .execute(q)
            .await
            .map_err(|e| bolt_err(&store, side, e))?;
        let mut out = Vec::new();
        while let Some(row) = stream
            .next(txn.handle())
            .await
            .map_err(|e| bolt_err(&store, side, e))?
        {
            out.push(row);
        }
        Ok(out)
    }

    pub(crate) async fn end(mut self, commit: bool) -> Result<(), StoreError> {
        match self.txn.take() {
            Some(t) if commit => t.commit().await.map_err(|e| self.err(e)),
            Some(t) => t.rollback().await.map_err(|e| self.err(e)),
            None => Ok(()),
        }
    }
}

pub(crate) fn keys_param(keys: &[GValue]) -> BoltType {
    list(keys.iter().map(to_bolt))
}

pub(crate) fn pairs_param(pairs: &[(GValue, GValue)]) -> BoltType {
    list(pairs.iter().map(|(s, e)| {
        let mut m = BoltMap::new();
        m.put("s".into(), to_bolt(s));
        m.put("e".into(), to_bolt(e));
        BoltType::Map(m)
    }))
}

/// Reads PROD (or CERT, for validation) over Bolt; only MATCH queries are sent.
pub struct BoltRead(Session);

impl BoltRead {
    pub async fn open(cfg: &GraphConfig, side: Side) -> Result<BoltRead, StoreError> {
        Ok(BoltRead(Session::open(cfg, side).await?))
    }
}

#[async_trait::async_trait]
impl super::GraphRead for BoltRead {
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

    async fn sample_rels(
        &mut self,
        rel_type: &str,
        key: &str,
        limit: u64,
    ) -> Result<Vec<RelRec>, StoreError> {
        let k = ident(key);
        let q = format!(
            "MATCH (a)-[r:{}]->(b) RETURN labels(a) AS al, a.{k} AS ak, type(r) AS t, labels(b) AS bl, b.{k} AS bk, properties(r) AS p LIMIT $lim",
            ident(rel_type)
        );
        let rows = self.0.rows(query(&q).param("lim", limit as i64)).await?;
        Ok(rows.iter().filter_map(rel_of).collect())
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
        key: &str,
        skip: u64,
        limit: u64,
    ) -> Result<Vec<GValue>, StoreError> {
        let mut wanted = vec![BoltType::from(district)];
        if let Ok(i) = district.trim().parse::<i64>() {
            wanted.push(BoltType::from(i));
        }
        let q = format!(
            "MATCH (n:{}) WHERE n.{} IN $d AND n.{k} IS NOT NULL RETURN n.{k} AS k ORDER BY k SKIP $skip LIMIT $lim",
            ident(label),
            ident(prop),
            k = ident(key)
        );
        let rows = self
            .0
            .rows(
                query(&q)
                    .param("d", list(wanted))
                    .param("skip", skip as i64)
                    .param("lim", limit as i64),
            )
            .await?;
        Ok(rows.iter().map(|r| get(r, "k")).collect())
    }

    async fn neighbours(
        &mut self,
        label: &str,
        key: &str,
        keys: &[GValue],
        rel_type: &str,
        dir: Direction,
    ) -> Result<Vec<(String, GValue)>, StoreError> {
        let (l, r) = arrows(dir);
        let k = ident(key);
        let q = format!(
            "UNWIND $keys AS key MATCH (n:{} {{{k}: key}}){l}[:{}]{r}(m) WHERE m.{k} IS NOT NULL RETURN DISTINCT labels(m) AS l, m.{k} AS k",
            ident(label),
            ident(rel_type)
        );
        let rows = self
            .0
            .rows(query(&q).param("keys", keys_param(keys)))
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| primary_of(&labels(r, "l")).map(|l| (l, get(r, "k"))))
            .collect())
    }

    async fn keyless(
        &mut self,
        label: &str,
        key: &str,
        district: Option<(&str, &str)>,
    ) -> Result<u64, StoreError> {
        let mut q = format!("MATCH (n:{}) WHERE n.{} IS NULL", ident(label), ident(key));
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

    async fn keyless_neighbours(
        &mut self,
        label: &str,
        key: &str,
        keys: &[GValue],
        rel_type: &str,
        dir: Direction,
    ) -> Result<u64, StoreError> {
        let (l, r) = arrows(dir);
        let k = ident(key);
        let q = format!(
            "UNWIND $keys AS key MATCH (n:{} {{{k}: key}}){l}[:{}]{r}(m) WHERE m.{k} IS NULL RETURN count(DISTINCT m) AS c",
            ident(label),
            ident(rel_type)
        );
        let rows = self
            .0
            .rows(query(&q).param("keys", keys_param(keys)))
            .await?;
        Ok(rows.first().map(count).unwrap_or(0))
    }

    async fn nodes(
        &mut self,
        label: &str,
        key: &str,
        keys: &[GValue],
    ) -> Result<Vec<NodeRec>, StoreError> {
        let q = format!(
            "UNWIND $keys AS key MATCH (n:{} {{{}: key}}) RETURN labels(n) AS l, properties(n) AS p",
            ident(label),
            ident(key)
        );
        let rows = self
            .0
            .rows(query(&q).param("keys", keys_param(keys)))
            .await?;
        Ok(rows.iter().map(node_of).collect())
    }

    async fn out_rels(
        &mut self,
        label: &str,
        key: &str,
        keys: &[GValue],
    ) -> Result<Vec<RelRec>, StoreError> {
        let k = ident(key);
        let q = format!(
            "UNWIND $keys AS key MATCH (a:{} {{{k}: key}})-[r]->(b) RETURN labels(a) AS al, a.{k} AS ak, type(r) AS t, labels(b) AS bl, b.{k} AS bk, properties(r) AS p",
            ident(label)
        );
        let rows = self
            .0
            .rows(query(&q).param("keys", keys_param(keys)))
            .await?;
        Ok(rows.iter().filter_map(rel_of).collect())
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

fn rel_of(r: &Row) -> Option<RelRec> {
    let t = match get(r, "t") {
        GValue::Text(t) => t,
        _ => return None,
    };
    let (ak, bk) = (get(r, "ak"), get(r, "bk"));
    if matches!(ak, GValue::Null) || matches!(bk, GValue::Null) {
        return None;
    }
    Some(RelRec {
        rel_type: t,
        start: (primary_of(&labels(r, "al"))?, ak),
        end: (primary_of(&labels(r, "bl"))?, bk),
        props: props(r, "p"),
    })
}

mod write;
pub use write::BoltWrite;
