//! The row checks of one staged table, one type per kind over one small trait: each sees every
//! batch once (`on_batch`) and records its finding at the end (`finish`), so a table is read once
//! whatever the number of checks.

use super::cells::KeySet;
use super::cells::{hash_row, positions, set_id, show, tuple, LOOKUP};
use super::dups::DupFinder;
use super::rules::Severity;
use super::Tally;
use arrow_array::RecordBatch;
use std::collections::HashMap;
use wf_stores::schema::Table;
use wf_stores::snapshot::SnapshotReader;
use wf_stores::subset::Key;
use wf_stores::StoreError;

/// Distinct dangling references remembered per FK for the CERT lookup.
const MISSING_LIMIT: usize = 10_000;

/// Names a row in an example: its primary key, else its position.
pub(super) type Example<'a> = dyn Fn(&RecordBatch, usize) -> String + 'a;

/// One kind of check over the batches of one staged table.
pub(super) trait RowCheck: Send {
    /// Looks at one batch; batches come in file order.
    fn on_batch(&mut self, b: &RecordBatch, example: &Example<'_>);
    /// After the last batch: true when the check wants the batches once more (`on_batch_again`),
    /// to find examples of what it counted.
    fn end_of_pass(&mut self) -> Result<bool, StoreError> {
        Ok(false)
    }
    /// One batch of the second pass.
    fn on_batch_again(&mut self, _b: &RecordBatch) {}
    /// Records the finding for `table`.
    fn finish(self: Box<Self>, tally: &mut Tally, table: &str);
}

/// A foreign key of a staged table, as the checks see it.
pub(super) struct Fk {
    pub name: String,
    pub child: String,
    pub child_cols: Vec<String>,
    pub parent: String,
    pub parent_cols: Vec<String>,
}

/// NOT NULL column `name` (at `idx`) holds no NULL.
pub(super) struct NotNull {
    name: String,
    idx: usize,
    n: u64,
    ex: Vec<String>,
}

impl NotNull {
    /// The checks of every NOT NULL column of `ct` that the staging has.
    pub fn all(ct: &Table, first: &RecordBatch) -> Vec<Box<dyn RowCheck>> {
        ct.columns
            .iter()
            .filter(|c| !c.nullable)
            .filter_map(|c| {
                let idx = first.schema().index_of(&c.name).ok()?;
                let check = NotNull {
                    name: c.name.clone(),
                    idx,
                    n: 0,
                    ex: Vec::new(),
                };
                Some(Box::new(check) as Box<dyn RowCheck>)
            })
            .collect()
    }
}

impl RowCheck for NotNull {
    fn on_batch(&mut self, b: &RecordBatch, example: &Example<'_>) {
        let col = b.column(self.idx);
        if col.null_count() == 0 {
            return; // Arrow keeps the count: no row to look at
        }
        for r in (0..b.num_rows()).filter(|&r| col.is_null(r)) {
            self.n += 1;
            if self.ex.len() < super::EXAMPLES {
                self.ex.push(example(b, r));
            }
        }
    }

    fn finish(self: Box<Self>, tally: &mut Tally, table: &str) {
        let n = self.n;
        tally.check(
            "nullability",
            &format!("{} is not null", self.name),
            table,
            Severity::Error,
            n,
            self.ex,
            format!("{n} rows have NULL in NOT NULL column {}", self.name),
        );
    }
}

/// The primary key or a unique constraint holds within the subset. The keys' hashes are
/// compared by sorting, in bounded memory (see `dups`); the examples of a repeated key come from
/// a second pass, only when there is one.
pub(super) struct Unique {
    what: String,
    idx: Vec<usize>,
    seen: Option<DupFinder>,
    buf: String,
    n: u64,
    repeated: KeySet,
    ex: Vec<String>,
}

impl Unique {
    /// The checks of `ct`'s primary key and of its non-partial uniques (a partial unique index
    /// binds only the rows its predicate holds for: not checked here).
    pub fn all(ct: &Table, first: &RecordBatch) -> Vec<Box<dyn RowCheck>> {
        let mut colsets: Vec<(String, &Vec<String>)> = Vec::new();
        if !ct.primary_key.is_empty() {
            colsets.push(("primary key".into(), &ct.primary_key));
        }
        for u in ct.uniques.iter().filter(|u| !u.partial) {
            colsets.push((format!("unique {}", u.columns.join(",")), &u.columns));
        }
        colsets
            .into_iter()
            .filter_map(|(what, cols)| {
                let check = Unique {
                    what,
                    idx: positions(first, cols)?,
                    seen: Some(DupFinder::new()),
                    buf: String::new(),
                    n: 0,
                    repeated: KeySet::default(),
                    ex: Vec::new(),
                };
                Some(Box::new(check) as Box<dyn RowCheck>)
            })
            .collect()
    }
}

impl RowCheck for Unique {
    fn on_batch(&mut self, b: &RecordBatch, _: &Example<'_>) {
        let Some(seen) = self.seen.as_mut() else {
            return;
        };
        for r in 0..b.num_rows() {
            if let Some(h) = hash_row(b, &self.idx, r, &mut self.buf) {
                seen.push(h);
            }
        }
    }

    fn end_of_pass(&mut self) -> Result<bool, StoreError> {
        let Some(seen) = self.seen.take() else {
            return Ok(false);
        };
        let dups = seen
            .finish(super::EXAMPLES)
            .map_err(|e| StoreError::Staging {
                path: std::env::temp_dir(),
                message: format!(
                    "uniqueness check of {}: spilling key hashes: {e}",
                    self.what
                ),
            })?;
        self.n = dups.repeats;
        self.repeated = dups.some.into_iter().collect();
        Ok(!self.repeated.is_empty())
    }

    fn on_batch_again(&mut self, b: &RecordBatch) {
        for r in 0..b.num_rows() {
            if self.repeated.is_empty() {
                return;
            }
            let Some(h) = hash_row(b, &self.idx, r, &mut self.buf) else {
                continue;
            };
            if self.repeated.remove(&h) {
                self.ex.extend(tuple(b, &self.idx, r).map(|k| show(&k)));
            }
        }
    }

    fn finish(self: Box<Self>, tally: &mut Tally, table: &str) {
        let n = self.n;
        tally.check(
            "uniqueness",
            &self.what,
            table,
            Severity::Error,
            n,
            self.ex,
            format!("{n} duplicate values of {}", self.what),
        );
    }
}

/// A foreign key's references resolve: inside the subset first, then (`resolve`) against CERT
/// for what is not in it.
pub(super) struct References<'a> {
    fk: &'a Fk,
    idx: Vec<usize>,
    set: Option<&'a KeySet>,
    missing: HashMap<Key, u64>,
    overflow: u64,
    buf: String,
}

impl<'a> References<'a> {
    /// The reference checks of `table`'s foreign keys, against the subset's key `sets`.
    pub fn all(
        table: &str,
        fks: &'a [Fk],
        sets: &'a HashMap<String, KeySet>,
        first: &RecordBatch,
    ) -> Vec<References<'a>> {
        fks.iter()
            .filter(|f| f.child == table)
            .filter_map(|fk| {
                Some(References {
                    fk,
                    idx: positions(first, &fk.child_cols)?,
                    set: sets.get(&set_id(&fk.parent, &fk.parent_cols)),
                    missing: HashMap::new(),
                    overflow: 0,
                    buf: String::new(),
                })
            })
            .collect()
    }

    /// Looks the references missing from the subset up in CERT when the parent is in the same
    /// store (`same_store` maps that store's tables by id); returns the rows resolved there.
    pub async fn resolve<S: SnapshotReader + ?Sized>(
        &mut self,
        table: &str,
        same_store: &HashMap<String, Table>,
        snap: &mut S,
    ) -> Result<u64, StoreError> {
        let f = self.fk;
        let (parent_store, parent_name) = f.parent.split_once('.').unwrap_or(("", &f.parent));
        if self.missing.is_empty() || table.split('.').next() != Some(parent_store) {
            return Ok(0);
        }
        let Some(pt) = same_store.get(&f.parent).filter(|t| t.name == parent_name) else {
            return Ok(0);
        };
        let keys: Vec<Key> = self.missing.keys().cloned().collect();
        let mut resolved = 0;
        for chunk in keys.chunks(LOOKUP) {
            for found in snap
                .rows_in(pt, &f.parent_cols, chunk, &f.parent_cols)
                .await?
            {
                resolved += self.missing.remove(&found).unwrap_or(0);
            }
        }
        Ok(resolved)
    }
}

impl RowCheck for References<'_> {
    fn on_batch(&mut self, b: &RecordBatch, _: &Example<'_>) {
        for r in 0..b.num_rows() {
            let Some(h) = hash_row(b, &self.idx, r, &mut self.buf) else {
                continue;
            };
            if self.set.is_some_and(|s| s.contains(&h)) {
                continue;
            }
            let Some(k) = tuple(b, &self.idx, r) else {
                continue;
            };
            if self.missing.len() < MISSING_LIMIT || self.missing.contains_key(&k) {
                *self.missing.entry(k).or_default() += 1;
            } else {
                self.overflow += 1;
            }
        }
    }

    fn finish(self: Box<Self>, tally: &mut Tally, table: &str) {
        let f = self.fk;
        let n: u64 = self.missing.values().sum::<u64>() + self.overflow;
        let mut ex: Vec<String> = self.missing.keys().map(show).collect();
        ex.sort();
        tally.check(
            "referential_integrity",
            &format!("{} -> {}", f.name, f.parent),
            table,
            Severity::Error,
            n,
            ex,
            format!(
                "{n} rows reference {}({}) rows that are neither in the subset nor in CERT",
                f.parent,
                f.parent_cols.join(",")
            ),
        );
    }
}
