//! The PII detector behind default deny: field names and sampled values. A flagged field without a
//! rule stops the run; `keep` must be chosen explicitly for a flagged field.

use fake::locales::{Data, EN};
use regex::Regex;
use std::collections::HashSet;
use std::sync::OnceLock;

/// What a detector recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// The field's name says PII (first_name, email, birth, ssn, notes, …).
    Name,
    Email,
    Phone,
    Ssn,
    StreetAddress,
    PersonName,
    /// Passwords and their hashes, tokens, API keys, usernames (by column name or by value).
    Credential,
}

impl Detector {
    /// The name as the rules file spells it (`detector = "street_address"`), for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Detector::Name => "name",
            Detector::Email => "email",
            Detector::Phone => "phone",
            Detector::Ssn => "ssn",
            Detector::StreetAddress => "street_address",
            Detector::PersonName => "person_name",
            Detector::Credential => "credential",
        }
    }
}

struct Patterns {
    name: Regex,
    credential_name: Regex,
    /// bcrypt / argon2 / PHC strings and `{SCHEME}…` LDAP-style hashes.
    hash: Regex,
    email: Regex,
    phone: Regex,
    ssn: Regex,
    street: Regex,
    first_names: HashSet<&'static str>,
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| Patterns {
        // These are fixed, tested expressions: failing to compile them is a programming error.
        name: Regex::new(
            r"(?i)(^|_)(first_?name|last_?name|surname|full_?name|given_?name|name|email|e_?mail|phone|mobile|tel|address|street|city|zip|postcode|postal_?code|dob|birth|birth_?date|birthday|ssn|social_?security|notes?|comments?)(_|$)",
        )
        .unwrap_or_else(|e| unreachable!("{e}")),
        email: Regex::new(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$").unwrap_or_else(|e| unreachable!("{e}")),
        phone: Regex::new(r"^\+?[0-9][0-9 ().-]{6,}[0-9]$").unwrap_or_else(|e| unreachable!("{e}")),
        ssn: Regex::new(r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b").unwrap_or_else(|e| unreachable!("{e}")),
        street: Regex::new(r"(?i)\b[0-9]+\s+[A-Za-z]+(\s+[A-Za-z]+)*\s+(st|street|ave|avenue|rd|road|blvd|boulevard|ln|lane|dr|drive|way|ct|court)\b")
            .unwrap_or_else(|e| unreachable!("{e}")),
        credential_name: Regex::new(
            r"(?i)(^|_)(password|passwd|pwd|pass_?hash|secret|token|api_?key|access_?key|private_?key|salt|otp|username|user_?name|login)(_|$)",
        )
        .unwrap_or_else(|e| unreachable!("{e}")),
        hash: Regex::new(r"^(\$(2[abxy]?|argon2(id|i|d)|scrypt|pbkdf2[-_a-z0-9]*|[156])\$|\{[A-Z0-9-]+\})")
            .unwrap_or_else(|e| unreachable!("{e}")),
        first_names: EN::NAME_FIRST_NAME.iter().copied().collect(),
    })
}

/// Whether the field's own name (the last part of `store.table.column`) suggests PII.
pub fn name_flags(field: &str) -> bool {
    let column = field.rsplit('.').next().unwrap_or(field);
    patterns().name.is_match(column)
}

/// Whether the field's own name says it holds a credential (password, token, API key, login).
pub fn credential_flags(field: &str) -> bool {
    let column = field.rsplit('.').next().unwrap_or(field);
    patterns().credential_name.is_match(column)
}

/// A secret-looking value: a password hash, or a long random token (24+ characters of letters,
/// digits and `+/=_-` with letters and digits both present, no spaces).
fn secret_like(t: &str) -> bool {
    if patterns().hash.is_match(t) {
        return true;
    }
    t.len() >= 24
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/=_-".contains(c))
        && t.chars().any(|c| c.is_ascii_digit())
        && t.chars().any(|c| c.is_ascii_alphabetic())
        && !t.contains('-') // UUIDs and dates are identifiers, not secrets
}

/// Detectors that fire on a sample of a field's text values: an email/phone/person-name detector
/// fires when at least half the sample matches; SSN and street address on any value (they hide in
/// free text).
pub fn detect_values<'a>(sample: impl Iterator<Item = &'a str>) -> Vec<Detector> {
    let p = patterns();
    let (mut n, mut email, mut phone, mut person, mut secret) = (0usize, 0usize, 0usize, 0usize, 0);
    let mut found = HashSet::new();
    for v in sample {
        n += 1;
        let t = v.trim();
        if p.email.is_match(t) {
            email += 1;
        }
        if p.phone.is_match(t)
            && t.chars().filter(char::is_ascii_digit).count() >= 7
            && !looks_like_date(t)
        {
            phone += 1;
        }
        if p.first_names
            .contains(t.split_whitespace().next().unwrap_or(""))
        {
            person += 1;
        }
        if secret_like(t) {
            secret += 1;
        }
        if p.ssn.is_match(t) {
            found.insert(Detector::Ssn);
        }
        if p.street.is_match(t) {
            found.insert(Detector::StreetAddress);
        }
    }
    let half = n.div_ceil(2).max(1);
    if email >= half {
        found.insert(Detector::Email);
    }
    if phone >= half {
        found.insert(Detector::Phone);
    }
    if person >= half {
        found.insert(Detector::PersonName);
    }
    if secret >= half {
        found.insert(Detector::Credential);
    }
    let mut out: Vec<Detector> = found.into_iter().collect();
    out.sort_by_key(|d| *d as u8);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_flag_pii_columns_only() {
        assert!(name_flags("ids.students.first_name"));
        assert!(name_flags("ids.staff.email"));
        assert!(name_flags("ids.students.birth_date"));
        assert!(name_flags("hcp2.grades.notes"));
        assert!(!name_flags("ids.students.grade"));
        assert!(!name_flags("ids.schools.district_id"));
        assert!(credential_flags("ids.staff.password_hash"));
        assert!(credential_flags("ids.staff.api_key"));
        assert!(credential_flags("ids.staff.username"));
        assert!(!credential_flags("ids.staff.passport_no"));
    }

    #[test]
    fn hashes_and_tokens_are_credentials_ids_are_not() {
        let d = detect_values(
            [
                "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
                "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG",
            ]
            .into_iter(),
        );
        assert_eq!(d, [Detector::Credential]);
        let d = detect_values(
            [
                "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
                "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
            ]
            .into_iter(),
        );
        assert_eq!(d, [Detector::Credential]);
        let d = detect_values(
            [
                "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
                "2026-09-07T08:15:00",
            ]
            .into_iter(),
        );
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn messages_name_detectors_as_the_rules_file_does() {
        for d in [
            Detector::Name,
            Detector::Email,
            Detector::Phone,
            Detector::Ssn,
            Detector::StreetAddress,
            Detector::PersonName,
            Detector::Credential,
        ] {
            let parsed: Detector =
                serde_json::from_str(&format!("\"{}\"", d.as_str())).expect("a rules name");
            assert_eq!(parsed, d);
        }
    }

    #[test]
    fn values_reveal_emails_names_and_a_planted_ssn() {
        let d = detect_values(["a@b.org", "c@d.com", "x"].into_iter());
        assert_eq!(d, [Detector::Email]);
        let d = detect_values(["Mary", "John Smith", "Bob"].into_iter());
        assert!(d.contains(&Detector::PersonName), "{d:?}");
        let d = detect_values(["fine", "call back, SSN 123-45-6789 on file", "ok"].into_iter());
        assert_eq!(d, [Detector::Ssn]);
        let d = detect_values(["lives at 12 Oak Tree Lane", "x"].into_iter());
        assert_eq!(d, [Detector::StreetAddress]);
        assert!(detect_values(["K", "01", "02"].into_iter()).is_empty());
    }
}

/// ISO dates and timestamps (`2026-09-07`, `2026-09-07 08:15:00`) are not phone numbers.
fn looks_like_date(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() >= 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..10].iter().all(u8::is_ascii_digit)
        && (b.len() == 10 || b[10] == b' ' || b[10] == b'T')
}

#[cfg(test)]
mod date_tests {
    #[test]
    fn dates_are_not_phones() {
        let d =
            super::detect_values(["2026-09-07", "2026-09-08 08:15:00", "2025-01-01"].into_iter());
        assert!(d.is_empty(), "{d:?}");
        let p = super::detect_values(["(555) 123-4567", "+1 555 123 4567"].into_iter());
        assert_eq!(p, vec![super::Detector::Phone]);
    }
}
