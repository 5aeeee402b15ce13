//! Anonymizing staging files: classify every field, transform file by file (batch by batch), keep
//! unique columns unique, and scan the outputs for any original value.

use super::detect::{detect_values, name_flags, Detector};
use super::key::AnonKey;
use super::rules::{Rule, Rules, Strategy};
use super::strategy::{fake, hmac_int, hmac_text, mask, shift_date, FakeKind};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use wf_stores::staging::{columns_of, open, value_at, ColType, FileInfo, StagingWriter, Value};
use wf_stores::StoreError;

/// One staged table to anonymize.
#[derive(Debug, Clone)]
pub struct TableInput {
    /// `store.table`.
    pub table: String,
    pub file: PathBuf,
    /// Columns whose values must stay unique (single-column primary key or unique constraint).
    pub unique: Vec<String>,
    /// Columns that take another field's rule unless they have an exact rule of their own: foreign
    /// keys take their parent column's, relationship ends their nodes' key's, graph links their
    /// relational column's — so equal values anonymize alike and still join.
    pub rule_as: BTreeMap<String, String>,
}

/// The field whose rule applies to `column` of `t`.
fn rule_field(t: &TableInput, rules: &Rules, column: &str) -> String {
    let own = format!("{}.{column}", t.table);
    match t.rule_as.get(column) {
        Some(other) if !rules.has_field(&own) => other.clone(),
        _ => own,
    }
}

/// What happened to one field.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FieldReport {
    pub field: String,
    pub rule: Option<String>,
    pub detected: Vec<Detector>,
    pub changed: u64,
}

/// The outcome of anonymizing a set of tables (written as `anonymization-report.json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub key_fingerprint: String,
    pub fields: Vec<FieldReport>,
    /// Output files, per table.
    #[serde(skip)]
    pub files: Vec<(String, FileInfo)>,
    /// Fields where an original value was found after anonymization, with counts (never values).
    pub leaks: Vec<(String, u64)>,
    /// Keyed hashes of the anonymized originals, sorted (kept for the leak scan of `wf validate`;
    /// without the key they reveal nothing).
    #[serde(skip)]
    pub original_hashes: Vec<u64>,
}

/// Why anonymization stopped.
#[derive(Debug, thiserror::Error)]
pub enum AnonError {
    #[error("{count} fields look like PII and have no anonymization rule: {list}; add a [[rules]] entry for each to {rules} (strategy hmac, fake, mask, shift_date, redact or null; `keep` if it is not PII)")]
    Unclassified {
        count: usize,
        list: String,
        rules: String,
    },
    #[error("rule problem: {0}")]
    Rule(String),
    #[error("leak scan failed: original values remain after anonymization in {0}; fix the rules and run again")]
    Leak(String),
    #[error(transparent)]
    Staging(#[from] StoreError),
}

const SAMPLE: usize = 1000;

/// Distinct values remembered per column by the transform cache.
const MEMO_LIMIT: usize = 100_000;

/// Values shorter than this are too common to count as leaks (codes, small numbers).
const LEAK_MIN_LEN: usize = 4;

struct Plan<'a> {
    rule: Option<&'a Rule>,
    col_type: ColType,
    entity: Option<usize>,
}

/// An owned output value.
enum Out {
    Same,
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

/// The keyed hash the leak scans compare (values shorter than 4 characters are not scanned).
pub fn leak_hash(key: &AnonKey, text: &str) -> u64 {
    key.short_hash(text.as_bytes())
}

/// The leak set's entries are keyed hashes, uniformly random already: hash them as themselves.
#[derive(Default, Clone, Copy)]
struct Identity(u64);

impl std::hash::Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type LeakSet = HashSet<u64, std::hash::BuildHasherDefault<Identity>>;

fn transform(
    key: &AnonKey,
    rules: &Rules,
    field: &str,
    plan: &Plan,
    v: &Value,
    entity: Option<String>,
) -> Result<Out, AnonError> {
    let Some(rule) = plan.rule else {
        return Ok(Out::Same);
    };
    let spec = &rule.spec;
    let wrong = || {
        AnonError::Rule(format!(
            "{} cannot apply to {field} (a {:?} column)",
            rule.label(),
            plan.col_type
        ))
    };
    if matches!(v, Value::Null) {
        return Ok(Out::Same);
    }
    Ok(match (&spec.strategy, v) {
        (Strategy::Keep, _) => Out::Same,
        (Strategy::Null, _) => Out::Null,
        (Strategy::Redact, Value::Text(_)) => {
            Out::Text(spec.value.clone().unwrap_or_else(|| "REDACTED".into()))
        }
        (Strategy::Hmac, Value::Int(x)) => Out::Int(hmac_int(key, *x)),
        (Strategy::Hmac, Value::Text(t)) => Out::Text(hmac_text(key, t)),
        (Strategy::Hmac, Value::Bytes(b)) => {
            let m = key.mac("hmac:bytes", b);
            Out::Bytes((0..b.len()).map(|i| m[i % 32]).collect())
        }
        (Strategy::Fake, Value::Text(t)) => {
            Out::Text(fake(key, spec.kind.unwrap_or(FakeKind::Text), t))
        }
        (Strategy::Mask, Value::Text(t)) => Out::Text(mask(key, t, spec.keep_prefix)),
        (Strategy::Mask, Value::Int(x)) => Out::Int(
            mask(key, &x.to_string(), spec.keep_prefix)
                .parse()
                .map_err(|_| wrong())?,
        ),
        (Strategy::ShiftDate, Value::Text(t)) => {
            let who = entity.unwrap_or_else(|| t.to_string());
            Out::Text(shift_date(key, t, &who, rules.shift_days).ok_or_else(|| {
                AnonError::Rule(format!(
                    "{}: a value of {field} is not a date (YYYY-MM-DD…)",
                    rule.label()
                ))
            })?)
        }
        _ => return Err(wrong()),
    })
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::Int(x) => Some(x.to_string()),
        Value::Text(t) => Some(t.to_string()),
        _ => None,
    }
}

/// Fake kinds whose realistic values overlap real ones by design, and shifted dates (a date is
/// someone's birthday and someone else's hire date): kept out of the leak scan.
fn leak_scanned(rule: &Rule) -> bool {
    !matches!(rule.spec.strategy, Strategy::Keep | Strategy::ShiftDate)
        && !matches!(
            rule.spec.kind,
            Some(
                FakeKind::FirstName
                    | FakeKind::LastName
                    | FakeKind::City
                    | FakeKind::Postcode
                    | FakeKind::DateOfBirth
            )
        )
}

/// Anonymizes every input into `out_dir`; fails without writing CERT-bound files when a PII-looking
/// field has no rule, and after writing when the leak scan finds an original value.
pub fn anonymize(
    inputs: &[TableInput],
    rules: &Rules,
    rules_file: &Path,
    key: &AnonKey,
    out_dir: &Path,
) -> Result<Report, AnonError> {
    // 1. Classify every field from its name and a sample of its values.
    let mut detected: HashMap<String, Vec<Detector>> = HashMap::new();
    let mut lookup: HashMap<String, String> = HashMap::new();
    for t in inputs {
        let reader = open(&t.file)?;
        let cols = columns_of(&reader.schema()).map_err(AnonError::Rule)?;
        let mut samples: Vec<Vec<String>> = vec![Vec::new(); cols.len()];
        for b in reader {
            let b = b.map_err(|e| StoreError::Staging {
                path: t.file.clone(),
                message: e.to_string(),
            })?;
            for (i, s) in samples.iter_mut().enumerate() {
                for r in 0..b.num_rows() {
                    if s.len() >= SAMPLE {
                        break;
                    }
                    if let Value::Text(x) = value_at(b.column(i).as_ref(), r) {
                        s.push(x.to_string());
                    }
                }
            }
            if samples.iter().all(|s| s.len() >= SAMPLE) {
                break;
            }
        }
        for (c, s) in cols.iter().zip(samples) {
            let field = format!("{}.{}", t.table, c.name);
            lookup.insert(field.clone(), rule_field(t, rules, &c.name));
            let mut d = detect_values(s.iter().map(String::as_str));
            if name_flags(&field) {
                d.insert(0, Detector::Name);
            }
            detected.insert(field, d);
        }
    }
    let mut missing: Vec<String> = detected
        .iter()
        .filter(|(f, d)| !d.is_empty() && rules.rule_for(lookup.get(*f).unwrap_or(f), d).is_none())
        .map(|(f, d)| {
            format!(
                "{f} ({})",
                d.iter()
                    .map(|x| format!("{x:?}").to_lowercase())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect();
    if !missing.is_empty() {
        missing.sort();
        return Err(AnonError::Unclassified {
            count: missing.len(),
            list: missing.join(", "),
            rules: rules_file.display().to_string(),
        });
    }
    // 2. Transform, collecting keyed hashes of the originals that must not survive.
    std::fs::create_dir_all(out_dir).map_err(|e| StoreError::Staging {
        path: out_dir.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut originals = LeakSet::default();
    let mut fields = Vec::new();
    let mut files = Vec::new();
    for t in inputs {
        let (info, reports) = anonymize_file(t, rules, key, &detected, out_dir, &mut originals)?;
        files.push((t.table.clone(), info));
        fields.extend(reports);
    }
    // 3. Leak scan over every field passed through unchanged (no rule, or `keep`). A generated
    // value (fake, mask, hmac…) may equal someone else's original by chance, which is no leak; an
    // original surviving in a passed-through field is one.
    let passed: HashSet<&str> = fields
        .iter()
        .filter(|f| f.changed == 0)
        .map(|f| f.field.as_str())
        .collect();
    let mut leaks: BTreeMap<String, u64> = BTreeMap::new();
    for (table, info) in &files {
        let reader = open(&info.path)?;
        let cols = columns_of(&reader.schema()).map_err(AnonError::Rule)?;
        let scanned: Vec<bool> = cols
            .iter()
            .map(|c| passed.contains(format!("{table}.{}", c.name).as_str()))
            .collect();
        for b in reader {
            let b = b.map_err(|e| StoreError::Staging {
                path: info.path.clone(),
                message: e.to_string(),
            })?;
            for (i, c) in cols.iter().enumerate().filter(|(i, _)| scanned[*i]) {
                for r in 0..b.num_rows() {
                    if let Value::Text(x) = value_at(b.column(i).as_ref(), r) {
                        if x.len() >= LEAK_MIN_LEN && originals.contains(&leak_hash(key, x)) {
                            *leaks.entry(format!("{table}.{}", c.name)).or_default() += 1;
                        }
                    }
                }
            }
        }
    }
    let leaks: Vec<(String, u64)> = leaks.into_iter().collect();
    if !leaks.is_empty() {
        let list = leaks
            .iter()
            .map(|(f, n)| format!("{f} ({n} values)"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(AnonError::Leak(list));
    }
    let mut original_hashes: Vec<u64> = originals.into_iter().collect();
    original_hashes.sort_unstable();
    Ok(Report {
        key_fingerprint: key.fingerprint(),
        fields,
        files,
        leaks,
        original_hashes,
    })
}

fn anonymize_file(
    t: &TableInput,
    rules: &Rules,
    key: &AnonKey,
    detected: &HashMap<String, Vec<Detector>>,
    out_dir: &Path,
    originals: &mut LeakSet,
) -> Result<(FileInfo, Vec<FieldReport>), AnonError> {
    let reader = open(&t.file)?;
    let schema = reader.schema();
    let cols = columns_of(&schema).map_err(AnonError::Rule)?;
    let field = |c: &str| format!("{}.{c}", t.table);
    let names: Vec<String> = cols.iter().map(|c| field(&c.name)).collect();
    let plans: Vec<Plan> = cols
        .iter()
        .map(|c| {
            let f = field(&c.name);
            let rule = rules.rule_for(
                &rule_field(t, rules, &c.name),
                detected.get(&f).map(Vec::as_slice).unwrap_or(&[]),
            );
            let entity = rule
                .and_then(|r| r.spec.entity.as_ref())
                .and_then(|e| cols.iter().position(|x| &x.name == e));
            Plan {
                rule,
                col_type: c.col_type,
                entity,
            }
        })
        .collect();
    let unique_fix = resolve_unique(t, &cols, &plans, rules, key)?;
    let out_path = out_dir.join(format!("{}.arrow", t.table));
    let mut w = StagingWriter::create(&out_path, schema.clone(), 8192)?;
    let mut changed = vec![0u64; cols.len()];
    // Repeated values (first names, cities, codes) are transformed once per column.
    let mut memo: Vec<HashMap<String, String>> = vec![HashMap::new(); cols.len()];
    for b in reader {
        let b = b.map_err(|e| StoreError::Staging {
            path: t.file.clone(),
            message: e.to_string(),
        })?;
        for r in 0..b.num_rows() {
            for (i, plan) in plans.iter().enumerate() {
                let v = value_at(b.column(i).as_ref(), r);
                let entity = plan
                    .entity
                    .and_then(|e| text_of(&value_at(b.column(e).as_ref(), r)));
                let memoizable = plan.entity.is_none() && plan.rule.is_some();
                let cached = match (&v, memoizable) {
                    (Value::Text(t), true) => memo[i].get(*t).cloned(),
                    _ => None,
                };
                let mut out = match cached {
                    Some(s) => Out::Text(s),
                    None => {
                        let out = transform(key, rules, &names[i], plan, &v, entity)?;
                        if let (Value::Text(t), Out::Text(o), true) = (&v, &out, memoizable) {
                            if memo[i].len() < MEMO_LIMIT {
                                memo[i].insert(t.to_string(), o.clone());
                            }
                        }
                        out
                    }
                };
                if let (Some(fix), Some(orig)) = (unique_fix.get(&i), text_of(&v)) {
                    if let Some(resolved) = fix.get(&orig) {
                        out = Out::Text(resolved.clone());
                    }
                }
                if let (Some(rule), Some(orig)) = (plan.rule, text_of(&v)) {
                    if leak_scanned(rule) && orig.len() >= LEAK_MIN_LEN && !matches!(out, Out::Same)
                    {
                        originals.insert(leak_hash(key, &orig));
                    }
                }
                if !matches!(out, Out::Same) {
                    changed[i] += 1;
                }
                match out {
                    Out::Same => w.push(i, v)?,
                    Out::Null => w.push(i, Value::Null)?,
                    Out::Int(x) => w.push(i, Value::Int(x))?,
                    Out::Text(s) => w.push(i, Value::Text(&s))?,
                    Out::Bytes(x) => w.push(i, Value::Bytes(&x))?,
                }
            }
            w.end_row()?;
        }
    }
    let info = w.finish()?;
    let reports = cols
        .iter()
        .zip(&plans)
        .zip(changed)
        .map(|((c, p), n)| {
            let f = field(&c.name);
            FieldReport {
                rule: p.rule.map(Rule::label),
                detected: detected.get(&f).cloned().unwrap_or_default(),
                field: f,
                changed: n,
            }
        })
        .collect();
    Ok((info, reports))
}

/// For unique text columns: outputs that collide (distinct originals, same output) get a numbered
/// suffix, assigned in the order of the originals' keyed hashes — deterministic, never by plaintext.
fn resolve_unique(
    t: &TableInput,
    cols: &[wf_stores::staging::StagedColumn],
    plans: &[Plan],
    rules: &Rules,
    key: &AnonKey,
) -> Result<HashMap<usize, HashMap<String, String>>, AnonError> {
    let targets: Vec<usize> = (0..cols.len())
        .filter(|&i| t.unique.contains(&cols[i].name) && cols[i].col_type == ColType::Text)
        .filter(|&i| {
            plans[i].rule.is_some_and(|r| {
                matches!(
                    r.spec.strategy,
                    Strategy::Fake | Strategy::Mask | Strategy::Hmac
                )
            })
        })
        .collect();
    let mut fixes = HashMap::new();
    for i in targets {
        let mut by_output: HashMap<String, Vec<String>> = HashMap::new();
        let f = format!("{}.{}", t.table, cols[i].name);
        for b in open(&t.file)? {
            let b = b.map_err(|e| StoreError::Staging {
                path: t.file.clone(),
                message: e.to_string(),
            })?;
            for r in 0..b.num_rows() {
                let v = value_at(b.column(i).as_ref(), r);
                if let (Value::Text(orig), Out::Text(o)) =
                    (&v, transform(key, rules, &f, &plans[i], &v, None)?)
                {
                    let group = by_output.entry(o).or_default();
                    if !group.iter().any(|g| g == orig) {
                        group.push(orig.to_string());
                    }
                }
            }
        }
        let mut fix = HashMap::new();
        for (out, mut group) in by_output.into_iter().filter(|(_, g)| g.len() > 1) {
            group.sort_by_key(|o| key.mac("unique-order", o.as_bytes()));
            for (n, orig) in group.into_iter().enumerate().skip(1) {
                let suffixed = match out.split_once('@') {
                    Some((local, domain)) => format!("{local}+{n}@{domain}"),
                    None => format!("{out}-{n}"),
                };
                fix.insert(orig, suffixed);
            }
        }
        fixes.insert(i, fix);
    }
    Ok(fixes)
}
