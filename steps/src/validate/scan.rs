//! The pre-load checks, reading each anonymized staging file batch by batch. Key sets hold 64-bit
//! hashes of the key text (about 16 bytes a key in memory); a hash collision could hide one
//! duplicate or one dangling reference in 2^64, which is accepted.

use super::cells::{batches, hash_row, positions, set_id, show, tuple, LOOKUP};
pub use super::input::ValidateInput;
use super::rules::{Severity, ValidationRules};
use super::{Tally, ValidationReport};
use arrow_array::RecordBatch;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use wf_stores::config::{ColumnRef, Side};
use wf_stores::extract::{open_snapshot, Snap};
use wf_stores::load::Strategy;
use wf_stores::schema::{StoreSchema, Table};
use wf_stores::staging::{open, ColType};
use wf_stores::subset::{Key, SnapshotReader};
use wf_stores::StoreError;

/// Distinct dangling references remembered per FK for the CERT lookup.
const MISSING_LIMIT: usize = 10_000;
pub(super) struct Fk {
    name: String,
    child: String,
    child_cols: Vec<String>,
    parent: String,
    parent_cols: Vec<String>,
}

/// Runs every pre-load check.
pub async fn validate(inp: ValidateInput<'_>) -> Result<ValidationReport, StoreError> {
    let started = std::time::Instant::now();
    let mut tally = Tally::default();
    let files: BTreeMap<&str, &PathBuf> = inp.files.iter().map(|(t, p)| (t.as_str(), p)).collect();
    let mut cert: HashMap<String, (StoreSchema, Snap)> = HashMap::new();
    for s in &inp.config.stores {
        if files
            .keys()
            .any(|t| t.split('.').next() == Some(s.name.as_str()))
        {
            cert.insert(s.name.clone(), open_snapshot(s, Side::Cert).await?);
        }
    }
    let tables: Vec<&Table> = inp.schemas.iter().flat_map(|s| &s.tables).collect();
    let fks: Vec<Fk> = tables
        .iter()
        .filter(|t| files.contains_key(t.id().as_str()))
        .flat_map(|t| {
            t.foreign_keys.iter().map(|f| Fk {
                name: f.name.clone(),
                child: t.id(),
                child_cols: f.columns.clone(),
                parent: f.ref_table.clone(),
                parent_cols: f.ref_columns.clone(),
            })
        })
        .collect();
    // Pass A: the key sets that references point at (FK parents, row_count parents, graph links).
    let mut wanted: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    for f in &fks {
        wanted
            .entry(f.parent.clone())
            .or_default()
            .push(f.parent_cols.clone());
    }
    let links: Vec<(String, ColumnRef)> = inp
        .config
        .graph
        .iter()
        .flat_map(|g| g.links.iter().map(|l| (l.from.clone(), l.to.clone())))
        .filter_map(|(from, to)| ColumnRef::parse(&to).map(|r| (from, r)))
        .collect();
    for (_, r) in &links {
        wanted
            .entry(r.table_id())
            .or_default()
            .push(vec![r.column.clone()]);
    }
    let mut sets: HashMap<String, HashSet<u64>> = HashMap::new();
    let mut buf = String::new();
    for (table, colsets) in &wanted {
        let Some(path) = files.get(table.as_str()) else {
            continue;
        };
        for b in batches(path)? {
            let b = b?;
            for cols in colsets {
                let Some(idx) = positions(&b, cols) else {
                    continue;
                };
                let set = sets.entry(set_id(table, cols)).or_default();
                for r in 0..b.num_rows() {
                    if let Some(h) = hash_row(&b, &idx, r, &mut buf) {
                        set.insert(h);
                    }
                }
            }
        }
    }
    // Pass B: each table on its own.
    let mut rows_total = 0u64;
    for (table, path) in &files {
        let (store, name) = table.split_once('.').unwrap_or(("", table));
        let Some((schema, snap)) = cert.get_mut(store) else {
            continue;
        };
        let kind = inp.config.store(store).map(|s| s.kind);
        let same_store: HashMap<String, Table> =
            schema.tables.iter().map(|t| (t.id(), t.clone())).collect();
        let Some(ct) = schema.tables.iter().find(|t| t.name == name).cloned() else {
            tally.check(
                "schema",
                "table exists in CERT",
                table,
                Severity::Error,
                1,
                vec![],
                format!("CERT store {store} has no table {name}; create it with PROD's definition"),
            );
            continue;
        };
        let staged = wf_stores::staging::columns_of(&open(path)?.schema()).unwrap_or_default();
        let mut problems = Vec::new();
        for c in &staged {
            match ct.columns.iter().find(|x| x.name == c.name) {
                None => problems.push(format!("CERT has no column {}", c.name)),
                Some(x) => {
                    let want = kind.map(|k| ColType::of(k, &x.data_type));
                    if want.is_some_and(|w| {
                        w != c.col_type && !(w == ColType::Float && c.col_type == ColType::Int)
                    }) {
                        problems.push(format!(
                            "{}: staged {:?}, CERT {}",
                            c.name, c.col_type, x.data_type
                        ));
                    }
                }
            }
        }
        for x in ct
            .columns
            .iter()
            .filter(|x| !x.nullable && x.default.is_none())
        {
            if !staged.iter().any(|c| c.name == x.name) {
                problems.push(format!(
                    "CERT column {} is NOT NULL and not in the staging",
                    x.name
                ));
            }
        }
        tally.check(
            "schema",
            "columns match CERT",
            table,
            Severity::Error,
            problems.len() as u64,
            problems.clone(),
            format!("staging and CERT table differ: {}", problems.join("; ")),
        );
        if !problems.is_empty() {
            continue;
        }
        rows_total += scan_table(
            &mut tally,
            inp.rules,
            table,
            &ct,
            path,
            &fks,
            &sets,
            snap,
            &same_store,
            inp.strategy,
            inp.config.reference_tables.contains(&table.to_string()),
            inp.owned.get(*table),
        )
        .await?;
    }
    super::business::row_counts(&mut tally, inp.rules, &files)?;
    super::graph_checks::graph_checks(&mut tally, &inp, &sets)?;
    let leaks: u64 = inp.leaks.iter().map(|(_, n)| n).sum();
    tally.check(
        "pii",
        "no original value left after anonymization",
        "(all)",
        Severity::Critical,
        leaks,
        inp.leaks.iter().map(|(f, n)| format!("{f}: {n}")).collect(),
        "the leak scan found original values".into(),
    );
    for (_, (_, snap)) in cert.drain() {
        drop(snap);
    }
    Ok(tally.finish(
        files.len() as u64,
        rows_total,
        started.elapsed().as_secs_f64(),
    ))
}

#[allow(clippy::too_many_arguments)]
async fn scan_table(
    tally: &mut Tally,
    rules: &ValidationRules,
    table: &str,
    ct: &Table,
    path: &Path,
    fks: &[Fk],
    sets: &HashMap<String, HashSet<u64>>,
    snap: &mut Snap,
    same_store: &HashMap<String, Table>,
    strategy: Strategy,
    reference: bool,
    owned: Option<&HashSet<u64>>,
) -> Result<u64, StoreError> {
    let Some(first) = batches(path)?.next().transpose()? else {
        return Ok(0);
    };
    let first = &first;
    let mut rows = 0u64;
    for b in batches(path)? {
        rows += b?.num_rows() as u64;
    }
    let pk_idx = positions(first, &ct.primary_key).unwrap_or_default();
    let example = |b: &RecordBatch, r: usize| -> String {
        tuple(b, &pk_idx, r)
            .map(|k| show(&k))
            .unwrap_or_else(|| format!("row {r}"))
    };
    // Nullability.
    for c in ct.columns.iter().filter(|c| !c.nullable) {
        let Ok(i) = first.schema().index_of(&c.name) else {
            continue;
        };
        let (mut n, mut ex) = (0u64, Vec::new());
        for b in batches(path)? {
            let b = &b?;
            if b.column(i).null_count() == 0 {
                continue; // Arrow keeps the count: no row to look at
            }
            for r in 0..b.num_rows() {
                if b.column(i).is_null(r) {
                    n += 1;
                    if ex.len() < super::EXAMPLES {
                        ex.push(example(b, r));
                    }
                }
            }
        }
        tally.check(
            "nullability",
            &format!("{} is not null", c.name),
            table,
            Severity::Error,
            n,
            ex,
            format!("{n} rows have NULL in NOT NULL column {}", c.name),
        );
    }
    // Uniqueness of the primary key and unique constraints within the subset.
    let mut colsets: Vec<(String, Vec<String>)> = Vec::new();
    if !ct.primary_key.is_empty() {
        colsets.push(("primary key".into(), ct.primary_key.clone()));
    }
    // A partial unique index binds only the rows its predicate holds for: not checked here.
    for u in ct.uniques.iter().filter(|u| !u.partial) {
        colsets.push((format!("unique {}", u.columns.join(",")), u.columns.clone()));
    }
    for (what, cols) in &colsets {
        let Some(idx) = positions(first, cols) else {
            continue;
        };
        let mut seen = HashSet::new();
        let (mut n, mut ex) = (0u64, Vec::new());
        let mut buf = String::new();
        for b in batches(path)? {
            let b = &b?;
            for r in 0..b.num_rows() {
                if let Some(h) = hash_row(b, &idx, r, &mut buf) {
                    if !seen.insert(h) {
                        n += 1;
                        if ex.len() < super::EXAMPLES {
                            ex.extend(tuple(b, &idx, r).map(|k| show(&k)));
                        }
                    }
                }
            }
        }
        tally.check(
            "uniqueness",
            what,
            table,
            Severity::Error,
            n,
            ex,
            format!("{n} duplicate values of {what}"),
        );
    }
    // Referential integrity: inside the subset, then against CERT for what is not in it.
    for f in fks.iter().filter(|f| f.child == table) {
        let Some(idx) = positions(first, &f.child_cols) else {
            continue;
        };
        let set = sets.get(&set_id(&f.parent, &f.parent_cols));
        let mut missing: HashMap<Key, u64> = HashMap::new();
        let mut overflow = 0u64;
        let mut buf = String::new();
        for b in batches(path)? {
            let b = &b?;
            for r in 0..b.num_rows() {
                let Some(h) = hash_row(b, &idx, r, &mut buf) else {
                    continue;
                };
                if set.is_some_and(|s| s.contains(&h)) {
                    continue;
                }
                let Some(k) = tuple(b, &idx, r) else { continue };
                if missing.len() < MISSING_LIMIT || missing.contains_key(&k) {
                    *missing.entry(k).or_default() += 1;
                } else {
                    overflow += 1;
                }
            }
        }
        let parent_name = f
            .parent
            .split_once('.')
            .map(|(_, t)| t)
            .unwrap_or(&f.parent);
        let parent_store = f.parent.split('.').next().unwrap_or_default();
        let same = table.split('.').next() == Some(parent_store);
        if !missing.is_empty() && same {
            if let Some(pt) = same_store.get(&f.parent).filter(|t| t.name == parent_name) {
                let keys: Vec<Key> = missing.keys().cloned().collect();
                for chunk in keys.chunks(LOOKUP) {
                    for found in snap
                        .rows_in(pt, &f.parent_cols, chunk, &f.parent_cols)
                        .await?
                    {
                        missing.remove(&found);
                    }
                }
            }
        }
        let n: u64 = missing.values().sum::<u64>() + overflow;
        let mut ex: Vec<String> = missing.keys().map(show).collect();
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
    let conflicts = super::conflicts::ConflictInput {
        table,
        ct,
        path,
        strategy,
        reference,
        owned,
    };
    super::conflicts::check(tally, snap, &conflicts).await?;
    // Business rules on this table's columns.
    for rule in rules
        .rules
        .iter()
        .filter(|r| super::business::rule_table(r).as_deref() == Some(table))
    {
        super::business::business_rule(tally, rule, table, path, &example)?;
    }
    Ok(rows)
}
