//! Many 64-bit hashes, sorted, in bounded memory (issue 17): pushed into a buffer of at most
//! `budget` hashes; each full buffer is sorted (and deduplicated, when asked) and written to an
//! unnamed temporary file (`TMPDIR`; the OS deletes it); the runs are merged in one pass at the
//! end. Keyed hashes of a key or an original reveal nothing without the key.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{BufWriter, Read, Seek, Write};

/// A budget from environment variable `var` (a positive count of hashes), else `default`.
pub(crate) fn budget_from_env(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n: &usize| *n > 0)
        .unwrap_or(default)
}

/// Sorted runs of hashes, some on disk, the last in memory.
pub(crate) struct SortedRuns {
    buf: Vec<u64>,
    budget: usize,
    dedup: bool,
    runs: Vec<std::fs::File>,
    error: Option<std::io::Error>,
}

/// The merged hashes, in order (duplicates kept unless the runs were deduplicated, and then
/// still repeated across runs).
pub(crate) type Merged = Box<dyn Iterator<Item = std::io::Result<u64>> + Send>;

impl SortedRuns {
    /// Holds at most `budget` hashes in memory; `dedup` drops repeats within each run.
    pub fn new(budget: usize, dedup: bool) -> SortedRuns {
        SortedRuns {
            buf: Vec::new(),
            budget: budget.max(1),
            dedup,
            runs: Vec::new(),
            error: None,
        }
    }

    #[inline]
    pub fn push(&mut self, h: u64) {
        self.buf.push(h);
        if self.buf.len() >= self.budget {
            self.spill_buffer();
        }
    }

    #[cold]
    fn spill_buffer(&mut self) {
        // After a failed spill the hashes are dropped: `merged` reports the error.
        if self.error.is_none() {
            if let Err(e) = self.spill() {
                self.error = Some(e);
            }
        }
        self.buf.clear();
    }

    fn spill(&mut self) -> std::io::Result<()> {
        self.settle();
        let mut f = write_words(tempfile::tempfile()?, &self.buf)?;
        f.rewind()?;
        self.runs.push(f);
        Ok(())
    }

    fn settle(&mut self) {
        sort_hashes(&mut self.buf);
        if self.dedup {
            self.buf.dedup();
        }
    }

    /// Takes over `other`'s runs (another worker's share of the same list).
    pub fn absorb(&mut self, mut other: SortedRuns) {
        if self.error.is_none() {
            self.error = other.error.take();
        }
        self.runs.append(&mut other.runs);
        self.buf.extend(other.buf);
        if self.buf.len() >= self.budget {
            self.spill_buffer();
        }
    }

    /// Every hash pushed, in order; the error of a failed spill (disk full) here.
    pub fn merged(mut self) -> std::io::Result<Merged> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.settle();
        if self.runs.is_empty() {
            return Ok(Box::new(self.buf.into_iter().map(Ok)));
        }
        let mut sources: Vec<Block> = self
            .runs
            .into_iter()
            .map(|f| Block::file(Box::new(f)))
            .collect();
        sources.push(Block::memory(self.buf));
        let mut heap = BinaryHeap::with_capacity(sources.len());
        for (i, s) in sources.iter_mut().enumerate() {
            if let Some(h) = s.next()? {
                heap.push(Reverse((h, i)));
            }
        }
        Ok(Box::new(std::iter::from_fn(move || {
            // The smallest head is replaced by its run's next hash in place (one sift down),
            // not popped and pushed again.
            let mut top = heap.peek_mut()?;
            let Reverse((h, i)) = *top;
            match sources[i].next() {
                Ok(Some(next)) => *top = Reverse((next, i)),
                Ok(None) => {
                    std::collections::binary_heap::PeekMut::pop(top);
                }
                Err(e) => return Some(Err(e)),
            }
            Some(Ok(h))
        })))
    }

    /// The distinct hashes, sorted, in one list.
    pub fn into_distinct(mut self) -> std::io::Result<Vec<u64>> {
        if self.runs.is_empty() && self.error.is_none() {
            // All in memory: sorted and deduplicated in place, not copied.
            self.settle();
            self.buf.dedup();
            return Ok(std::mem::take(&mut self.buf));
        }
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        // The list is whole in memory anyway (this is the path without a budget: one call
        // anonymizing every table): the runs, each sorted, are read back and merged two by two,
        // linearly (sorting their concatenation again cost about twice as much).
        self.settle();
        let mut lists = vec![std::mem::take(&mut self.buf)];
        for f in self.runs {
            let mut run = Vec::new();
            for h in words(std::io::BufReader::with_capacity(1 << 16, f)) {
                run.push(h?);
            }
            lists.push(run);
        }
        let mut out = merge_all(lists);
        out.dedup();
        out.shrink_to_fit();
        Ok(out)
    }
}

/// Merges sorted lists into one sorted list, shortest first, two at a time (each pass linear;
/// at most the lists' total plus one merged pair in memory at once).
fn merge_all(mut lists: Vec<Vec<u64>>) -> Vec<u64> {
    lists.retain(|l| !l.is_empty());
    while lists.len() > 1 {
        lists.sort_by_key(|l| std::cmp::Reverse(l.len()));
        let (Some(a), Some(b)) = (lists.pop(), lists.pop()) else {
            break;
        };
        lists.push(merge_two(&a, &b));
    }
    lists.pop().unwrap_or_default()
}

/// The sorted merge of two sorted lists, without a branch on which one the next hash comes
/// from (uniform hashes make that branch a coin toss).
fn merge_two(a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (x, y) = (a[i], b[j]);
        let first = x <= y;
        out.push(if first { x } else { y });
        i += usize::from(first);
        j += usize::from(!first);
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// Sorts keyed hashes (uniform u64s). Up to `SCRATCH_MAX` of them (a worker's run of originals)
/// by `bucket_sort`, which needs a copy as large; longer lists, which the memory budgets count
/// (`WF_VALIDATE_MEMORY_HASHES`, `WF_LEAK_MEMORY_HASHES`), in place on every core, as before. A
/// sorted list (one table's range) is left as it is.
pub(crate) fn sort_hashes(v: &mut [u64]) {
    if v.is_sorted() {
        return;
    }
    if v.len() <= SCRATCH_MAX {
        bucket_sort(v);
    } else {
        use rayon::slice::ParallelSliceMut;
        v.par_sort_unstable();
    }
}

/// The longest list `sort_hashes` sorts through a copy (8 MB).
const SCRATCH_MAX: usize = 1 << 20;

/// One pass scatters the hashes by their top bits into buckets of a few hundred, each then
/// sorted while it sits in cache: about half the CPU of a comparison sort of the whole list
/// (which took about a tenth of an anonymize's), for a copy of the list while it runs.
fn bucket_sort(v: &mut [u64]) {
    if v.len() < 1 << 14 {
        v.sort_unstable();
        return;
    }
    let bits = (usize::BITS - (v.len() >> 8).leading_zeros()).min(20);
    let shift = 64 - bits;
    let mut starts = vec![0usize; (1 << bits) + 1];
    for h in v.iter() {
        starts[(h >> shift) as usize + 1] += 1;
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    let mut next = starts.clone();
    let mut out = vec![0u64; v.len()];
    for h in v.iter() {
        let b = (h >> shift) as usize;
        out[next[b]] = *h;
        next[b] += 1;
    }
    for w in starts.windows(2) {
        out[w[0]..w[1]].sort_unstable();
    }
    v.copy_from_slice(&out);
}

/// Writes `hashes` to `f` as little-endian u64s, through a buffer; the file back.
pub(crate) fn write_words(f: std::fs::File, hashes: &[u64]) -> std::io::Result<std::fs::File> {
    let mut w = BufWriter::with_capacity(1 << 16, f);
    let mut bytes = Vec::with_capacity(8 * BLOCK);
    for chunk in hashes.chunks(BLOCK) {
        bytes.clear();
        bytes.extend(chunk.iter().flat_map(|h| h.to_le_bytes()));
        w.write_all(&bytes)?;
    }
    w.into_inner().map_err(|e| e.into_error())
}

/// Hashes a run is read by at once (64 KB).
const BLOCK: usize = 8192;

/// One sorted run being merged: its next hashes in memory, read from its file a block at a time
/// (a read per hash through a boxed iterator cost more than the merge itself).
struct Block {
    file: Option<Box<dyn Read + Send>>,
    buf: Vec<u64>,
    pos: usize,
    /// The raw bytes of the last read, kept for the next.
    bytes: Vec<u8>,
}

impl Block {
    fn file(f: Box<dyn Read + Send>) -> Block {
        Block {
            file: Some(f),
            buf: Vec::new(),
            pos: 0,
            bytes: vec![0u8; 8 * BLOCK],
        }
    }

    fn memory(buf: Vec<u64>) -> Block {
        Block {
            file: None,
            buf,
            pos: 0,
            bytes: Vec::new(),
        }
    }

    #[inline]
    fn next(&mut self) -> std::io::Result<Option<u64>> {
        if self.pos == self.buf.len() && !self.refill()? {
            return Ok(None);
        }
        self.pos += 1;
        Ok(Some(self.buf[self.pos - 1]))
    }

    /// Reads the file's next block; false at its end.
    #[cold]
    fn refill(&mut self) -> std::io::Result<bool> {
        let Some(f) = self.file.as_mut() else {
            return Ok(false);
        };
        let bytes = &mut self.bytes;
        let mut n = 0;
        while n < bytes.len() {
            match f.read(&mut bytes[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if n % 8 != 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "a sorted run ends inside a hash",
            ));
        }
        self.buf.clear();
        self.buf.extend(
            bytes[..n]
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())),
        );
        self.pos = 0;
        if n == 0 {
            self.file = None;
        }
        Ok(n > 0)
    }
}

/// The little-endian u64s of a reader (a sorted run, a part's originals), read a block at a time.
pub(crate) fn words(
    r: impl Read + Send + 'static,
) -> impl Iterator<Item = std::io::Result<u64>> + Send {
    let mut block = Block::file(Box::new(r));
    std::iter::from_fn(move || block.next().transpose())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeded, so a failure replays: values from a small range repeat often.
    pub(crate) fn values(n: usize, range: u64) -> Vec<u64> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % range
            })
            .collect()
    }

    /// Words are read a block at a time: more than one block comes back whole and in order, and
    /// a file cut inside a hash is an error, not a shorter list.
    #[test]
    fn words_read_whole_blocks_and_refuse_a_cut_file() {
        let v = values(3 * BLOCK + 5, u64::MAX);
        let bytes: Vec<u8> = v.iter().flat_map(|h| h.to_le_bytes()).collect();
        let got: Vec<u64> = words(std::io::Cursor::new(bytes.clone()))
            .map(|h| h.unwrap())
            .collect();
        assert_eq!(got, v);
        let cut = bytes[..bytes.len() - 3].to_vec();
        let last = words(std::io::Cursor::new(cut)).last().unwrap();
        assert!(last.is_err(), "{last:?}");
    }

    /// The bucket sort gives what a comparison sort gives: uniform hashes, repeats, a skewed list
    /// (all in one bucket), short and sorted lists.
    #[test]
    fn hashes_sort_as_a_comparison_sort_sorts_them() {
        let uniform: Vec<u64> = values(200_000, u64::MAX)
            .into_iter()
            .map(|x| x.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        let lists = [
            uniform.clone(),
            values(100_000, 1_000),
            values(50_000, u64::MAX)
                .into_iter()
                .map(|x| x >> 40)
                .collect(),
            values(100, u64::MAX),
            uniform
                .iter()
                .copied()
                .chain(uniform.iter().copied())
                .collect(),
            Vec::new(),
        ];
        for v in lists {
            let mut want = v.clone();
            want.sort_unstable();
            let mut got = v.clone();
            sort_hashes(&mut got);
            assert_eq!(got, want);
            let mut got = v;
            bucket_sort(&mut got);
            assert_eq!(got, want);
        }
    }

    #[test]
    fn merged_runs_give_every_hash_in_order_whatever_the_budget() {
        let v = values(5_000, 3_000);
        let mut sorted = v.clone();
        sorted.sort_unstable();
        let mut distinct = sorted.clone();
        distinct.dedup();
        for budget in [usize::MAX, 5_000, 777, 10, 1] {
            let mut r = SortedRuns::new(budget, false);
            v.iter().for_each(|h| r.push(*h));
            let got: Vec<u64> = r.merged().unwrap().map(|h| h.unwrap()).collect();
            assert_eq!(got, sorted, "budget {budget}");
            // Two workers' shares, deduplicated per run, then together.
            let (mut a, mut b) = (SortedRuns::new(budget, true), SortedRuns::new(budget, true));
            for (i, h) in v.iter().enumerate() {
                if i % 3 == 0 {
                    a.push(*h)
                } else {
                    b.push(*h)
                }
            }
            a.absorb(b);
            assert_eq!(a.into_distinct().unwrap(), distinct, "budget {budget}");
        }
    }
}
