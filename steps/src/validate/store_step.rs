//! `validate/<store>`: one relational store's load, in a transaction left open, as soon as its
//! tables are validated, while other stores and the graph are still extracted, anonymized and
//! checked (the gate used to load them one after the graph's load). Its `sql` rules run inside
//! it; a refused load or a violated rule is a finding the gate counts, so no store commits. Once
//! the gate has passed, `load/<store>` commits the transaction; a failed gate rolls it back. See
//! `rehearse` for when the load is held and when it is only rehearsed and rolled back.

use super::ValidatePart;
use crate::migrate::{handover, AnonPart, AnonymizeOut, ExtractOut, MigrateParams};
use std::collections::BTreeMap;
use std::sync::Arc;
use wf_engine::{Step, StepContext, StepError, StepOutput, StepSpec};

/// Step kind of a store's load rehearsal.
pub const STORE_VALIDATE_KIND: &str = "migrate.validate_store";

/// One step per store with planned tables, after its tables' validate and anonymize steps.
pub(crate) fn specs(tables: &[String]) -> Vec<StepSpec> {
    let mut by_store: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
    for t in tables {
        if let Some((store, _)) = t.split_once('.') {
            by_store.entry(store).or_default().push(t);
        }
    }
    by_store
        .into_iter()
        .map(|(store, tables)| {
            let mut deps: Vec<String> = tables.iter().map(|t| format!("validate/{t}")).collect();
            deps.extend(tables.iter().map(|t| format!("anonymize/{t}")));
            let mut spec = StepSpec::new(format!("validate/{store}"), STORE_VALIDATE_KIND, deps);
            spec.params = store.as_bytes().to_vec();
            spec
        })
        .collect()
}

/// `validate/<store>`.
pub struct ValidateStoreStep {
    pub params: Arc<MigrateParams>,
    pub store: String,
}

#[async_trait::async_trait]
impl Step for ValidateStoreStep {
    async fn run(&self, cx: &StepContext) -> Result<StepOutput, StepError> {
        let p = &self.params;
        let ex = ExtractOut::input(cx)?;
        let anon = store_files(cx, &self.store)?;
        // Before the first write: this CERT target is enrolled and is no PROD source.
        let target = wf_stores::guard::Targets {
            stores: vec![self.store.clone()],
            graph: false,
        };
        wf_stores::guard::verify(&p.config, &target)
            .await
            .map_err(crate::migrate::store_err)?;
        let only = |s: &str| s == self.store;
        let (tally, held, _) = super::rehearse::load_stores(cx, p, &ex, &anon, &only).await?;
        let mut rows = 0;
        for (job, h) in held {
            rows += h.report.tables.iter().map(|t| t.inserted).sum::<u64>();
            handover::give(&cx.run_id, &job.store, &job.run_key, h);
        }
        let part = ValidatePart {
            categories: tally.categories,
            findings: tally.findings,
            rows: 0,
        };
        let mut out = StepOutput::with_value(&part)?;
        out.metrics.insert("rows".into(), rows);
        Ok(out)
    }
}

/// The anonymized files of `store`'s tables, from their anonymize steps (the leak scan over every
/// table need not be done: nothing commits before the gate, which waits for it).
fn store_files(cx: &StepContext, store: &str) -> Result<AnonymizeOut, StepError> {
    let prefix = format!("anonymize/{store}.");
    let mut ids: Vec<&String> = cx
        .inputs
        .keys()
        .filter(|id| id.starts_with(&prefix))
        .collect();
    ids.sort();
    let mut files = Vec::new();
    for id in ids {
        let part: AnonPart = cx.input(id)?;
        for f in part.files {
            wf_stores::verified::expect(&f.path, &f.sha256);
            files.push(f);
        }
    }
    // The jobs are built from the files alone; the run's fingerprint is checked by the leak scan.
    Ok(AnonymizeOut {
        files,
        key_fingerprint: String::new(),
    })
}
