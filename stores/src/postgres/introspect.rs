//! PostgreSQL discovery from `pg_catalog`: tables of every user schema, columns, keys, FKs, counts.
//! A table of schema `public` is named by its name (`students`), any other as `schema.table`
//! (`Sales.Orders`), which is how configuration files and reports spell it.
//!
//! Real schemas, not only wf's own: a partitioned table and its partitions are one table (the
//! parent; rows are read, counted and loaded through it, and FKs declared only on partitions count
//! as the parent's); unique indexes count as unique constraints (partial ones marked); generated
//! columns are not carried (CERT computes them), so they are left out of the columns.

use crate::config::StoreKind;
use crate::error::StoreError;
use crate::schema::{Column, ForeignKey, StoreSchema, Table, Unique};
use sqlx::{PgPool, Row};

const TABLES: &str = "select c.oid::int8, n.nspname::text, c.relname::text from pg_class c \
    join pg_namespace n on n.oid = c.relnamespace \
    where n.nspname <> 'information_schema' and n.nspname not like 'pg\\_%' \
    and c.relkind in ('r', 'p') and not c.relispartition \
    and not (n.nspname = 'public' and c.relname in ('wf_loads', 'wf_enrollment')) \
    order by n.nspname <> 'public', n.nspname, c.relname";

const COLUMNS: &str = "select a.attname, format_type(a.atttypid, a.atttypmod), \
    a.attnotnull, pg_get_expr(d.adbin, d.adrelid) \
    from pg_attribute a left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum \
    where a.attrelid = $1::int8::oid and a.attnum > 0 and not a.attisdropped \
    and a.attgenerated = '' order by a.attnum";

/// Constraints of the table and of every partition below it, columns by name (partitions may
/// number their columns differently); referenced partitions are named by their root.
const CONSTRAINTS: &str = "select c.conname, c.contype::text, \
    array(select a.attname::text from unnest(c.conkey) with ordinality k(n, o) \
      join pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.n order by k.o), \
    coalesce((select case when rn.nspname = 'public' then r.relname::text \
        else rn.nspname || '.' || r.relname end \
      from pg_class r join pg_namespace rn on rn.oid = r.relnamespace \
      where r.oid = coalesce(pg_partition_root(c.confrelid), c.confrelid)), ''), \
    array(select a.attname::text from unnest(coalesce(c.confkey, '{}')) with ordinality k(n, o) \
      join pg_attribute a on a.attrelid = c.confrelid and a.attnum = k.n order by k.o), \
    c.condeferrable, c.conrelid = $1::int8::oid \
    from pg_constraint c \
    where (c.conrelid = $1::int8::oid \
      or c.conrelid in (select relid from pg_partition_tree($1::int8::oid::regclass))) \
    and c.contype in ('p', 'u', 'f') order by c.conrelid <> $1::int8::oid, c.conname";

/// Unique indexes that back no constraint (expression indexes left out: no columns to name).
const UNIQUE_INDEXES: &str = "select i.relname::text, \
    array(select a.attname::text from unnest(x.indkey::int2[]) with ordinality k(n, o) \
      join pg_attribute a on a.attrelid = x.indrelid and a.attnum = k.n order by k.o), \
    x.indpred is not null \
    from pg_index x join pg_class i on i.oid = x.indexrelid \
    where x.indrelid = $1::int8::oid and x.indisunique and not x.indisprimary \
    and x.indexprs is null \
    and not exists (select 1 from pg_constraint c where c.conindid = x.indexrelid) \
    order by i.relname";

/// wf's name of table `rel` in schema `nsp`; a dot inside either would make it ambiguous.
fn table_name(store: &str, nsp: &str, rel: &str) -> Result<String, StoreError> {
    if nsp.contains('.') || rel.contains('.') {
        return Err(StoreError::Query {
            store: store.into(),
            message: format!(
                "table \"{nsp}\".\"{rel}\" has a dot in its schema or table name, which wf's \
                 `store.schema.table` names cannot spell; rename it to carry this database"
            ),
        });
    }
    Ok(if nsp == "public" {
        rel.to_string()
    } else {
        format!("{nsp}.{rel}")
    })
}

/// Discovers every table of every user schema in `pool`; row counts only when `counts`.
pub async fn introspect(
    store: &str,
    pool: &PgPool,
    counts: bool,
) -> Result<StoreSchema, StoreError> {
    let err = |e| StoreError::from_sqlx(store, e);
    let mut tables = Vec::new();
    let rows = sqlx::query(TABLES).fetch_all(pool).await.map_err(err)?;
    for r in rows {
        let oid: i64 = r.get(0);
        let name = table_name(store, r.get(1), r.get(2))?;
        let columns = sqlx::query(COLUMNS)
            .bind(oid)
            .fetch_all(pool)
            .await
            .map_err(err)?
            .iter()
            .map(|c| Column {
                name: c.get(0),
                data_type: c.get(1),
                nullable: !c.get::<bool, _>(2),
                default: c.get(3),
            })
            .collect();
        let count: i64 = if counts {
            let count_sql = format!(
                "select count(*) from {}",
                crate::postgres::snapshot::table_ident(&name)
            );
            sqlx::query_scalar(sqlx::AssertSqlSafe(count_sql))
                .fetch_one(pool)
                .await
                .map_err(err)?
        } else {
            0
        };
        let mut t = Table {
            store: store.into(),
            name,
            columns,
            primary_key: Vec::new(),
            uniques: Vec::new(),
            foreign_keys: Vec::new(),
            row_count: count.max(0) as u64,
        };
        keys(store, pool, oid, &mut t).await?;
        tables.push(t);
    }
    Ok(StoreSchema {
        store: store.into(),
        kind: StoreKind::Postgres,
        tables,
    })
}

/// The primary key, unique constraints and indexes, and foreign keys of `t` (oid `oid`).
async fn keys(store: &str, pool: &PgPool, oid: i64, t: &mut Table) -> Result<(), StoreError> {
    let err = |e| StoreError::from_sqlx(store, e);
    let cons = sqlx::query(CONSTRAINTS)
        .bind(oid)
        .fetch_all(pool)
        .await
        .map_err(err)?;
    for c in cons {
        let conname: String = c.get(0);
        let kind: String = c.get(1);
        let cols: Vec<String> = c.get(2);
        let own: bool = c.get(6);
        match kind.as_str() {
            "p" if own => t.primary_key = cols,
            "u" if own => t.uniques.push(Unique {
                name: conname,
                columns: cols,
                partial: false,
            }),
            "f" => {
                let ref_name: String = c.get(3);
                let fk = ForeignKey {
                    name: conname,
                    columns: cols,
                    ref_columns: c.get(4),
                    ref_table: format!("{store}.{ref_name}"),
                    deferrable: c.get(5),
                    is_virtual: false,
                };
                // A partitioned table's FK is cloned onto every partition; FKs declared only on
                // partitions count once, as the parent's.
                let known = t.foreign_keys.iter().any(|f| {
                    f.columns == fk.columns
                        && f.ref_table == fk.ref_table
                        && f.ref_columns == fk.ref_columns
                });
                if !known {
                    t.foreign_keys.push(fk);
                }
            }
            _ => {}
        }
    }
    for i in sqlx::query(UNIQUE_INDEXES)
        .bind(oid)
        .fetch_all(pool)
        .await
        .map_err(err)?
    {
        t.uniques.push(Unique {
            name: i.get(0),
            columns: i.get(1),
            partial: i.get(2),
        });
    }
    Ok(())
}
