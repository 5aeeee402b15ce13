//! Files of 128-bit key hashes (16 bytes each, little-endian, after a 16-byte header naming the
//! key hash): a refresh's gone keys, written beside its staging and read back by the merge and
//! the load, possibly by a wf started later (a resume after an upgrade): a file of another hash
//! function would match no key, and the gone rows would stay in CERT, so it is refused.

use crate::error::StoreError;
use crate::keyset::HashSet128;
use crate::staging::staging_err;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The header: which function hashed the keys (`keyset::KeyHasher`).
const HEADER: &[u8; 16] = b"wf keys xxh3-128";

/// Writes hashes as they come to `<path>.partial`; `finish` syncs it and renames it into place,
/// so a crash never leaves a file that looks whole.
pub struct HashWriter {
    path: PathBuf,
    partial: PathBuf,
    f: std::io::BufWriter<std::fs::File>,
}

impl HashWriter {
    pub fn create(path: &Path) -> Result<HashWriter, StoreError> {
        let partial = path.with_extension("partial");
        let f = std::fs::File::create(&partial).map_err(|e| staging_err(&partial, e))?;
        let mut f = std::io::BufWriter::new(f);
        f.write_all(HEADER).map_err(|e| staging_err(&partial, e))?;
        Ok(HashWriter {
            path: path.to_path_buf(),
            partial,
            f,
        })
    }

    pub fn push(&mut self, h: u128) -> Result<(), StoreError> {
        self.f
            .write_all(&h.to_le_bytes())
            .map_err(|e| staging_err(&self.partial, e))
    }

    pub fn finish(self) -> Result<(), StoreError> {
        let err = |e: std::io::Error| staging_err(&self.partial, e);
        let f = self.f.into_inner().map_err(|e| err(e.into_error()))?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&self.partial, &self.path).map_err(|e| staging_err(&self.path, e))
    }
}

/// Writes 128-bit hashes, little-endian, to `path` (synced, renamed into place).
pub fn write_hashes(path: &Path, hashes: impl Iterator<Item = u128>) -> Result<(), StoreError> {
    let mut w = HashWriter::create(path)?;
    for h in hashes {
        w.push(h)?;
    }
    w.finish()
}

/// Reads the hashes `write_hashes` wrote; a file cut short is an error naming it.
pub fn read_hashes(path: &Path) -> Result<HashSet128, StoreError> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_to_end(&mut f, &mut bytes))
        .map_err(|e| staging_err(path, e))?;
    let Some(hashes) = bytes.strip_prefix(HEADER) else {
        return Err(staging_err(
            path,
            "its key hashes were written by a wf that hashed keys differently (an upgrade while the refresh was down): nothing of this run is in CERT; start the refresh again",
        ));
    };
    if hashes.len() % 16 != 0 {
        return Err(staging_err(path, "the file of key hashes is cut short"));
    }
    Ok(hashes
        .chunks_exact(16)
        .map(|c| u128::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_come_back_and_a_file_without_the_header_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone");
        let hashes = [0u128, 1, u128::MAX, 7 << 100];
        write_hashes(&path, hashes.into_iter()).unwrap();
        assert_eq!(read_hashes(&path).unwrap(), hashes.into_iter().collect());
        // Hashes of an earlier wf (no header): refused, naming what to do.
        let old: Vec<u8> = hashes.iter().flat_map(|h| h.to_le_bytes()).collect();
        std::fs::write(&path, &old).unwrap();
        let e = read_hashes(&path).unwrap_err().to_string();
        assert!(
            e.contains("hashed keys differently") && e.contains("start the refresh again"),
            "{e}"
        );
        let mut cut = HEADER.to_vec();
        cut.extend_from_slice(&old[..20]);
        std::fs::write(&path, &cut).unwrap();
        assert!(read_hashes(&path)
            .unwrap_err()
            .to_string()
            .contains("cut short"));
    }
}
