//! A refresh by difference written inside the load's transaction (see `diff` for what is
//! compared): the earlier run's manifests checked against its markers; per table, parents first,
//! its changed rows updated in place and its fresh rows written by the table's strategy; the
//! cycles' break columns set; the gone rows deleted, children first (break columns NULL first);
//! the earlier markers dropped. Changed rows are updated, not deleted and inserted again: a
//! delete would cascade to unchanged children, or be refused for them.

use super::dialect::{markers, Dialect, DELETE_MARKERS};
use super::diff_parts::TableDiff;
use super::{StoreLoad, Strategy, TableLoad, TableReport};
use crate::error::StoreError;
use crate::subset::{Key, KEY_BATCH};

/// Writes `diffs` (the new run's tables first, in `job`'s order); each of `job`'s tables' report
/// and the rows its marker counts (the rows the run owns after the load). `None` when the
/// earlier run's load is not in CERT (rolled back meanwhile): the caller writes `job` whole.
pub(crate) async fn write_in_tx<D: Dialect>(
    d: &mut D,
    job: &StoreLoad,
    earlier: &StoreLoad,
    diffs: &[TableDiff],
) -> Result<Option<Vec<(TableReport, u64)>>, StoreError> {
    let marked = markers(d, &earlier.store, &earlier.run_key).await?;
    if marked.is_empty() {
        return Ok(None);
    }
    super::manifest::check_manifests(
        &earlier.store,
        &earlier.tables,
        &earlier.manifest_dir,
        &marked,
    )?;
    d.before_tables(job).await?;
    let mut out = Vec::new();
    let mut breaks = Vec::new();
    for (n, t) in diffs.iter().enumerate().take(job.tables.len()) {
        let (report, owned) = write_table(d, job, n, t, &mut breaks).await?;
        out.push((report, owned));
    }
    for (t, keys) in breaks {
        d.set_break_columns(&t, keys.as_deref()).await?;
    }
    for t in diffs.iter().filter(|t| !t.load.deferred.is_empty()) {
        for chunk in t.gone.chunks(KEY_BATCH) {
            d.null_break_columns(&t.load, chunk).await?;
        }
    }
    // Children first, in the earlier load's order (only its tables have gone rows): a table the
    // new run has no rows of may be a parent of another's gone rows.
    for o in earlier.tables.iter().rev() {
        let Some(t) = diffs.iter().find(|t| t.load.table.name == o.table.name) else {
            continue;
        };
        for chunk in t.gone.chunks(D::DELETE_BATCH) {
            d.delete_keys(&t.load.table, chunk).await?;
        }
    }
    let dropped = d
        .conn()
        .rows(DELETE_MARKERS, &[&earlier.run_key], None)
        .await;
    dropped.map_err(|e| StoreError::from_sqlx(&job.store, e))?;
    d.after_tables(job).await?;
    Ok(Some(out))
}

/// One table's changed and fresh rows, and its manifest: every staged key for `insert`; else
/// the earlier run's keys staged again and the keys the fresh rows' strategy inserted. Its report
/// and the rows the run owns; what needs its break columns set goes to `breaks`.
async fn write_table<D: Dialect>(
    d: &mut D,
    job: &StoreLoad,
    n: usize,
    t: &TableDiff,
    breaks: &mut Vec<(TableLoad, Option<Vec<Key>>)>,
) -> Result<(TableReport, u64), StoreError> {
    let scratch = job.manifest_dir.join("difference");
    // The earlier run's rows, changed: updated by key (a table without a primary key has no
    // changed rows, its key being every column). Then the fresh rows, by the table's strategy.
    let updated = t.changed.as_ref().map(|file| TableLoad {
        file: file.clone(),
        strategy: Strategy::Upsert,
        ..t.load.clone()
    });
    let fresh = t.fresh.as_ref().map(|file| TableLoad {
        file: file.clone(),
        ..t.load.clone()
    });
    let mut inserted: Vec<Key> = Vec::new();
    for (i, part) in [(0, updated), (1, fresh)] {
        let Some(part) = part else { continue };
        let dir = scratch.join(if i == 0 { "changed" } else { "fresh" });
        let w = d.write_table(2 * n + i, &part, &dir).await?;
        if i == 1 && t.kept.is_some() {
            // Not `insert`: the keys the strategy did insert (CERT may have had the others).
            inserted = super::manifest::read_manifest(&dir, &part.table)?;
        }
        if !part.deferred.is_empty() {
            breaks.push((part, w.touched));
        }
    }
    let table = &t.load.table;
    let owned = match &t.kept {
        None => {
            super::manifest::copy_manifest(&job.manifest_dir, table, &t.load.file)?;
            t.staged_rows
        }
        Some(kept) => {
            let keys: Vec<Key> = kept.iter().cloned().chain(inserted).collect();
            super::manifest::write_manifest(&job.manifest_dir, table, &keys)?;
            keys.len() as u64
        }
    };
    let report = TableReport {
        table: table.id(),
        rows_in_file: t.staged_rows,
        inserted: t.written,
    };
    Ok((report, owned))
}
