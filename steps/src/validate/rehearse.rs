//! The gate's last check: stores are loaded in transactions (their `sql` rules run there), so a
//! refused load or a violated rule stops the run before any store commits. When the run will load
//! next in this process (not a dry run, not `--skip-load`, generation 0, not a refresh), every
//! PostgreSQL store is loaded, all at once, and each transaction is the store's real load: built
//! as `load/<store>` builds it (its key, its manifests) and, once the gate passes, handed to that
//! step to commit, so no store is loaded twice. Otherwise only stores with `sql` rules are
//! rehearsed, and rolled back (always on SQLite, whose open write transaction would lock the file
//! against the load step's reads).

use super::rules::Severity;
use super::{Gate, Tally, ValidationReport};
use crate::migrate::{handover, store_err, store_jobs, AnonymizeOut, ExtractOut, MigrateParams};
use wf_engine::{StepContext, StepError};
use wf_stores::connect::{load_store, load_store_held};
use wf_stores::load::{HeldLoad, LoadReport, StoreLoad};
use wf_stores::StoreError;

/// The gate's part: loads the stores no `validate/<store>` step loaded (see above), folds the
/// rules' results and any refused load into `report`, and hands the open loads over when the
/// gate passes.
pub(super) async fn rehearse(
    cx: &StepContext,
    p: &MigrateParams,
    ex: &ExtractOut,
    anon: &AnonymizeOut,
    report: &mut ValidationReport,
) -> Result<(), StepError> {
    let own = |store: &str| !cx.inputs.contains_key(&format!("validate/{store}"));
    let (mut tally, held, any) = load_stores(cx, p, ex, anon, &own).await?;
    if any {
        tally.absorb(
            std::mem::take(&mut report.categories),
            std::mem::take(&mut report.findings),
        );
        *report = tally.finish(report.tables, report.rows, report.seconds);
    }
    if report.status == Gate::Failed {
        abandon(held).await;
    } else {
        for (job, h) in held {
            handover::give(&cx.run_id, &job.store, &job.run_key, h);
        }
    }
    Ok(())
}

/// Loads the stores `only` accepts, at once: each PostgreSQL store's real load held when the
/// run loads next, else a rolled-back rehearsal of the stores with `sql` rules. The findings,
/// the open loads, and whether any store was loaded.
pub(super) async fn load_stores(
    cx: &StepContext,
    p: &MigrateParams,
    ex: &ExtractOut,
    anon: &AnonymizeOut,
    only: &(dyn Fn(&str) -> bool + Sync),
) -> Result<(Tally, Vec<(StoreLoad, HeldLoad)>, bool), StepError> {
    let hand_over = hands_over(cx, p);
    let rolled = rolled_back_jobs(cx, p, ex, anon)?;
    let real = if hand_over {
        load_jobs(cx, p, ex, anon)?
    } else {
        Vec::new()
    };
    let mut tasks: Vec<(&StoreLoad, bool, &wf_stores::StoreConfig)> = Vec::new();
    for s in p.config.stores.iter().filter(|s| only(&s.name)) {
        // PostgreSQL only: an open SQLite write transaction that spilled its cache locks the
        // file against the load step's own reads (the CERT guard) until it ends.
        let pg = s.kind == wf_stores::StoreKind::Postgres;
        if let Some(job) = real.iter().find(|j| j.store == s.name).filter(|_| pg) {
            tasks.push((job, true, s));
        } else if let Some(job) = rolled
            .iter()
            .find(|j| j.store == s.name && !j.checks.is_empty())
        {
            tasks.push((job, false, s));
        }
    }
    // A load an earlier attempt or generation left open holds locks on the rows this one writes
    // (a district planned again after a `closure` resume): rolled back first, rehearsal or not.
    for (job, _, _) in &tasks {
        handover::discard(&cx.run_id, &job.store).await;
    }
    let results =
        futures_util::future::join_all(tasks.iter().map(|(job, hold, store)| async move {
            if *hold {
                load_store_held(store, job).await.map(Held::Open)
            } else {
                load_store(store, job).await.map(Held::RolledBack)
            }
        }))
        .await;
    let mut tally = Tally::default();
    let mut held: Vec<(StoreLoad, HeldLoad)> = Vec::new();
    let mut first_err = None;
    for ((job, _, _), r) in tasks.iter().zip(results) {
        let loaded = match r {
            Ok(Held::Open(h)) => {
                let report = h.report.clone();
                held.push(((*job).clone(), h));
                Ok(report)
            }
            Ok(Held::RolledBack(report)) => Ok(report),
            Err(e) => Err(e),
        };
        if let Err(e) = fold(&mut tally, p, &job.store, loaded) {
            first_err.get_or_insert(e);
        }
    }
    if let Some(e) = first_err {
        abandon(held).await;
        return Err(e);
    }
    Ok((tally, held, !tasks.is_empty()))
}

/// Whether loads run before the gate are the run's real loads, handed to the load steps: only
/// when this process loads next (not a dry run, not `--skip-load`) and in generation 0 (a
/// recovered generation replaces earlier ones in its load step). A refresh's held load replaces
/// the earlier run's rows in its transaction, as its load step would.
pub(super) fn hands_over(cx: &StepContext, p: &MigrateParams) -> bool {
    !p.dry_run && !p.skip_load && cx.generation == 0
}

/// A refresh: each job replaces the earlier run's load of its store (by difference with
/// `--incremental`), as the store's load step sets it.
fn replacing(cx: &StepContext, p: &MigrateParams, jobs: &mut [StoreLoad]) -> Result<(), StepError> {
    let replaced = crate::migrate::replaced_loads(cx, p)?;
    for j in jobs {
        j.replaces = replaced
            .iter()
            .find(|l| l.store == j.store)
            .and_then(|l| l.job.clone())
            .map(Box::new);
        j.by_difference = p.incremental;
    }
    Ok(())
}

/// The jobs of the stores as their `load/<store>` steps of this generation build them.
fn load_jobs(
    cx: &StepContext,
    p: &MigrateParams,
    ex: &ExtractOut,
    anon: &AnonymizeOut,
) -> Result<Vec<StoreLoad>, StepError> {
    let steps = cx.artifact_dir.parent().unwrap_or(&cx.artifact_dir);
    let mut out = Vec::new();
    for s in &p.config.stores {
        let step = format!("load/{}", s.name);
        let key = wf_engine::idempotency_key(&cx.run_id, cx.generation, &step);
        let dir = crate::migrate::manifest_dir_of(
            &steps.join(wf_engine::artifact_dir_name(&step)),
            cx.generation,
        );
        let jobs = store_jobs(p, ex, anon, &key, &dir, false)?;
        out.extend(jobs.into_iter().filter(|j| j.store == s.name));
    }
    replacing(cx, p, &mut out)?;
    Ok(out)
}

/// The jobs of a rehearsal that is rolled back: a refresh's replaces the earlier run's rows, as
/// its load will; after a recover, rows of earlier generations are overwritten.
fn rolled_back_jobs(
    cx: &StepContext,
    p: &MigrateParams,
    ex: &ExtractOut,
    anon: &AnonymizeOut,
) -> Result<Vec<StoreLoad>, StepError> {
    let key = format!("{}/rehearsal", cx.idempotency_key);
    let dir = cx.artifact_dir.join("rehearsal");
    let mut jobs = store_jobs(p, ex, anon, &key, &dir, true)?;
    replacing(cx, p, &mut jobs)?;
    if cx.generation > 0 {
        // CERT may hold this run's rows from an earlier generation, which the real load
        // replaces; the rehearsal overwrites them instead (it is rolled back anyway).
        for t in jobs.iter_mut().flat_map(|j| j.tables.iter_mut()) {
            if t.strategy == wf_stores::load::Strategy::Insert {
                t.strategy = wf_stores::load::Strategy::Upsert;
            }
        }
    }
    Ok(jobs)
}

/// Records one store's rehearsal in `tally`; an error that is no finding ends the step.
fn fold(
    tally: &mut Tally,
    p: &MigrateParams,
    store: &str,
    loaded: Result<LoadReport, StoreError>,
) -> Result<(), StepError> {
    match loaded {
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
                    store,
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
            tally.check("business_rules", &rule, store, sev, violations, vec![],
                format!("sql rule `{rule}`: {violations} violating rows (run in a rehearsal of the load, rolled back)"));
        }
        Err(e) if e.is_retryable() => return Err(store_err(e)),
        Err(e @ StoreError::Corrupt { .. }) => {
            return Err(crate::migrate::input_err("anonymize")(e))
        }
        Err(e) => tally.check(
            "load_rehearsal",
            "the load succeeds",
            store,
            Severity::Error,
            1,
            vec![],
            format!("a rehearsal of the load failed: {e}"),
        ),
    }
    Ok(())
}

/// What one store's part of the rehearsal left: its load open for the load step, or a report
/// of a load rolled back already.
enum Held {
    Open(HeldLoad),
    RolledBack(LoadReport),
}

/// Rolls back loads that will not be handed over.
async fn abandon(held: Vec<(StoreLoad, HeldLoad)>) {
    for (job, h) in held {
        if let Err(e) = h.abandon().await {
            tracing::warn!("rolling back the rehearsal of {}: {e}", job.store);
        }
    }
}

fn rules_severity(p: &MigrateParams, rule: &str) -> Severity {
    crate::migrate::validation_rules(p)
        .ok()
        .and_then(|r| r.rules.into_iter().find(|x| x.spec.name == rule))
        .map(|r| r.spec.severity)
        .unwrap_or(Severity::Error)
}
