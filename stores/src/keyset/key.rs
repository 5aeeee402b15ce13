//! A key (one row's projected values, as text), its bytes in spill and key files, and its
//! 128-bit hash, with the sets and maps that hold such hashes.

use std::collections::HashSet;
use std::hash::Hasher;

/// Column values of one row, as text (`None` for NULL), in the order of the projection asked for.
pub type Key = Vec<Option<String>>;

/// A key's bytes: per value a tag (0 null, 1 text), a big-endian length and the text.
pub(super) fn encode(k: &Key) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * k.len());
    for v in k {
        match v {
            None => out.push(0),
            Some(s) => {
                out.push(1);
                out.extend_from_slice(&(s.len() as u32).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
    out
}

pub(super) fn decode(mut b: &[u8]) -> Key {
    let mut k = Vec::new();
    while let Some((&tag, rest)) = b.split_first() {
        if tag == 0 || rest.len() < 4 {
            k.push(None);
            b = rest;
        } else {
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let end = (4 + len).min(rest.len());
            k.push(Some(String::from_utf8_lossy(&rest[4..end]).into_owned()));
            b = &rest[end..];
        }
    }
    k
}

/// Sets of 128-bit hashes (keyed fingerprints, row and key hashes: uniform already), hashed by
/// folding them to 64 bits rather than by SipHash again, which cost more than the sets' use.
pub type HashSet128 = HashSet<u128, std::hash::BuildHasherDefault<Fold128>>;
/// Maps keyed by 128-bit hashes (see `HashSet128`).
pub type HashMap128<V> = std::collections::HashMap<u128, V, std::hash::BuildHasherDefault<Fold128>>;

/// The hasher of `HashSet128`: a u128 folded to 64 bits (other input mixed byte by byte).
#[derive(Default)]
pub struct Fold128(u64);

impl Hasher for Fold128 {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u128(&mut self, x: u128) {
        self.0 ^= (x as u64) ^ ((x >> 64) as u64);
    }
}

/// The key whose parts' text bytes are `parts` (`None`: NULL), as the key files hold it.
pub fn key_of_parts(parts: &[Option<&[u8]>]) -> Key {
    let text = |p: &Option<&[u8]>| p.map(|b| String::from_utf8_lossy(b).into_owned());
    parts.iter().map(text).collect()
}

/// A key's 128-bit hash in its text form (as the plan's key files and manifests hold keys).
pub fn key_hash(k: &Key) -> u128 {
    key_hash_of(k.iter().map(|v| v.as_deref().map(str::as_bytes)))
}

/// `key_hash` of a key given as its parts' text bytes (`None`: NULL), without building the key.
pub fn key_hash_of<'a>(parts: impl Iterator<Item = Option<&'a [u8]>>) -> u128 {
    let mut h = KeyHasher::new();
    parts.for_each(|p| h.part(p));
    h.finish()
}

/// `key_hash`, part by part: the parts serialized (a tag, then for text a little-endian length
/// and the bytes) into a buffer, hashed once with XXH3-128 at the end. A refresh hashes every key
/// of its largest tables twice (PROD's and the replaced staging's); SipHash-1-3 fed part by part
/// was most of that comparison's CPU. Persisted only in a refresh's gone-key files, whose header
/// names this function (`hash_file::HEADER`: change both together).
pub struct KeyHasher {
    inline: [u8; KEY_INLINE],
    len: usize,
    /// The bytes, once a long key outgrows `inline`.
    long: Vec<u8>,
}

/// Bytes of a key serialized without a heap allocation (a bigint key takes 10 to 29).
const KEY_INLINE: usize = 64;

impl KeyHasher {
    pub fn new() -> KeyHasher {
        KeyHasher {
            inline: [0; KEY_INLINE],
            len: 0,
            long: Vec::new(),
        }
    }

    #[inline(always)]
    fn push(&mut self, bytes: &[u8]) {
        if self.long.is_empty() && self.len + bytes.len() <= KEY_INLINE {
            self.inline[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
            return;
        }
        if self.long.is_empty() {
            self.long.extend_from_slice(&self.inline[..self.len]);
        }
        self.long.extend_from_slice(bytes);
    }

    /// The next part's text bytes (`None`: NULL).
    #[inline]
    pub fn part(&mut self, p: Option<&[u8]>) {
        match p {
            None => self.push(&[0]),
            Some(s) => {
                self.push(&[1]);
                self.push(&(s.len() as u64).to_le_bytes());
                self.push(s);
            }
        }
    }

    pub fn finish(&self) -> u128 {
        match self.long.is_empty() {
            true => twox_hash::XxHash3_128::oneshot(&self.inline[..self.len]),
            false => twox_hash::XxHash3_128::oneshot(&self.long),
        }
    }
}

impl Default for KeyHasher {
    fn default() -> KeyHasher {
        KeyHasher::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hashes_tell_parts_apart_and_long_keys_hash_whole() {
        let k =
            |parts: &[Option<&str>]| key_hash(&parts.iter().map(|p| p.map(String::from)).collect());
        assert_ne!(k(&[Some("a"), Some("bc")]), k(&[Some("ab"), Some("c")]));
        assert_ne!(k(&[None, Some("")]), k(&[Some(""), None]));
        assert_ne!(k(&[Some("")]), k(&[]));
        let long = "x".repeat(200);
        let (a, b) = (format!("{long}a"), format!("{long}b"));
        assert_ne!(k(&[Some(&a)]), k(&[Some(&b)]));
        // The same bytes, whether they stayed inline or outgrew the buffer part by part.
        let mut bytes = Vec::new();
        for p in [&long[..40], &long[40..]] {
            bytes.push(1);
            bytes.extend_from_slice(&(p.len() as u64).to_le_bytes());
            bytes.extend_from_slice(p.as_bytes());
        }
        let split = k(&[Some(&long[..40]), Some(&long[40..])]);
        assert_eq!(split, twox_hash::XxHash3_128::oneshot(&bytes));
    }
}
