//! The selftest node: a step whose output is a pure function of its id and its inputs, written
//! idempotently to `<out>/<step>.out`, and whose every execution is logged to `<out>/executions.log`.
//! Crash tests and benchmarks use it to check that resume neither loses nor repeats finished work.

use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use wf_engine::{Artifact, Step, StepContext, StepError, StepOutput};

/// One node of the selftest graph.
pub struct SelftestNode {
    /// Directory of the `.out` files and `executions.log`.
    pub out: PathBuf,
    /// Simulated work per attempt.
    pub work_ms: u64,
    /// Probability that an attempt fails with a retryable error (deterministic per step and attempt).
    pub fail_rate: f64,
    /// Seed of the injected failures.
    pub seed: u64,
    /// When set, this step fails fatally (to test the fatal path).
    pub fatal: bool,
}

/// The value of a node: hex SHA-256 of its id followed by its inputs' values, in dependency order.
pub fn node_value(id: &str, inputs: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(id.as_bytes());
    for v in inputs {
        h.update(b"\n");
        h.update(v.as_bytes());
    }
    hex::encode(h.finalize())
}

/// File name of a node's output (`/` in ids becomes `~`).
pub fn out_file(out: &Path, id: &str) -> PathBuf {
    out.join(format!("{}.out", id.replace('/', "~")))
}

fn injected_failure(seed: u64, id: &str, attempt: u32, rate: f64) -> bool {
    if rate <= 0.0 {
        return false;
    }
    let mut h = Sha256::new();
    h.update(seed.to_be_bytes());
    h.update(id.as_bytes());
    h.update(attempt.to_be_bytes());
    let d = h.finalize();
    let x = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
    (x as f64 / u64::MAX as f64) < rate
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> StepError {
    StepError::Retryable(format!("{what} {}: {e}", path.display()))
}

impl SelftestNode {
    fn log_execution(&self, id: &str, attempt: u32) -> Result<(), StepError> {
        let path = self.out.join("executions.log");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_err("cannot open", &path, e))?;
        // One write of a whole line: O_APPEND keeps concurrent lines whole.
        f.write_all(format!("{id} {attempt}\n").as_bytes())
            .map_err(|e| io_err("cannot append to", &path, e))
    }

    fn write_output(&self, id: &str, attempt: u32, value: &str) -> Result<PathBuf, StepError> {
        let path = out_file(&self.out, id);
        let tmp = path.with_extension(format!("tmp{attempt}"));
        std::fs::write(&tmp, format!("{value}\n")).map_err(|e| io_err("cannot write", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io_err("cannot rename to", &path, e))?;
        Ok(path)
    }
}

#[async_trait::async_trait]
impl Step for SelftestNode {
    async fn run(&self, cx: &StepContext) -> Result<StepOutput, StepError> {
        self.log_execution(&cx.step_id, cx.attempt)?;
        if self.work_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.work_ms)).await;
        }
        if self.fatal {
            return Err(StepError::Fatal(format!(
                "{}: fatal failure requested",
                cx.step_id
            )));
        }
        if injected_failure(self.seed, &cx.step_id, cx.attempt, self.fail_rate) {
            return Err(StepError::Retryable(format!(
                "{}: injected failure (attempt {})",
                cx.step_id, cx.attempt
            )));
        }
        let mut deps: Vec<&String> = cx.inputs.keys().collect();
        deps.sort();
        let inputs = deps
            .into_iter()
            .map(|d| cx.input::<String>(d))
            .collect::<Result<Vec<String>, StepError>>()?;
        let value = node_value(&cx.step_id, &inputs);
        let path = self.write_output(&cx.step_id, cx.attempt, &value)?;
        let mut out = StepOutput::with_value(&value)?;
        out.artifacts
            .push(Artifact::from_file(&path).map_err(|e| io_err("cannot read", &path, e))?);
        out.metrics.insert("rows".into(), 1);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_depends_on_id_and_inputs() {
        let a = node_value("a", &[]);
        assert_ne!(a, node_value("b", &[]));
        assert_ne!(
            node_value("c", std::slice::from_ref(&a)),
            node_value("c", &[])
        );
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn injected_failures_follow_the_rate() {
        let hits = (0..10_000)
            .filter(|i| injected_failure(7, &format!("s{i}"), 1, 0.3))
            .count();
        assert!((2_700..3_300).contains(&hits), "{hits}");
        assert!(!injected_failure(7, "x", 1, 0.0));
    }
}
