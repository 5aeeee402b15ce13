//! The engine's front door: create, resume, recover and inspect runs in one data directory.

use crate::datadir::{Access, Control, DataDir, RunLock};
use crate::error::{EngineError, Result};
use crate::graph::Graph;
use crate::journal::{Journal, JournalRead, SledJournal};
use crate::model::{now_ms, Event, EventKind, RunRecord, RunStatus, StepStatus};
use crate::runner::{load_graph, Outcome, RunOptions, Runner, Stop};
use crate::status::StatusView;
use crate::step::Observer;
use crate::workflow::Workflow;
use std::collections::HashSet;
use std::sync::Arc;

/// A run held exclusively by this process, ready to execute.
pub struct OpenRun {
    pub run: RunRecord,
    journal: Arc<SledJournal>,
    _lock: RunLock,
}

/// What a pause or cancel request did.
#[derive(Debug, PartialEq, Eq)]
pub enum ControlOutcome {
    /// Left for the live runner, which acts at its next step boundary.
    Requested,
    /// No runner was live: the run's status was set directly.
    Applied(RunStatus),
}

/// Runs whose journal could not be read, with why.
pub type Unreadable = Vec<(String, EngineError)>;

/// Runs of one data directory.
pub struct Engine {
    data: DataDir,
}

impl Engine {
    pub fn new(data: DataDir) -> Self {
        Engine { data }
    }

    pub fn data(&self) -> &DataDir {
        &self.data
    }

    /// How long `run`'s durable journal commits took, read without opening the journal (so while
    /// its runner holds it); `None` for a run that never committed or predates the measurement.
    pub fn commit_latency(&self, run: &str) -> Option<crate::journal::latency::CommitLatency> {
        crate::journal::latency::CommitLatency::read(&self.data.journal_path(run))
    }

    /// Creates a run of `workflow`: validates its plan, allocates an id and journals run and plan.
    pub fn create(&self, workflow: &dyn Workflow, args: Vec<String>) -> Result<OpenRun> {
        Self::check(workflow)?;
        let id = self.data.allocate_run_id(workflow.run_prefix())?;
        let lock = self.data.lock_for_runner_new(&id)?;
        self.create_locked(workflow, args, id, lock)
    }

    /// Creates a run under an id allocated beforehand (`allocate_run_id`), so the caller knew the
    /// id before the run existed (`wf batch` records it before starting the child). If another
    /// process holds the id or already created the run, this is `Busy`: resume it instead.
    pub fn create_as(
        &self,
        workflow: &dyn Workflow,
        args: Vec<String>,
        id: &str,
    ) -> Result<OpenRun> {
        Self::check(workflow)?;
        let plain = !id.is_empty() && !id.contains(['/', '\\']) && id != "." && id != "..";
        if !plain || !self.data.run_dir(id).is_dir() {
            return Err(EngineError::UnknownRun(id.to_string()));
        }
        let lock = self.data.lock_for_runner_new(id)?;
        if self.data.has_run(id) {
            return Err(EngineError::Busy {
                run: id.to_string(),
                holder: "another wf process, which created it first".into(),
            });
        }
        self.create_locked(workflow, args, id.to_string(), lock)
    }

    fn check(workflow: &dyn Workflow) -> Result<()> {
        let plan = workflow.plan()?;
        Graph::new(workflow.name(), &plan)?;
        for spec in &plan.steps {
            workflow.step(spec)?;
        }
        Ok(())
    }

    fn create_locked(
        &self,
        workflow: &dyn Workflow,
        args: Vec<String>,
        id: String,
        lock: RunLock,
    ) -> Result<OpenRun> {
        let plan = workflow.plan()?;
        let journal = Arc::new(SledJournal::open(&self.data.journal_path(&id), true)?);
        let now = now_ms();
        let run = RunRecord {
            id,
            workflow: workflow.name().to_string(),
            args,
            status: RunStatus::Pending,
            generation: 0,
            config_hash: workflow.config_hash(),
            created_ms: now,
            updated_ms: now,
            message: None,
            attrs: workflow.attrs(),
        };
        journal.create(&run, &plan)?;
        Ok(OpenRun {
            run,
            journal,
            _lock: lock,
        })
    }

    /// Takes an existing run for running it (resume, recover), refusing if a live runner holds it.
    pub fn open(&self, run: &str) -> Result<OpenRun> {
        let lock = self.data.lock_for_runner(run)?;
        let journal = Arc::new(SledJournal::open(&self.data.journal_path(run), false)?);
        let run = journal.run()?;
        Ok(OpenRun {
            run,
            journal,
            _lock: lock,
        })
    }

    /// Runs `open` until done, failed, paused or cancelled.
    pub async fn execute(
        &self,
        open: OpenRun,
        workflow: Arc<dyn Workflow>,
        options: RunOptions,
        observer: Arc<dyn Observer>,
        stop: Stop,
    ) -> Result<Outcome> {
        let run = open.run.clone();
        match run.status {
            RunStatus::Done => return Ok(Outcome::AlreadyDone),
            RunStatus::RolledBack => {
                return Err(EngineError::WrongState {
                    run: run.id.clone(),
                    status: "rolled_back".into(),
                    hint: "what it loaded was deleted by `wf rollback`; start a new run".into(),
                })
            }
            RunStatus::Cancelled => {
                return Err(EngineError::WrongState {
                    run: run.id.clone(),
                    status: "cancelled".into(),
                    hint: format!(
                        "a cancelled run is not resumed; `wf recover {} <checkpoint>` reruns it from a checkpoint",
                        run.id
                    ),
                })
            }
            _ => {}
        }
        let current = workflow.config_hash();
        if current != run.config_hash {
            return Err(EngineError::ConfigChanged {
                run: run.id.clone(),
                recorded: short(&run.config_hash),
                current: short(&current),
            });
        }
        let resumed = run.status != RunStatus::Pending || run.generation > 0;
        let runner = Runner {
            host: Arc::new(Engine::new(self.data.clone())),
            data: self.data.clone(),
            journal: open.journal.clone(),
            workflow,
            options,
            observer,
            run,
        };
        let outcome = runner.execute(stop, resumed).await;
        drop(open);
        outcome
    }

    /// Starts a new generation of `open` from checkpoint `name`: the checkpoint's steps and everything
    /// upstream keep their outputs; every other step's record moves to history and it runs again.
    /// The workflow's current configuration applies from here on. Returns the steps invalidated.
    pub fn recover(
        &self,
        open: &mut OpenRun,
        name: &str,
        workflow: &dyn Workflow,
    ) -> Result<usize> {
        let mut run = open.journal.run()?;
        let (graph, records) = load_graph(&run.workflow, open.journal.as_ref())?;
        let c = graph
            .checkpoint(name)
            .ok_or_else(|| EngineError::UnknownCheckpoint {
                run: run.id.clone(),
                checkpoint: name.to_string(),
            })?;
        let members = graph.members(c);
        let done = members
            .iter()
            .filter(|&&i| {
                records
                    .get(&graph.spec(i).id)
                    .is_some_and(|r| r.status == StepStatus::Done)
            })
            .count();
        if members.is_empty() || done < members.len() {
            return Err(EngineError::CheckpointNotReached {
                run: run.id.clone(),
                checkpoint: name.to_string(),
                done,
                total: members.len(),
            });
        }
        let keep: HashSet<String> = kept_upstream(&graph, c)
            .into_iter()
            .map(|i| graph.spec(i).id.clone())
            .collect();
        let ids: Vec<String> = records
            .keys()
            .filter(|id| !keep.contains(*id))
            .cloned()
            .collect();
        let cps: Vec<String> = (0..graph.checkpoints().len())
            .filter(|&k| {
                graph
                    .members(k)
                    .iter()
                    .any(|&i| !keep.contains(&graph.spec(i).id))
            })
            .map(|k| graph.checkpoints()[k].name.clone())
            .collect();
        run.generation += 1;
        run.status = RunStatus::Pending;
        run.message = None;
        run.config_hash = workflow.config_hash();
        run.updated_ms = now_ms();
        let event = EventKind::Recovered {
            checkpoint: name.to_string(),
            invalidated: ids.len() as u32,
        };
        open.journal.invalidate(&ids, &cps, &run, vec![event])?;
        open.run = run;
        Ok(ids.len())
    }

    /// Records that `wf rollback` deleted what `run` loaded: status `rolled_back` and an event.
    /// Refused while a runner holds the run.
    /// Sets attribute `key` of a finished run (`superseded_by` when a refresh replaced it).
    pub fn set_attr(&self, run: &str, key: &str, value: &str) -> Result<()> {
        self.with_journal(run, |journal| {
            let mut record = journal.run()?;
            record.attrs.insert(key.to_string(), value.to_string());
            record.updated_ms = now_ms();
            journal.commit(&crate::journal::Commit {
                run: Some(record),
                ..Default::default()
            })
        })
    }

    pub fn mark_rolled_back(&self, run: &str, detail: &str) -> Result<()> {
        self.with_journal(run, |journal| {
            let mut record = journal.run()?;
            record.status = RunStatus::RolledBack;
            record.message = Some(format!("rolled back: {detail}"));
            record.updated_ms = now_ms();
            journal.commit(&crate::journal::Commit {
                run: Some(record.clone()),
                events: vec![(
                    record.generation,
                    EventKind::RolledBack {
                        detail: detail.to_string(),
                    },
                )],
                ..Default::default()
            })
        })
    }

    /// The status of `run`: from its journal, or from the live runner's snapshot. A run recorded
    /// as running whose lock is free lost its runner: it shows as `interrupted`.
    pub fn status(&self, run: &str) -> Result<StatusView> {
        match self.data.access(run, false)? {
            Access::Exclusive(_lock) => status_of(
                run,
                &SledJournal::open(&self.data.journal_path(run), false)?,
            ),
            // The snapshot is published when steps change; the lease file every heartbeat: a
            // long step must not look like a runner that stopped beating.
            Access::Live(lease) => self
                .data
                .read_snapshot(run)
                .map(|mut v: StatusView| {
                    if lease.is_some() {
                        v.lease = lease.clone();
                    }
                    v
                })
                .ok_or_else(|| EngineError::Busy {
                    run: run.to_string(),
                    holder: lease
                        .map(|l| {
                            format!("{}, which has not published its status yet", l.describe())
                        })
                        .unwrap_or_else(|| "another wf process".into()),
                }),
        }
    }

    /// Status, done outputs and events of a run no runner holds, read in one opening of its
    /// journal (a report needs all three; opening sled three times in a row only adds waits).
    pub fn readout(&self, run: &str) -> Result<Readout> {
        self.with_journal(run, |journal| {
            Ok(Readout {
                status: status_of(run, journal)?,
                outputs: done_outputs(journal)?,
                events: journal.events(None)?,
            })
        })
    }

    /// Every run in the data directory, oldest first (steps left out), and the runs whose journal
    /// could not be read with why (the caller reports them and exits non-zero).
    pub fn list(&self) -> Result<(Vec<StatusView>, Unreadable)> {
        let mut out = Vec::new();
        let mut unreadable = Vec::new();
        for id in self.data.run_ids()? {
            match self.status(&id) {
                Ok(mut v) => {
                    v.steps.clear();
                    out.push(v);
                }
                // A live runner that has not published its first snapshot is not a broken journal.
                Err(EngineError::Busy { .. }) => {}
                Err(e) => unreadable.push((id, e)),
            }
        }
        Ok((out, unreadable))
    }

    /// The run record and the outputs of its done steps (current generation), read-only.
    pub fn outputs(
        &self,
        run: &str,
    ) -> Result<(RunRecord, Vec<(String, crate::model::StepOutput)>)> {
        self.with_journal(run, |journal| Ok((journal.run()?, done_outputs(journal)?)))
    }

    /// The event log of `run` (not available while a runner holds it: see its log file).
    pub fn events(&self, run: &str) -> Result<Vec<Event>> {
        self.with_journal(run, |journal| journal.events(None))
    }

    /// Runs `read` (or a write of a finished run's record) on the journal of `run`, which no
    /// runner may hold.
    fn with_journal<T>(
        &self,
        run: &str,
        read: impl FnOnce(&SledJournal) -> Result<T>,
    ) -> Result<T> {
        match self.data.access(run, false)? {
            Access::Exclusive(_lock) => {
                read(&SledJournal::open(&self.data.journal_path(run), false)?)
            }
            Access::Live(lease) => Err(EngineError::Busy {
                run: run.to_string(),
                holder: lease
                    .map(|l| l.describe())
                    .unwrap_or_else(|| "another wf process".into()),
            }),
        }
    }

    /// Pauses or cancels `run`: a live runner gets a request; otherwise the status is set here.
    pub fn control(&self, run: &str, control: Control) -> Result<ControlOutcome> {
        match self.data.access(run, false)? {
            Access::Live(_) => {
                self.data.request(run, control)?;
                Ok(ControlOutcome::Requested)
            }
            Access::Exclusive(_lock) => {
                let journal = SledJournal::open(&self.data.journal_path(run), false)?;
                let mut record = journal.run()?;
                let (status, event) = match control {
                    Control::Pause => (
                        RunStatus::Paused,
                        EventKind::RunPaused {
                            reason: "paused by `wf pause` while no runner was live".into(),
                        },
                    ),
                    Control::Cancel => (RunStatus::Cancelled, EventKind::RunCancelled),
                };
                let settled = matches!(
                    record.status,
                    RunStatus::Done | RunStatus::Cancelled | RunStatus::RolledBack
                ) || (control == Control::Pause
                    && record.status != RunStatus::Running
                    && record.status != RunStatus::Pending);
                if settled {
                    return Err(EngineError::WrongState {
                        run: run.to_string(),
                        status: record.status.as_str().into(),
                        hint: "nothing to do".into(),
                    });
                }
                record.status = status;
                record.updated_ms = now_ms();
                journal.commit(&crate::journal::Commit {
                    run: Some(record),
                    events: vec![(0, event)],
                    ..Default::default()
                })?;
                Ok(ControlOutcome::Applied(status))
            }
        }
    }
}

fn short(hash: &str) -> String {
    hash.chars().take(12).collect()
}

impl crate::step::Host for Engine {
    fn data(&self) -> &DataDir {
        &self.data
    }
    fn outputs(&self, run: &str) -> Result<(RunRecord, Vec<(String, crate::model::StepOutput)>)> {
        Engine::outputs(self, run)
    }
    fn status(&self, run: &str) -> Result<StatusView> {
        Engine::status(self, run)
    }
}

/// What [`Engine::readout`] returns.
pub struct Readout {
    pub status: StatusView,
    pub outputs: Vec<(String, crate::model::StepOutput)>,
    pub events: Vec<Event>,
}

/// The status view of a run read from its journal (no runner holds it).
fn status_of(run: &str, journal: &SledJournal) -> Result<StatusView> {
    let mut record = journal.run()?;
    if record.status == RunStatus::Running {
        record.message = Some(format!("its runner died; continue with: wf resume {run}"));
    }
    let (graph, records) = load_graph(&record.workflow, journal)?;
    let reached = journal.checkpoints()?;
    let lease = journal.lease()?;
    let mut view = StatusView::build(&record, &graph, &records, &reached, lease, false);
    if record.status == RunStatus::Running {
        view.status = "interrupted".into();
    }
    Ok(view)
}

/// The outputs of the done steps of the journal's current generation.
fn done_outputs(journal: &SledJournal) -> Result<Vec<(String, crate::model::StepOutput)>> {
    Ok(journal
        .steps()?
        .into_iter()
        .filter(|r| r.status == StepStatus::Done)
        .filter_map(|r| r.output.map(|o| (r.id, o)))
        .collect())
}

/// What recovering to checkpoint `c` keeps: its steps and everything upstream, except steps of
/// later checkpoints that are upstream only because a fan-out made a step wait for them (a
/// pipelined `validate/<table>` that the leak scan waited for is redone on `recover anonymized`);
/// a step some kept step names among its declared dependencies stays.
fn kept_upstream(graph: &crate::graph::Graph, c: usize) -> HashSet<usize> {
    let members = graph.members(c);
    let mut keep = graph.ancestors(members);
    let earlier: HashSet<usize> = (0..=c)
        .flat_map(|k| graph.members(k).iter().copied())
        .collect();
    let later: HashSet<usize> = (c + 1..graph.checkpoints().len())
        .flat_map(|k| graph.members(k).iter().copied())
        .filter(|i| keep.contains(i) && !earlier.contains(i))
        .collect();
    if later.is_empty() {
        return keep;
    }
    let declared: HashSet<&str> = keep
        .iter()
        .filter(|i| !later.contains(i))
        .flat_map(|&i| graph.spec(i).deps.iter().map(String::as_str))
        .collect();
    keep.retain(|i| !later.contains(i) || declared.contains(graph.spec(*i).id.as_str()));
    keep
}
