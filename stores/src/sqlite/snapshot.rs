//! A SQLite read snapshot: one connection inside a transaction (the first read fixes its view).

use crate::error::StoreError;
use crate::keyset::Key;
use crate::schema::Table;
use crate::snapshot::{Sink, SnapshotReader};
use crate::staging::{StagingWriter, Value};
use futures_util::TryStreamExt;
use sqlx::pool::PoolConnection;
use sqlx::{Row, Sqlite, SqlitePool, TypeInfo, ValueRef};

pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// One store's snapshot, held open until dropped.
pub struct SqliteSnapshot {
    store: String,
    conn: PoolConnection<Sqlite>,
}

fn select_list(cols: &[String]) -> String {
    cols.iter()
        .map(|c| format!("cast({} as text)", ident(c)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `c in (?, …)` or `(c1, c2) in (values (?, ?), …)` for `n` keys.
fn in_clause(columns: &[String], n: usize) -> String {
    if columns.len() == 1 {
        return format!("{} in ({})", ident(&columns[0]), vec!["?"; n].join(", "));
    }
    let row = format!("({})", vec!["?"; columns.len()].join(", "));
    let cols: Vec<String> = columns.iter().map(|c| ident(c)).collect();
    format!(
        "({}) in (values {})",
        cols.join(", "),
        vec![row; n].join(", ")
    )
}

/// How a table's rows are chosen for extraction.
pub use crate::snapshot::Selection;

impl SqliteSnapshot {
    pub async fn begin(store: &str, pool: &SqlitePool) -> Result<SqliteSnapshot, StoreError> {
        let err = |e| StoreError::from_sqlx(store, e);
        let mut conn = pool.acquire().await.map_err(err)?;
        sqlx::raw_sql("begin")
            .execute(&mut *conn)
            .await
            .map_err(err)?;
        Ok(SqliteSnapshot {
            store: store.into(),
            conn,
        })
    }

    async fn rows(
        &mut self,
        sql: String,
        binds: Vec<Option<String>>,
        width: usize,
    ) -> Result<Vec<Key>, StoreError> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for b in binds {
            q = q.bind(b);
        }
        let rows = q
            .fetch_all(&mut *self.conn)
            .await
            .map_err(|e| StoreError::from_sqlx(&self.store, e))?;
        Ok(rows
            .iter()
            .map(|r| (0..width).map(|i| r.get::<Option<String>, _>(i)).collect())
            .collect())
    }

    /// Streams the rows of `sql` (binding `value` if given) into `sink`, one at a time.
    async fn stream(
        &mut self,
        sql: String,
        value: Option<&str>,
        width: usize,
        sink: &mut Sink<'_>,
    ) -> Result<(), StoreError> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(v) = value {
            q = q.bind(v.to_string());
        }
        let mut rows = q.fetch(&mut *self.conn);
        while let Some(r) = rows
            .try_next()
            .await
            .map_err(|e| StoreError::from_sqlx(&self.store, e))?
        {
            sink((0..width).map(|i| r.get::<Option<String>, _>(i)).collect())?;
        }
        Ok(())
    }

    /// Streams the selected rows of `table` (all columns, in order) into `w`.
    pub async fn extract(
        &mut self,
        table: &Table,
        sel: Selection<'_>,
        w: &mut StagingWriter,
    ) -> Result<u64, StoreError> {
        let list: Vec<String> = table.columns.iter().map(|c| ident(&c.name)).collect();
        let base = format!("select {} from {}", list.join(", "), ident(&table.name));
        let mut queries: Vec<(String, Vec<Option<String>>)> = Vec::new();
        match sel {
            Selection::All => queries.push((base, Vec::new())),
            Selection::Eq { column, value } => queries.push((
                format!("{base} where {} = ?", ident(column)),
                vec![Some(value.to_string())],
            )),
            Selection::Keys { columns, keys } => {
                for chunk in keys.chunks(crate::subset::KEY_BATCH) {
                    let binds = chunk.iter().flat_map(|k| k.iter().cloned()).collect();
                    queries.push((
                        format!("{base} where {}", in_clause(columns, chunk.len())),
                        binds,
                    ));
                }
            }
            Selection::KeysSince { .. } | Selection::EqSince { .. } => {
                return Err(StoreError::Query {
                    store: self.store.clone(),
                    message: format!(
                        "{}: change tracking is supported on PostgreSQL stores only",
                        table.name
                    ),
                })
            }
        }
        let mut n = 0;
        for (sql, binds) in queries {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for b in binds {
                q = q.bind(b);
            }
            let mut stream = q.fetch(&mut *self.conn);
            while let Some(row) = stream
                .try_next()
                .await
                .map_err(|e| StoreError::from_sqlx(&self.store, e))?
            {
                for i in 0..table.columns.len() {
                    push_value(w, &row, i, &self.store, &table.name)?;
                }
                w.end_row()?;
                n += 1;
            }
        }
        Ok(n)
    }
}

fn push_value(
    w: &mut StagingWriter,
    row: &sqlx::sqlite::SqliteRow,
    i: usize,
    store: &str,
    table: &str,
) -> Result<(), StoreError> {
    let err = |e: sqlx::Error| StoreError::Query {
        store: store.into(),
        message: format!("table {table}: {e}"),
    };
    let raw = row.try_get_raw(i).map_err(err)?;
    if raw.is_null() {
        return w.push(i, Value::Null);
    }
    let class = raw.type_info().name().to_string();
    match class.as_str() {
        "INTEGER" => w.push(i, Value::Int(row.try_get::<i64, _>(i).map_err(err)?)),
        "REAL" => w.push(i, Value::Float(row.try_get::<f64, _>(i).map_err(err)?)),
        "BLOB" => {
            let b: Vec<u8> = row.try_get(i).map_err(err)?;
            w.push(i, Value::Bytes(&b))
        }
        _ => {
            let s: String = row.try_get(i).map_err(err)?;
            w.push(i, Value::Text(&s))
        }
    }
}

#[async_trait::async_trait]
impl SnapshotReader for SqliteSnapshot {
    async fn rows_eq(
        &mut self,
        table: &Table,
        column: &str,
        value: &str,
        project: &[String],
        sink: &mut Sink<'_>,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "select {} from {} where {} = ?",
            select_list(project),
            ident(&table.name),
            ident(column)
        );
        self.stream(sql, Some(value), project.len(), sink).await
    }

    async fn rows_in(
        &mut self,
        table: &Table,
        columns: &[String],
        keys: &[Key],
        project: &[String],
    ) -> Result<Vec<Key>, StoreError> {
        // At most KEY_BATCH keys a statement: SQLite caps the bound variables.
        let mut out = Vec::new();
        for chunk in keys.chunks(crate::subset::KEY_BATCH) {
            let sql = format!(
                "select {} from {} where {}",
                select_list(project),
                ident(&table.name),
                in_clause(columns, chunk.len())
            );
            let binds = chunk.iter().flat_map(|k| k.iter().cloned()).collect();
            out.extend(self.rows(sql, binds, project.len()).await?);
        }
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
            select_list(project),
            ident(&table.name)
        );
        self.stream(sql, None, project.len(), sink).await
    }

    async fn has_rows(&mut self, table: &Table) -> Result<bool, StoreError> {
        let sql = format!(
            "select count(*) from (select 1 from {} limit 1) t",
            ident(&table.name)
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
        let sql = format!(
            "select count(*) from {} where {} = ?",
            ident(&table.name),
            ident(column)
        );
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(value.to_string())
            .fetch_one(&mut *self.conn)
            .await
            .map_err(|e| StoreError::from_sqlx(&self.store, e))?;
        Ok(n.max(0) as u64)
    }
}

#[async_trait::async_trait]
impl crate::snapshot::Snapshot for SqliteSnapshot {
    fn snapshot_id(&self) -> Option<String> {
        None
    }
    /// SQLite values carry their own storage class: the staged columns are not needed to read them.
    async fn extract(
        &mut self,
        table: &Table,
        sel: Selection<'_>,
        _cols: &[crate::staging::StagedColumn],
        w: &mut StagingWriter,
    ) -> Result<u64, StoreError> {
        SqliteSnapshot::extract(self, table, sel, w).await
    }
}
