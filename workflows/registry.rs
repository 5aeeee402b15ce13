//! The workflows wf knows, built by name from their arguments (for `wf run` and again for `resume`).

use crate::migrate::{BuildFailure, Migrate};
use crate::runner_args::RunnerArgs;
use crate::selftest::Selftest;
use std::sync::Arc;
use wf_engine::Workflow;

/// Names of the available workflows, for help and errors.
pub const WORKFLOWS: &[&str] = &["batch", "migrate", "selftest"];

/// A workflow ready to plan or resume, with its runner options and its arguments as recorded.
pub struct Built {
    pub workflow: Arc<dyn Workflow>,
    pub runner: RunnerArgs,
    pub args: Vec<String>,
    /// Directories the workflow writes to, created before the run starts.
    pub dirs: Vec<std::path::PathBuf>,
    /// The run keeps its raw (PII) staging after it ends (`migrate --keep-raw`).
    pub keep_raw: bool,
    /// A migrate run's parameters, for the checks made before the run is created.
    pub preflight: Option<std::sync::Arc<wf_steps::migrate::MigrateParams>>,
}

/// Why a workflow could not be built.
pub enum BuildError {
    Unknown(String),
    Args(clap::Error),
    /// Configuration, rules or key problems, as one line.
    Failed(String),
}

/// Builds workflow `name` from `args`; `config` is the global --config (migrate records its own).
pub fn build(name: &str, args: &[String], config: &std::path::Path) -> Result<Built, BuildError> {
    match name {
        "migrate" => {
            let (wf, args) = Migrate::from_args(args, config).map_err(|e| match e {
                BuildFailure::Usage(u) => BuildError::Args(u),
                BuildFailure::Failed(m) => BuildError::Failed(m),
            })?;
            Ok(Built {
                runner: wf.runner().clone(),
                dirs: vec![],
                keep_raw: wf.keeps_raw(),
                preflight: Some(wf.params()),
                workflow: Arc::new(wf),
                args,
            })
        }
        "batch" => {
            let (wf, args) =
                crate::batch::Batch::from_args(args, config).map_err(BuildError::Args)?;
            Ok(Built {
                runner: wf.runner().clone(),
                dirs: vec![],
                keep_raw: false,
                preflight: None,
                workflow: Arc::new(wf),
                args,
            })
        }
        "selftest" => {
            let (wf, args) = Selftest::from_args(args).map_err(BuildError::Args)?;
            Ok(Built {
                runner: wf.runner().clone(),
                dirs: vec![wf.out_dir().clone()],
                keep_raw: false,
                preflight: None,
                workflow: Arc::new(wf),
                args,
            })
        }
        other => Err(BuildError::Unknown(other.to_string())),
    }
}
