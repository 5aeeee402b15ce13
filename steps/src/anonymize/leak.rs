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
use rayon::iter::{ParallelBridge, ParallelIterator};
use std::collections::{BTreeMap, HashMap};
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

/// The distinct keyed hashes of originals, sorted, with an index on their top bits. The hashes
/// are uniform, so a bucket holds about four of them and a lookup reads one or two cache lines;
/// the set costs 8 bytes per hash and 1 for the index (a hash set took about 3 times that, on top
/// of the sorted list the run keeps anyway).
pub struct LeakSet {
    hashes: Vec<u64>,
    starts: Vec<u32>,
    shift: u32,
    /// A blocked Bloom filter in front (see `Filter`): most values scanned are no originals, and
    /// the filter answers those from one cache line of a structure a tenth of the list's size.
    filter: Filter,
}

/// A blocked Bloom filter over uniform hashes: one 64-byte block per hash (its top bits), five
/// bits set in it (from its low bits), about 10 bits per hash. A miss is certain; a hit (or
/// about 1 % of misses) goes on to the exact list.
struct Filter {
    blocks: Vec<[u64; 8]>,
    shift: u32,
}

impl Filter {
    fn new(hashes: &[u64]) -> Filter {
        let bits = (usize::BITS - (hashes.len() / 51).leading_zeros()).clamp(1, 40);
        let mut f = Filter {
            blocks: vec![[0u64; 8]; 1 << bits],
            shift: 64 - bits,
        };
        for h in hashes {
            let b = (h >> f.shift) as usize;
            for (word, bit) in Filter::probes(*h) {
                f.blocks[b][word] |= bit;
            }
        }
        f
    }

    /// Five (word, bit) positions of a block, from five 9-bit slices of the hash's low bits.
    #[inline]
    fn probes(h: u64) -> impl Iterator<Item = (usize, u64)> {
        (0..5).map(move |i| {
            let p = (h >> (9 * i)) & 511;
            ((p >> 6) as usize, 1u64 << (p & 63))
        })
    }

    #[inline]
    fn may_contain(&self, h: u64) -> bool {
        let block = &self.blocks[(h >> self.shift) as usize];
        Filter::probes(h).all(|(word, bit)| block[word] & bit != 0)
    }
}

impl LeakSet {
    /// The set of `hashes` (sorted here unless they are already; duplicates are harmless).
    pub fn from_sorted(mut hashes: Vec<u64>) -> LeakSet {
        crate::runs::sort_hashes(&mut hashes);
        let bits = (usize::BITS - hashes.len().leading_zeros()).saturating_sub(2);
        let bits = bits.clamp(1, 30);
        let shift = 64 - bits;
        let mut starts = vec![0u32; (1 << bits) + 1];
        for h in &hashes {
            starts[(h >> shift) as usize + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        LeakSet {
            filter: Filter::new(&hashes),
            hashes,
            starts,
            shift,
        }
    }

    pub fn contains(&self, h: u64) -> bool {
        if !self.filter.may_contain(h) {
            return false;
        }
        let b = (h >> self.shift) as usize;
        self.hashes[self.starts[b] as usize..self.starts[b + 1] as usize]
            .binary_search(&h)
            .is_ok()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// How many values of `a` are originals of one of the domains `tags`. The keyed hashes are
    /// computed first and looked up after, in a loop of independent lookups, so the processor
    /// waits for several cache misses at once instead of one per value.
    fn count_originals(&self, key: &AnonKey, a: &StringArray, tags: &[u64]) -> u64 {
        let hashes: Vec<u64> = a
            .iter()
            .flatten()
            .filter(|v| v.len() >= LEAK_MIN_LEN)
            .map(|v| leak_hash(key, v))
            .collect();
        hashes
            .iter()
            .filter(|h| tags.iter().any(|t| self.contains(tagged(**h, *t))))
            .count() as u64
    }

    /// The sorted hashes back.
    pub fn into_sorted(self) -> Vec<u64> {
        self.hashes
    }
}

/// Whether `value` (long enough to count) is an original of one of the domains `tags`.
pub fn is_original(key: &AnonKey, value: &str, tags: &[u64], originals: &LeakSet) -> bool {
    if value.len() < LEAK_MIN_LEN {
        return false;
    }
    let h = leak_hash(key, value);
    tags.iter().any(|t| originals.contains(tagged(h, *t)))
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
        if fields.is_empty() {
            continue;
        }
        // Batches are looked at on every core; only the counts per field come back.
        let hits = reader
            .par_bridge()
            .map(|b| {
                let b = b.map_err(|e| damaged(&info.path, e))?;
                Ok(fields
                    .iter()
                    .map(|(i, _, tags)| {
                        b.column(*i)
                            .as_any()
                            .downcast_ref::<StringArray>()
                            .map_or(0, |a| originals.count_originals(key, a, tags))
                    })
                    .collect::<Vec<u64>>())
            })
            .try_reduce(
                || vec![0u64; fields.len()],
                |a, b| Ok(a.iter().zip(&b).map(|(x, y)| x + y).collect()),
            )
            .map_err(AnonError::Staging)?;
        for ((_, field, _), n) in fields.iter().zip(hits) {
            if n > 0 {
                *leaks.entry(field.clone()).or_default() += n;
            }
        }
    }
    Ok(leaks.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::LeakSet;

    #[test]
    fn the_leak_set_finds_exactly_its_members() {
        // Uniform keyed hashes, as the run makes them; given unsorted, with a duplicate.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut members: Vec<u64> = (0..50_000)
            .map(|_| {
                x = super::tagged(x, 7);
                x
            })
            .collect();
        members.push(members[10]);
        let set = LeakSet::from_sorted(members.clone());
        assert!(members.iter().all(|h| set.contains(*h)));
        let others = (0..50_000u64).map(|i| super::tagged(i, 99));
        let false_hits = others.filter(|h| set.contains(*h)).count();
        assert_eq!(false_hits, 0);
        assert!(set.into_sorted().is_sorted());
        let empty = LeakSet::from_sorted(Vec::new());
        assert!(empty.is_empty() && !empty.contains(0) && !empty.contains(u64::MAX));
    }
}
