//! The engine's one error type: every variant names the thing (run, checkpoint, path) and the next action.

use std::path::PathBuf;

/// Errors at the engine's boundary, classified so the CLI can pick an exit code without reading text.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("unknown run `{0}`: `wf runs` lists the runs in this data directory")]
    UnknownRun(String),
    #[error("unknown checkpoint `{checkpoint}` for run {run}: `wf checkpoints {run}` lists them")]
    UnknownCheckpoint { run: String, checkpoint: String },
    #[error("checkpoint `{checkpoint}` of run {run} is not reached yet ({done}/{total} of its steps done): use `wf resume {run}`")]
    CheckpointNotReached {
        run: String,
        checkpoint: String,
        done: usize,
        total: usize,
    },
    #[error("unknown workflow `{0}`: the workflows are {1}")]
    UnknownWorkflow(String, String),
    #[error("run {run} is being run by {holder}: wait for it, or stop it with `wf pause {run}`")]
    Busy { run: String, holder: String },
    #[error("journal directory {path} is not writable ({source}): fix its permissions or pass another --data-dir")]
    NotWritable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal {path} has format {found}, this wf understands formats up to {supported}: use a newer wf")]
    NewerFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("journal {path} is damaged ({detail}): restore it from a backup or start a new run")]
    Corrupt { path: PathBuf, detail: String },
    #[error("journal {path}: {source}")]
    Journal {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid plan for workflow {workflow}: {detail}")]
    InvalidPlan { workflow: String, detail: String },
    #[error("run {run} is {status}: {hint}")]
    WrongState {
        run: String,
        status: String,
        hint: String,
    },
    #[error("the configuration changed since run {run} started (hash {recorded} → {current}): use `wf recover {run} <checkpoint>` to apply it downstream of a checkpoint")]
    ConfigChanged {
        run: String,
        recorded: String,
        current: String,
    },
    #[error("{0}")]
    Workflow(String),
}

impl EngineError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EngineError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
