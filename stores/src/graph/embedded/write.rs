//! Writing an embedded graph file: CERT loads and rollbacks in one transaction (PROD only for
//! `wf seed`).

use super::{keys_json, pairs_json, props_json, Session};
use crate::error::StoreError;
use crate::graph::{GValue, GraphConfig, KeyMap, NodeRec, RelRec};
use crate::refs::Side;
use sqlx::Row;

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
impl crate::graph::GraphWrite for EmbeddedWrite {
    fn keys(&self) -> &KeyMap {
        &self.0.keys
    }

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

    async fn merge_nodes(&mut self, label: &str, rows: &[NodeRec]) -> Result<(), StoreError> {
        let key = self.0.keys.of(label).clone();
        for r in rows {
            let k = key.value(&r.props).unwrap_or(GValue::Null).key_text();
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
            return Err(crate::graph::missing_ends(
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

    async fn delete_nodes(&mut self, label: &str, keys: &[GValue]) -> Result<u64, StoreError> {
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

    async fn ensure_index(&mut self, _label: &str) -> Result<(), StoreError> {
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
