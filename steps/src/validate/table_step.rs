//! `validate/<store.table>`: one table's pre-load checks (columns against CERT, NOT NULL,
//! uniqueness, references into its parents and CERT, conflicts with CERT rows, its business
//! rules), run as soon as the table and its parents are anonymized. The findings are journaled;
//! the static `validate` step adds the whole-run checks and decides the gate.

use super::{CategoryCount, Finding, Tally};
use crate::migrate::{input_err, AnonPart, ExtractOut, ExtractPart, MigrateParams};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use wf_engine::{Step, StepContext, StepError, StepOutput, StepSpec};
use wf_stores::schema::StoreSchema;
use wf_stores::SnapshotMode;

/// Step kind of a table's validation.
pub const VALIDATE_KIND: &str = "migrate.validate_table";

/// What a `validate/<store.table>` step checks: the table, and the parents its references need.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidateTask {
    pub table: String,
    pub parents: Vec<String>,
}

impl ValidateTask {
    pub fn decode(params: &[u8]) -> Result<ValidateTask, String> {
        serde_json::from_slice(params).map_err(|e| format!("validate step parameters: {e}"))
    }
}

/// Output of one `validate/<store.table>` step: its checks' counts and findings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ValidatePart {
    pub categories: BTreeMap<String, CategoryCount>,
    pub findings: Vec<Finding>,
    pub rows: u64,
}

/// One validate step per planned table, waiting for its own anonymize step and its parents'
/// (FK parents in `schemas`, virtual ones included, that the plan stages too).
pub(crate) fn specs(
    tables: &[String],
    schemas: &[StoreSchema],
) -> Result<Vec<StepSpec>, StepError> {
    let planned: BTreeSet<&String> = tables.iter().collect();
    let mut out = Vec::new();
    for t in tables {
        let parents: BTreeSet<String> = schemas
            .iter()
            .flat_map(|s| &s.tables)
            .filter(|x| &x.id() == t)
            .flat_map(|x| x.foreign_keys.iter().map(|f| f.ref_table.clone()))
            .filter(|p| p != t && planned.contains(p))
            .collect();
        let mut deps = vec![format!("anonymize/{t}")];
        deps.extend(parents.iter().map(|p| format!("anonymize/{p}")));
        // The extracts too: which snapshot each was read in (see `closure_moved`).
        deps.push(format!("extract/{t}"));
        deps.extend(parents.iter().map(|p| format!("extract/{p}")));
        let mut spec = StepSpec::new(format!("validate/{t}"), VALIDATE_KIND, deps);
        let task = ValidateTask {
            table: t.clone(),
            parents: parents.into_iter().collect(),
        };
        spec.params = serde_json::to_vec(&task).map_err(|e| StepError::Fatal(e.to_string()))?;
        out.push(spec);
    }
    Ok(out)
}

/// `validate/<store.table>`.
pub struct ValidateTableStep {
    pub params: Arc<MigrateParams>,
    pub task: ValidateTask,
}

#[async_trait::async_trait]
impl Step for ValidateTableStep {
    async fn run(&self, cx: &StepContext) -> Result<StepOutput, StepError> {
        let p = &self.params;
        let t = &self.task.table;
        let ex = ExtractOut::input(cx)?;
        let mut schemas = ex.schemas.clone();
        wf_stores::analysis::add_virtual_fks(&mut schemas, &p.config).map_err(StepError::Fatal)?;
        let (mut files, mut expected) = (Vec::new(), 0);
        let mut only = None;
        for name in std::iter::once(t).chain(&self.task.parents) {
            let part: AnonPart = cx.input(&format!("anonymize/{name}"))?;
            if name == t {
                only = self.changes_only(cx, &schemas, &part)?;
            }
            for f in part.files.iter().filter(|f| &f.table == name) {
                wf_stores::verified::expect(&f.path, &f.sha256);
                files.push((f.table.clone(), f.path.clone()));
                if name == t {
                    expected += f.rows;
                }
            }
        }
        cx.progress.expect(expected);
        let rules = crate::migrate::validation_rules(p)?;
        let mut owned = super::owned::owned_keys(cx, p, Some(t))?;
        let input = super::ValidateInput {
            config: &p.config,
            schemas: &schemas,
            files,
            graph_files: Vec::new(),
            rules: &rules,
            strategy: p.strategy,
            leaks: Vec::new(),
            owned: owned
                .remove(t)
                .map(|s| [(t.clone(), s)].into())
                .unwrap_or_default(),
            unchanged: match schemas
                .iter()
                .flat_map(|s| &s.tables)
                .find(|x| x.id() == *t)
            {
                Some(table) => super::owned::replaced_rows(cx, p, table)?
                    .map(|s| [(t.clone(), s)].into())
                    .unwrap_or_default(),
                None => Default::default(),
            },
            graph_owned: Default::default(),
            graph_skipped: Vec::new(),
        };
        // A damaged anonymized file makes the step that wrote it (named by its path) run again.
        let (tally, checked, how, checks) = super::scan::validate_table(&input, t, only.as_ref())
            .await
            .map_err(input_err("anonymize"))?;
        let changes = matches!(how, super::scan::Checked::Changes);
        match how {
            super::scan::Checked::Changes => {
                tracing::info!(table = %t, "checked its {checked} changed rows, not the whole table: the replaced run checked the rest")
            }
            super::scan::Checked::Whole(Some(why)) => {
                tracing::info!(table = %t, "checked the whole table: {why}")
            }
            super::scan::Checked::Whole(None) => {}
        }
        let rows = if changes { expected } else { checked };
        cx.progress.rows(rows);
        if let Some(moved) = closure_moved(cx, p, &ex, &tally, t, &self.task.parents)? {
            return Err(StepError::Redo {
                producer: "extract".into(),
                path: input.files.first().map(|f| f.1.clone()).unwrap_or_default(),
                message: format!(
                    "PROD changed while the run was down: {t} references rows its plan did not select ({moved} read in a new snapshot, snapshot = \"closure\"); planning the district again, in one snapshot per store"
                ),
            });
        }
        let (lookups, cert_resolved) = (tally.unique_lookups, tally.cert_resolved_refs);
        let mut out = StepOutput::with_value(&ValidatePart {
            categories: tally.categories,
            findings: tally.findings,
            rows,
        })?;
        out.metrics.insert("rows".into(), rows);
        out.metrics.insert("checked_rows".into(), checked);
        out.metrics.insert("unique_lookups".into(), lookups);
        out.metrics
            .insert(super::incremental::CERT_RESOLVED.into(), cert_resolved);
        out.metrics
            .insert(super::incremental::CHECKS.into(), checks);
        Ok(out)
    }
}

impl ValidateTableStep {
    /// The table's changes alone to check (see `incremental`), or `None`, with why, logged,
    /// where it was read by difference.
    fn changes_only(
        &self,
        cx: &StepContext,
        schemas: &[StoreSchema],
        part: &AnonPart,
    ) -> Result<Option<super::incremental::ChangesOnly>, StepError> {
        let t = &self.task.table;
        let Some(table) = schemas
            .iter()
            .flat_map(|s| &s.tables)
            .find(|x| x.id() == *t)
        else {
            return Ok(None);
        };
        let p = &self.params;
        match super::incremental::changes_only(cx, p, table, part, &self.task.parents)? {
            Ok(c) => Ok(Some(c)),
            Err(why) => {
                if crate::migrate::delta::read_by_difference(cx, t) {
                    tracing::info!(table = %t, "checked the whole table: {why}");
                }
                Ok(None)
            }
        }
    }
}

/// Under `snapshot = "closure"`, when `table` has references that resolve nowhere and it or a
/// parent was read in a snapshot other than its store's plan (a resume after the plan's snapshot
/// died), those tables, joined: the subset is no longer closed because PROD changed in between,
/// and the district is planned again. `None` otherwise (a dangling reference of one snapshot is
/// the data's, and the gate reports it). An extract output that cannot be read is an error.
fn closure_moved(
    cx: &StepContext,
    p: &MigrateParams,
    plan: &ExtractOut,
    tally: &Tally,
    table: &str,
    parents: &[String],
) -> Result<Option<String>, StepError> {
    let dangling = tally
        .findings
        .iter()
        .any(|f| f.category == "referential_integrity" && f.violations > 0 && f.severity.blocks());
    if p.config.snapshot != SnapshotMode::Closure || !dangling {
        return Ok(None);
    }
    let mut moved: Vec<&str> = Vec::new();
    for t in std::iter::once(table).chain(parents.iter().map(String::as_str)) {
        let id = format!("extract/{t}");
        // Runs planned before these inputs existed have none: nothing is known to differ.
        if !cx.inputs.contains_key(&id) {
            continue;
        }
        let part: ExtractPart = cx.input(&id)?;
        let store = t.split_once('.').map_or(t, |(s, _)| s);
        if part
            .snapshot
            .is_some_and(|sid| plan.snapshots.get(store) != Some(&sid))
        {
            moved.push(t);
        }
    }
    Ok((!moved.is_empty()).then(|| moved.join(", ")))
}

/// The per-table parts among a step's inputs, merged into one tally; `None` when the run has
/// none (`--from-run`, or a run planned before them).
pub(crate) fn merged(cx: &StepContext) -> Result<Option<(Tally, u64)>, StepError> {
    let mut ids: Vec<&String> = cx
        .inputs
        .keys()
        .filter(|id| id.starts_with("validate/"))
        .collect();
    if ids.is_empty() {
        return Ok(None);
    }
    ids.sort();
    let mut tally = Tally::default();
    let mut rows = 0;
    for id in ids {
        let part: ValidatePart = cx.input(id)?;
        rows += part.rows;
        tally.absorb(part.categories, part.findings);
    }
    Ok(Some((tally, rows)))
}
