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

    /// The keys set aside whose hash `keep` accepts, in order, with their hash (key text as
    /// `extract_changed` builds it); the others are skipped unbuilt (a pass keeps the few keys
    /// new to the district of the many it reads). Read from the start on every call (nothing is
    /// set aside after the first).
    pub fn keys<'a, F: FnMut(u128) -> bool + 'a>(
        &'a mut self,
        mut keep: F,
    ) -> Result<impl Iterator<Item = Result<(u128, Key), StoreError>> + 'a, StoreError> {
        let dir = &self.dir;
        self.w.flush().map_err(|e| spill_err(dir, e))?;
        let f = self.w.get_mut();
        f.rewind().map_err(|e| spill_err(dir, e))?;
        let mut r = BufReader::with_capacity(1 << 16, f);
        let mut scratch = Vec::new();
        Ok(std::iter::from_fn(move || loop {
            match next_key(&mut r, &mut keep, &mut scratch) {
                Ok(Next::End) => return None,
                Ok(Next::Skipped) => continue,
                Ok(Next::Key(h, k)) => return Some(Ok((h, k))),
                Err(e) => return Some(Err(spill_err(dir, e))),
            }
        }))
    }
}

/// What `next_key` read.
enum Next {
    End,
    Skipped,
    Key(u128, Key),
}

/// The next key of a spill, built only if `keep` accepts its hash (its parts read into
/// `scratch` otherwise).
fn next_key(
    r: &mut impl Read,
    keep: &mut impl FnMut(u128) -> bool,
    scratch: &mut Vec<u8>,
) -> std::io::Result<Next> {
    let mut h = [0u8; 16];
    match r.read_exact(&mut h) {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(Next::End),
        other => other?,
    }
    let h = u128::from_le_bytes(h);
    let wanted = keep(h);
    let mut word = [0u8; 4];
    r.read_exact(&mut word)?;
    let n = u32::from_le_bytes(word);
    let mut key = Vec::with_capacity(if wanted { n as usize } else { 0 });
    for _ in 0..n {
        r.read_exact(&mut word)?;
        let len = u32::from_le_bytes(word);
        if len == NULL {
            key.push(None);
            continue;
        }
        scratch.resize(len as usize, 0);
        r.read_exact(scratch)?;
        if wanted {
            key.push(Some(String::from_utf8_lossy(scratch).into_owned()));
        }
    }
    Ok(if wanted {
        Next::Key(h, key)
    } else {
        Next::Skipped
    })
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
        let got: Vec<(u128, Key)> = s.keys(|_| true).unwrap().map(|k| k.unwrap()).collect();
        let again: Vec<(u128, Key)> = s.keys(|_| true).unwrap().map(|k| k.unwrap()).collect();
        assert_eq!(got, again, "read again from the start");
        // Only the kept hashes come back; the skipped keys' bytes do not shift the next.
        let odd: Vec<(u128, Key)> = s.keys(|h| h != 1).unwrap().map(|k| k.unwrap()).collect();
        assert_eq!(odd, got[1..]);
        let want: Vec<(u128, Key)> = keys
            .iter()
            .map(|(h, parts)| (*h, crate::keyset::key_of_parts(parts)))
            .collect();
        assert_eq!(got, want);
    }
}
