//! The difference of a table read by difference (`wf refresh --incremental` on a table with a
//! change column) from the changes alone. Its anonymized staging is the earlier run's with the
//! gone keys and the changes' keys taken out and the changes appended (`delta::merge`), so what
//! a whole comparison would find is known from the changes: a change whose key the earlier run
//! staged is changed (or, the same bytes, untouched), any other is fresh, and the gone keys the
//! changes do not bring back are gone. The earlier staging is read once for its keys, and only
//! the rows the changes replace are hashed whole, instead of hashing every row of both files.
//!
//! The merge leaves a sidecar beside the merged file (`<table>.delta.json`) naming the digests of
//! the merged file, the earlier staging it started from, the changes and the gone keys; the load
//! uses it only when every digest matches, else it compares the files whole.

use super::diff_parts::{Part, RowHasher, TableDiff};
use super::keys::{key_hashes, key_of, key_positions};
use super::{Strategy, TableLoad};
use crate::error::StoreError;
use crate::keyset::{HashMap128, HashSet128};
use crate::staging::{open_verified, staging_err, FileInfo};
use arrow_array::BooleanArray;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What a merge of changes into an earlier staging left beside the merged file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sidecar {
    /// The merged file's digest (the anonymize step journals the same).
    pub merged_sha256: String,
    /// The earlier run's staging the merge started from.
    pub base_sha256: String,
    /// The anonymized changes, beside the merged file (`changes_file`).
    pub changes_sha256: String,
    /// The key hashes the earlier run staged and the district no longer has (`gone_file`).
    pub gone_sha256: String,
}

/// `<dir>/<table>.delta.json` for the merged file `<dir>/<table>.arrow`.
pub fn sidecar_file(merged: &Path) -> PathBuf {
    merged.with_extension("delta.json")
}

/// Where the merge keeps the anonymized changes.
pub fn changes_file(merged: &Path) -> PathBuf {
    merged.with_extension("changes.arrow")
}

/// Where the merge keeps the gone key hashes (16 bytes each, as `delta::write_hashes` writes).
pub fn gone_file(merged: &Path) -> PathBuf {
    merged.with_extension("gone")
}

/// Writes the sidecar of `merged` (made from the earlier staging of digest `base_sha256`, with
/// `changes_file` and `gone_file` in place), synced and renamed into place.
pub fn write_sidecar(merged: &FileInfo, base_sha256: &str) -> Result<(), StoreError> {
    let sc = Sidecar {
        merged_sha256: merged.sha256.clone(),
        base_sha256: base_sha256.to_string(),
        changes_sha256: file_digest(&changes_file(&merged.path), None)?,
        gone_sha256: file_digest(&gone_file(&merged.path), None)?,
    };
    let path = sidecar_file(&merged.path);
    let partial = path.with_extension("partial");
    let text = serde_json::to_vec(&sc).map_err(|e| staging_err(&path, e))?;
    let err = |e: std::io::Error| staging_err(&partial, e);
    let mut f = std::fs::File::create(&partial).map_err(err)?;
    f.write_all(&text).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&partial, &path).map_err(|e| staging_err(&path, e))
}

/// A file's digest (`wf_engine::digest`, as staging files are checked), or of the kind of
/// `like`.
fn file_digest(path: &Path, like: Option<&str>) -> Result<String, StoreError> {
    wf_engine::digest::file(path, like).map_err(|e| staging_err(path, e))
}

/// The sidecar of `t`'s staging when it was merged from `earlier`'s (both loaded by `insert`,
/// so the earlier run owns every row it staged) and its files are as it names them.
fn usable(t: &TableLoad, earlier: &TableLoad) -> Option<Sidecar> {
    if t.strategy != Strategy::Insert || earlier.strategy != Strategy::Insert {
        return None;
    }
    // No sidecar: the table was not read by difference.
    let text = std::fs::read(sidecar_file(&t.file)).ok()?;
    let sc = serde_json::from_slice::<Sidecar>(&text)
        .ok()
        .filter(|sc| sc.merged_sha256 == t.sha256 && sc.base_sha256 == earlier.sha256);
    if sc.is_none() {
        tracing::info!(table = %t.table.id(), "comparing the table whole: its merge's sidecar does not describe this staging and the replaced run's");
    }
    sc
}

/// `t`'s difference from `earlier` from its changes (see the module), or `None` when it has no
/// usable sidecar; an error when a file the sidecar names is not what it says.
pub(crate) fn diff_by_delta(
    t: &TableLoad,
    earlier: &TableLoad,
    dir: &Path,
) -> Result<Option<TableDiff>, StoreError> {
    let Some(sc) = usable(t, earlier) else {
        return Ok(None);
    };
    let (changes, gone_path) = (changes_file(&t.file), gone_file(&t.file));
    let gone = read_gone(&gone_path, &sc.gone_sha256)?;
    // The changes' keys.
    let mut changed_keys = HashSet128::default();
    let mut change_rows = 0u64;
    for b in open_verified(&changes, &sc.changes_sha256)? {
        let b = b.map_err(|e| crate::staging::damaged(&changes, e))?;
        let idx = key_positions(&t.table, &b.schema())?;
        change_rows += b.num_rows() as u64;
        changed_keys.extend(key_hashes(&b, &idx));
    }
    // The earlier staging: its rows the changes replace (hashed whole), and its gone keys.
    let mut before: HashMap128<u128> = HashMap128::default();
    let (mut earlier_rows, mut replaced) = (0u64, 0u64);
    let mut gone_keys = Vec::new();
    let mut hasher = RowHasher::default();
    for b in open_verified(&earlier.file, &earlier.sha256)? {
        let b = b.map_err(|e| crate::staging::damaged(&earlier.file, e))?;
        let idx = key_positions(&earlier.table, &b.schema())?;
        earlier_rows += b.num_rows() as u64;
        let mut hit = Vec::with_capacity(b.num_rows());
        for (r, k) in key_hashes(&b, &idx).into_iter().enumerate() {
            let replaced_now = changed_keys.contains(&k);
            if !replaced_now && gone.contains(&k) {
                gone_keys.push(key_of(&b, &idx, r));
            }
            hit.push(replaced_now);
        }
        let hit = BooleanArray::from(hit);
        if hit.true_count() == 0 {
            continue;
        }
        replaced += hit.true_count() as u64;
        let part = arrow_select::filter::filter_record_batch(&b, &hit)
            .map_err(|e| staging_err(&earlier.file, e))?;
        before.extend(
            hasher
                .batch(&part, &idx)
                .into_iter()
                .zip(key_hashes(&part, &idx))
                .map(|((_, row), k)| (k, row)),
        );
    }
    let file = |kind: &str| Part::new(dir.join(format!("{}.{kind}.arrow", t.table.id())));
    let (mut changed, mut fresh) = (file("changed"), file("fresh"));
    let mut written = 0u64;
    let mut hasher = RowHasher::default();
    for b in open_verified(&changes, &sc.changes_sha256)? {
        let b = b.map_err(|e| crate::staging::damaged(&changes, e))?;
        let idx = key_positions(&t.table, &b.schema())?;
        let (mut is_changed, mut is_fresh) = (Vec::new(), Vec::new());
        let keys = key_hashes(&b, &idx);
        for ((_, row), k) in hasher.batch(&b, &idx).into_iter().zip(keys) {
            let was = before.get(&k);
            is_changed.push(was.is_some_and(|w| *w != row));
            is_fresh.push(was.is_none());
        }
        written += changed.push(&b, &BooleanArray::from(is_changed))?;
        written += fresh.push(&b, &BooleanArray::from(is_fresh))?;
    }
    // Disjoint by construction (a gone key the changes bring back is not gone); a file whose keys
    // repeat would break that, and is compared whole instead.
    let Some(kept) = earlier_rows.checked_sub(replaced + gone_keys.len() as u64) else {
        return Err(staging_err(&earlier.file, "its keys repeat"));
    };
    let staged_rows = kept + change_rows;
    tracing::info!(table = %t.table.id(), "compared from its {change_rows} changes and {} gone keys, not row by row", gone.len());
    Ok(Some(TableDiff {
        load: t.clone(),
        changed: changed.finish()?,
        fresh: fresh.finish()?,
        written,
        staged_rows,
        kept: None,
        gone: gone_keys,
    }))
}

/// The gone key hashes, checked against their digest.
fn read_gone(path: &Path, sha256: &str) -> Result<HashSet128, StoreError> {
    if file_digest(path, Some(sha256))? != sha256 {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            message: "the gone keys' file does not match the digest its merge recorded".into(),
        });
    }
    crate::hash_file::read_hashes(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Column, Table};
    use crate::staging::{arrow_schema, ColType, StagedColumn, StagingWriter};
    use arrow_array::{Array, Int64Array, RecordBatch, StringArray};
    use std::sync::Arc;

    fn table() -> Table {
        let col = |name: &str, t: &str| Column {
            name: name.into(),
            data_type: t.into(),
            nullable: name != "id",
            default: None,
        };
        Table {
            store: "s".into(),
            name: "t".into(),
            columns: vec![col("id", "bigint"), col("v", "text")],
            primary_key: vec!["id".into()],
            uniques: Vec::new(),
            foreign_keys: Vec::new(),
            row_count: 0,
        }
    }

    fn write(path: &Path, rows: &[(i64, &str)]) -> FileInfo {
        let cols = [("id", ColType::Int, "bigint"), ("v", ColType::Text, "text")].map(
            |(name, col_type, t)| StagedColumn {
                name: name.into(),
                source_type: t.into(),
                col_type,
            },
        );
        let schema = arrow_schema("s", "t", &cols);
        let mut w = StagingWriter::create(path, schema.clone(), 64).unwrap();
        // Several batches, so keys and rows are matched across them.
        for chunk in rows.chunks(300) {
            let ids = Int64Array::from(chunk.iter().map(|r| r.0).collect::<Vec<_>>());
            let vs = StringArray::from(chunk.iter().map(|r| r.1).collect::<Vec<_>>());
            let b =
                RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(vs)]).unwrap();
            w.push_batch(&b).unwrap();
        }
        w.finish().unwrap()
    }

    fn load(info: &FileInfo) -> TableLoad {
        TableLoad {
            table: table(),
            file: info.path.clone(),
            sha256: info.sha256.clone(),
            strategy: Strategy::Insert,
            deferred: Vec::new(),
        }
    }

    /// The rows of an optional part file, sorted.
    fn rows(part: &Option<PathBuf>) -> Vec<(i64, String)> {
        let mut out = Vec::new();
        for b in part.iter().flat_map(|p| crate::staging::open(p).unwrap()) {
            let b = b.unwrap();
            let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let vs = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
            for r in 0..b.num_rows() {
                out.push((ids.value(r), vs.value(r).to_string()));
            }
        }
        out.sort();
        out
    }

    /// The difference from the changes is the whole comparison's, row for row: untouched,
    /// changed, fresh, gone, a gone key the changes bring back; a changes file that is not what
    /// its sidecar says is an error, and a sidecar of another earlier staging is not used.
    #[test]
    fn the_difference_from_the_changes_is_the_whole_comparisons() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let earlier: Vec<(i64, String)> = (1..=1000).map(|i| (i, format!("v{i}"))).collect();
        let e_rows: Vec<(i64, &str)> = earlier.iter().map(|(i, v)| (*i, v.as_str())).collect();
        let e = write(&d.join("earlier.arrow"), &e_rows);
        // 5 as it was, 6 and 700 changed (6 also among the gone keys), 2001 and 2002 new.
        let changes = [
            (5, "v5"),
            (6, "six"),
            (700, "seven hundred"),
            (2001, "a"),
            (2002, "b"),
        ];
        let staged_changes = write(&d.join("changes.arrow"), &changes);
        let key = |i: i64| crate::keyset::key_hash(&vec![Some(i.to_string())]);
        let gone: HashSet128 = [6, 10, 11, 999].map(key).into_iter().collect();
        let merged = d.join("m").join("s.t.arrow");
        std::fs::create_dir_all(merged.parent().unwrap()).unwrap();
        let table = table();
        let m = crate::delta::merge(
            &table,
            (&e.path, &e.sha256),
            gone.clone(),
            &staged_changes.path,
            &merged,
        )
        .unwrap();
        std::fs::rename(&staged_changes.path, changes_file(&m.path)).unwrap();
        crate::hash_file::write_hashes(&gone_file(&m.path), gone.iter().copied()).unwrap();
        write_sidecar(&m, &e.sha256).unwrap();
        let (t, o) = (load(&m), load(&e));
        let (a, b) = (d.join("a"), d.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let fast = diff_by_delta(&t, &o, &a)
            .unwrap()
            .expect("a usable sidecar");
        let whole = super::super::diff::diff_table(&t, Some((&o, None)), &b).unwrap();
        assert_eq!(rows(&fast.changed), rows(&whole.changed));
        assert_eq!(
            rows(&fast.changed),
            vec![(6, "six".into()), (700, "seven hundred".into())]
        );
        assert_eq!(rows(&fast.fresh), rows(&whole.fresh));
        assert_eq!(rows(&fast.fresh).len(), 2);
        let (mut g1, mut g2) = (fast.gone.clone(), whole.gone.clone());
        g1.sort();
        g2.sort();
        assert_eq!(g1, g2);
        assert_eq!(g1.len(), 3, "10, 11 and 999: 6 is staged again");
        assert_eq!(
            (fast.written, fast.staged_rows),
            (whole.written, whole.staged_rows)
        );
        assert_eq!(fast.staged_rows, 999, "1000 - 3 gone + 2 new");
        assert_eq!((fast.kept, whole.kept), (None, None));

        // A sidecar made from another earlier staging is not used.
        let other = write(&d.join("other.arrow"), &e_rows[..10]);
        assert!(diff_by_delta(&t, &load(&other), &a).unwrap().is_none());
        // Changes that are not the merged ones: an error naming the file.
        let bytes = std::fs::read(changes_file(&m.path)).unwrap();
        let mut flipped = bytes.clone();
        let at = flipped.len() / 2;
        flipped[at] ^= 0x40;
        std::fs::write(changes_file(&m.path), &flipped).unwrap();
        let err = diff_by_delta(&t, &o, &a)
            .err()
            .expect("a damaged changes file");
        assert!(err.to_string().contains("changes.arrow"), "{err}");
    }
}
