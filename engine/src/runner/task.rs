//! One step's attempts inside a run: start record, timeout, retry with backoff, cancellation.

use crate::error::EngineError;
use crate::failpoint::{self, Point};
use crate::journal::Journal;
use crate::model::{now_ms, EventKind, StepOutput, StepRecord, StepStatus};
use crate::retry::RetryPolicy;
use crate::step::{Observer, Progress, Step, StepContext, StepError};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What a step task needs, prepared by the scheduler.
pub(crate) struct TaskInput {
    pub index: usize,
    pub step_id: String,
    pub step: Arc<dyn Step>,
    pub journal: Arc<dyn Journal>,
    pub run_id: String,
    pub generation: u32,
    /// Attempts already made in earlier sessions; numbering goes on from there.
    pub prior_attempts: u32,
    pub policy: RetryPolicy,
    /// Retryable errors are retried past the policy's attempts until this long after the first.
    pub retry_window: Duration,
    pub timeout: Option<Duration>,
    pub inputs: HashMap<String, Arc<StepOutput>>,
    pub artifact_dir: PathBuf,
    pub observer: Arc<dyn Observer>,
    pub host: Arc<dyn crate::step::Host>,
    /// Cancelled at a pause: a step waiting between attempts stops there.
    pub boundary: CancellationToken,
    /// Cancelled at an abort: the running attempt is dropped.
    pub abort: CancellationToken,
}

/// How the task ended.
pub(crate) enum TaskResult {
    Completed {
        index: usize,
        attempt: u32,
        started_ms: u64,
        output: StepOutput,
    },
    Failed {
        index: usize,
        attempt: u32,
        started_ms: u64,
        error: StepError,
    },
    Interrupted {
        index: usize,
    },
    Journal(EngineError),
}

enum AttemptEnd {
    Finished(Result<StepOutput, StepError>),
    Aborted,
}

/// Runs attempts until success, a fatal error, exhausted attempts or an interruption.
/// The attempt budget (`policy.max_attempts`) counts from this session, so `wf resume` of a failed run
/// gives its failed steps a fresh budget.
pub(crate) async fn run_attempts(t: TaskInput) -> TaskResult {
    let mut attempt = t.prior_attempts;
    let mut tries = 0u32;
    let mut first_failure: Option<std::time::Instant> = None;
    loop {
        attempt += 1;
        tries += 1;
        let started_ms = now_ms();
        let record = StepRecord {
            id: t.step_id.clone(),
            generation: t.generation,
            status: StepStatus::Running,
            attempts: attempt,
            output: None,
            error: None,
            started_ms,
            finished_ms: None,
            done_seq: 0,
        };
        let started = EventKind::StepStarted {
            step: t.step_id.clone(),
            attempt,
        };
        if let Err(e) = t.journal.record_attempt(&record, started) {
            return TaskResult::Journal(e);
        }
        t.observer.step_started(&t.step_id, attempt);
        failpoint::hit(&t.step_id, Point::Before);
        if let Some(d) = failpoint::delay(&t.step_id) {
            tokio::time::sleep(d).await;
        }
        let end = one_attempt(&t, attempt).await;
        let result = match end {
            AttemptEnd::Aborted => return interrupted(&t, attempt),
            AttemptEnd::Finished(r) => r,
        };
        if matches!(result, Err(StepError::Retryable(_))) {
            first_failure.get_or_insert_with(std::time::Instant::now);
        }
        match result {
            Ok(output) => {
                failpoint::hit(&t.step_id, Point::AfterEffect);
                return TaskResult::Completed {
                    index: t.index,
                    attempt,
                    started_ms,
                    output,
                };
            }
            Err(StepError::Retryable(msg))
                if tries < t.policy.max_attempts
                    || first_failure.is_some_and(|f| f.elapsed() < t.retry_window) =>
            {
                let delay = t.policy.backoff(tries + 1);
                let failed = EventKind::StepFailed {
                    step: t.step_id.clone(),
                    attempt,
                    error: msg,
                    retry_in_ms: Some(delay.as_millis() as u64),
                };
                if let Err(e) = t.journal.append(t.generation, failed) {
                    return TaskResult::Journal(e);
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = t.boundary.cancelled() => return interrupted(&t, attempt),
                    _ = t.abort.cancelled() => return interrupted(&t, attempt),
                }
            }
            Err(error) => {
                return TaskResult::Failed {
                    index: t.index,
                    attempt,
                    started_ms,
                    error,
                }
            }
        }
    }
}

/// One attempt: its context, the step under its timeout (or an abort), and what it cost the
/// process (CPU, peak memory), added to a finished step's metrics.
async fn one_attempt(t: &TaskInput, attempt: u32) -> AttemptEnd {
    let cx = StepContext {
        run_id: t.run_id.clone(),
        step_id: t.step_id.clone(),
        generation: t.generation,
        attempt,
        idempotency_key: crate::step::idempotency_key(&t.run_id, t.generation, &t.step_id),
        inputs: t.inputs.clone(),
        artifact_dir: t.artifact_dir.clone(),
        progress: Progress::new(&t.step_id, t.observer.clone()),
        cancel: t.abort.clone(),
        host: t.host.clone(),
    };
    let meter = crate::resources::Meter::start();
    let end = tokio::select! {
        biased;
        _ = t.abort.cancelled() => AttemptEnd::Aborted,
        r = attempt_with_timeout(t.step.as_ref(), &cx, t.timeout) => AttemptEnd::Finished(r),
    };
    match end {
        AttemptEnd::Finished(Ok(mut output)) => {
            if let Some((cpu, rss)) = meter.finish() {
                output.metrics.insert(crate::resources::CPU_MS.into(), cpu);
                output
                    .metrics
                    .insert(crate::resources::PEAK_RSS_KB.into(), rss);
            }
            AttemptEnd::Finished(Ok(output))
        }
        other => other,
    }
}

fn interrupted(t: &TaskInput, attempt: u32) -> TaskResult {
    let ev = EventKind::StepInterrupted {
        step: t.step_id.clone(),
        attempt,
    };
    match t.journal.append(t.generation, ev) {
        Ok(()) => TaskResult::Interrupted { index: t.index },
        Err(e) => TaskResult::Journal(e),
    }
}

async fn attempt_with_timeout(
    step: &dyn Step,
    cx: &StepContext,
    timeout: Option<Duration>,
) -> Result<StepOutput, StepError> {
    match timeout {
        Some(limit) => match tokio::time::timeout(limit, step.run(cx)).await {
            Ok(r) => r,
            Err(_) => Err(StepError::Retryable(format!(
                "step {} timed out after {} ms",
                cx.step_id,
                limit.as_millis()
            ))),
        },
        None => step.run(cx).await,
    }
}
