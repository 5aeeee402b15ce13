//! Cells and keys of staged files as the validation checks compare them: one text form per value,
//! 64-bit hashes of key tuples, batches read one at a time. Shared by every check.

use arrow_array::RecordBatch;
use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use wf_stores::staging::{open, value_at, Value};
use wf_stores::subset::Key;
use wf_stores::StoreError;

/// Keys per CERT lookup.
pub(crate) const LOOKUP: usize = 1000;

/// A staged cell's text (bytes as hex); `None` for NULL.
pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Int(x) => Some(x.to_string()),
        Value::Float(x) => Some(x.to_string()),
        Value::Bool(x) => Some(x.to_string()),
        Value::Text(t) => Some(t.to_string()),
        Value::Bytes(b) => Some(hex::encode(b)),
    }
}

/// The key tuple at `row` of columns `idx`; `None` if a cell is NULL.
pub(crate) fn tuple(b: &RecordBatch, idx: &[usize], row: usize) -> Option<Key> {
    idx.iter()
        .map(|&i| text(&value_at(b.column(i).as_ref(), row)).map(Some))
        .collect()
}

/// A set of key hashes (`hash_key`, `hash_row`), hashed again by aHash: the std SipHash cost
/// more than the checks that use the sets.
pub type KeySet = HashSet<u64, ahash::RandomState>;

/// The hasher of key tuples: aHash under fixed seeds, so every step of a run, and `hash_key`
/// and `hash_row`, agree. Key hashes stay in memory (never journaled), so only agreement within
/// one process matters; a collision could hide one duplicate or dangling reference in 2^64.
fn key_hasher() -> impl Hasher {
    const SEEDS: ahash::RandomState = ahash::RandomState::with_seeds(
        0x243f_6a88_85a3_08d3,
        0x1319_8a2e_0370_7344,
        0xa409_3822_299f_31d0,
        0x082e_fa98_ec4e_6c89,
    );
    SEEDS.build_hasher()
}

/// The hash of a key in its text form: what `hash_row` computes from staged cells, byte for byte.
pub fn hash_key(k: &Key) -> u64 {
    let mut h = key_hasher();
    for v in k {
        match v {
            None => h.write_u8(0),
            Some(s) => {
                h.write_u8(1);
                h.write(s.as_bytes());
                h.write_u8(0xff);
            }
        }
    }
    h.finish()
}

/// `hash_key` of the tuple at `row` without building it (one reused buffer); `None` if a cell is
/// NULL (a NULL component references nothing and is never a duplicate).
pub(crate) fn hash_row(
    b: &RecordBatch,
    idx: &[usize],
    row: usize,
    buf: &mut String,
) -> Option<u64> {
    use std::fmt::Write;
    let mut h = key_hasher();
    let mut digits = itoa::Buffer::new();
    for &i in idx {
        buf.clear();
        // Each form is `text`'s, byte for byte (integers through itoa: `format!` cost more).
        let bytes = match value_at(b.column(i).as_ref(), row) {
            Value::Null => return None,
            Value::Int(x) => digits.format(x).as_bytes(),
            Value::Float(x) => {
                let _ = write!(buf, "{x}");
                buf.as_bytes()
            }
            Value::Bool(x) => if x { "true" } else { "false" }.as_bytes(),
            Value::Text(t) => t.as_bytes(),
            Value::Bytes(x) => {
                buf.push_str(&hex::encode(x));
                buf.as_bytes()
            }
        };
        h.write_u8(1);
        h.write(bytes);
        h.write_u8(0xff);
    }
    Some(h.finish())
}

/// `hash_row`, or for a tuple with a NULL cell `hash_key` of its text forms (a key of a table
/// without a primary key, a whole row): every tuple gets a hash.
pub(crate) fn hash_cells(b: &RecordBatch, idx: &[usize], row: usize, buf: &mut String) -> u64 {
    hash_row(b, idx, row, buf).unwrap_or_else(|| {
        let k: Key = idx
            .iter()
            .map(|&i| text(&value_at(b.column(i).as_ref(), row)))
            .collect();
        hash_key(&k)
    })
}

/// A key as examples show it.
pub(crate) fn show(k: &Key) -> String {
    k.iter()
        .map(|v| v.as_deref().unwrap_or("NULL"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The batches of a staging file, read one at a time (each pass reads the file again, so memory
/// holds one batch whatever the table's size).
pub(crate) fn batches(
    path: &Path,
) -> Result<impl Iterator<Item = Result<RecordBatch, StoreError>>, StoreError> {
    let owned = path.to_path_buf();
    Ok(open(path)?.map(move |b| b.map_err(|e| wf_stores::staging::damaged(&owned, e))))
}

/// Column positions by name in a staged file's schema.
pub(crate) fn positions(b: &RecordBatch, cols: &[String]) -> Option<Vec<usize>> {
    cols.iter().map(|c| b.schema().index_of(c).ok()).collect()
}

/// The name of a key set: `table(col,…)`.
pub(crate) fn set_id(table: &str, cols: &[String]) -> String {
    format!("{table}({})", cols.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, BinaryArray, BooleanArray, Float64Array, Int64Array, StringArray};
    use std::sync::Arc;

    /// `hash_row` (itoa, no allocation) is `hash_key` of the cells' text forms, which the
    /// manifests' and CERT's keys are hashed by: a difference would hide conflicts or report
    /// owned rows as conflicts.
    #[test]
    fn hash_row_is_hash_key_of_the_text_forms() {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(-42), Some(i64::MAX), None])),
            Arc::new(StringArray::from(vec![Some("a,b"), Some(""), Some("x")])),
            Arc::new(BinaryArray::from(vec![
                Some(&b"\x00\xff"[..]),
                Some(b""),
                Some(b"z"),
            ])),
            Arc::new(BooleanArray::from(vec![
                Some(true),
                Some(false),
                Some(true),
            ])),
            Arc::new(Float64Array::from(vec![Some(1.5), Some(-0.0), Some(3.0)])),
        ];
        let b = RecordBatch::try_from_iter(
            cols.into_iter()
                .enumerate()
                .map(|(i, c)| (format!("c{i}"), c)),
        )
        .unwrap();
        let idx: Vec<usize> = (0..b.num_columns()).collect();
        let mut buf = String::new();
        for r in 0..2 {
            let k = tuple(&b, &idx, r).unwrap();
            assert_eq!(
                hash_row(&b, &idx, r, &mut buf),
                Some(hash_key(&k)),
                "row {r}"
            );
        }
        assert_eq!(hash_row(&b, &idx, 2, &mut buf), None, "a NULL cell: no key");
        assert_ne!(
            hash_row(&b, &[0], 0, &mut buf),
            hash_row(&b, &[0], 1, &mut buf)
        );
    }
}
