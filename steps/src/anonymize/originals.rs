//! The originals' sorted keyed hashes (`leak-hashes.bin`) as `wf validate` looks CERT's values up
//! in them: in memory (`LeakSet`) up to `WF_LEAK_MEMORY_HASHES`, and past it in the file itself,
//! through a sparse index of every `BLOCK`-th hash (16 KB per million hashes) and one 4 KB read
//! per lookup, so the scan of CERT holds no list that grows with the district (issue 17).

use super::key::AnonKey;
use super::leak::{leak_hash, tagged, LeakSet, LEAK_MIN_LEN};
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Hashes per block of the file: one 4 KB read.
const BLOCK: usize = 512;

/// The originals of a run, in memory or looked up in their file.
pub enum Originals {
    Memory(LeakSet),
    File(FileSet),
}

/// A sorted hash file read block by block.
pub struct FileSet {
    file: File,
    path: PathBuf,
    /// The first hash of each block.
    firsts: Vec<u64>,
    len: usize,
}

impl Originals {
    /// The hashes of `path` (none when the run wrote no file); in memory when they are at most
    /// `budget`, else looked up in the file.
    pub fn open(path: &Path, budget: usize) -> std::io::Result<Originals> {
        let Ok(f) = File::open(path) else {
            return Ok(Originals::Memory(LeakSet::from_sorted(Vec::new())));
        };
        let len = (f.metadata()?.len() / 8) as usize;
        let mut r = BufReader::with_capacity(1 << 16, f.try_clone()?);
        let mut w = [0u8; 8];
        if len <= budget {
            let mut all = Vec::with_capacity(len);
            for _ in 0..len {
                r.read_exact(&mut w)?;
                all.push(u64::from_le_bytes(w));
            }
            return Ok(Originals::Memory(LeakSet::from_sorted(all)));
        }
        let mut firsts = Vec::with_capacity(len / BLOCK + 1);
        let mut last = 0u64;
        for i in 0..len {
            r.read_exact(&mut w)?;
            let h = u64::from_le_bytes(w);
            if h < last {
                return Err(std::io::Error::other(format!(
                    "{} is not sorted at hash {i}",
                    path.display()
                )));
            }
            last = h;
            if i % BLOCK == 0 {
                firsts.push(h);
            }
        }
        Ok(Originals::File(FileSet {
            file: f,
            path: path.to_path_buf(),
            firsts,
            len,
        }))
    }

    /// Whether `h` is an original's hash.
    pub fn contains(&self, h: u64) -> std::io::Result<bool> {
        match self {
            Originals::Memory(s) => Ok(s.contains(h)),
            Originals::File(f) => f.contains(h),
        }
    }

    /// Whether `value` is an original of one of the domains `tags` (none: of any), as
    /// `leak::is_original` says for a list in memory.
    pub fn has(&self, key: &AnonKey, value: &str, tags: &[u64]) -> std::io::Result<bool> {
        if value.len() < LEAK_MIN_LEN {
            return Ok(false);
        }
        let h = leak_hash(key, value);
        if tags.is_empty() {
            return self.contains(h);
        }
        for t in tags {
            if self.contains(tagged(h, *t))? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The file looked up, for error messages (`None`: in memory).
    pub fn path(&self) -> Option<&Path> {
        match self {
            Originals::Memory(_) => None,
            Originals::File(f) => Some(&f.path),
        }
    }
}

impl FileSet {
    fn contains(&self, h: u64) -> std::io::Result<bool> {
        let i = self.firsts.partition_point(|f| *f <= h);
        let Some(block) = i.checked_sub(1) else {
            return Ok(false);
        };
        let start = block * BLOCK;
        let n = BLOCK.min(self.len - start);
        let mut buf = [0u8; BLOCK * 8];
        self.file
            .read_exact_at(&mut buf[..n * 8], (start * 8) as u64)?;
        let at = |j: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&buf[j * 8..j * 8 + 8]);
            u64::from_le_bytes(w)
        };
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match at(mid).cmp(&h) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(true),
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_answers_as_the_list_in_memory_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leak-hashes.bin");
        let mut hashes: Vec<u64> = (0..5000u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        hashes.sort_unstable();
        hashes.dedup();
        let bytes: Vec<u8> = hashes.iter().flat_map(|h| h.to_le_bytes()).collect();
        std::fs::write(&path, bytes).unwrap();
        let memory = Originals::open(&path, usize::MAX).unwrap();
        let file = Originals::open(&path, 10).unwrap();
        assert!(matches!(memory, Originals::Memory(_)));
        assert!(matches!(file, Originals::File(_)));
        for h in hashes
            .iter()
            .copied()
            .chain([0, 1, u64::MAX, hashes[7] + 1])
        {
            let want = hashes.binary_search(&h).is_ok();
            assert_eq!(memory.contains(h).unwrap(), want, "{h}");
            assert_eq!(file.contains(h).unwrap(), want, "{h}");
        }
        let none = Originals::open(&dir.path().join("absent.bin"), 10).unwrap();
        assert!(!none.contains(hashes[0]).unwrap());
    }
}
