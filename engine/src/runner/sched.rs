//! In-memory scheduling state of a run: which steps are done, waiting, ready or running, and which
//! checkpoints each completion reaches. Rebuilt from the journal on every resume.

use crate::error::Result;
use crate::graph::Graph;
use crate::journal::JournalRead;
use crate::model::{CheckpointRecord, StepOutput, StepRecord, StepStatus};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// Builds the graph of a run: its plan, plus the steps that its done steps spawned, replayed in the
/// order they completed (so resume sees the same graph without running discovery again).
pub(crate) fn load_graph(
    workflow: &str,
    journal: &dyn JournalRead,
) -> Result<(Graph, HashMap<String, StepRecord>)> {
    // Reading the records (sled iteration and decoding) overlaps with building the graph.
    let (graph, records) = std::thread::scope(|scope| {
        let records = scope.spawn(|| journal.steps());
        let graph = journal.plan().and_then(|plan| Graph::new(workflow, &plan));
        let records = records.join().unwrap_or_else(|_| {
            Err(crate::error::EngineError::Workflow(
                "internal error: reading the step records panicked".into(),
            ))
        });
        (graph, records)
    });
    let mut graph = graph?;
    let records: HashMap<String, StepRecord> =
        records?.into_iter().map(|r| (r.id.clone(), r)).collect();
    let mut spawners: Vec<&StepRecord> = records
        .values()
        .filter(|r| r.status == StepStatus::Done)
        .filter(|r| r.output.as_ref().is_some_and(|o| !o.spawn.is_empty()))
        .collect();
    spawners.sort_by_key(|r| r.done_seq);
    for rec in spawners {
        if let (Some(i), Some(out)) = (graph.index_of(&rec.id), &rec.output) {
            graph.add_spawned(i, &out.spawn)?;
        }
    }
    Ok((graph, records))
}

pub(crate) struct Sched {
    pub graph: Graph,
    pub records: HashMap<String, StepRecord>,
    pub reached: Vec<CheckpointRecord>,
    outputs: Vec<Option<Arc<StepOutput>>>,
    waiting: Vec<usize>,
    pub ready: VecDeque<usize>,
    pub running: HashSet<usize>,
    cp_left: Vec<usize>,
    cp_reached: Vec<bool>,
    next_seq: u64,
}

impl Sched {
    pub fn new(
        graph: Graph,
        records: HashMap<String, StepRecord>,
        reached: Vec<CheckpointRecord>,
    ) -> Self {
        let n = graph.len();
        let outputs: Vec<Option<Arc<StepOutput>>> = (0..n)
            .map(|i| {
                records
                    .get(&graph.spec(i).id)
                    .filter(|r| r.status == StepStatus::Done)
                    .and_then(|r| r.output.clone().map(Arc::new))
            })
            .collect();
        let next_seq = records.values().map(|r| r.done_seq).max().unwrap_or(0) + 1;
        let cp_reached = graph
            .checkpoints()
            .iter()
            .map(|c| reached.iter().any(|r| r.name == c.name))
            .collect();
        let mut s = Sched {
            graph,
            records,
            reached,
            outputs,
            waiting: vec![0; n],
            ready: VecDeque::new(),
            running: HashSet::new(),
            cp_left: Vec::new(),
            cp_reached,
            next_seq,
        };
        for i in 0..n {
            s.waiting[i] = s.open_deps(i);
            if s.waiting[i] == 0 && !s.is_done(i) {
                s.ready.push_back(i);
            }
        }
        s.cp_left = (0..s.graph.checkpoints().len())
            .map(|c| {
                s.graph
                    .members(c)
                    .iter()
                    .filter(|&&i| !s.is_done(i))
                    .count()
            })
            .collect();
        s
    }

    fn open_deps(&self, i: usize) -> usize {
        self.graph
            .deps(i)
            .iter()
            .filter(|&&d| !self.is_done(d))
            .count()
    }

    pub fn is_done(&self, i: usize) -> bool {
        self.outputs[i].is_some()
    }

    pub fn all_done(&self) -> bool {
        self.outputs.iter().all(Option::is_some)
    }

    pub fn done_count(&self) -> usize {
        self.outputs.iter().filter(|o| o.is_some()).count()
    }

    pub fn output(&self, i: usize) -> Option<Arc<StepOutput>> {
        self.outputs[i].clone()
    }

    pub fn next_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// Checkpoints complete but not yet recorded (e.g. after a crash right at a recover).
    pub fn unrecorded_checkpoints(&mut self) -> Vec<usize> {
        let mut out = Vec::new();
        for c in 0..self.cp_left.len() {
            if self.cp_left[c] == 0 && !self.cp_reached[c] && !self.graph.members(c).is_empty() {
                self.cp_reached[c] = true;
                out.push(c);
            }
        }
        out
    }

    /// Takes the graph with steps just spawned (validated on a copy) and wires their waiting counts.
    pub fn adopt_spawned(&mut self, graph: Graph, added: &[usize], spawner: usize) {
        self.graph = graph;
        self.outputs.resize(self.graph.len(), None);
        self.waiting.resize(self.graph.len(), 0);
        // A step spawned again by a session-bound step that ran again keeps its record when it
        // was done and not sent back (its cohort was whole): see `renew_sessions`.
        for &n in added {
            let kept = self
                .records
                .get(&self.graph.spec(n).id)
                .filter(|r| r.status == StepStatus::Done)
                .and_then(|r| r.output.clone());
            self.outputs[n] = kept.map(Arc::new);
        }
        for &n in added {
            self.waiting[n] = self.open_deps(n);
            if self.is_done(n) {
                continue;
            }
            for &c in self.graph.checkpoints_of(n) {
                self.cp_left[c] += 1;
            }
        }
        for &w in self.graph.dependents(spawner).to_vec().iter() {
            if !added.contains(&w) {
                self.waiting[w] = self.open_deps(w);
            }
        }
    }

    /// Marks step `i` done: its dependents may become ready; returns the checkpoints it completes.
    pub fn mark_done(&mut self, i: usize, output: Arc<StepOutput>) -> Vec<usize> {
        self.outputs[i] = Some(output);
        for &d in self.graph.dependents(i) {
            self.waiting[d] = self.waiting[d].saturating_sub(1);
            if self.waiting[d] == 0 && !self.is_done(d) && !self.running.contains(&d) {
                self.ready.push_back(d);
            }
        }
        let mut reached = Vec::new();
        for &c in self.graph.checkpoints_of(i) {
            self.cp_left[c] = self.cp_left[c].saturating_sub(1);
            if self.cp_left[c] == 0 && !self.cp_reached[c] {
                self.cp_reached[c] = true;
                reached.push(c);
            }
        }
        reached
    }
}
