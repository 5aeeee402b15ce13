//! Cycle break columns on PostgreSQL: loaded NULL with their rows, then set to their staged
//! values once every table of the cycle is in, by one UPDATE per staged batch.

use super::keys::{batches, key_of, key_positions};
use super::TableLoad;
use crate::error::StoreError;
use crate::postgres::snapshot::{col_type, ident, table_ident};
use crate::schema::Table;
use crate::subset::{key_columns, Key};
use sqlx::PgConnection;
use std::collections::HashSet;

/// Sets the deferred (cycle break) columns of the rows with `keys` to their staged values: one
/// UPDATE per staged batch, its values and keys as arrays (`deferred_sql`); `load_error` names
/// the table in a database error.
pub(super) async fn set_deferred(
    conn: &mut PgConnection,
    t: &TableLoad,
    keys: Option<&[Key]>,
    load_error: fn(&str, &str, sqlx::Error) -> StoreError,
) -> Result<(), StoreError> {
    let table = &t.table;
    let wanted: Option<HashSet<&Key>> = keys.map(|k| k.iter().collect());
    let key_cols = key_columns(table);
    let sql = deferred_sql(table, &t.deferred, &key_cols)?;
    for b in batches(&t.file)? {
        let key_idx = key_positions(table, &b.schema())?;
        // Every break column must be staged: the arrays are matched to the SQL by position.
        let def_idx: Vec<usize> = t
            .deferred
            .iter()
            .map(|c| {
                b.schema().index_of(c).map_err(|_| StoreError::Staging {
                    path: t.file.clone(),
                    message: format!(
                        "{}: the staged file has no column {c}, a cycle break column, so the staging does not match the load's plan; start a new run",
                        table.name
                    ),
                })
            })
            .collect::<Result<_, _>>()?;
        // One array per deferred column, then one per key column.
        let mut cols: Vec<Vec<Option<String>>> =
            vec![Vec::new(); t.deferred.len() + key_cols.len()];
        let mut rows = 0usize;
        for r in 0..b.num_rows() {
            let key = key_of(&b, &key_idx, r);
            let vals = key_of(&b, &def_idx, r);
            if wanted.as_ref().is_some_and(|w| !w.contains(&key))
                || vals.iter().all(Option::is_none)
            {
                continue;
            }
            for (c, v) in cols.iter_mut().zip(vals.into_iter().chain(key)) {
                c.push(v);
            }
            rows += 1;
        }
        if rows == 0 {
            continue;
        }
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
        for c in cols {
            q = q.bind(c);
        }
        q.execute(&mut *conn)
            .await
            .map_err(|e| load_error(&table.store, &table.name, e))?;
    }
    Ok(())
}

/// `update <table> as t set <deferred> = v.… from unnest($1::text[], …) as v(…) where <key> = v.…`:
/// the deferred columns' values then the key columns, as text arrays cast to the columns' types.
fn deferred_sql(
    table: &Table,
    deferred: &[String],
    key_cols: &[String],
) -> Result<String, StoreError> {
    let n = deferred.len() + key_cols.len();
    let sets: Vec<String> = deferred
        .iter()
        .enumerate()
        .map(|(i, c)| Ok(format!("{} = v.wf_v{i}::{}", ident(c), col_type(table, c)?)))
        .collect::<Result<_, StoreError>>()?;
    let wheres: Vec<String> = key_cols
        .iter()
        .enumerate()
        .map(|(j, c)| {
            let i = deferred.len() + j;
            Ok(format!(
                "t.{} = v.wf_v{i}::{}",
                ident(c),
                col_type(table, c)?
            ))
        })
        .collect::<Result<_, StoreError>>()?;
    let arrays: Vec<String> = (1..=n).map(|i| format!("${i}::text[]")).collect();
    let names: Vec<String> = (0..n).map(|i| format!("wf_v{i}")).collect();
    Ok(format!(
        "update {} as t set {} from unnest({}) as v({}) where {}",
        table_ident(&table.name),
        sets.join(", "),
        arrays.join(", "),
        names.join(", "),
        wheres.join(" and ")
    ))
}
