//! SQLite's dialect of the load protocol (`protocol`): multi-row inserts, a savepoint per batch
//! to name the row that broke a constraint. Foreign keys are checked at commit
//! (`defer_foreign_keys`), so cycles load in one pass.

use super::keys::{batches, key_of, key_positions};
use super::manifest::write_manifest;
use super::protocol::{self, Conn, Dialect, Written};
use super::{new_keys, LoadReport, StoreLoad, Strategy, TableLoad, TableReport};
use crate::error::StoreError;
use crate::schema::Table;
use crate::sqlite::snapshot::ident;
use crate::staging::{value_at, Value};
use crate::subset::{key_columns, Key, KEY_BATCH};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::SqliteConnection;
use sqlx::{Sqlite, SqlitePool};
use std::collections::HashSet;
use std::path::Path;

const MARKERS: &str = "create table if not exists wf_loads (run_key text not null, store text not null, \
    tbl text not null, rows integer not null, sha256 text not null, loaded_at text not null default current_timestamp, \
    primary key (run_key, tbl))";

fn load_error(store: &str, table: &str, key: &Key, e: sqlx::Error) -> StoreError {
    if let Some(db) = e.as_database_error() {
        if db.is_unique_violation() || db.is_foreign_key_violation() || db.is_check_violation() {
            let key = key
                .iter()
                .map(|k| k.as_deref().unwrap_or("NULL"))
                .collect::<Vec<_>>()
                .join(", ");
            return StoreError::Constraint {
                store: store.into(),
                table: table.into(),
                constraint: db.constraint().map(str::to_string).unwrap_or_else(|| {
                    let kind = if db.is_unique_violation() {
                        "unique"
                    } else if db.is_foreign_key_violation() {
                        "foreign key"
                    } else {
                        "check"
                    };
                    format!("({kind})")
                }),
                key: format!("({key})"),
                message: db.message().to_string(),
            };
        }
    }
    StoreError::from_sqlx(store, e)
}

fn where_keys(cols: &[String], n: usize) -> String {
    let row = format!("({})", vec!["?"; cols.len()].join(", "));
    let names: Vec<String> = cols.iter().map(|c| ident(c)).collect();
    format!(
        "({}) in (values {})",
        names.join(", "),
        vec![row; n].join(", ")
    )
}

/// Rows equal to one of `n` keys in every column, NULL matching NULL (`IS` is SQLite's
/// null-safe equality): how a table without a primary key is keyed.
fn where_rows(cols: &[String], n: usize) -> String {
    let row: Vec<String> = cols.iter().map(|c| format!("{} is ?", ident(c))).collect();
    let row = format!("({})", row.join(" and "));
    vec![row; n].join(" or ")
}

async fn existing(
    conn: &mut SqliteConnection,
    table: &Table,
    keys: &[Key],
) -> Result<HashSet<Key>, StoreError> {
    let cols = key_columns(table);
    let select: Vec<String> = cols
        .iter()
        .map(|c| format!("cast({} as text)", ident(c)))
        .collect();
    let mut found = HashSet::new();
    for chunk in keys.chunks(KEY_BATCH) {
        let sql = format!(
            "select {} from {} where {}",
            select.join(", "),
            ident(&table.name),
            where_keys(&cols, chunk.len())
        );
        let mut q = sqlx::query::<Sqlite>(sqlx::AssertSqlSafe(sql));
        for k in chunk {
            for v in k {
                q = q.bind(v.clone());
            }
        }
        found.extend(protocol::fetch_keys(q, conn, cols.len(), &table.store).await?);
    }
    Ok(found)
}

/// Loads one store in one transaction (the protocol in `protocol`).
pub async fn load(pool: &SqlitePool, job: &StoreLoad) -> Result<LoadReport, StoreError> {
    let mut d = SqliteDialect::open(pool, &job.store).await?;
    protocol::load(&mut d, job).await
}

/// `load`, with the transaction left open for the caller to commit (`protocol::load_held`).
pub async fn load_held(pool: &SqlitePool, job: &StoreLoad) -> Result<super::HeldLoad, StoreError> {
    let d = SqliteDialect::open(pool, &job.store).await?;
    protocol::load_held(d, job).await
}

/// Deletes what `job` loaded into this store (children first), if that load committed.
pub async fn rollback(
    pool: &SqlitePool,
    job: &StoreLoad,
) -> Result<Vec<(String, u64)>, StoreError> {
    let mut d = SqliteDialect::open(pool, &job.store).await?;
    protocol::rollback(&mut d, job).await
}

/// What a rollback of `job` would delete now (see `protocol::preview`).
pub async fn preview_rollback(
    pool: &SqlitePool,
    job: &StoreLoad,
) -> Result<Vec<(String, u64)>, StoreError> {
    let mut d = SqliteDialect::open(pool, &job.store).await?;
    protocol::preview(&mut d, job).await
}

/// SQLite in the load protocol: one pooled connection holding the write transaction.
struct SqliteDialect {
    store: String,
    conn: PoolConnection<Sqlite>,
}

impl SqliteDialect {
    async fn open(pool: &SqlitePool, store: &str) -> Result<SqliteDialect, StoreError> {
        let conn = protocol::acquire(pool, store).await?;
        Ok(SqliteDialect {
            store: store.to_string(),
            conn,
        })
    }
}

#[async_trait::async_trait]
impl Dialect for SqliteDialect {
    fn conn(&mut self) -> &mut dyn Conn {
        &mut self.conn
    }

    /// A write transaction with every FK check deferred to commit, so cycles load in one pass.
    const BEGIN: &'static [&'static str] = &["begin immediate", "pragma defer_foreign_keys = on"];

    const COMMIT_ERROR: fn(&str, sqlx::Error) -> StoreError =
        |store, e| load_error(store, "(commit)", &Vec::new(), e);

    const CREATE_MARKERS: &'static str = MARKERS;
    const HAS_MARKERS: &'static str =
        "select name, count(*) from sqlite_master where name = 'wf_loads' group by name";

    async fn write_table(
        &mut self,
        _n: usize,
        t: &TableLoad,
        manifests: &Path,
    ) -> Result<Written, StoreError> {
        let report = load_table(&mut self.conn, &self.store, t, manifests).await?;
        Ok(Written {
            report,
            touched: None,
        })
    }

    async fn count_keys(&mut self, table: &Table, keys: &[Key]) -> Result<u64, StoreError> {
        Ok(existing(&mut self.conn, table, keys).await?.len() as u64)
    }

    async fn delete_keys(&mut self, table: &Table, keys: &[Key]) -> Result<u64, StoreError> {
        let cols = key_columns(table);
        let wheres = if table.primary_key.is_empty() {
            where_rows(&cols, keys.len())
        } else {
            where_keys(&cols, keys.len())
        };
        let sql = format!("delete from {} where {wheres}", ident(&table.name));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for k in keys {
            for v in k {
                q = q.bind(v.clone());
            }
        }
        q.execute(&mut *self.conn)
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| load_error(&self.store, &table.name, &Vec::new(), e))
    }
}

async fn load_table(
    conn: &mut SqliteConnection,
    store: &str,
    t: &TableLoad,
    manifest_dir: &std::path::Path,
) -> Result<TableReport, StoreError> {
    let table = &t.table;
    let data = batches(&t.file)?;
    let Some(first) = data.first() else {
        return Ok(TableReport {
            table: table.id(),
            rows_in_file: 0,
            inserted: 0,
        });
    };
    let schema = first.schema();
    let key_idx = key_positions(table, &schema)?;
    let file_keys: Vec<Key> = data
        .iter()
        .flat_map(|b| (0..b.num_rows()).map(|r| key_of(b, &key_idx, r)))
        .collect();
    let found = existing(conn, table, &file_keys).await?;
    let inserted = new_keys(file_keys, &found);
    let names: Vec<String> = schema.fields().iter().map(|f| ident(f.name())).collect();
    let conflict = on_conflict(table, t.strategy, &schema);
    let head = format!(
        "insert into {} ({}) values ",
        ident(&table.name),
        names.join(", ")
    );
    let row = format!("({})", vec!["?"; names.len()].join(", "));
    // Multi-row inserts, within SQLite's limit of 32,766 bound variables per statement.
    let per_batch = (32_000 / names.len().max(1)).clamp(1, 500);
    let mut rows_in_file = 0;
    for b in &data {
        let mut start = 0;
        while start < b.num_rows() {
            let end = (start + per_batch).min(b.num_rows());
            rows_in_file += (end - start) as u64;
            let sql = format!(
                "{head}{}{conflict}",
                vec![row.as_str(); end - start].join(", ")
            );
            let stmt = Insert {
                store,
                table: &table.name,
                key_idx: &key_idx,
                one: format!("{head}{row}{conflict}"),
            };
            stmt.rows(conn, &sql, b, start..end).await?;
            start = end;
        }
    }
    write_manifest(manifest_dir, table, &inserted)?;
    Ok(TableReport {
        table: table.id(),
        rows_in_file,
        inserted: inserted.len() as u64,
    })
}

/// The `on conflict` clause of the strategy: none for insert, nothing done for skip-existing, the
/// non-key columns set from the new row for upsert.
fn on_conflict(table: &Table, strategy: Strategy, schema: &arrow_schema::Schema) -> String {
    match strategy {
        Strategy::Insert => String::new(),
        Strategy::SkipExisting => " on conflict do nothing".into(),
        Strategy::Upsert => {
            let keys = key_columns(table);
            let sets: Vec<String> = schema
                .fields()
                .iter()
                .map(|f| f.name())
                .filter(|c| !keys.contains(c))
                .map(|c| format!("{0} = excluded.{0}", ident(c)))
                .collect();
            if sets.is_empty() {
                return " on conflict do nothing".into();
            }
            let pk: Vec<String> = keys.iter().map(|c| ident(c)).collect();
            format!(
                " on conflict ({}) do update set {}",
                pk.join(", "),
                sets.join(", ")
            )
        }
    }
}

/// One multi-row insert statement of a table, with the one-row form to name a failing row.
struct Insert<'a> {
    store: &'a str,
    table: &'a str,
    key_idx: &'a [usize],
    one: String,
}

impl Insert<'_> {
    /// Inserts rows `rows` of `b` with `sql` inside a savepoint; on failure, replays them one by
    /// one to name the row that broke a constraint.
    async fn rows(
        &self,
        conn: &mut SqliteConnection,
        sql: &str,
        b: &arrow_array::RecordBatch,
        rows: std::ops::Range<usize>,
    ) -> Result<(), StoreError> {
        let store = self.store;
        let exec = |sql: &'static str| sqlx::raw_sql(sql);
        exec("savepoint wf_batch")
            .execute(&mut *conn)
            .await
            .map_err(|e| StoreError::from_sqlx(store, e))?;
        let batch = bind_rows(
            sqlx::query(sqlx::AssertSqlSafe(sql.to_string())),
            b,
            rows.clone(),
        )
        .execute(&mut *conn)
        .await;
        let Err(e) = batch else {
            return exec("release wf_batch")
                .execute(&mut *conn)
                .await
                .map(|_| ())
                .map_err(|e| StoreError::from_sqlx(store, e));
        };
        exec("rollback to wf_batch")
            .execute(&mut *conn)
            .await
            .map_err(|e| StoreError::from_sqlx(store, e))?;
        for r in rows {
            let q = bind_rows(
                sqlx::query(sqlx::AssertSqlSafe(self.one.clone())),
                b,
                r..r + 1,
            );
            if let Err(e) = q.execute(&mut *conn).await {
                let key = key_of(b, self.key_idx, r);
                return Err(load_error(store, self.table, &key, e));
            }
        }
        Err(load_error(store, self.table, &Vec::new(), e))
    }
}

/// Binds every column of rows `rows` of `batch`, row after row.
fn bind_rows<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    batch: &arrow_array::RecordBatch,
    rows: std::ops::Range<usize>,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    for r in rows {
        for c in batch.columns() {
            q = match value_at(c.as_ref(), r) {
                Value::Null => q.bind(None::<String>),
                Value::Int(x) => q.bind(x),
                Value::Float(x) => q.bind(x),
                Value::Bool(x) => q.bind(x),
                Value::Text(s) => q.bind(s.to_string()),
                Value::Bytes(x) => q.bind(x.to_vec()),
            };
        }
    }
    q
}
