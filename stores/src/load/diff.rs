//! A refresh by difference (`wf refresh --incremental`, issue 16): instead of deleting every row
//! the earlier run loaded and loading the district again, the load compares the new anonymized
//! staging with the earlier run's, row by row by key, and in the same one transaction writes only
//! the rows that are new or changed (an upsert by key) and deletes the rows that are gone. Rows
//! that did not change are not touched, and CERT ends as a full replace leaves it: anonymization
//! is deterministic under the run's key, so an unchanged PROD row stages the same bytes.
//!
//! Only the earlier run's own rows (its manifests) count as before: a row of a `skip-existing`
//! reference table that CERT had already is not the run's, and a staged row whose key the earlier
//! run did not own is written by the table's strategy, as a whole refresh writes it. The
//! difference needs the earlier staging, unchanged (its digest): without it the store is replaced
//! whole, and the reason is logged. `diff_tx` writes the difference.

use super::diff_parts::{Part, RowHasher, TableDiff};
use super::{key_positions, StoreLoad, Strategy, TableLoad};
use crate::error::StoreError;
use crate::keyset::{HashMap128, HashSet128};
use crate::staging::{open, open_verified};
use crate::subset::Key;
use arrow_array::{BooleanArray, RecordBatch};
use std::path::Path;

/// The difference of `job` from the run it replaces, when it asked for one (`by_difference`) and
/// it is exact; otherwise `None`, the reason logged, and the store is replaced whole.
pub(crate) fn prepare(job: &StoreLoad) -> Option<Vec<TableDiff>> {
    let earlier = job.replaces.as_deref().filter(|_| job.by_difference)?;
    let why = match unusable(earlier) {
        Some(why) => why,
        None => match diff_tables(job, earlier, &job.manifest_dir.join("difference")) {
            Ok(diffs) => return Some(diffs),
            Err(e) => e.to_string(),
        },
    };
    tracing::warn!(store = %job.store, "replacing the district whole, not by difference: {why}");
    None
}

/// Why a store is replaced whole rather than by difference (`None`: it can be diffed).
fn unusable(earlier: &StoreLoad) -> Option<String> {
    let gone = earlier.tables.iter().find(|t| !t.file.exists());
    gone.map(|t| {
        format!(
            "the earlier run's staging {} is gone (purged)",
            t.file.display()
        )
    })
}

/// The difference of every table of `job` and `earlier` (parents first, as `job` orders them,
/// then the earlier run's tables the new run has no rows of), with changed rows written to `dir`.
pub(crate) fn diff_tables(
    job: &StoreLoad,
    earlier: &StoreLoad,
    dir: &Path,
) -> Result<Vec<TableDiff>, StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| staging_err(dir, e))?;
    let old = |name: &str| earlier.tables.iter().find(|t| t.table.name == name);
    let mut out = Vec::new();
    for t in &job.tables {
        if let Some(d) = old(&t.table.name).and_then(|o| by_delta(t, o, dir)) {
            out.push(d);
            continue;
        }
        let before = match old(&t.table.name) {
            Some(o) => Some((o, owned(earlier, o)?)),
            None => None,
        };
        out.push(diff_table(t, before, dir)?);
    }
    for o in &earlier.tables {
        if !job.tables.iter().any(|t| t.table.name == o.table.name) {
            let gone = super::manifest::read_manifest(&earlier.manifest_dir, &o.table)?;
            out.push(TableDiff {
                load: o.clone(),
                changed: None,
                fresh: None,
                written: 0,
                staged_rows: 0,
                kept: None,
                gone,
            });
        }
    }
    Ok(out)
}

/// `diff_delta::diff_by_delta`, or `None` (the table is compared whole) where it has no usable
/// sidecar or a file it names is damaged (logged).
fn by_delta(t: &TableLoad, o: &TableLoad, dir: &Path) -> Option<TableDiff> {
    match super::diff_delta::diff_by_delta(t, o, dir) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(table = %t.table.id(), "comparing the table whole, not from its changes: {e}");
            None
        }
    }
}

fn staging_err(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Staging {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Which of the earlier staging's rows the earlier run owns: every one for `insert`; else the
/// hashes of its manifest's keys (as text, see `keyset::key_hash`).
fn owned(earlier: &StoreLoad, o: &TableLoad) -> Result<Option<HashSet128>, StoreError> {
    if o.strategy == Strategy::Insert {
        return Ok(None);
    }
    let keys = super::manifest::read_manifest(&earlier.manifest_dir, &o.table)?;
    Ok(Some(keys.iter().map(crate::keyset::key_hash).collect()))
}

/// Calls `f` with every row of the earlier run's staging of `o` (its batch, key columns, row,
/// and the row's key and row hashes), read through its recorded digest.
fn each_earlier_row(
    o: &TableLoad,
    mut f: impl FnMut(&RecordBatch, &[usize], usize, (u128, u128)),
) -> Result<(), StoreError> {
    let reader = open_verified(&o.file, &o.sha256)?;
    let idx = key_positions(&o.table, &reader.schema())?;
    let mut h = RowHasher::default();
    for b in reader {
        let b = b.map_err(|e| crate::staging::damaged(&o.file, e))?;
        for (r, hashes) in h.batch(&b, &idx).into_iter().enumerate() {
            f(&b, &idx, r, hashes);
        }
    }
    Ok(())
}

/// The keys of `o`'s staged rows whose key hash is in `wanted`.
fn keys_of(o: &TableLoad, wanted: &HashSet128) -> Result<Vec<Key>, StoreError> {
    let mut keys = Vec::new();
    each_earlier_row(o, |b, idx, r, (k, _)| {
        if wanted.contains(&k) {
            keys.push(super::keys::key_of(b, idx, r));
        }
    })?;
    Ok(keys)
}

/// The row hash of every earlier staged row the earlier run owns whose key hash is in `range`,
/// by key hash (about 40 bytes a row, not its values).
fn rows_of(
    o: &TableLoad,
    owned: Option<&HashSet128>,
    range: &impl Fn(u128) -> bool,
) -> Result<HashMap128<u128>, StoreError> {
    let mut before = HashMap128::default();
    each_earlier_row(o, |b, idx, r, (k, row)| {
        let mine = range(k);
        if mine && owned.is_none_or(|w| w.contains(&super::keys::key_hash_at(b, idx, r))) {
            before.insert(k, row);
        }
    })?;
    Ok(before)
}

/// Rows of a staging file (read through its recorded digest).
fn rows_in(o: &TableLoad) -> Result<u64, StoreError> {
    let mut n = 0;
    for b in open_verified(&o.file, &o.sha256)? {
        n += b
            .map_err(|e| crate::staging::damaged(&o.file, e))?
            .num_rows() as u64;
    }
    Ok(n)
}

/// Earlier rows compared at once: the table is compared in as many passes, each over one range
/// of key hashes (`WF_DIFF_MEMORY_ROWS`, 2,000,000 by default: about 80 MB).
pub fn budget() -> u64 {
    std::env::var("WF_DIFF_MEMORY_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n: &u64| *n > 0)
        .unwrap_or(2_000_000)
}

/// One table's difference from the earlier run's owned rows `before` (none for a table it did
/// not load): rows it owned staged with other values are changed, rows it did not own are fresh,
/// the keys it owned and the new staging lacks are gone. Compared range by range of key hashes
/// (see `budget`); every pass appends to the same changed and fresh files.
pub(super) fn diff_table(
    t: &TableLoad,
    before: Option<(&TableLoad, Option<HashSet128>)>,
    dir: &Path,
) -> Result<TableDiff, StoreError> {
    let passes = match &before {
        Some((o, _)) => rows_in(o)?.div_ceil(budget()).max(1),
        None => 1,
    };
    let file = |kind: &str| Part::new(dir.join(format!("{}.{kind}.arrow", t.table.id())));
    let (mut changed, mut fresh) = (file("changed"), file("fresh"));
    let mut kept = (t.strategy != Strategy::Insert).then(Vec::new);
    let (mut written, mut staged_rows) = (0u64, 0u64);
    let mut gone: HashSet128 = HashSet128::default();
    for pass in 0..passes {
        let (lo, hi) = crate::keyset::hash_range(pass, passes);
        let in_range = |k: u128| (lo..=hi).contains(&((k >> 64) as u64));
        let mut rows = match &before {
            Some((o, owned)) => rows_of(o, owned.as_ref(), &in_range)?,
            None => HashMap128::default(),
        };
        let reader = open(&t.file)?;
        let idx = key_positions(&t.table, &reader.schema())?;
        let mut h = RowHasher::default();
        for b in reader {
            let b = b.map_err(|e| crate::staging::damaged(&t.file, e))?;
            let (mut is_changed, mut is_fresh) = (Vec::new(), Vec::new());
            for (r, (k, row)) in h.batch(&b, &idx).into_iter().enumerate() {
                let mine = in_range(k);
                let was = if mine { rows.remove(&k) } else { None };
                if let (Some(_), Some(kept)) = (was, kept.as_mut()) {
                    kept.push(super::keys::key_of(&b, &idx, r));
                }
                staged_rows += u64::from(mine);
                is_changed.push(was.is_some_and(|w| w != row));
                is_fresh.push(mine && was.is_none());
            }
            written += changed.push(&b, &BooleanArray::from(is_changed))?;
            written += fresh.push(&b, &BooleanArray::from(is_fresh))?;
        }
        gone.extend(rows.into_keys());
    }
    let gone = match before {
        Some((o, _)) if !gone.is_empty() => keys_of(o, &gone)?,
        _ => Vec::new(),
    };
    Ok(TableDiff {
        load: t.clone(),
        changed: changed.finish()?,
        fresh: fresh.finish()?,
        written,
        staged_rows,
        kept,
        gone,
    })
}
