//! The PII leak scan. Keyed hashes of the originals a run anonymized are kept per value domain, and
//! what the run writes is compared with the originals of its own domains only: its field (an FK
//! column shares its parent's field), a value detector both fields share (an email copied into a
//! kept `contact` column is caught), and a rule's `scan_as`. So a text id is never compared with
//! masked postal codes. Anonymized fields whose outputs cannot be real values by design (hashes,
//! redactions, fake emails) are scanned too: an original found in one is a leak.

use super::detect::Detector;
use super::key::AnonKey;
use super::rules::{Rule, Strategy};
use super::strategy::FakeKind;
use arrow_array::{Array, StringArray};
use std::collections::{BTreeMap, HashMap, HashSet};
use wf_stores::staging::{columns_of, damaged, open, FileInfo};

use super::input::AnonError;

/// Values shorter than this are too common to count as leaks (codes, small numbers).
pub(super) const LEAK_MIN_LEN: usize = 4;

/// The keyed hash of a value, before its domain is mixed in.
pub fn leak_hash(key: &AnonKey, text: &str) -> u64 {
    key.short_hash(text.as_bytes())
}

/// The id of a domain tag (`field:ids.students.email`, `detector:email`) under `key`.
pub fn tag_id(key: &AnonKey, tag: &str) -> u64 {
    key.short_hash(format!("tag\0{tag}").as_bytes())
}

/// A value's hash within one domain (splitmix64's finalizer over the keyed hash and the tag id).
pub fn tagged(h: u64, tag: u64) -> u64 {
    let mut z = (h ^ tag).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The domains of a field: `domain` (its own field, or the FK parent's), each value detector it
/// was flagged by (not the column-name flag), and the rule's `scan_as` field.
pub fn tags_of(domain: &str, detected: &[Detector], scan_as: Option<&str>) -> Vec<String> {
    let mut tags = vec![format!("field:{domain}")];
    tags.extend(
        detected
            .iter()
            .filter(|d| **d != Detector::Name)
            .map(|d| format!("detector:{}", d.as_str())),
    );
    if let Some(other) = scan_as {
        tags.push(format!("field:{other}"));
    }
    tags.sort();
    tags.dedup();
    tags
}

/// Whether a rule's originals go into the leak set: every rule that changes values, except
/// shifted dates and fake birth dates (a date is someone's birthday and someone else's hire date).
pub(super) fn leak_scanned(rule: &Rule) -> bool {
    !matches!(rule.spec.strategy, Strategy::Keep | Strategy::ShiftDate)
        && rule.spec.kind != Some(FakeKind::DateOfBirth)
}

/// Whether a rule's own outputs are scanned: only where no output can equal another row's
/// original by design. Realistic fakes (names, cities, postcodes, phones…) draw from the values
/// real data has, and a format-preserving mask of a dense code maps onto other real codes.
pub(super) fn outputs_scanned(rule: &Rule) -> bool {
    match rule.spec.strategy {
        Strategy::Hmac | Strategy::Redact | Strategy::Null => true,
        Strategy::Fake => matches!(
            rule.spec.kind,
            Some(FakeKind::Email | FakeKind::Username | FakeKind::Text)
        ),
        _ => false,
    }
}

/// The leak set's entries are keyed hashes, uniformly random already: hash them as themselves.
#[derive(Default, Clone, Copy)]
pub struct Identity(u64);

impl std::hash::Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Hashes of originals, tagged by domain.
pub type LeakSet = HashSet<u64, std::hash::BuildHasherDefault<Identity>>;

/// Whether `value` (long enough to count) is an original of one of the domains `tags`.
pub fn is_original(key: &AnonKey, value: &str, tags: &[u64], originals: &LeakSet) -> bool {
    if value.len() < LEAK_MIN_LEN {
        return false;
    }
    let h = leak_hash(key, value);
    tags.iter().any(|t| originals.contains(&tagged(h, *t)))
}

/// Counts, per scanned text field (`store.table.column` → its tag ids), the written values that
/// are originals of one of the field's domains.
pub(super) fn scan_outputs(
    files: &[(String, FileInfo)],
    scanned: &HashMap<String, Vec<u64>>,
    key: &AnonKey,
    originals: &LeakSet,
) -> Result<Vec<(String, u64)>, AnonError> {
    let mut leaks: BTreeMap<String, u64> = BTreeMap::new();
    for (table, info) in files {
        let reader = open(&info.path)?;
        let cols = columns_of(&reader.schema()).map_err(AnonError::Rule)?;
        let fields: Vec<(usize, String, &Vec<u64>)> = cols
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let f = format!("{table}.{}", c.name);
                scanned.get(&f).map(|t| (i, f, t))
            })
            .collect();
        for b in reader {
            let b = b.map_err(|e| damaged(&info.path, e))?;
            for (i, field, tags) in &fields {
                let Some(a) = b.column(*i).as_any().downcast_ref::<StringArray>() else {
                    continue;
                };
                let hits = a
                    .iter()
                    .flatten()
                    .filter(|x| is_original(key, x, tags, originals))
                    .count() as u64;
                if hits > 0 {
                    *leaks.entry(field.clone()).or_default() += hits;
                }
            }
        }
    }
    Ok(leaks.into_iter().collect())
}
