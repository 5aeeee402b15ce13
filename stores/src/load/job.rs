//! A load job as the steps plan it and the journal keeps it, and what a load reports: the types
//! every backend's load takes and returns.

use crate::schema::Table;
use std::path::PathBuf;

/// What to do with a row whose key already exists in CERT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Fail (and load nothing of the store): CERT must not hold the rows yet.
    Insert,
    /// Overwrite the existing row.
    Upsert,
    /// Keep the existing row.
    SkipExisting,
}

/// One table to load: its CERT schema and its staging file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TableLoad {
    pub table: Table,
    pub file: PathBuf,
    pub sha256: String,
    pub strategy: Strategy,
    /// Columns loaded NULL first and set by UPDATE afterwards (cycle break points).
    pub deferred: Vec<String>,
}

/// One store's load.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StoreLoad {
    /// Idempotency key of the load (`run/g<generation>/load/<store>`).
    pub run_key: String,
    pub store: String,
    /// Parents first.
    pub tables: Vec<TableLoad>,
    /// Where the manifests (keys inserted per table) go.
    pub manifest_dir: PathBuf,
    /// Roll back instead of committing (`--dry-run`).
    pub dry_run: bool,
    /// Business rules run in the transaction before commit.
    #[serde(default)]
    pub checks: Vec<SqlCheck>,
    /// A refresh: the earlier run's load of this store, whose rows (by its manifests) are deleted
    /// in the same transaction before the new ones go in, so CERT holds one or the other. Not
    /// journaled (outputs are bincode, which has no optional trailing fields): the load step
    /// sets it each time it runs.
    #[serde(skip)]
    pub replaces: Option<Box<StoreLoad>>,
    /// With `replaces`: write only what changed since that load (`wf refresh --incremental`),
    /// where that is exact (see `diff`). Not journaled either.
    #[serde(skip)]
    pub by_difference: bool,
}

/// A business rule run inside the load transaction before commit: a query returning the violating
/// rows. A blocking rule with violations rolls the whole store's load back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SqlCheck {
    pub name: String,
    pub query: String,
    pub severity: String,
    pub blocking: bool,
}

/// What a `SqlCheck` found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SqlCheckResult {
    pub name: String,
    pub severity: String,
    pub violations: u64,
}

/// What a load did, per table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableReport {
    pub table: String,
    pub rows_in_file: u64,
    pub inserted: u64,
}

/// What a load did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LoadReport {
    /// The marker was found: an earlier execution committed this load.
    pub already_loaded: bool,
    pub tables: Vec<TableReport>,
    /// Results of the business rules run in the transaction.
    #[serde(default)]
    pub checks: Vec<SqlCheckResult>,
}
