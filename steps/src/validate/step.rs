//! The `validate` step of migrate: the pre-load checks, then the stores' loads in transactions
//! (see `rehearse`), so a refused load or a violated `sql` rule stops the run before any store
//! commits. FAILED stops the run (failed_validation) and rolls back what was held, the graph's
//! load included; the report is written either way.

use super::rules::Severity;
use super::{Gate, ValidationReport};
use crate::migrate::{store_err, AnonymizeOut, ExtractOut, MigrateParams};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use wf_engine::{Step, StepContext, StepError, StepOutput};
use wf_stores::analysis::add_virtual_fks;

/// Output of `validate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidateOut {
    pub report: ValidationReport,
}

pub struct ValidateStep(pub Arc<MigrateParams>);

#[async_trait::async_trait]
impl Step for ValidateStep {
    async fn run(&self, cx: &StepContext) -> Result<StepOutput, StepError> {
        let p = &self.0;
        let ex = ExtractOut::input(cx)?;
        let anon: AnonymizeOut = cx.input("anonymize")?;
        // Before the rehearsal writes (and before any store's load commits): every CERT target is
        // enrolled and none is a PROD source.
        wf_stores::guard::verify(&p.config, &wf_stores::guard::Targets::all(&p.config))
            .await
            .map_err(store_err)?;
        anon.expect_files();
        let rules = crate::migrate::validation_rules(p)?;
        let mut schemas = ex.schemas.clone();
        add_virtual_fks(&mut schemas, &p.config).map_err(StepError::Fatal)?;
        let (files, graph_files) = anon.split(p.config.graph.as_ref());
        // The tables' own checks ran in `validate/<store.table>` steps, unless the run has none.
        let parts = super::table_step::merged(cx)?;
        let input = super::ValidateInput {
            config: &p.config,
            schemas: &schemas,
            files,
            graph_files,
            rules: &rules,
            strategy: p.strategy,
            leaks: Vec::new(),
            owned: match parts {
                Some(_) => HashMap::new(),
                None => super::owned::owned_keys(cx, p, None)?,
            },
            unchanged: HashMap::new(),
            graph_owned: super::owned::graph_owned(cx, p)?,
            graph_skipped: crate::migrate::extract_metrics(
                cx.inputs.iter().map(|(id, o)| (id.as_str(), o.as_ref())),
            )
            .into_iter()
            .filter_map(|(k, n)| {
                let what = k.strip_prefix(crate::migrate::SKIPPED)?;
                Some((what.to_string(), n))
            })
            .collect(),
        };
        let started = std::time::Instant::now();
        let mut report = match parts {
            Some((tally, rows)) => {
                // Runs planned with the graph's staging step have its findings in `tally`.
                let graph_checked = p.config.graph.as_ref().is_some_and(|g| {
                    cx.inputs
                        .contains_key(&super::graph_staging_step::id(&g.name))
                });
                super::scan::validate_rest(tally, input, rows, started, graph_checked).await
            }
            None => super::validate(input).await,
        }
        .map_err(crate::migrate::input_err("anonymize"))?;
        if report.status != Gate::Failed {
            super::rehearse::rehearse(cx, p, &ex, &anon, &mut report).await?;
        }
        std::fs::create_dir_all(&cx.artifact_dir)
            .map_err(|e| StepError::Retryable(format!("{}: {e}", cx.artifact_dir.display())))?;
        let path = cx.artifact_dir.join("validation-report.json");
        let json =
            serde_json::to_vec_pretty(&report).map_err(|e| StepError::Fatal(e.to_string()))?;
        std::fs::write(&path, json)
            .map_err(|e| StepError::Retryable(format!("{}: {e}", path.display())))?;
        if report.status == Gate::Failed {
            // The loads held since `validate/<store>` and `validate/<graph>` must not commit.
            let stores = p.config.stores.iter().map(|s| &s.name);
            for name in stores.chain(p.config.graph.as_ref().map(|g| &g.name)) {
                crate::migrate::handover::discard(&cx.run_id, name).await;
            }
            return Err(StepError::Gate(format!(
                "{}; details in {}; fix the data or the rules, then `wf recover {} anonymized`",
                report.summary(),
                path.display(),
                cx.run_id
            )));
        }
        let mut out = StepOutput::with_value(&ValidateOut {
            report: report.clone(),
        })?;
        out.metrics.insert("rows".into(), report.rows);
        out.metrics.insert(
            "warnings".into(),
            report
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Warning)
                .count() as u64,
        );
        Ok(out)
    }
}
