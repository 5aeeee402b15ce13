//! Unique columns stay unique: distinct originals whose outputs collide get a numbered suffix.
//! Collisions are found over every unique column under one rule, and the suffixes apply wherever
//! that rule does, so a value keeps one output in every table and store and text keys still join.

use super::column::plans_for;
use super::column::{text_value, Plan};
use super::detect::Detector;
use super::input::{AnonError, TableInput};
use super::key::AnonKey;
use super::rules::{Rules, Strategy};
use arrow_array::{Array, StringArray};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};
use wf_stores::staging::{columns_of, damaged, open, ColType};

/// Per rule (by index): the suffix number of each original (by keyed hash) that collided.
pub type Fixes = HashMap<usize, HashMap<u64, usize>>;

/// Finds the collisions of every rule that generates values (`fake`, `mask`, `hmac`) over the
/// unique text columns it applies to. Suffixes are assigned in the order of the originals' keyed
/// hashes: deterministic, never by plaintext. Holds two 64-bit hashes per value, not the values.
pub(super) fn unique_fixes(
    inputs: &[TableInput],
    rules: &Rules,
    detected: &HashMap<String, Vec<Detector>>,
    key: &AnonKey,
) -> Result<Fixes, AnonError> {
    let mut by_rule: BTreeMap<usize, Vec<(&TableInput, usize, Plan)>> = BTreeMap::new();
    for t in inputs {
        let cols = columns_of(&open(&t.file)?.schema()).map_err(AnonError::Rule)?;
        for (i, plan) in plans_for(t, &cols, rules, detected, key)
            .into_iter()
            .enumerate()
        {
            if t.unique.contains(&cols[i].name) {
                refuse_collapsing(&plan)?;
            }
            let generated = plan.rule.filter(|r| {
                matches!(
                    r.spec.strategy,
                    Strategy::Fake | Strategy::Mask | Strategy::Hmac
                )
            });
            if let (Some(rule), true) = (
                generated,
                t.unique.contains(&cols[i].name) && cols[i].col_type == ColType::Text,
            ) {
                by_rule.entry(rule.index).or_default().push((t, i, plan));
            }
        }
    }
    let mut fixes = Fixes::new();
    for (index, columns) in by_rule {
        let fix = collisions(&columns, rules.shift_days, key)?;
        if !fix.is_empty() {
            fixes.insert(index, fix);
        }
    }
    Ok(fixes)
}

/// Rules that would make a unique column's values collide with no way to tell them apart
/// again are refused before anything is written.
fn refuse_collapsing(plan: &Plan) -> Result<(), AnonError> {
    let Some(rule) = plan.rule else {
        return Ok(());
    };
    let why = match (&rule.spec.strategy, plan.col_type) {
        (Strategy::Redact, _) => "gives all its values the same text",
        (Strategy::Mask, ColType::Int) => {
            "can give two of its integers the same output, and integers take no suffix"
        }
        _ => return Ok(()),
    };
    Err(AnonError::Rule(format!(
        "{}: {} is unique in PROD, and this rule {why}; use hmac (or fake for text), which keeps unique values unique",
        rule.label(),
        plan.field
    )))
}

fn collisions(
    columns: &[(&TableInput, usize, Plan)],
    shift_days: u32,
    key: &AnonKey,
) -> Result<HashMap<u64, usize>, AnonError> {
    let mut first: HashMap<u64, u64> = HashMap::new();
    let mut groups: HashMap<u64, Vec<u64>> = HashMap::new();
    for (input, i, plan) in columns {
        let Some(rule) = plan.rule else { continue };
        for b in input.open()? {
            let b = b.map_err(|e| damaged(&input.file, e))?;
            let Some(a) = b.column(*i).as_any().downcast_ref::<StringArray>() else {
                continue;
            };
            let values: Vec<&str> = a.iter().flatten().collect();
            let pairs: Vec<(u64, u64)> = values
                .par_iter()
                .map(|v| {
                    let mut out = String::new();
                    text_value(key, plan, rule, v, None, shift_days, &mut out)?;
                    Ok((key.short_hash(out.as_bytes()), key.short_hash(v.as_bytes())))
                })
                .collect::<Result<_, AnonError>>()?;
            for (out, orig) in pairs {
                let seen = *first.entry(out).or_insert(orig);
                if seen != orig {
                    let g = groups.entry(out).or_insert_with(|| vec![seen]);
                    if !g.contains(&orig) {
                        g.push(orig);
                    }
                }
            }
        }
    }
    let mut fix = HashMap::new();
    for (_, mut group) in groups {
        group.sort_unstable();
        for (n, orig) in group.into_iter().enumerate().skip(1) {
            fix.insert(orig, n);
        }
    }
    Ok(fix)
}
