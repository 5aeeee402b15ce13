//! The embedded graph: a property graph in one SQLite file (nodes, relationships, load markers),
//! properties as JSON. The demo and quick tests use it; it offers what the Bolt store offers.

use super::{Direction, GValue, GraphConfig, KeyMap, KeySink, NodeKey, NodeRec, Reached, RelRec};
use crate::error::StoreError;
use crate::refs::Side;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Row};
use std::collections::BTreeMap;
use std::str::FromStr;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS nodes (label TEXT NOT NULL, key TEXT NOT NULL, labels TEXT NOT NULL, props TEXT NOT NULL, PRIMARY KEY (label, key)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS rels (type TEXT NOT NULL, start_label TEXT NOT NULL, start_key TEXT NOT NULL, end_label TEXT NOT NULL, end_key TEXT NOT NULL, props TEXT NOT NULL, PRIMARY KEY (start_label, start_key, type, end_label, end_key)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS rels_by_end ON rels (end_label, end_key, type)",
    "CREATE INDEX IF NOT EXISTS rels_by_type ON rels (type)",
    "CREATE TABLE IF NOT EXISTS markers (run TEXT PRIMARY KEY)",
    "CREATE TABLE IF NOT EXISTS enrollment (environment TEXT NOT NULL, token TEXT NOT NULL, enrolled_at TEXT NOT NULL, enrolled_by TEXT NOT NULL)",
];

/// The file path of an embedded graph address (`sqlite://path`, `file:path` or a plain path).
pub fn path_of(url: &str) -> &str {
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("file:"))
        .unwrap_or(url)
}

/// One connection with an open transaction.
struct Session {
    store: String,
    conn: SqliteConnection,
    keys: KeyMap,
}

impl Session {
    async fn open(cfg: &GraphConfig, side: Side, write: bool) -> Result<Session, StoreError> {
        let url = cfg.url(side)?;
        let path = path_of(&url).to_string();
        let fail = |message: String| StoreError::Connect {
            store: cfg.name.clone(),
            side: side.as_str(),
            message,
        };
        if !write && !std::path::Path::new(&path).exists() {
            return Err(fail(format!(
                "embedded graph file {path} does not exist; run `wf seed` or fix the graph's {} path",
                side.as_str()
            )));
        }
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
            .map_err(|e| fail(format!("bad graph path {path}: {e}")))?
            .read_only(!write)
            .create_if_missing(write)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .busy_timeout(std::time::Duration::from_secs(30));
        let mut conn = SqliteConnection::connect_with(&opts)
            .await
            .map_err(|e| fail(format!("cannot open {path}: {e}")))?;
        if write {
            for s in SCHEMA {
                sqlx::query(*s)
                    .execute(&mut conn)
                    .await
                    .map_err(|e| fail(format!("{path}: {e}")))?;
            }
        }
        let begin = if write { "BEGIN IMMEDIATE" } else { "BEGIN" };
        sqlx::query(begin)
            .execute(&mut conn)
            .await
            .map_err(|e| fail(format!("{path}: {e}")))?;
        Ok(Session {
            store: cfg.name.clone(),
            conn,
            keys: cfg.key_map(),
        })
    }

    fn err(&self, e: sqlx::Error) -> StoreError {
        StoreError::from_sqlx(&self.store, e)
    }

    async fn end(mut self, commit: bool) -> Result<(), StoreError> {
        let sql = if commit { "COMMIT" } else { "ROLLBACK" };
        sqlx::query(sql)
            .execute(&mut self.conn)
            .await
            .map_err(|e| StoreError::from_sqlx(&self.store, e))?;
        Ok(())
    }
}

/// SQL condition: the JSON properties in `props` lack a part of `key`.
fn missing_sql(key: &NodeKey, props: &str) -> String {
    let parts: Vec<String> = key
        .props()
        .iter()
        .map(|p| {
            format!(
                "json_extract({props}, '$.\"{}\"') IS NULL",
                p.replace('\'', "''")
            )
        })
        .collect();
    format!("({})", parts.join(" OR "))
}

/// SQL condition: the node in columns `label`, `props` lacks its label's key.
fn keyless_sql(keys: &KeyMap, label: &str, props: &str) -> String {
    if keys.labelled().is_empty() {
        return missing_sql(keys.of(""), props);
    }
    let mut s = format!("CASE {label}");
    for (l, k) in keys.labelled() {
        s.push_str(&format!(
            " WHEN '{}' THEN {}",
            l.replace('\'', "''"),
            missing_sql(k, props)
        ));
    }
    s.push_str(&format!(" ELSE {} END", missing_sql(keys.of(""), props)));
    s
}

/// A stored key that stands for "no key" (a node merged without its key).
fn is_keyless(k: &GValue) -> bool {
    match k {
        GValue::Null => true,
        GValue::List(parts) => parts.iter().any(|p| matches!(p, GValue::Null)),
        _ => false,
    }
}

fn keys_json(keys: &[GValue]) -> String {
    serde_json::Value::Array(
        keys.iter()
            .map(|k| serde_json::Value::String(k.key_text()))
            .collect(),
    )
    .to_string()
}

fn pairs_json(pairs: &[(GValue, GValue)]) -> String {
    serde_json::Value::Array(
        pairs
            .iter()
            .map(|(s, e)| serde_json::json!([s.key_text(), e.key_text()]))
            .collect(),
    )
    .to_string()
}

fn props_of(text: &str) -> BTreeMap<String, GValue> {
    match serde_json::from_str::<serde_json::Value>(text).map(|j| GValue::from_json(&j)) {
        Ok(GValue::Map(m)) => m,
        _ => BTreeMap::new(),
    }
}

fn props_json(props: &BTreeMap<String, GValue>) -> String {
    GValue::Map(
        props
            .iter()
            .filter(|(_, v)| !matches!(v, GValue::Null))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
    .to_json()
    .to_string()
}

fn labels_of(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

fn node_row(r: &sqlx::sqlite::SqliteRow) -> NodeRec {
    NodeRec {
        labels: labels_of(r.get::<&str, _>("labels")),
        props: props_of(r.get::<&str, _>("props")),
    }
}

fn rel_row(r: &sqlx::sqlite::SqliteRow) -> RelRec {
    RelRec {
        rel_type: r.get("type"),
        start: (
            r.get("start_label"),
            GValue::from_key_text(r.get::<&str, _>("start_key")),
        ),
        end: (
            r.get("end_label"),
            GValue::from_key_text(r.get::<&str, _>("end_key")),
        ),
        props: props_of(r.get::<&str, _>("props")),
    }
}

/// Reads an embedded graph file inside one read transaction (a consistent snapshot).
pub struct EmbeddedRead(Session);

impl EmbeddedRead {
    /// How many nodes one `rel_type` hop away from the given `label` nodes lack their key.
    async fn keyless_neighbours(
        &mut self,
        label: &str,
        keys: &[GValue],
        rel_type: &str,
        dir: Direction,
    ) -> Result<u64, StoreError> {
        let missing = keyless_sql(&self.0.keys, "n.label", "n.props");
        let out = format!("SELECT DISTINCT n.label, n.key FROM rels r JOIN nodes n ON n.label = r.end_label AND n.key = r.end_key \
            WHERE r.type = ?1 AND r.start_label = ?2 AND r.start_key IN (SELECT value FROM json_each(?3)) \
            AND {missing}");
        let inn = format!("SELECT DISTINCT n.label, n.key FROM rels r JOIN nodes n ON n.label = r.start_label AND n.key = r.start_key \
            WHERE r.type = ?1 AND r.end_label = ?2 AND r.end_key IN (SELECT value FROM json_each(?3)) \
            AND {missing}");
        let sql = match dir {
            Direction::Out => format!("SELECT count(*) FROM ({out})"),
            Direction::In => format!("SELECT count(*) FROM ({inn})"),
            Direction::Both => format!("SELECT count(*) FROM ({out} UNION {inn})"),
        };
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(rel_type)
            .bind(label)
            .bind(keys_json(keys))
            .fetch_one(&mut self.0.conn)
            .await
            .map_err(|e| self.0.err(e))?;
        Ok(n.max(0) as u64)
    }

    pub async fn open(cfg: &GraphConfig, side: Side) -> Result<EmbeddedRead, StoreError> {
        Ok(EmbeddedRead(Session::open(cfg, side, false).await?))
    }
}

#[async_trait::async_trait]
impl super::GraphRead for EmbeddedRead {
    fn keys(&self) -> &KeyMap {
        &self.0.keys
    }

    async fn label_counts(&mut self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows =
            sqlx::query("SELECT label, count(*) AS c FROM nodes GROUP BY label ORDER BY label")
                .fetch_all(&mut self.0.conn)
                .await
                .map_err(|e| self.0.err(e))?;
        Ok(rows
            .iter()
            .map(|r| (r.get("label"), r.get::<i64, _>("c") as u64))
            .collect())
    }

    async fn rel_type_counts(&mut self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query("SELECT type, count(*) AS c FROM rels GROUP BY type ORDER BY type")
            .fetch_all(&mut self.0.conn)
            .await
            .map_err(|e| self.0.err(e))?;
        Ok(rows
            .iter()
            .map(|r| (r.get("type"), r.get::<i64, _>("c") as u64))
            .collect())
    }

    async fn sample_nodes(&mut self, label: &str, limit: u64) -> Result<Vec<NodeRec>, StoreError> {
        let rows = sqlx::query("SELECT labels, props FROM nodes WHERE label = ? LIMIT ?")
            .bind(label)
            .bind(limit as i64)
            .fetch_all(&mut self.0.conn)
            .await
            .map_err(|e| self.0.err(e))?;
        Ok(rows.iter().map(node_row).collect())
    }

    async fn sample_rels(&mut self, rel_type: &str, limit: u64) -> Result<Vec<RelRec>, StoreError> {
        let rows = sqlx::query("SELECT * FROM rels WHERE type = ? LIMIT ?")
            .bind(rel_type)
            .bind(limit as i64)
            .fetch_all(&mut self.0.conn)
            .await
            .map_err(|e| self.0.err(e))?;
        Ok(rows.iter().map(rel_row).collect())
    }

    async fn district_counts(
        &mut self,
        label: &str,
        prop: &str,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT CAST(json_extract(props, '$.\"' || ?2 || '\"') AS TEXT) AS d, count(*) AS c FROM nodes WHERE label = ?1 AND json_extract(props, '$.\"' || ?2 || '\"') IS NOT NULL GROUP BY d ORDER BY d",
        )
        .bind(label)
        .bind(prop)
        .fetch_all(&mut self.0.conn)
        .await
        .map_err(|e| self.0.err(e))?;
        Ok(rows
            .iter()
            .map(|r| (r.get("d"), r.get::<i64, _>("c") as u64))
            .collect())
    }

    async fn district_keys(
        &mut self,
        label: &str,
        prop: &str,
        district: &str,
        sink: &mut KeySink<'_>,
    ) -> Result<(), StoreError> {
        use futures_util::TryStreamExt;
        let as_int = district.trim().parse::<i64>().ok();
        let store = self.0.store.clone();
        let mut rows = sqlx::query(
            "SELECT key FROM nodes WHERE label = ?1 AND (json_extract(props, '$.\"' || ?2 || '\"') = ?3 OR json_extract(props, '$.\"' || ?2 || '\"') = ?4)",
        )
        .bind(label)
        .bind(prop)
        .bind(district)
        .bind(as_int)
        .fetch(&mut self.0.conn);
        while let Some(r) = rows
            .try_next()
            .await
            .map_err(|e| StoreError::from_sqlx(&store, e))?
        {
            let k = GValue::from_key_text(r.get::<&str, _>("key"));
            if !is_keyless(&k) {
                sink(k)?;
            }
        }
        Ok(())
    }

    async fn neighbours(
        &mut self,
        label: &str,
        keys: &[GValue],
        rel_type: &str,
        dir: Direction,
    ) -> Result<Reached, StoreError> {
        let out = "SELECT end_label AS l, end_key AS k FROM rels WHERE type = ?1 AND start_label = ?2 AND start_key IN (SELECT value FROM json_each(?3))";
        let inn = "SELECT start_label AS l, start_key AS k FROM rels WHERE type = ?1 AND end_label = ?2 AND end_key IN (SELECT value FROM json_each(?3))";
        let sql = match dir {
            Direction::Out => out.to_string(),
            Direction::In => inn.to_string(),
            Direction::Both => format!("{out} UNION {inn}"),
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(rel_type)
            .bind(label)
            .bind(keys_json(keys))
            .fetch_all(&mut self.0.conn)
            .await
            .map_err(|e| self.0.err(e))?;
        let mut seen = std::collections::BTreeSet::new();
        let keyed = rows
            .iter()
            .map(|r| (r.get::<String, _>("l"), r.get::<String, _>("k")))
            .filter(|p| seen.insert(p.clone()))
            .map(|(l, k)| (l, GValue::from_key_text(&k)))
            .filter(|(_, k)| !is_keyless(k))
            .collect();
        let keyless = self.keyless_neighbours(label, keys, rel_type, dir).await?;
        Ok(Reached { keyed, keyless })
    }

    async fn keyless(
        &mut self,
        label: &str,
        district: Option<(&str, &str)>,
    ) -> Result<u64, StoreError> {
        let (prop, d) = district.unwrap_or(("", ""));
        let sql = format!(
            "SELECT count(*) FROM nodes WHERE label = ?1 AND {} \
             AND (?2 = '' OR json_extract(props, '$.\"' || ?2 || '\"') = ?3 OR json_extract(props, '$.\"' || ?2 || '\"') = ?4)",
            missing_sql(self.0.keys.of(label), "props")
        );
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(label)
            .bind(prop)
            .bind(d)
            .bind(d.trim().parse::<i64>().ok())
            .fetch_one(&mut self.0.conn)
            .await
            .map_err(|e| self.0.err(e))?;
        Ok(n.max(0) as u64)
    }

    async fn nodes(&mut self, label: &str, keys: &[GValue]) -> Result<Vec<NodeRec>, StoreError> {
        let rows = sqlx::query(
            "SELECT labels, props FROM nodes WHERE label = ? AND key IN (SELECT value FROM json_each(?))",
        )
        .bind(label)
        .bind(keys_json(keys))
        .fetch_all(&mut self.0.conn)
        .await
        .map_err(|e| self.0.err(e))?;
        Ok(rows.iter().map(node_row).collect())
    }

    async fn out_rels(&mut self, label: &str, keys: &[GValue]) -> Result<Vec<RelRec>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM rels WHERE start_label = ? AND start_key IN (SELECT value FROM json_each(?))",
        )
        .bind(label)
        .bind(keys_json(keys))
        .fetch_all(&mut self.0.conn)
        .await
        .map_err(|e| self.0.err(e))?;
        Ok(rows
            .iter()
            .map(rel_row)
            .filter(|r| !is_keyless(&r.start.1) && !is_keyless(&r.end.1))
            .collect())
    }

    async fn enrollment(&mut self) -> Result<Option<crate::marker::Enrollment>, StoreError> {
        // A PROD file is opened read-only and may predate the enrollment table.
        let has: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'enrollment'",
        )
        .fetch_one(&mut self.0.conn)
        .await
        .map_err(|e| self.0.err(e))?;
        if has == 0 {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT environment, token, enrolled_at, enrolled_by FROM enrollment LIMIT 1",
        )
        .fetch_optional(&mut self.0.conn)
        .await
        .map_err(|e| self.0.err(e))?;
        Ok(row.map(|r| crate::marker::Enrollment {
            environment: r.get(0),
            token: r.get(1),
            enrolled_at: r.get(2),
            enrolled_by: r.get(3),
        }))
    }

    async fn finish(self: Box<Self>) -> Result<(), StoreError> {
        self.0.end(false).await
    }
}

mod write;
pub use write::EmbeddedWrite;
