//! `wf rollback <run>`: deletes from CERT exactly what the run's load steps inserted, store by
//! store, after every store's manifests have been checked and the user has confirmed.

use crate::cli::{exit, say};
use wf_engine::Engine;
use wf_steps::migrate::LoadOut;
use wf_stores::graph::load::GraphLoad;
use wf_stores::load::StoreLoad;

/// What to say when a manifest cannot be trusted: the command that will work.
fn rebuild_hint(run: &str) -> String {
    format!("run {run} is not rolled back; if its anonymized staging is still there, rebuild the manifests: wf rollback {run} --rebuild-manifests")
}

/// `wf rollback`: deletes from CERT exactly what the run's load steps inserted, after confirmation.
pub(crate) async fn rollback(
    engine: &Engine,
    run: &str,
    yes: bool,
    rebuild: bool,
    config: &std::path::Path,
) -> anyhow::Result<u8> {
    let (record, outputs) = engine.outputs(run)?;
    if record.status == wf_engine::RunStatus::RolledBack {
        say(&format!("run {run} is already rolled back: nothing to do"));
        return Ok(exit::DONE);
    }
    if let Some(by) = record.attrs.get(crate::refresh::SUPERSEDED_BY) {
        anyhow::bail!(
            "run {run} was superseded by refresh {by}, which replaced its rows in CERT: nothing of {run} is left to delete; to remove the district, roll back {by}"
        );
    }
    if record.workflow != "migrate" {
        anyhow::bail!(
            "run {run} is a {} run: only migrate runs load CERT",
            record.workflow
        );
    }
    // Rollback needs the CERT connections only (not the key): the config the run recorded.
    let config_path = crate::post::recorded_config(&record).unwrap_or_else(|| config.to_path_buf());
    let cfg = wf_stores::Config::load(&config_path)?;
    let mut loads: Vec<LoadOut> = Vec::new();
    for (step, out) in &outputs {
        if step.starts_with("load/") {
            loads.push(
                out.value_as().map_err(|e| {
                    anyhow::anyhow!("run {run}, step {step}: unreadable output ({e})")
                })?,
            );
        }
    }
    let jobs: Vec<&StoreLoad> = loads
        .iter()
        .filter_map(|l| l.job.as_ref().filter(|j| !j.dry_run))
        .collect();
    let graph_jobs: Vec<&GraphLoad> = loads
        .iter()
        .filter_map(|l| l.graph_job.as_ref().filter(|j| !j.dry_run))
        .collect();
    if jobs.is_empty() && graph_jobs.is_empty() {
        say(&format!(
            "run {run} loaded nothing into CERT: nothing to roll back"
        ));
        return Ok(exit::DONE);
    }
    // A refresh by difference wrote only what changed but owns the district (its manifests).
    let by_difference = record.attrs.get("incremental").map(String::as_str) == Some("true");
    manifests(run, &loads, rebuild, by_difference)?;
    if !confirm(run, &loads, yes, &cfg, by_difference).await? {
        say("rollback cancelled; nothing changed");
        return Ok(exit::DONE);
    }
    // Before any write: every CERT target is enrolled and none is a PROD source.
    let targets = wf_stores::guard::Targets {
        stores: jobs.iter().map(|j| j.store.clone()).collect(),
        graph: !graph_jobs.is_empty(),
    };
    wf_stores::guard::verify(&cfg, &targets).await?;
    let total = delete(engine, run, &cfg, &config_path, &jobs, &graph_jobs).await?;
    engine.mark_rolled_back(
        run,
        &format!("{total} rows, nodes and relationships deleted from CERT"),
    )?;
    say(&format!("run {run} rolled back"));
    // The saved report must not go on saying the rows are in CERT.
    match crate::report::write(engine, run) {
        Ok(p) => say(&format!("report: {}", p.display())),
        Err(e) => eprintln!("wf: run {run}: could not rewrite its report: {e}"),
    }
    Ok(exit::DONE)
}

/// Every store's manifests are checked (or rebuilt from the staging) before any store is touched,
/// so a refusal leaves CERT whole (each store's transaction checks again against its marker rows).
fn manifests(
    run: &str,
    loads: &[LoadOut],
    rebuild: bool,
    by_difference: bool,
) -> anyhow::Result<()> {
    for l in loads {
        let (Some(job), Some(report)) = (l.job.as_ref(), l.report.as_ref()) else {
            continue;
        };
        if rebuild {
            for t in wf_stores::load::rebuild_manifests(job, report)? {
                say(&format!(
                    "rebuilt the rollback manifest of {t} from the run's anonymized staging"
                ));
            }
        } else if let Err(e) = wf_stores::load::check_job_manifests(job, report, by_difference) {
            eprintln!("wf: {e}");
            anyhow::bail!(rebuild_hint(run));
        }
    }
    Ok(())
}

/// Shows what will be deleted and, unless `yes`, asks; whether to go on. Asking, it first counts
/// in CERT what the rollback would really delete now (a tester may have deleted rows since).
async fn confirm(
    run: &str,
    loads: &[LoadOut],
    yes: bool,
    cfg: &wf_stores::Config,
    by_difference: bool,
) -> anyhow::Result<bool> {
    for l in loads {
        if let Some(r) = &l.report {
            let rows: u64 = r.tables.iter().map(|t| t.inserted).sum();
            let tables = r.tables.len();
            match l.job.as_ref().filter(|_| by_difference) {
                // A refresh by difference wrote some rows and owns the district's.
                Some(j) => say(&format!(
                    "store {}: {} rows of run {run} in {tables} tables (a refresh by difference: it wrote {rows} of them)",
                    l.store,
                    wf_stores::load::manifest_total(j)?
                )),
                None => say(&format!(
                    "store {}: {rows} rows inserted by run {run} in {tables} tables",
                    l.store
                )),
            }
        }
    }
    if yes {
        return Ok(true);
    }
    for l in loads {
        let now = match (&l.job, &l.graph_job, cfg.graph.as_ref()) {
            (Some(j), _, _) if !j.dry_run => match cfg.store(&j.store) {
                Some(s) => wf_stores::connect::preview_rollback_store(s, j).await?,
                None => continue,
            },
            (_, Some(j), Some(g)) if !j.dry_run && g.name == j.store => {
                wf_stores::graph::rollback::preview_rollback_graph(g, j).await?
            }
            _ => continue,
        };
        let n: u64 = now.iter().map(|(_, n)| n).sum();
        let by: Vec<String> = now.iter().map(|(t, n)| format!("{t} {n}")).collect();
        say(&format!(
            "store {}: {n} of them are in CERT now and will be deleted ({})",
            l.store,
            by.join(", ")
        ));
    }
    eprint!("Delete these rows from CERT? Rows CERT had before the run are kept. [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "yes" | "Y"))
}

/// Deletes every store at once (independent transactions, as the loads ran; children first
/// inside each); the total of rows, nodes and relationships deleted. A store that fails does not
/// stop the others: the first error is returned once all have ended (a rollback run again
/// deletes what is left).
async fn delete(
    engine: &Engine,
    run: &str,
    cfg: &wf_stores::Config,
    config_path: &std::path::Path,
    jobs: &[&StoreLoad],
    graph_jobs: &[&GraphLoad],
) -> anyhow::Result<u64> {
    use futures_util::future::{join_all, BoxFuture, FutureExt};
    let gone = |what: &str, store: &str| {
        anyhow::anyhow!("{what} {store} is no longer in {}", config_path.display())
    };
    type Deleted = anyhow::Result<Vec<(String, u64)>>;
    let mut work: Vec<(String, &str, BoxFuture<'_, Deleted>)> = Vec::new();
    for job in graph_jobs {
        let g = cfg
            .graph
            .as_ref()
            .filter(|g| g.name == job.store)
            .ok_or_else(|| gone("graph store", &job.store))?;
        let f = async move { Ok(wf_stores::graph::load::rollback_graph(g, job).await?) };
        work.push((job.store.clone(), "nodes and relationships", f.boxed()));
    }
    for job in jobs.iter().rev() {
        let store = cfg
            .store(&job.store)
            .ok_or_else(|| gone("store", &job.store))?;
        let f = async move {
            match wf_stores::connect::rollback_store(store, job).await {
                Err(e @ wf_stores::StoreError::Manifest { .. }) => {
                    eprintln!("wf: {e}");
                    Err(anyhow::anyhow!(rebuild_hint(run)))
                }
                other => Ok(other?),
            }
        };
        work.push((job.store.clone(), "rows", f.boxed()));
    }
    let (names, futures): (Vec<(String, &str)>, Vec<_>) =
        work.into_iter().map(|(s, w, f)| ((s, w), f)).unzip();
    let mut total = 0u64;
    let mut first_err = None;
    for ((store, what), res) in names.into_iter().zip(join_all(futures).await) {
        match res {
            Ok(deleted) => {
                audit_rollback(engine, run, &store, &deleted);
                let n: u64 = deleted.iter().map(|(_, n)| n).sum();
                total += n;
                let kind = if what == "rows" { "store" } else { "graph" };
                say(&format!("{kind} {store}: deleted {n} {what}"));
            }
            // The first error ends the command (and is printed by it); the others are said here.
            Err(e) if first_err.is_some() => eprintln!("wf: rollback of {store} failed: {e:#}"),
            Err(e) => first_err = Some(e),
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

/// One audit line per store rolled back: the tables and rows deleted.
fn audit_rollback(engine: &Engine, run: &str, store: &str, deleted: &[(String, u64)]) {
    let tables: serde_json::Map<String, serde_json::Value> = deleted
        .iter()
        .map(|(t, n)| (t.clone(), serde_json::json!({"deleted": n})))
        .collect();
    let details = serde_json::json!({"store": store, "cert_tables_written": tables});
    crate::audit::record(engine.data().root(), "rollback", Some(run), details);
}
