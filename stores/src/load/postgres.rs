//! Loading into and rolling back PostgreSQL CERT databases (`COPY … FROM STDIN`).

use super::keys::{batches, key_of, key_positions};
use super::manifest::{copy_manifest, write_manifest};
use super::protocol::{self, Conn, Dialect, Written};
use super::{new_keys, LoadReport, StoreLoad, Strategy, TableLoad, TableReport};
use crate::config::Triggers;
use crate::error::StoreError;
use crate::postgres::copy::copy_in;
use crate::postgres::snapshot::{col_type, ident, in_clause, table_ident};
use crate::schema::Table;
use crate::staging::open;
use crate::subset::{key_columns, Key, KEY_BATCH};
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgDatabaseError;
use sqlx::{PgConnection, PgPool, Postgres};
use std::collections::HashSet;
use std::path::Path;

const MARKERS: &str = "create table if not exists wf_loads (run_key text not null, store text not null, \
    tbl text not null, rows bigint not null, sha256 text not null, loaded_at timestamptz not null default now(), \
    primary key (run_key, tbl))";

/// Maps a database error of a load into `table` to a constraint error naming it, or a query error.
fn load_error(store: &str, table: &str, e: sqlx::Error) -> StoreError {
    if let Some(db) = e.as_database_error() {
        if let Some(constraint) = db.constraint() {
            let detail = db
                .try_downcast_ref::<PgDatabaseError>()
                .and_then(|p| p.detail())
                .unwrap_or("");
            let key = detail
                .split_once("Key ")
                .map(|(_, k)| {
                    k.split(" already")
                        .next()
                        .unwrap_or(k)
                        .split(" is not")
                        .next()
                        .unwrap_or(k)
                })
                .unwrap_or("(unknown)")
                .to_string();
            return StoreError::Constraint {
                store: store.into(),
                table: db.table().unwrap_or(table).to_string(),
                constraint: constraint.to_string(),
                key,
                message: db.message().to_string(),
            };
        }
    }
    StoreError::from_sqlx(store, e)
}

/// Which of `keys` exist in `table` already.
async fn existing(
    conn: &mut PgConnection,
    table: &Table,
    keys: &[Key],
) -> Result<HashSet<Key>, StoreError> {
    let cols = key_columns(table);
    let select: Vec<String> = cols.iter().map(|c| format!("{}::text", ident(c))).collect();
    let mut found = HashSet::new();
    for chunk in keys.chunks(KEY_BATCH) {
        let sql = format!(
            "select {} from {} where {}",
            select.join(", "),
            table_ident(&table.name),
            in_clause(table, &cols, 1)?
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for i in 0..cols.len() {
            q = q.bind(chunk.iter().map(|k| k[i].clone()).collect::<Vec<_>>());
        }
        found.extend(protocol::fetch_keys(q, conn, cols.len(), &table.store).await?);
    }
    Ok(found)
}

/// Loads one store in one transaction (the protocol in `protocol`). The `insert` strategy streams
/// the staging file into `COPY` batch by batch (memory: one batch); `upsert` and `skip-existing`
/// read the table's keys first, to record only the rows they insert.
pub async fn load(
    pool: &PgPool,
    job: &StoreLoad,
    triggers: Triggers,
) -> Result<LoadReport, StoreError> {
    let mut d = PgDialect::open(pool, &job.store, triggers).await?;
    protocol::load(&mut d, job).await
}

/// `load`, with the transaction left open for the caller to commit (`protocol::load_held`).
pub async fn load_held(
    pool: &PgPool,
    job: &StoreLoad,
    triggers: Triggers,
) -> Result<super::HeldLoad, StoreError> {
    let d = PgDialect::open(pool, &job.store, triggers).await?;
    protocol::load_held(d, job).await
}

/// Deletes what `job` loaded into this store (children first), if that load committed.
pub async fn rollback(pool: &PgPool, job: &StoreLoad) -> Result<Vec<(String, u64)>, StoreError> {
    let mut d = PgDialect::open(pool, &job.store, Triggers::Keep).await?;
    protocol::rollback(&mut d, job).await
}

/// What a rollback of `job` would delete now (see `protocol::preview`).
pub async fn preview_rollback(
    pool: &PgPool,
    job: &StoreLoad,
) -> Result<Vec<(String, u64)>, StoreError> {
    let mut d = PgDialect::open(pool, &job.store, Triggers::Keep).await?;
    protocol::preview(&mut d, job).await
}

/// PostgreSQL in the load protocol: one pooled connection holding the transaction.
struct PgDialect {
    store: String,
    conn: PoolConnection<Postgres>,
    triggers: Triggers,
}

impl PgDialect {
    async fn open(pool: &PgPool, store: &str, triggers: Triggers) -> Result<PgDialect, StoreError> {
        let conn = protocol::acquire(pool, store).await?;
        Ok(PgDialect {
            store: store.to_string(),
            conn,
            triggers,
        })
    }

    async fn raw(&mut self, sql: &str) -> Result<(), StoreError> {
        let r = Conn::run(&mut self.conn, sql).await;
        r.map_err(|e| StoreError::from_sqlx(&self.store, e))
    }

    /// The `insert` strategy: the file straight into `COPY`; its manifest is the file's keys.
    async fn copy_table(&mut self, t: &TableLoad, manifests: &Path) -> Result<Written, StoreError> {
        let table = &t.table;
        let reader = open(&t.file)?;
        let (cols, null_cols) = columns(t, &reader.schema());
        let copy = format!(
            "copy {} ({}) from stdin",
            table_ident(&table.name),
            cols.join(", ")
        );
        let to_store_err = |e: arrow_schema::ArrowError| crate::staging::damaged(&t.file, e);
        let store = self.store.clone();
        let rows = copy_in(
            &mut self.conn,
            &copy,
            reader.map(|b| b.map_err(to_store_err)),
            &null_cols,
            |e| load_error(&store, &table.name, e),
        )
        .await?;
        copy_manifest(manifests, table, &t.file)?;
        Ok(Written {
            report: TableReport {
                table: table.id(),
                rows_in_file: rows,
                inserted: rows,
            },
            touched: None,
        })
    }

    /// `upsert` and `skip-existing`: the file into a temporary table, then one `INSERT … ON
    /// CONFLICT`; the manifest holds the keys CERT did not have.
    async fn merge_table(
        &mut self,
        n: usize,
        t: &TableLoad,
        manifests: &Path,
    ) -> Result<Written, StoreError> {
        let table = &t.table;
        let data = batches(&t.file)?;
        let schema = open(&t.file)?.schema();
        let (cols, null_cols) = columns(t, &schema);
        let key_idx = key_positions(table, &schema)?;
        let file_keys: Vec<Key> = data
            .iter()
            .flat_map(|b| (0..b.num_rows()).map(|r| key_of(b, &key_idx, r)))
            .collect();
        let found = existing(&mut self.conn, table, &file_keys).await?;
        let inserted = new_keys(file_keys.clone(), &found);
        let stage = format!("wf_stage_{n}");
        self.raw(&format!(
            "create temp table {stage} (like {} including defaults) on commit drop",
            table_ident(&table.name)
        ))
        .await?;
        let copy = format!("copy {stage} ({}) from stdin", cols.join(", "));
        let store = self.store.clone();
        copy_in(
            &mut self.conn,
            &copy,
            data.into_iter().map(Ok),
            &null_cols,
            |e| load_error(&store, &table.name, e),
        )
        .await?;
        let sql = merge_sql(t, &schema, &cols, &stage);
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut *self.conn)
            .await
            .map_err(|e| load_error(&self.store, &table.name, e))?;
        write_manifest(manifests, table, &inserted)?;
        let rows_in_file = file_keys.len() as u64;
        let touched = if t.strategy == Strategy::Upsert {
            file_keys
        } else {
            inserted.clone()
        };
        Ok(Written {
            report: TableReport {
                table: table.id(),
                rows_in_file,
                inserted: inserted.len() as u64,
            },
            touched: Some(touched),
        })
    }
}

/// The staged columns as SQL names them, and which of them load NULL (break columns).
fn columns(t: &TableLoad, schema: &arrow_schema::Schema) -> (Vec<String>, Vec<bool>) {
    let cols = schema.fields().iter().map(|f| ident(f.name())).collect();
    let nulls = schema
        .fields()
        .iter()
        .map(|f| t.deferred.contains(f.name()))
        .collect();
    (cols, nulls)
}

/// `INSERT … SELECT … FROM stage ON CONFLICT (key) DO UPDATE | DO NOTHING`.
fn merge_sql(t: &TableLoad, schema: &arrow_schema::Schema, cols: &[String], stage: &str) -> String {
    let table = &t.table;
    let pk: Vec<String> = key_columns(table).iter().map(|c| ident(c)).collect();
    let sets: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| f.name())
        .filter(|c| !key_columns(table).contains(c) && !t.deferred.contains(c))
        .map(|c| format!("{0} = excluded.{0}", ident(c)))
        .collect();
    let action = if t.strategy == Strategy::SkipExisting || sets.is_empty() {
        "do nothing".to_string()
    } else {
        format!("do update set {}", sets.join(", "))
    };
    // Identity columns GENERATED ALWAYS take the staged values, as COPY gives them.
    format!(
        "insert into {} ({cols}) overriding system value select {cols} from {stage} on conflict ({}) {action}",
        table_ident(&table.name),
        pk.join(", "),
        cols = cols.join(", ")
    )
}

#[async_trait::async_trait]
impl Dialect for PgDialect {
    /// Keys travel as one array per key column (`= any($1)`, `unnest`): large chunks.
    const DELETE_BATCH: usize = 10_000;
    fn conn(&mut self) -> &mut dyn Conn {
        &mut self.conn
    }

    /// Deferrable FKs (a cycle without a nullable column needs them) are checked at commit.
    const BEGIN: &'static [&'static str] = &["begin", "set constraints all deferred"];

    const COMMIT_ERROR: fn(&str, sqlx::Error) -> StoreError =
        |store, e| load_error(store, "(commit)", e);

    const CREATE_MARKERS: &'static str = MARKERS;
    const HAS_MARKERS: &'static str =
        "select 'wf_loads'::text, count(*) from pg_class where oid = to_regclass('wf_loads')";

    async fn before_tables(&mut self, job: &StoreLoad) -> Result<(), StoreError> {
        user_triggers(&mut self.conn, job, self.triggers, "disable").await
    }

    async fn write_table(
        &mut self,
        n: usize,
        t: &TableLoad,
        manifests: &Path,
    ) -> Result<Written, StoreError> {
        if t.strategy == Strategy::Insert {
            self.copy_table(t, manifests).await
        } else {
            self.merge_table(n, t, manifests).await
        }
    }

    async fn set_break_columns(
        &mut self,
        t: &TableLoad,
        keys: Option<&[Key]>,
    ) -> Result<(), StoreError> {
        super::pg_break::set_deferred(&mut self.conn, t, keys, load_error).await
    }

    async fn after_tables(&mut self, job: &StoreLoad) -> Result<(), StoreError> {
        user_triggers(&mut self.conn, job, self.triggers, "enable").await?;
        // setval is not transactional: a dry run leaves CERT's sequences as they were.
        if !job.dry_run {
            for t in &job.tables {
                advance_sequences(&mut self.conn, &t.table).await?;
            }
        }
        Ok(())
    }

    async fn count_keys(&mut self, table: &Table, keys: &[Key]) -> Result<u64, StoreError> {
        Ok(existing(&mut self.conn, table, keys).await?.len() as u64)
    }

    async fn before_deletes(&mut self, tables: &[&Table]) -> Result<Vec<String>, StoreError> {
        super::pg_fk_index::create(&mut self.conn, &self.store, tables).await
    }

    async fn after_deletes(&mut self, made: &[String]) -> Result<(), StoreError> {
        super::pg_fk_index::drop(&mut self.conn, &self.store, made).await
    }

    async fn null_break_columns(&mut self, t: &TableLoad, keys: &[Key]) -> Result<(), StoreError> {
        let sets: Vec<String> = t
            .deferred
            .iter()
            .map(|c| format!("{} = null", ident(c)))
            .collect();
        let head = format!(
            "update {} set {}",
            table_ident(&t.table.name),
            sets.join(", ")
        );
        delete_or_update(&mut self.conn, &t.table, &head, keys)
            .await
            .map(|_| ())
    }

    async fn delete_keys(&mut self, table: &Table, keys: &[Key]) -> Result<u64, StoreError> {
        let head = format!("delete from {}", table_ident(&table.name));
        delete_or_update(&mut self.conn, table, &head, keys).await
    }
}

/// CERT's user triggers on the loaded tables. With `Triggers::Disable` they are disabled (`verb`
/// "disable") and enabled again before commit ("enable"), inside the load's transaction, so an
/// aborted load leaves them as they were. With `Keep` they run, and the first call names them.
async fn user_triggers(
    conn: &mut PgConnection,
    job: &StoreLoad,
    triggers: Triggers,
    verb: &str,
) -> Result<(), StoreError> {
    let err = |e| StoreError::from_sqlx(&job.store, e);
    if triggers == Triggers::Keep {
        if verb == "disable" {
            let names: Vec<String> = job
                .tables
                .iter()
                .map(|t| table_ident(&t.table.name))
                .collect();
            let found: Vec<(String, String)> = sqlx::query_as(
                "select tgname::text, tgrelid::regclass::text from pg_trigger \
                 where not tgisinternal and tgenabled <> 'D' \
                 and tgrelid = any(select to_regclass(n) from unnest($1::text[]) n)",
            )
            .bind(&names)
            .fetch_all(&mut *conn)
            .await
            .map_err(err)?;
            for (trigger, table) in found {
                tracing::warn!(store = %job.store, %table, %trigger, "A CERT user trigger runs during the load; `triggers = \"disable\"` on the store turns it off; wf validate shows rows it changed");
            }
        }
        return Ok(());
    }
    for t in &job.tables {
        let sql = format!(
            "alter table {} {verb} trigger user",
            table_ident(&t.table.name)
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .map_err(|e| StoreError::Query {
                store: job.store.clone(),
                message: format!(
                    "cannot {verb} the user triggers of {} (triggers = \"disable\" needs ownership of the table): {e}",
                    t.table.name
                ),
            })?;
    }
    Ok(())
}

/// A table without a primary key is keyed by all its columns, NULLs included: rows equal in
/// every column (NULL matching NULL) are deleted. Values compare by their text form, as typed
/// values (json, xml, point have no equality operator; char(n) and inet render alike on both
/// sides); bytea, which the manifest holds as hex, compares as hex.
fn delete_rows_sql(table: &Table, cols: &[String]) -> Result<String, StoreError> {
    let mut arrays = Vec::new();
    let mut conds = Vec::new();
    for (i, c) in cols.iter().enumerate() {
        let t = col_type(table, c)?;
        if t == "bytea" {
            arrays.push(format!("${}::text[]", i + 1));
            conds.push(format!(
                "encode(t.{}, 'hex') is not distinct from k.k{i}",
                ident(c)
            ));
        } else {
            arrays.push(format!("${}::text[]::{t}[]", i + 1));
            conds.push(format!(
                "t.{}::text is not distinct from k.k{i}::text",
                ident(c)
            ));
        }
    }
    let names: Vec<String> = (0..cols.len()).map(|i| format!("k{i}")).collect();
    Ok(format!(
        "delete from {} t using (select * from unnest({})) k({}) where {}",
        table_ident(&table.name),
        arrays.join(", "),
        names.join(", "),
        conds.join(" and ")
    ))
}

/// The sequences behind `table`'s columns in CERT: serial and identity columns (owned sequences),
/// and defaults that call `nextval` on another sequence.
const SEQUENCES: &str = r#"select a.attname::text, coalesce(
    pg_get_serial_sequence($1, a.attname),
    substring(pg_get_expr(d.adbin, d.adrelid) from $re$^nextval\('(.+)'::regclass\)$$re$))
    from pg_class c join pg_attribute a on a.attrelid = c.oid
    left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
    where c.oid = to_regclass($1) and a.attnum > 0 and not a.attisdropped"#;

/// Advances every sequence of `table` past the largest value loaded, as pg_dump's setval does, so
/// the application under test can insert into CERT afterwards. A sequence already further on is
/// left alone.
async fn advance_sequences(conn: &mut PgConnection, table: &Table) -> Result<(), StoreError> {
    let err = |e| StoreError::from_sqlx(&table.store, e);
    let seqs: Vec<(String, Option<String>)> = sqlx::query_as(SEQUENCES)
        .bind(table_ident(&table.name))
        .fetch_all(&mut *conn)
        .await
        .map_err(err)?;
    for (col, seq) in seqs {
        let Some(seq) = seq else { continue };
        let sql = format!(
            "select setval($1::regclass, m) from (select max({})::bigint m from {}) x \
             where m is not null and m > coalesce(pg_sequence_last_value($1::regclass), 0)",
            ident(&col),
            table_ident(&table.name)
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&seq)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| StoreError::Query {
                store: table.store.clone(),
                message: format!("advancing sequence {seq} of {}.{col}: {e}", table.name),
            })?;
    }
    Ok(())
}

async fn delete_or_update(
    conn: &mut PgConnection,
    table: &Table,
    head: &str,
    keys: &[Key],
) -> Result<u64, StoreError> {
    let cols = key_columns(table);
    let sql = if table.primary_key.is_empty() && head.starts_with("delete") {
        delete_rows_sql(table, &cols)?
    } else {
        format!("{head} where {}", in_clause(table, &cols, 1)?)
    };
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for i in 0..cols.len() {
        q = q.bind(keys.iter().map(|k| k[i].clone()).collect::<Vec<_>>());
    }
    q.execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
        .map_err(|e| load_error(&table.store, &table.name, e))
}
