//! Reading a staging file while checking it against the digest its producer recorded, in the same
//! pass: the bytes are hashed as the Arrow reader pulls them, and whatever it skipped (the file's
//! head, padding, the footer it read first) is hashed at the end. A file whose hash differs, or that
//! cannot be decoded although it was whole when written, is `StoreError::Corrupt`: the step that
//! wrote it must run again. Size and mtime prove nothing: a flipped byte keeps both.

use arrow_array::RecordBatch;
use arrow_schema::{ArrowError, SchemaRef};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Reads further than this ahead of the hashed prefix are not hashed now (the footer read at open);
/// the end of the pass covers them. Smaller gaps (a message header, padding) are read and hashed.
const MAX_GAP: u64 = 1 << 20;

/// The file's hash differs from the recorded one.
#[derive(Debug, thiserror::Error)]
#[error(
    "its digest is {found}, not {expected} as recorded when it was written: it changed on disk"
)]
pub struct Mismatch {
    pub expected: String,
    pub found: String,
}

/// The digest each journaled staging file must have, registered by the step that consumes it
/// (from its producer's journaled output). `staging::open` checks a registered file on its first
/// full read in this process; later passes over an unchanged file are not hashed again.
static EXPECTED: Mutex<Option<HashMap<PathBuf, Expected>>> = Mutex::new(None);

struct Expected {
    sha256: String,
    /// (length, mtime) at the last successful check; `None` until checked.
    checked: Option<(u64, std::time::SystemTime)>,
}

/// Registers the digest that `path` must have (replacing an earlier registration).
pub fn expect(path: &Path, sha256: &str) {
    let mut g = EXPECTED.lock().unwrap_or_else(|p| p.into_inner());
    g.get_or_insert_with(HashMap::new).insert(
        path.to_path_buf(),
        Expected {
            sha256: sha256.to_string(),
            checked: None,
        },
    );
}

/// `path` was just written again with `sha256` (its producer ran again in this process): a
/// registration made from the earlier output's record now names the new one, still to be checked
/// on its first read. Otherwise a consumer that does not register (the registry is per process)
/// would find the new file "changed on disk" against the stale hash, and the producer would run
/// again for nothing, until the run fails.
pub fn rewritten(path: &Path, sha256: &str) {
    let mut g = EXPECTED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(e) = g.as_mut().and_then(|m| m.get_mut(path)) {
        e.sha256 = sha256.to_string();
        e.checked = None;
    }
}

fn stamp(path: &Path) -> Option<(u64, std::time::SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// The digest to check `path` against now: registered and not yet checked as it is.
pub(crate) fn due(path: &Path) -> Option<String> {
    let g = EXPECTED.lock().unwrap_or_else(|p| p.into_inner());
    let e = g.as_ref()?.get(path)?;
    match e.checked {
        Some(s) if stamp(path) == Some(s) => None,
        _ => Some(e.sha256.clone()),
    }
}

/// Whether `path`, registered and not yet checked as it is, no longer has its recorded digest:
/// hashed whole now. For a reader that stopped before the end of a file, where its pass would
/// have checked it (an error the damaged bytes themselves may have caused).
pub fn mismatch_now(path: &Path) -> Option<Mismatch> {
    let expected = due(path)?;
    let m = differs(path, &expected);
    if m.is_none() {
        checked(path, &expected);
    }
    m
}

/// Whether `path`, hashed whole now, differs from `expected` (unreadable: not known to differ).
pub fn differs(path: &Path, expected: &str) -> Option<Mismatch> {
    let found = wf_engine::digest::file(path, Some(expected)).ok()?;
    (found != expected).then(|| Mismatch {
        expected: expected.to_string(),
        found,
    })
}

fn checked(path: &Path, sha256: &str) {
    let mut g = EXPECTED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(e) = g.as_mut().and_then(|m| m.get_mut(path)) {
        if e.sha256 == sha256 {
            e.checked = stamp(path);
        }
    }
}

/// A file that hashes the bytes it serves, in file order.
pub struct HashingFile {
    file: File,
    pos: u64,
    hashed: u64,
    hasher: wf_engine::digest::Hasher,
    /// Off for a file read unchecked: it costs nothing then.
    enabled: bool,
}

impl HashingFile {
    /// Hashes as `expected` was made (`None`: reads unchecked).
    fn new(file: File, expected: Option<&str>) -> HashingFile {
        HashingFile {
            file,
            pos: 0,
            hashed: 0,
            hasher: expected.map_or_else(Default::default, wf_engine::digest::Hasher::like),
            enabled: expected.is_some(),
        }
    }

    /// Feeds `data`, read at offset `at`, into the hash where it extends the hashed prefix.
    fn absorb(&mut self, at: u64, data: &[u8]) -> std::io::Result<()> {
        if !self.enabled {
            return Ok(());
        }
        if at > self.hashed {
            let gap = at - self.hashed;
            if gap > MAX_GAP {
                return Ok(());
            }
            let mut buf = vec![0u8; gap as usize];
            self.file.read_exact_at(&mut buf, self.hashed)?;
            self.hasher.update(&buf);
            self.hashed = at;
        }
        let end = at + data.len() as u64;
        if end > self.hashed {
            let skip = (self.hashed - at) as usize;
            self.hasher.update(&data[skip..]);
            self.hashed = end;
        }
        Ok(())
    }

    /// Hashes what is left after the hashed prefix and returns the whole file's digest (hex).
    fn finish(&mut self) -> std::io::Result<String> {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = self.file.read_at(&mut buf, self.hashed)?;
            if n == 0 {
                break;
            }
            self.hasher.update(&buf[..n]);
            self.hashed += n as u64;
        }
        Ok(std::mem::take(&mut self.hasher).finish())
    }
}

impl Read for HashingFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        let at = self.pos;
        self.pos += n as u64;
        self.absorb(at, &buf[..n])?;
        Ok(n)
    }
}

impl Seek for HashingFile {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = self.file.seek(to)?;
        Ok(self.pos)
    }
}

type Inner = arrow_ipc::reader::FileReader<BufReader<HashingFile>>;

/// A staging file read batch by batch; with an expected digest, checked as it is read (the check
/// completes when the last batch has been read: a reader dropped early checks nothing).
pub struct Staged {
    inner: Inner,
    path: PathBuf,
    expected: Option<String>,
    finished: bool,
}

impl Staged {
    /// Opens `path`; `expected` is the digest its producer recorded, if the caller has it.
    pub(crate) fn open(path: &Path, expected: Option<&str>) -> Result<Staged, ArrowError> {
        let file = File::open(path).map_err(ArrowError::from)?;
        let hashing = HashingFile::new(file, expected);
        let inner = Inner::try_new(BufReader::new(hashing), None).map_err(|e| match expected {
            Some(sha) => corrupt(sha, format!("cannot be decoded ({e})")),
            None => e,
        })?;
        Ok(Staged {
            inner,
            path: path.to_path_buf(),
            expected: expected.map(str::to_string),
            finished: false,
        })
    }

    pub fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    pub fn num_batches(&self) -> usize {
        self.inner.num_batches()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn verify(&mut self) -> Option<ArrowError> {
        let expected = self.expected.take()?;
        match self.inner.get_mut().get_mut().finish() {
            Ok(found) if found == expected => {
                checked(&self.path, &expected);
                None
            }
            Ok(found) => Some(ArrowError::ExternalError(Box::new(Mismatch {
                expected,
                found,
            }))),
            Err(e) => Some(ArrowError::from(e)),
        }
    }
}

fn corrupt(expected: &str, found: String) -> ArrowError {
    ArrowError::ExternalError(Box::new(Mismatch {
        expected: expected.to_string(),
        found,
    }))
}

impl Iterator for Staged {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        match self.inner.next() {
            Some(Ok(b)) => Some(Ok(b)),
            Some(Err(e)) => {
                self.finished = true;
                // A file that was whole when written and no longer decodes was changed on disk.
                Some(Err(match self.expected.take() {
                    Some(sha) => corrupt(&sha, format!("a batch cannot be decoded ({e})")),
                    None => e,
                }))
            }
            None => {
                self.finished = true;
                self.verify().map(Err)
            }
        }
    }
}

/// True when `e` says a verified file changed on disk.
pub(crate) fn mismatch(e: &ArrowError) -> Option<&Mismatch> {
    match e {
        ArrowError::ExternalError(b) => b.downcast_ref::<Mismatch>(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::staging::{arrow_schema, ColType, StagedColumn, StagingWriter, Value};

    fn write(dir: &Path, rows: usize) -> crate::staging::FileInfo {
        let cols = vec![
            StagedColumn {
                name: "id".into(),
                source_type: "bigint".into(),
                col_type: ColType::Int,
            },
            StagedColumn {
                name: "name".into(),
                source_type: "text".into(),
                col_type: ColType::Text,
            },
        ];
        let path = dir.join("t.arrow");
        let mut w = StagingWriter::create(&path, arrow_schema("s", "t", &cols), 1000).unwrap();
        for i in 0..rows {
            w.push(0, Value::Int(i as i64)).unwrap();
            w.push(1, Value::Text(&format!("name-{i}"))).unwrap();
            w.end_row().unwrap();
        }
        w.finish().unwrap()
    }

    fn read_all(info: &crate::staging::FileInfo) -> Result<usize, ArrowError> {
        let r = Staged::open(&info.path, Some(&info.sha256))?;
        let mut n = 0;
        for b in r {
            n += b?.num_rows();
        }
        Ok(n)
    }

    #[test]
    fn a_whole_file_passes_and_every_byte_is_covered() {
        let dir = tempfile::tempdir().unwrap();
        for rows in [0, 1, 5000, 300_000] {
            let info = write(dir.path(), rows);
            assert_eq!(read_all(&info).unwrap(), rows);
        }
    }

    #[test]
    fn one_flipped_byte_anywhere_is_caught_with_size_and_mtime_kept() {
        let dir = tempfile::tempdir().unwrap();
        let info = write(dir.path(), 20_000);
        let clean = std::fs::read(&info.path).unwrap();
        let step = (clean.len() / 37).max(1);
        for at in (0..clean.len()).step_by(step).chain([clean.len() - 1]) {
            let mut bad = clean.clone();
            bad[at] ^= 0x01;
            std::fs::write(&info.path, &bad).unwrap();
            let e = read_all(&info).expect_err("a flipped byte must not pass");
            assert!(mismatch(&e).is_some(), "byte {at} of {}: {e}", clean.len());
        }
    }

    #[test]
    fn a_sha256_recorded_by_an_earlier_wf_is_still_checked_as_sha256() {
        use sha2::Digest;
        let dir = tempfile::tempdir().unwrap();
        let mut info = write(dir.path(), 20_000);
        assert!(info.sha256.starts_with("xxh3:"), "{}", info.sha256);
        let bytes = std::fs::read(&info.path).unwrap();
        info.sha256 = hex::encode(sha2::Sha256::digest(&bytes));
        assert_eq!(read_all(&info).unwrap(), 20_000);
        assert!(differs(&info.path, &info.sha256).is_none());
        let mut bad = bytes.clone();
        bad[bytes.len() / 2] ^= 0x01;
        std::fs::write(&info.path, &bad).unwrap();
        let e = read_all(&info).expect_err("a flipped byte must not pass");
        assert!(mismatch(&e).is_some(), "{e}");
        assert!(differs(&info.path, &info.sha256).is_some());
    }

    #[test]
    fn a_file_checked_whole_after_a_reader_stopped_early() {
        let dir = tempfile::tempdir().unwrap();
        let info = write(dir.path(), 5000);
        assert!(differs(&info.path, &info.sha256).is_none());
        expect(&info.path, &info.sha256);
        assert!(mismatch_now(&info.path).is_none(), "whole: no mismatch");
        assert!(due(&info.path).is_none(), "checked once, not due again");
        let mut bad = std::fs::read(&info.path).unwrap();
        bad[100] ^= 0x01;
        std::fs::write(&info.path, &bad).unwrap();
        assert!(differs(&info.path, &info.sha256).is_some());
        expect(&info.path, &info.sha256);
        let m = mismatch_now(&info.path).expect("a flipped byte");
        assert_eq!(m.expected, info.sha256);
    }

    #[test]
    fn a_file_its_producer_wrote_again_is_checked_against_the_new_hash() {
        // A consumer registered the earlier output; the producer ran again in this process and
        // wrote other bytes (its inputs changed): a reader that registers nothing must not find
        // the new file "changed on disk", and a flipped byte in it must still be caught.
        let dir = tempfile::tempdir().unwrap();
        let old = write(dir.path(), 10);
        expect(&old.path, &old.sha256);
        let new = write(dir.path(), 11);
        assert_ne!(old.sha256, new.sha256);
        assert_eq!(due(&new.path).as_deref(), Some(new.sha256.as_str()));
        assert!(mismatch_now(&new.path).is_none(), "the new file as written");
        let mut bad = std::fs::read(&new.path).unwrap();
        bad[100] ^= 0x01;
        std::fs::write(&new.path, &bad).unwrap();
        assert!(
            mismatch_now(&new.path).is_some(),
            "a flipped byte after the rewrite"
        );
    }
}
