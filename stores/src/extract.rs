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
        let store = crate::connect(s, Side::Prod).await?;
        schemas.push(store.introspect().await?);
        opened.push((s.name.clone(), store));
    }
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
                snap.extract(t, sel, &cols, &mut w).await?;
            } else if let Some(keys) = subset.keys.get(&id) {
                // Key by key range, a chunk at a time, so the key set may live on disk.
                for chunk in keys.chunks(EXTRACT_KEYS)? {
                    snap.extract(
                        t,
                        Selection::Keys {
                            columns: &key_cols,
                            keys: &chunk?,
                        },
                        &cols,
                        &mut w,
                    )
                    .await?;
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
    let db = crate::connect(store, side).await?;
    let schema = db.introspect().await?;
    Ok((schema, db.snapshot().await?))
}
