//! What the pre-load validation looks at (the validate step builds it; every check reads it).

use super::cells::KeySet;
use super::rules::ValidationRules;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use wf_stores::load::Strategy;
use wf_stores::schema::StoreSchema;
use wf_stores::Config;

/// What validation looks at.
pub struct ValidateInput<'a> {
    pub config: &'a Config,
    /// PROD schemas, virtual FKs included.
    pub schemas: &'a [StoreSchema],
    /// Anonymized relational files: (`store.table`, path).
    pub files: Vec<(String, PathBuf)>,
    /// Anonymized graph files.
    pub graph_files: Vec<PathBuf>,
    pub rules: &'a ValidationRules,
    pub strategy: Strategy,
    /// The anonymization leak scan's hits (empty: it passed).
    pub leaks: Vec<(String, u64)>,
    /// Keys (hashed) this run loaded in earlier generations, per table: not conflicts, since the
    /// load replaces them.
    pub owned: HashMap<String, KeySet>,
    /// Whole rows (hashed) the run a refresh replaces staged, per table: such a row under an
    /// owned key needs no unique lookup in CERT (see `owned::replaced_rows`).
    pub unchanged: HashMap<String, KeySet>,
    /// Graph nodes (label, key text) this run loaded in earlier generations: not conflicts either.
    pub graph_owned: HashSet<(String, String)>,
    /// Graph nodes extract left out for lacking their key (`without_key = "skip"`), by where
    /// they were met.
    pub graph_skipped: Vec<(String, u64)>,
}
