//! The anonymization key: read from the environment, never written anywhere. Only its fingerprint
//! (an HMAC of a fixed label) is journaled and reported, so a resume with another key is detected.

use hmac::{Hmac, KeyInit, Mac};
use sha2::block_api::compress256;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// SHA-256's initial state (FIPS 180-4, 5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// The secret key. `Debug` prints only the fingerprint. The HMAC's keyed state is prepared once
/// and cloned per use (re-keying for every value cost as much as the hashing itself).
#[derive(Clone)]
pub struct AnonKey {
    base: HmacSha256,
    /// SHA-256 states after the ipad and opad blocks: short messages then cost two compressions.
    inner: [u32; 8],
    outer: [u32; 8],
    /// SipHash key of the Feistel rounds, derived from the key (see `strategy::permute`).
    feistel: [u8; 16],
    /// `short_hash`'s SipHash state, keyed and past its prefix: copied per value, not re-keyed.
    leak: siphasher::sip::SipHasher13,
}

impl std::fmt::Debug for AnonKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AnonKey({})", self.fingerprint())
    }
}

/// Why there is no usable key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the anonymization key is missing: set {0} (at least 16 characters); no key, no run")]
    Missing(String),
    #[error("the anonymization key in {0} is shorter than 16 characters: use a longer secret")]
    TooShort(String),
    #[error("the anonymization key in {var} is too easy to guess ({why}): use a long random secret, e.g. `openssl rand -base64 32`")]
    Weak { var: String, why: String },
}

/// Keys an attacker could guess in fewer than 10^10 tries are refused: with the key, every
/// anonymized value can be checked against guessed originals.
const MIN_GUESSES_LOG10: f64 = 10.0;

/// Why `value` is too weak a key, if it is: whitespace only, or guessable per zxcvbn (dictionary
/// words, repeats, sequences, keyboard runs), a well-kept estimator rather than rules of our own.
fn weakness(value: &str) -> Option<String> {
    if value.trim().is_empty() {
        return Some("it is only whitespace".into());
    }
    let e = zxcvbn::zxcvbn(value, &[]);
    if e.guesses_log10() >= MIN_GUESSES_LOG10 {
        return None;
    }
    let hint = e
        .feedback()
        .and_then(|f| f.warning())
        .map(|w| w.to_string())
        .unwrap_or_else(|| "a repeated, sequential or dictionary pattern".into());
    Some(format!(
        "about 10^{:.0} guesses: {}",
        e.guesses_log10(),
        hint.trim_end_matches('.').to_lowercase()
    ))
}

impl AnonKey {
    /// Reads the key from environment variable `var`.
    pub fn from_env(var: &str) -> Result<AnonKey, KeyError> {
        let value = std::env::var(var).map_err(|_| KeyError::Missing(var.into()))?;
        if value.len() < 16 {
            return Err(KeyError::TooShort(var.into()));
        }
        if let Some(why) = weakness(&value) {
            return Err(KeyError::Weak {
                var: var.into(),
                why,
            });
        }
        Ok(AnonKey::from_bytes(value.as_bytes()))
    }

    /// A key from bytes (tests, benchmarks).
    pub fn from_bytes(bytes: &[u8]) -> AnonKey {
        // HMAC takes keys of any length, so this cannot fail.
        let base =
            <HmacSha256 as KeyInit>::new_from_slice(bytes).unwrap_or_else(|_| unreachable!());
        let mut block = [0u8; 64];
        if bytes.len() > 64 {
            block[..32].copy_from_slice(&Sha256::digest(bytes));
        } else {
            block[..bytes.len()].copy_from_slice(bytes);
        }
        let keyed = |pad: u8| {
            let mut state = SHA256_IV;
            let b: [u8; 64] = std::array::from_fn(|i| block[i] ^ pad);
            compress256(&mut state, &[b]);
            state
        };
        let mut key = AnonKey {
            base,
            inner: keyed(0x36),
            outer: keyed(0x5c),
            feistel: [0; 16],
            leak: Default::default(),
        };
        let derived = key.mac("feistel-round-key", b"");
        key.feistel.copy_from_slice(&derived[..16]);
        use std::hash::Hasher;
        key.leak = siphasher::sip::SipHasher13::new_with_key(&key.feistel);
        key.leak.write(b"leak");
        key
    }

    /// The SipHash key of the Feistel rounds.
    pub fn feistel_key(&self) -> &[u8; 16] {
        &self.feistel
    }

    /// A keyed 64-bit hash of `data` (SipHash-1-3 under a key derived from this one): cheap enough
    /// for every value of the leak scan, and not invertible without the key.
    pub fn short_hash(&self, data: &[u8]) -> u64 {
        use std::hash::Hasher;
        let mut h = self.leak;
        h.write(data);
        h.finish()
    }

    /// HMAC-SHA256 of `domain`, a zero byte and `data`: the root of every keyed transform.
    /// The domain separates uses (a fake first name never equals a masked value of the same input).
    pub fn mac(&self, domain: &str, data: &[u8]) -> [u8; 32] {
        let len = domain.len() + 1 + data.len();
        if len <= 55 {
            // One padded block for the inner hash, one for the outer (RFC 2104 over SHA-256).
            let mut b = [0u8; 64];
            b[..domain.len()].copy_from_slice(domain.as_bytes());
            b[domain.len() + 1..len].copy_from_slice(data);
            b[len] = 0x80;
            b[56..].copy_from_slice(&(((64 + len) * 8) as u64).to_be_bytes());
            let mut state = self.inner;
            compress256(&mut state, &[b]);
            let mut o = [0u8; 64];
            for (i, w) in state.iter().enumerate() {
                o[4 * i..4 * i + 4].copy_from_slice(&w.to_be_bytes());
            }
            o[32] = 0x80;
            o[56..].copy_from_slice(&(((64 + 32) * 8) as u64).to_be_bytes());
            let mut state = self.outer;
            compress256(&mut state, &[o]);
            let mut out = [0u8; 32];
            for (i, w) in state.iter().enumerate() {
                out[4 * i..4 * i + 4].copy_from_slice(&w.to_be_bytes());
            }
            return out;
        }
        let mut m = self.base.clone();
        m.update(domain.as_bytes());
        m.update(&[0]);
        m.update(data);
        m.finalize().into_bytes().into()
    }

    /// Public, stable identifier of the key (first 16 hex digits of an HMAC of a fixed label).
    pub fn fingerprint(&self) -> String {
        hex::encode(&self.mac("wf-key-fingerprint", b"")[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The prepared state gives the hash a freshly keyed SipHash gives: leak hashes journaled by
    /// earlier runs (`leak-hashes.bin`, read by `wf validate`) stay comparable.
    #[test]
    fn short_hash_is_keyed_siphash_of_the_prefixed_value() {
        use std::hash::Hasher;
        let k = AnonKey::from_bytes(b"0123456789abcdef-secret");
        for v in [&b""[..], b"a", b"person17@school.example", &[7u8; 100]] {
            let mut h = siphasher::sip::SipHasher13::new_with_key(k.feistel_key());
            h.write(b"leak");
            h.write(v);
            assert_eq!(k.short_hash(v), h.finish());
        }
    }

    #[test]
    fn fingerprint_identifies_the_key_without_revealing_it() {
        let a = AnonKey::from_bytes(b"0123456789abcdef-secret");
        let b = AnonKey::from_bytes(b"0123456789abcdef-other!");
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert!(!format!("{a:?}").contains("secret"));
        assert_ne!(a.mac("x", b"v"), a.mac("y", b"v"));
    }

    #[test]
    fn short_message_path_is_hmac_sha256() {
        let long_key = [7u8; 100];
        for k in [
            &b"0123456789abcdef-secret"[..],
            &long_key[..],
            &[1u8; 64][..],
        ] {
            let key = AnonKey::from_bytes(k);
            for len in 0..80 {
                let data: Vec<u8> = (0..len as u8).collect();
                let mut m = <HmacSha256 as KeyInit>::new_from_slice(k).unwrap();
                m.update(b"fake:Email\0");
                m.update(&data);
                let want: [u8; 32] = m.finalize().into_bytes().into();
                assert_eq!(
                    key.mac("fake:Email", &data),
                    want,
                    "key {} len {len}",
                    k.len()
                );
            }
        }
    }

    #[test]
    fn missing_and_short_keys_are_refused() {
        let e = AnonKey::from_env("WF_TEST_SURELY_UNSET_KEY")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("WF_TEST_SURELY_UNSET_KEY") && e.contains("no key, no run"),
            "{e}"
        );
    }

    #[test]
    fn guessable_keys_are_refused_and_random_ones_pass() {
        for weak in [
            "aaaaaaaaaaaaaaaaaaaa",
            "                    ",
            "passwordpassword",
            "abcdefghijklmnop1234",
            "qwertyuiopasdfgh",
            "Summer2026Summer2026",
        ] {
            assert!(weakness(weak).is_some(), "{weak:?} passed");
        }
        for strong in [
            "kV9#mQ2$xL7!pR4@",
            "a long secret, kept out of every file",
            "an-end-to-end-test-key-0123",
        ] {
            assert_eq!(weakness(strong), None, "{strong:?} refused");
        }
    }
}
