//! The `RelationalStore` seam, and connecting to a configured store on one side (PROD or CERT).

use crate::config::Triggers;
use crate::error::StoreError;
use crate::load::{LoadReport, StoreLoad};
use crate::marker::{Enrollment, Identity};
use crate::schema::StoreSchema;
use crate::snapshot::Snap;

/// A relational database of one store on one side: the one seam between wf and an engine. It is
/// chosen once, when a store connects ([`connect`]); discovery, extraction, loads, rollback, the
/// CERT guard and district figures all go through it and never ask which engine it is. PROD
/// handles are read-only at the session level.
#[async_trait::async_trait]
pub trait RelationalStore: Send + Sync {
    /// The store's name from config.
    fn name(&self) -> &str;
    /// Tables, columns, keys, foreign keys and row counts.
    async fn introspect(&self) -> Result<StoreSchema, StoreError>;
    /// Tables, columns, keys and foreign keys without row counts (each count is a full scan on a
    /// large PROD table): for checks that only need names. `row_count` is 0 where it is skipped.
    async fn introspect_shape(&self) -> Result<StoreSchema, StoreError> {
        self.introspect().await
    }
    /// Runs one statement (used by tests and fixtures; refused on PROD by the database itself).
    async fn execute(&self, sql: &str) -> Result<u64, StoreError>;
    /// A read snapshot: one transaction for the subset's lookups and the extraction.
    async fn snapshot(&self) -> Result<Snap, StoreError>;
    /// A snapshot of the moment another snapshot exported (`Snapshot::export`), readable while
    /// the exporting one stays open; refused by engines that cannot share a snapshot.
    async fn snapshot_at(&self, exported: &str) -> Result<Snap, StoreError> {
        Err(StoreError::Query {
            store: self.name().to_string(),
            message: format!("this engine cannot attach to snapshot {exported}"),
        })
    }
    /// Loads `job` into this (CERT) database in one transaction, exactly once.
    async fn load(&self, job: &StoreLoad, triggers: Triggers) -> Result<LoadReport, StoreError>;
    /// `load` without the commit: the load and its rules run in a transaction left open, to be
    /// committed (or dropped) by the caller once every other check has passed.
    async fn load_held(
        &self,
        job: &StoreLoad,
        triggers: Triggers,
    ) -> Result<crate::load::HeldLoad, StoreError>;
    /// Deletes what `job` loaded, if it committed; rows deleted per table.
    async fn rollback(&self, job: &StoreLoad) -> Result<Vec<(String, u64)>, StoreError>;
    /// What `rollback` would delete now, per table, without deleting anything.
    async fn preview_rollback(&self, job: &StoreLoad) -> Result<Vec<(String, u64)>, StoreError>;
    /// What the database is, as its server or file system says (for the CERT guard).
    async fn identity(&self) -> Result<Identity, StoreError>;
    /// The CERT marker the database carries, if enrolled.
    async fn enrollment(&self) -> Result<Option<Enrollment>, StoreError>;
    /// Writes the CERT marker.
    async fn enroll(&self, e: &Enrollment) -> Result<(), StoreError>;
    /// A table name as this engine's SQL spells it.
    fn quote_table(&self, name: &str) -> String;
    /// Rows of a `select district, count, latest` query (district figures; all text but the count).
    async fn district_rows(&self, sql: String) -> Result<Vec<DistrictRow>, StoreError>;
}

/// One row of a district-figures query: district, row count, latest date (as text).
pub type DistrictRow = (String, i64, Option<String>);

/// A URL with its password replaced, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((cred, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match cred.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            super::redact("postgres://u:secret@h:5/db"),
            "postgres://u:***@h:5/db"
        );
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(super::redact("sqlite://x.db"), "sqlite://x.db");
    }
}
