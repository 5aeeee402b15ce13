//! The status of a run as users see it (`wf status --json`, the live snapshot a runner publishes).

use crate::graph::Graph;
use crate::model::{CheckpointRecord, Lease, RunRecord, StepRecord, StepStatus};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// One step in `wf status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepView {
    pub id: String,
    pub status: String,
    pub attempts: u32,
    pub deps: Vec<String>,
    pub generation: Option<u32>,
    /// When its last attempt started (ms since the epoch).
    #[serde(default)]
    pub started_ms: Option<u64>,
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
    pub metrics: BTreeMap<String, u64>,
}

/// One checkpoint in `wf status` and `wf checkpoints`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointView {
    pub name: String,
    pub reached: bool,
    pub reached_ms: Option<u64>,
    pub generation: Option<u32>,
    pub steps_done: usize,
    pub steps_total: usize,
}

/// Step counts by status.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counts {
    pub total: usize,
    pub done: usize,
    pub running: usize,
    pub failed: usize,
    pub pending: usize,
}

/// Everything `wf status` shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusView {
    pub id: String,
    pub workflow: String,
    pub status: String,
    pub generation: u32,
    pub args: Vec<String>,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub message: Option<String>,
    pub attrs: BTreeMap<String, String>,
    /// True when read from a live runner's snapshot rather than the journal.
    pub live: bool,
    pub lease: Option<Lease>,
    pub counts: Counts,
    pub steps: Vec<StepView>,
    pub checkpoints: Vec<CheckpointView>,
}

impl StatusView {
    /// Builds the view from the graph and the current generation's records.
    pub fn build(
        run: &RunRecord,
        graph: &Graph,
        records: &HashMap<String, StepRecord>,
        reached: &[CheckpointRecord],
        lease: Option<Lease>,
        live: bool,
    ) -> Self {
        let mut counts = Counts {
            total: graph.len(),
            ..Counts::default()
        };
        let steps: Vec<StepView> = graph
            .specs()
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let rec = records.get(&spec.id);
                let status = rec.map(|r| r.status).unwrap_or(StepStatus::Pending);
                match status {
                    StepStatus::Done => counts.done += 1,
                    StepStatus::Running => counts.running += 1,
                    StepStatus::Failed => counts.failed += 1,
                    StepStatus::Pending => counts.pending += 1,
                }
                StepView {
                    id: spec.id.clone(),
                    status: status.as_str().to_string(),
                    attempts: rec.map(|r| r.attempts).unwrap_or(0),
                    deps: graph
                        .deps(i)
                        .iter()
                        .map(|&d| graph.spec(d).id.clone())
                        .collect(),
                    generation: rec.map(|r| r.generation),
                    started_ms: rec.map(|r| r.started_ms),
                    duration_ms: rec
                        .and_then(|r| r.finished_ms.map(|f| f.saturating_sub(r.started_ms))),
                    error: rec.and_then(|r| r.error.clone()),
                    metrics: rec
                        .and_then(|r| r.output.as_ref().map(|o| o.metrics.clone()))
                        .unwrap_or_default(),
                }
            })
            .collect();
        let checkpoints = graph
            .checkpoints()
            .iter()
            .enumerate()
            .map(|(c, cp)| {
                let members = graph.members(c);
                let done = members
                    .iter()
                    .filter(|&&i| {
                        records
                            .get(&graph.spec(i).id)
                            .is_some_and(|r| r.status == StepStatus::Done)
                    })
                    .count();
                let rec = reached.iter().find(|r| r.name == cp.name);
                CheckpointView {
                    name: cp.name.clone(),
                    reached: rec.is_some(),
                    reached_ms: rec.map(|r| r.reached_ms),
                    generation: rec.map(|r| r.generation),
                    steps_done: done,
                    steps_total: members.len(),
                }
            })
            .collect();
        StatusView {
            id: run.id.clone(),
            workflow: run.workflow.clone(),
            status: run.status.as_str().to_string(),
            generation: run.generation,
            args: run.args.clone(),
            created_ms: run.created_ms,
            updated_ms: run.updated_ms,
            message: run.message.clone(),
            attrs: run.attrs.clone(),
            live,
            lease,
            counts,
            steps,
            checkpoints,
        }
    }
}
