//! A staged row's key (primary key columns, else every column) as text and as its 128-bit hash,
//! as the subset, the manifests and a refresh's comparisons hold it.

use crate::error::StoreError;
use crate::schema::Table;
use crate::staging::{open, value_at, Value};
use crate::subset::{key_columns, Key};
use arrow_array::RecordBatch;
use std::path::Path;

/// The staged rows of a file, batch by batch.
pub(crate) fn batches(path: &Path) -> Result<Vec<RecordBatch>, StoreError> {
    open(path)?
        .map(|b| b.map_err(|e| crate::staging::damaged(path, e)))
        .collect()
}

/// The key of row `row` (primary key, else all columns) as text, as the subset and manifests hold it.
pub(crate) fn key_of(batch: &RecordBatch, key_idx: &[usize], row: usize) -> Key {
    key_idx
        .iter()
        .map(|&i| value_text(value_at(batch.column(i).as_ref(), row)))
        .collect()
}

/// A staged value as text, as keys hold it.
pub(crate) fn value_text(v: Value<'_>) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Int(x) => Some(x.to_string()),
        Value::Float(x) => Some(x.to_string()),
        Value::Bool(x) => Some(if x { "true".into() } else { "false".into() }),
        Value::Text(t) => Some(t.to_string()),
        Value::Bytes(b) => Some(hex::encode(b)),
    }
}

/// `keyset::key_hash(&key_of(batch, key_idx, row))`, without building the key (integers are
/// formatted on the stack, text is hashed in place): run for every row of a large table.
pub(crate) fn key_hash_at(batch: &RecordBatch, key_idx: &[usize], row: usize) -> u128 {
    let mut h = crate::keyset::KeyHasher::new();
    for &i in key_idx {
        match value_at(batch.column(i).as_ref(), row) {
            Value::Int(x) => h.part(Some(itoa::Buffer::new().format(x).as_bytes())),
            Value::Text(t) => h.part(Some(t.as_bytes())),
            other => h.part(value_text(other).as_deref().map(str::as_bytes)),
        }
    }
    h.finish()
}

/// `key_hash_at` of every row of `batch`, in order: a single 64-bit integer key (the common
/// surrogate key) is hashed in one tight loop, without a per-row downcast; other keys row by row.
/// Run over every staged row of a refresh's largest tables, several times.
pub(crate) fn key_hashes(batch: &RecordBatch, key_idx: &[usize]) -> Vec<u128> {
    use arrow_array::Array;
    if let [i] = key_idx {
        let col = batch.column(*i);
        if let Some(a) = col.as_any().downcast_ref::<arrow_array::Int64Array>() {
            let mut itoa = itoa::Buffer::new();
            return (0..a.len())
                .map(|r| {
                    let mut h = crate::keyset::KeyHasher::new();
                    h.part(a.is_valid(r).then(|| itoa.format(a.value(r)).as_bytes()));
                    h.finish()
                })
                .collect();
        }
    }
    (0..batch.num_rows())
        .map(|r| key_hash_at(batch, key_idx, r))
        .collect()
}

/// Positions of the table's key columns in the staged batches.
pub(crate) fn key_positions(
    table: &Table,
    batch_schema: &arrow_schema::Schema,
) -> Result<Vec<usize>, StoreError> {
    key_columns(table)
        .iter()
        .map(|c| {
            batch_schema.index_of(c).map_err(|_| StoreError::Query {
                store: table.store.clone(),
                message: format!("staging file of {} has no key column {c}", table.name),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Float64Array, Int64Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn a_staged_key_hashes_as_its_text_key_does() {
        let cols: Vec<(&str, ArrayRef)> = vec![
            (
                "i",
                Arc::new(Int64Array::from(vec![Some(-42), None, Some(7)])),
            ),
            (
                "t",
                Arc::new(StringArray::from(vec![Some("é\tx"), Some(""), None])),
            ),
            (
                "f",
                Arc::new(Float64Array::from(vec![Some(1.5), Some(-0.0), None])),
            ),
        ];
        let b = RecordBatch::try_from_iter(cols).unwrap();
        for idx in [vec![0], vec![1], vec![2], vec![0, 1, 2], vec![2, 0]] {
            for r in 0..3 {
                let text = crate::keyset::key_hash(&key_of(&b, &idx, r));
                assert_eq!(key_hash_at(&b, &idx, r), text, "columns {idx:?}, row {r}");
                assert_eq!(key_hashes(&b, &idx)[r], text, "columns {idx:?}, row {r}");
            }
        }
        assert_ne!(
            key_hash_at(&b, &[0], 0),
            key_hash_at(&b, &[0], 2),
            "other keys, other hashes"
        );
    }
}
