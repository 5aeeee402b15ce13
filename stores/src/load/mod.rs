//! Loading staged tables into CERT, and rolling a load back.
//!
//! One transaction per store, tables in load order (parents first). Exactly-once: the load writes a
//! marker row per table into `wf_loads` (run key, store, table, rows, sha256) in the same
//! transaction, and a load that finds its run key there has already committed and does nothing.
//! Cycles: on PostgreSQL the break-point columns are loaded NULL and set once every table is in,
//! one UPDATE per staged batch (`pg_break`); on SQLite foreign keys are checked at commit (`defer_foreign_keys`).
//! Rollback deletes exactly the keys the run inserted (its manifest, written before commit and
//! trusted only once the marker committed), children first, in one transaction per store.

mod dialect;
mod diff;
pub mod diff_delta;
mod diff_parts;
pub use diff::budget as diff_memory_rows;
mod diff_tx;
mod job;
mod keys;
mod manifest;
mod pg_break;
mod pg_fk_index;
pub mod postgres;
mod protocol;
pub(crate) use protocol::HeldTx;
pub mod sqlite;

pub use job::{LoadReport, SqlCheck, SqlCheckResult, StoreLoad, Strategy, TableLoad, TableReport};
pub(crate) use keys::{key_hashes, key_positions};
pub use manifest::{check_job_manifests, manifest_total, rebuild_manifests};

use crate::error::StoreError;
use crate::subset::Key;
use std::collections::HashSet;
use std::path::PathBuf;

/// A store's load done and its rules run inside a transaction still open (see
/// `RelationalStore::load_held`): `commit` ends the load as `load` would have, `abandon` rolls it
/// back (dropped without either, the server rolls it back when the connection closes).
pub struct HeldLoad {
    pub report: LoadReport,
    tx: Option<Box<dyn protocol::HeldTx>>,
}

impl std::fmt::Debug for HeldLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldLoad")
            .field("report", &self.report)
            .field("open", &self.tx.is_some())
            .finish()
    }
}

impl HeldLoad {
    pub(crate) fn new(report: LoadReport, tx: Option<Box<dyn protocol::HeldTx>>) -> HeldLoad {
        HeldLoad { report, tx }
    }

    /// Commits the load (deferred checks run here); its report.
    pub async fn commit(self) -> Result<LoadReport, StoreError> {
        if let Some(tx) = self.tx {
            tx.end(true).await?;
        }
        Ok(self.report)
    }

    /// Rolls the load back.
    pub async fn abandon(self) -> Result<(), StoreError> {
        match self.tx {
            Some(tx) => tx.end(false).await,
            None => Ok(()),
        }
    }
}

/// The count query of a check (its query as a subquery).
pub(crate) fn check_count_sql(c: &SqlCheck) -> String {
    format!(
        "select count(*) from ({}) wf_check",
        c.query.trim().trim_end_matches(';')
    )
}

/// Turns counted checks into results, or the error of the first blocking violation.
pub(crate) fn check_outcome(
    store: &str,
    counted: Vec<(&SqlCheck, i64)>,
) -> Result<Vec<SqlCheckResult>, StoreError> {
    let mut out = Vec::new();
    for (c, n) in counted {
        if c.blocking && n > 0 {
            return Err(StoreError::Rule {
                store: store.to_string(),
                rule: c.name.clone(),
                violations: n as u64,
            });
        }
        out.push(SqlCheckResult {
            name: c.name.clone(),
            severity: c.severity.clone(),
            violations: n as u64,
        });
    }
    Ok(out)
}

/// Keys of `wanted` that are not in `existing`, in order.
pub(crate) fn new_keys(wanted: Vec<Key>, existing: &HashSet<Key>) -> Vec<Key> {
    wanted
        .into_iter()
        .filter(|k| !existing.contains(k))
        .collect()
}

/// How a run loads: its idempotency key, where manifests go, the strategy, dry run or not.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Prefix of the per-store run keys (`<run>/g<generation>/load`).
    pub run_key: String,
    pub manifest_dir: PathBuf,
    pub strategy: Strategy,
    pub dry_run: bool,
}

/// The per-store loads of an extraction: tables in the analysis' load order; PostgreSQL tables defer
/// their cycle break columns (non-deferrable FKs); reference tables keep what CERT already has.
pub fn plan_loads(
    cfg: &crate::Config,
    schemas: &[crate::schema::StoreSchema],
    analysis: &crate::analysis::Analysis,
    files: &[crate::staging::TableFile],
    opts: &LoadOptions,
) -> Vec<StoreLoad> {
    let LoadOptions {
        run_key,
        manifest_dir,
        strategy,
        dry_run,
    } = opts;
    let (strategy, dry_run) = (*strategy, *dry_run);
    let mut out = Vec::new();
    for s in &cfg.stores {
        let Some(schema) = schemas.iter().find(|x| x.store == s.name) else {
            continue;
        };
        let mut tables = Vec::new();
        for id in analysis
            .order
            .iter()
            .filter(|id| id.split('.').next() == Some(s.name.as_str()))
        {
            let (Some(table), Some(file)) = (
                schema.tables.iter().find(|t| &t.id() == id),
                files.iter().find(|f| &f.table == id),
            ) else {
                continue;
            };
            let deferred = if s.kind.loads_break_columns_later() {
                analysis
                    .cycles
                    .iter()
                    .filter_map(|c| c.break_fk.as_ref())
                    .filter(|e| &e.child == id && !e.is_virtual)
                    .filter(|e| {
                        !table
                            .foreign_keys
                            .iter()
                            .any(|f| f.name == e.fk && f.deferrable)
                    })
                    .flat_map(|e| e.columns.clone())
                    .collect()
            } else {
                Vec::new()
            };
            tables.push(TableLoad {
                table: table.clone(),
                file: file.file.path.clone(),
                sha256: file.file.sha256.clone(),
                strategy: if cfg.reference_tables.contains(id) {
                    Strategy::SkipExisting
                } else {
                    strategy
                },
                deferred,
            });
        }
        if !tables.is_empty() {
            out.push(StoreLoad {
                run_key: format!("{run_key}/{}", s.name),
                store: s.name.clone(),
                tables,
                manifest_dir: manifest_dir.to_path_buf(),
                dry_run,
                checks: Vec::new(),
                replaces: None,
                by_difference: false,
            });
        }
    }
    out
}
