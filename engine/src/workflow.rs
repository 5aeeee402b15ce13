//! The `Workflow` seam: how a named workflow turns its arguments into a plan and its specs into steps.

use crate::error::Result;
use crate::model::{Plan, StepSpec};
use crate::step::Step;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A workflow built from its arguments. `plan` must be a pure function of the arguments and the
/// configuration (hashed by `config_hash`), so a resumed run is the run that was started.
pub trait Workflow: Send + Sync {
    /// The name used on the command line (`selftest`, `migrate`).
    fn name(&self) -> &str;
    /// Prefix of the run ids (`st`, `mig`).
    fn run_prefix(&self) -> &str;
    /// Hash of the configuration the plan depends on; a resume with another hash is refused.
    fn config_hash(&self) -> String;
    /// The static plan of a new run.
    fn plan(&self) -> Result<Plan>;
    /// Builds the step for `spec` (static or spawned).
    fn step(&self, spec: &StepSpec) -> Result<Arc<dyn Step>>;
    /// Facts to keep in the run record (never secrets).
    fn attrs(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }
    /// True for a spawning step whose output is only good within the process that produced it
    /// (it holds a database snapshot open for the steps it spawned). When a new runner finds such
    /// a step done but a spawned step of some cohort (see `cohort`) not, the step runs again, and
    /// with it every cohort that has an unfinished member.
    fn session_bound(&self, _spec: &StepSpec) -> bool {
        false
    }
    /// The cohort of a spawned step: steps that must all come from one session of their
    /// session-bound spawner (one store's tables, read in one snapshot). `None`: the step does not
    /// read the session's state.
    fn cohort(&self, _spec: &StepSpec) -> Option<String> {
        None
    }
}
