//! The runner: schedules ready steps on tokio up to `jobs`, journals each completion before it counts,
//! honours pause and cancel requests at step boundaries, and keeps the lease fresh.
//!
//! Completions are committed in groups: every step that finished while the previous commit was being
//! flushed goes into the next transaction, so one fsync serves many steps when `jobs` > 1.

mod sched;
mod session;
mod task;

pub(crate) use sched::load_graph;

use crate::datadir::{Control, DataDir};
use crate::error::{EngineError, Result};
use crate::journal::{Commit, Journal};
use crate::model::{now_ms, EventKind, Lease, RunRecord, RunStatus, StepRecord, StepStatus};
use crate::retry::RetryPolicy;
use crate::step::{Observer, StepError};
use crate::workflow::Workflow;
use sched::Sched;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use task::{run_attempts, TaskInput, TaskResult};
use tokio::task::{Id, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

/// Tunables of one runner session.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Steps running at once.
    pub jobs: usize,
    /// Retry policy of steps that declare none.
    pub retry: RetryPolicy,
    /// A retryable error is retried past the policy's attempts for this long after the step's
    /// first failure in the session, so a database restart is survived unattended.
    pub retry_window: Duration,
    /// Per-attempt timeout of steps that declare none.
    pub step_timeout: Option<Duration>,
    /// How often the lease's heartbeat is renewed.
    pub heartbeat: Duration,
    /// How often pause/cancel requests are looked for.
    pub poll: Duration,
    /// How often a live status snapshot is published for `wf status`.
    pub snapshot_every: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            jobs: 4,
            retry: RetryPolicy::default(),
            retry_window: Duration::ZERO,
            step_timeout: None,
            heartbeat: Duration::from_secs(2),
            poll: Duration::from_millis(100),
            snapshot_every: Duration::from_millis(500),
        }
    }
}

/// Signals from outside (Ctrl-C, SIGTERM): `graceful` stops starting steps and lets running ones
/// finish; `abort` also drops running attempts (they run again on resume).
#[derive(Clone, Default)]
pub struct Stop {
    pub graceful: CancellationToken,
    pub abort: CancellationToken,
}

/// How a runner session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    AlreadyDone,
    Failed { step: String, error: String },
    FailedGate { step: String, error: String },
    Paused { reason: String },
    Cancelled,
}

/// Damaged inputs repaired by re-running their producer, at most, in one session.
const MAX_REDOS: u32 = 3;

enum Stopping {
    Pause(String),
    Cancel,
}

/// One session of running a run; built by `Engine::execute`.
pub(crate) struct Runner {
    pub data: DataDir,
    /// Given to every step (`StepContext::host`).
    pub host: Arc<dyn crate::step::Host>,
    pub journal: Arc<dyn Journal>,
    pub workflow: Arc<dyn Workflow>,
    pub options: RunOptions,
    pub observer: Arc<dyn Observer>,
    pub run: RunRecord,
}

struct Loop {
    sched: Sched,
    tasks: JoinSet<TaskResult>,
    task_steps: HashMap<Id, usize>,
    failure: Option<(String, StepError)>,
    stopping: Option<Stopping>,
    boundary: CancellationToken,
    abort: CancellationToken,
    lease: Lease,
    dirty: bool,
}

impl Runner {
    /// Runs the run until it is done, fails, or is paused or cancelled.
    pub async fn execute(mut self, stop: Stop, resumed: bool) -> Result<Outcome> {
        self.renew_sessions()?;
        let sched = self.prepare()?;
        let lease = self.take_lease()?;
        let mut lp = Loop {
            sched,
            tasks: JoinSet::new(),
            task_steps: HashMap::new(),
            failure: None,
            stopping: None,
            boundary: CancellationToken::new(),
            abort: CancellationToken::new(),
            lease,
            dirty: true,
        };
        let generation = self.run.generation;
        self.run.status = RunStatus::Running;
        self.run.message = None;
        self.run.updated_ms = now_ms();
        let mut commit = Commit {
            run: Some(self.run.clone()),
            events: vec![(generation, EventKind::RunStarted { resumed })],
            ..Commit::default()
        };
        for c in lp.sched.unrecorded_checkpoints() {
            self.reach(&mut lp, c, &mut commit);
        }
        self.commit(&commit)?;
        // A request left over from an earlier session must not stop this one.
        let _ = self.data.take_request(&self.run.id);
        self.observer
            .run_started(&self.run.id, lp.sched.graph.len(), lp.sched.done_count());
        if !lp.sched.ready.is_empty() {
            self.snapshot(&mut lp);
        }
        let mut result = self.drive(&mut lp, &stop).await;
        // A step that found a damaged input names its producer: that step and everything after it
        // run again, in this session (bounded, so a producer that keeps writing bad files fails).
        let mut redos = 0;
        while result.is_ok() && redos < MAX_REDOS {
            let Some((failed, StepError::Redo { producer, path, .. })) = lp.failure.clone() else {
                break;
            };
            redos += 1;
            match self.redo(&mut lp, &failed, &producer, path) {
                Ok(true) => result = self.drive(&mut lp, &stop).await,
                Ok(false) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let outcome = match result {
            Ok(()) => self.finish(&mut lp),
            Err(e) => Err(e),
        };
        self.observer.run_finished();
        let _ = self.journal.put_lease(None);
        let _ = self.data.write_lease(&self.run.id, None);
        let _ = self.data.clear_snapshot(&self.run.id);
        outcome
    }

    /// Sends `producer` (an ancestor of the `failed` step) and everything downstream back to
    /// pending in a new generation, journaled with an `ArtifactMismatch` event; false if
    /// `producer` is not upstream.
    fn redo(
        &mut self,
        lp: &mut Loop,
        failed: &str,
        producer: &str,
        path: std::path::PathBuf,
    ) -> Result<bool> {
        let graph = &lp.sched.graph;
        let (Some(p), Some(f)) = (graph.index_of(producer), graph.index_of(failed)) else {
            return Ok(false);
        };
        if !graph.ancestors(&[f]).contains(&p) {
            return Ok(false);
        }
        let down = graph.descendants(&[p]);
        let (ids, cps) = graph.invalidation(&down, |id| lp.sched.records.contains_key(id));
        tracing::warn!(run = %self.run.id, step = producer, path = %path.display(), "Damaged input; its producer runs again");
        // A new generation, as `wf recover` makes: steps that already had effects (a store's load
        // that committed) replace them instead of colliding with them.
        self.run.generation += 1;
        self.run.updated_ms = now_ms();
        let event = EventKind::ArtifactMismatch {
            step: producer.to_string(),
            path,
        };
        self.journal
            .invalidate(&ids, &cps, &self.run, vec![event])?;
        lp.sched = self.prepare()?;
        lp.failure = None;
        lp.boundary = CancellationToken::new();
        lp.dirty = true;
        Ok(true)
    }

    /// Loads the run's state and re-checks the artifacts of done steps; a damaged artifact sends its
    /// step and everything downstream back to pending (their records go to history).
    fn prepare(&mut self) -> Result<Sched> {
        loop {
            let (graph, records) = load_graph(&self.run.workflow, self.journal.as_ref())?;
            let (damaged, events) = damaged_artifacts(&graph, &records);
            if damaged.is_empty() {
                let reached = self.journal.checkpoints()?;
                return Ok(Sched::new(graph, records, reached));
            }
            let down = graph.descendants(&damaged);
            let (ids, cps) = graph.invalidation(&down, |id| records.contains_key(id));
            tracing::warn!(run = %self.run.id, steps = ids.len(), "Damaged artifacts; steps run again");
            self.run.updated_ms = now_ms();
            self.journal.invalidate(&ids, &cps, &self.run, events)?;
        }
    }

    /// Records this process as the run's holder; the previous lease, if any, belonged to a dead
    /// process (we hold the OS lock), so it is taken over and the takeover logged.
    fn take_lease(&self) -> Result<Lease> {
        let previous = self.journal.lease()?;
        let now = now_ms();
        let lease = Lease {
            pid: std::process::id(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            acquired_ms: now,
            heartbeat_ms: now,
        };
        let took_over = previous.map(|p| format!("pid {} on {}", p.pid, p.host));
        if let Some(old) = &took_over {
            tracing::warn!(run = %self.run.id, previous = %old, "Took over a stale lease");
        }
        self.journal.put_lease(Some(&lease))?;
        self.data.write_lease(&self.run.id, Some(&lease))?;
        self.journal.append(
            self.run.generation,
            EventKind::LeaseAcquired {
                pid: lease.pid,
                host: lease.host.clone(),
                took_over,
            },
        )?;
        Ok(lease)
    }

    async fn drive(&self, lp: &mut Loop, stop: &Stop) -> Result<()> {
        let mut tick = tokio::time::interval(self.options.poll);
        let mut last_heartbeat = Instant::now();
        let mut last_snapshot = Instant::now();
        let mut aborted = false;
        loop {
            if lp.stopping.is_none() && lp.failure.is_none() {
                while lp.sched.running.len() < self.options.jobs.max(1) {
                    let Some(i) = lp.sched.ready.pop_front() else {
                        break;
                    };
                    self.start(lp, i);
                }
            }
            if lp.sched.running.is_empty() {
                return Ok(());
            }
            tokio::select! {
                joined = lp.tasks.join_next_with_id() => {
                    let mut batch = Vec::new();
                    if let Some(j) = joined {
                        batch.push(self.task_result(lp, j));
                    }
                    while let Some(j) = lp.tasks.try_join_next_with_id() {
                        batch.push(self.task_result(lp, j));
                    }
                    self.settle(lp, batch)?;
                }
                _ = tick.tick() => {
                    match self.data.take_request(&self.run.id) {
                        Some(Control::Pause) => self.begin_stop(lp, Stopping::Pause("paused by `wf pause`".into())),
                        Some(Control::Cancel) => self.begin_stop(lp, Stopping::Cancel),
                        None => {}
                    }
                    if last_heartbeat.elapsed() >= self.options.heartbeat {
                        last_heartbeat = Instant::now();
                        lp.lease.heartbeat_ms = now_ms();
                        self.journal.put_lease(Some(&lp.lease))?;
                        self.data.write_lease(&self.run.id, Some(&lp.lease))?;
                    }
                    if lp.dirty && last_snapshot.elapsed() >= self.options.snapshot_every {
                        last_snapshot = Instant::now();
                        self.snapshot(lp);
                    }
                }
                _ = stop.graceful.cancelled(), if lp.stopping.is_none() => {
                    self.begin_stop(lp, Stopping::Pause("interrupted by a signal".into()));
                }
                _ = stop.abort.cancelled(), if !aborted => {
                    aborted = true;
                    if lp.stopping.is_none() {
                        lp.stopping = Some(Stopping::Pause("aborted by a signal".into()));
                    }
                    lp.boundary.cancel();
                    lp.abort.cancel();
                }
            }
        }
    }

    fn begin_stop(&self, lp: &mut Loop, stopping: Stopping) {
        match stopping {
            Stopping::Cancel => {
                lp.boundary.cancel();
                lp.abort.cancel();
                lp.stopping = Some(Stopping::Cancel);
            }
            Stopping::Pause(reason) => {
                if lp.stopping.is_none() {
                    tracing::info!(run = %self.run.id, %reason, "Pausing at the next step boundary");
                    lp.boundary.cancel();
                    lp.stopping = Some(Stopping::Pause(reason));
                }
            }
        }
    }

    fn start(&self, lp: &mut Loop, i: usize) {
        let spec = lp.sched.graph.spec(i).clone();
        let prior_attempts = lp
            .sched
            .records
            .get(&spec.id)
            .map(|r| r.attempts)
            .unwrap_or(0);
        lp.sched.running.insert(i);
        lp.dirty = true;
        let handle = match self.workflow.step(&spec) {
            Ok(step) => {
                let inputs = lp
                    .sched
                    .graph
                    .deps(i)
                    .iter()
                    .filter_map(|&d| {
                        let out = lp.sched.output(d)?;
                        Some((lp.sched.graph.spec(d).id.clone(), out))
                    })
                    .collect();
                let input = TaskInput {
                    index: i,
                    step_id: spec.id.clone(),
                    step,
                    journal: self.journal.clone(),
                    run_id: self.run.id.clone(),
                    generation: self.run.generation,
                    prior_attempts,
                    policy: spec
                        .retry
                        .clone()
                        .unwrap_or_else(|| self.options.retry.clone()),
                    retry_window: self.options.retry_window,
                    timeout: spec
                        .timeout_ms
                        .map(Duration::from_millis)
                        .or(self.options.step_timeout),
                    inputs,
                    artifact_dir: self
                        .data
                        .run_dir(&self.run.id)
                        .join("steps")
                        .join(crate::step::artifact_dir_name(&spec.id)),
                    observer: self.observer.clone(),
                    host: self.host.clone(),
                    boundary: lp.boundary.clone(),
                    abort: lp.abort.clone(),
                };
                let now = now_ms();
                lp.sched.records.insert(
                    spec.id.clone(),
                    StepRecord {
                        id: spec.id.clone(),
                        generation: self.run.generation,
                        status: StepStatus::Running,
                        attempts: prior_attempts + 1,
                        output: None,
                        error: None,
                        started_ms: now,
                        finished_ms: None,
                        done_seq: 0,
                    },
                );
                lp.tasks.spawn(run_attempts(input))
            }
            Err(e) => {
                let error = StepError::Fatal(e.to_string());
                lp.tasks.spawn(async move {
                    TaskResult::Failed {
                        index: i,
                        attempt: prior_attempts,
                        started_ms: now_ms(),
                        error,
                    }
                })
            }
        };
        lp.task_steps.insert(handle.id(), i);
    }

    fn task_result(
        &self,
        lp: &mut Loop,
        joined: std::result::Result<(Id, TaskResult), JoinError>,
    ) -> TaskResult {
        match joined {
            Ok((id, r)) => {
                lp.task_steps.remove(&id);
                r
            }
            Err(e) => {
                let Some(index) = lp.task_steps.remove(&e.id()) else {
                    return TaskResult::Journal(EngineError::Workflow(
                        "internal error: a finished task belongs to no step".into(),
                    ));
                };
                let what = if e.is_panic() {
                    "panicked"
                } else {
                    "was aborted"
                };
                let id = &lp.sched.graph.spec(index).id;
                TaskResult::Failed {
                    index,
                    attempt: lp.sched.records.get(id).map(|r| r.attempts).unwrap_or(1),
                    started_ms: now_ms(),
                    error: StepError::Fatal(format!("step {id} {what}")),
                }
            }
        }
    }
}

mod settle;

/// Done steps whose artifacts no longer match their records, checked on all cores (a resume of a
/// large run stats every artifact), with one `ArtifactMismatch` event each.
fn damaged_artifacts(
    graph: &crate::graph::Graph,
    records: &HashMap<String, StepRecord>,
) -> (Vec<usize>, Vec<EventKind>) {
    let done: Vec<(usize, &crate::model::StepOutput)> = graph
        .specs()
        .iter()
        .enumerate()
        .filter_map(|(i, spec)| {
            let rec = records.get(&spec.id)?;
            let out = rec.output.as_ref()?;
            (rec.status == StepStatus::Done && !out.artifacts.is_empty()).then_some((i, out))
        })
        .collect();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let chunk = done.len().div_ceil(threads).max(256);
    let mut bad: Vec<(usize, std::path::PathBuf)> = std::thread::scope(|scope| {
        let handles: Vec<_> = done
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .filter_map(|(i, out)| {
                            let bad = out.artifacts.iter().find(|a| !a.verify())?;
                            Some((*i, bad.path.clone()))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        // A panicked checker counts its whole chunk as damaged: re-running is safe, skipping is not.
        handles
            .into_iter()
            .zip(done.chunks(chunk))
            .flat_map(|(h, part)| {
                h.join().unwrap_or_else(|_| {
                    part.iter()
                        .map(|(i, out)| (*i, out.artifacts[0].path.clone()))
                        .collect()
                })
            })
            .collect()
    });
    bad.sort();
    let events = bad
        .iter()
        .map(|(i, path)| EventKind::ArtifactMismatch {
            step: graph.spec(*i).id.clone(),
            path: path.clone(),
        })
        .collect();
    (bad.into_iter().map(|(i, _)| i).collect(), events)
}
