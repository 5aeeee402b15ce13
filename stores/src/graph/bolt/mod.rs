//! Neo4j (or any Bolt + OpenCypher server, ArcadeDB in the tests) through neo4rs. Portable Cypher
//! only: no APOC, no internal ids, labels counted rather than listed.

use super::{Direction, GValue, GraphConfig, KeyMap};
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
pub fn from_bolt(v: &BoltType) -> GValue {
    match v {
        BoltType::Null(_) => GValue::Null,
        BoltType::Boolean(b) => GValue::Bool(b.value),
        BoltType::Integer(i) => GValue::Int(i.value),
        BoltType::Float(f) => GValue::Float(f.value),
        BoltType::String(s) => GValue::Text(s.value.clone()),
        BoltType::List(l) => GValue::List(l.value.iter().map(from_bolt).collect()),
        BoltType::Map(m) => GValue::Map(
            m.value
                .iter()
                .map(|(k, v)| (k.value.clone(), from_bolt(v)))
                .collect(),
        ),
        BoltType::Date(d) => chrono::NaiveDate::try_from(d)
            .map(GValue::Date)
            .unwrap_or(GValue::Null),
        BoltType::LocalDateTime(d) => chrono::NaiveDateTime::try_from(d)
            .map(GValue::DateTime)
            .unwrap_or(GValue::Null),
        BoltType::DateTime(d) => chrono::DateTime::<chrono::FixedOffset>::try_from(d)
            .map(|d| GValue::DateTime(d.naive_utc()))
            .unwrap_or(GValue::Null),
        BoltType::DateTimeZoneId(d) => chrono::NaiveDateTime::try_from(d)
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
    row.value(col).map(from_bolt).unwrap_or(GValue::Null)
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
    pub(crate) keys: KeyMap,
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
            keys: cfg.key_map(),
        })
    }

    fn err(&self, e: neo4rs::Error) -> StoreError {
        bolt_err(&self.store, self.side, e)
    }

    pub(crate) async fn rows(&mut self, q: Query) -> Result<Vec<Row>, StoreError> {
        let mut out = Vec::new();
        self.each_row(q, |r| {
            out.push(r);
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// Runs `q` and hands each row to `f` as the driver fetches it (results too large to hold).
    pub(crate) async fn each_row(
        &mut self,
        q: Query,
        mut f: impl FnMut(Row) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let (store, side) = (self.store.clone(), self.side);
        let txn = self.txn.as_mut().ok_or_else(|| StoreError::Query {
            store: store.clone(),
            message: "the graph transaction is already closed".into(),
        })?;
        let mut stream = txn
            .execute(q)
            .await
            .map_err(|e| bolt_err(&store, side, e))?;
        while let Some(row) = stream
            .next(txn.handle())
            .await
            .map_err(|e| bolt_err(&store, side, e))?
        {
            f(row)?;
        }
        Ok(())
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

mod read;
mod write;
pub use read::BoltRead;
pub use write::BoltWrite;
