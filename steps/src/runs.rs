//! Many 64-bit hashes, sorted, in bounded memory (issue 17): pushed into a buffer of at most
//! `budget` hashes; each full buffer is sorted (and deduplicated, when asked) and written to an
//! unnamed temporary file (`TMPDIR`; the OS deletes it); the runs are merged in one pass at the
//! end. Keyed hashes of a key or an original reveal nothing without the key.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{BufReader, BufWriter, Read, Seek, Write};

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
        use rayon::slice::ParallelSliceMut;
        self.buf.par_sort_unstable();
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
        let mut sources: Vec<Merged> = Vec::new();
        for f in self.runs {
            sources.push(Box::new(words(BufReader::with_capacity(1 << 16, f))));
        }
        sources.push(Box::new(self.buf.into_iter().map(Ok)));
        let mut heap = BinaryHeap::new();
        for (i, s) in sources.iter_mut().enumerate() {
            if let Some(h) = s.next().transpose()? {
                heap.push(Reverse((h, i)));
            }
        }
        Ok(Box::new(std::iter::from_fn(move || {
            let Reverse((h, i)) = heap.pop()?;
            match sources[i].next().transpose() {
                Ok(Some(next)) => heap.push(Reverse((next, i))),
                Ok(None) => {}
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
        let mut out: Vec<u64> = Vec::new();
        for h in self.merged()? {
            let h = h?;
            if out.last() != Some(&h) {
                out.push(h);
            }
        }
        out.shrink_to_fit();
        Ok(out)
    }
}

/// Writes `hashes` to `f` as little-endian u64s, through a buffer; the file back.
pub(crate) fn write_words(f: std::fs::File, hashes: &[u64]) -> std::io::Result<std::fs::File> {
    let mut w = BufWriter::with_capacity(1 << 16, f);
    for h in hashes {
        w.write_all(&h.to_le_bytes())?;
    }
    w.into_inner().map_err(|e| e.into_error())
}

/// The little-endian u64s of a reader (a sorted run, a part's originals).
pub(crate) fn words(
    mut r: impl Read + Send + 'static,
) -> impl Iterator<Item = std::io::Result<u64>> + Send {
    std::iter::from_fn(move || {
        let mut w = [0u8; 8];
        match r.read_exact(&mut w) {
            Ok(()) => Some(Ok(u64::from_le_bytes(w))),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => None,
            Err(e) => Some(Err(e)),
        }
    })
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
