//! Runner options shared by every workflow's arguments (`--jobs`, retries, timeouts).

use clap::Args;
use std::time::Duration;
use wf_engine::{RetryPolicy, RunOptions};

/// How long migrate and batch runs keep retrying a transient failure by default.
pub const UNATTENDED_RETRY: Duration = Duration::from_secs(180);

/// How a run is executed; not part of the plan, so a resume may change them.
#[derive(Debug, Clone, Args, serde::Serialize, serde::Deserialize)]
pub struct RunnerArgs {
    /// Steps running at once.
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
    /// Attempts per step (first included) before a retryable error fails the run.
    #[arg(long, default_value_t = 5)]
    pub max_attempts: u32,
    /// Backoff before the first retry, in ms (doubles per attempt, with jitter).
    #[arg(long, default_value_t = 200)]
    pub backoff_ms: u64,
    /// Longest backoff, in ms.
    #[arg(long, default_value_t = 30_000)]
    pub max_backoff_ms: u64,
    /// Per-attempt timeout of a step, in ms (none by default).
    #[arg(long)]
    pub step_timeout_ms: Option<u64>,
    /// Keep retrying a transient failure (connection refused or reset, server shutting down,
    /// serialization failure, deadlock) past --max-attempts for this long after the first one,
    /// e.g. `5m` (migrate and batch: 3m, enough for a database restart; otherwise 0).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub retry_for: Option<Duration>,
}

impl RunnerArgs {
    /// The engine's options from these arguments.
    pub fn options(&self) -> RunOptions {
        RunOptions {
            jobs: self.jobs.max(1),
            retry: RetryPolicy {
                max_attempts: self.max_attempts.max(1),
                initial_backoff_ms: self.backoff_ms,
                max_backoff_ms: self.max_backoff_ms.max(self.backoff_ms),
            },
            step_timeout: self.step_timeout_ms.map(Duration::from_millis),
            retry_window: self.retry_for.unwrap_or(Duration::ZERO),
            ..RunOptions::default()
        }
    }
}
