//! The journal's value encoding, kept in one place so it can change behind the format number.
//! bincode 2 (serde mode, standard config): compact and fast; pinned because 3.x is a tombstone release.

use serde::{de::DeserializeOwned, Serialize};

/// Encodes a value for the journal.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|e| e.to_string())
}

/// Decodes a journal value; the error text says what bincode found, never the bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_nested_values() {
        let v: (String, Vec<u32>, Option<bool>) = ("a".into(), vec![1, 2, 3], Some(true));
        let back: (String, Vec<u32>, Option<bool>) = decode(&encode(&v).unwrap()).unwrap();
        assert_eq!(v, back);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode::<(String, u64)>(&[0xff, 0xff, 0xff]).is_err());
    }
}
