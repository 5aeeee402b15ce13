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
/// created, or (`kept`) that a refresh by difference left as the run it replaced created it,
/// and owns as if it had.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
pub(super) enum Created {
    Node {
        label: String,
        key: serde_json::Value,
        #[serde(default, skip_serializing_if = "is_false")]
        kept: bool,
    },
    Rel {
        rel: String,
        start: String,
        end: String,
        s: serde_json::Value,
        e: serde_json::Value,
        #[serde(default, skip_serializing_if = "is_false")]
        kept: bool,
    },
}

fn is_false(b: &bool) -> bool {
    !b
}

impl Created {
    /// The line as carried over by a refresh by difference.
    pub(super) fn kept(self) -> Created {
        match self {
            Created::Node { label, key, .. } => Created::Node {
                label,
                key,
                kept: true,
            },
            Created::Rel {
                rel,
                start,
                end,
                s,
                e,
                ..
            } => Created::Rel {
                rel,
                start,
                end,
                s,
                e,
                kept: true,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Created;

    #[test]
    fn manifest_lines_read_back_with_and_without_kept() {
        // A line written before `kept` existed is a created element.
        let old: Created = serde_json::from_str(r#"{"label":"Student","key":7}"#).unwrap();
        assert!(matches!(old, Created::Node { kept: false, .. }));
        let rel = r#"{"rel":"ATTENDS","start":"Student","end":"School","s":7,"e":"x"}"#;
        let rel: Created = serde_json::from_str(rel).unwrap();
        assert!(matches!(rel, Created::Rel { kept: false, .. }));
        // A created line is written as before; a kept one says so and reads back kept.
        assert_eq!(
            serde_json::to_string(&old).unwrap(),
            r#"{"label":"Student","key":7}"#
        );
        for c in [old.kept(), rel.kept()] {
            let text = serde_json::to_string(&c).unwrap();
            assert!(text.contains(r#""kept":true"#), "{text}");
            let back: Created = serde_json::from_str(&text).unwrap();
            assert!(matches!(
                back,
                Created::Node { kept: true, .. } | Created::Rel { kept: true, .. }
            ));
        }
    }
}
