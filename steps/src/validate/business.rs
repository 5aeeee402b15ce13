//! Business rules of the built-in kinds, evaluated on the anonymized staging.

use super::cells::{batches, hash_key, hash_row, positions, show, text, tuple};
use super::rules::{Kind, Rule, ValidationRules};
use super::Tally;
use arrow_array::RecordBatch;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use wf_stores::config::ColumnRef;
use wf_stores::staging::{value_at, Value};
use wf_stores::StoreError;

pub(super) fn rule_table(r: &Rule) -> Option<String> {
    let f = match r.spec.kind {
        Kind::DateOrder => r.spec.a.as_ref(),
        Kind::RowCount | Kind::Sql => None,
        _ => r.spec.field.as_ref(),
    }?;
    f.rsplit_once('.').map(|(t, _)| t.to_string())
}

fn col_of(f: &Option<String>) -> String {
    f.as_deref()
        .and_then(|f| f.rsplit_once('.'))
        .map(|(_, c)| c.to_string())
        .unwrap_or_default()
}

pub(super) fn business_rule(
    tally: &mut Tally,
    rule: &Rule,
    table: &str,
    path: &Path,
    example: &dyn Fn(&RecordBatch, usize) -> String,
) -> Result<(), StoreError> {
    let s = &rule.spec;
    let (mut n, mut ex) = (0u64, Vec::new());
    let mut note = |b: &RecordBatch, r: usize| {
        n += 1;
        if ex.len() < super::EXAMPLES {
            ex.push(example(b, r));
        }
    };
    let cols = match s.kind {
        Kind::DateOrder => vec![col_of(&s.a), col_of(&s.b)],
        _ => vec![col_of(&s.field)],
    };
    for b in batches(path)? {
        let b = &b?;
        let Some(idx) = positions(b, &cols) else {
            tally.check(
                "business_rules",
                &s.name,
                table,
                s.severity,
                1,
                vec![],
                format!("rule {}: no column {}", s.name, cols.join(",")),
            );
            return Ok(());
        };
        for r in 0..b.num_rows() {
            let v = value_at(b.column(idx[0]).as_ref(), r);
            let bad = match s.kind {
                Kind::NotNull => matches!(v, Value::Null),
                Kind::Range => {
                    let x = match v {
                        Value::Int(i) => Some(i as f64),
                        Value::Float(f) => Some(f),
                        Value::Text(t) => t.trim().parse().ok(),
                        _ => None,
                    };
                    x.is_some_and(|x| s.min.is_some_and(|m| x < m) || s.max.is_some_and(|m| x > m))
                }
                Kind::Regex => {
                    text(&v).is_some_and(|t| !rule.regex.as_ref().is_some_and(|re| re.is_match(&t)))
                }
                Kind::Allowed => text(&v).is_some_and(|t| !s.values.contains(&t)),
                Kind::DateOrder => {
                    let w = value_at(b.column(idx[1]).as_ref(), r);
                    matches!((text(&v), text(&w)), (Some(a), Some(c)) if a > c)
                }
                Kind::RowCount | Kind::Sql => false,
            };
            if bad {
                note(b, r);
            }
        }
    }
    tally.check(
        "business_rules",
        &s.name,
        table,
        s.severity,
        n,
        ex,
        format!("rule `{}`: {n} rows violate it", s.name),
    );
    Ok(())
}

/// row_count rules: every parent key has between min and max child rows.
pub(super) fn row_counts(
    tally: &mut Tally,
    rules: &ValidationRules,
    files: &BTreeMap<&str, &PathBuf>,
) -> Result<(), StoreError> {
    for rule in rules.rules.iter().filter(|r| r.spec.kind == Kind::RowCount) {
        let s = &rule.spec;
        let (Some(p), Some(c)) = (
            s.parent.as_deref().and_then(ColumnRef::parse),
            s.child.as_deref().and_then(ColumnRef::parse),
        ) else {
            continue;
        };
        let (Some(pf), Some(cf)) = (
            files.get(p.table_id().as_str()),
            files.get(c.table_id().as_str()),
        ) else {
            continue;
        };
        let mut buf = String::new();
        let mut counts: HashMap<u64, u64> = HashMap::new();
        for b in batches(cf)? {
            let b = b?;
            let Some(idx) = positions(&b, std::slice::from_ref(&c.column)) else {
                continue;
            };
            for r in 0..b.num_rows() {
                if let Some(h) = hash_row(&b, &idx, r, &mut buf) {
                    *counts.entry(h).or_default() += 1;
                }
            }
        }
        let (mut n, mut ex) = (0u64, Vec::new());
        for b in batches(pf)? {
            let b = b?;
            let Some(idx) = positions(&b, std::slice::from_ref(&p.column)) else {
                continue;
            };
            for r in 0..b.num_rows() {
                let Some(k) = tuple(&b, &idx, r) else {
                    continue;
                };
                let have = counts.get(&hash_key(&k)).copied().unwrap_or(0) as f64;
                if s.min.is_some_and(|m| have < m) || s.max.is_some_and(|m| have > m) {
                    n += 1;
                    if ex.len() < super::EXAMPLES {
                        ex.push(show(&k));
                    }
                }
            }
        }
        tally.check(
            "business_rules",
            &s.name,
            &p.table_id(),
            s.severity,
            n,
            ex,
            format!(
                "rule `{}`: {n} {} rows have a child count outside the bounds",
                s.name,
                p.table_id()
            ),
        );
    }
    Ok(())
}
