//! The `Step` seam: what a unit of work receives (`StepContext`) and returns (`StepOutput` or `StepError`).

use crate::codec;
use crate::model::{Artifact, StepOutput};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Why a step attempt did not succeed; the runner retries `Retryable` with backoff and stops on `Fatal`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StepError {
    /// Transient: connection lost, timeout, lock; another attempt may succeed.
    #[error("{0}")]
    Retryable(String),
    /// Permanent: bad config, constraint violation; retrying cannot help.
    #[error("{0}")]
    Fatal(String),
    /// A gate refused the data (validation failed): the run stops as `failed_validation`.
    #[error("{0}")]
    Gate(String),
    /// An input this step read is damaged (it no longer matches what its producer recorded, or it
    /// is gone): the runner runs `producer` (a step upstream) and everything after it again.
    #[error("{message}")]
    Redo {
        producer: String,
        path: std::path::PathBuf,
        message: String,
    },
}

/// A unit of work in a workflow. Runs at least once; its effects must be made idempotent by the step,
/// using `StepContext::idempotency_key` (e.g. a marker row written in the same transaction).
#[async_trait::async_trait]
pub trait Step: Send + Sync {
    async fn run(&self, cx: &StepContext) -> Result<StepOutput, StepError>;
}

/// Receives progress from running steps (the CLI draws bars from it); every method defaults to nothing.
pub trait Observer: Send + Sync {
    fn run_started(&self, _run: &str, _total: usize, _done: usize) {}
    /// Steps a finished step spawned (dynamic fan-out), by id.
    fn steps_added(&self, _ids: &[String]) {}
    fn step_started(&self, _step: &str, _attempt: u32) {}
    fn step_finished(&self, _step: &str, _ok: bool) {}
    fn rows(&self, _step: &str, _rows: u64) {}
    /// The rows a step expects to handle, when it knows (for rows done / expected and an ETA).
    fn expected(&self, _step: &str, _rows: u64) {}
    fn run_finished(&self) {}
}

/// An observer that ignores everything (tests, benchmarks, non-terminal output).
pub struct Silent;
impl Observer for Silent {}

/// A step's handle for reporting progress of long work.
#[derive(Clone)]
pub struct Progress {
    step: String,
    observer: Arc<dyn Observer>,
}

impl Progress {
    pub fn new(step: &str, observer: Arc<dyn Observer>) -> Self {
        Progress {
            step: step.to_string(),
            observer,
        }
    }

    /// Reports the rows handled so far by this step.
    pub fn rows(&self, rows: u64) {
        self.observer.rows(&self.step, rows);
    }

    /// Reports how many rows this step expects to handle.
    pub fn expect(&self, rows: u64) {
        self.observer.expected(&self.step, rows);
        // Test hook: `WF_FAILPOINT_DELAY=<step>:expected=<ms>` holds the step right after it said
        // what it expects, so a test sees a running step with its expected rows.
        if let Some(d) = crate::failpoint::delay(&format!("{}:expected", self.step)) {
            std::thread::sleep(d);
        }
    }
}

/// Everything a step attempt may use.
pub struct StepContext {
    pub run_id: String,
    pub step_id: String,
    pub generation: u32,
    /// 1 for the first attempt, counted across crashes and resumes.
    pub attempt: u32,
    /// `run/g<generation>/step`: stable across attempts and resumes of one generation, new after a
    /// recover (so a re-run after `wf recover` is not mistaken for a repeat of the old effect).
    pub idempotency_key: String,
    /// Outputs of this step's dependencies, by step id.
    pub inputs: HashMap<String, Arc<StepOutput>>,
    /// A directory reserved for this step's files (created on first use by the step).
    pub artifact_dir: PathBuf,
    pub progress: Progress,
    /// Cancelled when the run is aborted: long steps should check it between batches.
    pub cancel: CancellationToken,
    /// Read access to the data directory the run lives in (other runs, reports' place).
    pub host: Arc<dyn Host>,
}

/// What a step may read of the data directory its run lives in, given by the runner: other runs'
/// records, done outputs and status, and the directory's root (where reports and manifests go).
/// Steps never rebuild it from their own artifact paths nor open a second engine.
pub trait Host: Send + Sync {
    /// The data directory.
    fn data(&self) -> &crate::DataDir;
    /// The record of `run` and the outputs of its done steps (current generation). Refused while
    /// another runner holds `run`.
    fn outputs(
        &self,
        run: &str,
    ) -> crate::Result<(crate::model::RunRecord, Vec<(String, StepOutput)>)>;
    /// The status of `run` (its live snapshot while a runner holds it).
    fn status(&self, run: &str) -> crate::Result<crate::status::StatusView>;
}

impl StepContext {
    /// The decoded value of dependency `dep`, or a fatal error naming it.
    pub fn input<T: DeserializeOwned>(&self, dep: &str) -> Result<T, StepError> {
        let out = self.inputs.get(dep).ok_or_else(|| {
            StepError::Fatal(format!("step {} has no input from `{dep}`", self.step_id))
        })?;
        out.value_as()
            .map_err(|e| StepError::Fatal(format!("input `{dep}` of {}: {e}", self.step_id)))
    }
}

impl StepOutput {
    /// An output carrying `value` (encoded with the journal's codec).
    pub fn with_value<T: Serialize>(value: &T) -> Result<Self, StepError> {
        Ok(StepOutput {
            value: codec::encode_output(value).map_err(StepError::Fatal)?,
            ..StepOutput::default()
        })
    }

    /// The decoded value, of any output format this wf reads (see `codec::OUTPUT_FORMAT`).
    pub fn value_as<T: DeserializeOwned>(&self) -> Result<T, String> {
        codec::decode_output(&self.value)
    }
}

fn mtime_ns(meta: &std::fs::Metadata) -> u128 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

impl Artifact {
    /// Describes an existing file: size, checksum and modification time.
    pub fn from_file(path: &Path) -> std::io::Result<Artifact> {
        let meta = std::fs::metadata(path)?;
        Ok(Artifact {
            path: path.to_path_buf(),
            bytes: meta.len(),
            sha256: crate::digest::file(path, None)?,
            mtime_ns: mtime_ns(&meta),
        })
    }

    /// Describes a file whose digest its writer computed while writing it (staging files), so
    /// it is not read and hashed a second time.
    pub fn with_sha256(path: &Path, sha256: &str) -> std::io::Result<Artifact> {
        let meta = std::fs::metadata(path)?;
        Ok(Artifact {
            path: path.to_path_buf(),
            bytes: meta.len(),
            sha256: sha256.to_string(),
            mtime_ns: mtime_ns(&meta),
        })
    }

    /// True when the file still has the recorded content. Size and mtime equal to the record skip the
    /// hash (as make and ninja do); otherwise the content is hashed, so a touched file is not a false alarm.
    pub fn verify(&self) -> bool {
        let Ok(meta) = std::fs::metadata(&self.path) else {
            return false;
        };
        if meta.len() != self.bytes {
            return false;
        }
        if mtime_ns(&meta) == self.mtime_ns {
            return true;
        }
        crate::digest::file(&self.path, Some(&self.sha256)).is_ok_and(|h| h == self.sha256)
    }
}

/// The idempotency key of step `step` in `generation` of `run` (`StepContext::idempotency_key`):
/// a step that prepares work another step finishes (a load transaction the gate hands over)
/// names that step's key with it.
pub fn idempotency_key(run: &str, generation: u32, step: &str) -> String {
    format!("{run}/g{generation}/{step}")
}

/// The name of a step's artifact directory under the run's `steps/` (`load/ids` → `load~ids`).
pub fn artifact_dir_name(step: &str) -> String {
    step.replace(['/', '\\'], "~")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn artifact_verify_detects_changes_and_tolerates_touch() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.out");
        std::fs::write(&p, b"hello").unwrap();
        let a = Artifact::from_file(&p).unwrap();
        assert!(a.verify());
        // Same content, new mtime: still valid (hash fallback).
        let mut touched = a.clone();
        touched.mtime_ns = 1;
        assert!(touched.verify());
        // Same size, other content, other mtime: invalid.
        std::fs::write(&p, b"jello").unwrap();
        let mut stale = a.clone();
        stale.mtime_ns = 1;
        assert!(!stale.verify());
        std::fs::remove_file(&p).unwrap();
        assert!(!a.verify());
    }

    #[test]
    fn an_artifact_with_its_writers_digest_is_the_one_hashed_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.out");
        std::fs::write(&p, b"hello").unwrap();
        let digest = crate::digest::file(&p, None).unwrap();
        let known = Artifact::with_sha256(&p, &digest).unwrap();
        assert_eq!(known, Artifact::from_file(&p).unwrap());
        // A digest an earlier wf recorded (SHA-256) is still checked, and a wrong one is caught
        // once the file's time no longer vouches for it.
        let mut old = Artifact::with_sha256(&p, &hex::encode(Sha256::digest(b"hello"))).unwrap();
        old.mtime_ns = 1;
        assert!(old.verify());
        let mut wrong = Artifact::with_sha256(&p, &hex::encode(Sha256::digest(b"jello"))).unwrap();
        assert!(wrong.verify());
        wrong.mtime_ns = 1;
        assert!(!wrong.verify());
    }

    #[test]
    fn output_value_round_trip() {
        let out = StepOutput::with_value(&("x".to_string(), 7u64)).unwrap();
        let v: (String, u64) = out.value_as().unwrap();
        assert_eq!(v, ("x".to_string(), 7));
    }
}
