//! Repeated values among a table's key hashes in bounded memory (issue 17). A hash set of every
//! key of a 10-million-row table took 150-230 MB while it grew; here the hashes go into sorted
//! runs (`runs`) of at most `WF_VALIDATE_MEMORY_HASHES` (4,000,000 by default: 32 MB) and the
//! repeats are counted in their merge.

use crate::runs::SortedRuns;

/// Hashes held in memory before a sorted run goes to disk.
fn budget() -> usize {
    crate::runs::budget_from_env("WF_VALIDATE_MEMORY_HASHES", 4_000_000)
}

/// Counts the hashes pushed more than once; remembers up to `examples` of the repeated ones.
pub(super) struct DupFinder {
    runs: SortedRuns,
}

/// What the merge found: how many pushes repeated an earlier hash, and some repeated hashes.
pub(super) struct Dups {
    pub repeats: u64,
    pub some: Vec<u64>,
}

impl DupFinder {
    pub fn new() -> DupFinder {
        DupFinder::with_budget(budget())
    }

    pub fn with_budget(budget: usize) -> DupFinder {
        DupFinder {
            runs: SortedRuns::new(budget, false),
        }
    }

    #[inline]
    pub fn push(&mut self, h: u64) {
        self.runs.push(h);
    }

    /// Merges the runs; an error of a spill (disk full) is returned here.
    pub fn finish(self, examples: usize) -> std::io::Result<Dups> {
        let mut dups = Dups {
            repeats: 0,
            some: Vec::new(),
        };
        let mut last: Option<u64> = None;
        for h in self.runs.merged()? {
            let h = h?;
            if last == Some(h) {
                dups.repeats += 1;
                if dups.some.last() != Some(&h) && dups.some.len() < examples {
                    dups.some.push(h);
                }
            }
            last = Some(h);
        }
        Ok(dups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same pushes counted with a hash set, for comparison.
    fn expected(values: &[u64]) -> u64 {
        let mut seen = std::collections::HashSet::new();
        values.iter().filter(|v| !seen.insert(**v)).count() as u64
    }

    #[test]
    fn repeats_are_counted_alike_in_memory_and_across_spilled_runs() {
        // Seeded, so a failure replays: values drawn from a small range repeat often.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let values: Vec<u64> = (0..10_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % 7_000
            })
            .collect();
        let want = expected(&values);
        assert!(want > 1000, "the input repeats");
        for budget in [usize::MAX, 10_000, 999, 64, 1] {
            let mut d = DupFinder::with_budget(budget);
            values.iter().for_each(|v| d.push(*v));
            let got = d.finish(5).expect("finish");
            assert_eq!(got.repeats, want, "budget {budget}");
            assert_eq!(got.some.len(), 5, "budget {budget}");
            for h in &got.some {
                assert!(values.iter().filter(|v| *v == h).count() > 1, "{h} repeats");
            }
        }
    }

    #[test]
    fn distinct_values_have_no_repeats() {
        let mut d = DupFinder::with_budget(100);
        (0..1000u64).rev().for_each(|v| d.push(v));
        let got = d.finish(5).expect("finish");
        assert_eq!((got.repeats, got.some.len()), (0, 0));
    }
}
