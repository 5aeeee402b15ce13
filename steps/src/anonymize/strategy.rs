//! The anonymization strategies, as pure functions of (key, value): the same input under the same
//! key and rule gives the same output in every table, store and run.

use super::key::AnonKey;
use fake::faker::address::en::{BuildingNumber, CityName, PostCode, StreetName};
use fake::faker::internet::en::{SafeEmail, Username};
use fake::faker::lorem::en::Sentence;
use fake::faker::name::en::{FirstName, LastName, Name};
use fake::faker::phone_number::en::CellNumber;
use fake::Fake;
use rand::rand_core::TryRng;
use siphasher::sip::SipHasher13;
use std::convert::Infallible;
use std::hash::Hasher;

/// Kinds of realistic fake values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FakeKind {
    FirstName,
    LastName,
    Name,
    Email,
    Phone,
    StreetAddress,
    City,
    Postcode,
    DateOfBirth,
    Username,
    Text,
}

/// A keyed bijection of [0, n): a 4-round Feistel network on the smallest even bit width covering
/// n, with cycle walking back into range. Used so hashed integers never collide (keys stay unique)
/// and the same value maps alike everywhere (joins still work). The round function is SipHash-1-3
/// (a keyed PRF made for short inputs) under a key derived from the HMAC key.
pub fn permute(key: &AnonKey, domain: &str, n: u64, x: u64) -> u64 {
    if n <= 1 {
        return x;
    }
    let bits = (64 - (n - 1).leading_zeros()).max(2);
    let half = bits.div_ceil(2);
    let mask = (1u64 << half) - 1;
    let mut base = SipHasher13::new_with_key(key.feistel_key());
    base.write(domain.as_bytes());
    base.write_u64(n);
    let mut v = x;
    loop {
        let (mut l, mut r) = (v >> half, v & mask);
        for round in 0u64..4 {
            let mut h = base;
            h.write_u64(round << 62 | r);
            let f = h.finish() & mask;
            (l, r) = (r, (l ^ f) & mask);
        }
        v = (l << half) | r;
        if v < n {
            return v;
        }
    }
}

/// `hmac` for integers: same sign and same number of digits, bijective within each digit class.
pub fn hmac_int(key: &AnonKey, x: i64) -> i64 {
    if x == 0 || x == i64::MIN {
        return x;
    }
    let a = x.unsigned_abs();
    let digits = a.ilog10();
    let lo = 10u64.pow(digits);
    let hi = if digits >= 18 {
        i64::MAX as u64 + 1
    } else {
        10u64.pow(digits + 1)
    };
    let y = lo + permute(key, "hmac:int", hi - lo, a - lo);
    let y = y.min(i64::MAX as u64) as i64;
    if x < 0 {
        -y
    } else {
        y
    }
}

const ALNUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Keyed bytes for one value: the 32 bytes of its HMAC-SHA256, then, for long values, a
/// SipHash-1-3 stream keyed by that HMAC (a PRF expansion, cheaper than one HMAC per 32 bytes).
struct KeyStream {
    block: [u8; 32],
    pos: usize,
    counter: u64,
    more: [u8; 8],
}

impl KeyStream {
    fn new(key: &AnonKey, domain: &str, s: &str) -> KeyStream {
        KeyStream {
            block: key.mac(domain, s.as_bytes()),
            pos: 0,
            counter: 0,
            more: [0; 8],
        }
    }

    #[inline]
    fn next(&mut self) -> u8 {
        let i = self.pos;
        self.pos += 1;
        if i < 32 {
            return self.block[i];
        }
        let j = (i - 32) % 8;
        if j == 0 {
            let mut k = [0u8; 16];
            k.copy_from_slice(&self.block[..16]);
            let mut h = SipHasher13::new_with_key(&k);
            h.write_u64(self.counter);
            self.counter += 1;
            self.more = h.finish().to_le_bytes();
        }
        self.more[j]
    }

    /// The next `out.len()` bytes, exactly as that many `next` calls give them: the MAC's bytes
    /// copied at once, then whole SipHash words (a branch and a counter per byte cost more than
    /// the hashing of a short value).
    fn fill(&mut self, out: &mut [u8]) {
        let mut at = 0;
        while at < out.len() && (self.pos < 32 || !(self.pos - 32).is_multiple_of(8)) {
            out[at] = self.next();
            at += 1;
        }
        let mut k = [0u8; 16];
        k.copy_from_slice(&self.block[..16]);
        let base = SipHasher13::new_with_key(&k);
        while at < out.len() {
            let mut h = base;
            h.write_u64(self.counter);
            self.counter += 1;
            self.more = h.finish().to_le_bytes();
            let n = (out.len() - at).min(8);
            out[at..at + n].copy_from_slice(&self.more[..n]);
            self.pos += n;
            at += n;
        }
    }
}

/// `hmac` for text: a UUID stays a valid UUID; other text becomes letters and digits of the same length.
pub fn hmac_text(key: &AnonKey, s: &str) -> String {
    let mut out = String::new();
    hmac_text_into(key, s, &mut out);
    out
}

/// `hmac_text` appending to `out`.
pub fn hmac_text_into(key: &AnonKey, s: &str, out: &mut String) {
    if is_uuid(s) {
        let m = key.mac("hmac:text", s.as_bytes());
        let mut b = [0u8; 16];
        b.copy_from_slice(&m[..16]);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = hex::encode(b);
        for (i, part) in [&h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]]
            .iter()
            .enumerate()
        {
            if i > 0 {
                out.push('-');
            }
            out.push_str(part);
        }
        return;
    }
    let len = if s.is_ascii() {
        s.len()
    } else {
        s.chars().count()
    };
    out.reserve(len);
    let mut stream = KeyStream::new(key, "hmac:text", s);
    // ASCII letters and digits, built a chunk at a time (pushing chars one by one cost more).
    let mut chunk = [0u8; 32];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        stream.fill(&mut chunk[..n]);
        for c in &mut chunk[..n] {
            *c = ALNUM[*c as usize % ALNUM.len()];
        }
        if let Ok(text) = std::str::from_utf8(&chunk[..n]) {
            out.push_str(text);
        }
        left -= n;
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

impl TryRng for KeyStream {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(u32::from_le_bytes(std::array::from_fn(|_| self.next())))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(u64::from_le_bytes(std::array::from_fn(|_| self.next())))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        dst.iter_mut().for_each(|b| *b = self.next());
        Ok(())
    }
}

impl FakeKind {
    /// The HMAC domain of this kind's fakes.
    fn domain(self) -> &'static str {
        match self {
            FakeKind::FirstName => "fake:FirstName",
            FakeKind::LastName => "fake:LastName",
            FakeKind::Name => "fake:Name",
            FakeKind::Email => "fake:Email",
            FakeKind::Phone => "fake:Phone",
            FakeKind::StreetAddress => "fake:StreetAddress",
            FakeKind::City => "fake:City",
            FakeKind::Postcode => "fake:Postcode",
            FakeKind::DateOfBirth => "fake:DateOfBirth",
            FakeKind::Username => "fake:Username",
            FakeKind::Text => "fake:Text",
        }
    }
}

/// A realistic fake of `kind` from the fake crate, its random choices drawn from the keyed
/// stream of the original (its HMAC-SHA256, then SipHash keyed by that HMAC): the same original
/// always gives the same fake, and seeding costs nothing beyond the HMAC.
pub fn fake(key: &AnonKey, kind: FakeKind, original: &str) -> String {
    let mut rng = KeyStream::new(key, kind.domain(), original);
    let seed = rng.block;
    match kind {
        FakeKind::FirstName => FirstName().fake_with_rng(&mut rng),
        FakeKind::LastName => LastName().fake_with_rng(&mut rng),
        FakeKind::Name => Name().fake_with_rng(&mut rng),
        FakeKind::Email => {
            // A tag from the hash keeps distinct originals distinct (fake emails repeat otherwise).
            let e: String = SafeEmail().fake_with_rng(&mut rng);
            let (local, domain) = e.split_once('@').unwrap_or((&e, "example.com"));
            format!("{local}.{}@{domain}", &hex::encode(&seed[8..12]))
        }
        FakeKind::Phone => CellNumber().fake_with_rng(&mut rng),
        FakeKind::StreetAddress => {
            let n: String = BuildingNumber().fake_with_rng(&mut rng);
            let s: String = StreetName().fake_with_rng(&mut rng);
            format!("{n} {s}")
        }
        FakeKind::City => CityName().fake_with_rng(&mut rng),
        FakeKind::Postcode => PostCode().fake_with_rng(&mut rng),
        FakeKind::DateOfBirth => {
            // A day between 1950-01-01 and 2019-12-31.
            let day = u64::from_be_bytes([
                seed[0], seed[1], seed[2], seed[3], seed[4], seed[5], seed[6], seed[7],
            ]) % 25_567;
            format_date(days_from_civil(1950, 1, 1) + day as i64)
        }
        FakeKind::Username => Username().fake_with_rng(&mut rng),
        FakeKind::Text => Sentence(4..12).fake_with_rng(&mut rng),
    }
}

/// `mask`: digits stay digits and letters stay letters (same case), separators and the first
/// `keep_prefix` characters are kept; the replacements come from the keyed hash of the value.
pub fn mask(key: &AnonKey, s: &str, keep_prefix: usize) -> String {
    let mut out = String::new();
    mask_into(key, s, keep_prefix, &mut out);
    out
}

/// `mask` appending to `out`.
pub fn mask_into(key: &AnonKey, s: &str, keep_prefix: usize, out: &mut String) {
    let mut stream = KeyStream::new(key, "mask", s);
    out.reserve(s.len());
    for (pos, c) in s.chars().enumerate() {
        out.push(if pos < keep_prefix {
            c
        } else if c.is_ascii_digit() {
            (b'0' + stream.next() % 10) as char
        } else if c.is_ascii_lowercase() {
            (b'a' + stream.next() % 26) as char
        } else if c.is_ascii_uppercase() {
            (b'A' + stream.next() % 26) as char
        } else {
            c
        });
    }
}

/// Days between 1970-01-01 and y-m-d (proleptic Gregorian; H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn format_date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `shift_date`: moves the date at the start of `s` (`YYYY-MM-DD…`, the rest kept) by an offset in
/// [-window, window] days that depends only on `entity`, so one person's records keep their order.
/// Text that does not start with a date is returned as `None`.
pub fn shift_date(key: &AnonKey, s: &str, entity: &str, window_days: u32) -> Option<String> {
    shift_by(s, shift_offset(key, entity, window_days))
}

/// The day offset of `entity` (the keyed part of `shift_date`, computed once per entity).
pub fn shift_offset(key: &AnonKey, entity: &str, window_days: u32) -> i64 {
    let h = key.mac("shift_date", entity.as_bytes());
    let span = 2 * u64::from(window_days) + 1;
    (u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]) % span) as i64
        - i64::from(window_days)
}

/// Moves the date at the start of `s` by `offset` days; `None` when `s` does not start with one.
pub fn shift_by(s: &str, offset: i64) -> Option<String> {
    let date = s.get(..10)?;
    let b = date.as_bytes();
    if b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y: i64 = date[..4].parse().ok()?;
    let m: u32 = date[5..7].parse().ok()?;
    let d: u32 = date[8..10].parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(format!(
        "{}{}",
        format_date(days_from_civil(y, m, d) + offset),
        &s[10..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn key() -> AnonKey {
        AnonKey::from_bytes(b"test-key-0123456789")
    }

    #[test]
    fn integer_hmac_is_a_bijection_that_keeps_digits_and_sign() {
        let k = key();
        let outs: HashSet<i64> = (1000..10_000).map(|x| hmac_int(&k, x)).collect();
        assert_eq!(outs.len(), 9000, "no collisions within a digit class");
        assert!(outs.iter().all(|y| (1000..10_000).contains(y)));
        assert!(hmac_int(&k, -42) < 0 && hmac_int(&k, -42) > -100);
        assert_eq!(hmac_int(&k, 1234), hmac_int(&k, 1234));
        assert_ne!(
            hmac_int(&k, 1234),
            hmac_int(&AnonKey::from_bytes(b"another-key-0123456"), 1234)
        );
        let big = hmac_int(&k, 9_000_000_000_000_000_000);
        assert!(big >= 1_000_000_000_000_000_000);
    }

    #[test]
    fn text_hmac_keeps_length_and_uuids() {
        let k = key();
        let out = hmac_text(&k, "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ");
        assert_eq!(out.len(), 46);
        assert!(out.bytes().all(|b| b.is_ascii_alphanumeric()), "{out}");
        let other = hmac_text(&k, "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIK");
        assert_ne!(out[32..], other[32..], "the tail depends on the value too");
        assert_eq!(hmac_text(&k, "é1").chars().count(), 2);
        let u = hmac_text(&k, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
        assert!(is_uuid(&u) && u.as_bytes()[14] == b'4', "{u}");
    }

    /// `fill` gives the bytes `next` gives, whatever the lengths asked and where they start:
    /// outputs journaled and loaded by earlier runs stay what they were.
    #[test]
    fn a_filled_stream_is_the_stream_byte_by_byte() {
        let k = key();
        for value in ["a", "person17@school.example", &"x".repeat(90)] {
            let mut one = KeyStream::new(&k, "hmac:text", value);
            let want: Vec<u8> = (0..150).map(|_| one.next()).collect();
            let after = one.next();
            for steps in [
                &[150usize][..],
                &[3, 29, 1, 7, 8, 102],
                &[32, 8, 9, 101],
                &[40, 0, 110],
            ] {
                let mut s = KeyStream::new(&k, "hmac:text", value);
                let mut got = Vec::new();
                for n in steps {
                    let mut part = vec![0u8; *n];
                    s.fill(&mut part);
                    got.extend(part);
                }
                assert_eq!(got, want, "{value}, {steps:?}");
                assert_eq!(s.next(), after, "{value}, {steps:?}: and after");
            }
        }
    }

    #[test]
    fn fakes_are_realistic_and_consistent() {
        let k = key();
        let e = fake(&k, FakeKind::Email, "eve@north.example");
        assert_eq!(e, fake(&k, FakeKind::Email, "eve@north.example"));
        assert!(e.contains('@') && !e.contains("eve@north"), "{e}");
        assert_ne!(fake(&k, FakeKind::FirstName, "Eve"), "");
        let dob = fake(&k, FakeKind::DateOfBirth, "2019-03-01");
        assert!(
            dob.len() == 10 && ("1950".."2020").contains(&&dob[..4]),
            "{dob}"
        );
    }

    #[test]
    fn mask_keeps_format_and_prefix() {
        let m = mask(&key(), "AB-1234-xy", 3);
        assert!(m.starts_with("AB-") && m.len() == 10, "{m}");
        let b = m.as_bytes();
        assert!(
            b[3..7].iter().all(u8::is_ascii_digit) && b[7] == b'-' && b[8].is_ascii_lowercase()
        );
    }

    #[test]
    fn date_shift_is_per_entity_and_keeps_order() {
        let k = key();
        let a = shift_date(&k, "2024-02-28", "student-1", 30).unwrap();
        let b = shift_date(&k, "2024-03-01 08:00:00", "student-1", 30).unwrap();
        assert!(a[..10] < b[..10] && b.ends_with(" 08:00:00"), "{a} {b}");
        let days = |s: &str| {
            days_from_civil(
                s[..4].parse().unwrap(),
                s[5..7].parse().unwrap(),
                s[8..10].parse().unwrap(),
            )
        };
        assert_eq!(days(&b) - days(&a), 2, "same entity, same offset");
        assert!((days(&a) - days("2024-02-28")).abs() <= 30);
        assert_eq!(shift_date(&k, "not a date", "x", 30), None);
        assert_eq!(civil_from_days(days_from_civil(2000, 2, 29)), (2000, 2, 29));
    }
}
