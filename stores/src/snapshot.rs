//! A read snapshot of one relational store, whichever engine it runs on: the subset's key lookups
//! (`SnapshotReader`) plus streaming a table's chosen rows into staging. Each backend's
//! `RelationalStore::snapshot` opens one; callers hold it as `Snap` and never ask which engine.

use crate::error::StoreError;
use crate::keyset::Key;
use crate::schema::Table;
use crate::staging::{StagedColumn, StagingWriter};

/// Where streamed rows go.
pub type Sink<'a> = dyn FnMut(Key) -> Result<(), StoreError> + Send + 'a;

/// Takes one row's chosen columns as their text bytes (`None`: NULL).
pub type KeyParts<'a> = dyn FnMut(&[Option<&[u8]>]) -> Result<(), StoreError> + Send + 'a;

/// Reads one store inside one read-only snapshot.
#[async_trait::async_trait]
pub trait SnapshotReader: Send {
    /// Streams `project` of the rows of `table` whose `column` equals `value` into `sink`.
    async fn rows_eq(
        &mut self,
        table: &Table,
        column: &str,
        value: &str,
        project: &[String],
        sink: &mut Sink<'_>,
    ) -> Result<(), StoreError>;
    /// `project` of the rows of `table` whose `columns` equal one of `keys` (any number: an
    /// engine that binds fewer at once splits them).
    async fn rows_in(
        &mut self,
        table: &Table,
        columns: &[String],
        keys: &[Key],
        project: &[String],
    ) -> Result<Vec<Key>, StoreError>;
    /// Streams `project` of every row of `table` into `sink`.
    async fn rows_all(
        &mut self,
        table: &Table,
        project: &[String],
        sink: &mut Sink<'_>,
    ) -> Result<(), StoreError>;
    /// Calls `f` with `key_cols` (as text, `None` for NULL) of every row of `table` whose `column`
    /// holds `value`, without building a `Key` per row: for a table of millions of rows.
    async fn keys_eq(
        &mut self,
        table: &Table,
        column: &str,
        value: &str,
        key_cols: &[String],
        f: &mut KeyParts<'_>,
    ) -> Result<(), StoreError> {
        let mut each = |k: Key| {
            let parts: Vec<Option<&[u8]>> =
                k.iter().map(|p| p.as_deref().map(str::as_bytes)).collect();
            f(&parts)
        };
        self.rows_eq(table, column, value, key_cols, &mut each)
            .await
    }
    /// Whether `table` has any row (validation skips key lookups in an empty CERT table).
    async fn has_rows(&mut self, table: &Table) -> Result<bool, StoreError>;
    /// How many rows of `table` have `column` equal to `value`.
    async fn count_eq(
        &mut self,
        table: &Table,
        column: &str,
        value: &str,
    ) -> Result<u64, StoreError>;
}

/// How a table's rows are chosen for extraction.
pub enum Selection<'a> {
    All,
    Eq {
        column: &'a str,
        value: &'a str,
    },
    Keys {
        columns: &'a [String],
        keys: &'a [Key],
    },
    /// The rows whose `column` holds `value` and whose change column says they changed since a
    /// moment, except the rows whose key (`key_columns`) is in `except`.
    EqSince {
        column: &'a str,
        value: &'a str,
        since: &'a Since,
        key_columns: &'a [String],
        except: &'a [Key],
    },
    /// The rows of `keys` whose change column says they changed since a moment.
    KeysSince {
        columns: &'a [String],
        keys: &'a [Key],
        since: &'a Since,
    },
}

/// Rows changed since a moment: `column` (a timestamp or date) at or after `at_us` (microseconds
/// since 1970, the server's clock) less `lag_seconds`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    pub column: String,
    pub at_us: i64,
    pub lag_seconds: u64,
}

/// One store read inside one transaction, so no store is ever read from two points in time.
#[async_trait::async_trait]
pub trait Snapshot: SnapshotReader {
    /// The engine's name for the snapshot (PostgreSQL's `pg_current_snapshot()`), journaled with
    /// the extract; `None` where the engine has none to give.
    fn snapshot_id(&self) -> Option<String>;
    /// Publishes this snapshot so other connections can read the same moment while this one stays
    /// open (PostgreSQL's `pg_export_snapshot()`); `None` where the engine cannot.
    async fn export(&mut self) -> Result<Option<String>, StoreError> {
        Ok(None)
    }
    /// When the snapshot's transaction began, by the server's clock (microseconds since 1970):
    /// every change it does not see was stamped after it (less its lag). `None` where the engine
    /// has no clock to give.
    async fn started_at_us(&mut self) -> Result<Option<i64>, StoreError> {
        Ok(None)
    }
    /// The engine's estimate of `table`'s rows (PostgreSQL's planner statistics); `None` where it
    /// has none.
    async fn estimated_rows(&mut self, _table: &Table) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
    /// Calls `f` with `key_cols` of every row of `table`, any district's, changed `since`: one scan
    /// of the table, cheaper than asking for the district's keys a batch at a time when they are
    /// much of it. Engines with an `estimated_rows` implement it.
    async fn keys_since(
        &mut self,
        table: &Table,
        _since: &Since,
        _key_cols: &[String],
        _f: &mut KeyParts<'_>,
    ) -> Result<(), StoreError> {
        Err(StoreError::Query {
            store: table.store.clone(),
            message: format!("{}: this engine cannot scan for changed rows", table.name),
        })
    }
    /// Streams the rows `sel` chooses from `table` into `w`, as `cols` are staged; rows written.
    async fn extract(
        &mut self,
        table: &Table,
        sel: Selection<'_>,
        cols: &[StagedColumn],
        w: &mut StagingWriter,
    ) -> Result<u64, StoreError>;
}

/// A snapshot of any engine.
pub type Snap = Box<dyn Snapshot>;

#[async_trait::async_trait]
impl<T: SnapshotReader + ?Sized> SnapshotReader for Box<T> {
    async fn rows_eq(
        &mut self,
        t: &Table,
        c: &str,
        v: &str,
        p: &[String],
        sink: &mut Sink<'_>,
    ) -> Result<(), StoreError> {
        (**self).rows_eq(t, c, v, p, sink).await
    }
    async fn rows_in(
        &mut self,
        t: &Table,
        c: &[String],
        k: &[Key],
        p: &[String],
    ) -> Result<Vec<Key>, StoreError> {
        (**self).rows_in(t, c, k, p).await
    }
    async fn rows_all(
        &mut self,
        t: &Table,
        p: &[String],
        sink: &mut Sink<'_>,
    ) -> Result<(), StoreError> {
        (**self).rows_all(t, p, sink).await
    }
    async fn has_rows(&mut self, t: &Table) -> Result<bool, StoreError> {
        (**self).has_rows(t).await
    }
    async fn keys_eq(
        &mut self,
        t: &Table,
        c: &str,
        v: &str,
        cols: &[String],
        f: &mut KeyParts<'_>,
    ) -> Result<(), StoreError> {
        (**self).keys_eq(t, c, v, cols, f).await
    }
    async fn count_eq(&mut self, t: &Table, c: &str, v: &str) -> Result<u64, StoreError> {
        (**self).count_eq(t, c, v).await
    }
}
