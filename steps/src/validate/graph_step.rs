//! `validate/<graph>`: the graph's load, rehearsed as soon as the graph is anonymized, while the
//! relational tables are still extracted and checked (issue 18: the graph's load was the longest
//! step after the gate). The load runs in a CERT transaction left open; once the gate has passed,
//! `load/<graph>` commits it; a gate that fails rolls it back; a runner that dies takes it with it
//! (the server rolls it back) and the load step loads as usual. A load the server refuses (a
//! property type, a key already there) is a gate finding, so no store commits. Not used for dry
//! runs, `--skip-load`, refreshes, recovered generations or the embedded graph: those load in
//! their load step.

use super::rules::Severity;
use super::{Tally, ValidatePart};
use crate::migrate::{handover, input_err, store_err, AnonPart, MigrateParams};
use std::path::PathBuf;
use std::sync::Arc;
use wf_engine::{Step, StepContext, StepError, StepOutput, StepSpec};
use wf_stores::graph::load::{load_graph_held, GraphLoad};
use wf_stores::StoreError;

/// Step kind of the graph's validation.
pub const GRAPH_VALIDATE_KIND: &str = "migrate.validate_graph";

/// The graph's validate step, after its anonymize step.
pub(crate) fn spec(graph: &str) -> StepSpec {
    StepSpec::new(
        format!("validate/{graph}"),
        GRAPH_VALIDATE_KIND,
        vec![format!("anonymize/{graph}")],
    )
}

/// `validate/<graph>`.
pub struct ValidateGraphStep(pub Arc<MigrateParams>);

#[async_trait::async_trait]
impl Step for ValidateGraphStep {
    async fn run(&self, cx: &StepContext) -> Result<StepOutput, StepError> {
        let p = &self.0;
        // The part's rows count validated rows (the gate sums them): the load's go in a metric.
        let mut part = ValidatePart::default();
        let mut loaded = 0;
        // Not for a refresh: the graph's load replaces the earlier run's in its load step.
        let hand_over = super::rehearse::hands_over(cx, p) && p.replaces.is_none();
        // Bolt servers only: the embedded graph is a SQLite file, whose open write transaction
        // would lock it against the gate's reads (as on relational SQLite stores).
        let graph = p
            .config
            .graph
            .as_ref()
            .filter(|g| g.kind == wf_stores::graph::GraphKind::Bolt);
        if let (true, Some(g)) = (hand_over, graph) {
            if let Some((job, staged)) = job(cx, p, g)? {
                // Before the first write: the CERT graph is enrolled and is no PROD source.
                let target = wf_stores::guard::Targets {
                    stores: Vec::new(),
                    graph: true,
                };
                wf_stores::guard::verify(&p.config, &target)
                    .await
                    .map_err(store_err)?;
                handover::discard(&cx.run_id, &g.name).await;
                cx.progress.expect(staged);
                match load_graph_held(g, &job).await {
                    Ok(held) => {
                        loaded = held.report.tables.iter().map(|t| t.inserted).sum();
                        handover::give(&cx.run_id, &g.name, &job.run_key, held);
                    }
                    Err(e) if e.is_retryable() => return Err(store_err(e)),
                    Err(e @ StoreError::Corrupt { .. }) => {
                        return Err(input_err("anonymize")(e));
                    }
                    Err(e) => refused(&mut part, &g.name, e),
                }
            }
        }
        let mut out = StepOutput::with_value(&part)?;
        out.metrics.insert("rows".into(), loaded);
        Ok(out)
    }
}

/// The job `load/<graph>` of this generation builds (its key, its manifest) and the elements it
/// loads; `None` when the graph has nothing staged.
fn job(
    cx: &StepContext,
    p: &MigrateParams,
    g: &wf_stores::graph::GraphConfig,
) -> Result<Option<(GraphLoad, u64)>, StepError> {
    let anon: AnonPart = cx.input(&format!("anonymize/{}", g.name))?;
    let prefix = format!("{}.", g.name);
    let (mut files, mut staged) = (Vec::<PathBuf>::new(), 0);
    for f in anon.files.iter().filter(|f| f.table.starts_with(&prefix)) {
        wf_stores::verified::expect(&f.path, &f.sha256);
        files.push(f.path.clone());
        staged += f.rows;
    }
    if files.is_empty() {
        return Ok(None);
    }
    let step = format!("load/{}", g.name);
    let steps = cx.artifact_dir.parent().unwrap_or(&cx.artifact_dir);
    let dir = crate::migrate::manifest_dir_of(
        &steps.join(wf_engine::artifact_dir_name(&step)),
        cx.generation,
    );
    let job = GraphLoad {
        run_key: wf_engine::idempotency_key(&cx.run_id, cx.generation, &step),
        store: g.name.clone(),
        files,
        manifest: dir.join(format!("{}.created.jsonl", g.name)),
        strategy: p.strategy,
        dry_run: false,
        replaces: None,
        by_difference: false,
    };
    Ok(Some((job, staged)))
}

/// A load CERT refused: the gate's finding, named like the relational rehearsal's.
fn refused(part: &mut ValidatePart, graph: &str, e: StoreError) {
    let mut tally = Tally::default();
    tally.check(
        "load_rehearsal",
        "the load succeeds",
        graph,
        Severity::Error,
        1,
        vec![],
        format!("a rehearsal of the graph's load failed: {e}"),
    );
    part.categories = tally.categories;
    part.findings = tally.findings;
}
