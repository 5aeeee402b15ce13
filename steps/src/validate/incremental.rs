//! `validate/<table>` of a table read by difference (`wf refresh --incremental`): its staging is
//! the replaced run's, which that run validated, with the changes merged in (see
//! `wf_stores::load::diff_delta`). Where the replaced run's check of the table found nothing and
//! nothing the unchanged rows rely on can have moved, only the changes are checked, and the
//! findings are those of the whole table:
//! - NOT NULL, and the primary key's uniqueness: the unchanged rows passed; a change's key is
//!   either one the replaced run staged (whose row it replaces) or new to the table;
//! - CERT conflicts: loaded by `insert`, the replaced run owns every unchanged row;
//! - business rules: those of one table (not null, range, regex, allowed, date order) look at
//!   one row at a time;
//! - references: the unchanged rows' resolved in the replaced run's parents' staging (none in
//!   CERT: `CERT_RESOLVED` was 0), so they still do when every parent key set then is in the
//!   parent's staging now (`scan::validate_table` compares them, else checks the whole table).
//!
//! All of it only under the same checks as the replaced run's (`CHECKS`: the table's CERT
//! definition, references, business rules and strategy): a rule added since, a column made NOT
//! NULL or a new virtual FK was never checked on the unchanged rows. Anything else (other unique
//! constraints, another strategy, a replaced run whose staging is gone or that found something)
//! checks the whole table.

use crate::migrate::{AnonPart, MigrateParams};
use std::path::PathBuf;
use wf_engine::{StepContext, StepError};
use wf_stores::load::{diff_delta, Strategy};
use wf_stores::schema::Table;

/// Metric of a table's validate step: references resolved in CERT rather than in the staging.
pub const CERT_RESOLVED: &str = "cert_resolved_refs";

/// Metric of a table's validate step: what its checks were (`scan::checks_fingerprint`); the
/// changes alone are checked only under the same checks.
pub const CHECKS: &str = "checks";

/// The rows to check of a table read by difference, and the replaced run's staging of its
/// parents, whose key sets must still be in theirs.
pub struct ChangesOnly {
    pub changes: PathBuf,
    /// What the replaced run's checks of the table were.
    pub checks: u64,
    /// (`store.table`, the replaced run's anonymized file), per parent.
    pub earlier_parents: Vec<(String, PathBuf)>,
}

/// The changes of `table` (staged in `part`) to check alone, or why the whole table is checked.
pub(super) fn changes_only(
    cx: &StepContext,
    p: &MigrateParams,
    table: &Table,
    part: &AnonPart,
    parents: &[String],
) -> Result<Result<ChangesOnly, String>, StepError> {
    let id = table.id();
    let Some(run) = p.replaces.as_ref().filter(|_| p.incremental) else {
        return Ok(Err("not an incremental refresh".into()));
    };
    if !crate::migrate::delta::read_by_difference(cx, &id) {
        return Ok(Err("it was read whole".into()));
    }
    if p.strategy != Strategy::Insert || p.config.reference_tables.contains(&id) {
        return Ok(Err("it is not loaded by insert".into()));
    }
    if !table.uniques.is_empty() {
        return Ok(Err("it has unique constraints besides its key".into()));
    }
    let [merged] = &part.files[..] else {
        return Ok(Err("it is staged in several files".into()));
    };
    let sidecar = std::fs::read(diff_delta::sidecar_file(&merged.path))
        .ok()
        .and_then(|t| serde_json::from_slice::<diff_delta::Sidecar>(&t).ok())
        .filter(|s| s.merged_sha256 == merged.sha256);
    let Some(sidecar) = sidecar else {
        return Ok(Err("its merge left no sidecar matching its staging".into()));
    };
    let fatal = |m: String| StepError::Fatal(format!("the run this refresh replaces, {run}: {m}"));
    let (_, outputs) = cx.host.outputs(run).map_err(|e| fatal(e.to_string()))?;
    let output = |step: &str| outputs.iter().find(|(s, _)| s == step).map(|(_, o)| o);
    let Some(before) = output(&format!("validate/{id}")) else {
        return Ok(Err(format!("run {run} did not check it alone")));
    };
    let Some(&checks) = before.metrics.get(CHECKS) else {
        return Ok(Err(format!("run {run} did not record what it checked")));
    };
    if before.metrics.get(CERT_RESOLVED) != Some(&0) {
        return Ok(Err(format!(
            "run {run} resolved some of its references in CERT (or did not count them)"
        )));
    }
    let checked: super::ValidatePart = before
        .value_as()
        .map_err(|e| fatal(format!("output of validate/{id}: {e}")))?;
    if !checked.findings.is_empty() {
        return Ok(Err(format!("run {run} found something in it")));
    }
    let staged = |t: &str| -> Result<Option<PathBuf>, StepError> {
        let Some(o) = output(&format!("anonymize/{t}")) else {
            return Ok(None);
        };
        let part: AnonPart = o
            .value_as()
            .map_err(|e| fatal(format!("output of anonymize/{t}: {e}")))?;
        Ok(match &part.files[..] {
            [f] if f.path.exists() => {
                wf_stores::verified::expect(&f.path, &f.sha256);
                (t != id || f.sha256 == sidecar.base_sha256).then(|| f.path.clone())
            }
            _ => None,
        })
    };
    if staged(&id)?.is_none() {
        return Ok(Err(format!(
            "run {run}'s staging of it is gone or not what the changes were merged into"
        )));
    }
    let mut earlier_parents = Vec::new();
    for parent in parents {
        match staged(parent)? {
            Some(f) => earlier_parents.push((parent.clone(), f)),
            None => return Ok(Err(format!("run {run}'s staging of {parent} is gone"))),
        }
    }
    let changes = diff_delta::changes_file(&merged.path);
    wf_stores::verified::expect(&changes, &sidecar.changes_sha256);
    Ok(Ok(ChangesOnly {
        changes,
        checks,
        earlier_parents,
    }))
}
