//! Progress bars for a run (indicatif): steps done of total, the steps running and their rows.
//! Hidden when stdout is not a terminal, so scripts and CI logs stay clean.

use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use wf_engine::Observer;

/// An `Observer` that draws one bar on stderr.
pub struct Bars {
    bar: ProgressBar,
    running: Mutex<BTreeMap<String, u64>>,
    /// Per-table phases (`extract/…`): steps done and steps in all, by phase.
    phases: Mutex<BTreeMap<String, (usize, usize)>>,
}

/// The phase of a per-table step (`extract` of `extract/ids.students`).
fn phase(step: &str) -> Option<&str> {
    step.split_once('/').map(|(p, _)| p)
}

impl Bars {
    pub fn new() -> Self {
        let bar = if std::io::stdout().is_terminal() {
            let b = ProgressBar::new(0);
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            b.set_style(style);
            b.enable_steady_tick(std::time::Duration::from_millis(200));
            b
        } else {
            ProgressBar::hidden()
        };
        Bars {
            bar,
            running: Mutex::new(BTreeMap::new()),
            phases: Mutex::new(BTreeMap::new()),
        }
    }

    fn refresh(&self) {
        if self.bar.is_hidden() {
            return;
        }
        if let Ok(running) = self.running.lock() {
            let mut parts: Vec<String> = running
                .iter()
                .take(3)
                .map(|(s, rows)| {
                    if *rows > 0 {
                        format!("{s} ({rows} rows)")
                    } else {
                        s.clone()
                    }
                })
                .collect();
            if running.len() > 3 {
                parts.push(format!("+{}", running.len() - 3));
            }
            let mut msg = String::new();
            if let Ok(phases) = self.phases.lock() {
                for (p, (done, all)) in phases.iter().filter(|(_, (d, a))| d < a) {
                    msg += &format!("{p} {done}/{all} tables · ");
                }
            }
            msg += &parts.join(", ");
            self.bar.set_message(msg);
        }
    }
}

impl Default for Bars {
    fn default() -> Self {
        Self::new()
    }
}

impl Observer for Bars {
    fn run_started(&self, _run: &str, total: usize, done: usize) {
        self.bar.set_length(total as u64);
        self.bar.set_position(done as u64);
    }

    fn steps_added(&self, ids: &[String]) {
        self.bar.inc_length(ids.len() as u64);
        if let Ok(mut phases) = self.phases.lock() {
            for p in ids.iter().filter_map(|id| phase(id)) {
                phases.entry(p.to_string()).or_default().1 += 1;
            }
        }
    }

    fn step_started(&self, step: &str, _attempt: u32) {
        if let Ok(mut r) = self.running.lock() {
            r.insert(step.to_string(), 0);
        }
        self.refresh();
    }

    fn step_finished(&self, step: &str, ok: bool) {
        if ok {
            self.bar.inc(1);
            if let (Some(p), Ok(mut phases)) = (phase(step), self.phases.lock()) {
                if let Some(e) = phases.get_mut(p) {
                    e.0 += 1;
                }
            }
        }
        if let Ok(mut r) = self.running.lock() {
            r.remove(step);
        }
        self.refresh();
    }

    fn rows(&self, step: &str, rows: u64) {
        if let Ok(mut r) = self.running.lock() {
            r.insert(step.to_string(), rows);
        }
        self.refresh();
    }

    fn run_finished(&self) {
        self.bar.finish_and_clear();
    }
}
