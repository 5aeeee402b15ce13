//! A graph load as journaled (`GraphLoad`) and the lines of its manifest (`Created`): what the
//! load and its rollback share.

use crate::load::Strategy;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Elements per statement where no lookup comes first: CREATE (`insert`) and a rollback's deletes.
pub(super) const BIG_CHUNK: usize = 10_000;

/// One graph load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GraphLoad {
    /// Idempotency key of the load (`run/g<generation>/load/sp`).
    pub run_key: String,
    pub store: String,
    /// Staging files; node files are loaded before relationship files whatever the order here.
    pub files: Vec<PathBuf>,
    /// Where the list of created nodes and relationships goes.
    pub manifest: PathBuf,
    pub strategy: Strategy,
    pub dry_run: bool,
    /// A refresh: the earlier run's graph load, whose nodes and relationships are deleted in the
    /// same transaction before the new ones go in. Not journaled, as `StoreLoad::replaces`.
    #[serde(skip)]
    pub replaces: Option<Box<GraphLoad>>,
    /// With `replaces`: write only what changed since that load (`wf refresh --incremental`;
    /// see `diff`). Not journaled either.
    #[serde(skip)]
    pub by_difference: bool,
}

/// A manifest line: a node (label and key) or relationship (type, end labels, end keys) the load
/// created.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
pub(super) enum Created {
    Node {
        label: String,
        key: serde_json::Value,
    },
    Rel {
        rel: String,
        start: String,
        end: String,
        s: serde_json::Value,
        e: serde_json::Value,
    },
}
