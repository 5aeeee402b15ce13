//! Keys set aside on disk while a table's district keys stream from PROD once: a refresh by
//! change column compares them with the replaced run's keys one range of key hashes at a time
//! (`WF_DIFF_MEMORY_ROWS` earlier keys in memory at most), so the keys outside the range in
//! memory wait here, with their hash, for their range's pass. An unnamed file in the staging
//! directory (on the data disk, not `TMPDIR`); the OS deletes it.

use crate::error::StoreError;
use crate::keyset::Key;
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Written keys of some ranges of hashes, read back once per range.
pub struct KeySpill {
    dir: PathBuf,
    w: BufWriter<std::fs::File>,
}

/// The length written for a NULL part.
const NULL: u32 = u32::MAX;

impl KeySpill {
    /// A new spill in `dir`.
    pub fn new(dir: &Path) -> Result<KeySpill, StoreError> {
        let f = tempfile::tempfile_in(dir).map_err(|e| spill_err(dir, e))?;
        Ok(KeySpill {
            dir: dir.to_path_buf(),
            w: BufWriter::with_capacity(1 << 16, f),
        })
    }

    /// Sets aside the key whose parts' text is `parts` (`None`: NULL) and whose hash is `h`.
    pub fn push(&mut self, h: u128, parts: &[Option<&[u8]>]) -> Result<(), StoreError> {
        let mut put = || -> std::io::Result<()> {
            self.w.write_all(&h.to_le_bytes())?;
            self.w.write_all(&(parts.len() as u32).to_le_bytes())?;
            for p in parts {
                match p {
                    None => self.w.write_all(&NULL.to_le_bytes())?,
                    Some(b) => {
                        self.w.write_all(&(b.len() as u32).to_le_bytes())?;
                        self.w.write_all(b)?;
                    }
                }
            }
            Ok(())
        };
        put().map_err(|e| spill_err(&self.dir, e))
    }

    /// Every key set aside, in order, with its hash (key text as `extract_changed` builds it);
    /// read from the start on every call (nothing is set aside after the first).
    pub fn keys(
        &mut self,
    ) -> Result<impl Iterator<Item = Result<(u128, Key), StoreError>> + '_, StoreError> {
        let dir = &self.dir;
        self.w.flush().map_err(|e| spill_err(dir, e))?;
        let f = self.w.get_mut();
        f.rewind().map_err(|e| spill_err(dir, e))?;
        let mut r = BufReader::with_capacity(1 << 16, f);
        Ok(std::iter::from_fn(move || match next_key(&mut r) {
            Ok(None) => None,
            Ok(Some(k)) => Some(Ok(k)),
            Err(e) => Some(Err(spill_err(dir, e))),
        }))
    }
}

/// The next (hash, key) of a spill; `None` at its end.
fn next_key(r: &mut impl Read) -> std::io::Result<Option<(u128, Key)>> {
    let mut h = [0u8; 16];
    match r.read_exact(&mut h) {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        other => other?,
    }
    let mut word = [0u8; 4];
    r.read_exact(&mut word)?;
    let n = u32::from_le_bytes(word);
    let mut key = Vec::with_capacity(n as usize);
    for _ in 0..n {
        r.read_exact(&mut word)?;
        let len = u32::from_le_bytes(word);
        if len == NULL {
            key.push(None);
            continue;
        }
        let mut b = vec![0u8; len as usize];
        r.read_exact(&mut b)?;
        key.push(Some(String::from_utf8_lossy(&b).into_owned()));
    }
    Ok(Some((u128::from_le_bytes(h), key)))
}

fn spill_err(dir: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Staging {
        path: dir.to_path_buf(),
        message: format!("setting keys aside for a later pass: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys come back as they went in: several parts, NULLs, empty text, non-ASCII.
    #[test]
    fn keys_come_back_in_order_with_their_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = KeySpill::new(dir.path()).unwrap();
        let keys: Vec<(u128, Vec<Option<&[u8]>>)> = vec![
            (1, vec![Some(b"42")]),
            (u128::MAX, vec![Some(b"a"), None, Some(b"")]),
            (7 << 70, vec![Some("Zoë".as_bytes()), Some(b"x\ty")]),
        ];
        for (h, parts) in &keys {
            s.push(*h, parts).unwrap();
        }
        let got: Vec<(u128, Key)> = s.keys().unwrap().map(|k| k.unwrap()).collect();
        let again: Vec<(u128, Key)> = s.keys().unwrap().map(|k| k.unwrap()).collect();
        assert_eq!(got, again, "read again from the start");
        let want: Vec<(u128, Key)> = keys
            .iter()
            .map(|(h, parts)| {
                let text = |p: &Option<&[u8]>| p.map(|b| String::from_utf8_lossy(b).into_owned());
                (*h, parts.iter().map(text).collect())
            })
            .collect();
        assert_eq!(got, want);
    }
}
