//! `wf refresh --incremental` on a table with a change column (`[[change_tracking]]`): its
//! extract step reads only the rows new to the district or changed since the replaced run's
//! snapshot (see `wf_stores::delta`), its anonymize step anonymizes them under the replaced
//! run's detection and merges them into the replaced run's anonymized staging of the table. The
//! stages after see the whole table, as a full refresh stages it. Where that cannot be exact the
//! table is read whole and the log says why.

use super::{AnonPart, StagedTable, FIXES_STEP};
use crate::anonymize::table::{anonymize_changes, FieldReport, Written};
use crate::anonymize::{AnonError, Fixes, TableInput, TableOut};
use std::path::{Path, PathBuf};
use wf_engine::{StepContext, StepError, StepOutput};
use wf_stores::extract::{find_table, store_kind};
use wf_stores::load::diff_delta;
use wf_stores::schema::Table;
use wf_stores::snapshot::Since;
use wf_stores::staging::{arrow_schema, open_verified};
use wf_stores::StoreKind;

/// Metric of an extract step that read by difference (1).
pub const DELTA: &str = "delta";

/// What the replaced run left of a table, which the changes are merged into.
pub(crate) struct Base {
    /// Its anonymized staging of the table.
    pub anon: StagedTable,
    /// The keyed hashes of its originals (the leak scan's).
    pub originals: PathBuf,
    /// Its detection, per field.
    pub fields: Vec<FieldReport>,
    /// Its collision fixes.
    pub fixes: Fixes,
    /// The rows changed since its snapshot of the store.
    pub since: Since,
}

/// Marker beside a table's raw file: its changes could not be merged exactly, so the extract
/// step that runs again reads it whole.
pub(crate) fn whole_marker(raw: &Path, table: &str) -> PathBuf {
    raw.join(format!("{table}.whole"))
}

/// The hashes of the keys the replaced run staged that the district no longer has.
pub(crate) fn gone_file(raw: &Path, table: &str) -> PathBuf {
    raw.join(format!("{table}.gone"))
}

/// The replaced run's part of `table` to read by difference; `Ok(None)` when the run reads the
/// table whole as usual (not an incremental refresh, no change column), `Ok(Some(Err(why)))` when
/// it must although the table has a change column.
pub(crate) fn base(
    cx: &StepContext,
    p: &super::MigrateParams,
    table: &Table,
    kind: StoreKind,
    raw: &Path,
) -> Result<Option<Result<Base, String>>, StepError> {
    let id = table.id();
    let (Some(run), true) = (&p.replaces, p.incremental) else {
        return Ok(None);
    };
    let Some(ct) = p.config.change_tracking(&id) else {
        return Ok(None);
    };
    if whole_marker(raw, &id).exists() {
        return Ok(Some(Err(
            "its changes could not be merged exactly (see the anonymize step's log)".into(),
        )));
    }
    let fatal = |m: String| StepError::Fatal(format!("the run this refresh replaces, {run}: {m}"));
    let (_, outputs) = cx.host.outputs(run).map_err(|e| fatal(e.to_string()))?;
    let output = |step: &str| outputs.iter().find(|(s, _)| s == step).map(|(_, o)| o);
    let at_key = format!("snapshot_at/{}", table.store);
    let Some(at_us) = output("extract").and_then(|o| o.metrics.get(&at_key)) else {
        return Ok(Some(Err(format!(
            "run {run} did not record when it read store {}",
            table.store
        ))));
    };
    let Some(part) = output(&format!("anonymize/{id}")) else {
        return Ok(Some(Err(format!("run {run} staged no rows of it"))));
    };
    let part: AnonPart = part
        .value_as()
        .map_err(|e| fatal(format!("output of anonymize/{id}: {e}")))?;
    let fixes: Fixes = match output(FIXES_STEP) {
        Some(o) => o
            .value_as()
            .map_err(|e| fatal(format!("output of {FIXES_STEP}: {e}")))?,
        None => Fixes::default(),
    };
    let since = Since {
        column: ct.column.clone(),
        at_us: *at_us as i64,
        lag_seconds: ct.lag_seconds,
    };
    Ok(Some(usable(table, kind, part, fixes, since)))
}

/// The replaced run's part as a base, or why it cannot be one.
fn usable(
    table: &Table,
    kind: StoreKind,
    part: AnonPart,
    fixes: Fixes,
    since: Since,
) -> Result<Base, String> {
    if super::inputs::unique_text(table, kind) {
        return Err("it has a unique text column: its collision fixes need every value".into());
    }
    let [anon] = &part.files[..] else {
        return Err("the replaced run staged it in several files".into());
    };
    if !anon.path.exists() || !part.originals.exists() {
        return Err(format!(
            "the replaced run's staging {} is gone (purged)",
            anon.path.display()
        ));
    }
    let reader = open_verified(&anon.path, &anon.sha256).map_err(|e| e.to_string())?;
    let cols = wf_stores::extract::staged_columns(kind, table);
    let now = arrow_schema(&table.store, &table.name, &cols);
    if reader.schema().fields() != now.fields() {
        return Err("its columns changed since the replaced run".into());
    }
    for k in wf_stores::subset::key_columns(table) {
        let field = format!("{}.{k}", table.id());
        let f = part.fields.iter().find(|f| f.field == field);
        if f.is_none_or(|f| f.rule.is_some() || !f.detected.is_empty()) {
            return Err(format!(
                "its key column {k} is anonymized, so its staged keys are not PROD's"
            ));
        }
        let text_or_int = now.field_with_name(&k).is_ok_and(|f| {
            matches!(
                f.data_type(),
                arrow_schema::DataType::Utf8 | arrow_schema::DataType::Int64
            )
        });
        if !text_or_int {
            return Err(format!(
                "its key column {k} is staged as neither text nor an integer"
            ));
        }
    }
    Ok(Base {
        anon: anon.clone(),
        originals: part.originals,
        fields: part.fields,
        fixes,
        since,
    })
}

/// Records in an extract step's output what it read by difference.
pub(crate) fn metrics(out: &mut StepOutput, c: wf_stores::delta::DeltaCounts) {
    out.metrics.insert(DELTA.into(), 1);
    out.metrics.insert("fresh_rows".into(), c.fresh);
    out.metrics.insert("changed_rows".into(), c.changed);
    out.metrics.insert("gone_rows".into(), c.gone);
}

/// Whether `extract/<table>` read by difference.
pub(crate) fn read_by_difference(cx: &StepContext, table: &str) -> bool {
    cx.inputs
        .get(&format!("extract/{table}"))
        .is_some_and(|o| o.metrics.get(DELTA) == Some(&1))
}

/// `anonymize/<table>` of a table read by difference: its changes anonymized under the replaced
/// run's detection and collision fixes, then merged into that run's staging of the table. Where
/// that cannot be exact, the table's extract step runs again and reads it whole.
pub(crate) async fn anonymize(
    cx: &StepContext,
    p: &super::MigrateParams,
    ex: &super::ExtractOut,
    input: TableInput,
    fixes: Fixes,
    out_dir: &Path,
) -> Result<TableOut, StepError> {
    let table = find_table(&ex.schemas, &input.table)
        .map_err(super::store_err)?
        .clone();
    let kind = store_kind(&ex.schemas, &table.store);
    let raw = input
        .file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let (id, file) = (input.table.clone(), input.file.clone());
    let whole = |why: String| -> StepError {
        let marker = whole_marker(&raw, &id);
        if let Err(e) = std::fs::write(&marker, &why) {
            return StepError::Retryable(format!("{}: {e}", marker.display()));
        }
        tracing::warn!(table = %id, "reading the table again, whole: {why}");
        StepError::Redo {
            producer: format!("extract/{id}"),
            path: file.clone(),
            message: format!("{id}: reading it again whole: {why}"),
        }
    };
    let base = match base(cx, p, &table, kind, &raw)? {
        Some(Ok(b)) => b,
        Some(Err(why)) => return Err(whole(why)),
        None => return Err(whole("this run no longer reads it by difference".into())),
    };
    if base.fixes != fixes {
        return Err(whole(
            "the unique-collision fixes changed since the replaced run".into(),
        ));
    }
    let (rules, key) = super::rules_and_key(p)?;
    let gone = gone_file(&raw, &id);
    let (rules_file, out) = (p.rules_file.clone(), out_dir.to_path_buf());
    let merged = super::blocking::blocking(move || {
        let delta_dir = out.join("delta");
        let changes = anonymize_changes(
            &input,
            &rules,
            &rules_file,
            &key,
            &fixes,
            &delta_dir,
            &base.fields,
        )?;
        let changes = match changes {
            Ok(c) => c,
            Err(why) => return Ok(Err(why)),
        };
        let gone_keys = wf_stores::delta::read_hashes(&gone)?;
        let target = out.join(format!("{}.arrow", table.id()));
        // A sidecar of an earlier attempt never describes this attempt's files.
        remove_if_there(&diff_delta::sidecar_file(&target))?;
        let base_file = (base.anon.path.as_path(), base.anon.sha256.as_str());
        let info =
            wf_stores::delta::merge(&table, base_file, gone_keys, &changes.info.path, &target)?;
        keep_changes(&changes.info.path, &gone, &info, &base.anon.sha256)?;
        let _ = std::fs::remove_dir_all(&delta_dir);
        let mut originals = changes.originals;
        let earlier =
            std::fs::File::open(&base.originals).map_err(|e| staging(&base.originals, e))?;
        for h in crate::runs::words(earlier) {
            originals.push(h.map_err(|e| staging(&base.originals, e))?);
        }
        // The merged file holds the replaced run's rows too: the values that run wrote join the
        // changes' (a superset of the merged file's values: a hit among them is counted by
        // reading the file, so a row gone since counts nothing), or, where that run kept none,
        // the leak scan reads the file whole.
        let earlier = crate::anonymize::leak_scan::written_file(&base.originals, &table.id());
        let written = with_earlier_written(changes.written, &earlier)?;
        Ok(Ok(TableOut {
            info,
            originals,
            written,
            table: changes.table,
            fields: changes.fields,
        }))
    })
    .await?;
    merged.map_err(whole)
}

/// The hashes of the values the changes wrote, with those the replaced run wrote (`earlier`);
/// `Unknown` where either is.
fn with_earlier_written(changes: Written, earlier: &Path) -> Result<Written, AnonError> {
    match changes {
        Written::Hashes(mut h) if earlier.exists() => {
            let f = std::fs::File::open(earlier).map_err(|e| staging(earlier, e))?;
            for x in crate::runs::words(f) {
                h.push(x.map_err(|e| staging(earlier, e))?);
            }
            Ok(Written::Hashes(h))
        }
        _ => Ok(Written::Unknown),
    }
}

/// Keeps the anonymized changes and the gone keys beside the merged file, with the sidecar that
/// lets the load diff the table from them alone (`wf_stores::load::diff_delta`).
fn keep_changes(
    changes: &Path,
    gone: &Path,
    merged: &wf_stores::staging::FileInfo,
    base_sha256: &str,
) -> Result<(), AnonError> {
    let kept = diff_delta::changes_file(&merged.path);
    std::fs::rename(changes, &kept).map_err(|e| staging(&kept, e))?;
    let kept = diff_delta::gone_file(&merged.path);
    std::fs::copy(gone, &kept).map_err(|e| staging(&kept, e))?;
    diff_delta::write_sidecar(merged, base_sha256)?;
    Ok(())
}

fn remove_if_there(path: &Path) -> Result<(), AnonError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(staging(path, e)),
        _ => Ok(()),
    }
}

fn staging(path: &Path, e: std::io::Error) -> AnonError {
    AnonError::Staging(wf_stores::StoreError::Staging {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
