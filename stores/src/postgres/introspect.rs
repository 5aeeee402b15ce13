//! PostgreSQL discovery from `pg_catalog`: tables of schema `public`, columns, keys, FKs, counts.

use crate::config::StoreKind;
use crate::error::StoreError;
use crate::schema::{Column, ForeignKey, StoreSchema, Table, Unique};
use sqlx::{PgPool, Row};
use std::collections::HashMap;

const TABLES: &str = "select c.oid::int8, c.relname from pg_class c \
    join pg_namespace n on n.oid = c.relnamespace \
    where n.nspname = 'public' and c.relkind in ('r', 'p') and c.relname not in ('wf_loads', 'wf_enrollment') order by c.relname";

const COLUMNS: &str = "select a.attnum::int4, a.attname, format_type(a.atttypid, a.atttypmod), \
    a.attnotnull, pg_get_expr(d.adbin, d.adrelid) \
    from pg_attribute a left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum \
    where a.attrelid = $1::int8::oid and a.attnum > 0 and not a.attisdropped order by a.attnum";

const CONSTRAINTS: &str = "select c.conname, c.contype::text, c.conkey::int4[], \
    coalesce(c.confrelid::regclass::text, ''), coalesce(c.confkey::int4[], '{}'), c.condeferrable \
    from pg_constraint c where c.conrelid = $1::int8::oid and c.contype in ('p', 'u', 'f') order by c.conname";

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Discovers every table of schema `public` in `pool`.
pub async fn introspect(store: &str, pool: &PgPool) -> Result<StoreSchema, StoreError> {
    let err = |e| StoreError::from_sqlx(store, e);
    let mut tables = Vec::new();
    let rows = sqlx::query(TABLES).fetch_all(pool).await.map_err(err)?;
    // Referenced tables by oid name, to read attnums of referenced columns.
    let mut attnames: HashMap<String, HashMap<i32, String>> = HashMap::new();
    let mut raw = Vec::new();
    for r in rows {
        let oid: i64 = r.get(0);
        let name: String = r.get(1);
        let cols = sqlx::query(COLUMNS)
            .bind(oid)
            .fetch_all(pool)
            .await
            .map_err(err)?;
        let mut columns = Vec::new();
        let mut by_num = HashMap::new();
        for c in cols {
            let num: i32 = c.get(0);
            let col = Column {
                name: c.get(1),
                data_type: c.get(2),
                nullable: !c.get::<bool, _>(3),
                default: c.get(4),
            };
            by_num.insert(num, col.name.clone());
            columns.push(col);
        }
        attnames.insert(name.clone(), by_num);
        let cons = sqlx::query(CONSTRAINTS)
            .bind(oid)
            .fetch_all(pool)
            .await
            .map_err(err)?;
        let count_sql = format!("select count(*) from {}", quote_ident(&name));
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count_sql))
            .fetch_one(pool)
            .await
            .map_err(err)?;
        raw.push((name, columns, cons, count));
    }
    for (name, columns, cons, count) in raw {
        let names = |nums: &[i32], table: &str| -> Vec<String> {
            let map = attnames.get(table.trim_matches('"'));
            nums.iter()
                .map(|n| {
                    map.and_then(|m| m.get(n).cloned())
                        .unwrap_or_else(|| format!("#{n}"))
                })
                .collect()
        };
        let mut t = Table {
            store: store.into(),
            name: name.clone(),
            columns,
            primary_key: Vec::new(),
            uniques: Vec::new(),
            foreign_keys: Vec::new(),
            row_count: count.max(0) as u64,
        };
        for c in cons {
            let conname: String = c.get(0);
            let kind: String = c.get(1);
            let key: Vec<i32> = c.get(2);
            let cols = names(&key, &name);
            match kind.as_str() {
                "p" => t.primary_key = cols,
                "u" => t.uniques.push(Unique {
                    name: conname,
                    columns: cols,
                }),
                _ => {
                    let ref_table: String = c.get(3);
                    let ref_key: Vec<i32> = c.get(4);
                    let ref_name = ref_table.trim_matches('"').to_string();
                    t.foreign_keys.push(ForeignKey {
                        name: conname,
                        columns: cols,
                        ref_columns: names(&ref_key, &ref_name),
                        ref_table: format!("{store}.{ref_name}"),
                        deferrable: c.get(5),
                        is_virtual: false,
                    });
                }
            }
        }
        tables.push(t);
    }
    Ok(StoreSchema {
        store: store.into(),
        kind: StoreKind::Postgres,
        tables,
    })
}
