//! Key sets and queues for subsetting whose memory stays bounded. Keys live in memory until one
//! selection (all its sets and queues together) holds `memory_limit()` of them, or one set or
//! queue does; then the one that passes writes its keys to a temporary file: a set as a sorted
//! run, a queue appended in order. A set keeps a 128-bit keyed fingerprint of each key it wrote
//! out (16 bytes where the key took about 100), so `insert` and `contains` never read the disk;
//! its runs are merged level by level (8 runs of one level make one of the next), so a key is
//! rewritten a few times at most and a set never holds many files open.

mod file;
mod key;

pub use file::{key_file_chunks, Chunks};
pub use key::{
    key_hash, key_hash_of, key_of_parts, Fold128, HashMap128, HashSet128, Key, KeyHasher,
};

use crate::error::StoreError;
use file::{io_err, write_framed, write_stream, FileKeys, Merge, Source};
use key::encode;
use siphasher::sip128::{Hasher128, SipHasher13};
use std::collections::BTreeSet;
use std::hash::Hasher;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// The `pass`-th of `passes` equal ranges of 64-bit hashes, inclusive: what a bounded-memory pass
/// over uniform hashes holds (the leak scan's originals, a refresh's earlier rows).
pub fn hash_range(pass: u64, passes: u64) -> (u64, u64) {
    let width = u64::MAX / passes.max(1);
    let lo = pass * width;
    let hi = if pass + 1 >= passes {
        u64::MAX
    } else {
        lo + width - 1
    };
    (lo, hi)
}

/// Which of `passes` equal ranges (see `hash_range`) holds hash `h`.
pub fn range_of(h: u64, passes: u64) -> u64 {
    let passes = passes.max(1);
    (h / (u64::MAX / passes)).min(passes - 1)
}

/// Keys one selection holds in memory before they go to disk (`WF_SUBSET_MEMORY_KEYS` overrides).
/// At about 100-200 bytes an entry, 250,000 keep a selection's keys in memory under 50 MB.
pub fn memory_limit() -> usize {
    std::env::var("WF_SUBSET_MEMORY_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(250_000)
}

/// Runs of one level merged into one of the next.
const MERGE_FAN_IN: usize = 8;

/// What one selection's sets and queues share: the memory budget, what they hold now, and the
/// temporary directory their files go to (made when something first spills; removed on drop).
#[derive(Clone)]
pub struct Spill {
    inner: Arc<Shared>,
}

struct Shared {
    held: AtomicUsize,
    budget: usize,
    dir: OnceLock<tempfile::TempDir>,
    next: AtomicU64,
    /// Fingerprint key: fresh per selection, so fingerprints mean nothing outside it.
    seed: (u64, u64),
}

impl Default for Spill {
    fn default() -> Self {
        Spill::with_budget(memory_limit())
    }
}

impl Spill {
    pub fn new() -> Result<Spill, StoreError> {
        Ok(Spill::default())
    }

    /// A spill whose selection keeps at most `budget` keys in memory.
    pub fn with_budget(budget: usize) -> Spill {
        Spill {
            inner: Arc::new(Shared {
                held: AtomicUsize::new(0),
                budget: budget.max(1),
                dir: OnceLock::new(),
                next: AtomicU64::new(0),
                seed: (rand::random(), rand::random()),
            }),
        }
    }

    /// Whether a set or queue holding `n` keys in memory should write them out now: the
    /// selection is over its budget and `n` is worth a file (a small batch would only make many
    /// tiny files; each set or queue keeps at most that much past the budget).
    fn should_spill(&self, n: usize) -> bool {
        n >= (self.inner.budget / 16).clamp(64, 16_384)
            && self.inner.held.load(Ordering::Relaxed) > self.inner.budget
    }

    fn hold(&self, n: usize) {
        self.inner.held.fetch_add(n, Ordering::Relaxed);
    }

    fn release(&self, n: usize) {
        self.inner.held.fetch_sub(n, Ordering::Relaxed);
    }

    /// A new file in the selection's temporary directory.
    fn file(&self) -> Result<(PathBuf, std::fs::File), StoreError> {
        let dir = match self.inner.dir.get() {
            Some(d) => d,
            None => {
                let made = tempfile::Builder::new()
                    .prefix("wf-subset-")
                    .tempdir()
                    .map_err(|e| io_err(&std::env::temp_dir(), e))?;
                self.inner.dir.get_or_init(|| made)
            }
        };
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let path = dir.path().join(format!("{n}.keys"));
        let f = std::fs::File::create(&path).map_err(|e| io_err(&path, e))?;
        Ok((path, f))
    }

    fn fingerprint(&self, k: &Key) -> u128 {
        let (a, b) = self.inner.seed;
        let mut h = SipHasher13::new_with_keys(a, b);
        h.write(&encode(k));
        h.finish128().as_u128()
    }
}

/// A set of keys; sorted runs on disk past the memory budget.
pub struct KeySet {
    mem: BTreeSet<Key>,
    /// Fingerprints of the keys in `runs`.
    spilled: HashSet128,
    /// Sorted runs on disk, with their level.
    runs: Vec<(u32, PathBuf)>,
    spill: Spill,
    limit: usize,
    len: usize,
}

impl KeySet {
    pub fn new(spill: &Spill, limit: usize) -> KeySet {
        KeySet {
            mem: BTreeSet::new(),
            spilled: HashSet128::default(),
            runs: Vec::new(),
            spill: spill.clone(),
            limit: limit.max(1),
            len: 0,
        }
    }

    /// Adds `k`; true if it was not there.
    pub fn insert(&mut self, k: Key) -> Result<bool, StoreError> {
        // One walk of the tree: the insert itself says whether the key was in memory.
        if !self.spilled.is_empty() && self.spilled.contains(&self.spill.fingerprint(&k)) {
            return Ok(false);
        }
        if !self.mem.insert(k) {
            return Ok(false);
        }
        self.spill.hold(1);
        self.len += 1;
        if self.mem.len() > self.limit || self.spill.should_spill(self.mem.len()) {
            self.write_run()?;
        }
        Ok(true)
    }

    /// Writes the keys in memory as a sorted run, then merges full levels.
    fn write_run(&mut self) -> Result<(), StoreError> {
        let path = write_stream(
            self.spill.file()?,
            self.mem.iter().map(|k| Ok(std::borrow::Cow::Borrowed(k))),
        )?;
        for k in &self.mem {
            self.spilled.insert(self.spill.fingerprint(k));
        }
        self.spill.release(self.mem.len());
        self.mem.clear();
        self.runs.push((0, path));
        let mut level = 0;
        loop {
            let same: Vec<PathBuf> = self
                .runs
                .iter()
                .filter(|(l, _)| *l == level)
                .map(|(_, p)| p.clone())
                .collect();
            if same.len() < MERGE_FAN_IN {
                return Ok(());
            }
            let sources = same
                .iter()
                .map(|p| FileKeys::open(p).map(|f| Box::new(f) as Source))
                .collect::<Result<Vec<_>, _>>()?;
            let merged = Merge::new(sources)?.map(|k| k.map(std::borrow::Cow::Owned));
            let path = write_stream(self.spill.file()?, merged)?;
            for p in &same {
                let _ = std::fs::remove_file(p);
            }
            self.runs.retain(|(l, _)| *l != level);
            level += 1;
            self.runs.push((level, path));
        }
    }

    pub fn contains(&self, k: &Key) -> Result<bool, StoreError> {
        Ok(self.mem.contains(k)
            || (!self.spilled.is_empty() && self.spilled.contains(&self.spill.fingerprint(k))))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every key, in key order, `n` at a time: one merge of the runs on disk and the keys in
    /// memory, read as the chunks are taken.
    pub fn chunks(&self, n: usize) -> Result<Chunks<'_>, StoreError> {
        let mut sources: Vec<Source<'_>> = self
            .runs
            .iter()
            .map(|(_, p)| FileKeys::open(p).map(|f| Box::new(f) as Source<'_>))
            .collect::<Result<_, _>>()?;
        sources.push(Box::new(self.mem.iter().cloned().map(Ok)));
        Ok(Chunks {
            inner: Box::new(Merge::new(sources)?),
            n,
        })
    }
}

impl Drop for KeySet {
    fn drop(&mut self) {
        self.spill.release(self.mem.len());
        for (_, p) in &self.runs {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A FIFO of rows (projected keys); appended to a file past the memory budget.
pub struct KeyQueue {
    mem: Vec<Key>,
    disk: Option<(PathBuf, BufWriter<std::fs::File>)>,
    spill: Spill,
    limit: usize,
}

impl KeyQueue {
    pub fn new(spill: &Spill, limit: usize) -> KeyQueue {
        KeyQueue {
            mem: Vec::new(),
            disk: None,
            spill: spill.clone(),
            limit: limit.max(1),
        }
    }

    pub fn push(&mut self, k: Key) -> Result<(), StoreError> {
        self.mem.push(k);
        self.spill.hold(1);
        if self.mem.len() > self.limit || self.spill.should_spill(self.mem.len()) {
            if self.disk.is_none() {
                let (path, f) = self.spill.file()?;
                self.disk = Some((path, BufWriter::new(f)));
            }
            if let Some((path, w)) = self.disk.as_mut() {
                for k in &self.mem {
                    write_framed(w, k).map_err(|e| io_err(path, e))?;
                }
            }
            self.spill.release(self.mem.len());
            self.mem.clear();
        }
        Ok(())
    }

    /// Takes every queued row out, `n` at a time, in order: those written to disk first.
    pub fn drain_chunks(mut self, n: usize) -> Chunks<'static> {
        let mem = std::mem::take(&mut self.mem);
        self.spill.release(mem.len());
        let disk: Source<'static> = match self.disk.take() {
            Some((path, mut w)) => match w.flush().map_err(|e| io_err(&path, e)) {
                Ok(()) => match FileKeys::open(&path) {
                    // Unlinked now: the open handle keeps it readable until dropped.
                    Ok(f) => {
                        let _ = std::fs::remove_file(&path);
                        Box::new(f)
                    }
                    Err(e) => Box::new(std::iter::once(Err(e))),
                },
                Err(e) => Box::new(std::iter::once(Err(e))),
            },
            None => Box::new(std::iter::empty()),
        };
        Chunks {
            inner: Box::new(disk.chain(mem.into_iter().map(Ok))),
            n,
        }
    }
}

impl Drop for KeyQueue {
    fn drop(&mut self) {
        self.spill.release(self.mem.len());
        if let Some((path, _)) = &self.disk {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Writes every key of `set` to `path` (a planned table's key file, read back by its extract
/// step): the same framing as a spill run, in key order; returns how many were written.
pub fn write_key_file(set: &KeySet, path: &std::path::Path) -> Result<u64, StoreError> {
    let f = std::fs::File::create(path).map_err(|e| io_err(path, e))?;
    let mut w = BufWriter::new(f);
    let mut n = 0u64;
    for chunk in set.chunks(4096)? {
        for k in chunk? {
            write_framed(&mut w, &k).map_err(|e| io_err(path, e))?;
            n += 1;
        }
    }
    w.flush()
        .and_then(|()| w.get_ref().sync_all())
        .map_err(|e| io_err(path, e))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_ranges_cover_every_hash_once() {
        for passes in [1u64, 2, 3, 7, 1000] {
            let ranges: Vec<(u64, u64)> = (0..passes).map(|p| hash_range(p, passes)).collect();
            for h in [
                0,
                1,
                u64::MAX / 2,
                u64::MAX / 3,
                u64::MAX / 7 * 3,
                u64::MAX - 1,
                u64::MAX,
            ] {
                let (lo, hi) = ranges[range_of(h, passes) as usize];
                assert!((lo..=hi).contains(&h), "{h} in pass {passes}");
            }
            assert_eq!(ranges[0].0, 0);
            assert_eq!(ranges[ranges.len() - 1].1, u64::MAX);
            for w in ranges.windows(2) {
                assert_eq!(w[0].1 + 1, w[1].0, "{passes} passes: adjacent, no gap");
            }
        }
    }

    fn key(i: u32) -> Key {
        vec![
            Some(format!("k{i}")),
            if i.is_multiple_of(3) {
                None
            } else {
                Some(format!("{i}"))
            },
        ]
    }

    #[test]
    fn sets_and_queues_behave_the_same_on_disk() {
        let spill = Spill::new().unwrap();
        let mut set = KeySet::new(&spill, 5);
        let mut queue = KeyQueue::new(&spill, 5);
        for i in 0..50 {
            assert!(set.insert(key(i)).unwrap());
            assert!(!set.insert(key(i)).unwrap());
            queue.push(key(i)).unwrap();
        }
        assert!(!set.runs.is_empty() && queue.disk.is_some(), "both spilled");
        assert_eq!(set.len(), 50);
        assert!(set.contains(&key(7)).unwrap() && !set.contains(&key(70)).unwrap());
        let seen: usize = set.chunks(8).unwrap().map(|c| c.unwrap().len()).sum();
        assert_eq!(seen, 50, "every key once");
        let drained: Vec<Key> = queue.drain_chunks(7).flat_map(|c| c.unwrap()).collect();
        assert_eq!(
            drained,
            (0..50).map(key).collect::<Vec<_>>(),
            "FIFO order kept"
        );
    }

    #[test]
    fn a_spilled_set_matches_an_in_memory_one_through_merges() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        let spill = Spill::with_budget(1_000_000);
        let mut set = KeySet::new(&spill, 16);
        let mut oracle = BTreeSet::new();
        for _ in 0..20_000 {
            let k = key(rng.random_range(0..6_000));
            assert_eq!(set.insert(k.clone()).unwrap(), oracle.insert(k));
        }
        assert_eq!(set.len(), oracle.len());
        // Level merging keeps few runs: fewer than 8 per level.
        assert!(set.runs.len() < 8 * 6, "{} runs", set.runs.len());
        for i in 0..7_000 {
            assert_eq!(set.contains(&key(i)).unwrap(), oracle.contains(&key(i)));
        }
        let all: Vec<Key> = set.chunks(333).unwrap().flat_map(|c| c.unwrap()).collect();
        assert_eq!(
            all,
            oracle.iter().cloned().collect::<Vec<_>>(),
            "sorted, each once"
        );
        let dir = spill.inner.dir.get().expect("spilled").path().to_path_buf();
        drop(set);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "runs removed");
    }

    #[test]
    fn the_budget_is_shared_by_a_selections_sets_and_queues() {
        let spill = Spill::with_budget(3_000);
        let mut sets: Vec<KeySet> = (0..4).map(|_| KeySet::new(&spill, 1_000_000)).collect();
        let mut queue = KeyQueue::new(&spill, 1_000_000);
        for i in 0..20_000 {
            sets[(i % 4) as usize].insert(key(i)).unwrap();
            queue.push(key(i)).unwrap();
        }
        // Each may keep one batch worth a file (3,000 / 16) past the budget before it spills.
        let held = spill.inner.held.load(Ordering::Relaxed);
        assert!(held <= 3_000 + 5 * 188, "{held} keys in memory");
        assert!(sets.iter().all(|s| s.len() == 5_000));
        let drained: usize = queue.drain_chunks(1000).map(|c| c.unwrap().len()).sum();
        assert_eq!(drained, 20_000);
        drop(sets);
        assert_eq!(spill.inner.held.load(Ordering::Relaxed), 0);
    }
}
