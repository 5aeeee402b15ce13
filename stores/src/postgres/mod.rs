//! PostgreSQL stores through sqlx. PROD sessions run with `default_transaction_read_only = on`, so
//! even a statement wf never meant to send cannot change PROD.

pub mod copy;
mod introspect;
pub mod snapshot;

use crate::config::{Side, Triggers};
use crate::error::StoreError;
use crate::load::{LoadReport, StoreLoad};
use crate::marker::{read_marker, Enrollment, Identity, CREATE_MARKER, INSERT_MARKER};
use crate::relational::{redact, DistrictRow, RelationalStore};
use crate::schema::StoreSchema;
use crate::snapshot::Snap;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::Connection;
use sqlx::Row;
use std::str::FromStr;
use std::time::Duration;

/// One PostgreSQL database of a store.
pub struct PgStore {
    name: String,
    pool: PgPool,
}

impl PgStore {
    /// Connects and runs `SELECT 1`; PROD connections are read-only.
    pub async fn connect(name: &str, url: &str, side: Side) -> Result<PgStore, StoreError> {
        let fail = |message: String| StoreError::Connect {
            store: name.into(),
            side: side.as_str(),
            message,
        };
        let mut opts = PgConnectOptions::from_str(url)
            .map_err(|e| fail(format!("bad URL {}: {e}", redact(url))))?
            .application_name("wf")
            // Values travel as text: pin every setting that changes a value's text form, so a
            // database or role default on either side (an `IntervalStyle`, a `bytea_output`, a
            // money locale) never changes what is staged or how CERT parses it. sqlx already
            // pins DateStyle ISO, TimeZone UTC and extra_float_digits.
            .options([
                ("IntervalStyle", "postgres"),
                ("bytea_output", "hex"),
                ("lc_monetary", "C"),
            ]);
        if side == Side::Prod {
            opts = opts.options([("default_transaction_read_only", "on")]);
        }
        // A refused or reset connection, or a server starting or shutting down, is transient (a
        // restart): the runner retries it. A bad password or a missing database is not.
        let classify = |what: String, e: sqlx::Error| match StoreError::from_sqlx(name, e) {
            StoreError::Transient { message, .. } => StoreError::Transient {
                store: name.into(),
                message: format!("{what} ({}): {message}", side.as_str()),
            },
            other => fail(format!("{what}: {}", other.detail())),
        };
        // One direct attempt first: a pool would retry a refused connection until its timeout.
        let mut probe = PgConnection::connect_with(&opts)
            .await
            .map_err(|e| classify(format!("cannot connect to {}", redact(url)), e))?;
        sqlx::query("select 1")
            .execute(&mut probe)
            .await
            .map_err(|e| classify(format!("{} does not answer", redact(url)), e))?;
        let _ = probe.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_lazy_with(opts);
        Ok(PgStore {
            name: name.into(),
            pool,
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait::async_trait]
impl RelationalStore for PgStore {
    fn name(&self) -> &str {
        &self.name
    }

    async fn introspect(&self) -> Result<StoreSchema, StoreError> {
        introspect::introspect(&self.name, &self.pool, true).await
    }

    async fn introspect_shape(&self) -> Result<StoreSchema, StoreError> {
        introspect::introspect(&self.name, &self.pool, false).await
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
            snapshot::PgSnapshot::begin(&self.name, &self.pool).await?,
        ))
    }

    async fn snapshot_at(&self, exported: &str) -> Result<Snap, StoreError> {
        Ok(Box::new(
            snapshot::PgSnapshot::attach(&self.name, &self.pool, exported).await?,
        ))
    }

    async fn load(&self, job: &StoreLoad, triggers: Triggers) -> Result<LoadReport, StoreError> {
        crate::load::postgres::load(&self.pool, job, triggers).await
    }

    async fn load_held(
        &self,
        job: &StoreLoad,
        triggers: Triggers,
    ) -> Result<crate::load::HeldLoad, StoreError> {
        crate::load::postgres::load_held(&self.pool, job, triggers).await
    }

    async fn rollback(&self, job: &StoreLoad) -> Result<Vec<(String, u64)>, StoreError> {
        crate::load::postgres::rollback(&self.pool, job).await
    }

    async fn preview_rollback(&self, job: &StoreLoad) -> Result<Vec<(String, u64)>, StoreError> {
        crate::load::postgres::preview_rollback(&self.pool, job).await
    }

    async fn identity(&self) -> Result<Identity, StoreError> {
        let row = sqlx::query(
            "select (select system_identifier::text from pg_control_system()), \
             (select oid::int8 from pg_database where datname = current_database())",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| StoreError::from_sqlx(&self.name, e))?;
        Ok(Identity::Postgres {
            system_id: row.get(0),
            db_oid: row.get(1),
        })
    }

    async fn enrollment(&self) -> Result<Option<Enrollment>, StoreError> {
        let q = |e| StoreError::from_sqlx(&self.name, e);
        let has: bool = sqlx::query_scalar("select to_regclass('wf_enrollment') is not null")
            .fetch_one(&self.pool)
            .await
            .map_err(q)?;
        if !has {
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
        // Readable by every role, so a PROD connection under another role still sees it.
        sqlx::query("grant select on wf_enrollment to public")
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
        snapshot::table_ident(name)
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
