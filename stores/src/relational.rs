//! The `RelationalStore` seam, and connecting to a configured store on one side (PROD or CERT).

use crate::config::{Side, StoreConfig, StoreKind};
use crate::error::StoreError;
use crate::schema::StoreSchema;

/// A relational database of one store on one side. PROD handles are read-only at the session level.
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
}

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
