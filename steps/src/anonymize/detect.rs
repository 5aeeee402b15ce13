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
}

struct Patterns {
    name: Regex,
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
        first_names: EN::NAME_FIRST_NAME.iter().copied().collect(),
    })
}

/// Whether the field's own name (the last part of `store.table.column`) suggests PII.
pub fn name_flags(field: &str) -> bool {
    let column = field.rsplit('.').next().unwrap_or(field);
    patterns().name.is_match(column)
}

/// Detectors that fire on a sample of a field's text values: an email/phone/person-name detector
/// fires when at least half the sample matches; SSN and street address on any value (they hide in
/// free text).
pub fn detect_values<'a>(sample: impl Iterator<Item = &'a str>) -> Vec<Detector> {
    let p = patterns();
    let (mut n, mut email, mut phone, mut person) = (0usize, 0usize, 0usize, 0usize);
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
