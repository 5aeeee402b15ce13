//! The runner's bookkeeping: committing finished steps, reaching checkpoints, ending the session.

use super::{Loop, Outcome, Runner, Stopping, TaskResult};
use crate::error::Result;
use crate::failpoint::{self, Point};
use crate::journal::Commit;
use crate::model::{now_ms, CheckpointRecord, EventKind, RunStatus, StepRecord, StepStatus};
use crate::status::StatusView;
use crate::step::StepError;
use std::sync::Arc;

impl Runner {
    /// Journals a batch of finished tasks in one durable commit, then updates the schedule.
    /// A step's dependents become ready only after the commit returns: nothing downstream ever
    /// starts from an output that a crash could still take back.
    pub(super) fn settle(&self, lp: &mut Loop, batch: Vec<TaskResult>) -> Result<()> {
        let generation = self.run.generation;
        let mut commit = Commit::default();
        let mut completed = Vec::new();
        let mut reached_now = Vec::new();
        for result in batch {
            match result {
                TaskResult::Completed {
                    index,
                    attempt,
                    started_ms,
                    output,
                } => {
                    lp.sched.running.remove(&index);
                    let id = lp.sched.graph.spec(index).id.clone();
                    if !output.spawn.is_empty() {
                        let mut trial = lp.sched.graph.clone();
                        match trial.add_spawned(index, &output.spawn) {
                            Ok(added) => {
                                lp.sched.adopt_spawned(trial, &added, index);
                                let ids: Vec<String> = added
                                    .iter()
                                    .map(|&i| lp.sched.graph.spec(i).id.clone())
                                    .collect();
                                self.observer.steps_added(&ids);
                                commit.events.push((
                                    generation,
                                    EventKind::StepsSpawned {
                                        by: id.clone(),
                                        count: added.len() as u32,
                                    },
                                ));
                            }
                            Err(e) => {
                                let error = StepError::Fatal(e.to_string());
                                self.fail(lp, &mut commit, index, attempt, started_ms, error);
                                continue;
                            }
                        }
                    }
                    let finished = now_ms();
                    let record = StepRecord {
                        id: id.clone(),
                        generation,
                        status: StepStatus::Done,
                        attempts: attempt,
                        output: Some(output),
                        error: None,
                        started_ms,
                        finished_ms: Some(finished),
                        done_seq: lp.sched.next_seq(),
                    };
                    commit.events.push((
                        generation,
                        EventKind::StepSucceeded {
                            step: id.clone(),
                            attempt,
                            duration_ms: finished.saturating_sub(started_ms),
                        },
                    ));
                    let output = Arc::new(record.output.clone().unwrap_or_default());
                    commit.steps.push(record.clone());
                    lp.sched.records.insert(id.clone(), record);
                    reached_now.extend(lp.sched.mark_done(index, output));
                    completed.push(id);
                }
                TaskResult::Failed {
                    index,
                    attempt,
                    started_ms,
                    error,
                } => {
                    lp.sched.running.remove(&index);
                    self.fail(lp, &mut commit, index, attempt, started_ms, error);
                }
                TaskResult::Interrupted { index } => {
                    lp.sched.running.remove(&index);
                    lp.sched.ready.push_front(index);
                }
                TaskResult::Journal(e) => return Err(e),
            }
        }
        for c in reached_now {
            self.reach(lp, c, &mut commit);
        }
        if !commit.steps.is_empty() || !commit.events.is_empty() {
            self.commit(&commit)?;
        }
        lp.dirty = true;
        for id in &completed {
            failpoint::hit(id, Point::AfterRecord);
            self.observer.step_finished(id, true);
        }
        Ok(())
    }

    fn fail(
        &self,
        lp: &mut Loop,
        commit: &mut Commit,
        index: usize,
        attempt: u32,
        started_ms: u64,
        error: StepError,
    ) {
        let id = lp.sched.graph.spec(index).id.clone();
        tracing::info!(run = %self.run.id, step = %id, attempt, %error, "Step failed");
        let record = StepRecord {
            id: id.clone(),
            generation: self.run.generation,
            status: StepStatus::Failed,
            attempts: attempt,
            output: None,
            error: Some(error.to_string()),
            started_ms,
            finished_ms: Some(now_ms()),
            done_seq: 0,
        };
        commit.steps.push(record.clone());
        commit.events.push((
            self.run.generation,
            EventKind::StepFailed {
                step: id.clone(),
                attempt,
                error: error.to_string(),
                retry_in_ms: None,
            },
        ));
        lp.sched.records.insert(id.clone(), record);
        self.observer.step_finished(&id, false);
        if lp.failure.is_none() {
            lp.failure = Some((id, error));
            // Stop starting steps; running ones finish and are recorded.
            lp.boundary.cancel();
        }
    }

    pub(super) fn reach(&self, lp: &mut Loop, c: usize, commit: &mut Commit) {
        let name = lp.sched.graph.checkpoints()[c].name.clone();
        tracing::info!(run = %self.run.id, checkpoint = %name, "Checkpoint reached");
        let record = CheckpointRecord {
            name: name.clone(),
            generation: self.run.generation,
            reached_ms: now_ms(),
        };
        commit.checkpoints.push(record.clone());
        commit
            .events
            .push((self.run.generation, EventKind::CheckpointReached { name }));
        lp.sched.reached.retain(|r| r.name != record.name);
        lp.sched.reached.push(record);
    }

    /// Journals durably, from a blocking-aware context (the fsync may take milliseconds).
    pub(super) fn commit(&self, commit: &Commit) -> Result<()> {
        tokio::task::block_in_place(|| self.journal.commit(commit))
    }

    /// Publishes the live status for readers; a failure only costs freshness, so it is logged.
    pub(super) fn snapshot(&self, lp: &mut Loop) {
        lp.dirty = false;
        let view = StatusView::build(
            &self.run,
            &lp.sched.graph,
            &lp.sched.records,
            &lp.sched.reached,
            Some(lp.lease.clone()),
            true,
        );
        if let Err(e) = self.data.write_snapshot(&self.run.id, &view) {
            tracing::warn!(run = %self.run.id, error = %e, "Could not publish the live status");
        }
    }

    /// Decides how the session ended and records it.
    pub(super) fn finish(&mut self, lp: &mut Loop) -> Result<Outcome> {
        let (status, event, outcome) = if let Some((step, error)) = lp.failure.take() {
            let text = error.to_string();
            let ev = EventKind::RunFailed {
                error: format!("{step}: {text}"),
            };
            match error {
                StepError::Gate(_) => (
                    RunStatus::FailedGate,
                    ev,
                    Outcome::FailedGate { step, error: text },
                ),
                _ => (RunStatus::Failed, ev, Outcome::Failed { step, error: text }),
            }
        } else if matches!(lp.stopping, Some(Stopping::Cancel)) {
            (
                RunStatus::Cancelled,
                EventKind::RunCancelled,
                Outcome::Cancelled,
            )
        } else if lp.sched.all_done() {
            (RunStatus::Done, EventKind::RunDone, Outcome::Done)
        } else if let Some(Stopping::Pause(reason)) = &lp.stopping {
            let reason = reason.clone();
            (
                RunStatus::Paused,
                EventKind::RunPaused {
                    reason: reason.clone(),
                },
                Outcome::Paused { reason },
            )
        } else {
            let error = "no step can start: the plan's steps wait on each other".to_string();
            let ev = EventKind::RunFailed {
                error: error.clone(),
            };
            (
                RunStatus::Failed,
                ev,
                Outcome::Failed {
                    step: String::new(),
                    error,
                },
            )
        };
        self.run.status = status;
        self.run.updated_ms = now_ms();
        self.run.message = match &outcome {
            Outcome::Failed { step, error } | Outcome::FailedGate { step, error } => {
                Some(format!("{step}: {error}"))
            }
            Outcome::Paused { reason } => Some(reason.clone()),
            _ => None,
        };
        self.commit(&Commit {
            run: Some(self.run.clone()),
            events: vec![(self.run.generation, event)],
            ..Commit::default()
        })?;
        Ok(outcome)
    }
}
