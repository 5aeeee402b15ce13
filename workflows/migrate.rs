//! The `migrate` workflow: one district from PROD into CERT, anonymized.
//! Steps: `extract` (the plan, spawning `extract/…`, `anonymize/…` and `validate/…` per table) →
//! `anonymize` (the leak scan) → `validate` (the gate) → `load/<store>` (one per store) →
//! `report`, with checkpoints `extracted`, `anonymized`, `validated`, `loaded` and `reported`.

use crate::runner_args::RunnerArgs;
use clap::Parser;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wf_engine::{Checkpoint, EngineError, Plan, Step, StepSpec, Workflow};
use wf_steps::anonymize::{AnonKey, Rules};

pub use wf_steps::migrate::GRAPH_APART;
use wf_steps::migrate::{
    AnonScanStep, AnonTableStep, AnonTask, AnonymizeStep, ExtractGraphStep, ExtractStep,
    ExtractTableStep, FixesStep, LoadStep, MigrateParams, PurgeRawStep, TableTask, ANON_KIND,
    FIXES_KIND, GRAPH_KIND, SCAN_KIND, TABLE_KIND,
};
use wf_steps::validate::{
    GraphStagingStep, ValidateGraphStep, ValidateStep, ValidateStoreStep, ValidateTableStep,
    ValidateTask, GRAPH_STAGING_KIND, GRAPH_VALIDATE_KIND, STORE_VALIDATE_KIND, VALIDATE_KIND,
};
use wf_stores::load::Strategy;
use wf_stores::{Config, SnapshotMode};

/// Run ids of migrate runs start with this (`wf batch` allocates them too).
pub(crate) const RUN_PREFIX: &str = "mig";

/// Arguments of `wf run migrate`; once checked (config file absolute, retry window set) they are
/// the run's journaled parameters.
#[derive(Debug, Clone, Parser, serde::Serialize, serde::Deserialize)]
#[command(
    name = "wf run migrate",
    about = "Copy one district from PROD into CERT, anonymized"
)]
pub struct MigrateArgs {
    /// The district to copy (the value of the district column).
    #[arg(long)]
    pub district: String,
    /// Do everything, but roll the CERT transactions back instead of committing.
    #[arg(long)]
    pub dry_run: bool,
    /// Stop after validation (no CERT load).
    #[arg(long)]
    pub skip_load: bool,
    /// Reuse the raw extract of an earlier migrate run of the same district (started with
    /// --keep-raw) instead of reading PROD again.
    #[arg(long)]
    pub from_run: Option<String>,
    /// Replace the district an earlier run loaded, store by store in the loads' transactions
    /// (what `wf refresh` passes).
    #[arg(long, hide = true)]
    #[serde(default)]
    pub replaces: Option<String>,
    /// With `wf refresh`: write only the rows that changed since the run it replaces (the rest
    /// of CERT's district is not touched); the result equals a whole refresh.
    #[arg(long)]
    #[serde(default)]
    pub incremental: bool,
    /// Keep the raw (PII) extract after anonymization, so `wf recover <run> extracted` can
    /// anonymize again under changed rules. It stays 0600 in a 0700 directory.
    #[arg(long)]
    pub keep_raw: bool,
    /// What to do with rows CERT already has: insert (fail), upsert, skip-existing.
    #[arg(long, default_value = "insert", value_parser = parse_strategy)]
    pub strategy: Strategy,
    /// Rows per Arrow record batch in the staging files.
    #[arg(long, default_value_t = 8192)]
    pub batch_rows: usize,
    /// The configuration file (recorded so a resume uses the same one; defaults to --config).
    #[arg(long = "config-file")]
    pub config_file: Option<PathBuf>,
    #[command(flatten)]
    pub runner: RunnerArgs,
}

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    match s {
        "insert" => Ok(Strategy::Insert),
        "upsert" => Ok(Strategy::Upsert),
        "skip-existing" => Ok(Strategy::SkipExisting),
        other => Err(format!(
            "unknown strategy `{other}`: insert, upsert or skip-existing"
        )),
    }
}

/// The workflow, built from arguments, the config file and the key in the environment.
pub struct Migrate {
    params: Arc<MigrateParams>,
    /// The configuration file, journaled as the run's `config_file` attribute.
    config_file: std::path::PathBuf,
    /// The checked arguments, journaled as the run's `params` attribute.
    args: MigrateArgs,
    hash: String,
    /// SHA-256 of the anonymization rules file, journaled as `rules_sha256`: a refresh by
    /// difference needs the run it replaces to have been anonymized under the same rules.
    rules_sha256: String,
}

impl Migrate {
    /// True when the run keeps its raw (PII) staging after it ends (`--keep-raw`).
    pub fn keeps_raw(&self) -> bool {
        self.args.keep_raw
    }

    /// The run's checked parameters (config, rule files, district).
    pub fn params(&self) -> Arc<MigrateParams> {
        self.params.clone()
    }

    /// The configuration file the run reads (`--config-file`, else `--config`).
    pub fn config_file(&self) -> &Path {
        &self.config_file
    }
}

fn usage(msg: String) -> clap::Error {
    clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{msg}\n"))
}

/// The anonymization rules the config names (relative to the config's folder): path, text, parsed.
fn read_rules(
    config: &Config,
    config_file: &Path,
) -> Result<(std::path::PathBuf, String, Rules), BuildFailure> {
    let rules_rel = config.anonymization_rules.clone().ok_or_else(|| {
        BuildFailure::Failed(format!(
            "config {}: anonymization_rules is not set; migrate needs a rules file",
            config_file.display()
        ))
    })?;
    // `join` keeps an absolute path as it is.
    let rules_file = config_file
        .parent()
        .unwrap_or(Path::new("."))
        .join(rules_rel);
    let rules_text = std::fs::read_to_string(&rules_file).map_err(|e| {
        BuildFailure::Failed(format!(
            "anonymization rules {}: cannot read it ({e})",
            rules_file.display()
        ))
    })?;
    let rules = Rules::parse(&rules_text, &rules_file).map_err(BuildFailure::Failed)?;
    Ok((rules_file, rules_text, rules))
}

/// The validation rules' text, checked; empty when the config names none.
fn read_validation(file: Option<&Path>) -> Result<String, BuildFailure> {
    let Some(f) = file else {
        return Ok(String::new());
    };
    let text = std::fs::read_to_string(f).map_err(|e| {
        BuildFailure::Failed(format!(
            "validation rules {}: cannot read it ({e})",
            f.display()
        ))
    })?;
    wf_steps::validate::ValidationRules::parse(&text, f).map_err(BuildFailure::Failed)?;
    Ok(text)
}

/// The arguments to journal: `args` with the config file given as an absolute `--config-file`.
fn recorded_args(args: &[String], config_file: &Path) -> Vec<String> {
    let mut recorded: Vec<String> = args
        .iter()
        .filter(|a| !a.starts_with("--config-file"))
        .cloned()
        .collect();
    if let Some(i) = args.iter().position(|a| a == "--config-file") {
        recorded = args[..i]
            .iter()
            .chain(args.iter().skip(i + 2))
            .cloned()
            .collect();
    }
    recorded.push("--config-file".into());
    recorded.push(config_file.to_string_lossy().into_owned());
    recorded
}

impl Migrate {
    /// Parses and checks `args` (a new run), then builds the workflow from them.
    /// Returns the arguments to record, with the config file made absolute.
    pub fn from_args(
        args: &[String],
        default_config: &Path,
    ) -> Result<(Self, Vec<String>), BuildFailure> {
        let mut parsed = MigrateArgs::try_parse_from(
            std::iter::once("wf run migrate".to_string()).chain(args.iter().cloned()),
        )
        .map_err(BuildFailure::Usage)?;
        // Unattended at night: a database restart (a minute or two) is waited out, not fatal.
        parsed
            .runner
            .retry_for
            .get_or_insert(crate::runner_args::UNATTENDED_RETRY);
        let config_file = parsed
            .config_file
            .clone()
            .unwrap_or_else(|| default_config.to_path_buf());
        let config_file = std::path::absolute(&config_file).unwrap_or(config_file);
        parsed.config_file = Some(config_file.clone());
        if parsed.district.trim().is_empty() {
            return Err(BuildFailure::Usage(usage(
                "--district must not be empty".into(),
            )));
        }
        let recorded = recorded_args(args, &config_file);
        Ok((Self::from_checked(parsed)?, recorded))
    }

    /// Builds the workflow from checked arguments (a new run's, or a resumed run's journaled
    /// parameters): reads the config and rules, and the key (no key, no run).
    /// A run created before the graph's extract was a step beside the plan (its journal has the
    /// plan spawning it): planned as it was.
    pub fn graph_from_plan(mut self) -> Self {
        Arc::make_mut(&mut self.params).graph_apart = false;
        self
    }

    pub fn from_checked(parsed: MigrateArgs) -> Result<Self, BuildFailure> {
        let config_file = parsed.config_file.clone().ok_or_else(|| {
            BuildFailure::Failed("the run's parameters name no configuration file".into())
        })?;
        let config_text = std::fs::read_to_string(&config_file).map_err(|e| {
            BuildFailure::Failed(format!(
                "config {}: cannot read it ({e}); pass --config or set WF_CONFIG",
                config_file.display()
            ))
        })?;
        let config = Config::parse(&config_text, &config_file)
            .map_err(|e| BuildFailure::Failed(e.to_string()))?;
        let base = config_file.parent().unwrap_or(Path::new("."));
        let (rules_file, rules_text, rules) = read_rules(&config, &config_file)?;
        let key =
            AnonKey::from_env(&rules.key_env).map_err(|e| BuildFailure::Failed(e.to_string()))?;
        let validation_file = config.validation_rules.as_ref().map(|v| base.join(v));
        let validation_text = read_validation(validation_file.as_deref())?;
        let mut hashed = format!(
            "{config_text}\u{0}{rules_text}\u{0}{validation_text}\u{0}{}\u{0}{}\u{0}{}\u{0}{:?}\u{0}{}",
            key.fingerprint(),
            parsed.district,
            parsed.dry_run,
            parsed.strategy,
            parsed.batch_rows
        );
        if let Some(r) = &parsed.replaces {
            hashed.push_str(&format!("\u{0}replaces {r}"));
        }
        if parsed.incremental {
            if parsed.replaces.is_none() {
                return Err(BuildFailure::Failed(
                    "--incremental refreshes a district an earlier run loaded: use `wf refresh --district <id> --incremental`".into(),
                ));
            }
            hashed.push_str("\u{0}incremental");
        }
        let hash = hex::encode(Sha256::digest(hashed.as_bytes()));
        let rules_sha256 = hex::encode(Sha256::digest(rules_text.as_bytes()));
        let params = MigrateParams {
            config,
            rules_file,
            validation_file,
            district: parsed.district.clone(),
            batch_rows: parsed.batch_rows.max(1),
            strategy: parsed.strategy,
            dry_run: parsed.dry_run,
            key_fingerprint: key.fingerprint(),
            from_run: parsed.from_run.clone(),
            replaces: parsed.replaces.clone(),
            incremental: parsed.incremental,
            skip_load: parsed.skip_load,
            graph_apart: parsed.from_run.is_none(),
        };
        Ok(Migrate {
            params: Arc::new(params),
            config_file,
            args: parsed,
            hash,
            rules_sha256,
        })
    }

    pub fn runner(&self) -> &RunnerArgs {
        &self.args.runner
    }

    pub fn config(&self) -> &Config {
        &self.params.config
    }
}

/// The run attribute with the SHA-256 of the anonymization rules file.
pub const RULES_SHA256: &str = "rules_sha256";

/// Why a workflow could not be built from its arguments.
pub enum BuildFailure {
    Usage(clap::Error),
    Failed(String),
}

impl Workflow for Migrate {
    fn name(&self) -> &str {
        "migrate"
    }

    fn run_prefix(&self) -> &str {
        RUN_PREFIX
    }

    fn config_hash(&self) -> String {
        self.hash.clone()
    }

    fn plan(&self) -> Result<Plan, EngineError> {
        // The graph's extract beside the plan: every step that reads the extract stage waits
        // for it as for the plan (the plan's own steps name it where they need it).
        let graph_extract = self
            .params
            .config
            .graph
            .as_ref()
            .filter(|_| self.params.graph_apart)
            .map(|g| format!("extract/{}", g.name));
        let with = |deps: &[&str]| -> Vec<String> {
            let deps = deps.iter().map(|d| d.to_string());
            deps.chain(graph_extract.clone()).collect()
        };
        let mut steps = vec![
            StepSpec::new("extract", "migrate.extract", vec![]),
            StepSpec::new("anonymize", "migrate.anonymize", with(&["extract"])),
            StepSpec::new(
                "purge-raw",
                "migrate.purge",
                with(&["anonymize", "extract"]),
            ),
            StepSpec::new(
                "validate",
                "migrate.validate",
                with(&["extract", "anonymize"]),
            ),
        ];
        steps.extend(
            graph_extract
                .iter()
                .map(|id| StepSpec::new(id.clone(), GRAPH_KIND, vec![])),
        );
        let mut checkpoints = vec![
            // The plan spawns the per-table anonymize steps too: `extracted` names it alone.
            Checkpoint {
                name: "extracted".into(),
                steps: vec!["=extract".into(), "extract/*".into()],
            },
            Checkpoint {
                name: "anonymized".into(),
                steps: vec!["anonymize".into(), "anonymize/*".into()],
            },
            Checkpoint {
                name: "validated".into(),
                steps: vec!["validate".into(), "validate/*".into()],
            },
        ];
        if !self.args.skip_load {
            let cfg = &self.params.config;
            let graph = cfg.graph.iter().map(|g| &g.name);
            for name in cfg.stores.iter().map(|s| &s.name).chain(graph) {
                let mut spec = StepSpec::new(
                    format!("load/{name}"),
                    "migrate.load",
                    with(&["extract", "anonymize", "validate"]),
                );
                spec.params = name.clone().into_bytes();
                steps.push(spec);
            }
            checkpoints.push(Checkpoint {
                name: "loaded".into(),
                steps: vec!["load/*".into()],
            });
        }
        let mut report_deps: Vec<String> = with(&["extract", "anonymize", "validate"]);
        report_deps.extend(
            steps
                .iter()
                .filter(|s| s.id.starts_with("load/"))
                .map(|s| s.id.clone()),
        );
        steps.push(StepSpec::new("report", "migrate.report", report_deps));
        checkpoints.push(Checkpoint {
            name: "reported".into(),
            steps: vec!["report".into()],
        });
        Ok(Plan { steps, checkpoints })
    }

    fn step(&self, spec: &StepSpec) -> Result<Arc<dyn Step>, EngineError> {
        Ok(match spec.kind.as_str() {
            "migrate.extract" => Arc::new(ExtractStep(self.params.clone())),
            TABLE_KIND => Arc::new(ExtractTableStep {
                params: self.params.clone(),
                task: TableTask::decode(&spec.params)
                    .map_err(|e| EngineError::Workflow(format!("step {}: {e}", spec.id)))?,
            }),
            FIXES_KIND => Arc::new(FixesStep(self.params.clone())),
            SCAN_KIND => Arc::new(AnonScanStep(self.params.clone())),
            VALIDATE_KIND => Arc::new(ValidateTableStep {
                params: self.params.clone(),
                task: ValidateTask::decode(&spec.params)
                    .map_err(|e| EngineError::Workflow(format!("step {}: {e}", spec.id)))?,
            }),
            ANON_KIND => Arc::new(AnonTableStep {
                params: self.params.clone(),
                task: AnonTask::decode(&spec.params)
                    .map_err(|e| EngineError::Workflow(format!("step {}: {e}", spec.id)))?,
            }),
            GRAPH_KIND => Arc::new(ExtractGraphStep {
                params: self.params.clone(),
                raw: (!spec.params.is_empty())
                    .then(|| PathBuf::from(String::from_utf8_lossy(&spec.params).into_owned())),
            }),
            "migrate.anonymize" => Arc::new(AnonymizeStep(self.params.clone())),
            "migrate.purge" => Arc::new(PurgeRawStep {
                keep: self.args.keep_raw,
            }),
            "migrate.validate" => Arc::new(ValidateStep(self.params.clone())),
            GRAPH_VALIDATE_KIND => Arc::new(ValidateGraphStep(self.params.clone())),
            GRAPH_STAGING_KIND => Arc::new(GraphStagingStep(self.params.clone())),
            STORE_VALIDATE_KIND => Arc::new(ValidateStoreStep {
                params: self.params.clone(),
                store: String::from_utf8_lossy(&spec.params).into_owned(),
            }),
            "migrate.report" => Arc::new(crate::report::ReportStep),
            "migrate.load" => Arc::new(LoadStep {
                params: self.params.clone(),
                store: String::from_utf8_lossy(&spec.params).into_owned(),
            }),
            other => {
                return Err(EngineError::Workflow(format!(
                    "migrate has no step kind `{other}` (step {})",
                    spec.id
                )))
            }
        })
    }

    /// With `snapshot = "strict"`, the plan's open PROD snapshots die with the runner: a store
    /// with tables still to extract is planned and extracted again, whole.
    fn session_bound(&self, spec: &StepSpec) -> bool {
        spec.kind == "migrate.extract"
            && self.params.from_run.is_none()
            && self.params.config.snapshot == SnapshotMode::Strict
    }

    /// A table's extract step belongs to its store's cohort: one store, one snapshot.
    fn cohort(&self, spec: &StepSpec) -> Option<String> {
        (spec.kind == TABLE_KIND)
            .then(|| TableTask::decode(&spec.params).ok())
            .flatten()
            .map(|t| t.table.store)
    }

    fn attrs(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::from([
            ("district".to_string(), self.params.district.clone()),
            (
                "key_fingerprint".to_string(),
                self.params.key_fingerprint.clone(),
            ),
            (RULES_SHA256.to_string(), self.rules_sha256.clone()),
            ("keep_raw".to_string(), self.args.keep_raw.to_string()),
            ("dry_run".to_string(), self.args.dry_run.to_string()),
            (
                "config_file".to_string(),
                self.config_file.to_string_lossy().into_owned(),
            ),
            (
                crate::params::ATTR.to_string(),
                crate::params::encode("migrate", &self.args),
            ),
        ]);
        if let Some(r) = &self.args.replaces {
            a.insert("replaces".into(), r.clone());
        }
        if self.args.incremental {
            a.insert("incremental".into(), "true".into());
        }
        if self.params.graph_apart {
            a.insert(GRAPH_APART.into(), "true".into());
        }
        a
    }
}
