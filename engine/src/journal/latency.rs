//! How long the journal's durable commits take (sled flush + fdatasync), kept beside the journal
//! in `wf-commit-latency.json` so a dashboard in another process can read it while the runner
//! holds the run: counts per bucket, the sum and the slowest. Written after each commit, not
//! synced (it is a measurement, not a record).

use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// The file's name inside a run's journal directory.
pub const FILE: &str = "wf-commit-latency.json";

/// Upper bounds of the histogram's buckets, in seconds (a last, unbounded bucket follows).
pub const BOUNDS: [f64; 8] = [0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5];

/// Commit latencies of one run's journal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CommitLatency {
    pub commits: u64,
    pub sum_seconds: f64,
    pub max_seconds: f64,
    /// Commits per bucket of `BOUNDS`, then the ones slower than the last bound.
    pub buckets: Vec<u64>,
}

impl CommitLatency {
    /// Counts one commit that took `d`.
    pub fn record(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        if self.buckets.len() != BOUNDS.len() + 1 {
            self.buckets = vec![0; BOUNDS.len() + 1];
        }
        let i = BOUNDS.iter().position(|b| s <= *b).unwrap_or(BOUNDS.len());
        self.buckets[i] += 1;
        self.commits += 1;
        self.sum_seconds += s;
        self.max_seconds = self.max_seconds.max(s);
    }

    /// Adds another run's counts (for totals over runs).
    pub fn add(&mut self, o: &CommitLatency) {
        if self.buckets.len() != BOUNDS.len() + 1 {
            self.buckets = vec![0; BOUNDS.len() + 1];
        }
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            *a += b;
        }
        self.commits += o.commits;
        self.sum_seconds += o.sum_seconds;
        self.max_seconds = self.max_seconds.max(o.max_seconds);
    }

    /// Reads the file of the journal at `dir`; `None` when absent or unreadable (older runs).
    pub fn read(dir: &Path) -> Option<CommitLatency> {
        let text = std::fs::read(dir.join(FILE)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Writes the file into the journal at `dir` (whole, through a temporary file).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(format!("{FILE}.tmp"));
        std::fs::write(
            &tmp,
            serde_json::to_vec(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, dir.join(FILE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_fall_into_their_buckets_and_add_up() {
        let mut a = CommitLatency::default();
        a.record(Duration::from_micros(500));
        a.record(Duration::from_millis(3));
        a.record(Duration::from_secs(2));
        assert_eq!(a.commits, 3);
        assert_eq!(a.buckets, vec![1, 0, 1, 0, 0, 0, 0, 0, 1]);
        assert!((a.max_seconds - 2.0).abs() < 1e-9);
        let mut t = CommitLatency::default();
        t.add(&a);
        t.add(&a);
        assert_eq!(t.commits, 6);
        assert_eq!(t.buckets[8], 2);
        let dir = tempfile::tempdir().unwrap();
        a.write(dir.path()).unwrap();
        assert_eq!(CommitLatency::read(dir.path()), Some(a));
    }
}
