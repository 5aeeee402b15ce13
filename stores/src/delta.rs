//! Reading only what changed, for `wf refresh --incremental` on a table with a change column
//! (`[[change_tracking]]`, issue 16): of the district's keys (the plan's key file), the keys the
//! replaced run did not stage are read whole (rows new to the district: inserted, moved in, a
//! parent newly needed), the others only where the change column is at or after the replaced
//! run's snapshot (less a lag); the replaced run's keys the plan no longer has are gone. The
//! anonymized changes are then merged into the replaced run's anonymized staging (`merge`), so
//! the stages after anonymize see the whole table as a full refresh would stage it.

use crate::error::StoreError;
use crate::extract::{staged_columns, TableFile, TableSink};
use crate::keyset::HashSet128;
use crate::keyset::{key_hash, key_hash_of, Key};
pub use crate::keyset::{read_hashes, write_hashes};
use crate::load::key_hash_at;
use crate::schema::Table;
use crate::snapshot::{Selection, Since, Snap};
use crate::staging::{arrow_schema, open, open_verified, staging_err, FileInfo, StagingWriter};
use crate::StoreKind;
use arrow_array::BooleanArray;
use std::path::Path;

/// Keys per read while splitting the plan's keys.
const DELTA_KEYS: usize = 5000;

/// Positions of `table`'s primary key columns in a staged file's schema.
fn key_idx(table: &Table, schema: &arrow_schema::Schema) -> Result<Vec<usize>, StoreError> {
    crate::load::key_positions(table, schema)
}

/// The key hashes of a staged file of `table` (read through its recorded digest).
pub fn staged_key_hashes(
    file: &Path,
    sha256: &str,
    table: &Table,
) -> Result<HashSet128, StoreError> {
    let reader = open_verified(file, sha256)?;
    let idx = key_idx(table, &reader.schema())?;
    let mut out = HashSet128::default();
    for b in reader {
        let b = b.map_err(|e| crate::staging::damaged(file, e))?;
        out.extend((0..b.num_rows()).map(|r| key_hash_at(&b, &idx, r)));
    }
    Ok(out)
}

/// What `extract_changed` read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeltaCounts {
    /// Rows whose key the replaced run did not stage.
    pub fresh: u64,
    /// Rows the replaced run staged whose change column says they changed.
    pub changed: u64,
    /// Keys the replaced run staged that the district no longer has.
    pub gone: u64,
}

/// Where the district's rows of a table are: the plan's key file, or a district column.
pub enum DistrictRows<'a> {
    Keys(&'a Path),
    Column { column: &'a str, value: &'a str },
}

/// Reads into the sink's file the district's rows (`rows`) that are new (their key not in
/// `earlier`, the replaced run's) or changed `since`; writes the hashes of `earlier`'s keys the
/// district no longer has to `gone`.
#[allow(clippy::too_many_arguments)]
pub async fn extract_changed(
    snap: &mut Snap,
    kind: StoreKind,
    table: &Table,
    rows: DistrictRows<'_>,
    mut earlier: HashSet128,
    since: &Since,
    sink: TableSink<'_>,
    gone: &Path,
) -> Result<(TableFile, DeltaCounts), StoreError> {
    let id = table.id();
    let cols = staged_columns(kind, table);
    let path = sink.dir.join(format!("{id}.arrow"));
    let schema = arrow_schema(&table.store, &table.name, &cols);
    let mut w = StagingWriter::create(&path, schema, sink.batch_rows)?;
    if let Some(p) = sink.progress {
        w.on_rows(p);
    }
    let key_cols = crate::subset::key_columns(table);
    let mut read = Reader {
        snap,
        table,
        cols: &cols,
        key_cols: &key_cols,
        since,
        w: &mut w,
        counts: DeltaCounts::default(),
    };
    match rows {
        DistrictRows::Keys(file) => {
            for chunk in crate::keyset::key_file_chunks(file, DELTA_KEYS)? {
                let (mut fresh, mut known) = (Vec::new(), Vec::new());
                for k in chunk? {
                    match earlier.remove(&key_hash(&k)) {
                        true => known.push(k),
                        false => fresh.push(k),
                    }
                }
                read.fresh(&fresh).await?;
                read.known(&known).await?;
            }
        }
        DistrictRows::Column { column, value } => {
            // The district's keys first (keys only), then its new rows by key, then the rows
            // changed since, by the district column (the new ones left out).
            let mut fresh: Vec<Key> = Vec::new();
            let mut split = |parts: &[Option<&[u8]>]| {
                if !earlier.remove(&key_hash_of(parts.iter().copied())) {
                    let text =
                        |p: &Option<&[u8]>| p.map(|b| String::from_utf8_lossy(b).into_owned());
                    fresh.push(parts.iter().map(text).collect());
                }
                Ok(())
            };
            read.snap
                .keys_eq(table, column, value, &key_cols, &mut split)
                .await?;
            for chunk in fresh.chunks(DELTA_KEYS) {
                read.fresh(chunk).await?;
            }
            let sel = Selection::EqSince {
                column,
                value,
                since,
                key_columns: &key_cols,
                except: &fresh,
            };
            read.counts.changed += read.snap.extract(table, sel, &cols, read.w).await?;
        }
    }
    let mut counts = read.counts;
    counts.gone = earlier.len() as u64;
    write_hashes(gone, earlier.into_iter())?;
    let file = w.finish()?;
    Ok((TableFile { table: id, file }, counts))
}

/// One table's rows read into one staging file, counted.
struct Reader<'r> {
    snap: &'r mut Snap,
    table: &'r Table,
    cols: &'r [crate::staging::StagedColumn],
    key_cols: &'r [String],
    since: &'r Since,
    w: &'r mut StagingWriter,
    counts: DeltaCounts,
}

impl Reader<'_> {
    /// The rows of `keys`, new to the district: read whole.
    async fn fresh(&mut self, keys: &[Key]) -> Result<(), StoreError> {
        if !keys.is_empty() {
            let sel = Selection::Keys {
                columns: self.key_cols,
                keys,
            };
            let n = self
                .snap
                .extract(self.table, sel, self.cols, self.w)
                .await?;
            self.counts.fresh += n;
        }
        Ok(())
    }

    /// The rows of `keys`, staged by the replaced run: read where they changed.
    async fn known(&mut self, keys: &[Key]) -> Result<(), StoreError> {
        if !keys.is_empty() {
            let sel = Selection::KeysSince {
                columns: self.key_cols,
                keys,
                since: self.since,
            };
            let n = self
                .snap
                .extract(self.table, sel, self.cols, self.w)
                .await?;
            self.counts.changed += n;
        }
        Ok(())
    }
}

/// Writes `out`: the rows of `base` (the replaced run's anonymized staging of `table`, read
/// through its digest) whose key is neither in `skip` (the gone keys) nor among `delta`'s, then `delta`'s rows
/// (the anonymized changes). Both must have the same columns.
pub fn merge(
    table: &Table,
    base: (&Path, &str),
    mut skip: HashSet128,
    delta: &Path,
    out: &Path,
) -> Result<FileInfo, StoreError> {
    // The changes are read twice (their keys, then their rows), never held whole.
    let changes = open(delta)?;
    let schema = changes.schema();
    let idx = key_idx(table, &schema)?;
    for b in changes {
        let b = b.map_err(|e| crate::staging::damaged(delta, e))?;
        skip.extend((0..b.num_rows()).map(|r| key_hash_at(&b, &idx, r)));
    }
    let earlier = open_verified(base.0, base.1)?;
    if earlier.schema().fields() != schema.fields() {
        return Err(staging_err(
            base.0,
            "the replaced run staged other columns than the changes have",
        ));
    }
    let mut w = StagingWriter::create(out, schema.clone(), 65_536)?;
    for b in earlier {
        let b = b.map_err(|e| crate::staging::damaged(base.0, e))?;
        let keep: BooleanArray = (0..b.num_rows())
            .map(|r| Some(!skip.contains(&key_hash_at(&b, &idx, r))))
            .collect();
        let kept = arrow_select::filter::filter_record_batch(&b, &keep)
            .map_err(|e| staging_err(base.0, e))?;
        if kept.num_rows() > 0 {
            w.push_batch(&kept)?;
        }
    }
    for b in open(delta)? {
        w.push_batch(&b.map_err(|e| crate::staging::damaged(delta, e))?)?;
    }
    w.finish()
}
