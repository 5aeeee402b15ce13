//! Run statuses for `wf serve`, cached. Reading a finished run's status opens its sled journal,
//! which is most of what a dashboard poll costs (the runs list and `/metrics` read every run each
//! second), and that cost lands on the machine the overnight runs use. A finished run's status
//! changes only through a journal commit, which rewrites `wf-commits` beside the journal: a cached
//! status is reused while that file's modification time is the same and no runner holds the run.
//! Live runs are read each time (the runner's published snapshot: one small file).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;
use wf_engine::{Engine, StatusView};

#[derive(Default)]
pub struct Statuses(Mutex<HashMap<String, (SystemTime, StatusView)>>);

impl Statuses {
    /// The status of `run`, with its steps.
    pub fn get(&self, engine: &Engine, run: &str) -> wf_engine::Result<StatusView> {
        let stamp = std::fs::metadata(engine.data().journal_path(run).join("wf-commits"))
            .and_then(|m| m.modified())
            .ok();
        let held = engine.data().read_lease(run).is_some();
        if let (Some(stamp), false) = (stamp, held) {
            if let Ok(cache) = self.0.lock() {
                if let Some((at, v)) = cache.get(run) {
                    if *at == stamp {
                        return Ok(v.clone());
                    }
                }
            }
        }
        let v = engine.status(run)?;
        if let (Some(stamp), false) = (stamp, v.live) {
            if let Ok(mut cache) = self.0.lock() {
                cache.insert(run.to_string(), (stamp, v.clone()));
            }
        }
        Ok(v)
    }

    /// Every run's status, with its steps, and how many could not be read (as `Engine::list`).
    pub fn all(&self, engine: &Engine) -> wf_engine::Result<(Vec<StatusView>, usize)> {
        let mut out = Vec::new();
        let mut unreadable = 0;
        for id in engine.data().run_ids()? {
            match self.get(engine, &id) {
                Ok(v) => out.push(v),
                // A live runner that has not published its first snapshot is not a broken journal.
                Err(wf_engine::EngineError::Busy { .. }) => {}
                Err(_) => unreadable += 1,
            }
        }
        Ok((out, unreadable))
    }
}
