//! wf's engine: a durable step graph. Every finished step's output and the checkpoints it completes are
//! journaled (sled, flushed) before the step counts as done, so a run killed at any moment resumes
//! without redoing finished steps. It knows nothing about databases: steps bring those.

mod codec;
pub mod datadir;
pub mod digest;
mod engine;
pub mod error;
pub mod failpoint;
pub mod graph;
pub mod journal;
pub mod model;
pub mod resources;
pub mod retry;
mod runner;
pub mod status;
pub mod step;
pub mod workflow;

pub use datadir::{Control, DataDir};
pub use engine::{ControlOutcome, Engine, OpenRun, Readout};
pub use error::{EngineError, Result};
pub use model::{Artifact, Checkpoint, Plan, RunStatus, StepOutput, StepSpec};
pub use retry::RetryPolicy;
pub use runner::{Outcome, RunOptions, Stop};
pub use status::StatusView;
pub use step::{
    artifact_dir_name, idempotency_key, Host, Observer, Progress, Silent, Step, StepContext,
    StepError,
};
pub use workflow::Workflow;

/// Re-exported so steps and workflows use the same cancellation token type as the runner.
pub use tokio_util::sync::CancellationToken;
