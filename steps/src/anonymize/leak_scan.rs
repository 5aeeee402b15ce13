//! The leak scan over every anonymized table, in bounded memory (issue 17): the originals'
//! keyed hashes come from sorted lists (in memory, or the per-table steps' files), and when they
//! are more than `WF_LEAK_MEMORY_HASHES` (8,000,000 by default: 64 MB of list and about 18 MB of
//! index and filter) the hash space is cut into equal ranges and the outputs are scanned once per
//! range, against that range's originals only. A hash outside the range is simply not in the
//! set, so each (value, domain) pair is looked up in exactly one pass and no leak is missed.

use super::column::Hashes;
use super::input::AnonError;
use super::key::AnonKey;
use super::leak::{scan_outputs, tag_id, LeakSet};
use super::report::{Report, TableOut, Written};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use wf_stores::staging::FileInfo;

/// Name of the file the scan writes every distinct original's hash to, sorted (little-endian
/// u64s), for the leak scan `wf validate` runs on CERT.
pub const LEAK_HASHES: &str = "leak-hashes.bin";

/// How many originals' hashes a scan holds in memory at most (`WF_LEAK_MEMORY_HASHES`).
pub fn budget() -> usize {
    crate::runs::budget_from_env("WF_LEAK_MEMORY_HASHES", 8_000_000)
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> AnonError {
    AnonError::Staging(wf_stores::StoreError::Staging {
        path: path.to_path_buf(),
        message: format!("{what}: {e}"),
    })
}

/// Where the originals' hashes are: each table's, and sorted files of little-endian u64s.
#[derive(Default)]
struct Sources {
    lists: Vec<Vec<u64>>,
    files: Vec<(PathBuf, u64)>,
}

impl Sources {
    fn total(&self) -> u64 {
        let listed: u64 = self.lists.iter().map(|l| l.len() as u64).sum();
        listed + self.files.iter().map(|(_, n)| n).sum::<u64>()
    }

    /// The distinct hashes in `[lo, hi]`, sorted. One range over lists only takes the largest
    /// list as it is, not copied into a growing one.
    fn range(&mut self, lo: u64, hi: u64, whole: bool) -> Result<Vec<u64>, AnonError> {
        let mut out: Vec<u64> = Vec::new();
        if whole {
            if let Some(i) = (0..self.lists.len()).max_by_key(|i| self.lists[*i].len()) {
                out = std::mem::take(&mut self.lists[i]);
            }
        }
        for l in &self.lists {
            let (a, b) = (
                l.partition_point(|h| *h < lo),
                l.partition_point(|h| *h <= hi),
            );
            out.extend_from_slice(&l[a..b]);
        }
        for (path, _) in &self.files {
            let f = std::fs::File::open(path).map_err(|e| io_err(path, "originals", e))?;
            for h in crate::runs::words(BufReader::with_capacity(1 << 16, f)) {
                let h = h.map_err(|e| io_err(path, "originals", e))?;
                if h > hi {
                    break; // sorted: nothing further is in range
                }
                if h >= lo {
                    out.push(h);
                }
            }
        }
        crate::runs::sort_hashes(&mut out);
        out.dedup();
        Ok(out)
    }

    /// Calls `f` with every hash in `[lo, hi]` of every source (a hash in several, once per
    /// source), without gathering them.
    fn each_in_range(&self, lo: u64, hi: u64, mut f: impl FnMut(u64)) -> Result<(), AnonError> {
        for l in &self.lists {
            let a = l.partition_point(|h| *h < lo);
            l[a..].iter().take_while(|h| **h <= hi).for_each(|h| f(*h));
        }
        for (path, _) in &self.files {
            let file = std::fs::File::open(path).map_err(|e| io_err(path, "written values", e))?;
            for h in crate::runs::words(BufReader::with_capacity(1 << 16, file)) {
                let h = h.map_err(|e| io_err(path, "written values", e))?;
                if h > hi {
                    break;
                }
                if h >= lo {
                    f(h);
                }
            }
        }
        Ok(())
    }
}

/// The written files of the tables scanned, split by how: those whose written values' hashes are
/// known (`Written`), looked up among the originals by hash and read only when one is found (to
/// count the leaks per field, exactly as a read of every file counts them), and the others, read.
#[derive(Default)]
struct Outputs {
    known: Vec<(String, FileInfo)>,
    hashes: Sources,
    read: Vec<(String, FileInfo)>,
}

impl Outputs {
    fn add(&mut self, table: String, info: FileInfo, written: Written) -> Result<(), AnonError> {
        match written {
            Written::Unknown => {
                self.read.push((table, info));
                return Ok(());
            }
            Written::Hashes(h) => self.hashes.lists.push(h.into_sorted()?),
            Written::File(path) => {
                let len =
                    std::fs::metadata(&path).map_err(|e| io_err(&path, "written values", e))?;
                self.hashes.files.push((path, len.len() / 8));
            }
        }
        self.known.push((table, info));
        Ok(())
    }

    /// The leaks per field among `originals` (one range of the hash space).
    fn leaks(
        &self,
        scanned: &HashMap<String, Vec<u64>>,
        key: &AnonKey,
        originals: &LeakSet,
        (lo, hi): (u64, u64),
    ) -> Result<Vec<(String, u64)>, AnonError> {
        let mut leaks = scan_outputs(&self.read, scanned, key, originals)?;
        let mut hits = Vec::new();
        self.hashes.each_in_range(lo, hi, |h| {
            if originals.contains(h) {
                hits.push(h);
            }
        })?;
        if !hits.is_empty() {
            // Rare (the run fails): the files are read to count the rows, per field.
            let hit = LeakSet::from_sorted(hits);
            leaks.extend(scan_outputs(&self.known, scanned, key, &hit)?);
        }
        Ok(leaks)
    }
}

/// The leak scan, domain by domain, over every field passed through unchanged (no rule, or
/// `keep`) and every field whose originals were collected (see `leak`), in every table; the
/// originals are each table's and those in `files` (sorted, as the per-table steps write them).
/// Writes every distinct original's hash to `hashes_out`; the report, or the leaks found.
///
/// With more than one range, a value that is an original in several domains whose hashes fall
/// in different ranges is counted once per range in a leak's count (the run fails either way).
pub fn scan(
    tables: Vec<TableOut>,
    files: Vec<PathBuf>,
    key: &AnonKey,
    hashes_out: &Path,
) -> Result<Report, AnonError> {
    scan_within(tables, files, key, hashes_out, budget())
}

/// `scan`, holding at most about `budget` originals at once.
fn scan_within(
    tables: Vec<TableOut>,
    files: Vec<PathBuf>,
    key: &AnonKey,
    hashes_out: &Path,
    budget: usize,
) -> Result<Report, AnonError> {
    let mut fields = Vec::new();
    let mut files_out = Vec::new();
    let mut outputs = Outputs::default();
    let mut sources = Sources::default();
    for t in tables {
        fields.extend(t.fields);
        files_out.push((t.table.clone(), t.info.clone()));
        outputs.add(t.table, t.info, t.written)?;
        sources.lists.push(t.originals.into_sorted()?);
    }
    for path in files {
        let len = std::fs::metadata(&path).map_err(|e| io_err(&path, "originals", e))?;
        sources.files.push((path, len.len() / 8));
    }
    let scanned: HashMap<String, Vec<u64>> = fields
        .iter()
        .filter(|f| f.scanned)
        .map(|f| {
            let tags = f.leak_tags.iter().map(|t| tag_id(key, t)).collect();
            (f.field.clone(), tags)
        })
        .collect();
    let passes = sources.total().div_ceil(budget.max(1) as u64).max(1);
    let file = std::fs::File::create(hashes_out).map_err(|e| io_err(hashes_out, "create", e))?;
    let mut w = BufWriter::with_capacity(1 << 16, file);
    let (mut distinct, mut leaks) = (0u64, BTreeMap::<String, u64>::new());
    for pass in 0..passes {
        let (lo, hi) = wf_stores::keyset::hash_range(pass, passes);
        let range = sources.range(lo, hi, passes == 1)?;
        distinct += range.len() as u64;
        range
            .iter()
            .try_for_each(|h| w.write_all(&h.to_le_bytes()))
            .map_err(|e| io_err(hashes_out, "write", e))?;
        let set = LeakSet::from_sorted(range);
        if !set.is_empty() {
            for (field, n) in outputs.leaks(&scanned, key, &set, (lo, hi))? {
                *leaks.entry(field).or_default() += n;
            }
        }
    }
    w.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .map_err(|e| io_err(hashes_out, "write", e))?;
    if !leaks.is_empty() {
        let list = leaks
            .iter()
            .map(|(f, n)| format!("{f} ({n} values)"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(AnonError::Leak(list));
    }
    Ok(Report {
        key_fingerprint: key.fingerprint(),
        fields,
        files: files_out,
        leaks: Vec::new(),
        originals: distinct,
    })
}

/// Writes `hashes`' distinct values, sorted, to `path` (a per-table step's originals); how many.
pub(crate) fn write_distinct(hashes: Hashes, path: &Path) -> Result<u64, AnonError> {
    let file = std::fs::File::create(path).map_err(|e| io_err(path, "create", e))?;
    let mut w = BufWriter::with_capacity(1 << 16, file);
    let (mut n, mut last) = (0u64, None);
    for h in hashes.merged()? {
        let h = h?;
        if last != Some(h) {
            w.write_all(&h.to_le_bytes())
                .map_err(|e| io_err(path, "write", e))?;
            (n, last) = (n + 1, Some(h));
        }
    }
    w.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .map_err(|e| io_err(path, "write", e))?;
    Ok(n)
}

/// The file of `table`'s written values' hashes beside a part's originals (`originals.bin`):
/// `written/<table>.bin`. A path, not a field of `AnonPart`, so journals written before it
/// still read; a part without the file has its tables scanned by reading them.
pub fn written_file(originals: &Path, table: &str) -> PathBuf {
    originals
        .with_file_name("written")
        .join(format!("{table}.bin"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anonymize::leak::{leak_hash, tagged};
    use crate::anonymize::report::FieldReport;
    use wf_stores::staging::{arrow_schema, ColType, StagedColumn, StagingWriter, Value};

    /// A kept column holding `rows` emails, of which every third is one of the originals; the
    /// originals are split between an in-memory list and a file, in two domains.
    fn fixture(dir: &Path, rows: usize) -> (PathBuf, PathBuf, Vec<u64>, Vec<u64>) {
        let key = AnonKey::from_bytes(b"leak-scan-test");
        let col = StagedColumn {
            name: "contact".into(),
            source_type: "text".into(),
            col_type: ColType::Text,
        };
        let path = dir.join("hcp1.audit.arrow");
        let schema = arrow_schema("hcp1", "audit", std::slice::from_ref(&col));
        let mut w = StagingWriter::create(&path, schema, 64).unwrap();
        for i in 0..rows {
            let v = format!("person{i}@north.example");
            w.push(0, Value::Text(&v)).unwrap();
            w.end_row().unwrap();
        }
        w.finish().unwrap();
        let (field, detector) = (tag_id(&key, "field:x"), tag_id(&key, "detector:email"));
        let (mut list, mut file) = (Vec::new(), Vec::new());
        for i in (0..rows).step_by(3) {
            let h = leak_hash(&key, &format!("person{i}@north.example"));
            list.push(tagged(h, detector));
            file.push(tagged(h, field));
        }
        // Originals of no written value, so most of the set is not hit.
        for i in 0..rows {
            list.push(tagged(
                leak_hash(&key, &format!("other{i}@x.example")),
                field,
            ));
        }
        list.sort_unstable();
        file.sort_unstable();
        let originals = dir.join("originals.bin");
        crate::runs::write_words(std::fs::File::create(&originals).unwrap(), &file).unwrap();
        (path, originals, list, file)
    }

    #[test]
    fn every_budget_finds_the_same_leaks_and_writes_the_same_originals() {
        let dir = tempfile::tempdir().unwrap();
        let key = AnonKey::from_bytes(b"leak-scan-test");
        let (path, file, list, in_file) = fixture(dir.path(), 3000);
        let mut expected: Vec<u64> = list.iter().chain(&in_file).copied().collect();
        expected.sort_unstable();
        // What the workers gather as they write the kept column (its domain: detector:email).
        let detector = tag_id(&key, "detector:email");
        let written: Vec<u64> = (0..3000)
            .map(|i| {
                tagged(
                    leak_hash(&key, &format!("person{i}@north.example")),
                    detector,
                )
            })
            .collect();
        let written_path = dir.path().join("written.bin");
        let mut sorted = written.clone();
        sorted.sort_unstable();
        crate::runs::write_words(std::fs::File::create(&written_path).unwrap(), &sorted).unwrap();
        let modes = [usize::MAX, 5000, 1000, 7]
            .into_iter()
            .flat_map(|b| (0..3).map(move |m| (b, m)));
        for (budget, mode) in modes {
            let written = match mode {
                0 => Written::Unknown,
                1 => {
                    let mut h = Hashes::default();
                    written.iter().for_each(|x| h.push(*x));
                    Written::Hashes(h)
                }
                _ => Written::File(written_path.clone()),
            };
            let mut originals = Hashes::default();
            list.iter().for_each(|h| originals.push(*h));
            let info = wf_stores::staging::FileInfo {
                path: path.clone(),
                rows: 3000,
                bytes: 0,
                sha256: String::new(),
            };
            let table = TableOut {
                table: "hcp1.audit".into(),
                info,
                fields: vec![FieldReport {
                    field: "hcp1.audit.contact".into(),
                    rule: Some("keep".into()),
                    detected: Vec::new(),
                    changed: 0,
                    scanned: true,
                    leak_tags: vec!["detector:email".into()],
                }],
                originals,
                written,
            };
            let out = dir.path().join(format!("leak-{budget}-{mode}.bin"));
            let e = scan_within(vec![table], vec![file.clone()], &key, &out, budget)
                .expect_err("a leak");
            assert!(
                e.to_string().contains("hcp1.audit.contact (1000 values)"),
                "budget {budget}, mode {mode}: {e}"
            );
            let written = std::fs::read(&out).unwrap();
            let got: Vec<u64> = crate::runs::words(std::io::Cursor::new(written))
                .map(|h| h.unwrap())
                .collect();
            assert_eq!(got, expected, "budget {budget}");
        }
    }
}
