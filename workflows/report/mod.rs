//! Migration reports: `reports/<run>.md` and `reports/<run>.json`, built from the journal after
//! every migrate run whatever its outcome (a failed run needs its report most), and on demand by
//! `wf report <run>`. Only counts, anonymized example keys and field names: never a PII value.

mod markdown;
mod model;

pub use markdown::markdown;
pub use model::{AnonSummary, LoadCheck, Phase, RunReport, TableRows};

use std::collections::BTreeMap;
use std::path::PathBuf;
use wf_engine::Engine;
use wf_steps::migrate::{AnonymizeOut, ExtractOut, LoadOut};
use wf_steps::validate::{Gate, ValidationReport};

/// How long at least one of these (start, end) intervals was open, in ms: their union's length.
fn busy_ms(intervals: impl Iterator<Item = (u64, u64)>) -> u64 {
    let mut v: Vec<(u64, u64)> = intervals.filter(|(s, e)| e > s).collect();
    v.sort_unstable();
    let (mut total, mut open): (u64, Option<(u64, u64)>) = (0, None);
    for (s, e) in v {
        open = match open {
            Some((os, oe)) if s <= oe => Some((os, oe.max(e))),
            Some((os, oe)) => {
                total += oe - os;
                Some((s, e))
            }
            None => Some((s, e)),
        };
    }
    total + open.map_or(0, |(s, e)| e - s)
}

/// The status to show for a run: a migrate run that finished under `--dry-run` committed
/// nothing, so it reads `done_dry_run`, never plain `done`.
pub fn shown_status(status: &str, attrs: &BTreeMap<String, String>) -> String {
    if status == "done" && attrs.get("dry_run").map(String::as_str) == Some("true") {
        return "done_dry_run".into();
    }
    if status == "done" && attrs.contains_key("superseded_by") {
        return "superseded".into();
    }
    status.to_string()
}

fn step_dir(engine: &Engine, run: &str, step: &str) -> PathBuf {
    engine
        .data()
        .run_dir(run)
        .join("steps")
        .join(step.replace('/', "~"))
}

/// Builds the report of `run` from its journal and step files.
pub fn build(engine: &Engine, run: &str) -> anyhow::Result<RunReport> {
    let r = engine.readout(run)?;
    Ok(build_from(engine, run, &r.status, &r.outputs, &r.events))
}

/// Builds a report from a status view, step outputs and events (the `report` step passes what a
/// live run can give it: its inputs and the runner's published status).
pub fn build_from(
    engine: &Engine,
    run: &str,
    st: &wf_engine::StatusView,
    outputs: &[(String, wf_engine::model::StepOutput)],
    events: &[wf_engine::model::Event],
) -> RunReport {
    let incremental = st.attrs.get("incremental").map(String::as_str) == Some("true");
    let (tables, load_checks) = rows_and_checks(outputs, incremental);
    let validation: Option<ValidationReport> =
        std::fs::read(step_dir(engine, run, "validate").join("validation-report.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
    let mut validation_status = validation.as_ref().map(|v| v.status);
    if validation_status == Some(Gate::Passed)
        && load_checks
            .iter()
            .any(|c| c.violations > 0 && c.severity == "warning")
    {
        validation_status = Some(Gate::PassedWithWarnings);
    }
    let anonymization =
        std::fs::read(step_dir(engine, run, "anonymize").join("anonymization-report.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .map(|a| anon_summary(&a));
    let (retries, recoveries) = retries_and_recoveries(events);
    let phases = st
        .steps
        .iter()
        .map(|s| Phase {
            step: s.id.clone(),
            status: s.status.clone(),
            attempts: s.attempts,
            seconds: s.duration_ms.map(|d| d as f64 / 1000.0),
            rows: s.metrics.get("rows").copied(),
            cpu_seconds: s
                .metrics
                .get(wf_engine::resources::CPU_MS)
                .map(|c| *c as f64 / 1000.0),
            peak_rss_mb: s
                .metrics
                .get(wf_engine::resources::PEAK_RSS_KB)
                .map(|k| *k as f64 / 1024.0),
        })
        .collect();
    let status = shown_status(&st.status, &st.attrs);
    let wall = st.updated_ms.saturating_sub(st.created_ms) as f64 / 1000.0;
    let busy = busy_ms(
        st.steps
            .iter()
            .filter_map(|s| Some((s.started_ms?, s.started_ms? + s.duration_ms?))),
    ) as f64
        / 1000.0;
    let next = match status.as_str() {
        "done" => vec![format!("wf validate {run}"), format!("wf rollback {run}")],
        "failed_validation" => vec![format!("wf recover {run} anonymized")],
        "done_dry_run" | "rolled_back" | "cancelled" => vec![],
        _ => vec![format!("wf resume {run}")],
    };
    RunReport {
        run: st.id.clone(),
        status,
        district: st.attrs.get("district").cloned(),
        validation_status,
        started_ms: st.created_ms,
        updated_ms: st.updated_ms,
        seconds: wall,
        busy_seconds: busy,
        idle_seconds: (wall - busy).max(0.0),
        phases,
        tables,
        anonymization,
        validation,
        load_checks,
        retries,
        recoveries,
        checkpoints: st
            .checkpoints
            .iter()
            .map(|c| (c.name.clone(), c.reached))
            .collect(),
        message: st.message.clone(),
        next,
        raw_pii_on_disk: crate::purge::holds_raw(engine, run),
    }
}

/// Rows per table (extracted, anonymized, loaded) and the rules checked in the load
/// transactions, from the step outputs.
fn rows_and_checks(
    outputs: &[(String, wf_engine::model::StepOutput)],
    incremental: bool,
) -> (BTreeMap<String, TableRows>, Vec<LoadCheck>) {
    let out = |id: &str| outputs.iter().find(|(s, _)| s == id).map(|(_, o)| o);
    let mut tables: BTreeMap<String, TableRows> = BTreeMap::new();
    if let Some(ex) = ExtractOut::from_outputs(outputs).and_then(Result::ok) {
        for f in ex.all_files() {
            let row = tables.entry(f.table.clone()).or_default();
            row.extracted = f.rows;
            let store = f.table.split('.').next().unwrap_or_default();
            row.snapshot = ex.snapshots.get(store).cloned();
        }
    }
    // Per-table steps record the snapshot each table was read in.
    let parts = outputs.iter().filter(|(s, _)| s.starts_with("extract/"));
    for part in parts.filter_map(|(_, o)| o.value_as::<wf_steps::migrate::ExtractPart>().ok()) {
        for f in &part.files {
            tables.entry(f.table.clone()).or_default().snapshot = part.snapshot.clone();
        }
    }
    if let Some(an) = out("anonymize").and_then(|o| o.value_as::<AnonymizeOut>().ok()) {
        for f in &an.files {
            tables.entry(f.table.clone()).or_default().anonymized = f.rows;
        }
    }
    let mut load_checks = Vec::new();
    let loads = outputs.iter().filter(|(s, _)| s.starts_with("load/"));
    for l in loads.filter_map(|(_, o)| o.value_as::<LoadOut>().ok()) {
        let Some(r) = &l.report else { continue };
        for t in &r.tables {
            let row = tables.entry(t.table.clone()).or_default();
            row.loaded = Some(t.inserted);
            if incremental {
                row.unchanged = Some(t.rows_in_file.saturating_sub(t.inserted));
            }
        }
        for c in &r.checks {
            load_checks.push(LoadCheck {
                store: l.store.clone(),
                rule: c.name.clone(),
                severity: c.severity.clone(),
                violations: c.violations,
            });
        }
    }
    (tables, load_checks)
}

/// The attempts that were retried and the recoveries, from the run's events.
fn retries_and_recoveries(events: &[wf_engine::model::Event]) -> (u64, Vec<String>) {
    let mut retries = 0;
    let mut recoveries = Vec::new();
    for e in events {
        match &e.kind {
            wf_engine::model::EventKind::StepFailed {
                retry_in_ms: Some(_),
                ..
            } => retries += 1,
            wf_engine::model::EventKind::Recovered {
                checkpoint,
                invalidated,
            } => recoveries.push(format!("from {checkpoint} ({invalidated} steps re-run)")),
            _ => {}
        }
    }
    (retries, recoveries)
}

fn anon_summary(a: &serde_json::Value) -> AnonSummary {
    let fields = a["fields"].as_array().cloned().unwrap_or_default();
    let with_rule = |f: &&serde_json::Value| !f["rule"].is_null();
    AnonSummary {
        key_fingerprint: a["key_fingerprint"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        fields: fields.len(),
        fields_with_rules: fields.iter().filter(with_rule).count(),
        values_changed: fields
            .iter()
            .map(|f| f["changed"].as_u64().unwrap_or(0))
            .sum(),
        kept_on_purpose: fields
            .iter()
            .filter(|f| f["rule"].as_str().is_some_and(|r| r.contains("Keep")))
            .map(|f| f["field"].as_str().unwrap_or_default().to_string())
            .collect(),
        detector_findings: fields
            .iter()
            .filter(|f| f["detected"].as_array().is_some_and(|d| !d.is_empty()))
            .map(|f| {
                let d: Vec<String> = f["detected"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x.as_str().map(str::to_lowercase))
                    .collect();
                format!(
                    "{} ({})",
                    f["field"].as_str().unwrap_or_default(),
                    d.join(", ")
                )
            })
            .collect(),
        leak_scan: if a["leaks"].as_array().is_some_and(|l| l.is_empty()) {
            "passed: no original value of an anonymized field remains".into()
        } else {
            format!("FAILED: {}", a["leaks"])
        },
    }
}

/// Writes `reports/<run>.md` and `.json`; returns the Markdown path.
pub fn write(engine: &Engine, run: &str) -> anyhow::Result<PathBuf> {
    write_report(engine, run, &build(engine, run)?)
}

fn write_report(engine: &Engine, run: &str, r: &RunReport) -> anyhow::Result<PathBuf> {
    let dir = engine.data().root().join("reports");
    std::fs::create_dir_all(&dir)?;
    let md = dir.join(format!("{run}.md"));
    let json = dir.join(format!("{run}.json"));
    for (path, bytes) in [
        (&json, serde_json::to_vec_pretty(r)?),
        (&md, markdown(r).into_bytes()),
    ] {
        // `<run>.json.tmp`, `<run>.md.tmp`: a name per target, so two writers never share one.
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)?;
    }
    Ok(md)
}

/// The `report` step of migrate (checkpoint `reported`): writes the report from its inputs and the
/// runner's live status. The CLI writes it again when the run ends, with the journal's events.
pub struct ReportStep;

#[async_trait::async_trait]
impl wf_engine::Step for ReportStep {
    async fn run(
        &self,
        cx: &wf_engine::StepContext,
    ) -> Result<wf_engine::StepOutput, wf_engine::StepError> {
        let engine = Engine::new(cx.host.data().clone());
        let st = cx
            .host
            .status(&cx.run_id)
            .map_err(|e| wf_engine::StepError::Retryable(e.to_string()))?;
        let outputs: Vec<(String, wf_engine::model::StepOutput)> = cx
            .inputs
            .iter()
            .map(|(k, v)| (k.clone(), (**v).clone()))
            .collect();
        let mut report = build_from(&engine, &cx.run_id, &st, &outputs, &[]);
        report.status = "done".into();
        report.next = vec![
            format!("wf validate {}", cx.run_id),
            format!("wf rollback {}", cx.run_id),
        ];
        let md = write_report(&engine, &cx.run_id, &report)
            .map_err(|e| wf_engine::StepError::Retryable(e.to_string()))?;
        wf_engine::StepOutput::with_value(&md.to_string_lossy().into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::busy_ms;

    #[test]
    fn busy_time_is_the_union_of_the_steps_intervals() {
        // Two overlapping loads, a gap (a pause), then one more step; an empty interval.
        let steps = [(0, 10), (5, 20), (100, 130), (40, 40), (120, 125)];
        assert_eq!(busy_ms(steps.into_iter()), 20 + 30);
        assert_eq!(busy_ms(std::iter::empty()), 0);
    }
}
