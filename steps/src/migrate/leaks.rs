//! `anonymize/scan`: the leak scan over every table's anonymized output, as soon as the last
//! table's anonymize step is done. Steps after the plan wait for everything it spawned, the held
//! loads included, so the scan in the static `anonymize` step ran after the loads; as a step the
//! plan spawns, it runs beside them. The static step then writes the stage's report from it.

pub use super::anon::SCAN_STEP;
use super::anon::{blocking, parts, ANON_KIND};
use super::{rules_and_key, MigrateParams};
use crate::anonymize::{scan, Report, TableOut, LEAK_HASHES};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wf_engine::{Artifact, Step, StepContext, StepError, StepOutput, StepSpec};

/// Step kind of the leak scan.
pub const SCAN_KIND: &str = "migrate.anonymize_scan";

/// Output of `anonymize/scan`: the sorted originals' hashes it wrote, and how many.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScanPart {
    pub hashes: PathBuf,
    pub originals: u64,
}

/// The scan's step, after every table's and the graph's anonymize step among `specs` (none:
/// no step).
pub(crate) fn spec(specs: &[StepSpec]) -> Option<StepSpec> {
    let deps: Vec<String> = specs
        .iter()
        .filter(|s| s.kind == ANON_KIND)
        .map(|s| s.id.clone())
        .collect();
    (!deps.is_empty()).then(|| StepSpec::new(SCAN_STEP, SCAN_KIND, deps))
}

/// `anonymize/scan`.
pub struct AnonScanStep(pub Arc<MigrateParams>);

#[async_trait::async_trait]
impl Step for AnonScanStep {
    async fn run(&self, cx: &StepContext) -> Result<StepOutput, StepError> {
        let Some((tables, files)) = parts(cx)? else {
            return Err(StepError::Fatal(format!(
                "{SCAN_STEP} has no anonymized table to scan"
            )));
        };
        let (_, key) = rules_and_key(&self.0)?;
        std::fs::create_dir_all(&cx.artifact_dir).map_err(|e| io(&cx.artifact_dir, e))?;
        let hashes = cx.artifact_dir.join(LEAK_HASHES);
        let out = hashes.clone();
        let report = blocking(move || scan(tables, files, &key, &out)).await?;
        let mut output = StepOutput::with_value(&ScanPart {
            hashes: hashes.clone(),
            originals: report.originals,
        })?;
        output
            .artifacts
            .push(Artifact::from_file(&hashes).map_err(|e| io(&hashes, e))?);
        Ok(output)
    }
}

/// The stage's report for the static `anonymize` step, with the originals' hashes at `hashes`:
/// from `anonymize/scan` when the plan added it, else scanned here (runs planned before it).
/// `None` without per-table steps.
pub(super) async fn stage_report(
    cx: &StepContext,
    p: &MigrateParams,
    hashes: &Path,
) -> Result<Option<Report>, StepError> {
    let Some((tables, files)) = parts(cx)? else {
        return Ok(None);
    };
    let (_, key) = rules_and_key(p)?;
    std::fs::create_dir_all(&cx.artifact_dir).map_err(|e| io(&cx.artifact_dir, e))?;
    if !cx.inputs.contains_key(SCAN_STEP) {
        let out = hashes.to_path_buf();
        return blocking(move || scan(tables, files, &key, &out))
            .await
            .map(Some);
    }
    let part: ScanPart = cx.input(SCAN_STEP)?;
    link(&part.hashes, hashes)?;
    Ok(Some(Report {
        key_fingerprint: key.fingerprint(),
        fields: tables.iter().flat_map(|t| t.fields.clone()).collect(),
        files: tables
            .into_iter()
            .map(|t: TableOut| (t.table, t.info))
            .collect(),
        leaks: Vec::new(),
        originals: part.originals,
    }))
}

/// `to` becomes `from` (a hard link; a copy across file systems), replacing what was there.
fn link(from: &Path, to: &Path) -> Result<(), StepError> {
    let _ = std::fs::remove_file(to);
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).map_err(|e| io(from, e))?;
    }
    Ok(())
}

fn io(path: &Path, e: impl std::fmt::Display) -> StepError {
    StepError::Retryable(format!("{}: {e}", path.display()))
}
