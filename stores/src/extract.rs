//! Extraction of one district from PROD: a read snapshot per store, the subset across stores, then
//! every selected table streamed into `<out>/<store>.<table>.arrow` within the same snapshots, so no
//! store is ever read from two points in time.

use crate::analysis::add_virtual_fks;
use crate::config::{Config, Side, StoreKind};
use crate::error::StoreError;
use crate::schema::{StoreSchema, Table};
use crate::snapshot::Selection;
use crate::staging::{arrow_schema, ColType, StagedColumn, StagingWriter};
use crate::subset::{key_columns, select_with_limit};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

pub use crate::snapshot::Snap;

/// Keys per extraction query when a table is extracted by key.
const EXTRACT_KEYS: usize = 5000;

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

pub use crate::staging::TableFile;

/// What an extraction produced.
#[derive(Debug)]
pub struct Extracted {
    pub schemas: Vec<StoreSchema>,
    pub files: Vec<TableFile>,
    /// Snapshot ids per store (PostgreSQL `pg_current_snapshot()`), for the journal.
    pub snapshots: BTreeMap<String, String>,
}

/// How a planned table's rows are chosen when it is extracted.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Chosen {
    /// The whole table.
    All,
    /// The rows whose district column holds the district.
    District,
    /// The rows whose keys are in `file` (written by the plan, in key order).
    Keys { file: std::path::PathBuf },
}

/// One table of a plan: which rows of it the district needs.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PlannedTable {
    /// `store.table`.
    pub table: String,
    pub store: String,
    pub chosen: Chosen,
    /// Rows the subset selected.
    pub rows: u64,
}

/// The district's subset, selected in one snapshot per store; the snapshots stay open so the
/// tables can be extracted from the same moments.
pub struct Planned {
    pub schemas: Vec<StoreSchema>,
    /// Tables with at least one selected row, in schema order.
    pub tables: Vec<PlannedTable>,
    pub snaps: HashMap<String, Snap>,
    /// Snapshot ids per store (PostgreSQL `pg_current_snapshot()`), for the journal.
    pub snapshots: BTreeMap<String, String>,
    /// True when some table has a row of the district (not only reference tables).
    pub found: bool,
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
    let keys = tempfile::tempdir().map_err(|e| StoreError::Staging {
        path: std::env::temp_dir(),
        message: e.to_string(),
    })?;
    let mut plan = plan_district(cfg, district, keys.path(), key_limit).await?;
    let mut files = Vec::new();
    for t in &plan.tables {
        let table = find_table(&plan.schemas, &t.table)?;
        let kind = store_kind(&plan.schemas, &t.store);
        let snap = plan
            .snaps
            .get_mut(&t.store)
            .ok_or_else(|| StoreError::Query {
                store: t.store.clone(),
                message: "no snapshot".into(),
            })?;
        let sink = TableSink {
            dir: out,
            batch_rows,
            progress: None,
        };
        let file = extract_table(snap, kind, table, &t.chosen, cfg, district, sink).await?;
        files.push(file);
    }
    Ok(Extracted {
        schemas: plan.schemas,
        files,
        snapshots: plan.snapshots,
    })
}

/// The table `id` (`store.table`) of `schemas`.
pub fn find_table<'a>(schemas: &'a [StoreSchema], id: &str) -> Result<&'a Table, StoreError> {
    schemas
        .iter()
        .flat_map(|s| &s.tables)
        .find(|t| t.id() == id)
        .ok_or_else(|| StoreError::Query {
            store: id.split('.').next().unwrap_or(id).to_string(),
            message: format!("the plan names table {id}, which the schema does not have"),
        })
}

/// The engine of store `name` in `schemas` (PostgreSQL when unknown).
pub fn store_kind(schemas: &[StoreSchema], name: &str) -> StoreKind {
    schemas
        .iter()
        .find(|s| s.tables.first().is_some_and(|t| t.store == name))
        .map(|s| s.kind)
        .unwrap_or(StoreKind::Postgres)
}

/// Opens a snapshot of every PROD store and selects `district`'s subset in them; each table's
/// keys go to a file in `key_dir`. The snapshots are returned open, for the extraction.
pub async fn plan_district(
    cfg: &Config,
    district: &str,
    key_dir: &Path,
    key_limit: usize,
) -> Result<Planned, StoreError> {
    plan_stores(cfg, district, key_dir, key_limit, true).await
}

/// `plan_district`, where `required = false` lets the relational stores hold nothing of the
/// district (it may exist only in the graph, which is checked when it is extracted).
pub async fn plan_stores(
    cfg: &Config,
    district: &str,
    key_dir: &Path,
    key_limit: usize,
    required: bool,
) -> Result<Planned, StoreError> {
    // The stores at once. No row counts: each is a full scan of a PROD table the plan does not
    // need.
    let (opened, mut schemas): (Vec<_>, Vec<_>) =
        futures_util::future::try_join_all(cfg.stores.iter().map(|s| async move {
            let store = crate::connect(s, Side::Prod).await?;
            let schema = store.introspect_shape().await?;
            Ok::<_, StoreError>(((s.name.clone(), store), schema))
        }))
        .await?
        .into_iter()
        .unzip();
    add_virtual_fks(&mut schemas, cfg).map_err(|message| StoreError::Config {
        file: "wf.toml".into(),
        message,
    })?;
    let mut snaps: HashMap<String, Snap> = HashMap::new();
    let mut snapshots = BTreeMap::new();
    for (name, store) in &opened {
        let snap = store.snapshot().await?;
        if let Some(id) = snap.snapshot_id() {
            snapshots.insert(name.clone(), id);
        }
        snaps.insert(name.clone(), snap);
    }
    let tables: Vec<Table> = schemas.iter().flat_map(|s| s.tables.clone()).collect();
    let subset = select_with_limit(&mut snaps, &tables, cfg, district, key_limit).await?;
    let seeded = subset.seed_only.iter().any(|t| subset.rows(t) > 0);
    if !seeded && required {
        return Err(StoreError::Query {
            store: cfg.stores.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(","),
            message: format!(
                "district {district} not found: no row of any table has {} = {district}; `wf select-districts` lists the districts",
                cfg.district_column
            ),
        });
    }
    std::fs::create_dir_all(key_dir).map_err(|e| StoreError::Staging {
        path: key_dir.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut planned = Vec::new();
    for t in &tables {
        let id = t.id();
        let rows = subset.rows(&id) as u64;
        if rows == 0 {
            continue;
        }
        let chosen = if subset.whole.contains(&id) {
            Chosen::All
        } else if subset.seed_only.contains(&id) {
            Chosen::District
        } else if let Some(keys) = subset.keys.get(&id) {
            let file = key_dir.join(format!("{id}.keys"));
            crate::keyset::write_key_file(keys, &file)?;
            Chosen::Keys { file }
        } else {
            continue;
        };
        planned.push(PlannedTable {
            table: id,
            store: t.store.clone(),
            chosen,
            rows,
        });
    }
    Ok(Planned {
        schemas,
        tables: planned,
        snaps,
        snapshots,
        found: seeded,
    })
}

/// Where an extracted table goes: `<dir>/<store.table>.arrow`, in batches of `batch_rows`, with
/// `progress` told the rows written after each batch.
pub struct TableSink<'a> {
    pub dir: &'a Path,
    pub batch_rows: usize,
    pub progress: Option<Box<dyn Fn(u64) + Send>>,
}

/// Streams the rows of `table` that `chosen` names from `snap` into the sink's file.
#[allow(clippy::too_many_arguments)]
pub async fn extract_table(
    snap: &mut Snap,
    kind: StoreKind,
    table: &Table,
    chosen: &Chosen,
    cfg: &Config,
    district: &str,
    sink: TableSink<'_>,
) -> Result<TableFile, StoreError> {
    let (out, batch_rows) = (sink.dir, sink.batch_rows);
    std::fs::create_dir_all(out).map_err(|e| StoreError::Staging {
        path: out.to_path_buf(),
        message: e.to_string(),
    })?;
    let id = table.id();
    let cols = staged_columns(kind, table);
    let path = out.join(format!("{id}.arrow"));
    let mut w = StagingWriter::create(
        &path,
        arrow_schema(&table.store, &table.name, &cols),
        batch_rows,
    )?;
    if let Some(p) = sink.progress {
        w.on_rows(p);
    }
    match chosen {
        Chosen::All => {
            snap.extract(table, Selection::All, &cols, &mut w).await?;
        }
        Chosen::District => {
            let sel = Selection::Eq {
                column: &cfg.district_column,
                value: district,
            };
            snap.extract(table, sel, &cols, &mut w).await?;
        }
        Chosen::Keys { file } => {
            // A chunk of keys at a time, so the key set never has to be in memory.
            let key_cols = key_columns(table);
            for chunk in crate::keyset::key_file_chunks(file, EXTRACT_KEYS)? {
                let sel = Selection::Keys {
                    columns: &key_cols,
                    keys: &chunk?,
                };
                snap.extract(table, sel, &cols, &mut w).await?;
            }
        }
    }
    let file = w.finish()?;
    Ok(TableFile { table: id, file })
}

/// Opens `store` on `side` read-only: its schema (without row counts) and a snapshot to read rows by key (validation
/// uses it on CERT).
pub async fn open_snapshot(
    store: &crate::StoreConfig,
    side: Side,
) -> Result<(crate::schema::StoreSchema, Snap), StoreError> {
    let db = crate::connect(store, side).await?;
    let schema = db.introspect_shape().await?;
    Ok((schema, db.snapshot().await?))
}
