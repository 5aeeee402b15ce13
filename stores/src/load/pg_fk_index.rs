//! Rollback on PostgreSQL: when a parent row is deleted, PostgreSQL checks every foreign key that
//! points at it by querying the referencing table. Where the referencing columns have no index
//! (common: PostgreSQL does not make one, and wf's own seed schema has none either) each check
//! scans the child table, dead rows included, and the rows a rollback has just deleted from the
//! child are still there as dead tuples: deleting N parents costs N scans, about 1 s per 1,000
//! guardians in a real district. So before deleting, the rollback creates a plain index on each
//! such referencing column list, inside its transaction, and drops it before commit: CERT's schema
//! is the same afterwards, and a rollback that fails leaves no index behind either.

use crate::error::StoreError;
use crate::postgres::snapshot::{ident, table_ident};
use crate::schema::Table;
use sqlx::PgConnection;

/// Foreign keys pointing at any of `$1` (regclass texts) whose referencing columns lead no index:
/// (child schema, child as regclass text, columns in key order).
const UNINDEXED: &str = r#"select n.nspname::text, c.conrelid::regclass::text,
    array_agg(a.attname::text order by k.ord)
  from pg_constraint c
  join pg_class r on r.oid = c.conrelid
  join pg_namespace n on n.oid = r.relnamespace
  cross join lateral unnest(c.conkey) with ordinality k(attnum, ord)
  join pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.attnum
  where c.contype = 'f'
    and c.confrelid = any(select to_regclass(t) from unnest($1::text[]) t)
    and not exists (select 1 from pg_index i where i.indrelid = c.conrelid
      and (select array_agg(x order by x) from unnest((i.indkey::int2[])[0:cardinality(c.conkey) - 1]) x)
        = (select array_agg(x order by x) from unnest(c.conkey) x))
  group by c.oid, n.nspname, c.conrelid"#;

/// Creates the lookup indexes the rollback of `tables` needs; the qualified names made. An index
/// that cannot be made (the CERT user does not own the child table) is skipped with a warning:
/// the rollback is then slower, not wrong.
pub(super) async fn create(
    conn: &mut PgConnection,
    store: &str,
    tables: &[&Table],
) -> Result<Vec<String>, StoreError> {
    let names: Vec<String> = tables.iter().map(|t| table_ident(&t.name)).collect();
    let found: Vec<(String, String, Vec<String>)> = sqlx::query_as(UNINDEXED)
        .bind(&names)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| StoreError::from_sqlx(store, e))?;
    let mut made = Vec::new();
    for (i, (schema, child, cols)) in found.iter().enumerate() {
        let name = format!("wf_rollback_fk_{}_{i}", std::process::id());
        let on: Vec<String> = cols.iter().map(|c| ident(c)).collect();
        let sql = format!(
            "create index {} on {child} ({})",
            ident(&name),
            on.join(", ")
        );
        match in_savepoint(conn, &sql).await {
            Ok(()) => made.push(format!("{}.{}", ident(schema), ident(&name))),
            Err(e) => tracing::warn!(
                store, %child, columns = %cols.join(", "),
                "no index on the columns of a foreign key, and wf cannot make one for the rollback ({e}): each deleted parent row scans {child}; an index on {child} ({}) makes rollbacks fast",
                cols.join(", ")
            ),
        }
    }
    Ok(made)
}

/// Drops the indexes `create` made (still inside the rollback's transaction).
pub(super) async fn drop(
    conn: &mut PgConnection,
    store: &str,
    made: &[String],
) -> Result<(), StoreError> {
    for name in made {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("drop index {name}")))
            .execute(&mut *conn)
            .await
            .map_err(|e| StoreError::from_sqlx(store, e))?;
    }
    Ok(())
}

/// Runs `sql` so that its failure does not abort the enclosing transaction.
async fn in_savepoint(conn: &mut PgConnection, sql: &str) -> Result<(), sqlx::Error> {
    sqlx::raw_sql("savepoint wf_fk_index")
        .execute(&mut *conn)
        .await?;
    match sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut *conn)
        .await
    {
        Ok(_) => {
            sqlx::raw_sql("release savepoint wf_fk_index")
                .execute(&mut *conn)
                .await?;
            Ok(())
        }
        Err(e) => {
            sqlx::raw_sql("rollback to savepoint wf_fk_index")
                .execute(&mut *conn)
                .await?;
            Err(e)
        }
    }
}
