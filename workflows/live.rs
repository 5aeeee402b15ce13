//! Live progress of a running run, for `wf serve` in another process: `runs/<id>/live.json` holds
//! each running step's rows so far, the rows it expects and when it started. Written by the
//! runner at most four times a second (whole, through a temporary file, not synced: it is a view,
//! not a record) and removed when the run ends.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The file's name in a run's directory.
pub const FILE: &str = "live.json";
const EVERY: Duration = Duration::from_millis(250);

/// One running step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveStep {
    pub rows: u64,
    pub expected: Option<u64>,
    pub started_ms: u64,
}

/// Reads a run's live file: running steps by id (empty when the run is not running).
pub fn read(run_dir: &Path) -> BTreeMap<String, LiveStep> {
    std::fs::read(run_dir.join(FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// An observer that keeps the live file, passing every callback on to the one it wraps.
pub struct Live {
    inner: Arc<dyn wf_engine::Observer>,
    path: PathBuf,
    state: Mutex<(BTreeMap<String, LiveStep>, Option<Instant>)>,
}

impl Live {
    pub fn new(inner: Arc<dyn wf_engine::Observer>, run_dir: &Path) -> Live {
        // Best effort, as every write of the file: the run goes on without its live view.
        let _ = std::fs::create_dir_all(run_dir);
        Live {
            inner,
            path: run_dir.join(FILE),
            state: Mutex::default(),
        }
    }

    /// Applies `f` to the steps, then writes the file unless it was written less than `EVERY`
    /// ago (`force` writes anyway: steps starting and ending are always shown).
    fn update(&self, force: bool, f: impl FnOnce(&mut BTreeMap<String, LiveStep>)) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        f(&mut st.0);
        if !force && st.1.is_some_and(|t| t.elapsed() < EVERY) {
            return;
        }
        st.1 = Some(Instant::now());
        let tmp = self.path.with_extension("json.tmp");
        let written = serde_json::to_vec(&st.0)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            tracing::debug!(path = %self.path.display(), "live progress not written: {e}");
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl wf_engine::Observer for Live {
    fn run_started(&self, run: &str, total: usize, done: usize) {
        self.inner.run_started(run, total, done);
    }
    fn steps_added(&self, ids: &[String]) {
        self.inner.steps_added(ids);
    }
    fn step_started(&self, step: &str, attempt: u32) {
        self.update(true, |s| {
            s.insert(
                step.to_string(),
                LiveStep {
                    started_ms: now_ms(),
                    ..LiveStep::default()
                },
            );
        });
        self.inner.step_started(step, attempt);
    }
    fn step_finished(&self, step: &str, ok: bool) {
        self.update(true, |s| {
            s.remove(step);
        });
        self.inner.step_finished(step, ok);
    }
    fn rows(&self, step: &str, rows: u64) {
        self.update(false, |s| {
            if let Some(x) = s.get_mut(step) {
                x.rows = rows;
            }
        });
        self.inner.rows(step, rows);
    }
    fn expected(&self, step: &str, rows: u64) {
        self.update(true, |s| {
            if let Some(x) = s.get_mut(step) {
                x.expected = Some(rows);
            }
        });
        self.inner.expected(step, rows);
    }
    fn run_finished(&self) {
        let _ = std::fs::remove_file(&self.path);
        self.inner.run_finished();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wf_engine::Observer;

    #[test]
    fn running_steps_are_in_the_file_until_they_end() {
        let dir = tempfile::tempdir().unwrap();
        let live = Live::new(Arc::new(wf_engine::Silent), dir.path());
        live.step_started("extract/a", 1);
        live.expected("extract/a", 100);
        let got = read(dir.path());
        assert_eq!(got["extract/a"].expected, Some(100));
        assert!(got["extract/a"].started_ms > 0);
        live.step_finished("extract/a", true);
        assert!(read(dir.path()).is_empty());
        live.run_finished();
        assert!(!dir.path().join(FILE).exists());
    }
}
