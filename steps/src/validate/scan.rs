//! The pre-load checks, reading each anonymized staging file batch by batch. Key sets hold 64-bit
//! hashes of the key text (about 16 bytes a key in memory); a hash collision could hide one
//! duplicate or one dangling reference in 2^64, which is accepted.

use super::cells::KeySet;
use super::cells::{batches, hash_row, positions, set_id, show, tuple};
use super::checks::{Fk, NotNull, References, RowCheck, Unique};
pub use super::input::ValidateInput;
use super::rules::{Severity, ValidationRules};
use super::{Tally, ValidationReport};
use arrow_array::RecordBatch;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use wf_stores::config::{ColumnRef, Side};
use wf_stores::extract::{open_snapshot, Snap};
use wf_stores::load::Strategy;
use wf_stores::schema::{StoreSchema, Table};
use wf_stores::staging::{open, ColType};
use wf_stores::StoreError;

/// Runs every pre-load check.
pub async fn validate(inp: ValidateInput<'_>) -> Result<ValidationReport, StoreError> {
    let started = std::time::Instant::now();
    let mut tally = Tally::default();
    let files: BTreeMap<&str, &PathBuf> = inp.files.iter().map(|(t, p)| (t.as_str(), p)).collect();
    let mut cert = open_cert(&inp, &files).await?;
    let fks = foreign_keys(&inp, &files);
    let sets = key_sets(&inp, &files, &fks, true)?;
    let mut rows_total = 0u64;
    for (table, path) in &files {
        let both = (path.as_path(), path.as_path());
        rows_total += check_table(&mut tally, &inp, &fks, &sets, &mut cert, table, both).await?;
    }
    drop(cert);
    whole_run(&mut tally, &inp, &files, &sets)?;
    super::graph_cert::graph_cert(&mut tally, &inp).await?;
    Ok(tally.finish(
        files.len() as u64,
        rows_total,
        started.elapsed().as_secs_f64(),
    ))
}

/// The checks of one table (`validate/<store.table>`): `inp.files` holds it and the parents its
/// references point at. With `only`, the rows checked are the table's changes alone, if every
/// key set its references point at in the replaced run's parents is in this run's (see
/// `incremental`). Returns the findings, the rows checked and whether they were the changes.
pub async fn validate_table(
    inp: &ValidateInput<'_>,
    table: &str,
    only: Option<&super::incremental::ChangesOnly>,
) -> Result<(Tally, u64, Checked, u64), StoreError> {
    let mut tally = Tally::default();
    let files: BTreeMap<&str, &PathBuf> = inp.files.iter().map(|(t, p)| (t.as_str(), p)).collect();
    let Some(path) = files.get(table).copied() else {
        return Err(StoreError::Staging {
            path: PathBuf::from(table),
            message: format!("validate/{table}: its anonymized file is not among the inputs"),
        });
    };
    let mut cert = open_cert(inp, &BTreeMap::from([(table, path)])).await?;
    let fks: Vec<Fk> = foreign_keys(inp, &files)
        .into_iter()
        .filter(|f| f.child == table)
        .collect();
    let sets = key_sets(inp, &files, &fks, false)?;
    let (store, name) = table.split_once('.').unwrap_or(("", table));
    let ct = cert
        .get(store)
        .and_then(|(s, _)| s.tables.iter().find(|t| t.name == name));
    let checks = checks_fingerprint(inp, &fks, table, ct);
    let how = match only {
        None => Checked::Whole(None),
        Some(c) if c.checks != checks => Checked::Whole(Some(
            "its checks changed since the replaced run (rules, CERT's definition, references)",
        )),
        Some(_) if ct.is_none_or(|t| !t.uniques.is_empty()) => {
            Checked::Whole(Some("CERT's table has unique constraints besides its key"))
        }
        Some(c) if !parents_kept(inp, &fks, &sets, c)? => Checked::Whole(Some(
            "a parent lost keys the replaced run's rows may reference",
        )),
        Some(_) => Checked::Changes,
    };
    let rows_file = match (&how, only) {
        (Checked::Changes, Some(c)) => c.changes.as_path(),
        _ => path.as_path(),
    };
    let files = (path.as_path(), rows_file);
    let rows = check_table(&mut tally, inp, &fks, &sets, &mut cert, table, files).await?;
    Ok((tally, rows, how, checks))
}

/// Which rows `validate_table` checked.
pub enum Checked {
    /// The table's changes alone.
    Changes,
    /// The whole table; with the changes offered, why they could not be checked alone.
    Whole(Option<&'static str>),
}

/// What `table`'s checks are, hashed (the first 8 bytes of a SHA-256 of their debug forms): its
/// CERT definition `ct` (its columns' types and nullability, keys, uniques), its references, its
/// business rules, the strategy. Checking only a table's changes relies on the earlier rows
/// having passed these same checks; a changed rule, a new NOT NULL in CERT or a new virtual FK
/// changes it (and so may another version of wf: the whole table is checked then).
fn checks_fingerprint(inp: &ValidateInput<'_>, fks: &[Fk], table: &str, ct: Option<&Table>) -> u64 {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(format!("{ct:?}"));
    for f in fks {
        h.update(format!(
            "{}|{}|{:?}|{}|{:?};",
            f.name, f.child, f.child_cols, f.parent, f.parent_cols
        ));
    }
    for r in inp
        .rules
        .rules
        .iter()
        .filter(|r| super::business::rule_table(r).as_deref() == Some(table))
    {
        h.update(format!("{:?}", r.spec));
    }
    h.update(format!("{:?}", inp.strategy));
    let d = h.finalize();
    u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// Whether every key set `fks` point at in the replaced run's parents (`c.earlier_parents`) is
/// in this run's (`sets`): then the unchanged rows' references still resolve.
fn parents_kept(
    inp: &ValidateInput<'_>,
    fks: &[Fk],
    sets: &HashMap<String, KeySet>,
    c: &super::incremental::ChangesOnly,
) -> Result<bool, StoreError> {
    let earlier: BTreeMap<&str, &PathBuf> = c
        .earlier_parents
        .iter()
        .map(|(t, p)| (t.as_str(), p))
        .collect();
    if fks.iter().any(|f| !earlier.contains_key(f.parent.as_str())) {
        return Ok(false);
    }
    let before = key_sets(inp, &earlier, fks, false)?;
    Ok(before.iter().all(|(id, was)| {
        let now = sets.get(id);
        was.iter().all(|h| now.is_some_and(|n| n.contains(h)))
    }))
}

/// What the per-table steps leave to the whole run (`tally` holds their findings): row counts
/// across tables, the graph's staging checks unless `graph_checked` (its own step ran them), the
/// leak scan's verdict, CERT's graph.
pub async fn validate_rest(
    mut tally: Tally,
    inp: ValidateInput<'_>,
    rows: u64,
    started: std::time::Instant,
    graph_checked: bool,
) -> Result<ValidationReport, StoreError> {
    let files: BTreeMap<&str, &PathBuf> = inp.files.iter().map(|(t, p)| (t.as_str(), p)).collect();
    super::business::row_counts(&mut tally, inp.rules, &files)?;
    if !graph_checked {
        graph_staging(&mut tally, &inp)?;
    }
    rest(&mut tally, &inp);
    super::graph_cert::graph_cert(&mut tally, &inp).await?;
    Ok(tally.finish(files.len() as u64, rows, started.elapsed().as_secs_f64()))
}

/// The graph's staging checks, with the relational key sets its links resolve in.
pub(super) fn graph_staging(tally: &mut Tally, inp: &ValidateInput<'_>) -> Result<(), StoreError> {
    if inp.config.graph.is_none() {
        return Ok(());
    }
    let files: BTreeMap<&str, &PathBuf> = inp.files.iter().map(|(t, p)| (t.as_str(), p)).collect();
    let sets = key_sets(inp, &files, &[], true)?;
    super::graph_checks::graph_checks(tally, inp, &sets)
}

/// The checks that look at several tables or at none: row counts, the graph, the leak scan.
fn whole_run(
    tally: &mut Tally,
    inp: &ValidateInput<'_>,
    files: &BTreeMap<&str, &PathBuf>,
    sets: &HashMap<String, KeySet>,
) -> Result<(), StoreError> {
    super::business::row_counts(tally, inp.rules, files)?;
    super::graph_checks::graph_checks(tally, inp, sets)?;
    rest(tally, inp);
    Ok(())
}

/// Nodes left out for lacking their key, and the leak scan's verdict.
fn rest(tally: &mut Tally, inp: &ValidateInput<'_>) {
    super::graph_cert::skipped(tally, inp);
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
}

/// One staged table's checks against its CERT store's snapshot; returns its row count.
async fn check_table(
    tally: &mut Tally,
    inp: &ValidateInput<'_>,
    fks: &[Fk],
    sets: &HashMap<String, KeySet>,
    cert: &mut HashMap<String, (StoreSchema, Snap)>,
    table: &str,
    (path, rows): (&Path, &Path),
) -> Result<u64, StoreError> {
    let (store, name) = table.split_once('.').unwrap_or(("", table));
    let Some((schema, snap)) = cert.get_mut(store) else {
        return Ok(0);
    };
    let kind = inp.config.store(store).map(|s| s.kind);
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
        return Ok(0);
    };
    if !columns_match(tally, table, &ct, path, kind)? {
        return Ok(0);
    }
    let same_store: HashMap<String, Table> =
        schema.tables.iter().map(|t| (t.id(), t.clone())).collect();
    let scan = ScanInput {
        rules: inp.rules,
        fks,
        sets,
        same_store: &same_store,
        strategy: inp.strategy,
        reference: inp.config.reference_tables.contains(&table.to_string()),
        owned: inp.owned.get(table),
        unchanged: inp.unchanged.get(table),
    };
    scan_table(tally, &scan, table, &ct, (path, rows), snap).await
}

/// A CERT snapshot of every store that has a staged table.
async fn open_cert(
    inp: &ValidateInput<'_>,
    files: &BTreeMap<&str, &PathBuf>,
) -> Result<HashMap<String, (StoreSchema, Snap)>, StoreError> {
    let mut cert = HashMap::new();
    for s in &inp.config.stores {
        if files
            .keys()
            .any(|t| t.split('.').next() == Some(s.name.as_str()))
        {
            cert.insert(s.name.clone(), open_snapshot(s, Side::Cert).await?);
        }
    }
    Ok(cert)
}

/// The foreign keys of the staged tables.
fn foreign_keys(inp: &ValidateInput<'_>, files: &BTreeMap<&str, &PathBuf>) -> Vec<Fk> {
    inp.schemas
        .iter()
        .flat_map(|s| &s.tables)
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
        .collect()
}

/// Pass A: the key sets that references point at (FK parents, and graph links `with_links`), by
/// `set_id`.
fn key_sets(
    inp: &ValidateInput<'_>,
    files: &BTreeMap<&str, &PathBuf>,
    fks: &[Fk],
    with_links: bool,
) -> Result<HashMap<String, KeySet>, StoreError> {
    let mut wanted: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    for f in fks {
        let sets = wanted.entry(f.parent.clone()).or_default();
        if !sets.contains(&f.parent_cols) {
            sets.push(f.parent_cols.clone());
        }
    }
    let links = inp
        .config
        .graph
        .iter()
        .filter(|_| with_links)
        .flat_map(|g| g.links.iter().filter_map(|l| ColumnRef::parse(&l.to)));
    for r in links {
        wanted
            .entry(r.table_id())
            .or_default()
            .push(vec![r.column.clone()]);
    }
    let mut sets: HashMap<String, KeySet> = HashMap::new();
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
    Ok(sets)
}

/// The staged columns exist in CERT with a type that takes them, and CERT's NOT NULL columns
/// without a default are staged; records the finding and says whether the table can be scanned.
fn columns_match(
    tally: &mut Tally,
    table: &str,
    ct: &Table,
    path: &Path,
    kind: Option<wf_stores::config::StoreKind>,
) -> Result<bool, StoreError> {
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
    Ok(problems.is_empty())
}

/// What `scan_table` reads besides the table: the checks' shared inputs.
struct ScanInput<'a> {
    rules: &'a ValidationRules,
    fks: &'a [Fk],
    sets: &'a HashMap<String, KeySet>,
    same_store: &'a HashMap<String, Table>,
    strategy: Strategy,
    reference: bool,
    owned: Option<&'a KeySet>,
    unchanged: Option<&'a KeySet>,
}

/// Runs the row checks of one staged table (`path`) over the rows of `rows` (the table, or its
/// changes alone, of the same columns) in one pass, then the CERT conflict check and its
/// business rules; returns the rows checked.
async fn scan_table(
    tally: &mut Tally,
    inp: &ScanInput<'_>,
    table: &str,
    ct: &Table,
    (path, rows_file): (&Path, &Path),
    snap: &mut Snap,
) -> Result<u64, StoreError> {
    let Some(first) = batches(path)?.next().transpose()? else {
        return Ok(0);
    };
    let pk_idx = positions(&first, &ct.primary_key).unwrap_or_default();
    let example = |b: &RecordBatch, r: usize| -> String {
        tuple(b, &pk_idx, r)
            .map(|k| show(&k))
            .unwrap_or_else(|| format!("row {r}"))
    };
    let mut checks = NotNull::all(ct, &first);
    checks.extend(Unique::all(ct, &first));
    let mut refs = References::all(table, inp.fks, inp.sets, &first);
    let mut rows = 0u64;
    for b in batches(rows_file)? {
        let b = &b?;
        rows += b.num_rows() as u64;
        for c in checks.iter_mut() {
            c.on_batch(b, &example);
        }
        for c in refs.iter_mut() {
            c.on_batch(b, &example);
        }
    }
    let mut again = Vec::new();
    for (i, c) in checks.iter_mut().enumerate() {
        if c.end_of_pass()? {
            again.push(i);
        }
    }
    if !again.is_empty() {
        for b in batches(rows_file)? {
            let b = &b?;
            again.iter().for_each(|i| checks[*i].on_batch_again(b));
        }
    }
    for c in checks {
        c.finish(tally, table);
    }
    for mut c in refs {
        tally.cert_resolved_refs += c.resolve(table, inp.same_store, snap).await?;
        Box::new(c).finish(tally, table);
    }
    let conflicts = super::conflicts::ConflictInput {
        table,
        ct,
        path,
        rows: rows_file,
        strategy: inp.strategy,
        reference: inp.reference,
        owned: inp.owned,
        unchanged: inp.unchanged,
    };
    super::conflicts::check(tally, snap, &conflicts).await?;
    for rule in inp
        .rules
        .rules
        .iter()
        .filter(|r| super::business::rule_table(r).as_deref() == Some(table))
    {
        super::business::business_rule(tally, rule, table, rows_file, &example)?;
    }
    Ok(rows)
}
