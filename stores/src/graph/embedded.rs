//! The embedded graph: a property graph in one SQLite file (nodes, relationships, load markers),
//! properties as JSON. The demo and quick tests use it; it offers what the Bolt store offers.

use super::{Direction, GValue, GraphConfig, NodeRec, RelRec};
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
    pub async fn open(cfg: &GraphConfig, side: Side) -> Result<EmbeddedRead, StoreError> {
        Ok(EmbeddedRead(Session::open(cfg, side, false).await?))
    }
}

#[async_trait::async_trait]
impl super::GraphRead for EmbeddedRead {
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

    async fn sample_rels(
        &mut self,
        rel_type: &str,
        _key: &str,
        limit: u64,
    ) -> Result<Vec<RelRec>, StoreError> {
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
        _key: &str,
        skip: u64,
        limit: u64,
    ) -> Result<Vec<GValue>, StoreError> {
        let as_int = district.trim().parse::<i64>().ok();
        let rows = sqlx::query(
            "SELECT key FROM nodes WHERE label = ?1 AND (json_extract(props, '$.\"' || ?2 || '\"') = ?3 OR json_extract(props, '$.\"' || ?2 || '\"') = ?4) ORDER BY key LIMIT ?5 OFFSET ?6",
        )
        .bind(label)
        .bind(prop)
        .bind(district)
        .bind(as_int)
        .bind(limit as i64)
        .bind(skip as i64)
        .fetch_all(&mut self.0.conn)
        .await
        .map_err(|e| self.0.err(e))?;
        Ok(rows
            .iter()
            .map(|r| GValue::from_key_text(r.get::<&str, _>("key")))
            .collect())
    }

    async fn neighbours(
        &mut self,
        label: &str,
        _key: &str,
        keys: &[GValue],
        rel_type: &str,
        dir: Direction,
    ) -> Result<Vec<(String, GValue)>, StoreError> {
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
        Ok(rows
            .iter()
            .map(|r| (r.get::<String, _>("l"), r.get::<String, _>("k")))
            .filter(|p| seen.insert(p.clone()))
            .map(|(l, k)| (l, GValue::from_key_text(&k)))
            .collect())
    }

    async fn keyless(
        &mut self,
        label: &str,
        key: &str,
        district: Option<(&str, &str)>,
    ) -> Result<u64, StoreError> {
        let (prop, d) = district.unwrap_or(("", ""));
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM nodes WHERE label = ?1 AND json_extract(props, '$.\"' || ?2 || '\"') IS NULL \
             AND (?3 = '' OR json_extract(props, '$.\"' || ?3 || '\"') = ?4 OR json_extract(props, '$.\"' || ?3 || '\"') = ?5)",
        )
        .bind(label)
        .bind(key)
        .bind(prop)
        .bind(d)
        .bind(d.trim().parse::<i64>().ok())
        .fetch_one(&mut self.0.conn)
        .await
        .map_err(|e| self.0.err(e))?;
        Ok(n.max(0) as u64)
    }

    async fn keyless_neighbours(
        &mut self,
        label: &str,
        key: &str,
        keys: &[GValue],
        rel_type: &str,
        dir: Direction,
    ) -> Result<u64, StoreError> {
        let out = "SELECT DISTINCT n.label, n.key FROM rels r JOIN nodes n ON n.label = r.end_label AND n.key = r.end_key \
            WHERE r.type = ?1 AND r.start_label = ?2 AND r.start_key IN (SELECT value FROM json_each(?3)) \
            AND json_extract(n.props, '$.\"' || ?4 || '\"') IS NULL";
        let inn = "SELECT DISTINCT n.label, n.key FROM rels r JOIN nodes n ON n.label = r.start_label AND n.key = r.start_key \
            WHERE r.type = ?1 AND r.end_label = ?2 AND r.end_key IN (SELECT value FROM json_each(?3)) \
            AND json_extract(n.props, '$.\"' || ?4 || '\"') IS NULL";
        let sql = match dir {
            Direction::Out => format!("SELECT count(*) FROM ({out})"),
            Direction::In => format!("SELECT count(*) FROM ({inn})"),
            Direction::Both => format!("SELECT count(*) FROM ({out} UNION {inn})"),
        };
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(rel_type)
            .bind(label)
            .bind(keys_json(keys))
            .bind(key)
            .fetch_one(&mut self.0.conn)
            .await
            .map_err(|e| self.0.err(e))?;
        Ok(n.max(0) as u64)
    }

    async fn nodes(
        &mut self,
        label: &str,
        _key: &str,
        keys: &[GValue],
    ) -> Result<Vec<NodeRec>, StoreError> {
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

    async fn out_rels(
        &mut self,
        label: &str,
        _key: &str,
        keys: &[GValue],
    ) -> Result<Vec<RelRec>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM rels WHERE start_label = ? AND start_key IN (SELECT value FROM json_each(?))",
        )
        .bind(label)
        .bind(keys_json(keys))
        .fetch_all(&mut self.0.conn)
        .await
        .map_err(|e| self.0.err(e))?;
        Ok(rows.iter().map(rel_row).collect())
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

/// Writes an embedded graph file in one transaction (CERT; PROD only for `wf seed`).
pub struct EmbeddedWrite(Session);

impl EmbeddedWrite {
    pub async fn open(cfg: &GraphConfig) -> Result<EmbeddedWrite, StoreError> {
        Self::open_side(cfg, Side::Cert).await
    }

    /// Opens `side` for writing: CERT for loads; PROD only for `wf seed`'s synthetic data.
    pub async fn open_side(cfg: &GraphConfig, side: Side) -> Result<EmbeddedWrite, StoreError> {
        Ok(EmbeddedWrite(Session::open(cfg, side, true).await?))
    }
}

#[async_trait::async_trait]
impl super::GraphWrite for EmbeddedWrite {
    async fn enroll(&mut self, e: &crate::marker::Enrollment) -> Result<(), StoreError> {
        let (a, b, c, d) = (&e.environment, &e.token, &e.enrolled_at, &e.enrolled_by);
        sqlx::query("INSERT INTO enrollment (environment, token, enrolled_at, enrolled_by) VALUES (?, ?, ?, ?)")
            .bind(a)
            .bind(b)
            .bind(c)
            .bind(d)
            .execute(&mut self.0.conn)
            .await
            .map_err(|e| self.0.err(e))?;
        Ok(())
    }

    async fn has_marker(&mut self, run: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM markers WHERE run = ?")
            .bind(run)
            .fetch_one(&mut self.0.conn)
            .await
            .map_err(|e| self.0.err(e))?;
        Ok(n > 0)
    }

    async fn write_marker(&mut self, run: &str) -> Result<(), StoreError> {
        self.exec("INSERT INTO markers (run) VALUES (?)", &[run])
            .await
    }

    async fn delete_marker(&mut self, run: &str) -> Result<(), StoreError> {
        self.exec("DELETE FROM markers WHERE run = ?", &[run]).await
    }

    async fn existing_nodes(
        &mut self,
        label: &str,
        _key: &str,
        keys: &[GValue],
    ) -> Result<Vec<GValue>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT key FROM nodes WHERE label = ? AND key IN (SELECT value FROM json_each(?))",
        )
        .bind(label)
        .bind(keys_json(keys))
        .fetch_all(&mut self.0.conn)
        .await
        .map_err(|e| self.0.err(e))?;
        Ok(rows.iter().map(|k| GValue::from_key_text(k)).collect())
    }

    async fn merge_nodes(
        &mut self,
        label: &str,
        key: &str,
        rows: &[NodeRec],
    ) -> Result<(), StoreError> {
        for r in rows {
            let k = r.props.get(key).unwrap_or(&GValue::Null).key_text();
            let mut labels = r.labels.clone();
            labels.sort();
            sqlx::query(
                "INSERT INTO nodes (label, key, labels, props) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (label, key) DO UPDATE SET props = json_patch(props, excluded.props), labels = excluded.labels",
            )
            .bind(label)
            .bind(k)
            .bind(serde_json::to_string(&labels).unwrap_or_else(|_| "[]".into()))
            .bind(props_json(&r.props))
            .execute(&mut self.0.conn)
            .await
            .map_err(|e| self.0.err(e))?;
        }
        Ok(())
    }

    async fn existing_rels(
        &mut self,
        rel_type: &str,
        ends: (&str, &str),
        _key: &str,
        pairs: &[(GValue, GValue)],
    ) -> Result<Vec<(GValue, GValue)>, StoreError> {
        let rows = sqlx::query(
            "SELECT start_key, end_key FROM rels WHERE type = ?1 AND start_label = ?2 AND end_label = ?3 AND (start_key, end_key) IN (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?4))",
        )
        .bind(rel_type)
        .bind(ends.0)
        .bind(ends.1)
        .bind(pairs_json(pairs))
        .fetch_all(&mut self.0.conn)
        .await
        .map_err(|e| self.0.err(e))?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    GValue::from_key_text(r.get::<&str, _>("start_key")),
                    GValue::from_key_text(r.get::<&str, _>("end_key")),
                )
            })
            .collect())
    }

    async fn merge_rels(
        &mut self,
        rel_type: &str,
        ends: (&str, &str),
        _key: &str,
        rows: &[RelRec],
    ) -> Result<(), StoreError> {
        // One query for the whole chunk: relationships whose start or end node is not in CERT.
        let pairs: Vec<(GValue, GValue)> = rows
            .iter()
            .map(|r| (r.start.1.clone(), r.end.1.clone()))
            .collect();
        let missing: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM json_each(?3) p WHERE NOT EXISTS (SELECT 1 FROM nodes WHERE label = ?1 AND key = json_extract(p.value, '$[0]')) OR NOT EXISTS (SELECT 1 FROM nodes WHERE label = ?2 AND key = json_extract(p.value, '$[1]'))",
        )
        .bind(ends.0)
        .bind(ends.1)
        .bind(pairs_json(&pairs))
        .fetch_one(&mut self.0.conn)
        .await
        .map_err(|e| self.0.err(e))?;
        if missing > 0 {
            return Err(super::missing_ends(
                &self.0.store,
                rel_type,
                ends,
                missing as u64,
                rows.len(),
            ));
        }
        for r in rows {
            sqlx::query(
                "INSERT INTO rels (type, start_label, start_key, end_label, end_key, props) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO UPDATE SET props = json_patch(props, excluded.props)",
            )
            .bind(rel_type)
            .bind(ends.0)
            .bind(r.start.1.key_text())
            .bind(ends.1)
            .bind(r.end.1.key_text())
            .bind(props_json(&r.props))
            .execute(&mut self.0.conn)
            .await
            .map_err(|e| self.0.err(e))?;
        }
        Ok(())
    }

    async fn delete_rels(
        &mut self,
        rel_type: &str,
        ends: (&str, &str),
        _key: &str,
        pairs: &[(GValue, GValue)],
    ) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "DELETE FROM rels WHERE type = ?1 AND start_label = ?2 AND end_label = ?3 AND (start_key, end_key) IN (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?4))",
        )
        .bind(rel_type)
        .bind(ends.0)
        .bind(ends.1)
        .bind(pairs_json(pairs))
        .execute(&mut self.0.conn)
        .await
        .map_err(|e| self.0.err(e))?;
        Ok(r.rows_affected())
    }

    async fn delete_nodes(
        &mut self,
        label: &str,
        _key: &str,
        keys: &[GValue],
    ) -> Result<u64, StoreError> {
        let k = keys_json(keys);
        for sql in [
            "DELETE FROM rels WHERE start_label = ?1 AND start_key IN (SELECT value FROM json_each(?2))",
            "DELETE FROM rels WHERE end_label = ?1 AND end_key IN (SELECT value FROM json_each(?2))",
        ] {
            sqlx::query(sql)
                .bind(label)
                .bind(&k)
                .execute(&mut self.0.conn)
                .await
                .map_err(|e| self.0.err(e))?;
        }
        let r = sqlx::query(
            "DELETE FROM nodes WHERE label = ?1 AND key IN (SELECT value FROM json_each(?2))",
        )
        .bind(label)
        .bind(&k)
        .execute(&mut self.0.conn)
        .await
        .map_err(|e| self.0.err(e))?;
        Ok(r.rows_affected())
    }

    async fn ensure_index(&mut self, _label: &str, _key: &str) -> Result<(), StoreError> {
        Ok(()) // (label, key) is the primary key.
    }

    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        self.0.end(true).await
    }

    async fn rollback(self: Box<Self>) -> Result<(), StoreError> {
        self.0.end(false).await
    }
}

impl EmbeddedWrite {
    async fn exec(&mut self, sql: &'static str, binds: &[&str]) -> Result<(), StoreError> {
        let mut q = sqlx::query(sql);
        for b in binds {
            q = q.bind(*b);
        }
        q.execute(&mut self.0.conn)
            .await
            .map_err(|e| self.0.err(e))?;
        Ok(())
    }
}
