//! Session-bound steps (see `Workflow::session_bound`): their output holds state of the process
//! that ran them, such as an open database snapshot the steps they spawned read from. A new
//! runner cannot have that state, so before it schedules anything, each such step that is done
//! while a spawned step of some cohort is not runs again, together with every cohort that has an
//! unfinished member. Finished steps of whole cohorts keep their outputs; spawned steps of no
//! cohort do not read the state and never make the spawner run again.

use super::sched::load_graph;
use super::Runner;
use crate::error::Result;
use crate::model::{now_ms, EventKind, StepStatus};
use std::collections::HashSet;

impl Runner {
    /// Sends back to pending what a previous session's death invalidated; journaled as
    /// `SessionLost` events.
    pub(super) fn renew_sessions(&mut self) -> Result<()> {
        let (graph, records) = load_graph(&self.run.workflow, self.journal.as_ref())?;
        let done = |i: usize| {
            records
                .get(&graph.spec(i).id)
                .is_some_and(|r| r.status == StepStatus::Done)
        };
        for v in 0..graph.len() {
            let spec = graph.spec(v);
            if !done(v) || !self.workflow.session_bound(spec) {
                continue;
            }
            let spawned: Vec<usize> = (0..graph.len())
                .filter(|&i| graph.spec(i).spawned_by.as_deref() == Some(spec.id.as_str()))
                .collect();
            let broken: HashSet<String> = spawned
                .iter()
                .filter(|&&i| !done(i))
                .filter_map(|&i| self.workflow.cohort(graph.spec(i)))
                .collect();
            if broken.is_empty() {
                continue;
            }
            let rerun: Vec<usize> = spawned
                .iter()
                .copied()
                .filter(|&i| done(i))
                .filter(|&i| {
                    self.workflow
                        .cohort(graph.spec(i))
                        .is_some_and(|c| broken.contains(&c))
                })
                .collect();
            let mut down = graph.descendants(&rerun);
            down.insert(v);
            let (ids, cps) = graph.invalidation(&down, |id| records.contains_key(id));
            let mut names: Vec<String> = rerun.iter().map(|&i| graph.spec(i).id.clone()).collect();
            names.sort();
            tracing::warn!(run = %self.run.id, step = %spec.id, rerun = names.len(), "The session that held this step's state is gone; it runs again");
            let event = EventKind::SessionLost {
                step: spec.id.clone(),
                rerun: names,
            };
            self.run.updated_ms = now_ms();
            self.journal
                .invalidate(&ids, &cps, &self.run, vec![event])?;
            // One step at a time: the graph changed.
            return self.renew_sessions();
        }
        Ok(())
    }
}
