//! What a SQLite database holds, from its pragmas: tables, columns, primary keys, foreign keys,
//! unique indexes and row counts.

use crate::config::StoreKind;
use crate::error::StoreError;
use crate::schema::{Column, ForeignKey, StoreSchema, Table, Unique};
use sqlx::sqlite::SqlitePool;
use sqlx::Row;
use std::collections::BTreeMap;

/// The schema of store `store` (wf's own marker tables left out); row counts only when `counts`.
pub(super) async fn schema(
    pool: &SqlitePool,
    store: &str,
    counts: bool,
) -> Result<StoreSchema, StoreError> {
    let err = |e| StoreError::from_sqlx(store, e);
    let names: Vec<String> = sqlx::query_scalar(
        "select name from sqlite_master where type = 'table' and name not like 'sqlite_%' \
         and name not in ('wf_loads', 'wf_enrollment') order by name",
    )
    .fetch_all(pool)
    .await
    .map_err(err)?;
    let mut tables = Vec::new();
    for name in names {
        let (columns, primary_key) = columns(pool, store, &name).await?;
        let count: i64 = if counts {
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "select count(*) from {}",
                quote_ident(&name)
            )))
            .fetch_one(pool)
            .await
            .map_err(err)?
        } else {
            0
        };
        tables.push(Table {
            store: store.to_string(),
            columns,
            primary_key,
            uniques: uniques(pool, store, &name).await?,
            foreign_keys: foreign_keys(pool, store, &name).await?,
            row_count: count.max(0) as u64,
            name,
        });
    }
    Ok(StoreSchema {
        store: store.to_string(),
        kind: StoreKind::Sqlite,
        tables,
    })
}

/// The columns of `table` and its primary key, in key order.
async fn columns(
    pool: &SqlitePool,
    store: &str,
    table: &str,
) -> Result<(Vec<Column>, Vec<String>), StoreError> {
    let info = sqlx::query(sqlx::AssertSqlSafe(format!(
        "select name, type, \"notnull\", dflt_value, pk from pragma_table_info({})",
        sql_string(table)
    )))
    .fetch_all(pool)
    .await
    .map_err(|e| StoreError::from_sqlx(store, e))?;
    let mut columns = Vec::new();
    let mut pk: Vec<(i64, String)> = Vec::new();
    for r in info {
        let col: String = r.get(0);
        let pk_pos: i64 = r.get(4);
        if pk_pos > 0 {
            pk.push((pk_pos, col.clone()));
        }
        columns.push(Column {
            name: col,
            data_type: r.get::<String, _>(1).to_lowercase(),
            nullable: r.get::<i64, _>(2) == 0 && pk_pos == 0,
            default: r.get(3),
        });
    }
    pk.sort();
    Ok((columns, pk.into_iter().map(|(_, c)| c).collect()))
}

/// The foreign keys of `table`.
async fn foreign_keys(
    pool: &SqlitePool,
    store: &str,
    table: &str,
) -> Result<Vec<ForeignKey>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "select id, seq, \"table\", \"from\", \"to\" from pragma_foreign_key_list({}) order by id, seq",
        sql_string(table)
    )))
    .fetch_all(pool)
    .await
    .map_err(|e| StoreError::from_sqlx(store, e))?;
    let mut fks: BTreeMap<i64, ForeignKey> = BTreeMap::new();
    for r in rows {
        let id: i64 = r.get(0);
        let parent: String = r.get(2);
        let fk = fks.entry(id).or_insert_with(|| ForeignKey {
            name: format!("{table}_fk{id}"),
            columns: Vec::new(),
            ref_table: format!("{store}.{parent}"),
            ref_columns: Vec::new(),
            deferrable: false,
            is_virtual: false,
        });
        fk.columns.push(r.get(3));
        // A NULL `to` means the parent's primary key (single column assumed).
        fk.ref_columns
            .push(r.get::<Option<String>, _>(4).unwrap_or_else(|| "id".into()));
    }
    Ok(fks.into_values().collect())
}

/// The unique indexes of `table` other than its primary key.
async fn uniques(pool: &SqlitePool, store: &str, table: &str) -> Result<Vec<Unique>, StoreError> {
    let err = |e| StoreError::from_sqlx(store, e);
    let idx = sqlx::query(sqlx::AssertSqlSafe(format!(
        "select name, origin, \"partial\" from pragma_index_list({}) where \"unique\" = 1",
        sql_string(table)
    )))
    .fetch_all(pool)
    .await
    .map_err(err)?;
    let mut uniques = Vec::new();
    for r in idx {
        let idx_name: String = r.get(0);
        let origin: String = r.get(1);
        if origin == "pk" {
            continue;
        }
        let cols: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select name from pragma_index_info({}) order by seqno",
            sql_string(&idx_name)
        )))
        .fetch_all(pool)
        .await
        .map_err(err)?;
        uniques.push(Unique {
            name: idx_name,
            columns: cols,
            partial: r.get::<i64, _>(2) != 0,
        });
    }
    Ok(uniques)
}

/// An identifier quoted for SQLite.
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A SQL string literal.
fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
