//! The `batch` workflow: one migrate run per district, unattended. Each district is a step that
//! starts (or, after a crash, resumes) its own `wf run migrate` child process, so every district
//! keeps its own journal, lock, report and rollback. A failed district is recorded and the batch
//! goes on; `wf resume <batch>` continues an interrupted batch, resuming children where they were.

use crate::runner_args::RunnerArgs;
use clap::Parser;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wf_engine::{EngineError, Plan, Step, StepContext, StepError, StepOutput, StepSpec, Workflow};

/// Arguments of `wf run batch` / `wf batch`; once checked (districts resolved from the manifest,
/// config file absolute) they are the run's journaled parameters.
#[derive(Debug, Clone, Parser, Serialize, Deserialize)]
#[command(
    name = "wf batch",
    about = "Migrate several districts, one run each, unattended"
)]
pub struct BatchArgs {
    /// Districts, comma-separated.
    #[arg(long, value_delimiter = ',', conflicts_with = "manifest")]
    pub districts: Vec<String>,
    /// A district manifest (`wf select-districts` writes manifests/district-manifest.json): its
    /// recommended pilots, or else every district in it.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Districts migrated at once.
    #[arg(long, default_value_t = 1)]
    pub parallel: usize,
    /// The configuration file (recorded so children and resumes use the same one).
    #[arg(long = "config-file")]
    pub config_file: Option<PathBuf>,
    /// Refresh each district (`wf refresh`: replace the run that holds it in CERT) instead of
    /// migrating it: the monthly overnight refresh of a manifest's districts.
    #[arg(long)]
    #[serde(default)]
    pub refresh: bool,
    /// With `--refresh`: each refresh writes only the rows that changed (`wf refresh --incremental`).
    #[arg(long, requires = "refresh")]
    #[serde(default)]
    pub incremental: bool,
    /// Arguments passed to every `wf run migrate` (e.g. `--dry-run`, `--strategy upsert`).
    #[arg(last = true)]
    pub migrate: Vec<String>,
}

/// What one district's step records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DistrictResult {
    pub district: String,
    pub run: String,
    /// done, failed, failed_validation, cancelled, …
    pub status: String,
    pub exit_code: i32,
    pub message: String,
}

pub struct Batch {
    districts: Vec<String>,
    config_file: PathBuf,
    migrate: Vec<String>,
    refresh: bool,
    runner: RunnerArgs,
    hash: String,
    /// The checked arguments, journaled as the run's `params` attribute.
    args: BatchArgs,
}

fn usage(msg: String) -> clap::Error {
    clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{msg}\n"))
}

/// The districts a manifest names.
fn from_manifest(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("manifest {}: cannot read it ({e})", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("manifest {}: not JSON ({e})", path.display()))?;
    let as_text = |x: &serde_json::Value| match x {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        other => other.get("district").and_then(|d| {
            d.as_str()
                .map(String::from)
                .or_else(|| d.as_i64().map(|i| i.to_string()))
        }),
    };
    let mut out: Vec<String> = Vec::new();
    if let Some(r) = v.get("recommended").and_then(|r| r.as_object()) {
        out.extend(r.values().filter_map(as_text));
    }
    if out.is_empty() {
        out.extend(
            v.get("districts")
                .and_then(|d| d.as_array())
                .into_iter()
                .flatten()
                .filter_map(as_text),
        );
    }
    out.dedup();
    if out.is_empty() {
        return Err(format!(
            "manifest {} names no district (expected `recommended` or `districts`)",
            path.display()
        ));
    }
    Ok(out)
}

impl Batch {
    /// Parses and checks `args` (a new batch): districts resolved, config file made absolute.
    pub fn from_args(
        args: &[String],
        default_config: &Path,
    ) -> Result<(Self, Vec<String>), clap::Error> {
        let mut parsed = BatchArgs::try_parse_from(
            std::iter::once("wf batch".to_string()).chain(args.iter().cloned()),
        )?;
        let mut districts = match &parsed.manifest {
            Some(m) => from_manifest(m).map_err(usage)?,
            None => parsed
                .districts
                .iter()
                .map(|d| d.trim().to_string())
                .filter(|d| !d.is_empty())
                .collect(),
        };
        districts.dedup();
        if districts.is_empty() {
            return Err(usage(
                "name the districts: --districts a,b,c or --manifest <file>".into(),
            ));
        }
        if let Some(bad) = districts.iter().find(|d| {
            !d.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        }) {
            return Err(usage(format!(
                "district `{bad}`: letters, digits, - and _ only"
            )));
        }
        let config_file = parsed
            .config_file
            .clone()
            .unwrap_or_else(|| default_config.to_path_buf());
        let config_file = std::path::absolute(&config_file).unwrap_or(config_file);
        // The manifest is read once: a resumed batch runs the districts it started with.
        parsed.districts = districts;
        parsed.manifest = None;
        parsed.config_file = Some(config_file);
        parsed.parallel = parsed.parallel.max(1);
        let batch = Self::from_checked(parsed);
        let mut recorded: Vec<String> = vec![
            "--districts".into(),
            batch.districts.join(","),
            "--parallel".into(),
            batch.args.parallel.to_string(),
        ];
        recorded.push("--config-file".into());
        recorded.push(batch.config_file.to_string_lossy().into_owned());
        if !batch.migrate.is_empty() {
            recorded.push("--".into());
            recorded.extend(batch.migrate.iter().cloned());
        }
        Ok((batch, recorded))
    }

    /// Builds the batch from checked arguments (a new batch's, or a resumed one's journaled
    /// parameters).
    pub fn from_checked(args: BatchArgs) -> Self {
        let config_file = args.config_file.clone().unwrap_or_default();
        let hash = hex::encode(Sha256::digest(
            format!(
                "{:?}\u{0}{}\u{0}{:?}",
                args.districts,
                config_file.display(),
                args.migrate
            )
            .as_bytes(),
        ));
        // A refreshing batch is another batch (older batches keep their hash).
        let hash = match (args.refresh, args.incremental) {
            (true, true) => format!("{hash}-refresh-incremental"),
            (true, false) => format!("{hash}-refresh"),
            _ => hash,
        };
        let runner = RunnerArgs {
            jobs: args.parallel.max(1),
            max_attempts: 1000,
            backoff_ms: 1000,
            max_backoff_ms: 10_000,
            step_timeout_ms: None,
            retry_for: None,
        };
        Batch {
            districts: args.districts.clone(),
            config_file,
            // `--incremental` is a refresh's argument: every child refresh gets it.
            migrate: args
                .incremental
                .then(|| "--incremental".to_string())
                .into_iter()
                .chain(args.migrate.iter().cloned())
                .collect(),
            refresh: args.refresh,
            runner,
            hash,
            args,
        }
    }

    /// `[[notify]]` of the batch's configuration (none when it cannot be read: the runs say why).
    pub fn notify_targets(&self) -> Vec<wf_stores::notify::Notify> {
        match wf_stores::Config::load(&self.config_file) {
            Ok(c) => c.notify,
            Err(e) => {
                tracing::warn!(error = %e, "The batch's [[notify]] targets cannot be read; it notifies no one");
                Vec::new()
            }
        }
    }

    pub fn runner(&self) -> &RunnerArgs {
        &self.runner
    }
}

impl Workflow for Batch {
    fn name(&self) -> &str {
        "batch"
    }
    fn run_prefix(&self) -> &str {
        "bat"
    }
    fn config_hash(&self) -> String {
        self.hash.clone()
    }
    fn plan(&self) -> Result<Plan, EngineError> {
        let steps = self
            .districts
            .iter()
            .map(|d| {
                let mut s = StepSpec::new(format!("district/{d}"), "batch.district", vec![]);
                s.params = d.clone().into_bytes();
                s
            })
            .collect();
        Ok(Plan {
            steps,
            checkpoints: vec![],
        })
    }
    fn attrs(&self) -> std::collections::BTreeMap<String, String> {
        std::collections::BTreeMap::from([(
            crate::params::ATTR.to_string(),
            crate::params::encode("batch", &self.args),
        )])
    }
    fn step(&self, spec: &StepSpec) -> Result<Arc<dyn Step>, EngineError> {
        Ok(Arc::new(DistrictStep {
            district: String::from_utf8_lossy(&spec.params).into_owned(),
            config_file: self.config_file.clone(),
            migrate: self.migrate.clone(),
            refresh: self.refresh,
        }))
    }
}

struct DistrictStep {
    district: String,
    config_file: PathBuf,
    migrate: Vec<String>,
    refresh: bool,
}

/// How a child `wf run migrate` ended, by its exit code.
fn status_of(code: i32) -> &'static str {
    match code {
        0 => "done",
        3 => "failed",
        4 => "paused",
        5 => "busy",
        6 => "cancelled",
        7 => "failed_validation",
        _ => "error",
    }
}

impl DistrictStep {
    /// The child's run id, allocated and recorded beside the step before the child starts, so a
    /// batch killed at any moment finds it on resume: it never starts a second run of a district
    /// while the first may still be running on its own.
    fn child_run(&self, cx: &StepContext, data: &wf_engine::DataDir) -> Result<String, StepError> {
        let io =
            |e: std::io::Error| StepError::Retryable(format!("district {}: {e}", self.district));
        let child_file = cx.artifact_dir.join("child-run");
        let recorded = std::fs::read_to_string(&child_file)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        if let Some(run) = recorded {
            return Ok(run);
        }
        let run = data
            .allocate_run_id(crate::migrate::RUN_PREFIX)
            .map_err(|e| StepError::Retryable(e.to_string()))?;
        let tmp = child_file.with_extension("tmp");
        std::fs::write(&tmp, &run)
            .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, &child_file).map_err(io)?;
        Ok(run)
    }

    /// Runs (or resumes) the district's migrate as a child `wf` process until it ends; its exit
    /// code and the line saying why it stopped (else its first error line).
    async fn spawn(
        &self,
        data: &wf_engine::DataDir,
        run: &str,
    ) -> Result<(i32, String), StepError> {
        use tokio::io::AsyncBufReadExt;
        let io =
            |e: std::io::Error| StepError::Retryable(format!("district {}: {e}", self.district));
        let exe = std::env::current_exe().map_err(io)?;
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg("--data-dir").arg(data.root());
        if data.has_run(run) {
            cmd.args(["resume", run]);
        } else if self.refresh {
            cmd.args(["refresh", "--run-id", run, "--district", &self.district])
                .arg("--config-file")
                .arg(&self.config_file)
                .args(&self.migrate);
        } else {
            cmd.args([
                "run",
                "--run-id",
                run,
                "migrate",
                "--district",
                &self.district,
            ])
            .arg("--config-file")
            .arg(&self.config_file)
            .args(&self.migrate);
        }
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(false);
        let mut child = cmd.spawn().map_err(io)?;
        let mut lines = tokio::io::BufReader::new(
            child
                .stdout
                .take()
                .ok_or_else(|| StepError::Fatal("no stdout".into()))?,
        )
        .lines();
        while lines.next_line().await.map_err(io)?.is_some() {}
        let out = child.wait_with_output().await.map_err(io)?;
        let code = out.status.code().unwrap_or(-1);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // The line saying why the run stopped, else the first error line.
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("wf:")).collect();
        let message = errors
            .iter()
            .find(|l| l.contains(" failed"))
            .or(errors.first())
            .copied()
            .unwrap_or_default()
            .to_string();
        Ok((code, message))
    }
}

#[async_trait::async_trait]
impl Step for DistrictStep {
    async fn run(&self, cx: &StepContext) -> Result<StepOutput, StepError> {
        let io =
            |e: std::io::Error| StepError::Retryable(format!("district {}: {e}", self.district));
        std::fs::create_dir_all(&cx.artifact_dir).map_err(io)?;
        let data = cx.host.data();
        let run = self.child_run(cx, data)?;
        let (code, message) = self.spawn(data, &run).await?;
        match code {
            5 => {
                return Err(StepError::Retryable(format!(
                    "district {}: run {run} is held by another runner; waiting",
                    self.district
                )))
            }
            4 => {
                return Err(StepError::Retryable(format!(
                    "district {}: run {run} paused; resuming it",
                    self.district
                )))
            }
            _ => {}
        }
        if !data.has_run(&run) {
            return Err(StepError::Fatal(format!(
                "district {}: wf run migrate did not start: {message}",
                self.district
            )));
        }
        let result = DistrictResult {
            district: self.district.clone(),
            run,
            status: status_of(code).into(),
            exit_code: code,
            message,
        };
        let mut o = StepOutput::with_value(&result)?;
        o.metrics.insert("failed".into(), u64::from(code != 0));
        Ok(o)
    }
}

/// The batch's districts as recorded so far, for the summary.
pub fn results(outputs: &[(String, wf_engine::model::StepOutput)]) -> Vec<DistrictResult> {
    outputs
        .iter()
        .filter(|(s, _)| s.starts_with("district/"))
        .filter_map(|(_, o)| o.value_as::<DistrictResult>().ok())
        .collect()
}
