//! Files of 128-bit key hashes (16 bytes each, little-endian): a refresh's gone keys, written
//! beside its staging and read back by the merge and the load.

use crate::error::StoreError;
use crate::keyset::HashSet128;
use crate::staging::staging_err;
use std::io::Write;
use std::path::{Path, PathBuf};

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
        Ok(HashWriter {
            path: path.to_path_buf(),
            partial,
            f: std::io::BufWriter::new(f),
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
    if bytes.len() % 16 != 0 {
        return Err(staging_err(path, "the file of key hashes is cut short"));
    }
    Ok(bytes
        .chunks_exact(16)
        .map(|c| u128::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect())
}
