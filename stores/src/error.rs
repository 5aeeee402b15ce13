//! The stores' error type, classified by kind so callers retry only what is transient.

use std::path::PathBuf;

/// Errors of the stores, each naming the store (and table) concerned.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("config {file}: {message}")]
    Config { file: PathBuf, message: String },
    #[error("{side} store {store}: {message}")]
    Connect {
        store: String,
        side: &'static str,
        message: String,
    },
    /// Connection lost, pool timeout, serialization failure: worth another attempt.
    #[error("store {store}: {message} (transient; retrying may help)")]
    Transient { store: String, message: String },
    /// A constraint refused the data: names table, constraint and one key.
    #[error(
        "store {store}, table {table}: constraint {constraint} violated by key {key}: {message}"
    )]
    Constraint {
        store: String,
        table: String,
        constraint: String,
        key: String,
        message: String,
    },
    #[error("store {store}: {message}")]
    Query { store: String, message: String },
    /// A business rule run in the load transaction found violations; the load was rolled back.
    #[error("store {store}: validation rule `{rule}` found {violations} violating rows; the load was rolled back and CERT is unchanged")]
    Rule {
        store: String,
        rule: String,
        violations: u64,
    },
    /// A rollback found a manifest missing, unreadable or disagreeing with the load's marker rows;
    /// nothing was deleted.
    #[error("store {store}, table {table}: {message}; nothing was deleted and the load markers are kept")]
    Manifest {
        store: String,
        table: String,
        message: String,
    },
    /// The CERT guard refused a target (it is PROD, or not enrolled as CERT).
    #[error("{message}")]
    Guard { message: String },
    /// A journaled staging file no longer matches the digest its producer recorded.
    #[error("staging file {path}: {message}; the step that wrote it runs again")]
    Corrupt { path: PathBuf, message: String },
    #[error("staging file {path}: {message}")]
    Staging { path: PathBuf, message: String },
}

impl StoreError {
    /// The message without the store prefix the Display form adds.
    pub fn detail(&self) -> String {
        match self {
            StoreError::Query { message, .. } | StoreError::Transient { message, .. } => {
                message.clone()
            }
            other => other.to_string(),
        }
    }

    /// True for errors another attempt may cure.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Transient { .. })
    }

    /// Classifies a sqlx error by kind (never by message text).
    pub fn from_sqlx(store: &str, e: sqlx::Error) -> StoreError {
        use sqlx::Error as E;
        match e {
            E::Io(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed | E::Tls(_) => {
                StoreError::Transient {
                    store: store.into(),
                    message: e.to_string(),
                }
            }
            E::Database(db) => {
                let code = db.code().map(|c| c.to_string()).unwrap_or_default();
                // 40001 serialization failure, 40P01 deadlock, 57P0x shutdown, 08xxx connection.
                if code == "40001"
                    || code == "40P01"
                    || code.starts_with("57P")
                    || code.starts_with("08")
                {
                    StoreError::Transient {
                        store: store.into(),
                        message: db.to_string(),
                    }
                } else {
                    StoreError::Query {
                        store: store.into(),
                        message: db.to_string(),
                    }
                }
            }
            other => StoreError::Query {
                store: store.into(),
                message: other.to_string(),
            },
        }
    }
}
