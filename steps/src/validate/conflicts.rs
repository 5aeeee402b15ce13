//! Conflicts with rows CERT already has: by primary key (an error for insert, information for the
//! other strategies, which replace or skip them) and by every other full unique constraint or
//! index (an error for every strategy: a CERT row holding the same unique value under another
//! key would make the load fail, or, skipped, silently keep CERT's row instead of the run's).

use super::cells::KeySet;
use super::cells::{batches, hash_key, positions, show, tuple, LOOKUP};
use super::rules::Severity;
use super::Tally;
use std::collections::HashMap;
use std::path::Path;
use wf_stores::extract::Snap;
use wf_stores::load::Strategy;
use wf_stores::schema::Table;
use wf_stores::snapshot::SnapshotReader;
use wf_stores::subset::Key;
use wf_stores::StoreError;

/// What the conflict checks of one staged table need.
pub(super) struct ConflictInput<'a> {
    pub table: &'a str,
    pub ct: &'a Table,
    pub path: &'a Path,
    /// The rows to check: the table's, or its changes alone (see `incremental`).
    pub rows: &'a Path,
    pub strategy: Strategy,
    pub reference: bool,
    /// Hashed keys this run loaded in earlier generations: the load replaces them.
    pub owned: Option<&'a KeySet>,
    /// Whole rows (hashed) the run a refresh replaces staged (`owned::replaced_rows`).
    pub unchanged: Option<&'a KeySet>,
}

/// Runs the primary-key and unique checks of one staged table against CERT.
pub(super) async fn check(
    tally: &mut Tally,
    snap: &mut Snap,
    inp: &ConflictInput<'_>,
) -> Result<(), StoreError> {
    let Some(first) = batches(inp.path)?.next().transpose()? else {
        return Ok(());
    };
    let pk_idx = positions(&first, &inp.ct.primary_key).unwrap_or_default();
    // An empty CERT table has nothing to conflict with: no lookups (the common, fresh-CERT case).
    if !snap.has_rows(inp.ct).await? {
        if !pk_idx.is_empty() {
            tally.check(
                "cert_conflicts",
                "rows not yet in CERT",
                inp.table,
                Severity::Info,
                0,
                vec![],
                String::new(),
            );
        }
        return Ok(());
    }
    if !pk_idx.is_empty() {
        by_primary_key(tally, snap, inp, &pk_idx).await?;
    }
    for u in inp.ct.uniques.iter().filter(|u| !u.partial) {
        let Some(u_idx) = positions(&first, &u.columns) else {
            continue;
        };
        by_unique(tally, snap, inp, &pk_idx, &u_idx, &u.columns).await?;
    }
    Ok(())
}

async fn by_primary_key(
    tally: &mut Tally,
    snap: &mut Snap,
    inp: &ConflictInput<'_>,
    pk_idx: &[usize],
) -> Result<(), StoreError> {
    let ct = inp.ct;
    let (mut n, mut ex) = (0u64, Vec::new());
    let mut batch: Vec<Key> = Vec::new();
    let mut buf = String::new();
    for b in batches(inp.rows)? {
        let b = &b?;
        for r in 0..b.num_rows() {
            // A key this run (or the run a refresh replaces) loaded is replaced by the load, in
            // CERT or not: no lookup. A refresh's rows are nearly all such keys, so they are
            // hashed in place (`hash_row` is `hash_key` of the tuple) and no tuple is built.
            let owned = inp.owned.is_some_and(|o| {
                super::cells::hash_row(b, pk_idx, r, &mut buf).is_some_and(|h| o.contains(&h))
            });
            if let Some(k) = (!owned).then(|| tuple(b, pk_idx, r)).flatten() {
                batch.push(k);
            }
            if batch.len() >= LOOKUP || (r + 1 == b.num_rows() && !batch.is_empty()) {
                for k in snap
                    .rows_in(ct, &ct.primary_key, &batch, &ct.primary_key)
                    .await?
                {
                    n += 1;
                    if ex.len() < super::EXAMPLES {
                        ex.push(show(&k));
                    }
                }
                batch.clear();
            }
        }
    }
    let sev = if inp.strategy == Strategy::Insert && !inp.reference {
        Severity::Error
    } else {
        Severity::Info
    };
    tally.check(
        "cert_conflicts",
        "rows not yet in CERT",
        inp.table,
        sev,
        n,
        ex,
        format!(
            "{n} rows already exist in CERT (strategy {:?})",
            inp.strategy
        ),
    );
    Ok(())
}

/// Whether staged row `r` is, every column alike, a row the run a refresh replaces loaded: its
/// unique values are those CERT's row of the same key holds (see `owned::replaced_rows`).
fn replaced_as_is(
    inp: &ConflictInput<'_>,
    b: &arrow_array::RecordBatch,
    pk_idx: &[usize],
    all: &[usize],
    r: usize,
    buf: &mut String,
) -> bool {
    let (Some(unchanged), Some(owned)) = (inp.unchanged, inp.owned) else {
        return false;
    };
    if pk_idx.is_empty() {
        return false;
    }
    let Some(pk) = super::cells::hash_row(b, pk_idx, r, buf) else {
        return false;
    };
    owned.contains(&pk) && unchanged.contains(&super::cells::hash_cells(b, all, r, buf))
}

/// Staged rows whose unique value CERT holds under another primary key (or at all, for a table
/// without one, unless the load replaces that row because the run owns it).
async fn by_unique(
    tally: &mut Tally,
    snap: &mut Snap,
    inp: &ConflictInput<'_>,
    pk_idx: &[usize],
    u_idx: &[usize],
    columns: &[String],
) -> Result<(), StoreError> {
    let ct = inp.ct;
    let mut project: Vec<String> = columns.to_vec();
    project.extend(ct.primary_key.iter().cloned());
    let (mut n, mut ex) = (0u64, Vec::new());
    // Unique value -> the staged row's primary key (empty without one).
    let mut batch: HashMap<Key, Key> = HashMap::new();
    let mut buf = String::new();
    for b in batches(inp.rows)? {
        let b = &b?;
        let all: Vec<usize> = (0..b.num_columns()).collect();
        for r in 0..b.num_rows() {
            // A row the replaced run loaded as it is holds CERT's values under its own key.
            let lookup = !replaced_as_is(inp, b, pk_idx, &all, r, &mut buf);
            if let Some(k) = tuple(b, u_idx, r).filter(|_| lookup) {
                let pk = tuple(b, pk_idx, r).unwrap_or_default();
                batch.insert(k, pk);
            }
            if batch.len() >= LOOKUP || (r + 1 == b.num_rows() && !batch.is_empty()) {
                let keys: Vec<Key> = batch.keys().cloned().collect();
                tally.unique_lookups += keys.len() as u64;
                for row in snap.rows_in(ct, columns, &keys, &project).await? {
                    let (value, cert_pk) = row.split_at(columns.len());
                    let cert_pk: Key = cert_pk.to_vec();
                    let same_row = !pk_idx.is_empty()
                        && batch.get(value).is_some_and(|staged| *staged == cert_pk);
                    let owned = !cert_pk.is_empty()
                        && inp.owned.is_some_and(|o| o.contains(&hash_key(&cert_pk)));
                    if same_row || owned {
                        continue;
                    }
                    n += 1;
                    if ex.len() < super::EXAMPLES {
                        ex.push(show(&value.to_vec()));
                    }
                }
                batch.clear();
            }
        }
    }
    let what = format!("unique {} not yet in CERT", columns.join(","));
    tally.check(
        "cert_conflicts",
        &what,
        inp.table,
        Severity::Error,
        n,
        ex,
        format!(
            "{n} rows carry a {} value CERT already holds in another row; the load would fail on it",
            columns.join(",")
        ),
    );
    Ok(())
}
