//! The step graph of a run: the static plan plus the steps that finished steps spawned.
//!
//! Dynamic fan-out rule: a spawned step depends on its spawner, and every step that depended on the
//! spawner also waits for the spawned steps; a checkpoint that names the spawner also covers them. So
//! "the spawner is complete" means "it and everything it added are done", and downstream steps see a
//! whole stage, however many steps discovery found.

use crate::error::{EngineError, Result};
use crate::model::{Checkpoint, Plan, StepSpec};
use std::collections::{HashMap, HashSet, VecDeque};

/// Index-based DAG; indexes are stable for the life of the graph (steps are only ever added).
#[derive(Debug, Clone)]
pub struct Graph {
    workflow: String,
    specs: Vec<StepSpec>,
    index: HashMap<String, usize>,
    deps: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
    checkpoints: Vec<Checkpoint>,
    members: Vec<Vec<usize>>,
    cps_of: Vec<Vec<usize>>,
}

fn pattern_matches(pattern: &str, id: &str) -> bool {
    if let Some(exact) = pattern.strip_prefix('=') {
        return exact == id;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) => id.starts_with(prefix),
        None => pattern == id,
    }
}

impl Graph {
    /// Builds and validates the graph of `plan`: unique ids, known dependencies, no cycle.
    pub fn new(workflow: &str, plan: &Plan) -> Result<Self> {
        let mut g = Graph {
            workflow: workflow.to_string(),
            specs: Vec::with_capacity(plan.steps.len()),
            index: HashMap::with_capacity(plan.steps.len()),
            deps: Vec::with_capacity(plan.steps.len()),
            dependents: Vec::with_capacity(plan.steps.len()),
            checkpoints: plan.checkpoints.clone(),
            members: vec![Vec::new(); plan.checkpoints.len()],
            cps_of: Vec::with_capacity(plan.steps.len()),
        };
        for spec in &plan.steps {
            g.push(spec.clone())?;
        }
        for (i, spec) in plan.steps.iter().enumerate() {
            for d in &spec.deps {
                let j = *g.index.get(d).ok_or_else(|| {
                    g.invalid(format!("step {} depends on unknown step {d}", spec.id))
                })?;
                g.link(j, i);
            }
        }
        g.check_acyclic()?;
        g.assign_static_checkpoints();
        Ok(g)
    }

    /// Checkpoint membership of the plan's steps: exact ids by lookup, `prefix*` patterns by a range
    /// over the sorted ids, so a plan of many steps and many checkpoints costs O((n + c) log n).
    fn assign_static_checkpoints(&mut self) {
        let mut sorted: Vec<(&str, usize)> = self
            .specs
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.as_str(), i))
            .collect();
        sorted.sort_unstable();
        let mut hits: Vec<(usize, usize)> = Vec::new();
        for (c, cp) in self.checkpoints.iter().enumerate() {
            for pattern in &cp.steps {
                match pattern.strip_suffix('*') {
                    Some(prefix) => {
                        let from = sorted.partition_point(|(id, _)| *id < prefix);
                        hits.extend(
                            sorted[from..]
                                .iter()
                                .take_while(|(id, _)| id.starts_with(prefix))
                                .map(|&(_, i)| (i, c)),
                        );
                    }
                    None => hits.extend(self.index.get(pattern).map(|&i| (i, c))),
                }
            }
        }
        hits.sort_unstable();
        hits.dedup();
        for (i, c) in hits {
            self.members[c].push(i);
            self.cps_of[i].push(c);
        }
    }

    fn invalid(&self, detail: String) -> EngineError {
        EngineError::InvalidPlan {
            workflow: self.workflow.clone(),
            detail,
        }
    }

    fn push(&mut self, spec: StepSpec) -> Result<usize> {
        if self.index.contains_key(&spec.id) {
            return Err(self.invalid(format!("step id {} is declared twice", spec.id)));
        }
        let i = self.specs.len();
        self.index.insert(spec.id.clone(), i);
        self.specs.push(spec);
        self.deps.push(Vec::new());
        self.dependents.push(Vec::new());
        self.cps_of.push(Vec::new());
        Ok(i)
    }

    fn link(&mut self, from: usize, to: usize) {
        if !self.deps[to].contains(&from) {
            self.deps[to].push(from);
            self.dependents[from].push(to);
        }
    }

    fn assign_checkpoints(&mut self, i: usize) {
        let spawner = self.specs[i]
            .spawned_by
            .as_ref()
            .and_then(|s| self.index.get(s).copied());
        for c in 0..self.checkpoints.len() {
            let direct = self.checkpoints[c]
                .steps
                .iter()
                .any(|p| pattern_matches(p, &self.specs[i].id));
            // `=step` names the step alone, not what it spawns.
            let inherited = spawner.is_some_and(|s| {
                let alone = format!("={}", self.specs[s].id);
                self.members[c].contains(&s) && !self.checkpoints[c].steps.contains(&alone)
            });
            if direct || inherited {
                self.members[c].push(i);
                self.cps_of[i].push(c);
            }
        }
    }

    fn check_acyclic(&self) -> Result<()> {
        let mut indeg: Vec<usize> = self.deps.iter().map(Vec::len).collect();
        let mut queue: VecDeque<usize> = (0..indeg.len()).filter(|&i| indeg[i] == 0).collect();
        let mut seen = 0;
        while let Some(i) = queue.pop_front() {
            seen += 1;
            for &d in &self.dependents[i] {
                indeg[d] -= 1;
                if indeg[d] == 0 {
                    queue.push_back(d);
                }
            }
        }
        if seen == self.specs.len() {
            return Ok(());
        }
        let cyclic = (0..indeg.len())
            .find(|&i| indeg[i] > 0)
            .map(|i| self.specs[i].id.clone())
            .unwrap_or_default();
        Err(self.invalid(format!("the steps form a cycle through {cyclic}")))
    }

    /// Adds the steps `spawner` produced and wires them per the fan-out rule; returns their indexes.
    /// A spawned step may depend on existing steps that are not downstream of the spawner, or on
    /// steps listed before it in the same batch.
    pub fn add_spawned(&mut self, spawner: usize, specs: &[StepSpec]) -> Result<Vec<usize>> {
        let downstream = self.descendants(&[spawner]);
        let waiting: Vec<usize> = self.dependents[spawner].clone();
        let mut added = Vec::with_capacity(specs.len());
        for spec in specs {
            let mut spec = spec.clone();
            spec.spawned_by = Some(self.specs[spawner].id.clone());
            let deps = spec.deps.clone();
            let i = self.push(spec)?;
            self.link(spawner, i);
            for d in &deps {
                let j = *self.index.get(d).ok_or_else(|| {
                    self.invalid(format!(
                        "spawned step {} depends on unknown step {d}",
                        self.specs[i].id
                    ))
                })?;
                if downstream.contains(&j) && j != i {
                    return Err(self.invalid(format!(
                        "spawned step {} depends on {d}, which waits for its spawner",
                        self.specs[i].id
                    )));
                }
                self.link(j, i);
            }
            for &w in &waiting {
                self.link(i, w);
            }
            self.assign_checkpoints(i);
            added.push(i);
        }
        Ok(added)
    }

    pub fn len(&self) -> usize {
        self.specs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    pub fn spec(&self, i: usize) -> &StepSpec {
        &self.specs[i]
    }

    pub fn specs(&self) -> &[StepSpec] {
        &self.specs
    }

    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    pub fn deps(&self, i: usize) -> &[usize] {
        &self.deps[i]
    }

    pub fn dependents(&self, i: usize) -> &[usize] {
        &self.dependents[i]
    }

    pub fn checkpoints(&self) -> &[Checkpoint] {
        &self.checkpoints
    }

    /// Index of checkpoint `name`.
    pub fn checkpoint(&self, name: &str) -> Option<usize> {
        self.checkpoints.iter().position(|c| c.name == name)
    }

    /// Steps of checkpoint `c`, including steps spawned by its members.
    pub fn members(&self, c: usize) -> &[usize] {
        &self.members[c]
    }

    /// Checkpoints that step `i` belongs to.
    pub fn checkpoints_of(&self, i: usize) -> &[usize] {
        &self.cps_of[i]
    }

    /// `set` and every step it transitively depends on.
    pub fn ancestors(&self, set: &[usize]) -> HashSet<usize> {
        self.closure(set, &self.deps)
    }

    /// What sending the steps `down` back to pending touches: the ids among them that have a
    /// record (`recorded`), and the checkpoints with a member among them.
    pub fn invalidation(
        &self,
        down: &HashSet<usize>,
        recorded: impl Fn(&str) -> bool,
    ) -> (Vec<String>, Vec<String>) {
        let ids = down
            .iter()
            .map(|&i| self.specs[i].id.clone())
            .filter(|id| recorded(id))
            .collect();
        let cps = (0..self.checkpoints.len())
            .filter(|&c| self.members[c].iter().any(|m| down.contains(m)))
            .map(|c| self.checkpoints[c].name.clone())
            .collect();
        (ids, cps)
    }

    /// `set` and every step that transitively depends on it.
    pub fn descendants(&self, set: &[usize]) -> HashSet<usize> {
        self.closure(set, &self.dependents)
    }

    fn closure(&self, set: &[usize], edges: &[Vec<usize>]) -> HashSet<usize> {
        let mut seen: HashSet<usize> = set.iter().copied().collect();
        let mut stack: Vec<usize> = set.to_vec();
        while let Some(i) = stack.pop() {
            for &n in &edges[i] {
                if seen.insert(n) {
                    stack.push(n);
                }
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, deps: &[&str]) -> StepSpec {
        StepSpec::new(id, "t", deps.iter().map(|s| s.to_string()).collect())
    }

    fn plan(steps: Vec<StepSpec>, cps: &[(&str, &[&str])]) -> Plan {
        Plan {
            steps,
            checkpoints: cps
                .iter()
                .map(|(n, s)| Checkpoint {
                    name: n.to_string(),
                    steps: s.iter().map(|x| x.to_string()).collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn rejects_unknown_dep_duplicate_and_cycle() {
        let e = Graph::new("w", &plan(vec![spec("a", &["x"])], &[])).unwrap_err();
        assert!(e.to_string().contains("unknown step x"), "{e}");
        let e = Graph::new("w", &plan(vec![spec("a", &[]), spec("a", &[])], &[])).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        let e =
            Graph::new("w", &plan(vec![spec("a", &["b"]), spec("b", &["a"])], &[])).unwrap_err();
        assert!(e.to_string().contains("cycle"), "{e}");
    }

    #[test]
    fn ancestors_descendants_and_patterns() {
        let g = Graph::new(
            "w",
            &plan(
                vec![
                    spec("a", &[]),
                    spec("x/1", &["a"]),
                    spec("x/2", &["a"]),
                    spec("z", &["x/1", "x/2"]),
                ],
                &[("xs", &["x/*"])],
            ),
        )
        .unwrap();
        let c = g.checkpoint("xs").unwrap();
        assert_eq!(g.members(c), &[1, 2]);
        assert_eq!(g.ancestors(&[3]).len(), 4);
        let d = g.descendants(&[1]);
        assert!(d.contains(&3) && !d.contains(&2));
    }

    #[test]
    fn spawned_steps_gate_the_spawners_dependents() {
        let mut g = Graph::new(
            "w",
            &plan(
                vec![spec("discover", &[]), spec("report", &["discover"])],
                &[("found", &["discover"])],
            ),
        )
        .unwrap();
        let added = g
            .add_spawned(
                0,
                &[spec("extract/a", &[]), spec("extract/b", &["extract/a"])],
            )
            .unwrap();
        assert_eq!(added, vec![2, 3]);
        let report = g.index_of("report").unwrap();
        assert!(g.deps(report).contains(&2) && g.deps(report).contains(&3));
        assert!(g.deps(3).contains(&0) && g.deps(3).contains(&2));
        assert_eq!(g.members(0), &[0, 2, 3]);
        // A spawned step may not wait for something that waits for its spawner.
        let e = g.add_spawned(0, &[spec("bad", &["report"])]).unwrap_err();
        assert!(e.to_string().contains("waits for its spawner"), "{e}");
    }
}
