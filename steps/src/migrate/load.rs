//! The `load/<store>` steps: one CERT transaction per store (and one for the graph). After
//! `wf recover`, a load first deletes what the run's earlier generations loaded into its store.

use super::{
    input_err, store_err, validation_rules, AnonymizeOut, ExtractOut, LoadOut, MigrateParams,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wf_engine::{Step, StepContext, StepError, StepOutput};
use wf_stores::analysis::{add_virtual_fks, analyze};
use wf_stores::connect::{load_store, rollback_store};
use wf_stores::extract::TableFile;
use wf_stores::graph::load::{load_graph, rollback_graph, GraphLoad};
use wf_stores::load::{plan_loads, LoadOptions, StoreLoad};
use wf_stores::staging::FileInfo;

/// `load/<store>`: the anonymized tables of one store into its CERT database, in one transaction.
pub struct LoadStep {
    pub params: Arc<MigrateParams>,
    pub store: String,
}

#[async_trait::async_trait]
impl Step for LoadStep {
    async fn run(&self, cx: &StepContext) -> Result<StepOutput, StepError> {
        let p = &self.params;
        let ex = ExtractOut::input(cx)?;
        let anon: AnonymizeOut = cx.input("anonymize")?;
        anon.expect_files();
        let graph = p.config.graph.as_ref().filter(|g| g.name == self.store);
        // Before any write: this CERT target is enrolled and is no PROD source (by identity).
        let target = wf_stores::guard::Targets {
            stores: graph
                .is_none()
                .then(|| self.store.clone())
                .into_iter()
                .collect(),
            graph: graph.is_some(),
        };
        wf_stores::guard::verify(&p.config, &target)
            .await
            .map_err(store_err)?;
        if let Some(g) = graph {
            return load_graph_step(cx, p, g, &anon).await;
        }
        let job = store_jobs(
            p,
            &ex,
            &anon,
            &cx.idempotency_key,
            &manifest_dir(cx, cx.generation),
            p.dry_run,
        )?
        .into_iter()
        .find(|j| j.store == self.store);
        let replaced = super::replaced_loads(cx, p)?
            .into_iter()
            .find(|l| l.store == self.store)
            .and_then(|l| l.job);
        // A refresh whose new subset has no rows in this store still removes the old ones.
        let job = match (job, replaced) {
            (Some(j), r) => Some(StoreLoad {
                replaces: r.map(Box::new),
                by_difference: p.incremental,
                ..j
            }),
            (None, Some(r)) => Some(StoreLoad {
                run_key: format!("{}/{}", cx.idempotency_key, self.store),
                tables: Vec::new(),
                manifest_dir: manifest_dir(cx, cx.generation),
                dry_run: p.dry_run,
                checks: Vec::new(),
                replaces: Some(Box::new(r.clone())),
                ..r
            }),
            (None, None) => None,
        };
        if let Some(j) = &job {
            cx.progress.expect(staged_rows(&anon, j));
        }
        let store = p.config.store(&self.store).ok_or_else(|| {
            StepError::Fatal(format!("store {} is not in the config", self.store))
        })?;
        // The gate may have loaded this store already, in a transaction left open for this step.
        let handed = match &job {
            Some(j) => super::handover::take(&cx.run_id, &j.store, &j.run_key)
                .await
                .map_err(store_err)?,
            None => None,
        };
        let handed_over = handed.is_some();
        let report = match (&job, handed) {
            (Some(_), Some(h)) => Some(h.commit().await.map_err(store_err)?),
            (Some(j), None) => {
                if !p.dry_run {
                    replace_earlier_generations(cx, store, j).await?;
                }
                Some(load_store(store, j).await.map_err(input_err("anonymize"))?)
            }
            (None, _) => None,
        };
        let tables = report.iter().flat_map(|r| &r.tables);
        let rows = tables.clone().map(|t| t.inserted).sum();
        let unchanged = tables
            .map(|t| t.rows_in_file.saturating_sub(t.inserted))
            .sum();
        let mut out = StepOutput::with_value(&LoadOut {
            store: self.store.clone(),
            job,
            report,
            graph_job: None,
        })?;
        out.metrics.insert("rows".into(), rows);
        out.metrics
            .insert("loaded_by_the_gate".into(), u64::from(handed_over));
        if p.incremental && p.replaces.is_some() {
            // A refresh by difference wrote only the changed rows; the others stayed.
            out.metrics.insert("unchanged_rows".into(), unchanged);
        }
        Ok(out)
    }
}

/// `load/<graph>`: the anonymized graph files into CERT, in one transaction.
async fn load_graph_step(
    cx: &StepContext,
    p: &MigrateParams,
    g: &wf_stores::graph::GraphConfig,
    anon: &AnonymizeOut,
) -> Result<StepOutput, StepError> {
    let prefix = format!("{}.", g.name);
    let files: Vec<PathBuf> = anon
        .files
        .iter()
        .filter(|f| f.table.starts_with(&prefix))
        .map(|f| f.path.clone())
        .collect();
    let manifest = |gen: u32| manifest_dir(cx, gen).join(format!("{}.created.jsonl", g.name));
    let replaces = super::replaced_loads(cx, p)?
        .into_iter()
        .find(|l| l.store == g.name)
        .and_then(|l| l.graph_job)
        .map(Box::new);
    // A refresh whose new subgraph is empty still removes the old one.
    let job = (!files.is_empty() || replaces.is_some()).then(|| GraphLoad {
        run_key: cx.idempotency_key.clone(),
        store: g.name.clone(),
        files,
        manifest: manifest(cx.generation),
        strategy: p.strategy,
        dry_run: p.dry_run,
        replaces,
        by_difference: p.incremental,
    });
    // `validate/<graph>` may have loaded the graph already, in a transaction left open for us.
    let handed = match &job {
        Some(j) if !p.dry_run => super::handover::take(&cx.run_id, &g.name, &j.run_key)
            .await
            .map_err(store_err)?,
        _ => None,
    };
    let handed_over = handed.is_some();
    let report = match (&job, handed) {
        (Some(_), Some(h)) => Some(h.commit().await.map_err(store_err)?),
        (Some(j), None) => {
            // After `wf recover`, what earlier generations of this run loaded is replaced.
            for gen in (0..cx.generation).filter(|_| !p.dry_run) {
                let earlier = GraphLoad {
                    run_key: key_of_generation(cx, gen),
                    manifest: manifest(gen),
                    ..j.clone()
                };
                rollback_graph(g, &earlier).await.map_err(store_err)?;
            }
            Some(load_graph(g, j).await.map_err(input_err("anonymize"))?)
        }
        (None, _) => None,
    };
    let tables = report.iter().flat_map(|r| &r.tables);
    let rows = tables.clone().map(|t| t.inserted).sum();
    let unchanged = tables
        .map(|t| t.rows_in_file.saturating_sub(t.inserted))
        .sum();
    let mut out = StepOutput::with_value(&LoadOut {
        store: g.name.clone(),
        job: None,
        report,
        graph_job: job,
    })?;
    out.metrics.insert("rows".into(), rows);
    out.metrics
        .insert("loaded_by_the_gate".into(), u64::from(handed_over));
    if p.incremental && p.replaces.is_some() {
        // By difference: what did not change stayed as CERT had it.
        out.metrics.insert("unchanged_rows".into(), unchanged);
    }
    Ok(out)
}

/// The relational loads of a run, one per store, with each store's `sql` rules attached.
pub(crate) fn store_jobs(
    p: &MigrateParams,
    ex: &ExtractOut,
    anon: &AnonymizeOut,
    run_key: &str,
    manifest_dir: &Path,
    dry_run: bool,
) -> Result<Vec<StoreLoad>, StepError> {
    let mut schemas = ex.schemas.clone();
    add_virtual_fks(&mut schemas, &p.config).map_err(StepError::Fatal)?;
    let analysis = analyze(&schemas, &p.config.cycle_breaks);
    let files: Vec<TableFile> = anon
        .files
        .iter()
        .map(|f| TableFile {
            table: f.table.clone(),
            file: FileInfo {
                path: f.path.clone(),
                rows: f.rows,
                bytes: f.bytes,
                sha256: f.sha256.clone(),
            },
        })
        .collect();
    let rules = validation_rules(p)?;
    let opts = LoadOptions {
        run_key: run_key.to_string(),
        manifest_dir: manifest_dir.to_path_buf(),
        strategy: p.strategy,
        dry_run,
    };
    Ok(plan_loads(&p.config, &ex.schemas, &analysis, &files, &opts)
        .into_iter()
        .map(|mut j| {
            j.checks = rules.sql_checks(&j.store);
            j
        })
        .collect())
}

/// Where a generation's load manifests go (one directory per generation, so a recovered run can
/// still find what its earlier generations loaded).
fn manifest_dir(cx: &StepContext, generation: u32) -> PathBuf {
    manifest_dir_of(&cx.artifact_dir, generation)
}

/// Where a load step with artifact directory `dir` writes the manifests of `generation`.
pub(crate) fn manifest_dir_of(dir: &Path, generation: u32) -> PathBuf {
    dir.join("manifests").join(format!("g{generation}"))
}

/// The idempotency key this step had in `generation` (`run/g<n>/step`).
fn key_of_generation(cx: &StepContext, generation: u32) -> String {
    format!("{}/g{generation}/{}", cx.run_id, cx.step_id)
}

/// After `wf recover`, a load step runs in a new generation: it first deletes what the run's
/// earlier generations loaded into this store (each only if it committed), so CERT ends up with
/// the new output and no duplicates, then loads.
async fn replace_earlier_generations(
    cx: &StepContext,
    store: &wf_stores::StoreConfig,
    job: &StoreLoad,
) -> Result<(), StepError> {
    for gen in 0..cx.generation {
        let earlier = StoreLoad {
            run_key: format!("{}/{}", key_of_generation(cx, gen), job.store),
            manifest_dir: manifest_dir(cx, gen),
            ..job.clone()
        };
        rollback_store(store, &earlier).await.map_err(store_err)?;
    }
    Ok(())
}

/// The rows `job` will load: its tables' anonymized files' row counts.
fn staged_rows(anon: &AnonymizeOut, job: &wf_stores::load::StoreLoad) -> u64 {
    anon.files
        .iter()
        .filter(|f| job.tables.iter().any(|t| t.file == f.path))
        .map(|f| f.rows)
        .sum()
}
