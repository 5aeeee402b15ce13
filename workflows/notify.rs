//! Delivery of `[[notify]]` events (see `wf_stores::notify`): each one on its own thread, retried
//! with backoff, never blocking or failing the run. Every delivery, made or given up, is appended
//! to `<data>/notifications.jsonl` (no URL, no secret) and logged.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wf_stores::notify::Notify;

/// Attempts per delivery, and the first wait between two (doubled each time).
const ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the process waits, as it exits, for deliveries still being tried.
const EXIT_WAIT: Duration = Duration::from_secs(20);

/// What happened, as sent.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Event {
    pub event: String,
    pub run: String,
    pub workflow: String,
    pub district: Option<String>,
    pub message: Option<String>,
    /// What to type next, when there is something to do.
    pub next: Option<String>,
    /// One line for people (Slack and Teams show this field).
    pub text: String,
    pub host: String,
    pub at: String,
}

impl Event {
    pub fn new(event: &str, run: &str, workflow: &str, district: Option<String>) -> Event {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        Event {
            event: event.into(),
            run: run.into(),
            workflow: workflow.into(),
            district,
            message: None,
            next: None,
            text: String::new(),
            host,
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }

    /// Sets the message and the next command, and writes the `text` line.
    pub fn with(mut self, message: Option<String>, next: Option<String>) -> Event {
        let what = match &self.district {
            Some(d) => format!("{} {} (district {d})", self.workflow, self.run),
            None => format!("{} {}", self.workflow, self.run),
        };
        let mut text = format!("wf on {}: {what}: {}", self.host, self.event);
        if let Some(m) = &message {
            text.push_str(&format!(": {m}"));
        }
        if let Some(n) = &next {
            text.push_str(&format!(". Next: `{n}`"));
        }
        self.text = text;
        self.message = message;
        self.next = next;
        self
    }
}

/// Sends events to the targets that want them, in the background.
#[derive(Clone)]
pub struct Notifier {
    targets: Arc<Vec<Notify>>,
    journal: PathBuf,
    pending: Arc<Mutex<Vec<std::thread::JoinHandle<()>>>>,
}

impl Notifier {
    pub fn new(targets: Vec<Notify>, data: &Path) -> Notifier {
        Notifier {
            targets: Arc::new(targets),
            journal: data.join("notifications.jsonl"),
            pending: Arc::default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The targets, for the event watchers (retries, silence).
    pub fn targets(&self) -> &[Notify] {
        &self.targets
    }

    /// Starts delivering `e` to every target that picked its event; returns at once.
    pub fn send(&self, e: &Event) {
        for (i, t) in self.targets.iter().enumerate() {
            if t.wants(&e.event) {
                self.send_to(i, e);
            }
        }
    }

    /// Starts delivering `e` to target `i`; returns at once.
    pub fn send_to(&self, i: usize, e: &Event) {
        let Some(t) = self.targets.get(i) else { return };
        let (t, e, journal) = (t.clone(), e.clone(), self.journal.clone());
        let h = std::thread::spawn(move || deliver(&t, &e, &journal));
        if let Ok(mut p) = self.pending.lock() {
            p.push(h);
        }
    }

    /// Waits (at most `EXIT_WAIT` in all) for deliveries still being tried, so a process that
    /// ends right after an event does not drop it.
    pub fn flush(&self) {
        let handles: Vec<_> = self
            .pending
            .lock()
            .map(|mut p| p.drain(..).collect())
            .unwrap_or_default();
        let deadline = Instant::now() + EXIT_WAIT;
        for h in handles {
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
}

/// Tries `e` on `t` up to `ATTEMPTS` times, then journals the outcome.
fn deliver(t: &Notify, e: &Event, journal: &Path) {
    let payload = serde_json::to_string(e).unwrap_or_default();
    let mut wait = FIRST_BACKOFF;
    let mut result = Err(String::from("not tried"));
    let mut attempts = 0;
    for attempt in 1..=ATTEMPTS {
        attempts = attempt;
        result = attempt_once(t, &payload);
        if result.is_ok() {
            break;
        }
        if attempt < ATTEMPTS {
            std::thread::sleep(wait);
            wait *= 2;
        }
    }
    let line = serde_json::json!({
        "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "event": e.event, "run": e.run, "target": t.describe(), "attempts": attempts,
        "delivered": result.is_ok(), "error": result.as_ref().err(),
    });
    match &result {
        Ok(()) => {
            tracing::info!(run = %e.run, event = %e.event, target = %t.describe(), "Notification delivered")
        }
        Err(err) => {
            tracing::warn!(run = %e.run, event = %e.event, target = %t.describe(), error = %err, "Notification not delivered")
        }
    }
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(journal)
        .and_then(|mut f| writeln!(f, "{line}"));
    if let Err(err) = appended {
        tracing::warn!(path = %journal.display(), error = %err, "Cannot record a notification");
    }
}

fn attempt_once(t: &Notify, payload: &str) -> Result<(), String> {
    if let Some(url) = t.webhook_url() {
        let url = url?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(ATTEMPT_TIMEOUT))
            .build()
            .into();
        agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(payload)
            .map_err(|err| format!("webhook: {err}"))?;
    }
    if let Some(cmd) = t.command.as_ref().filter(|c| !c.is_empty()) {
        run_command(cmd, payload)?;
    }
    Ok(())
}

/// Runs `cmd` (no shell) with `payload` on stdin; a non-zero exit is a failed attempt.
fn run_command(cmd: &[String], payload: &str) -> Result<(), String> {
    use std::process::{Command, Stdio};
    let mut child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("command {}: {e}", cmd[0]))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(payload.as_bytes());
    }
    let deadline = Instant::now() + ATTEMPT_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(s)) if s.success() => return Ok(()),
            Ok(Some(s)) => return Err(format!("command {} exited with {s}", cmd[0])),
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("command {} took over {ATTEMPT_TIMEOUT:?}", cmd[0]));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("command {}: {e}", cmd[0])),
        }
    }
}

/// The last `limit` deliveries recorded in `notifications.jsonl` under `root` (no URLs or
/// secrets are in it), of `run` only when given, failed ones only when `failed`; oldest first.
pub fn deliveries(
    root: &Path,
    run: Option<&str>,
    failed: bool,
    limit: usize,
) -> Vec<serde_json::Value> {
    let log = std::fs::read_to_string(root.join("notifications.jsonl")).unwrap_or_default();
    let mut out: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| run.is_none_or(|r| v["run"] == r))
        .filter(|v| !failed || v["delivered"] == false)
        .collect();
    let skip = out.len().saturating_sub(limit);
    out.drain(..skip);
    out
}

/// Watches a run's progress for the `retried` and `silent` events, passing every callback on to
/// the observer it wraps (the terminal's bars).
pub struct Watch {
    inner: Arc<dyn wf_engine::Observer>,
    notifier: Notifier,
    base: Event,
    /// (target, step) pairs already told about retries.
    told: Mutex<std::collections::HashSet<(usize, String)>>,
    last: Arc<Mutex<Instant>>,
    ended: Arc<std::sync::atomic::AtomicBool>,
}

impl Watch {
    /// Wraps `inner`; a thread sends `silent` when the run reports nothing for a target's
    /// `silent_minutes` (once per silence).
    pub fn start(
        inner: Arc<dyn wf_engine::Observer>,
        notifier: Notifier,
        base: Event,
    ) -> Arc<Watch> {
        let w = Arc::new(Watch {
            inner,
            notifier,
            base,
            told: Mutex::default(),
            last: Arc::new(Mutex::new(Instant::now())),
            ended: Arc::default(),
        });
        let limits: Vec<(usize, Duration)> = w
            .notifier
            .targets()
            .iter()
            .enumerate()
            .filter(|(_, t)| t.wants("silent"))
            .map(|(i, t)| (i, Duration::from_secs(60 * t.silent_minutes.unwrap_or(30))))
            .collect();
        if !limits.is_empty() {
            let w2 = w.clone();
            std::thread::spawn(move || w2.watch_silence(&limits));
        }
        w
    }

    fn watch_silence(&self, limits: &[(usize, Duration)]) {
        let mut told = vec![false; limits.len()];
        while !self.ended.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(500));
            let quiet = self.last.lock().map(|l| l.elapsed()).unwrap_or_default();
            for (k, (i, limit)) in limits.iter().enumerate() {
                if quiet < *limit {
                    told[k] = false;
                } else if !told[k] {
                    told[k] = true;
                    let msg = format!("nothing reported for {} s", quiet.as_secs());
                    let e = Event {
                        event: "silent".into(),
                        ..self.base.clone()
                    }
                    .with(Some(msg), None);
                    self.notifier.send_to(*i, &e);
                }
            }
        }
    }

    /// The run ended: the silence watch stops.
    pub fn end(&self) {
        self.ended.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn touch(&self) {
        if let Ok(mut l) = self.last.lock() {
            *l = Instant::now();
        }
    }
}

impl wf_engine::Observer for Watch {
    fn run_started(&self, run: &str, total: usize, done: usize) {
        self.touch();
        self.inner.run_started(run, total, done);
    }
    fn steps_added(&self, ids: &[String]) {
        self.touch();
        self.inner.steps_added(ids);
    }
    fn step_started(&self, step: &str, attempt: u32) {
        self.touch();
        for (i, t) in self.notifier.targets().iter().enumerate() {
            let over = t.retries_over.unwrap_or(3);
            if !t.wants("retried") || attempt <= over + 1 {
                continue;
            }
            let first = self
                .told
                .lock()
                .map(|mut s| s.insert((i, step.to_string())))
                .unwrap_or(false);
            if first {
                let msg =
                    format!("step {step} is on attempt {attempt} (retried more than {over} times)");
                let e = Event {
                    event: "retried".into(),
                    ..self.base.clone()
                }
                .with(Some(msg), None);
                self.notifier.send_to(i, &e);
            }
        }
        self.inner.step_started(step, attempt);
    }
    fn step_finished(&self, step: &str, ok: bool) {
        self.touch();
        self.inner.step_finished(step, ok);
    }
    fn rows(&self, step: &str, rows: u64) {
        self.touch();
        self.inner.rows(step, rows);
    }
    fn expected(&self, step: &str, rows: u64) {
        self.inner.expected(step, rows);
    }
    fn run_finished(&self) {
        self.end();
        self.inner.run_finished();
    }
}
