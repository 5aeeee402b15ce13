//! Anonymizing staging files: classify every field, transform file by file (batch by batch), keep
//! unique columns unique, and scan the outputs for any original value.

use super::column::{leak_tags, plans_for, transform, Memo, Seen, Worker};
use super::detect::{credential_flags, detect_values, name_flags, Detector};
use super::input::rule_field;
pub use super::input::{AnonError, TableInput};
use super::key::AnonKey;
use super::leak::outputs_scanned;
use super::leak_scan::{scan, LEAK_HASHES};
use super::pipeline::ordered_map;
pub use super::report::{FieldReport, Report, TableOut, Written};
use super::rules::{Rule, Rules};
use super::unique::unique_fixes;
pub use super::unique::Fixes;
use arrow_array::{RecordBatch, StringArray};
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::Path;
use wf_stores::staging::{
    columns_of, damaged, open, ColType, FileInfo, StagedColumn, StagingWriter,
};
use wf_stores::StoreError;

const SAMPLE: usize = 1000;

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
    let detected = classify(inputs, rules, rules_file)?;
    // 2. Transform, collecting keyed hashes of the originals that must not survive.
    let fixes = unique_fixes(inputs, rules, &detected, key)?;
    let mut tables = Vec::new();
    for t in inputs {
        tables.push(transform_table(t, rules, key, &detected, &fixes, out_dir)?);
    }
    // 3. Leak scan; the originals' hashes go beside the outputs.
    scan(tables, Vec::new(), key, &out_dir.join(LEAK_HASHES))
}

/// The unique-collision fixes of `inputs` (the tables with a unique text column; see `unique`),
/// after refusing a PII-looking field of theirs without a rule.
pub fn collision_fixes(
    inputs: &[TableInput],
    rules: &Rules,
    rules_file: &Path,
    key: &AnonKey,
) -> Result<Fixes, AnonError> {
    let detected = classify(inputs, rules, rules_file)?;
    unique_fixes(inputs, rules, &detected, key)
}

/// Anonymizes one table into `out_dir` under `fixes` (from `collision_fixes` over every table
/// with a unique text column), after refusing a PII-looking field without a rule.
pub fn anonymize_table(
    t: &TableInput,
    rules: &Rules,
    rules_file: &Path,
    key: &AnonKey,
    fixes: &Fixes,
    out_dir: &Path,
) -> Result<TableOut, AnonError> {
    let detected = classify(std::slice::from_ref(t), rules, rules_file)?;
    transform_table(t, rules, key, &detected, fixes, out_dir)
}

/// Anonymizes the changed rows of a table read by difference (`wf refresh --incremental`) under
/// the replaced run's detection (`earlier`), so they are transformed as its unchanged rows were;
/// `Ok(Err(why))` when the changes look like PII that run did not detect in a field (the table
/// must then be anonymized whole). A PII-looking field without a rule is refused as usual.
pub fn anonymize_changes(
    t: &TableInput,
    rules: &Rules,
    rules_file: &Path,
    key: &AnonKey,
    fixes: &Fixes,
    out_dir: &Path,
    earlier: &[FieldReport],
) -> Result<Result<TableOut, String>, AnonError> {
    let now = classify(std::slice::from_ref(t), rules, rules_file)?;
    let before: HashMap<String, Vec<Detector>> = earlier
        .iter()
        .map(|f| (f.field.clone(), f.detected.clone()))
        .collect();
    for (field, found) in &now {
        let had = before.get(field).map(Vec::as_slice).unwrap_or_default();
        if let Some(d) = found.iter().find(|d| !had.contains(d)) {
            return Ok(Err(format!(
                "changed values of {field} look like {d:?}, which the replaced run did not detect there"
            )));
        }
    }
    transform_table(t, rules, key, &before, fixes, out_dir).map(Ok)
}

fn transform_table(
    t: &TableInput,
    rules: &Rules,
    key: &AnonKey,
    detected: &HashMap<String, Vec<Detector>>,
    fixes: &Fixes,
    out_dir: &Path,
) -> Result<TableOut, AnonError> {
    std::fs::create_dir_all(out_dir).map_err(|e| StoreError::Staging {
        path: out_dir.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut seen = Seen::default();
    let (info, fields) = anonymize_file(t, rules, key, detected, fixes, out_dir, &mut seen)?;
    Ok(TableOut {
        table: t.table.clone(),
        info,
        fields,
        originals: seen.originals,
        written: Written::Hashes(seen.outputs),
    })
}

/// Classifies every field of `inputs` from its name and a sample of its values; refuses (naming
/// them) the fields that look like PII and that no rule covers.
fn classify(
    inputs: &[TableInput],
    rules: &Rules,
    rules_file: &Path,
) -> Result<HashMap<String, Vec<Detector>>, AnonError> {
    let mut detected: HashMap<String, Vec<Detector>> = HashMap::new();
    let mut lookup: HashMap<String, String> = HashMap::new();
    for t in inputs {
        let (cols, samples) = sample(&t.file)?;
        let found: Vec<(String, Vec<Detector>)> = cols
            .par_iter()
            .zip(samples)
            .map(|(c, s)| {
                let field = format!("{}.{}", t.table, c.name);
                let mut d = detect_values(s.iter().map(String::as_str));
                // A column's name flags it only when it holds text: an integer `name_id` or a
                // `zip` number key is no name (its values are still sampled).
                let text = c.col_type == ColType::Text;
                if text && credential_flags(&field) && !d.contains(&Detector::Credential) {
                    d.push(Detector::Credential);
                }
                if text && name_flags(&field) {
                    d.insert(0, Detector::Name);
                }
                (field, d)
            })
            .collect();
        for (c, (field, d)) in cols.iter().zip(found) {
            lookup.insert(field.clone(), rule_field(t, rules, &c.name));
            detected.insert(field, d);
        }
    }
    let mut missing: Vec<String> = detected
        .iter()
        .filter(|(f, d)| !d.is_empty() && rules.rule_for(lookup.get(*f).unwrap_or(f), d).is_none())
        .map(|(f, d)| {
            format!(
                "{f} ({})",
                d.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(", ")
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
    Ok(detected)
}

/// The columns of a staging file and up to `SAMPLE` non-null values of each text column, read
/// from at most 100 × `SAMPLE` rows (integer columns have nothing to sample).
fn sample(file: &Path) -> Result<(Vec<StagedColumn>, Vec<Vec<String>>), AnonError> {
    let reader = open(file)?;
    let cols = columns_of(&reader.schema()).map_err(AnonError::Rule)?;
    let mut samples: Vec<Vec<String>> = vec![Vec::new(); cols.len()];
    let mut rows = 0;
    for b in reader {
        let b = b.map_err(|e| damaged(file, e))?;
        for (i, s) in samples.iter_mut().enumerate() {
            let Some(a) = b.column(i).as_any().downcast_ref::<StringArray>() else {
                continue;
            };
            let room = SAMPLE.saturating_sub(s.len());
            s.extend(a.iter().flatten().take(room).map(str::to_string));
        }
        rows += b.num_rows();
        let full = samples
            .iter()
            .zip(&cols)
            .all(|(s, c)| s.len() >= SAMPLE || c.col_type != ColType::Text);
        if full || rows >= 100 * SAMPLE {
            break;
        }
    }
    Ok((cols, samples))
}

/// Memory the batches in flight may take (each counted twice: input and output).
const IN_FLIGHT_BYTES: u64 = 256 << 20;

/// Batches in flight: two per worker, fewer when batches are so large (wide rows) that two per
/// worker would pass `IN_FLIGHT_BYTES`; never fewer than two.
fn in_flight(file: &Path, batches: usize, threads: usize) -> usize {
    let size = std::fs::metadata(file).map_or(0, |m| m.len());
    in_flight_for(size, batches, threads)
}

fn in_flight_for(size: u64, batches: usize, threads: usize) -> usize {
    let per_batch = 2 * size / batches.max(1) as u64;
    let fit = IN_FLIGHT_BYTES / per_batch.max(1);
    (2 * threads).min(fit as usize).max(2)
}

#[allow(clippy::too_many_arguments)]
fn anonymize_file<'a>(
    t: &TableInput,
    rules: &'a Rules,
    key: &AnonKey,
    detected: &HashMap<String, Vec<Detector>>,
    fixes: &'a Fixes,
    out_dir: &Path,
    seen: &mut Seen,
) -> Result<(FileInfo, Vec<FieldReport>), AnonError> {
    let reader = t.open()?;
    let schema = reader.schema();
    let cols = columns_of(&schema).map_err(AnonError::Rule)?;
    let mut plans = plans_for(t, &cols, rules, detected, key);
    for p in plans.iter_mut().filter(|p| p.col_type == ColType::Text) {
        p.unique_fix = p.rule.and_then(|r| fixes.get(&r.index));
    }
    let out_path = out_dir.join(format!("{}.arrow", t.table));
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let in_flight = in_flight(&t.file, reader.num_batches(), threads);
    let states: Vec<Worker> = (0..threads)
        .map(|_| Worker {
            memos: cols.iter().map(|_| Memo::default()).collect(),
            seen: Seen::default(),
        })
        .collect();
    let mut changed = vec![0u64; cols.len()];
    let mut w = StagingWriter::create(&out_path, schema.clone(), 8192)?;
    let mut input = reader.map(|b| b.map_err(|e| AnonError::Staging(damaged(&t.file, e))));
    let work = |state: &mut Worker, b: RecordBatch| {
        let mut arrays = Vec::with_capacity(plans.len());
        let mut counts = Vec::with_capacity(plans.len());
        for (i, plan) in plans.iter().enumerate() {
            let entity = plan.entity.map(|e| b.column(e));
            let (a, n) = transform(
                key,
                rules.shift_days,
                plan,
                b.column(i),
                entity,
                &mut state.memos[i],
                &mut state.seen,
            )?;
            arrays.push(a);
            counts.push(n);
        }
        let out = RecordBatch::try_new(b.schema(), arrays).map_err(|e| {
            AnonError::Staging(StoreError::Staging {
                path: out_path.clone(),
                message: e.to_string(),
            })
        })?;
        Ok((out, counts))
    };
    let sink = |(batch, counts): (RecordBatch, Vec<u64>)| {
        for (c, n) in changed.iter_mut().zip(counts) {
            *c += n;
        }
        Ok(w.push_batch(&batch)?)
    };
    let states = ordered_map(&mut input, states, in_flight, work, sink)?;
    let info = w.finish()?;
    for s in states {
        seen.originals.append(s.seen.originals);
        seen.outputs.append(s.seen.outputs);
    }
    let reports = plans
        .iter()
        .zip(changed)
        .map(|(p, n)| {
            let found = detected.get(&p.field).cloned().unwrap_or_default();
            let column = p.field.rsplit('.').next().unwrap_or_default();
            FieldReport {
                rule: p.rule.map(Rule::label),
                leak_tags: leak_tags(t, column, &found, p.rule),
                detected: found,
                field: p.field.clone(),
                scanned: n == 0 || p.rule.is_some_and(outputs_scanned),
                changed: n,
            }
        })
        .collect();
    Ok((info, reports))
}

#[cfg(test)]
mod tests {
    use super::in_flight_for;

    #[test]
    fn batches_in_flight_fit_the_memory_budget() {
        assert_eq!(
            in_flight_for(1 << 20, 4, 2),
            4,
            "small batches: two per worker"
        );
        assert_eq!(
            in_flight_for(1 << 30, 1024, 64),
            128,
            "1 MB batches on 64 cores"
        );
        assert_eq!(
            in_flight_for(8 << 30, 1024, 64),
            16,
            "8 MB batches: 256 MB at most"
        );
        assert_eq!(
            in_flight_for(10 << 30, 100, 8),
            2,
            "huge batches: still two"
        );
        assert_eq!(in_flight_for(0, 0, 2), 4, "an empty file");
    }
}
