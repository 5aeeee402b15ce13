//! The built-in `selftest` workflow: a layered DAG (fan-out from `start`, layers that each read two
//! steps of the layer before, fan-in to `end`) of `SelftestNode`s, for crash tests and benchmarks.

use crate::runner_args::RunnerArgs;
use clap::Parser;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;
use wf_engine::{Checkpoint, EngineError, Plan, Step, StepSpec, Workflow};
use wf_steps::selftest::SelftestNode;

/// Arguments of `wf run selftest` (checked: the run's journaled parameters).
#[derive(Debug, Clone, Parser, serde::Serialize, serde::Deserialize)]
#[command(
    name = "wf run selftest",
    about = "A synthetic DAG that exercises the engine"
)]
pub struct SelftestArgs {
    /// Number of steps in the graph (start + layers + end).
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Directory for the steps' `.out` files and `executions.log`.
    #[arg(long)]
    pub out: PathBuf,
    /// Simulated work per step attempt, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub work_ms: u64,
    /// Probability that a step attempt fails with a retryable error.
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Seed of the injected failures.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Make this step fail fatally (for testing the fatal path).
    #[arg(long, hide = true)]
    pub fatal_step: Option<String>,
    #[command(flatten)]
    pub runner: RunnerArgs,
}

/// The selftest workflow built from its arguments.
pub struct Selftest {
    args: SelftestArgs,
}

impl Selftest {
    /// Parses `args`; relative paths are made absolute so a resume from another directory works.
    pub fn from_args(args: &[String]) -> Result<(Self, Vec<String>), clap::Error> {
        let mut parsed = SelftestArgs::try_parse_from(
            std::iter::once("wf run selftest".to_string()).chain(args.iter().cloned()),
        )?;
        if !(0.0..=1.0).contains(&parsed.fail_rate) {
            return Err(clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                "--fail-rate must be between 0 and 1\n",
            ));
        }
        if parsed.steps == 0 {
            return Err(clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                "--steps must be at least 1\n",
            ));
        }
        let mut normalized = args.to_vec();
        if let Ok(abs) = std::path::absolute(&parsed.out) {
            parsed.out = abs.clone();
            normalized = replace_value(&normalized, "--out", &abs.to_string_lossy());
        }
        Ok((Selftest { args: parsed }, normalized))
    }

    /// The workflow from a resumed run's journaled parameters.
    pub fn from_checked(args: SelftestArgs) -> Self {
        Selftest { args }
    }

    pub fn out_dir(&self) -> &PathBuf {
        &self.args.out
    }

    pub fn runner(&self) -> &RunnerArgs {
        &self.args.runner
    }
}

/// Replaces the value of `flag` (as `--flag v` or `--flag=v`) in an argument list.
fn replace_value(args: &[String], flag: &str, value: &str) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == flag {
            out.push(a.clone());
            out.push(value.to_string());
            it.next();
        } else if a.starts_with(&format!("{flag}=")) {
            out.push(format!("{flag}={value}"));
        } else {
            out.push(a.clone());
        }
    }
    out
}

/// Layer sizes of the middle of a selftest graph of `n` steps: about √n layers of about √n steps.
pub fn layer_sizes(n: usize) -> Vec<usize> {
    let middle = n.saturating_sub(2);
    if middle == 0 {
        return Vec::new();
    }
    let width = (middle as f64).sqrt().ceil() as usize;
    let mut sizes = Vec::new();
    let mut left = middle;
    while left > 0 {
        let w = width.min(left);
        sizes.push(w);
        left -= w;
    }
    sizes
}

fn node_id(layer: usize, pos: usize) -> String {
    format!("L{layer:02}/{pos:03}")
}

impl Workflow for Selftest {
    fn name(&self) -> &str {
        "selftest"
    }

    fn run_prefix(&self) -> &str {
        "st"
    }

    fn config_hash(&self) -> String {
        let a = &self.args;
        let text = format!(
            "{}|{}|{}|{}|{}|{:?}",
            a.steps,
            a.out.display(),
            a.work_ms,
            a.fail_rate,
            a.seed,
            a.fatal_step
        );
        hex::encode(Sha256::digest(text.as_bytes()))
    }

    fn plan(&self) -> Result<Plan, EngineError> {
        let n = self.args.steps;
        let mut steps = vec![StepSpec::new("start", "selftest.node", vec![])];
        let mut checkpoints = vec![Checkpoint {
            name: "start".into(),
            steps: vec!["start".into()],
        }];
        let sizes = layer_sizes(n);
        let mut prev: Vec<String> = vec!["start".into()];
        for (l, &w) in sizes.iter().enumerate() {
            let layer = l + 1;
            let ids: Vec<String> = (0..w).map(|p| node_id(layer, p)).collect();
            for (p, id) in ids.iter().enumerate() {
                let deps = if layer == 1 {
                    vec!["start".to_string()]
                } else {
                    let mut d = vec![prev[p % prev.len()].clone()];
                    let second = prev[(p + 1) % prev.len()].clone();
                    if !d.contains(&second) {
                        d.push(second);
                    }
                    d
                };
                steps.push(StepSpec::new(id.clone(), "selftest.node", deps));
            }
            checkpoints.push(Checkpoint {
                name: format!("layer-{layer}"),
                steps: vec![format!("L{layer:02}/*")],
            });
            prev = ids;
        }
        if n >= 2 {
            steps.push(StepSpec::new("end", "selftest.node", prev));
            checkpoints.push(Checkpoint {
                name: "end".into(),
                steps: vec!["end".into()],
            });
        }
        Ok(Plan { steps, checkpoints })
    }

    fn attrs(&self) -> std::collections::BTreeMap<String, String> {
        std::collections::BTreeMap::from([(
            crate::params::ATTR.to_string(),
            crate::params::encode("selftest", &self.args),
        )])
    }

    fn step(&self, spec: &StepSpec) -> Result<Arc<dyn Step>, EngineError> {
        if spec.kind != "selftest.node" {
            return Err(EngineError::Workflow(format!(
                "selftest has no step kind `{}` (step {})",
                spec.kind, spec.id
            )));
        }
        Ok(Arc::new(SelftestNode {
            out: self.args.out.clone(),
            work_ms: self.args.work_ms,
            fail_rate: self.args.fail_rate,
            seed: self.args.seed,
            fatal: self.args.fatal_step.as_deref() == Some(spec.id.as_str()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_have_exactly_the_requested_step_count() {
        for n in [1usize, 2, 3, 7, 100, 10_000] {
            let (wf, _) = Selftest::from_args(&[
                "--steps".into(),
                n.to_string(),
                "--out".into(),
                "/tmp/x".into(),
            ])
            .unwrap();
            let plan = wf.plan().unwrap();
            assert_eq!(plan.steps.len(), n, "n={n}");
            wf_engine::graph::Graph::new("selftest", &plan).unwrap();
        }
    }

    #[test]
    fn out_is_made_absolute_in_the_recorded_args() {
        let (_, args) = Selftest::from_args(&[
            "--out".into(),
            "rel/dir".into(),
            "--steps".into(),
            "3".into(),
        ])
        .unwrap();
        assert!(PathBuf::from(&args[1]).is_absolute(), "{args:?}");
        assert_eq!(args[2..], ["--steps".to_string(), "3".to_string()]);
    }
}
