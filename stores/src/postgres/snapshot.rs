//! A PostgreSQL read snapshot: one connection in `REPEATABLE READ READ ONLY`, so every query of a
//! subset and its extraction sees the same data. Keys are bound as `text[]` and cast to the column's
//! own type, so indexes are used.

use super::copy::copy_out;
use crate::error::StoreError;
use crate::keyset::Key;
use crate::schema::Table;
use crate::snapshot::{KeyParts, Sink, SnapshotReader};
use crate::staging::{StagedColumn, StagingWriter};
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};

/// One store's snapshot, held open until dropped.
pub struct PgSnapshot {
    store: String,
    conn: PoolConnection<Postgres>,
    /// `pg_current_snapshot()` when the snapshot was taken, journaled with the extract.
    pub snapshot_id: String,
}

pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A table as SQL names it: `"t"` for wf's `t` (schema `public`), `"s"."t"` for `s.t`.
pub(crate) fn table_ident(name: &str) -> String {
    match name.split_once('.') {
        Some((schema, table)) => format!("{}.{}", ident(schema), ident(table)),
        None => ident(name),
    }
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A PostgreSQL array literal of `values` (as text), for COPY queries that cannot take parameters.
fn array_literal<'a>(values: impl Iterator<Item = Option<&'a str>>) -> String {
    let mut s = String::from("{");
    for (i, v) in values.enumerate() {
        if i > 0 {
            s.push(',');
        }
        match v {
            None => s.push_str("NULL"),
            Some(v) => {
                s.push('"');
                for ch in v.chars() {
                    if ch == '"' || ch == '\\' {
                        s.push('\\');
                    }
                    s.push(ch);
                }
                s.push('"');
            }
        }
    }
    s.push('}');
    literal(&s)
}

pub(crate) fn col_type<'a>(table: &'a Table, col: &str) -> Result<&'a str, StoreError> {
    table
        .column(col)
        .map(|c| c.data_type.as_str())
        .ok_or_else(|| StoreError::Query {
            store: table.store.clone(),
            message: format!("table {} has no column {col}", table.name),
        })
}

/// Each column as the text COPY writes (its type's output function), so values read here compare
/// equal to staged ones. `::text` is that for most types, but not for `inet` (the cast adds the
/// netmask) nor `character(n)` (the cast trims the padding): those go through `format`.
fn select_list(table: &Table, cols: &[String]) -> String {
    cols.iter()
        .map(|c| {
            let t = table.column(c).map(|c| c.data_type.as_str()).unwrap_or("");
            if t == "inet" || t.starts_with("character(") || t == "character" {
                format!(
                    "case when {0} is null then null else format('%s', {0}) end",
                    ident(c)
                )
            } else {
                format!("{}::text", ident(c))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `(c1, c2) in (select * from unnest($1::text[]::t1[], …))`, or `c = any($1::text[]::t[])`.
pub(crate) fn in_clause(
    table: &Table,
    columns: &[String],
    first_param: usize,
) -> Result<String, StoreError> {
    if columns.len() == 1 {
        let t = col_type(table, &columns[0])?;
        return Ok(format!(
            "{} = any(${first_param}::text[]::{t}[])",
            ident(&columns[0])
        ));
    }
    let mut arrays = Vec::new();
    for (i, c) in columns.iter().enumerate() {
        arrays.push(format!(
            "${}::text[]::{}[]",
            first_param + i,
            col_type(table, c)?
        ));
    }
    let cols: Vec<String> = columns.iter().map(|c| ident(c)).collect();
    Ok(format!(
        "({}) in (select * from unnest({}))",
        cols.join(", "),
        arrays.join(", ")
    ))
}

pub use crate::snapshot::Selection;

/// Keys per `COPY` when extracting by key.
const COPY_KEYS: usize = 5000;

impl PgSnapshot {
    /// Runs `copy` (a `COPY … TO STDOUT` of `width` text columns) and calls `f` with each row's
    /// parts, without building a `Key` per row.
    async fn copy_parts(
        &mut self,
        copy: &str,
        width: usize,
        f: &mut KeyParts<'_>,
    ) -> Result<(), StoreError> {
        super::copy::copy_lines(&mut self.conn, &self.store, copy, |line| {
            if width == 1 {
                let one = super::copy::fields(line).next().flatten();
                return f(&[one.as_deref()]);
            }
            let parts: Vec<_> = super::copy::fields(line).collect();
            let view: Vec<Option<&[u8]>> = parts.iter().map(|p| p.as_deref()).collect();
            f(&view)
        })
        .await?;
        Ok(())
    }

    /// Takes a connection from `pool` and starts the read-only snapshot on it.
    pub async fn begin(store: &str, pool: &PgPool) -> Result<PgSnapshot, StoreError> {
        Self::open(store, pool, None).await
    }

    /// Takes a connection from `pool` and reads the moment another transaction exported
    /// (`pg_export_snapshot()`), while that transaction is still open.
    pub async fn attach(
        store: &str,
        pool: &PgPool,
        exported: &str,
    ) -> Result<PgSnapshot, StoreError> {
        Self::open(store, pool, Some(exported)).await
    }

    async fn open(
        store: &str,
        pool: &PgPool,
        exported: Option<&str>,
    ) -> Result<PgSnapshot, StoreError> {
        let err = |e| StoreError::from_sqlx(store, e);
        let mut conn = pool.acquire().await.map_err(err)?;
        // Closed (a Terminate message) when the snapshot is dropped, not handed back to a pool
        // that is dropped with it: a socket closed inside the read transaction is logged by the
        // server as "unexpected EOF on client connection with an open transaction", once per
        // snapshot, in PROD's log.
        conn.close_on_drop();
        sqlx::raw_sql("begin isolation level repeatable read read only")
            .execute(&mut *conn)
            .await
            .map_err(err)?;
        if let Some(id) = exported {
            let set = format!("set transaction snapshot {}", literal(id));
            sqlx::raw_sql(sqlx::AssertSqlSafe(set))
                .execute(&mut *conn)
                .await
                .map_err(err)?;
        }
        let snapshot_id: String = sqlx::query_scalar("select pg_current_snapshot()::text")
            .fetch_one(&mut *conn)
            .await
            .map_err(err)?;
        Ok(PgSnapshot {
            store: store.into(),
            conn,
            snapshot_id,
        })
    }

    /// Streams the rows of `select` (a query whose columns are text, see `select_list`) into
    /// `sink`, one at a time, through `COPY … TO STDOUT`: a line per row, not a message per row
    /// decoded through the driver (the plan streams a district's keys through here).
    async fn stream(&mut self, select: String, sink: &mut Sink<'_>) -> Result<(), StoreError> {
        let copy = format!("copy ({select}) to stdout");
        super::copy::copy_lines(&mut self.conn, &self.store, &copy, |line| {
            let row = super::copy::fields(line)
                .map(|f| f.map(|b| String::from_utf8_lossy(&b).into_owned()))
                .collect();
            sink(row)
        })
        .await?;
        Ok(())
    }

    /// Streams the selected rows of `table` (all its columns, in order) into `w`.
    pub async fn extract(
        &mut self,
        table: &Table,
        sel: Selection<'_>,
        cols: &[StagedColumn],
        w: &mut StagingWriter,
    ) -> Result<u64, StoreError> {
        let list: Vec<String> = table.columns.iter().map(|c| ident(&c.name)).collect();
        let base = format!(
            "select {} from {}",
            list.join(", "),
            table_ident(&table.name)
        );
        let mut statements = Vec::new();
        match sel {
            Selection::All => statements.push(base),
            Selection::Eq { column, value } => {
                let t = col_type(table, column)?;
                statements.push(format!(
                    "{base} where {} = {}::{t}",
                    ident(column),
                    literal(value)
                ));
            }
            Selection::Keys { columns, keys } => {
                statements.extend(by_keys(table, &base, columns, keys, None)?);
            }
            Selection::KeysSince {
                columns,
                keys,
                since,
            } => {
                statements.extend(by_keys(table, &base, columns, keys, Some(since))?);
            }
            Selection::EqSince {
                column,
                value,
                since,
                key_columns,
                except,
            } => {
                let mut s = format!(
                    "{base} where {} = {}::{}{}",
                    ident(column),
                    literal(value),
                    col_type(table, column)?,
                    changed_since(table, since)?
                );
                if !except.is_empty() {
                    s.push_str(&format!(
                        " and not {}",
                        in_list(table, key_columns, except)?
                    ));
                }
                statements.push(s);
            }
        }
        let mut rows = 0;
        for s in statements {
            let copy = format!("copy ({s}) to stdout");
            rows += copy_out(&mut self.conn, &self.store, &table.name, &copy, cols, w).await?;
        }
        Ok(rows)
    }
}

/// `base` (a select) restricted to `keys`, `COPY_KEYS` at a time, and to the rows changed
/// `since` (see `Since`) if given.
fn by_keys(
    table: &Table,
    base: &str,
    columns: &[String],
    keys: &[Key],
    since: Option<&crate::snapshot::Since>,
) -> Result<Vec<String>, StoreError> {
    let changed = match since {
        None => String::new(),
        Some(s) => changed_since(table, s)?,
    };
    let mut statements = Vec::new();
    for chunk in keys.chunks(COPY_KEYS) {
        statements.push(format!(
            "{base} where {}{changed}",
            in_list(table, columns, chunk)?
        ));
    }
    Ok(statements)
}

/// `(columns) in (…keys)` (`column = any(…)` for one column), the keys as typed array literals.
fn in_list(table: &Table, columns: &[String], keys: &[Key]) -> Result<String, StoreError> {
    if let [c] = columns {
        let arr = array_literal(keys.iter().map(|k| k[0].as_deref()));
        return Ok(format!(
            "{} = any({arr}::text[]::{}[])",
            ident(c),
            col_type(table, c)?
        ));
    }
    let mut arrays = Vec::new();
    for (i, c) in columns.iter().enumerate() {
        let arr = array_literal(keys.iter().map(|k| k[i].as_deref()));
        arrays.push(format!("{arr}::text[]::{}[]", col_type(table, c)?));
    }
    let cols: Vec<String> = columns.iter().map(|c| ident(c)).collect();
    Ok(format!(
        "({}) in (select * from unnest({}))",
        cols.join(", "),
        arrays.join(", ")
    ))
}

/// ` and <column> >= <the moment less the lag>`, in the column's own type.
fn changed_since(table: &Table, s: &crate::snapshot::Since) -> Result<String, StoreError> {
    Ok(format!(
        " and {} >= (to_timestamp({}::float8 / 1000000) - interval '{} seconds')::{}",
        ident(&s.column),
        s.at_us,
        s.lag_seconds,
        col_type(table, &s.column)?
    ))
}

#[async_trait::async_trait]
impl SnapshotReader for PgSnapshot {
    async fn rows_eq(
        &mut self,
        table: &Table,
        column: &str,
        value: &str,
        project: &[String],
        sink: &mut Sink<'_>,
    ) -> Result<(), StoreError> {
        let t = col_type(table, column)?;
        let sql = format!(
            "select {} from {} where {} = {}::text::{t}",
            select_list(table, project),
            table_ident(&table.name),
            ident(column),
            literal(value)
        );
        self.stream(sql, sink).await
    }

    async fn rows_in(
        &mut self,
        table: &Table,
        columns: &[String],
        keys: &[Key],
        project: &[String],
    ) -> Result<Vec<Key>, StoreError> {
        let sql = format!(
            "select {} from {} where {}",
            select_list(table, project),
            table_ident(&table.name),
            in_list(table, columns, keys)?
        );
        let mut out = Vec::new();
        let mut sink = |k: Key| {
            out.push(k);
            Ok(())
        };
        self.stream(sql, &mut sink).await?;
        Ok(out)
    }

    async fn rows_all(
        &mut self,
        table: &Table,
        project: &[String],
        sink: &mut Sink<'_>,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "select {} from {}",
            select_list(table, project),
            table_ident(&table.name)
        );
        self.stream(sql, sink).await
    }

    async fn has_rows(&mut self, table: &Table) -> Result<bool, StoreError> {
        let sql = format!(
            "select count(*) from (select 1 from {} limit 1) t",
            table_ident(&table.name)
        );
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut *self.conn)
            .await
            .map_err(|e| StoreError::from_sqlx(&self.store, e))?;
        Ok(n > 0)
    }

    async fn count_eq(
        &mut self,
        table: &Table,
        column: &str,
        value: &str,
    ) -> Result<u64, StoreError> {
        let t = col_type(table, column)?;
        let sql = format!(
            "select count(*) from {} where {} = $1::text::{t}",
            table_ident(&table.name),
            ident(column)
        );
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(value.to_string())
            .fetch_one(&mut *self.conn)
            .await
            .map_err(|e| StoreError::from_sqlx(&self.store, e))?;
        Ok(n.max(0) as u64)
    }
    async fn keys_eq(
        &mut self,
        table: &Table,
        column: &str,
        value: &str,
        key_cols: &[String],
        f: &mut KeyParts<'_>,
    ) -> Result<(), StoreError> {
        // COPY, not a row per message: the keys as the key files hold them (`select_list`).
        let sql = format!(
            "copy (select {} from {} where {} = {}::{}) to stdout",
            select_list(table, key_cols),
            table_ident(&table.name),
            ident(column),
            literal(value),
            col_type(table, column)?
        );
        self.copy_parts(&sql, key_cols.len(), f).await
    }
}

#[async_trait::async_trait]
impl crate::snapshot::Snapshot for PgSnapshot {
    fn snapshot_id(&self) -> Option<String> {
        Some(self.snapshot_id.clone())
    }
    async fn export(&mut self) -> Result<Option<String>, StoreError> {
        let id: String = sqlx::query_scalar("select pg_export_snapshot()")
            .fetch_one(&mut *self.conn)
            .await
            .map_err(|e| StoreError::from_sqlx(&self.store, e))?;
        Ok(Some(id))
    }
    async fn started_at_us(&mut self) -> Result<Option<i64>, StoreError> {
        let us: i64 = sqlx::query_scalar("select (extract(epoch from now()) * 1000000)::int8")
            .fetch_one(&mut *self.conn)
            .await
            .map_err(|e| StoreError::from_sqlx(&self.store, e))?;
        Ok(Some(us))
    }
    async fn estimated_rows(&mut self, table: &Table) -> Result<Option<u64>, StoreError> {
        // -1 until the table is first vacuumed or analyzed: no estimate.
        let n: Option<f32> =
            sqlx::query_scalar("select reltuples from pg_class where oid = to_regclass($1)")
                .bind(table_ident(&table.name))
                .fetch_optional(&mut *self.conn)
                .await
                .map_err(|e| StoreError::from_sqlx(&self.store, e))?;
        Ok(n.filter(|n| *n >= 0.0).map(|n| n as u64))
    }
    async fn keys_since(
        &mut self,
        table: &Table,
        since: &crate::snapshot::Since,
        key_cols: &[String],
        f: &mut KeyParts<'_>,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "copy (select {} from {} where true{}) to stdout",
            select_list(table, key_cols),
            table_ident(&table.name),
            changed_since(table, since)?
        );
        self.copy_parts(&sql, key_cols.len(), f).await
    }
    async fn extract(
        &mut self,
        table: &Table,
        sel: Selection<'_>,
        cols: &[StagedColumn],
        w: &mut StagingWriter,
    ) -> Result<u64, StoreError> {
        PgSnapshot::extract(self, table, sel, cols, w).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn array_literals_quote_everything_that_needs_it() {
        let lit = super::array_literal(
            [Some("a"), None, Some("b\"c"), Some("d\\e"), Some("it's")].into_iter(),
        );
        assert_eq!(lit, r#"'{"a",NULL,"b\"c","d\\e","it''s"}'"#);
    }
}
