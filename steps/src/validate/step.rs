//! The `validate` step of migrate: the pre-load checks, then a rehearsal of each store's load that
//! has `sql` rules (loaded in a transaction, rules run, rolled back), so a violated rule stops the
//! run before any store commits. FAILED stops the run (failed_validation); the report is written
//! either way.

use super::rules::Severity;
use super::{Gate, Tally, ValidationReport};
use crate::migrate::{store_err, store_jobs, AnonymizeOut, ExtractOut, MigrateParams};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use wf_engine::{Step, StepContext, StepError, StepOutput};
use wf_stores::analysis::add_virtual_fks;
use wf_stores::connect::load_store;
use wf_stores::StoreError;

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
            Some((tally, rows)) => super::scan::validate_rest(tally, input, rows, started).await,
            None => super::validate(input).await,
        }
        .map_err(crate::migrate::input_err("anonymize"))?;
        if report.status != Gate::Failed {
            rehearse(cx, p, &ex, &anon, &mut report).await?;
        }
        std::fs::create_dir_all(&cx.artifact_dir)
            .map_err(|e| StepError::Retryable(format!("{}: {e}", cx.artifact_dir.display())))?;
        let path = cx.artifact_dir.join("validation-report.json");
        let json =
            serde_json::to_vec_pretty(&report).map_err(|e| StepError::Fatal(e.to_string()))?;
        std::fs::write(&path, json)
            .map_err(|e| StepError::Retryable(format!("{}: {e}", path.display())))?;
        if report.status == Gate::Failed {
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

/// Loads each store that has `sql` rules inside a transaction that is rolled back, and folds the
/// rules' results (and any load failure) into the report.
async fn rehearse(
    cx: &StepContext,
    p: &MigrateParams,
    ex: &ExtractOut,
    anon: &AnonymizeOut,
    report: &mut ValidationReport,
) -> Result<(), StepError> {
    let key = format!("{}/rehearsal", cx.idempotency_key);
    let dir = cx.artifact_dir.join("rehearsal");
    let mut jobs = store_jobs(p, ex, anon, &key, &dir, true)?;
    // A refresh's rehearsal replaces the earlier run's rows, as its load will.
    let replaced = crate::migrate::replaced_loads(cx, p)?;
    for j in &mut jobs {
        j.replaces = replaced
            .iter()
            .find(|l| l.store == j.store)
            .and_then(|l| l.job.clone())
            .map(Box::new);
    }
    if cx.generation > 0 {
        // After a recover, CERT may hold this run's rows from an earlier generation, which the
        // real load replaces; the rehearsal overwrites them instead (it is rolled back anyway).
        for t in jobs.iter_mut().flat_map(|j| j.tables.iter_mut()) {
            if t.strategy == wf_stores::load::Strategy::Insert {
                t.strategy = wf_stores::load::Strategy::Upsert;
            }
        }
    }
    let mut tally = Tally::default();
    let mut any = false;
    for job in jobs.iter().filter(|j| !j.checks.is_empty()) {
        any = true;
        let store = p
            .config
            .store(&job.store)
            .ok_or_else(|| StepError::Fatal(format!("store {} is not in the config", job.store)))?;
        match load_store(store, job).await {
            Ok(r) => {
                for c in &r.checks {
                    let sev = match c.severity.as_str() {
                        "warning" => Severity::Warning,
                        "info" => Severity::Info,
                        _ => Severity::Error,
                    };
                    tally.check(
                        "business_rules",
                        &c.name,
                        &job.store,
                        sev,
                        c.violations,
                        vec![],
                        format!("sql rule `{}`: {} violating rows", c.name, c.violations),
                    );
                }
            }
            Err(StoreError::Rule {
                rule, violations, ..
            }) => {
                let sev = rules_severity(p, &rule);
                tally.check("business_rules", &rule, &job.store, sev, violations, vec![],
                    format!("sql rule `{rule}`: {violations} violating rows (run in a rehearsal of the load, rolled back)"));
            }
            Err(e) if e.is_retryable() => return Err(store_err(e)),
            Err(e @ StoreError::Corrupt { .. }) => {
                return Err(crate::migrate::input_err("anonymize")(e))
            }
            Err(e) => tally.check(
                "load_rehearsal",
                "the load succeeds",
                &job.store,
                Severity::Error,
                1,
                vec![],
                format!("a rehearsal of the load failed: {e}"),
            ),
        }
    }
    if any {
        tally.absorb(
            std::mem::take(&mut report.categories),
            std::mem::take(&mut report.findings),
        );
        *report = tally.finish(report.tables, report.rows, report.seconds);
    }
    Ok(())
}

fn rules_severity(p: &MigrateParams, rule: &str) -> Severity {
    crate::migrate::validation_rules(p)
        .ok()
        .and_then(|r| r.rules.into_iter().find(|x| x.spec.name == rule))
        .map(|r| r.spec.severity)
        .unwrap_or(Severity::Error)
}
