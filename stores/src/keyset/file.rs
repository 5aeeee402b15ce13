//! Spill and key files: keys framed one after another, read back in order, and sorted files
//! merged into one sorted stream.

use super::key::{decode, encode, Key};
use crate::error::StoreError;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;

/// A spill or key file's I/O error, naming the file.
pub(super) fn io_err(path: &std::path::Path, e: std::io::Error) -> StoreError {
    StoreError::Staging {
        path: path.to_path_buf(),
        message: format!("subset spill file: {e}"),
    }
}

/// Writes `k` to `w` as a spill run frames it: its encoding's length (u32, little-endian), then
/// the encoding.
pub(super) fn write_framed(w: &mut impl Write, k: &Key) -> std::io::Result<()> {
    let b = encode(k);
    w.write_all(&(b.len() as u32).to_le_bytes())
        .and_then(|()| w.write_all(&b))
}

/// Writes keys read as they come (a merge streams through, never held) to the new file `f` at
/// `path`, each framed by `write_framed`.
pub(super) fn write_stream<'k>(
    (path, f): (PathBuf, std::fs::File),
    keys: impl Iterator<Item = Result<std::borrow::Cow<'k, Key>, StoreError>>,
) -> Result<PathBuf, StoreError> {
    let mut w = BufWriter::new(f);
    for k in keys {
        write_framed(&mut w, k?.as_ref()).map_err(|e| io_err(&path, e))?;
    }
    w.flush().map_err(|e| io_err(&path, e))?;
    Ok(path)
}

/// Reads back a file of [`write_stream`], in order.
pub(super) struct FileKeys {
    path: PathBuf,
    r: BufReader<std::fs::File>,
}

impl FileKeys {
    pub(super) fn open(path: &std::path::Path) -> Result<FileKeys, StoreError> {
        let f = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
        Ok(FileKeys {
            path: path.to_path_buf(),
            r: BufReader::with_capacity(64 << 10, f),
        })
    }
}

impl Iterator for FileKeys {
    type Item = Result<Key, StoreError>;
    fn next(&mut self) -> Option<Self::Item> {
        let mut len = [0u8; 4];
        match self.r.read_exact(&mut len) {
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(e) => return Some(Err(io_err(&self.path, e))),
            Ok(()) => {}
        }
        let mut b = vec![0u8; u32::from_le_bytes(len) as usize];
        Some(
            self.r
                .read_exact(&mut b)
                .map(|()| decode(&b))
                .map_err(|e| io_err(&self.path, e)),
        )
    }
}

pub(super) type Source<'a> = Box<dyn Iterator<Item = Result<Key, StoreError>> + Send + 'a>;

/// The sorted union of sorted sources with no key in two of them.
pub(super) struct Merge<'a> {
    sources: Vec<Source<'a>>,
    heads: Vec<Option<Key>>,
}

impl<'a> Merge<'a> {
    pub(super) fn new(mut sources: Vec<Source<'a>>) -> Result<Merge<'a>, StoreError> {
        let heads = sources
            .iter_mut()
            .map(|s| s.next().transpose())
            .collect::<Result<_, _>>()?;
        Ok(Merge { sources, heads })
    }
}

impl Iterator for Merge<'_> {
    type Item = Result<Key, StoreError>;
    fn next(&mut self) -> Option<Self::Item> {
        let (i, _) = self
            .heads
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.as_ref().map(|k| (i, k)))
            .min_by(|a, b| a.1.cmp(b.1))?;
        let next = match self.sources[i].next().transpose() {
            Ok(n) => n,
            Err(e) => return Some(Err(e)),
        };
        std::mem::replace(&mut self.heads[i], next).map(Ok)
    }
}

/// The keys of a file [`write_key_file`] wrote, `n` at a time, in order.
pub fn key_file_chunks(path: &std::path::Path, n: usize) -> Result<Chunks<'static>, StoreError> {
    Ok(Chunks {
        inner: Box::new(FileKeys::open(path)?),
        n: n.max(1),
    })
}

/// Keys `n` at a time, from a set or a drained queue.
pub struct Chunks<'a> {
    pub(super) inner: Source<'a>,
    pub(super) n: usize,
}

impl Iterator for Chunks<'_> {
    type Item = Result<Vec<Key>, StoreError>;
    fn next(&mut self) -> Option<Self::Item> {
        let mut chunk = Vec::with_capacity(self.n);
        for item in self.inner.by_ref() {
            match item {
                Ok(k) => chunk.push(k),
                Err(e) => return Some(Err(e)),
            }
            if chunk.len() == self.n {
                break;
            }
        }
        (!chunk.is_empty()).then_some(Ok(chunk))
    }
}
