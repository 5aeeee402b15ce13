//! The extract stage, one step per table: `extract` plans (selects the district's subset in one
//! snapshot per PROD store, writes each table's keys to a file, keeps the snapshots open) and
//! spawns `extract/<store.table>` for each table and `extract/<graph>` for the graph. A table's
//! step reads its rows in its store's planning snapshot: attached by its exported id
//! (PostgreSQL, so one store's tables are read in parallel) or through the held snapshot itself.

use super::{held, private_dir, store_err, ExtractOut, GraphStaged, MigrateParams, StagedTable};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use wf_engine::{Step, StepContext, StepError, StepOutput, StepSpec};
use wf_stores::delta::{DeltaCounts, DistrictRows};
use wf_stores::extract::{
    extract_table, find_table, plan_stores, store_kind, Chosen, PlannedTable,
};
use wf_stores::graph::extract::extract_graph;
use wf_stores::{Side, SnapshotMode};

/// Step kind of a table's extract step.
pub const TABLE_KIND: &str = "migrate.extract_table";
/// Step kind of the graph's extract step.
pub const GRAPH_KIND: &str = "migrate.extract_graph";

use super::FOUND;

/// What a table's extract step is given by the plan (its spec's parameters, JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableTask {
    /// Names the plan attempt whose snapshots this table must be read in.
    pub epoch: String,
    pub table: PlannedTable,
    /// The raw staging directory (the plan's, 0700).
    pub raw: PathBuf,
}

/// Output of one `extract/…` step: its staged files and the snapshot they were read in.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExtractPart {
    pub files: Vec<StagedTable>,
    pub graph: Vec<GraphStaged>,
    /// The store's snapshot id the rows come from (PostgreSQL `pg_current_snapshot()`).
    pub snapshot: Option<String>,
}

impl TableTask {
    /// Decodes a spawned spec's parameters.
    pub fn decode(params: &[u8]) -> Result<TableTask, String> {
        serde_json::from_slice(params).map_err(|e| format!("extract step parameters: {e}"))
    }
}

/// `extract`: plans the district and spawns one extract step per table (and one for the graph).
pub struct ExtractStep(pub Arc<MigrateParams>);

#[async_trait::async_trait]
impl Step for ExtractStep {
    async fn run(&self, cx: &StepContext) -> Result<StepOutput, StepError> {
        let raw = cx.artifact_dir.join("raw");
        private_dir(&raw)?;
        let p = &self.0;
        if let Some(src) = &p.from_run {
            return super::reuse_extract(cx, p, src, &raw);
        }
        // An earlier attempt's snapshots (this session) are replaced by this attempt's.
        held::release(&cx.idempotency_key);
        let epoch = format!(
            "{}#{}@{}",
            cx.idempotency_key,
            cx.attempt,
            std::process::id()
        );
        let mut out = ExtractOut {
            schemas: Vec::new(),
            files: Vec::new(),
            snapshots: Default::default(),
            graph: Vec::new(),
        };
        let mut spawn = Vec::new();
        let mut planned_rows = 0u64;
        let mut anon_tables = Vec::new();
        let mut found = false;
        let mut validate_specs = Vec::new();
        let mut planned: Vec<String> = Vec::new();
        let mut read_at = Vec::new();
        if !p.config.stores.is_empty() {
            // Key files sit beside the raw tables (`<store.table>.keys`): PII too, purged with them.
            let limit = wf_stores::keyset::memory_limit();
            // With a graph, the district may live in the graph alone (checked by its extract).
            let required = p.config.graph.is_none();
            let mut plan = plan_stores(&p.config, &p.district, &raw, limit, required)
                .await
                .map_err(store_err)?;
            for (store, mut snap) in plan.snaps.drain() {
                // When the store was read: the next incremental refresh reads what changed since.
                if let Some(us) = snap.started_at_us().await.map_err(store_err)? {
                    read_at.push((format!("snapshot_at/{store}"), us.max(0) as u64));
                }
                let n = plan.tables.iter().filter(|t| t.store == store).count();
                if n > 0 {
                    let exported = snap.export().await.map_err(store_err)?;
                    held::hold(&epoch, &store, snap, exported, n);
                }
            }
            for t in &plan.tables {
                let table = find_table(&plan.schemas, &t.table).map_err(store_err)?;
                let kind = store_kind(&plan.schemas, &t.store);
                anon_tables.push((t.table.clone(), super::inputs::unique_text(table, kind)));
            }
            let (specs, rows) = table_specs(plan.tables, &epoch, &raw)?;
            spawn.extend(specs);
            planned_rows += rows;
            found = plan.found;
            let mut fk_schemas = plan.schemas.clone();
            wf_stores::analysis::add_virtual_fks(&mut fk_schemas, &p.config)
                .map_err(StepError::Fatal)?;
            planned = anon_tables.iter().map(|(t, _)| t.clone()).collect();
            validate_specs = crate::validate::table_specs(&planned, &fk_schemas)?;
            validate_specs.extend(crate::validate::store_specs(&planned));
            out.schemas = plan.schemas;
            out.snapshots = plan.snapshots;
        }
        if let Some(g) = p.config.graph.as_ref().filter(|_| !p.graph_apart) {
            let mut spec = StepSpec::new(format!("extract/{}", g.name), GRAPH_KIND, vec![]);
            spec.params = raw.to_string_lossy().as_bytes().to_vec();
            spawn.push(spec);
        }
        let tables = spawn.len() as u64;
        let graph = p.config.graph.as_ref().map(|g| g.name.as_str());
        let anon = super::anon::specs(&anon_tables, graph)?;
        let scan = super::leaks::spec(&anon);
        spawn.extend(anon);
        spawn.extend(scan);
        spawn.extend(validate_specs);
        spawn.extend(graph.map(crate::validate::graph_spec));
        if let Some(g) = &p.config.graph {
            spawn.push(crate::validate::graph_staging_spec(g, &planned));
        }
        let mut output = StepOutput::with_value(&out)?;
        output.metrics.insert("tables".into(), tables);
        output.metrics.insert("planned_rows".into(), planned_rows);
        output.metrics.insert(FOUND.into(), u64::from(found));
        output.metrics.extend(read_at);
        output.spawn = spawn;
        Ok(output)
    }
}

/// One `extract/<store.table>` spec per planned table, the largest first (with `--jobs` steps at
/// once, the longest extract, and the anonymize and validation after it, is what the run waits
/// for); with the rows they plan.
fn table_specs(
    mut tables: Vec<PlannedTable>,
    epoch: &str,
    raw: &std::path::Path,
) -> Result<(Vec<StepSpec>, u64), StepError> {
    tables.sort_by_key(|t| std::cmp::Reverse(t.rows));
    let rows = tables.iter().map(|t| t.rows).sum();
    let specs = tables
        .into_iter()
        .map(|t| {
            let id = format!("extract/{}", t.table);
            let task = TableTask {
                epoch: epoch.to_string(),
                table: t,
                raw: raw.to_path_buf(),
            };
            let mut spec = StepSpec::new(id, TABLE_KIND, vec![]);
            spec.params = serde_json::to_vec(&task).map_err(|e| StepError::Fatal(e.to_string()))?;
            Ok(spec)
        })
        .collect::<Result<_, StepError>>()?;
    Ok((specs, rows))
}

/// `extract/<store.table>`: one table's rows, in its store's planning snapshot.
pub struct ExtractTableStep {
    pub params: Arc<MigrateParams>,
    pub task: TableTask,
}

#[async_trait::async_trait]
impl Step for ExtractTableStep {
    async fn run(&self, cx: &StepContext) -> Result<StepOutput, StepError> {
        let p = &self.params;
        let t = &self.task.table;
        let plan: ExtractOut = cx.input("extract")?;
        cx.progress.expect(t.rows);
        let table = find_table(&plan.schemas, &t.table).map_err(store_err)?;
        let kind = store_kind(&plan.schemas, &t.store);
        let how = self.how(cx, table, kind)?;
        let read = |snap| self.read(snap, table, kind, cx.progress.clone(), how);
        let (file, snapshot, counts) = match held::get(&self.task.epoch, &t.store) {
            Some(h) => match &h.exported {
                Some(id) => read(&mut attach(p, &t.store, id).await?).await?,
                None => read(&mut *h.snap.lock().await).await?,
            },
            None if p.config.snapshot == SnapshotMode::Closure => {
                tracing::warn!(table = %t.table, "the planning snapshot is gone; reading the table in a new snapshot (snapshot = \"closure\")");
                let store = store_config(p, &t.store)?;
                let db = wf_stores::connect(store, Side::Prod)
                    .await
                    .map_err(store_err)?;
                read(&mut db.snapshot().await.map_err(store_err)?).await?
            }
            None => return Err(lost(&t.store, &self.task.raw)),
        };
        held::table_done(&self.task.epoch, &t.store);
        cx.progress.rows(file.file.rows);
        let part = ExtractPart {
            files: vec![StagedTable::from(&file)],
            graph: Vec::new(),
            snapshot,
        };
        let mut output = StepOutput::with_value(&part)?;
        output.metrics.insert("rows".into(), file.file.rows);
        if let Some(c) = counts {
            super::delta::metrics(&mut output, c);
        }
        // The raw files are not artifacts: purge-raw deletes them on purpose.
        Ok(output)
    }
}

/// How a table's extract step reads it: whole, or only what changed since the run a refresh
/// replaces (`wf refresh --incremental` on a table with a change column).
enum How {
    Whole,
    Changed {
        /// The replaced run's anonymized staging of the table (its keys are compared).
        earlier: StagedTable,
        since: wf_stores::snapshot::Since,
    },
}

impl ExtractTableStep {
    /// Whether the table is read by difference (see `delta`); why not, logged, where it has a
    /// change column but cannot be.
    fn how(
        &self,
        cx: &StepContext,
        table: &wf_stores::schema::Table,
        kind: wf_stores::StoreKind,
    ) -> Result<How, StepError> {
        let t = &self.task;
        let whole = |why: &str| {
            tracing::warn!(table = %t.table.table, "reading the table whole, not by its change column: {why}");
            Ok(How::Whole)
        };
        match super::delta::base(cx, &self.params, table, kind, &t.raw)? {
            None => Ok(How::Whole),
            Some(Err(why)) => whole(&why),
            Some(Ok(_)) if matches!(t.table.chosen, Chosen::All) => {
                whole("it is copied whole (reference_tables)")
            }
            Some(Ok(base)) => Ok(How::Changed {
                earlier: base.anon,
                since: base.since,
            }),
        }
    }

    /// The table's rows from `snap` into raw staging, with the snapshot's id (and what was read
    /// by difference).
    async fn read(
        &self,
        snap: &mut wf_stores::extract::Snap,
        table: &wf_stores::schema::Table,
        kind: wf_stores::StoreKind,
        progress: wf_engine::Progress,
        how: How,
    ) -> Result<
        (
            wf_stores::extract::TableFile,
            Option<String>,
            Option<DeltaCounts>,
        ),
        StepError,
    > {
        let (p, t) = (&self.params, &self.task);
        let sid = snap.snapshot_id();
        let sink = wf_stores::extract::TableSink {
            dir: &t.raw,
            batch_rows: p.batch_rows,
            progress: Some(Box::new(move |n| progress.rows(n))),
        };
        let rows = match &t.table.chosen {
            Chosen::Keys { file } => Some(DistrictRows::Keys(file)),
            Chosen::District => Some(DistrictRows::Column {
                column: &p.config.district_column,
                value: &p.district,
            }),
            Chosen::All => None,
        };
        match (how, rows) {
            (How::Changed { earlier, since }, Some(rows)) => {
                let gone = super::delta::gone_file(&t.raw, &t.table.table);
                let earlier = wf_stores::delta::Earlier {
                    file: &earlier.path,
                    sha256: &earlier.sha256,
                    rows: earlier.rows,
                };
                let (f, counts) = wf_stores::delta::extract_changed(
                    snap, kind, table, rows, earlier, &since, sink, &gone,
                )
                .await
                .map_err(store_err)?;
                Ok((f, sid, Some(counts)))
            }
            _ => {
                let chosen = &t.table.chosen;
                let f = extract_table(snap, kind, table, chosen, &p.config, &p.district, sink)
                    .await
                    .map_err(store_err)?;
                Ok((f, sid, None))
            }
        }
    }
}

/// The planning snapshot of `store` is gone (the PROD server restarted, or the plan ran in
/// another process): the plan runs again, with every table after it.
fn lost(store: &str, raw: &std::path::Path) -> StepError {
    StepError::Redo {
        producer: "extract".into(),
        path: raw.to_path_buf(),
        message: format!(
            "the PROD snapshot of store {store} is gone (its server restarted or the runner that planned it died); planning the district again"
        ),
    }
}

fn store_config<'a>(
    p: &'a MigrateParams,
    name: &str,
) -> Result<&'a wf_stores::StoreConfig, StepError> {
    p.config
        .stores
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| {
            StepError::Fatal(format!(
                "the plan names store {name}, which wf.toml does not have"
            ))
        })
}

/// A new connection reading the snapshot `exported`; one the server no longer knows means the
/// planning connection is gone, and the plan runs again.
async fn attach(
    p: &MigrateParams,
    store: &str,
    exported: &str,
) -> Result<wf_stores::extract::Snap, StepError> {
    let db = wf_stores::connect(store_config(p, store)?, Side::Prod)
        .await
        .map_err(store_err)?;
    match db.snapshot_at(exported).await {
        Ok(s) => Ok(s),
        Err(e) if e.is_retryable() => Err(store_err(e)),
        Err(e) => {
            tracing::warn!(store, error = %e, "cannot attach to the planning snapshot");
            Err(lost(store, std::path::Path::new(exported)))
        }
    }
}

/// `extract/<graph>`: the district's subgraph into raw staging (`raw`: the plan's directory, for
/// a step the plan spawned; `None`: the step's own, for the step beside the plan).
pub struct ExtractGraphStep {
    pub params: Arc<MigrateParams>,
    pub raw: Option<PathBuf>,
}

#[async_trait::async_trait]
impl Step for ExtractGraphStep {
    async fn run(&self, cx: &StepContext) -> Result<StepOutput, StepError> {
        let p = &self.params;
        let Some(g) = &p.config.graph else {
            return Err(StepError::Fatal("wf.toml has no [graph] to extract".into()));
        };
        let raw = match &self.raw {
            Some(r) => r.clone(),
            None => {
                let r = cx.artifact_dir.join("raw");
                private_dir(&r)?;
                r
            }
        };
        let gx = extract_graph(g, &p.district, &raw, p.batch_rows)
            .await
            .map_err(store_err)?;
        // Beside the plan, the plan's finding is not known yet: `anonymize/collisions` checks.
        if self.raw.is_some() {
            super::found_somewhere(cx, p, gx.nodes)?;
        }
        let graph: Vec<GraphStaged> = gx
            .files
            .into_iter()
            .map(|f| GraphStaged {
                staged: StagedTable {
                    table: f.table,
                    path: f.file.path,
                    rows: f.file.rows,
                    bytes: f.file.bytes,
                    sha256: f.file.sha256,
                },
                kind: f.kind,
            })
            .collect();
        cx.progress.rows(gx.nodes + gx.rels);
        let part = ExtractPart {
            files: Vec::new(),
            graph,
            snapshot: None,
        };
        let mut output = StepOutput::with_value(&part)?;
        output.metrics.insert("rows".into(), gx.nodes + gx.rels);
        output.metrics.insert("nodes".into(), gx.nodes);
        output.metrics.insert("relationships".into(), gx.rels);
        // `without_key = "skip"`: what was left out, for the gate and the report.
        for (what, n) in gx.skipped {
            output
                .metrics
                .insert(format!("{}{what}", super::SKIPPED), n);
        }
        Ok(output)
    }
}

impl ExtractOut {
    /// The plan's output (`extract`) completed with its tables' outputs (`extract/…`), in schema
    /// order. Runs from before per-table steps have everything in `extract`.
    pub fn assemble<'a>(
        plan: &StepOutput,
        parts: impl Iterator<Item = (&'a str, &'a StepOutput)>,
    ) -> Result<ExtractOut, String> {
        let mut ex: ExtractOut = plan.value_as()?;
        let order: std::collections::HashMap<String, usize> = ex
            .schemas
            .iter()
            .flat_map(|s| &s.tables)
            .enumerate()
            .map(|(i, t)| (t.id(), i))
            .collect();
        let mut parts: Vec<(&str, &StepOutput)> =
            parts.filter(|(id, _)| id.starts_with("extract/")).collect();
        parts.sort_by_key(|(id, _)| *id);
        for (id, o) in parts {
            let part: ExtractPart = o.value_as().map_err(|e| format!("{id}: {e}"))?;
            ex.files.extend(part.files);
            ex.graph.extend(part.graph);
        }
        ex.files
            .sort_by_key(|f| order.get(&f.table).copied().unwrap_or(usize::MAX));
        Ok(ex)
    }

    /// The extract stage as a step's inputs hold it (`extract` and the steps it spawned).
    pub fn input(cx: &StepContext) -> Result<ExtractOut, StepError> {
        let plan = cx.inputs.get("extract").ok_or_else(|| {
            StepError::Fatal(format!("step {} has no input from `extract`", cx.step_id))
        })?;
        let parts = cx.inputs.iter().map(|(id, o)| (id.as_str(), o.as_ref()));
        ExtractOut::assemble(plan, parts)
            .map_err(|e| StepError::Fatal(format!("input `extract` of {}: {e}", cx.step_id)))
    }

    /// The extract stage from a run's done outputs; `None` before `extract` is done.
    pub fn from_outputs(outputs: &[(String, StepOutput)]) -> Option<Result<ExtractOut, String>> {
        let plan = outputs.iter().find(|(s, _)| s == "extract")?;
        let parts = outputs.iter().map(|(id, o)| (id.as_str(), o));
        Some(ExtractOut::assemble(&plan.1, parts))
    }
}

/// The extract stage's metrics summed over `extract` and its table steps (rows, nodes, skipped).
pub fn extract_metrics<'a>(
    outputs: impl Iterator<Item = (&'a str, &'a StepOutput)>,
) -> std::collections::BTreeMap<String, u64> {
    let mut m = std::collections::BTreeMap::new();
    for (_, o) in outputs.filter(|(id, _)| *id == "extract" || id.starts_with("extract/")) {
        for (k, v) in &o.metrics {
            *m.entry(k.clone()).or_insert(0) += v;
        }
    }
    m
}
