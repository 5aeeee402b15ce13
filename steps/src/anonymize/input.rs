//! What anonymization takes (one staged table per input) and how it fails: the types every part
//! of `anonymize` shares.

use super::rules::Rules;
use std::collections::BTreeMap;
use std::path::PathBuf;
use wf_stores::staging::open;
use wf_stores::StoreError;

/// One staged table to anonymize.
#[derive(Debug, Clone)]
pub struct TableInput {
    /// `store.table`.
    pub table: String,
    pub file: PathBuf,
    /// The digest the file's producer recorded: reading it checks it (`None` reads unchecked).
    pub sha256: Option<String>,
    /// Columns whose values must stay unique (single-column primary key or unique constraint).
    pub unique: Vec<String>,
    /// Columns that take another field's rule unless they have an exact rule of their own: foreign
    /// keys take their parent column's, relationship ends their nodes' key's, graph links their
    /// relational column's — so equal values anonymize alike and still join.
    pub rule_as: BTreeMap<String, String>,
}

impl TableInput {
    /// Opens the input file, checked against its recorded digest as it is read.
    pub(super) fn open(&self) -> Result<wf_stores::verified::Staged, StoreError> {
        match &self.sha256 {
            Some(sha) => wf_stores::staging::open_verified(&self.file, sha),
            None => open(&self.file),
        }
    }
}

/// The field whose rule applies to `column` of `t`.
pub(super) fn rule_field(t: &TableInput, rules: &Rules, column: &str) -> String {
    let own = format!("{}.{column}", t.table);
    match t.rule_as.get(column) {
        Some(other) if !rules.has_field(&own) => other.clone(),
        _ => own,
    }
}

/// Why anonymization stopped.
#[derive(Debug, thiserror::Error)]
pub enum AnonError {
    #[error("{count} fields look like PII and have no anonymization rule: {list}; add a [[rules]] entry for each to {rules} (strategy hmac, fake, mask, shift_date, redact or null; `keep` if it is not PII)")]
    Unclassified {
        count: usize,
        list: String,
        rules: String,
    },
    #[error("rule problem: {0}")]
    Rule(String),
    #[error("leak scan failed: original values remain after anonymization in {0}; fix the rules and run again")]
    Leak(String),
    #[error(transparent)]
    Staging(#[from] StoreError),
}
