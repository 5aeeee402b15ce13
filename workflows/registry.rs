//! The workflows wf knows, built by name from their arguments (`wf run`) or from a run's journaled
//! parameters (`wf resume`, `wf recover`).

use crate::migrate::{BuildFailure, Migrate};
use crate::runner_args::RunnerArgs;
use crate::selftest::Selftest;
use std::sync::Arc;
use wf_engine::model::RunRecord;
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
    /// A migrate run's parameters and its configuration file, for the checks made before the
    /// run is created.
    pub preflight: Option<(
        std::sync::Arc<wf_steps::migrate::MigrateParams>,
        std::path::PathBuf,
    )>,
    /// `[[notify]]` of the run's configuration.
    pub notify: Vec<wf_stores::notify::Notify>,
}

/// Why a workflow could not be built.
pub enum BuildError {
    Unknown(String),
    Args(clap::Error),
    /// Configuration, rules or key problems, as one line.
    Failed(String),
}

/// Builds workflow `name` for a new run from `args`; `config` is the global --config (migrate and
/// batch record their own).
pub fn build(name: &str, args: &[String], config: &std::path::Path) -> Result<Built, BuildError> {
    let built = build_new(name, args, config)?;
    // A run whose parameters cannot be journaled could not be resumed: refuse it now.
    let attrs = built.workflow.attrs();
    if attrs.get(crate::params::ATTR).is_none_or(|p| p.is_empty()) {
        return Err(BuildError::Failed(format!(
            "the {name} run's parameters cannot be journaled (a path that is not UTF-8?): use UTF-8 paths"
        )));
    }
    Ok(built)
}

fn build_new(name: &str, args: &[String], config: &std::path::Path) -> Result<Built, BuildError> {
    match name {
        "migrate" => {
            let (wf, args) = Migrate::from_args(args, config).map_err(failure)?;
            Ok(migrate(wf, args))
        }
        "batch" => {
            let (wf, args) =
                crate::batch::Batch::from_args(args, config).map_err(BuildError::Args)?;
            Ok(batch(wf, args))
        }
        "selftest" => {
            let (wf, args) = Selftest::from_args(args).map_err(BuildError::Args)?;
            Ok(selftest(wf, args))
        }
        other => Err(BuildError::Unknown(other.to_string())),
    }
}

/// Builds the workflow of an existing run (resume, recover) from its journaled parameters, never
/// by parsing its argument strings again. Runs journaled before parameters were (no `params`
/// attribute) are built from their recorded arguments, as they were then.
pub fn rebuild(run: &RunRecord, config: &std::path::Path) -> Result<Built, BuildError> {
    let Some(text) = run.attrs.get(crate::params::ATTR) else {
        return build(&run.workflow, &run.args, config);
    };
    let decoded = |e: crate::params::ParamsError| BuildError::Failed(e.to_string());
    let args = run.args.clone();
    match run.workflow.as_str() {
        "migrate" => {
            let p = crate::params::decode(&run.id, "migrate", text).map_err(decoded)?;
            let mut m = Migrate::from_checked(p).map_err(failure)?;
            if !run.attrs.contains_key(crate::migrate::GRAPH_APART) {
                m = m.graph_from_plan();
            }
            Ok(migrate(m, args))
        }
        "batch" => {
            let p = crate::params::decode(&run.id, "batch", text).map_err(decoded)?;
            Ok(batch(crate::batch::Batch::from_checked(p), args))
        }
        "selftest" => {
            let p = crate::params::decode(&run.id, "selftest", text).map_err(decoded)?;
            Ok(selftest(Selftest::from_checked(p), args))
        }
        other => Err(BuildError::Unknown(other.to_string())),
    }
}

fn failure(e: BuildFailure) -> BuildError {
    match e {
        BuildFailure::Usage(u) => BuildError::Args(u),
        BuildFailure::Failed(m) => BuildError::Failed(m),
    }
}

fn migrate(wf: Migrate, args: Vec<String>) -> Built {
    Built {
        runner: wf.runner().clone(),
        dirs: vec![],
        keep_raw: wf.keeps_raw(),
        preflight: Some((wf.params(), wf.config_file().to_path_buf())),
        notify: wf.config().notify.clone(),
        workflow: Arc::new(wf),
        args,
    }
}

fn batch(wf: crate::batch::Batch, args: Vec<String>) -> Built {
    Built {
        runner: wf.runner().clone(),
        dirs: vec![],
        keep_raw: false,
        preflight: None,
        notify: wf.notify_targets(),
        workflow: Arc::new(wf),
        args,
    }
}

fn selftest(wf: Selftest, args: Vec<String>) -> Built {
    Built {
        runner: wf.runner().clone(),
        dirs: vec![wf.out_dir().clone()],
        keep_raw: false,
        preflight: None,
        notify: Vec::new(),
        workflow: Arc::new(wf),
        args,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use wf_engine::model::RunStatus;

    fn record(workflow: &str, args: &[&str], attrs: BTreeMap<String, String>) -> RunRecord {
        RunRecord {
            id: "run-1".into(),
            workflow: workflow.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            status: RunStatus::Failed,
            generation: 0,
            config_hash: String::new(),
            created_ms: 0,
            updated_ms: 0,
            message: None,
            attrs,
        }
    }

    fn plan_ids(b: &Built) -> Vec<String> {
        let plan = b.workflow.plan().expect("plan");
        plan.steps.into_iter().map(|s| s.id).collect()
    }

    #[test]
    fn a_run_is_rebuilt_from_its_parameters_not_its_argument_strings() {
        let out = tempfile::tempdir().expect("tmp");
        let out_dir = out.path().to_string_lossy().into_owned();
        let config = std::path::Path::new("wf.toml");
        let args = ["--steps", "7", "--out", &out_dir, "--seed", "3"];
        let new = build("selftest", &args.map(String::from), config)
            .ok()
            .expect("build");
        // Argument strings that no parser accepts: only the journaled parameters are read.
        let rec = record("selftest", &["--no-such-flag"], new.workflow.attrs());
        let again = rebuild(&rec, config).ok().expect("rebuild");
        assert_eq!(plan_ids(&again), plan_ids(&new));
        assert_eq!(again.workflow.config_hash(), new.workflow.config_hash());
        assert_eq!(again.dirs, new.dirs);

        let batch_args = ["--districts", "a,b", "--config-file", "/x/wf.toml"].map(String::from);
        let new = build("batch", &batch_args, config).ok().expect("batch");
        let rec = record("batch", &["--garbage"], new.workflow.attrs());
        let again = rebuild(&rec, config).ok().expect("rebuild batch");
        assert_eq!(plan_ids(&again), vec!["district/a", "district/b"]);
        assert_eq!(again.workflow.config_hash(), new.workflow.config_hash());
    }

    #[test]
    fn older_runs_are_built_from_their_arguments_and_newer_ones_refused() {
        let out = tempfile::tempdir().expect("tmp");
        let out_dir = out.path().to_string_lossy().into_owned();
        let config = std::path::Path::new("wf.toml");
        let rec = record(
            "selftest",
            &["--steps", "4", "--out", &out_dir],
            BTreeMap::new(),
        );
        let old = rebuild(&rec, config).ok().expect("legacy");
        assert_eq!(plan_ids(&old).len(), 4);

        let new = build("selftest", &rec.args, config).ok().expect("build");
        let mut attrs = new.workflow.attrs();
        let p = attrs.get_mut(crate::params::ATTR).expect("params attr");
        *p = p.replace("\"version\":1", "\"version\":9");
        match rebuild(&record("selftest", &[], attrs), config) {
            Err(BuildError::Failed(m)) => assert!(m.contains("newer wf"), "{m}"),
            _ => panic!("a newer parameter version must be refused"),
        }
    }

    #[test]
    fn a_run_whose_parameters_cannot_be_journaled_is_refused_before_it_exists() {
        use std::os::unix::ffi::OsStrExt;
        let config = std::path::Path::new(std::ffi::OsStr::from_bytes(b"/tmp/wf-\xff.toml"));
        match build("batch", &["--districts".into(), "a".into()], config) {
            Err(BuildError::Failed(m)) => assert!(m.contains("cannot be journaled"), "{m}"),
            _ => panic!("a config path that is not UTF-8 must be refused"),
        }
    }
}
