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

/// The format of the step output values this wf writes. Format 0 is bare bincode (journals from
/// before outputs carried a version); format 1 is the same value behind a 5-byte header (a marker
/// no bincode value starts with, then the format as u16). Bump it when a journaled output type
/// changes, and teach [`decode_output`] to read the older number or refuse it by name.
pub const OUTPUT_FORMAT: u16 = 1;

/// `0xFF` is no varint prefix bincode writes, so a format-0 value never starts with the marker.
const OUTPUT_MARKER: [u8; 3] = [0xFF, b'w', b'f'];

/// Encodes a step output value with its format header.
pub fn encode_output<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&OUTPUT_MARKER);
    out.extend_from_slice(&OUTPUT_FORMAT.to_le_bytes());
    out.extend(encode(value)?);
    Ok(out)
}

/// Decodes a step output value of any format this wf reads (0 and 1 hold the same types); one
/// written by a newer wf is refused with what to do, never decoded into the wrong shape.
pub fn decode_output<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let Some(rest) = bytes.strip_prefix(&OUTPUT_MARKER[..]) else {
        return decode(bytes);
    };
    let (format, payload) = match rest {
        [a, b, payload @ ..] => (u16::from_le_bytes([*a, *b]), payload),
        _ => return Err("a step output header is cut short".into()),
    };
    if format > OUTPUT_FORMAT {
        return Err(format!(
            "written by a newer wf (step output format {format}; this wf reads formats 0 to {OUTPUT_FORMAT}): continue the run with that wf or a newer one"
        ));
    }
    decode(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_carry_their_format_and_format_0_still_reads() {
        let v: (String, u64) = ("extract".into(), 7);
        let enveloped = encode_output(&v).unwrap();
        assert_eq!(&enveloped[..5], &[0xFF, b'w', b'f', 1, 0]);
        assert_eq!(decode_output::<(String, u64)>(&enveloped).unwrap(), v);
        assert_eq!(
            decode_output::<(String, u64)>(&encode(&v).unwrap()).unwrap(),
            v
        );
    }

    #[test]
    fn an_output_from_a_newer_wf_is_refused_by_name() {
        let mut future = encode_output(&("x".to_string(), 1u64)).unwrap();
        future[3..5].copy_from_slice(&(OUTPUT_FORMAT + 1).to_le_bytes());
        let e = decode_output::<(String, u64)>(&future).unwrap_err();
        assert!(
            e.contains("written by a newer wf (step output format 2"),
            "{e}"
        );
    }

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
