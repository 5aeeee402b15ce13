//! What a step attempt cost the process: CPU seconds and peak resident memory, recorded in the
//! step's output metrics (`cpu_ms`, `peak_rss_kb`) so the report and `wf status` show them and a
//! district whose memory grows can be traced to its step. Steps that run at once share one
//! process, so each sees the whole process's CPU and memory while it ran (exact for a step that
//! ran alone). Linux only (read from /proc); elsewhere nothing is recorded.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

/// Metric names in a step's output.
pub const CPU_MS: &str = "cpu_ms";
pub const PEAK_RSS_KB: &str = "peak_rss_kb";

/// How often the sampler reads the resident set while steps run.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// Peaks of the attempts running now, raised by the sampler thread.
struct Sampler {
    windows: Mutex<Vec<Weak<AtomicU64>>>,
    running: AtomicBool,
}

fn sampler() -> &'static Sampler {
    static S: OnceLock<Sampler> = OnceLock::new();
    S.get_or_init(|| Sampler {
        windows: Mutex::new(Vec::new()),
        running: AtomicBool::new(false),
    })
}

/// Samples while at least one window is open; the thread ends when none is.
fn sample_loop(s: &'static Sampler) {
    loop {
        let rss = rss_kb().unwrap_or(0);
        let mut w = s.windows.lock().unwrap_or_else(|e| e.into_inner());
        w.retain(|p| match p.upgrade() {
            Some(p) => {
                p.fetch_max(rss, Ordering::Relaxed);
                true
            }
            None => false,
        });
        if w.is_empty() {
            s.running.store(false, Ordering::SeqCst);
            return;
        }
        drop(w);
        std::thread::sleep(SAMPLE_EVERY);
    }
}

/// One attempt's measurement, from its start to [`Meter::finish`].
pub struct Meter {
    cpu_start: Option<u64>,
    peak: Arc<AtomicU64>,
}

impl Meter {
    /// Starts measuring (and the sampler thread, if none runs).
    pub fn start() -> Meter {
        let peak = Arc::new(AtomicU64::new(rss_kb().unwrap_or(0)));
        let s = sampler();
        s.windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::downgrade(&peak));
        if !s.running.swap(true, Ordering::SeqCst) {
            let spawned = std::thread::Builder::new()
                .name("wf-resources".into())
                .spawn(move || sample_loop(s));
            if spawned.is_err() {
                s.running.store(false, Ordering::SeqCst);
            }
        }
        Meter {
            cpu_start: cpu_ms(),
            peak,
        }
    }

    /// CPU milliseconds and peak resident kilobytes since the start; `None` where /proc is missing.
    pub fn finish(self) -> Option<(u64, u64)> {
        let now = rss_kb()?;
        let cpu = cpu_ms()?.saturating_sub(self.cpu_start?);
        Some((cpu, self.peak.load(Ordering::Relaxed).max(now)))
    }
}

/// The process's resident set, in kB (`VmRSS` of /proc/self/status).
pub fn rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU time of the process, in ms (/proc/self/stat, in clock ticks of 1/100 s:
/// USER_HZ is 100 on every Linux architecture wf builds for).
pub fn cpu_ms() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces), from field 3 on.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) * 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_that_allocates_and_computes_shows_it() {
        let m = Meter::start();
        // 64 MB touched, then released before the end: only the sampler can have seen it.
        let mut v = vec![1u8; 64 << 20];
        for i in (0..v.len()).step_by(4096) {
            v[i] = (i % 251) as u8;
        }
        std::thread::sleep(SAMPLE_EVERY * 3);
        let sum: u64 = v.iter().map(|x| u64::from(*x)).sum();
        drop(v);
        let t = std::time::Instant::now();
        let mut x = sum;
        while t.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let (cpu, peak) = m.finish().expect("linux /proc");
        assert!(peak >= 64 << 10, "peak {peak} kB");
        assert!(cpu >= 200, "cpu {cpu} ms");
    }
}
