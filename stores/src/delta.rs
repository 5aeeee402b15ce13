//! Reading only what changed, for `wf refresh --incremental` on a table with a change column
//! (`[[change_tracking]]`, issue 16): of the district's keys (the plan's key file), the keys the
//! replaced run did not stage are read whole (rows new to the district: inserted, moved in, a
//! parent newly needed), the others only where the change column is at or after the replaced
//! run's snapshot (less a lag) — by their keys, or, where they are much of the table, by one
//! scan of its changed rows; the replaced run's keys the plan no longer has are gone. The
//! anonymized changes are then merged into the replaced run's anonymized staging (`merge`), so
//! the stages after anonymize see the whole table as a full refresh would stage it.

use crate::error::StoreError;
use crate::extract::{staged_columns, TableFile, TableSink};
use crate::hash_file::HashWriter;
pub use crate::hash_file::{read_hashes, write_hashes};
use crate::key_spill::KeySpill;
use crate::keyset::HashSet128;
use crate::keyset::{key_hash, key_hash_of, key_of_parts, range_of, Key};
use crate::load::key_hashes;
use crate::schema::Table;
use crate::snapshot::{Selection, Since, Snap};
use crate::staging::{arrow_schema, open, open_verified, staging_err, FileInfo, StagingWriter};
use crate::StoreKind;
use arrow_array::BooleanArray;
use std::path::Path;

/// Keys per read while splitting the plan's keys.
const DELTA_KEYS: usize = 5000;

/// A table at most this many times its district's earlier keys is scanned for its changed rows
/// (see `Reader::scan_pays`).
const SCAN_RATIO: u64 = 20;

/// Files the district's keys outside the first pass wait in, at most.
const SPILLS: u64 = 16;

/// Positions of `table`'s primary key columns in a staged file's schema.
fn key_idx(table: &Table, schema: &arrow_schema::Schema) -> Result<Vec<usize>, StoreError> {
    crate::load::key_positions(table, schema)
}

/// The key hashes of a staged file of `table` (read through its recorded digest) that fall in
/// range `pass` of `passes` (see `pass_of`).
fn staged_key_hashes(
    file: &Path,
    sha256: &str,
    table: &Table,
    (pass, passes): (u64, u64),
) -> Result<HashSet128, StoreError> {
    let reader = open_verified(file, sha256)?;
    let idx = key_idx(table, &reader.schema())?;
    let mut out = HashSet128::default();
    for b in reader {
        let b = b.map_err(|e| crate::staging::damaged(file, e))?;
        let hashes = key_hashes(&b, &idx).into_iter();
        out.extend(hashes.filter(|h| pass_of(*h, passes) == pass));
    }
    Ok(out)
}

/// The pass of `passes` that compares key hash `h` (by its top 64 bits, as the load's diff).
fn pass_of(h: u128, passes: u64) -> u64 {
    range_of((h >> 64) as u64, passes)
}

/// The spill the keys of pass `p` (from 1) wait in: few files open, each read once per pass it
/// holds.
fn spill_of(p: u64) -> usize {
    ((p - 1) % SPILLS) as usize
}

/// The replaced run's staging of a table: its keys are what the district's keys are compared
/// with, at most `WF_DIFF_MEMORY_ROWS` of them in memory at once (a larger table is compared in
/// as many passes, each over one range of key hashes).
pub struct Earlier<'a> {
    pub file: &'a Path,
    pub sha256: &'a str,
    pub rows: u64,
}

impl Earlier<'_> {
    fn passes(&self) -> u64 {
        self.rows.div_ceil(crate::load::diff_memory_rows()).max(1)
    }

    fn keys(&self, table: &Table, pass: u64, passes: u64) -> Result<HashSet128, StoreError> {
        staged_key_hashes(self.file, self.sha256, table, (pass, passes))
    }
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
    earlier: Earlier<'_>,
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
    let mut gone_w = HashWriter::create(gone)?;
    if earlier.passes() > 1 {
        tracing::info!(table = %id, "compared with the replaced run's {} keys in {} passes (WF_DIFF_MEMORY_ROWS at once)", earlier.rows, earlier.passes());
    }
    match rows {
        DistrictRows::Keys(file) => read.by_key_file(file, &earlier, &mut gone_w).await?,
        DistrictRows::Column { column, value } => {
            read.by_column(column, value, &earlier, sink.dir, &mut gone_w)
                .await?
        }
    }
    let counts = read.counts;
    gone_w.finish()?;
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
    /// The district's keys from the plan's key file, read once per pass: those `earlier` has
    /// are read where they changed, the others whole; `earlier`'s keys not met are gone.
    async fn by_key_file(
        &mut self,
        file: &Path,
        earlier: &Earlier<'_>,
        gone: &mut HashWriter,
    ) -> Result<(), StoreError> {
        let passes = earlier.passes();
        let scan = self.scan_pays(earlier.rows).await?;
        for pass in 0..passes {
            let mut before = earlier.keys(self.table, pass, passes)?;
            let mut kept = HashSet128::default();
            for chunk in crate::keyset::key_file_chunks(file, DELTA_KEYS)? {
                let (mut fresh, mut known) = (Vec::new(), Vec::new());
                for k in chunk? {
                    let h = key_hash(&k);
                    if pass_of(h, passes) != pass {
                        continue;
                    }
                    match before.remove(&h) {
                        true if scan => _ = kept.insert(h),
                        true => known.push(k),
                        false => fresh.push(k),
                    }
                }
                self.fresh(&fresh).await?;
                self.known(&known).await?;
            }
            if scan {
                self.changed_among(&kept).await?;
            }
            self.gone(before, gone)?;
        }
        Ok(())
    }

    /// Whether the rows changed among `known` keys are better found by one scan of the table
    /// (`changed_among`) than by asking for the keys a batch at a time: when they are at least
    /// 1/`SCAN_RATIO` of the table, by the engine's estimate. A key lookup costs PostgreSQL
    /// about 10 µs, a row scanned well under 1 µs (ids.student_guardians at scale 100: 180,000
    /// keys of 227,000 rows, 1.7 s by key).
    async fn scan_pays(&mut self, known: u64) -> Result<bool, StoreError> {
        let estimate = self.snap.estimated_rows(self.table).await?;
        let scan = estimate.is_some_and(|n| n <= known.saturating_mul(SCAN_RATIO));
        if scan {
            tracing::info!(table = %self.table.id(), "rows changed among the district's {known} earlier keys found by one scan of the table (about {} rows)", estimate.unwrap_or(0));
        }
        Ok(scan)
    }

    /// The rows whose key hash is in `known` and that changed since: their keys by one scan of
    /// the table's changed rows, then their rows by key.
    async fn changed_among(&mut self, known: &HashSet128) -> Result<(), StoreError> {
        let mut hit: Vec<Key> = Vec::new();
        let mut keep = |parts: &[Option<&[u8]>]| {
            if known.contains(&key_hash_of(parts.iter().copied())) {
                hit.push(key_of_parts(parts));
            }
            Ok(())
        };
        self.snap
            .keys_since(self.table, self.since, self.key_cols, &mut keep)
            .await?;
        for chunk in hit.chunks(DELTA_KEYS) {
            self.known(chunk).await?;
        }
        Ok(())
    }

    /// The district's keys first (keys only, read from PROD once), then its new rows by key,
    /// then the rows changed since, by the district column (the new ones left out). The keys
    /// outside the first pass's range wait on disk for theirs (see `key_spill`).
    async fn by_column(
        &mut self,
        column: &str,
        value: &str,
        earlier: &Earlier<'_>,
        dir: &Path,
        gone: &mut HashWriter,
    ) -> Result<(), StoreError> {
        let passes = earlier.passes();
        let mut before = earlier.keys(self.table, 0, passes)?;
        let mut later: Vec<KeySpill> = (1..passes.min(SPILLS + 1))
            .map(|_| KeySpill::new(dir))
            .collect::<Result<_, _>>()?;
        let mut fresh: Vec<Key> = Vec::new();
        let mut split = |parts: &[Option<&[u8]>]| {
            let h = key_hash_of(parts.iter().copied());
            match pass_of(h, passes) {
                0 if !before.remove(&h) => fresh.push(key_of_parts(parts)),
                0 => {}
                p => later[spill_of(p)].push(h, parts)?,
            }
            Ok(())
        };
        self.snap
            .keys_eq(self.table, column, value, self.key_cols, &mut split)
            .await?;
        self.gone(before, gone)?;
        for pass in 1..passes {
            let mut before = earlier.keys(self.table, pass, passes)?;
            let new = |h| pass_of(h, passes) == pass && !before.remove(&h);
            for k in later[spill_of(pass)].keys(new)? {
                fresh.push(k?.1);
            }
            self.gone(before, gone)?;
        }
        for chunk in fresh.chunks(DELTA_KEYS) {
            self.fresh(chunk).await?;
        }
        let sel = Selection::EqSince {
            column,
            value,
            since: self.since,
            key_columns: self.key_cols,
            except: &fresh,
        };
        self.counts.changed += self
            .snap
            .extract(self.table, sel, self.cols, self.w)
            .await?;
        Ok(())
    }

    /// The replaced run's keys of one pass the district no longer has.
    fn gone(&mut self, left: HashSet128, out: &mut HashWriter) -> Result<(), StoreError> {
        self.counts.gone += left.len() as u64;
        left.into_iter().try_for_each(|h| out.push(h))
    }

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
        skip.extend(key_hashes(&b, &idx));
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
        let keep: BooleanArray = key_hashes(&b, &idx)
            .iter()
            .map(|h| Some(!skip.contains(h)))
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
