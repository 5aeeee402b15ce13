//! SQLite stores through sqlx: the embedded default for demos and quick tests. PROD files are opened
//! read-only; CERT files are created when missing.

mod introspect;
use introspect::quote_ident;
pub mod snapshot;

use crate::config::{Side, Triggers};
use crate::error::StoreError;
use crate::load::{LoadReport, StoreLoad};
use crate::marker::{
    file_identity, read_marker, Enrollment, Identity, CREATE_MARKER, INSERT_MARKER,
};
use crate::relational::{DistrictRow, RelationalStore};
use crate::schema::StoreSchema;
use crate::snapshot::Snap;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::Row;
use std::str::FromStr;

/// One SQLite database file of a store.
pub struct SqliteStore {
    name: String,
    pool: SqlitePool,
    /// The database file (its device and inode are its identity for the CERT guard).
    path: std::path::PathBuf,
}

/// The file a `sqlite:` URL names (query string and prefixes dropped).
pub(crate) fn sqlite_path(url: &str) -> std::path::PathBuf {
    let p = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    std::path::PathBuf::from(p.split('?').next().unwrap_or(p))
}

impl SqliteStore {
    /// Opens the file (read-only for PROD) with foreign keys enforced, and checks it answers.
    pub async fn connect(name: &str, url: &str, side: Side) -> Result<SqliteStore, StoreError> {
        let fail = |message: String| StoreError::Connect {
            store: name.into(),
            side: side.as_str(),
            message,
        };
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| fail(format!("bad URL {url}: {e}")))?
            .foreign_keys(true)
            .read_only(side == Side::Prod)
            .create_if_missing(side == Side::Cert);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(|e| fail(format!("cannot open {url}: {e}")))?;
        sqlx::query("select 1")
            .execute(&pool)
            .await
            .map_err(|e| fail(format!("{url} does not answer: {e}")))?;
        Ok(SqliteStore {
            name: name.into(),
            pool,
            path: sqlite_path(url),
        })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[async_trait::async_trait]
impl RelationalStore for SqliteStore {
    fn name(&self) -> &str {
        &self.name
    }

    async fn introspect(&self) -> Result<StoreSchema, StoreError> {
        introspect::schema(&self.pool, &self.name, true).await
    }

    async fn introspect_shape(&self) -> Result<StoreSchema, StoreError> {
        introspect::schema(&self.pool, &self.name, false).await
    }

    async fn execute(&self, sql: &str) -> Result<u64, StoreError> {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| StoreError::from_sqlx(&self.name, e))
    }

    async fn snapshot(&self) -> Result<Snap, StoreError> {
        Ok(Box::new(
            snapshot::SqliteSnapshot::begin(&self.name, &self.pool).await?,
        ))
    }

    /// SQLite has no way to switch triggers off for a transaction: config validation refuses
    /// `triggers = "disable"` on a SQLite store, so `triggers` is always `keep` here.
    async fn load(&self, job: &StoreLoad, _triggers: Triggers) -> Result<LoadReport, StoreError> {
        crate::load::sqlite::load(&self.pool, job).await
    }

    async fn load_held(
        &self,
        job: &StoreLoad,
        _triggers: Triggers,
    ) -> Result<crate::load::HeldLoad, StoreError> {
        crate::load::sqlite::load_held(&self.pool, job).await
    }

    async fn rollback(&self, job: &StoreLoad) -> Result<Vec<(String, u64)>, StoreError> {
        crate::load::sqlite::rollback(&self.pool, job).await
    }

    async fn preview_rollback(&self, job: &StoreLoad) -> Result<Vec<(String, u64)>, StoreError> {
        crate::load::sqlite::preview_rollback(&self.pool, job).await
    }

    async fn identity(&self) -> Result<Identity, StoreError> {
        file_identity(&self.path).map_err(|e| StoreError::Guard {
            message: format!(
                "store {}: cannot stat {}: {e}",
                self.name,
                self.path.display()
            ),
        })
    }

    async fn enrollment(&self) -> Result<Option<Enrollment>, StoreError> {
        let q = |e| StoreError::from_sqlx(&self.name, e);
        let has: i64 = sqlx::query_scalar(
            "select count(*) from sqlite_master where type = 'table' and name = 'wf_enrollment'",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(q)?;
        if has == 0 {
            return Ok(None);
        }
        read_marker(&self.pool).await.map_err(q)
    }

    async fn enroll(&self, e: &Enrollment) -> Result<(), StoreError> {
        let q = |e| StoreError::from_sqlx(&self.name, e);
        let mut tx = self.pool.begin().await.map_err(q)?;
        sqlx::query(CREATE_MARKER)
            .execute(&mut *tx)
            .await
            .map_err(q)?;
        sqlx::query(INSERT_MARKER)
            .bind(&e.environment)
            .bind(&e.token)
            .bind(&e.enrolled_at)
            .bind(&e.enrolled_by)
            .execute(&mut *tx)
            .await
            .map_err(q)?;
        tx.commit().await.map_err(q)
    }

    fn quote_table(&self, name: &str) -> String {
        quote_ident(name)
    }

    async fn district_rows(&self, sql: String) -> Result<Vec<DistrictRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StoreError::from_sqlx(&self.name, e))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::sqlite_path;

    #[test]
    fn sqlite_paths_drop_prefix_and_query() {
        assert_eq!(
            sqlite_path("sqlite:///tmp/a.db?mode=ro"),
            std::path::PathBuf::from("/tmp/a.db")
        );
        assert_eq!(
            sqlite_path("sqlite:rel/b.db"),
            std::path::PathBuf::from("rel/b.db")
        );
    }
}
