//! Extraction of one district from PROD: a read snapshot per store, the subset across stores, then
//! every selected table streamed into `<out>/<store>.<table>.arrow` within the same snapshots, so no
//! store is ever read from two points in time.

use crate::analysis::add_virtual_fks;
use crate::config::{Config, Side, StoreKind};
use crate::error::StoreError;
use crate::postgres::snapshot::{PgSnapshot, Selection};
use crate::postgres::PgStore;
use crate::schema::{StoreSchema, Table};
use crate::sqlite::snapshot::SqliteSnapshot;
use crate::sqlite::SqliteStore;
use crate::staging::{arrow_schema, ColType, FileInfo, StagedColumn, StagingWriter};
use crate::subset::{key_columns, select_with_limit, Key, Sink, SnapshotReader};
use crate::RelationalStore;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// A store's snapshot, whichever engine it runs on.
pub enum Snap {
    Pg(PgSnapshot),
    Sqlite(SqliteSnapshot),
}

#[async_trait::async_trait]
impl SnapshotReader for Snap {
    async fn rows_eq(
        &mut self,
        t: &Table,
        c: &str,
        v: &str,
        p: &[String],
        sink: &mut Sink<'_>,
    ) -> Result<(), StoreError> {
        match self {
            Snap::Pg(s) => s.rows_eq(t, c, v, p, sink).await,
            Snap::Sqlite(s) => s.rows_eq(t, c, v, p, sink).await,
        }
    }
    async fn rows_in(
        &mut self,
        t: &Table,
        c: &[String],
        k: &[Key],
        p: &[String],
    ) -> Result<Vec<Key>, StoreError> {
        match self {
            Snap::Pg(s) => s.rows_in(t, c, k, p).await,
            Snap::Sqlite(s) => s.rows_in(t, c, k, p).await,
        }
    }
    async fn rows_all(
        &mut self,
        t: &Table,
        p: &[String],
        sink: &mut Sink<'_>,
    ) -> Result<(), StoreError> {
        match self {
            Snap::Pg(s) => s.rows_all(t, p, sink).await,
            Snap::Sqlite(s) => s.rows_all(t, p, sink).await,
        }
    }
    async fn distinct_eq(
        &mut self,
        t: &Table,
        c: &str,
        v: &str,
        cols: &[String],
    ) -> Result<Vec<Key>, StoreError> {
        match self {
            Snap::Pg(s) => s.distinct_eq(t, c, v, cols).await,
            Snap::Sqlite(s) => s.distinct_eq(t, c, v, cols).await,
        }
    }
    async fn has_rows(&mut self, t: &Table) -> Result<bool, StoreError> {
        match self {
            Snap::Pg(s) => s.has_rows(t).await,
            Snap::Sqlite(s) => s.has_rows(t).await,
        }
    }
    async fn count_eq(&mut self, t: &Table, c: &str, v: &str) -> Result<u64, StoreError> {
        match self {
            Snap::Pg(s) => s.count_eq(t, c, v).await,
            Snap::Sqlite(s) => s.count_eq(t, c, v).await,
        }
    }
}

/// Keys per extraction query when a table is extracted by key.
const EXTRACT_KEYS: usize = 5000;

async fn extract_table(
    snap: &mut Snap,
    t: &Table,
    sel: Selection<'_>,
    cols: &[StagedColumn],
    w: &mut StagingWriter,
) -> Result<u64, StoreError> {
    match snap {
        Snap::Pg(s) => s.extract(t, sel, cols, w).await,
        Snap::Sqlite(s) => s.extract(t, sel, w).await,
    }
}

/// The staged columns of `table`.
pub fn staged_columns(kind: StoreKind, table: &Table) -> Vec<StagedColumn> {
    table
        .columns
        .iter()
        .map(|c| StagedColumn {
            name: c.name.clone(),
            source_type: c.data_type.clone(),
            col_type: ColType::of(kind, &c.data_type),
        })
        .collect()
}

/// One extracted table.
#[derive(Debug, Clone)]
pub struct TableFile {
    /// `store.table`.
    pub table: String,
    pub file: FileInfo,
}

/// What an extraction produced.
#[derive(Debug)]
pub struct Extracted {
    pub schemas: Vec<StoreSchema>,
    pub files: Vec<TableFile>,
    /// Snapshot ids per store (PostgreSQL `pg_current_snapshot()`), for the journal.
    pub snapshots: BTreeMap<String, String>,
}

enum Opened {
    Pg(PgStore),
    Sqlite(SqliteStore),
}

/// Extracts `district` from every configured store's PROD side into `out`.
pub async fn extract_district(
    cfg: &Config,
    district: &str,
    out: &Path,
    batch_rows: usize,
) -> Result<Extracted, StoreError> {
    extract_district_with_limit(
        cfg,
        district,
        out,
        batch_rows,
        crate::keyset::memory_limit(),
    )
    .await
}

/// `extract_district` with an explicit in-memory key limit (tests force spilling with a tiny one).
pub async fn extract_district_with_limit(
    cfg: &Config,
    district: &str,
    out: &Path,
    batch_rows: usize,
    key_limit: usize,
) -> Result<Extracted, StoreError> {
    let mut opened = Vec::new();
    let mut schemas = Vec::new();
    for s in &cfg.stores {
        let url = s.url(Side::Prod)?;
        let store = match s.kind {
            StoreKind::Postgres => Opened::Pg(PgStore::connect(&s.name, &url, Side::Prod).await?),
            StoreKind::Sqlite => {
                Opened::Sqlite(SqliteStore::connect(&s.name, &url, Side::Prod).await?)
            }
        };
        let schema = match &store {
            Opened::Pg(p) => p.introspect().await?,
            Opened::Sqlite(q) => q.introspect().await?,
        };
        schemas.push(schema);
        opened.push((s.name.clone(), store));
    }
    add_virtual_fks(&mut schemas, cfg).map_err(|message| StoreError::Config {
        file: "wf.toml".into(),
        message,
    })?;
    let mut snaps: HashMap<String, Snap> = HashMap::new();
    let mut snapshots = BTreeMap::new();
    for (name, store) in &opened {
        let snap = match store {
            Opened::Pg(p) => {
                let s = PgSnapshot::begin(name, p.pool()).await?;
                snapshots.insert(name.clone(), s.snapshot_id.clone());
                Snap::Pg(s)
            }
            Opened::Sqlite(q) => Snap::Sqlite(SqliteSnapshot::begin(name, q.pool()).await?),
        };
        snaps.insert(name.clone(), snap);
    }
    let tables: Vec<Table> = schemas.iter().flat_map(|s| s.tables.clone()).collect();
    let subset = select_with_limit(&mut snaps, &tables, cfg, district, key_limit).await?;
    let seeded = subset.seed_only.iter().any(|t| subset.rows(t) > 0);
    if !seeded {
        return Err(StoreError::Query {
            store: cfg.stores.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(","),
            message: format!(
                "district {district} not found: no row of any table has {} = {district}; `wf select-districts` lists the districts",
                cfg.district_column
            ),
        });
    }
    std::fs::create_dir_all(out).map_err(|e| StoreError::Staging {
        path: out.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut files = Vec::new();
    for schema in &schemas {
        for t in &schema.tables {
            let id = t.id();
            if subset.rows(&id) == 0 {
                continue;
            }
            let key_cols = key_columns(t);
            let cols = staged_columns(schema.kind, t);
            let path = out.join(format!("{id}.arrow"));
            let mut w =
                StagingWriter::create(&path, arrow_schema(&t.store, &t.name, &cols), batch_rows)?;
            let snap = snaps.get_mut(&t.store).ok_or_else(|| StoreError::Query {
                store: t.store.clone(),
                message: "no snapshot".into(),
            })?;
            if subset.whole.contains(&id) || subset.seed_only.contains(&id) {
                let sel = if subset.whole.contains(&id) {
                    Selection::All
                } else {
                    Selection::Eq {
                        column: &cfg.district_column,
                        value: district,
                    }
                };
                extract_table(snap, t, sel, &cols, &mut w).await?;
            } else if let Some(keys) = subset.keys.get(&id) {
                // Key by key range, a chunk at a time, so the key set may live on disk.
                let mut after: Option<Key> = None;
                loop {
                    let chunk = keys.chunk_after(after.as_ref(), EXTRACT_KEYS)?;
                    let Some(last) = chunk.last().cloned() else {
                        break;
                    };
                    extract_table(
                        snap,
                        t,
                        Selection::Keys {
                            columns: &key_cols,
                            keys: &chunk,
                        },
                        &cols,
                        &mut w,
                    )
                    .await?;
                    after = Some(last);
                }
            }
            let file = w.finish()?;
            files.push(TableFile { table: id, file });
        }
    }
    Ok(Extracted {
        schemas,
        files,
        snapshots,
    })
}

/// Opens `store` on `side` read-only: its schema and a snapshot to read rows by key (validation
/// uses it on CERT).
pub async fn open_snapshot(
    store: &crate::StoreConfig,
    side: Side,
) -> Result<(crate::schema::StoreSchema, Snap), StoreError> {
    let url = store.url(side)?;
    Ok(match store.kind {
        StoreKind::Postgres => {
            let p = PgStore::connect(&store.name, &url, side).await?;
            let schema = p.introspect().await?;
            (
                schema,
                Snap::Pg(PgSnapshot::begin(&store.name, p.pool()).await?),
            )
        }
        StoreKind::Sqlite => {
            let q = SqliteStore::connect(&store.name, &url, side).await?;
            let schema = q.introspect().await?;
            (
                schema,
                Snap::Sqlite(SqliteSnapshot::begin(&store.name, q.pool()).await?),
            )
        }
    })
}
