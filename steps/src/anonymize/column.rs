//! Column-wise transforms: one Arrow array in, one out. Repeated values are transformed once per
//! worker thread (a memo), and keyed hashes of the originals are collected for the leak scan.

use super::detect::Detector;
use super::input::{rule_field, AnonError, TableInput};
use super::key::AnonKey;
use super::leak::{leak_hash, tagged, LEAK_MIN_LEN};
use super::leak::{leak_scanned, tag_id, tags_of};
use super::rules::Rules;
use super::rules::{Rule, Strategy};
use super::strategy::{
    fake, hmac_int, hmac_text_into, mask, mask_into, shift_by, shift_offset, FakeKind,
};
use arrow_array::builder::{BinaryBuilder, Int64Builder, StringBuilder};
use arrow_array::{new_null_array, Array, ArrayRef, BinaryArray, Int64Array, StringArray};
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;
use wf_stores::staging::ColType;
use wf_stores::staging::StagedColumn;

type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;

/// Distinct values remembered per column and worker.
const MEMO_LIMIT: usize = 100_000;

/// How one column is anonymized.
pub(super) struct Plan<'a> {
    pub field: String,
    pub rule: Option<&'a Rule>,
    pub col_type: ColType,
    /// Column index of the `shift_date` entity.
    pub entity: Option<usize>,
    /// Whether originals go into the leak set.
    pub leak_scanned: bool,
    /// Whether the text written is scanned for originals (passed through, or by a rule whose
    /// outputs cannot be real values: see `leak::outputs_scanned`).
    pub outputs_scanned: bool,
    /// The ids of the field's leak-scan domains (see `leak`): each original is kept once per domain.
    pub leak_tags: Vec<u64>,
    /// Suffix numbers for originals (by keyed hash) whose outputs collided in a unique column
    /// under this column's rule.
    pub unique_fix: Option<&'a HashMap<u64, usize>>,
}

impl Plan<'_> {
    /// Records `text` as an original of each of the field's domains, when the field is scanned.
    fn original(&self, key: &AnonKey, text: &str, originals: &mut Hashes) {
        if self.leak_scanned && text.len() >= LEAK_MIN_LEN {
            let h = leak_hash(key, text);
            for t in &self.leak_tags {
                originals.push(tagged(h, *t));
            }
        }
    }

    /// Records written `text` in each of the field's domains, when its outputs are scanned: the
    /// leak scan looks these up among the originals instead of reading the written file again.
    #[inline]
    fn output(&self, key: &AnonKey, text: &str, outputs: &mut Hashes) {
        if self.outputs_scanned && text.len() >= LEAK_MIN_LEN {
            let h = leak_hash(key, text);
            for t in &self.leak_tags {
                outputs.push(tagged(h, *t));
            }
        }
    }
}

/// The keyed hashes a worker gathers: of the originals it transformed, and of the distinct
/// values it wrote to scanned fields (each once per worker: a repeat served by the memo is not
/// hashed again).
#[derive(Default)]
pub struct Seen {
    pub originals: Hashes,
    pub outputs: Hashes,
}

/// What one worker thread keeps between batches: per-column memos, and the keyed hashes it saw.
pub(super) struct Worker {
    pub memos: Vec<Memo>,
    pub seen: Seen,
}

/// Keyed hashes of originals a worker met, in sorted runs of at most `WF_ANON_MEMORY_HASHES`
/// (1,000,000 by default: 8 MB a worker), deduplicated per run and merged at the end. A growing
/// list per worker held up to twice a table's distinct originals (60 MB a worker for 1.1M
/// students) while several tables were anonymized at once (issue 17).
pub struct Hashes {
    runs: crate::runs::SortedRuns,
}

fn hashes_budget() -> usize {
    crate::runs::budget_from_env("WF_ANON_MEMORY_HASHES", 1_000_000)
}

impl Default for Hashes {
    fn default() -> Hashes {
        Hashes {
            runs: crate::runs::SortedRuns::new(hashes_budget(), true),
        }
    }
}

impl Hashes {
    #[inline]
    pub fn push(&mut self, h: u64) {
        self.runs.push(h);
    }

    /// Takes over another worker's hashes.
    pub fn append(&mut self, other: Hashes) {
        self.runs.absorb(other.runs);
    }

    /// The distinct hashes, sorted (an error of a spill file here).
    pub fn into_sorted(self) -> Result<Vec<u64>, AnonError> {
        self.runs.into_distinct().map_err(spill_err)
    }

    /// The hashes in order, streamed from the runs (a repeat across runs stays repeated).
    pub fn merged(self) -> Result<impl Iterator<Item = Result<u64, AnonError>>, AnonError> {
        Ok(self
            .runs
            .merged()
            .map_err(spill_err)?
            .map(|h| h.map_err(spill_err)))
    }
}

fn spill_err(e: std::io::Error) -> AnonError {
    AnonError::Staging(wf_stores::StoreError::Staging {
        path: std::env::temp_dir(),
        message: format!("spilling the originals' hashes: {e}"),
    })
}

/// Repeated values transformed once, per column and worker.
#[derive(Default)]
pub(super) struct Memo {
    text: FastMap<String, String>,
    int: FastMap<i64, i64>,
    offsets: FastMap<String, i64>,
    lookups: u64,
    hits: u64,
}

/// Lookups after which a memo that rarely hits is dropped (unique columns never hit).
const MEMO_TRIAL: u64 = 16_384;

impl Memo {
    /// After a trial, the memo stays in use only while at least one lookup in 16 hits.
    #[inline]
    fn useful(&mut self) -> bool {
        if self.lookups < MEMO_TRIAL || self.hits * 16 >= self.lookups {
            return true;
        }
        self.drop_maps();
        false
    }

    #[cold]
    fn drop_maps(&mut self) {
        if !self.text.is_empty() || !self.int.is_empty() {
            self.text = FastMap::default();
            self.int = FastMap::default();
        }
    }
}

/// The anonymized form of one text value (any strategy but keep/null/redact), into `out`.
pub(super) fn text_value(
    key: &AnonKey,
    plan: &Plan,
    rule: &Rule,
    v: &str,
    offset: Option<i64>,
    shift_days: u32,
    out: &mut String,
) -> Result<(), AnonError> {
    out.clear();
    match rule.spec.strategy {
        Strategy::Hmac => hmac_text_into(key, v, out),
        Strategy::Fake => out.push_str(&fake(key, rule.spec.kind.unwrap_or(FakeKind::Text), v)),
        Strategy::Mask => mask_into(key, v, rule.spec.keep_prefix, out),
        Strategy::ShiftDate => {
            let offset = offset.unwrap_or_else(|| shift_offset(key, v, shift_days));
            out.push_str(&shift_by(v, offset).ok_or_else(|| {
                AnonError::Rule(format!(
                    "{}: a value of {} is not a date (YYYY-MM-DD…)",
                    rule.label(),
                    plan.field
                ))
            })?)
        }
        _ => return Err(wrong(plan, rule)),
    }
    Ok(())
}

fn wrong(plan: &Plan, rule: &Rule) -> AnonError {
    AnonError::Rule(format!(
        "{} cannot apply to {} (a {:?} column)",
        rule.label(),
        plan.field,
        plan.col_type
    ))
}

/// The `n`th suffixed form of a collided unique output.
fn suffixed(out: &str, n: usize) -> String {
    match out.split_once('@') {
        Some((local, domain)) => format!("{local}+{n}@{domain}"),
        None => format!("{out}-{n}"),
    }
}

/// The text of row `r` of an entity column (integers in decimal), into `buf`.
fn entity_text<'a>(col: &'a dyn Array, r: usize, buf: &'a mut String) -> Option<&'a str> {
    if col.is_null(r) {
        return None;
    }
    let any = col.as_any();
    if let Some(a) = any.downcast_ref::<StringArray>() {
        return Some(a.value(r));
    }
    let a = any.downcast_ref::<Int64Array>()?;
    buf.clear();
    let _ = write!(buf, "{}", a.value(r));
    Some(buf.as_str())
}

/// Transforms column `col` (the batch's `columns[i]`); returns the new array and how many values
/// changed. `entity` is the `shift_date` entity column, when the rule names one.
pub(super) fn transform(
    key: &AnonKey,
    shift_days: u32,
    plan: &Plan,
    col: &ArrayRef,
    entity: Option<&ArrayRef>,
    memo: &mut Memo,
    seen: &mut Seen,
) -> Result<(ArrayRef, u64), AnonError> {
    let passed = |seen: &mut Seen| {
        if let Some(a) = col.as_any().downcast_ref::<StringArray>() {
            a.iter()
                .flatten()
                .for_each(|t| plan.output(key, t, &mut seen.outputs));
        }
        Ok((col.clone(), 0))
    };
    let Some(rule) = plan.rule else {
        return passed(seen);
    };
    let present = (col.len() - col.null_count()) as u64;
    match rule.spec.strategy {
        Strategy::Keep => return passed(seen),
        Strategy::Null => {
            if plan.leak_scanned {
                each_text(col, |t| plan.original(key, t, &mut seen.originals));
            }
            return Ok((new_null_array(col.data_type(), col.len()), present));
        }
        _ => {}
    }
    let any = col.as_any();
    if let Some(a) = any.downcast_ref::<StringArray>() {
        let out = text_column(key, shift_days, plan, rule, a, entity, memo, seen)?;
        return Ok((Arc::new(out), present));
    }
    if let Some(a) = any.downcast_ref::<Int64Array>() {
        return Ok((
            int_column(key, plan, rule, a, memo, &mut seen.originals)?,
            present,
        ));
    }
    if let (Some(a), Strategy::Hmac) = (any.downcast_ref::<BinaryArray>(), &rule.spec.strategy) {
        let mut b = BinaryBuilder::with_capacity(a.len(), a.value_data().len());
        for v in a.iter() {
            match v {
                None => b.append_null(),
                Some(v) => {
                    let m = key.mac("hmac:bytes", v);
                    let out: Vec<u8> = (0..v.len()).map(|i| m[i % 32]).collect();
                    b.append_value(out);
                }
            }
        }
        return Ok((Arc::new(b.finish()), present));
    }
    if present == 0 {
        return Ok((col.clone(), 0));
    }
    Err(wrong(plan, rule))
}

/// Calls `f` with the text of every non-null text or integer value.
fn each_text(col: &ArrayRef, mut f: impl FnMut(&str)) {
    let any = col.as_any();
    if let Some(a) = any.downcast_ref::<StringArray>() {
        a.iter().flatten().for_each(f);
    } else if let Some(a) = any.downcast_ref::<Int64Array>() {
        let mut buf = String::new();
        for x in a.iter().flatten() {
            buf.clear();
            let _ = write!(buf, "{x}");
            f(&buf);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn text_column(
    key: &AnonKey,
    shift_days: u32,
    plan: &Plan,
    rule: &Rule,
    a: &StringArray,
    entity: Option<&ArrayRef>,
    memo: &mut Memo,
    seen: &mut Seen,
) -> Result<StringArray, AnonError> {
    let mut b = StringBuilder::with_capacity(a.len(), a.value_data().len());
    let redact = (rule.spec.strategy == Strategy::Redact)
        .then(|| rule.spec.value.as_deref().unwrap_or("REDACTED"));
    if let Some(fixed) = redact.filter(|_| a.null_count() < a.len()) {
        plan.output(key, fixed, &mut seen.outputs);
    }
    let mut buf = String::new();
    let mut out = String::new();
    for r in 0..a.len() {
        if a.is_null(r) {
            b.append_null();
            continue;
        }
        let v = a.value(r);
        if let Some(fixed) = redact {
            plan.original(key, v, &mut seen.originals);
            b.append_value(fixed);
            continue;
        }
        // A per-entity date shift: the entity's offset is what repeats.
        let who = entity.and_then(|e| entity_text(e.as_ref(), r, &mut buf));
        if let Some(who) = who {
            let offset = match memo.offsets.get(who) {
                Some(o) => *o,
                None => {
                    let o = shift_offset(key, who, shift_days);
                    if memo.offsets.len() < MEMO_LIMIT {
                        memo.offsets.insert(who.to_string(), o);
                    }
                    o
                }
            };
            plan.original(key, v, &mut seen.originals);
            text_value(key, plan, rule, v, Some(offset), shift_days, &mut out)?;
        } else {
            let useful = memo.useful();
            if useful {
                memo.lookups += 1;
                if let Some(o) = memo.text.get(v) {
                    memo.hits += 1;
                    append_fixed(&mut b, key, plan, v, o);
                    continue;
                }
            }
            plan.original(key, v, &mut seen.originals);
            text_value(key, plan, rule, v, None, shift_days, &mut out)?;
            if useful && memo.text.len() < MEMO_LIMIT {
                memo.text.insert(v.to_string(), out.clone());
            }
        }
        // Computed, not served by the memo: the value written is recorded for the leak scan.
        let written = fixed(key, plan, v, &out);
        plan.output(key, &written, &mut seen.outputs);
        b.append_value(&*written);
    }
    Ok(b.finish())
}

/// Appends `out`, or its suffixed form when `v`'s output collided in a unique column.
fn append_fixed(b: &mut StringBuilder, key: &AnonKey, plan: &Plan, v: &str, out: &str) {
    b.append_value(&*fixed(key, plan, v, out));
}

/// `out`, or its suffixed form when `v`'s output collided in a unique column.
fn fixed<'a>(key: &AnonKey, plan: &Plan, v: &str, out: &'a str) -> std::borrow::Cow<'a, str> {
    if let Some(fix) = plan.unique_fix {
        if let Some(n) = fix.get(&key.short_hash(v.as_bytes())) {
            return std::borrow::Cow::Owned(suffixed(out, *n));
        }
    }
    std::borrow::Cow::Borrowed(out)
}

fn int_column(
    key: &AnonKey,
    plan: &Plan,
    rule: &Rule,
    a: &Int64Array,
    memo: &mut Memo,
    originals: &mut Hashes,
) -> Result<ArrayRef, AnonError> {
    let masking = match rule.spec.strategy {
        Strategy::Hmac => false,
        Strategy::Mask => true,
        _ if a.null_count() == a.len() => return Ok(Arc::new(a.clone())),
        _ => return Err(wrong(plan, rule)),
    };
    let mut b = Int64Builder::with_capacity(a.len());
    let mut buf = String::new();
    for v in a.iter() {
        let Some(x) = v else {
            b.append_null();
            continue;
        };
        let useful = memo.useful();
        if useful {
            memo.lookups += 1;
            if let Some(y) = memo.int.get(&x) {
                memo.hits += 1;
                b.append_value(*y);
                continue;
            }
        }
        buf.clear();
        let _ = write!(buf, "{x}");
        plan.original(key, &buf, originals);
        let y = if masking {
            mask(key, &buf, rule.spec.keep_prefix)
                .parse()
                .map_err(|_| wrong(plan, rule))?
        } else {
            hmac_int(key, x)
        };
        if useful && memo.int.len() < MEMO_LIMIT {
            memo.int.insert(x, y);
        }
        b.append_value(y);
    }
    Ok(Arc::new(b.finish()))
}

/// How each column of `t` is anonymized (unique-collision fixes not yet attached).
pub(super) fn plans_for<'a>(
    t: &TableInput,
    cols: &[StagedColumn],
    rules: &'a Rules,
    detected: &HashMap<String, Vec<Detector>>,
    key: &AnonKey,
) -> Vec<Plan<'a>> {
    cols.iter()
        .map(|c| {
            let field = format!("{}.{}", t.table, c.name);
            let found = detected.get(&field).map(Vec::as_slice).unwrap_or(&[]);
            let rule = rules.rule_for(&rule_field(t, rules, &c.name), found);
            let entity = rule
                .and_then(|r| r.spec.entity.as_ref())
                .and_then(|e| cols.iter().position(|x| &x.name == e));
            Plan {
                leak_tags: leak_tags(t, &c.name, found, rule)
                    .iter()
                    .map(|tag| tag_id(key, tag))
                    .collect(),
                field,
                rule,
                col_type: c.col_type,
                entity,
                leak_scanned: rule.is_some_and(leak_scanned),
                outputs_scanned: rule.is_none_or(|r| {
                    r.spec.strategy == Strategy::Keep || super::leak::outputs_scanned(r)
                }),
                unique_fix: None,
            }
        })
        .collect()
}

/// The leak-scan domains of `column` of `t`: its field, or the FK parent's it shares values with.
pub(super) fn leak_tags(
    t: &TableInput,
    column: &str,
    found: &[Detector],
    rule: Option<&Rule>,
) -> Vec<String> {
    let own = format!("{}.{column}", t.table);
    let domain = t.rule_as.get(column).unwrap_or(&own);
    tags_of(domain, found, rule.and_then(|r| r.spec.scan_as.as_deref()))
}
