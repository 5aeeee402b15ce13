//! `validate/<graph>.staging`: the graph's staging checks (node keys unique and present per
//! label, relationship ends among the staged nodes, links resolving inside the relational
//! subset), beside the graph's held load in `validate/<graph>` rather than in the gate, which
//! waited for the load and then spent about a second on them (scale 25).

use super::{Tally, ValidateInput, ValidatePart, ValidationRules};
use crate::migrate::{input_err, AnonPart, MigrateParams};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use wf_engine::{Step, StepContext, StepError, StepOutput, StepSpec};
use wf_stores::config::ColumnRef;

/// Step kind of the graph's staging checks.
pub const GRAPH_STAGING_KIND: &str = "migrate.validate_graph_staging";

/// The id of `graph`'s staging checks step.
pub fn id(graph: &str) -> String {
    format!("validate/{graph}.staging")
}

/// The step, after the graph's anonymize step and those of the planned tables its links name.
pub(crate) fn spec(g: &wf_stores::graph::GraphConfig, planned: &[String]) -> StepSpec {
    let mut deps = vec![format!("anonymize/{}", g.name)];
    for l in &g.links {
        let Some(t) = ColumnRef::parse(&l.to).map(|r| r.table_id()) else {
            continue;
        };
        let dep = format!("anonymize/{t}");
        if planned.contains(&t) && !deps.contains(&dep) {
            deps.push(dep);
        }
    }
    StepSpec::new(id(&g.name), GRAPH_STAGING_KIND, deps)
}

/// `validate/<graph>.staging`.
pub struct GraphStagingStep(pub Arc<MigrateParams>);

#[async_trait::async_trait]
impl Step for GraphStagingStep {
    async fn run(&self, cx: &StepContext) -> Result<StepOutput, StepError> {
        let p = &self.0;
        let Some(g) = &p.config.graph else {
            return Err(StepError::Fatal("wf.toml has no [graph] to check".into()));
        };
        let (mut files, mut graph_files) = (Vec::new(), Vec::<PathBuf>::new());
        let own = format!("anonymize/{}", g.name);
        for id in cx.inputs.keys().filter(|id| id.starts_with("anonymize/")) {
            let part: AnonPart = cx.input(id)?;
            for f in part.files {
                wf_stores::verified::expect(&f.path, &f.sha256);
                match *id == own {
                    true => graph_files.push(f.path),
                    false => files.push((f.table, f.path)),
                }
            }
        }
        let rules = ValidationRules::default();
        let input = ValidateInput {
            config: &p.config,
            schemas: &[],
            files,
            graph_files,
            rules: &rules,
            strategy: p.strategy,
            leaks: Vec::new(),
            owned: HashMap::new(),
            unchanged: HashMap::new(),
            graph_owned: HashSet::new(),
            graph_skipped: Vec::new(),
        };
        let mut tally = Tally::default();
        super::scan::graph_staging(&mut tally, &input).map_err(input_err("anonymize"))?;
        // The gate counts relational rows as validated rows, as before this step.
        let part = ValidatePart {
            categories: tally.categories,
            findings: tally.findings,
            rows: 0,
        };
        Ok(StepOutput::with_value(&part)?)
    }
}
