//! Connecting to a configured relational store: the one place that picks the engine; and the
//! load and rollback of one store's job through it.

use crate::config::{Side, StoreConfig, StoreKind};
use crate::error::StoreError;
use crate::load::{LoadReport, StoreLoad};
use crate::relational::RelationalStore;

/// Connects to `store` on `side`, checking the connection at once so errors are early and clear.
pub async fn connect(
    store: &StoreConfig,
    side: Side,
) -> Result<Box<dyn RelationalStore>, StoreError> {
    let url = store.url(side)?;
    match store.kind {
        StoreKind::Postgres => Ok(Box::new(
            crate::postgres::PgStore::connect(&store.name, &url, side).await?,
        )),
        StoreKind::Sqlite => Ok(Box::new(
            crate::sqlite::SqliteStore::connect(&store.name, &url, side).await?,
        )),
    }
}

/// Loads `job` into the CERT side of `store`.
pub async fn load_store(store: &StoreConfig, job: &StoreLoad) -> Result<LoadReport, StoreError> {
    let db = connect(store, Side::Cert).await?;
    db.load(job, store.triggers).await
}

/// Loads `job` into the CERT side of `store` and runs its rules, leaving the transaction open
/// for the caller to commit.
pub async fn load_store_held(
    store: &StoreConfig,
    job: &StoreLoad,
) -> Result<crate::load::HeldLoad, StoreError> {
    let db = connect(store, Side::Cert).await?;
    db.load_held(job, store.triggers).await
}

/// What a rollback of `job` would delete from the CERT side of `store` now, per table.
pub async fn preview_rollback_store(
    store: &StoreConfig,
    job: &StoreLoad,
) -> Result<Vec<(String, u64)>, StoreError> {
    let db = connect(store, Side::Cert).await?;
    db.preview_rollback(job).await
}

/// Deletes from the CERT side of `store` what `job` loaded (if it committed); rows deleted per table.
pub async fn rollback_store(
    store: &StoreConfig,
    job: &StoreLoad,
) -> Result<Vec<(String, u64)>, StoreError> {
    let db = connect(store, Side::Cert).await?;
    db.rollback(job).await
}
