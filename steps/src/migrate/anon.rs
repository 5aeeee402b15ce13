//! The anonymize stage, one step per table: the plan adds `anonymize/collisions` (the
//! unique-collision fixes, over the tables with a unique text column), one `anonymize/<store.table>`
//! per table and `anonymize/<graph>`; a table's step starts as soon as its extract and the fixes
//! are done. `anonymize/scan` (see `leaks`) runs the leak scan over every table once they are all
//! done (an original value must not survive in any table), and the static `anonymize` step writes
//! the stage's report and output.

pub(crate) use super::blocking::blocking;
use super::{rules_and_key, ExtractOut, GraphStaged, MigrateParams, StagedTable};
use crate::anonymize::table::Written;
use crate::anonymize::{anonymize_table, collision_fixes, AnonError, Fixes, TableInput, TableOut};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wf_engine::{Artifact, Step, StepContext, StepError, StepOutput, StepSpec};
use wf_stores::staging::FileInfo;

/// Step kind of the collision fixes.
pub const FIXES_KIND: &str = "migrate.anonymize_fixes";
/// Step kind of a table's (or the graph's) anonymize step.
pub const ANON_KIND: &str = "migrate.anonymize_table";
/// Id of the collision-fixes step.
pub const FIXES_STEP: &str = "anonymize/collisions";
/// Id of the leak-scan step (see `leaks`).
pub const SCAN_STEP: &str = "anonymize/scan";

/// What an anonymize step covers: one relational table, or every graph file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AnonTask {
    Table(String),
    Graph,
}

impl AnonTask {
    pub fn decode(params: &[u8]) -> Result<AnonTask, String> {
        serde_json::from_slice(params).map_err(|e| format!("anonymize step parameters: {e}"))
    }
}

/// Output of one `anonymize/…` step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnonPart {
    pub files: Vec<StagedTable>,
    pub fields: Vec<crate::anonymize::table::FieldReport>,
    /// The keyed hashes of the originals (sorted u64, little-endian), for the leak scan.
    pub originals: PathBuf,
}

/// The anonymize steps the plan adds: the fixes first (after the extracts of the tables with a
/// unique text column, and of the graph), then one per table and one for the graph.
pub(crate) fn specs(
    tables: &[(String, bool)],
    graph: Option<&str>,
) -> Result<Vec<StepSpec>, StepError> {
    let json = |t: &AnonTask| serde_json::to_vec(t).map_err(|e| StepError::Fatal(e.to_string()));
    let mut fix_deps: Vec<String> = tables
        .iter()
        .filter(|(_, unique_text)| *unique_text)
        .map(|(t, _)| format!("extract/{t}"))
        .collect();
    fix_deps.extend(graph.map(|g| format!("extract/{g}")));
    let mut out = vec![StepSpec::new(FIXES_STEP, FIXES_KIND, fix_deps)];
    for (t, _) in tables {
        let deps = vec![format!("extract/{t}"), FIXES_STEP.to_string()];
        let mut spec = StepSpec::new(format!("anonymize/{t}"), ANON_KIND, deps);
        spec.params = json(&AnonTask::Table(t.clone()))?;
        out.push(spec);
    }
    if let Some(g) = graph {
        let deps = vec![format!("extract/{g}"), FIXES_STEP.to_string()];
        let mut spec = StepSpec::new(format!("anonymize/{g}"), ANON_KIND, deps);
        spec.params = json(&AnonTask::Graph)?;
        out.push(spec);
    }
    Ok(out)
}

/// The anonymizer's inputs among the extract stage's files: the relational table `table` (every
/// one for `None`), and every graph file with `graph`.
fn inputs(ex: &ExtractOut, p: &MigrateParams, table: Option<&str>, graph: bool) -> Vec<TableInput> {
    let mut out: Vec<TableInput> = ex
        .files
        .iter()
        .filter(|f| table.is_none_or(|t| f.table == t))
        .map(|f| super::inputs::table_input(ex, f, p))
        .collect();
    if let (true, Some(g)) = (graph, &p.config.graph) {
        out.extend(
            ex.graph
                .iter()
                .map(|f: &GraphStaged| super::inputs::graph_input(g, f)),
        );
    }
    out
}

/// The inputs of one anonymize step.
fn task_inputs(ex: &ExtractOut, p: &MigrateParams, task: &AnonTask) -> Vec<TableInput> {
    match task {
        AnonTask::Table(t) => inputs(ex, p, Some(t), false),
        AnonTask::Graph => inputs(
            &ExtractOut {
                files: Vec::new(),
                ..ex.clone()
            },
            p,
            None,
            true,
        ),
    }
}

/// Raw files purged since they were extracted (the run ended, or `wf purge`) are extracted again.
pub(super) fn present(ins: &[TableInput]) -> Result<(), StepError> {
    match ins.iter().find(|i| !i.file.exists()) {
        None => Ok(()),
        Some(gone) => Err(StepError::Redo {
            // The plan's raw directory holds the tables; the graph's step has its own.
            producer: super::producer_of(&gone.file).unwrap_or_else(|| "extract".into()),
            path: gone.file.clone(),
            message: format!(
                "raw staging {} is gone (purged); extracting again",
                gone.file.display()
            ),
        }),
    }
}

/// `anonymize/collisions`: which originals of unique text columns need a suffix.
pub struct FixesStep(pub Arc<MigrateParams>);

#[async_trait::async_trait]
impl Step for FixesStep {
    async fn run(&self, cx: &StepContext) -> Result<StepOutput, StepError> {
        let p = self.0.clone();
        let ex = ExtractOut::input(cx)?;
        if let Some(g) = p.config.graph.as_ref().filter(|_| p.graph_apart) {
            let nodes = cx
                .inputs
                .get(&format!("extract/{}", g.name))
                .and_then(|o| o.metrics.get("nodes").copied())
                .unwrap_or(0);
            super::found_somewhere(cx, &p, nodes)?;
        }
        let (rules, key) = rules_and_key(&p)?;
        // Only the tables this step waits for are in its inputs: those with a unique text column.
        let ins = inputs(&ex, &p, None, true);
        present(&ins)?;
        let rules_file = p.rules_file.clone();
        let fixes: Fixes =
            blocking(move || collision_fixes(&ins, &rules, &rules_file, &key)).await?;
        let mut out = StepOutput::with_value(&fixes)?;
        out.metrics.insert(
            "collisions".into(),
            fixes.values().map(|f| f.len() as u64).sum(),
        );
        Ok(out)
    }
}

/// `anonymize/<store.table>` or `anonymize/<graph>`.
pub struct AnonTableStep {
    pub params: Arc<MigrateParams>,
    pub task: AnonTask,
}

#[async_trait::async_trait]
impl Step for AnonTableStep {
    async fn run(&self, cx: &StepContext) -> Result<StepOutput, StepError> {
        let p = self.params.clone();
        let ex = ExtractOut::input(cx)?;
        let fixes: Fixes = cx.input(FIXES_STEP)?;
        let (rules, key) = rules_and_key(&p)?;
        let ins = task_inputs(&ex, &p, &self.task);
        present(&ins)?;
        let staged = ex.files.iter().map(|f| (&f.table, f.rows));
        let graph = ex.graph.iter().map(|g| (&g.staged.table, g.staged.rows));
        let expected = staged
            .chain(graph)
            .filter(|(t, _)| ins.iter().any(|i| &i.table == *t))
            .map(|(_, r)| r)
            .sum();
        cx.progress.expect(expected);
        let (rules_file, out_dir) = (p.rules_file.clone(), cx.artifact_dir.join("anon"));
        if let (AnonTask::Table(t), [input]) = (&self.task, &ins[..]) {
            if super::delta::read_by_difference(cx, t) {
                let input = input.clone();
                let done = super::delta::anonymize(cx, &p, &ex, input, fixes, &out_dir).await?;
                return part_output(cx, vec![done]);
            }
        }
        let done: Vec<TableOut> = blocking(move || {
            ins.iter()
                .map(|t| anonymize_table(t, &rules, &rules_file, &key, &fixes, &out_dir))
                .collect()
        })
        .await?;
        part_output(cx, done)
    }
}

/// Journals a part: its files and the originals' hashes as artifacts, its field reports.
fn part_output(cx: &StepContext, mut done: Vec<TableOut>) -> Result<StepOutput, StepError> {
    let retry = |p: &Path, e: std::io::Error| StepError::Retryable(format!("{}: {e}", p.display()));
    std::fs::create_dir_all(&cx.artifact_dir).map_err(|e| retry(&cx.artifact_dir, e))?;
    // The tables' hashes (one, or every graph file's) go to the file straight from their runs.
    let mut hashes = crate::anonymize::Hashes::default();
    for t in &mut done {
        hashes.append(std::mem::take(&mut t.originals));
    }
    let originals = cx.artifact_dir.join("originals.bin");
    let fail = |e| match e {
        AnonError::Staging(s) => StepError::Retryable(s.to_string()),
        other => StepError::Fatal(other.to_string()),
    };
    crate::anonymize::leak_scan::write_distinct(hashes, &originals).map_err(fail)?;
    // What each table's scanned fields were written with, for the leak scan (see `written_file`).
    let mut written = Vec::new();
    for t in &mut done {
        if let Written::Hashes(h) = std::mem::take(&mut t.written) {
            let path = crate::anonymize::leak_scan::written_file(&originals, &t.table);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| retry(dir, e))?;
            }
            crate::anonymize::leak_scan::write_distinct(h, &path).map_err(fail)?;
            written.push(path);
        }
    }
    let mut part = AnonPart {
        files: Vec::new(),
        fields: Vec::new(),
        originals: originals.clone(),
    };
    for t in done {
        part.files.push(StagedTable {
            table: t.table,
            path: t.info.path,
            rows: t.info.rows,
            bytes: t.info.bytes,
            sha256: t.info.sha256,
        });
        part.fields.extend(t.fields);
    }
    let mut output = StepOutput::with_value(&part)?;
    // The staging writer hashed each file as it wrote it.
    for f in &part.files {
        output
            .artifacts
            .push(Artifact::with_sha256(&f.path, &f.sha256).map_err(|e| retry(&f.path, e))?);
    }
    output
        .artifacts
        .push(Artifact::from_file(&originals).map_err(|e| retry(&originals, e))?);
    for path in &written {
        output
            .artifacts
            .push(Artifact::from_file(path).map_err(|e| retry(path, e))?);
    }
    output
        .metrics
        .insert("rows".into(), part.files.iter().map(|f| f.rows).sum());
    cx.progress.rows(part.files.iter().map(|f| f.rows).sum());
    Ok(output)
}

/// The parts of the stage in `cx`'s inputs, as the leak scan takes them (the tables, and the
/// files of their originals' hashes); `None` for a run whose plan added no anonymize steps
/// (`--from-run`, or a run from before them).
pub(crate) type Parts = (Vec<TableOut>, Vec<PathBuf>);

pub(crate) fn parts(cx: &StepContext) -> Result<Option<Parts>, StepError> {
    let mut ids: Vec<&String> = cx
        .inputs
        .keys()
        .filter(|id| id.starts_with("anonymize/") && *id != FIXES_STEP && *id != SCAN_STEP)
        .collect();
    if ids.is_empty() {
        return Ok(None);
    }
    ids.sort();
    let (mut out, mut files) = (Vec::new(), Vec::new());
    for id in ids {
        let part: AnonPart = cx.input(id)?;
        let originals = part.originals.clone();
        let redo = |message: String| StepError::Redo {
            producer: id.clone(),
            path: originals.clone(),
            message,
        };
        let len = std::fs::metadata(&part.originals)
            .map_err(|e| redo(format!("{}: {e}", part.originals.display())))?
            .len();
        if len % 8 != 0 {
            return Err(redo(format!("{} is cut short", part.originals.display())));
        }
        files.push(part.originals);
        let mut fields = part.fields;
        for f in part.files.into_iter() {
            // Read against the record, as every consumer registers its inputs (`verified`).
            wf_stores::verified::expect(&f.path, &f.sha256);
            let info = FileInfo {
                path: f.path,
                rows: f.rows,
                bytes: f.bytes,
                sha256: f.sha256,
            };
            // Parts written before the steps kept these hashes are scanned by reading the file.
            let hashes = crate::anonymize::leak_scan::written_file(&originals, &f.table);
            let written = match std::fs::metadata(&hashes) {
                Ok(m) if m.len() % 8 == 0 => Written::File(hashes),
                Ok(_) => return Err(redo(format!("{} is cut short", hashes.display()))),
                Err(_) => Written::Unknown,
            };
            out.push(TableOut {
                table: f.table,
                info,
                fields: std::mem::take(&mut fields),
                originals: Default::default(),
                written,
            });
        }
    }
    Ok(Some((out, files)))
}
