//! The steps of the `migrate` workflow: extract (PROD → raw staging), anonymize (raw → anonymized
//! staging), purge-raw (the raw PII files go once anonymized output is journaled), load (one step
//! per CERT store, in `load.rs`). Each is safe to run again: files are written by temp-and-rename, loads are
//! exactly-once through their marker rows, purge deletes what is there.

mod anon;
mod blocking;
pub(crate) mod delta;
mod extract;
pub(crate) mod handover;
mod held;
mod inputs;
mod leaks;
mod load;
pub use anon::{AnonPart, AnonTableStep, AnonTask, FixesStep, ANON_KIND, FIXES_KIND, FIXES_STEP};
pub use extract::{
    extract_metrics, ExtractGraphStep, ExtractPart, ExtractStep, ExtractTableStep, TableTask,
    GRAPH_KIND, TABLE_KIND,
};
pub use leaks::{AnonScanStep, SCAN_KIND, SCAN_STEP};
pub use load::LoadStep;
pub(crate) use load::{manifest_dir_of, store_jobs};

use crate::anonymize::{anonymize, AnonKey, Rules, TableInput};
use inputs::{graph_input, table_input};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wf_engine::{Artifact, Step, StepContext, StepError, StepOutput};
use wf_stores::extract::TableFile;
use wf_stores::graph::load::GraphLoad;
use wf_stores::graph::stage::GraphFileKind;
use wf_stores::load::{LoadReport, StoreLoad, Strategy};
use wf_stores::schema::StoreSchema;
use wf_stores::staging::FileInfo;
use wf_stores::{Config, StoreError};

/// What every migrate step needs, built once from the run's arguments.
#[derive(Debug, Clone)]
pub struct MigrateParams {
    pub config: Config,
    /// The anonymization rules file (resolved against wf.toml's directory).
    pub rules_file: PathBuf,
    /// The validation rules file, if the config names one.
    pub validation_file: Option<PathBuf>,
    pub district: String,
    pub batch_rows: usize,
    pub strategy: Strategy,
    pub dry_run: bool,
    /// The key fingerprint the run started with: another key is refused.
    pub key_fingerprint: String,
    /// Reuse this earlier run's extract of the same district instead of reading PROD again.
    pub from_run: Option<String>,
    /// A refresh: the earlier run whose district this run replaces; each load deletes that run's
    /// rows in the transaction that loads the new ones.
    pub replaces: Option<String>,
    /// A refresh that writes only what changed since `replaces` loaded (see `wf_stores::load::diff`).
    pub incremental: bool,
    /// No load steps (`--skip-load`): the gate's rehearsal is rolled back, not handed over.
    pub skip_load: bool,
    /// The graph's extract is a step of its own beside the plan (`extract/<graph>` starts with
    /// the run, not after the relational stores are planned); runs created before that spawn it
    /// from the plan, and keep doing so when resumed.
    pub graph_apart: bool,
}

/// A staged table as journaled.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StagedTable {
    pub table: String,
    pub path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

impl From<&TableFile> for StagedTable {
    fn from(t: &TableFile) -> Self {
        StagedTable {
            table: t.table.clone(),
            path: t.file.path.clone(),
            rows: t.file.rows,
            bytes: t.file.bytes,
            sha256: t.file.sha256.clone(),
        }
    }
}

/// Output of `extract`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExtractOut {
    pub schemas: Vec<StoreSchema>,
    pub files: Vec<StagedTable>,
    pub snapshots: BTreeMap<String, String>,
    /// The graph store's files (nodes per label, relationships per type and end labels).
    #[serde(default)]
    pub graph: Vec<GraphStaged>,
}

/// A staged graph file as journaled.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GraphStaged {
    pub staged: StagedTable,
    pub kind: GraphFileKind,
}

impl AnonymizeOut {
    /// Registers every anonymized file's recorded digest, so reading it checks it.
    pub fn expect_files(&self) {
        for f in &self.files {
            wf_stores::verified::expect(&f.path, &f.sha256);
        }
    }

    /// The anonymized files split into relational (`store.table`, path) and graph files.
    pub fn split(
        &self,
        graph: Option<&wf_stores::graph::GraphConfig>,
    ) -> (Vec<(String, PathBuf)>, Vec<PathBuf>) {
        let prefix = graph.map(|g| format!("{}.", g.name));
        let is_graph = |t: &str| prefix.as_ref().is_some_and(|g| t.starts_with(g));
        let (g, r): (Vec<&StagedTable>, Vec<&StagedTable>) =
            self.files.iter().partition(|f| is_graph(&f.table));
        (
            r.iter()
                .map(|f| (f.table.clone(), f.path.clone()))
                .collect(),
            g.iter().map(|f| f.path.clone()).collect(),
        )
    }
}

impl ExtractOut {
    /// Every raw file, relational and graph.
    pub fn all_files(&self) -> impl Iterator<Item = &StagedTable> {
        self.files
            .iter()
            .chain(self.graph.iter().map(|g| &g.staged))
    }
}

/// Output of `anonymize`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnonymizeOut {
    pub files: Vec<StagedTable>,
    pub key_fingerprint: String,
}

/// Output of `load/<store>`: the job (rollback needs it) and what it did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadOut {
    pub store: String,
    pub job: Option<StoreLoad>,
    pub report: Option<LoadReport>,
    /// The graph store's load, for `load/<graph>`.
    #[serde(default)]
    pub graph_job: Option<GraphLoad>,
}

pub(crate) fn store_err(e: StoreError) -> StepError {
    if matches!(e, StoreError::Rule { .. }) {
        StepError::Gate(e.to_string())
    } else if e.is_retryable() {
        StepError::Retryable(e.to_string())
    } else {
        StepError::Fatal(e.to_string())
    }
}

/// Maps store errors of a step reading the staging files of `producer`: a file that changed on
/// disk since it was written makes `producer` run again; anything else as `store_err`.
pub(crate) fn input_err(producer: &'static str) -> impl Fn(StoreError) -> StepError {
    move |e| match e {
        StoreError::Corrupt { ref path, .. } => StepError::Redo {
            producer: producer_of(path).unwrap_or_else(|| producer.to_string()),
            path: path.clone(),
            message: e.to_string(),
        },
        other => store_err(other),
    }
}

/// The per-table step that wrote `path`, from its artifact directory
/// (`…/steps/anonymize~ids.students/anon/…` was written by `anonymize/ids.students`).
pub(crate) fn producer_of(path: &Path) -> Option<String> {
    let parts: Vec<&std::ffi::OsStr> = path.iter().collect();
    let at = parts.iter().rposition(|c| *c == "steps")?;
    let dir = parts.get(at + 1)?.to_str()?;
    dir.contains('~').then(|| dir.replace('~', "/"))
}

/// The run attribute of runs whose graph extract is a step beside the plan.
pub const GRAPH_APART: &str = "graph_extract_apart";

/// The plan's metric: 1 when a relational table holds a row of the district.
const FOUND: &str = "district_rows_found";

/// A district neither in a relational table (the plan's metric, from `cx`'s input `extract`)
/// nor among the graph's `nodes` is refused, naming where it was looked for.
pub(crate) fn found_somewhere(
    cx: &StepContext,
    p: &MigrateParams,
    nodes: u64,
) -> Result<(), StepError> {
    let Some(g) = &p.config.graph else {
        return Ok(());
    };
    let found = cx
        .inputs
        .get("extract")
        .and_then(|o| o.metrics.get(FOUND).copied())
        .unwrap_or(0);
    if nodes > 0 || found > 0 {
        return Ok(());
    }
    let labels = if g.district_labels.is_empty() {
        "any label".to_string()
    } else {
        g.district_labels.join(", ")
    };
    Err(StepError::Fatal(format!(
        "district {d} not found: no row of any table has {} = {d} and no node of {labels} in graph {} has {} = {d}; `wf select-districts` lists the districts",
        p.config.district_column,
        g.name,
        g.district_property,
        d = p.district
    )))
}

/// The prefix of the extract metrics that count graph nodes left out for lacking their key.
pub const SKIPPED: &str = "graph_skipped_without_key:";

pub(crate) fn private_dir(dir: &Path) -> Result<(), StepError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|_| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| StepError::Fatal(format!("cannot create {}: {e}", dir.display())))
}

/// `anonymize`: raw staging → anonymized staging under the rules; default deny and leak scan.
pub struct AnonymizeStep(pub Arc<MigrateParams>);

#[async_trait::async_trait]
impl Step for AnonymizeStep {
    async fn run(&self, cx: &StepContext) -> Result<StepOutput, StepError> {
        let p = self.0.clone();
        // Per-table steps did the work: the leak scan over all of them is what is left.
        let hashes = cx.artifact_dir.join(crate::anonymize::LEAK_HASHES);
        if let Some(report) = leaks::stage_report(cx, &p, &hashes).await? {
            return anonymize_output(cx, &report);
        }
        let ex = ExtractOut::input(cx)?;
        let (rules, key) = rules_and_key(&p)?;
        let mut inputs: Vec<TableInput> =
            ex.files.iter().map(|f| table_input(&ex, f, &p)).collect();
        if let Some(g) = &p.config.graph {
            inputs.extend(ex.graph.iter().map(|f| graph_input(g, f)));
        }
        // Purged (the run ended, or `wf purge`): extract again.
        anon::present(&inputs)?;
        let out_dir = cx.artifact_dir.join("anon");
        let rules_file = p.rules_file.clone();
        let written = out_dir.join(crate::anonymize::LEAK_HASHES);
        let report =
            blocking::blocking(move || anonymize(&inputs, &rules, &rules_file, &key, &out_dir))
                .await?;
        std::fs::rename(&written, &hashes)
            .map_err(|e| StepError::Retryable(format!("{}: {e}", written.display())))?;
        anonymize_output(cx, &report)
    }
}

/// The rules of the run and the key of the environment, refused unless it is the run's key.
pub(super) fn rules_and_key(p: &MigrateParams) -> Result<(Rules, AnonKey), StepError> {
    let rules = Rules::load(&p.rules_file).map_err(StepError::Fatal)?;
    let key = AnonKey::from_env(&rules.key_env).map_err(|e| StepError::Fatal(e.to_string()))?;
    if key.fingerprint() != p.key_fingerprint {
        return Err(StepError::Fatal(format!(
            "the anonymization key in {} is not the one this run started with (fingerprint {} vs {}): outputs would not join; use the original key or start a new run",
            rules.key_env,
            key.fingerprint(),
            p.key_fingerprint
        )));
    }
    Ok((rules, key))
}

/// Writes the anonymization report beside the step (the scan wrote the leak hashes), and journals the
/// anonymized files as the step's output and artifacts.
fn anonymize_output(
    cx: &StepContext,
    report: &crate::anonymize::Report,
) -> Result<StepOutput, StepError> {
    std::fs::create_dir_all(&cx.artifact_dir)
        .map_err(|e| StepError::Retryable(format!("{}: {e}", cx.artifact_dir.display())))?;
    let report_path = cx.artifact_dir.join("anonymization-report.json");
    let json = serde_json::to_vec_pretty(report).map_err(|e| StepError::Fatal(e.to_string()))?;
    std::fs::write(&report_path, json)
        .map_err(|e| StepError::Retryable(format!("{}: {e}", report_path.display())))?;
    let files: Vec<StagedTable> = report
        .files
        .iter()
        .map(|(t, f): &(String, FileInfo)| StagedTable {
            table: t.clone(),
            path: f.path.clone(),
            rows: f.rows,
            bytes: f.bytes,
            sha256: f.sha256.clone(),
        })
        .collect();
    let mut output = StepOutput::with_value(&AnonymizeOut {
        files: files.clone(),
        key_fingerprint: report.key_fingerprint.clone(),
    })?;
    for f in &files {
        output.artifacts.push(
            Artifact::with_sha256(&f.path, &f.sha256)
                .map_err(|e| StepError::Retryable(format!("{}: {e}", f.path.display())))?,
        );
    }
    output
        .metrics
        .insert("rows".into(), files.iter().map(|f| f.rows).sum());
    Ok(output)
}

/// `purge-raw`: deletes the raw (PII) staging once the anonymized files are journaled, unless the
/// run keeps it (`--keep-raw`).
pub struct PurgeRawStep {
    pub keep: bool,
}

#[async_trait::async_trait]
impl Step for PurgeRawStep {
    async fn run(&self, cx: &StepContext) -> Result<StepOutput, StepError> {
        let ex = ExtractOut::input(cx)?;
        if self.keep {
            return StepOutput::with_value(&0u64);
        }
        let mut removed = 0u64;
        // The plan's key files, beside the raw tables.
        let dirs: std::collections::BTreeSet<&Path> =
            ex.all_files().filter_map(|f| f.path.parent()).collect();
        let keys = dirs
            .iter()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "keys"));
        for k in keys {
            if std::fs::remove_file(&k).is_ok() {
                removed += 1;
            }
        }
        for f in ex.all_files() {
            match std::fs::remove_file(&f.path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(StepError::Retryable(format!(
                        "cannot delete {}: {e}",
                        f.path.display()
                    )))
                }
            }
        }
        let mut out = StepOutput::with_value(&removed)?;
        out.metrics.insert("files".into(), removed);
        Ok(out)
    }
}

/// The run's validation rules (none when the config names no file).
pub(crate) fn validation_rules(
    p: &MigrateParams,
) -> Result<crate::validate::ValidationRules, StepError> {
    match &p.validation_file {
        Some(f) => crate::validate::ValidationRules::load(f).map_err(StepError::Fatal),
        None => Ok(Default::default()),
    }
}

/// The loads of `p.replaces` (the run a refresh replaces), by store; none for a plain migrate.
/// Their own `replaces` are dropped: rows an even earlier run loaded are gone already.
pub(crate) fn replaced_loads(
    cx: &StepContext,
    p: &MigrateParams,
) -> Result<Vec<LoadOut>, StepError> {
    let Some(run) = &p.replaces else {
        return Ok(Vec::new());
    };
    let fatal = |m: String| StepError::Fatal(format!("the run this refresh replaces, {run}: {m}"));
    let (_, outputs) = cx.host.outputs(run).map_err(|e| fatal(e.to_string()))?;
    let mut out = Vec::new();
    for (id, o) in outputs.iter().filter(|(id, _)| id.starts_with("load/")) {
        let mut l: LoadOut = o
            .value_as()
            .map_err(|e| fatal(format!("output of {id}: {e}")))?;
        if let Some(j) = l.job.as_mut() {
            j.replaces = None;
        }
        if let Some(g) = l.graph_job.as_mut() {
            g.replaces = None;
        }
        out.push(l);
    }
    Ok(out)
}

/// `--from-run`: the raw extract of an earlier migrate run of the same district, checked against
/// its journaled checksums and linked into this run's raw directory (PROD is not read again).
pub(super) fn reuse_extract(
    cx: &StepContext,
    p: &MigrateParams,
    src: &str,
    raw: &Path,
) -> Result<StepOutput, StepError> {
    let fatal = |m: String| StepError::Fatal(format!("--from-run {src}: {m}"));
    let (record, outputs) = cx.host.outputs(src).map_err(|e| fatal(e.to_string()))?;
    if record.workflow != "migrate" || record.attrs.get("district") != Some(&p.district) {
        return Err(fatal(format!(
            "it is not a migrate run of district {}",
            p.district
        )));
    }
    // A run whose graph extract is a step of its own must have finished it too.
    let graph = p
        .config
        .graph
        .as_ref()
        .filter(|_| record.attrs.contains_key(GRAPH_APART))
        .map(|g| g.name.as_str());
    let extracted = record_extracted(&outputs, graph);
    let mut ex: ExtractOut = match ExtractOut::from_outputs(&outputs) {
        Some(Ok(ex)) if extracted => ex,
        Some(Err(e)) => return Err(fatal(e)),
        _ => return Err(fatal("it has not finished extracting".into())),
    };
    let relink = |f: &mut StagedTable| -> Result<(), StepError> {
        if !f.path.exists() {
            return Err(fatal(format!(
                "{} is gone (raw extracts are purged after anonymization): reuse runs started with --keep-raw",
                f.path.display()
            )));
        }
        let sum =
            wf_engine::digest::file(&f.path, Some(&f.sha256)).map_err(|e| fatal(e.to_string()))?;
        if sum != f.sha256 {
            return Err(fatal(format!(
                "{} does not match its recorded checksum",
                f.path.display()
            )));
        }
        let name = f.path.file_name().unwrap_or_default();
        let to = raw.join(name);
        let _ = std::fs::remove_file(&to);
        std::fs::hard_link(&f.path, &to)
            .or_else(|_| std::fs::copy(&f.path, &to).map(|_| ()))
            .map_err(|e| StepError::Retryable(format!("{}: {e}", to.display())))?;
        f.path = to;
        Ok(())
    };
    for f in ex.files.iter_mut() {
        relink(f)?;
    }
    for g in ex.graph.iter_mut() {
        relink(&mut g.staged)?;
    }
    let rows: u64 = ex.all_files().map(|f| f.rows).sum();
    let mut output = StepOutput::with_value(&ex)?;
    output.metrics.insert("rows".into(), rows);
    Ok(output)
}

/// True when a run's outputs hold its whole extract stage: `extract` and every extract step it
/// spawned (its anonymize and validate steps may have failed: that is why runs are reused).
fn record_extracted(outputs: &[(String, StepOutput)], graph: Option<&str>) -> bool {
    let Some((_, plan)) = outputs.iter().find(|(s, _)| s == "extract") else {
        return false;
    };
    let done = |id: &str| outputs.iter().any(|(s, _)| s == id);
    plan.spawn
        .iter()
        .filter(|spec| spec.kind == TABLE_KIND || spec.kind == GRAPH_KIND)
        .all(|spec| done(&spec.id))
        && graph.is_none_or(|g| done(&format!("extract/{g}")))
}
