//! wf's stores: configuration, relational stores (PostgreSQL, SQLite) behind `RelationalStore`,
//! schema discovery and the dependency analysis. They know nothing about the engine.

pub mod analysis;
pub mod config;
pub mod config_at;
pub mod connect;
pub mod delta;
pub mod districts;
pub mod error;
pub mod extract;
pub mod graph;
pub mod guard;
pub mod hash_file;
pub mod key_spill;
pub mod keyset;
pub mod load;
pub mod marker;
pub mod notify;
pub mod postgres;
pub mod refs;
pub mod relational;
pub mod schema;
pub mod sizing;
pub mod snapshot;
pub mod sqlite;
pub mod staging;
pub mod subset;
mod syncer;
pub mod verified;

pub use config::{Config, Side, SnapshotMode, StoreConfig, StoreKind};
pub use connect::connect;
pub use error::StoreError;
pub use relational::RelationalStore;
