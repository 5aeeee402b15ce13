//! What the journal stores: runs, plans, step records, checkpoints, events, leases.
//! Every type here is part of the on-disk format (see `journal::FORMAT`): add fields only with a format bump.

use crate::retry::RetryPolicy;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch: the journal's clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunStatus {
    /// Created or recovered, not started yet.
    Pending,
    /// A runner holds (or held, if it crashed) the run.
    Running,
    /// Stopped at a step boundary on request (`wf pause`, Ctrl-C); `wf resume` continues.
    Paused,
    /// Every step done.
    Done,
    /// A step failed fatally or ran out of attempts; `wf resume` retries the failed steps.
    Failed,
    /// A gate step refused the data (e.g. validation); fix the cause, then `wf recover`.
    FailedGate,
    /// Stopped for good by `wf cancel`.
    Cancelled,
    /// What the run loaded was deleted again by `wf rollback` (appended last: journals are bincode).
    RolledBack,
}

impl RunStatus {
    /// The name users see in `wf runs` and JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Paused => "paused",
            RunStatus::Done => "done",
            RunStatus::Failed => "failed",
            RunStatus::FailedGate => "failed_validation",
            RunStatus::Cancelled => "cancelled",
            RunStatus::RolledBack => "rolled_back",
        }
    }
}

/// One run of a workflow: small, rewritten on every status change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub workflow: String,
    /// The workflow's arguments as given, for people (`resume` rebuilds the workflow from the
    /// typed `params` attribute; runs from before it, from these).
    pub args: Vec<String>,
    pub status: RunStatus,
    /// Bumped by every `recover`; step records of older generations live in the history tree.
    pub generation: u32,
    /// Hash of the configuration the current generation started with.
    pub config_hash: String,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Why the run stopped, when it did not finish (a failed step's error, "paused by …").
    pub message: Option<String>,
    /// Workflow-specific facts worth keeping (a key fingerprint, the district), never secrets.
    pub attrs: BTreeMap<String, String>,
}

/// The declaration of one step: enough for the workflow to build it again on resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepSpec {
    /// Stable, human-readable id, e.g. `extract/ids.students`.
    pub id: String,
    /// Which implementation the workflow builds for this step.
    pub kind: String,
    /// Steps whose outputs this step needs.
    pub deps: Vec<String>,
    /// Kind-specific parameters (bincode), opaque to the engine.
    pub params: Vec<u8>,
    /// Overrides the runner's default retry policy.
    pub retry: Option<RetryPolicy>,
    /// Overrides the runner's default per-attempt timeout.
    pub timeout_ms: Option<u64>,
    /// The step whose output added this one (dynamic fan-out), if any.
    pub spawned_by: Option<String>,
}

impl StepSpec {
    /// A step of `kind` with no parameters and default retry and timeout.
    pub fn new(id: impl Into<String>, kind: impl Into<String>, deps: Vec<String>) -> Self {
        StepSpec {
            id: id.into(),
            kind: kind.into(),
            deps,
            params: Vec::new(),
            retry: None,
            timeout_ms: None,
            spawned_by: None,
        }
    }
}

/// A named set of steps; reached when all of them (and whatever they spawned) are done.
/// A pattern ending in `*` matches every step id with that prefix; `=id` names step `id` without
/// the steps it spawns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub name: String,
    pub steps: Vec<String>,
}

/// The static step graph of a run, fixed when the run is created (or recovered).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub steps: Vec<StepSpec>,
    pub checkpoints: Vec<Checkpoint>,
}

/// A file a step produced: checked on resume, so a damaged artifact makes its step run again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub path: PathBuf,
    pub bytes: u64,
    /// Digest of the content (see `digest`: XXH3-128, or SHA-256 as earlier versions recorded it).
    pub sha256: String,
    /// Modification time seen when recorded (ns); a match with `bytes` skips re-hashing on resume.
    pub mtime_ns: u128,
}

/// What a finished step hands to its dependents and the journal. Never large data: paths and counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepOutput {
    /// The step's result value, bincode-encoded (see `StepOutput::value`).
    pub value: Vec<u8>,
    pub artifacts: Vec<Artifact>,
    /// Counters such as rows or bytes.
    pub metrics: BTreeMap<String, u64>,
    /// Steps to add to the graph (dynamic fan-out); journaled so resume replays the same graph.
    pub spawn: Vec<StepSpec>,
}

/// Where a step stands in the current generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepStatus {
    Pending,
    Running,
    Done,
    Failed,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Done => "done",
            StepStatus::Failed => "failed",
        }
    }
}

/// The journal's record of one step in one generation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    pub id: String,
    pub generation: u32,
    pub status: StepStatus,
    /// Attempts started so far, across crashes and resumes.
    pub attempts: u32,
    pub output: Option<StepOutput>,
    pub error: Option<String>,
    pub started_ms: u64,
    pub finished_ms: Option<u64>,
    /// Order of completion, so spawned steps are replayed in the order they appeared.
    pub done_seq: u64,
}

/// A checkpoint reached in some generation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointRecord {
    pub name: String,
    pub generation: u32,
    pub reached_ms: u64,
}

/// Who runs a run: the OS lock guarantees one holder, this record names it for others.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lease {
    pub pid: u32,
    pub host: String,
    pub acquired_ms: u64,
    pub heartbeat_ms: u64,
}

impl Lease {
    /// Human description used in refusals: `pid 42 on host db1 (heartbeat 1.2 s ago)`.
    pub fn describe(&self) -> String {
        let age = now_ms().saturating_sub(self.heartbeat_ms) as f64 / 1000.0;
        format!(
            "pid {} on host {} (heartbeat {age:.1} s ago)",
            self.pid, self.host
        )
    }
}

/// One entry of a run's append-only event log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub at_ms: u64,
    pub generation: u32,
    pub kind: EventKind,
}

/// What happened. Error texts here come from steps, which must keep PII out of them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum EventKind {
    RunCreated {
        workflow: String,
    },
    RunStarted {
        resumed: bool,
    },
    LeaseAcquired {
        pid: u32,
        host: String,
        took_over: Option<String>,
    },
    StepStarted {
        step: String,
        attempt: u32,
    },
    StepSucceeded {
        step: String,
        attempt: u32,
        duration_ms: u64,
    },
    StepFailed {
        step: String,
        attempt: u32,
        error: String,
        retry_in_ms: Option<u64>,
    },
    StepInterrupted {
        step: String,
        attempt: u32,
    },
    StepsSpawned {
        by: String,
        count: u32,
    },
    ArtifactMismatch {
        step: String,
        path: PathBuf,
    },
    CheckpointReached {
        name: String,
    },
    Recovered {
        checkpoint: String,
        invalidated: u32,
    },
    RunPaused {
        reason: String,
    },
    RunCancelled,
    RunFailed {
        error: String,
    },
    RunDone,
    /// `wf rollback` deleted what the run loaded (appended last: journals are bincode).
    RolledBack {
        detail: String,
    },
    /// A new runner found a session-bound step's state gone (the process that held it died): the
    /// step and the listed steps it had spawned run again (appended last: journals are bincode).
    SessionLost {
        step: String,
        rerun: Vec<String>,
    },
}

impl EventKind {
    /// One line for `wf log`.
    pub fn describe(&self) -> String {
        match self {
            EventKind::RunCreated { workflow } => format!("run created (workflow {workflow})"),
            EventKind::RunStarted { resumed } => {
                if *resumed {
                    "run resumed".into()
                } else {
                    "run started".into()
                }
            }
            EventKind::LeaseAcquired {
                pid,
                host,
                took_over,
            } => match took_over {
                Some(old) => {
                    format!("lease taken by pid {pid} on {host}; took over stale lease of {old}")
                }
                None => format!("lease taken by pid {pid} on {host}"),
            },
            EventKind::StepStarted { step, attempt } => {
                format!("{step}: attempt {attempt} started")
            }
            EventKind::StepSucceeded {
                step,
                attempt,
                duration_ms,
            } => {
                format!("{step}: done (attempt {attempt}, {duration_ms} ms)")
            }
            EventKind::StepFailed {
                step,
                attempt,
                error,
                retry_in_ms,
            } => match retry_in_ms {
                Some(ms) => format!("{step}: attempt {attempt} failed, retry in {ms} ms: {error}"),
                None => format!("{step}: attempt {attempt} failed: {error}"),
            },
            EventKind::StepInterrupted { step, attempt } => {
                format!("{step}: attempt {attempt} interrupted")
            }
            EventKind::StepsSpawned { by, count } => format!("{by}: added {count} steps"),
            EventKind::ArtifactMismatch { step, path } => {
                format!(
                    "{step}: artifact {} changed or missing; step runs again",
                    path.display()
                )
            }
            EventKind::CheckpointReached { name } => format!("checkpoint {name} reached"),
            EventKind::RolledBack { detail } => format!("rolled back: {detail}"),
            EventKind::SessionLost { step, rerun } => format!(
                "{step}: the process that held its state is gone; it runs again with {} of the steps it added ({})",
                rerun.len(),
                rerun.join(", ")
            ),
            EventKind::Recovered {
                checkpoint,
                invalidated,
            } => {
                format!(
                    "recovered from checkpoint {checkpoint}: {invalidated} steps will run again"
                )
            }
            EventKind::RunPaused { reason } => format!("run paused ({reason})"),
            EventKind::RunCancelled => "run cancelled".into(),
            EventKind::RunFailed { error } => format!("run failed: {error}"),
            EventKind::RunDone => "run done".into(),
        }
    }
}
