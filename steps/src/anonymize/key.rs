//! The anonymization key: read from the environment, never written anywhere. Only its fingerprint
//! (an HMAC of a fixed label) is journaled and reported, so a resume with another key is detected.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The secret key. `Debug` prints only the fingerprint. The HMAC's keyed state is prepared once
/// and cloned per use (re-keying for every value cost as much as the hashing itself).
#[derive(Clone)]
pub struct AnonKey {
    base: HmacSha256,
    /// SipHash key of the Feistel rounds, derived from the key (see `strategy::permute`).
    feistel: [u8; 16],
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
}

impl AnonKey {
    /// Reads the key from environment variable `var`.
    pub fn from_env(var: &str) -> Result<AnonKey, KeyError> {
        let value = std::env::var(var).map_err(|_| KeyError::Missing(var.into()))?;
        if value.len() < 16 {
            return Err(KeyError::TooShort(var.into()));
        }
        Ok(AnonKey::from_bytes(value.as_bytes()))
    }

    /// A key from bytes (tests, benchmarks).
    pub fn from_bytes(bytes: &[u8]) -> AnonKey {
        // HMAC takes keys of any length, so this cannot fail.
        let base =
            <HmacSha256 as KeyInit>::new_from_slice(bytes).unwrap_or_else(|_| unreachable!());
        let mut key = AnonKey {
            base,
            feistel: [0; 16],
        };
        let derived = key.mac("feistel-round-key", b"");
        key.feistel.copy_from_slice(&derived[..16]);
        key
    }

    /// The SipHash key of the Feistel rounds.
    pub fn feistel_key(&self) -> &[u8; 16] {
        &self.feistel
    }

    /// A keyed 64-bit hash of `data` (SipHash-2-4 under a key derived from this one): cheap enough
    /// for every value of the leak scan, and not invertible without the key.
    pub fn short_hash(&self, data: &[u8]) -> u64 {
        use std::hash::Hasher;
        let mut h = siphasher::sip::SipHasher24::new_with_key(&self.feistel);
        h.write(b"leak");
        h.write(data);
        h.finish()
    }

    /// HMAC-SHA256 of `domain`, a zero byte and `data`: the root of every keyed transform.
    /// The domain separates uses (a fake first name never equals a masked value of the same input).
    pub fn mac(&self, domain: &str, data: &[u8]) -> [u8; 32] {
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
    fn missing_and_short_keys_are_refused() {
        let e = AnonKey::from_env("WF_TEST_SURELY_UNSET_KEY")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("WF_TEST_SURELY_UNSET_KEY") && e.contains("no key, no run"),
            "{e}"
        );
    }
}
