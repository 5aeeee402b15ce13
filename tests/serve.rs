//! `wf serve`: the JSON API shows a migrate while it runs and after it is done, the pages are
//! served from the binary, `/metrics` parses as Prometheus text, and a token is required when
//! one is set (and refused to be missing on a non-loopback address).

use crate::util::Sandbox;
use crate::validation::{setup, KEY};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

pub(crate) struct Server {
    child: Child,
    pub(crate) url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn serve(sb: &Sandbox, extra: &[&str]) -> Server {
    let mut args = vec!["serve", "--port", "0"];
    args.extend_from_slice(extra);
    let mut child = sb
        .cmd(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("wf serve: ")
        .expect("the address first")
        .to_string();
    Server { child, url }
}

fn get(url: &str) -> (u16, String) {
    match ureq::get(url).call() {
        Ok(mut r) => (r.status().as_u16(), r.body_mut().read_to_string().unwrap()),
        Err(ureq::Error::StatusCode(c)) => (c, String::new()),
        Err(e) => panic!("{url}: {e}"),
    }
}

fn json(url: &str) -> Value {
    let (code, body) = get(url);
    assert_eq!(code, 200, "{url}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Starts a migrate of district 1 whose validate step holds `ms` first (and `extract/ids.students`
/// 1.5 s once it said how many rows it expects); the child and its run id.
pub(crate) fn held_migrate(sb: &Sandbox, cfg: &std::path::Path, ms: u64) -> (Child, String) {
    let mut run = sb
        .cmd([
            "run",
            "migrate",
            "--district",
            "1",
            "--config-file",
            cfg.to_str().unwrap(),
        ])
        .env("WF_ANON_KEY", KEY)
        .env(
            "WF_FAILPOINT_DELAY",
            format!("validate={ms},extract/ids.students:expected=1500"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut id = String::new();
    BufReader::new(run.stdout.take().unwrap())
        .read_line(&mut id)
        .unwrap();
    (run, id.trim().to_string())
}

#[test]
fn the_api_follows_a_run_and_metrics_parse() {
    let sb = Sandbox::new();
    let cfg = setup(&sb, "");
    let s = serve(&sb, &[]);
    // A migrate held 3 s in its validate step: the API shows it live, then done.
    let (mut run, id) = held_migrate(&sb, &cfg, 3000);
    let start = Instant::now();
    let mut expected = None;
    while start.elapsed() < Duration::from_secs(60) && expected.is_none() {
        let (_, body) = get(&format!("{}api/runs/{id}", s.url));
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        expected = v["live_steps"]["extract/ids.students"]["expected"].as_u64();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        expected.is_some_and(|n| n > 0),
        "a running step shows the rows it expects"
    );
    let mut seen_live = None;
    while start.elapsed() < Duration::from_secs(60) {
        // Until the runner has written its first snapshot the run may not be readable yet.
        let (code, body) = get(&format!("{}api/runs/{id}", s.url));
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        if code == 200 && v["live"] == true && v["shown_status"] == "running" {
            seen_live = Some(v["counts"]["done"].as_u64().unwrap());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let done_while_running = seen_live.expect("the run was seen live");
    assert!(run.wait().unwrap().success());
    let v = json(&format!("{}api/runs/{id}", s.url));
    assert_eq!(v["shown_status"], "done");
    assert!(
        v["live_steps"].is_null(),
        "no live steps once the run ended"
    );
    assert_eq!(
        json(&format!("{}api/notifications", s.url)),
        serde_json::json!([])
    );
    assert!(
        v["counts"]["done"].as_u64().unwrap() > done_while_running,
        "progress advanced"
    );
    assert!(v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["id"] == "extract/ids.students"));
    let list = json(&format!(
        "{}api/runs?status=done&workflow=migrate&district=1",
        s.url
    ));
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let none = json(&format!("{}api/runs?district=2", s.url));
    assert_eq!(none.as_array().unwrap().len(), 0, "{none}");
    let (code, _) = get(&format!("{}api/runs/..%2F..%2Fwf-data%2Fx/report", s.url));
    assert_eq!(code, 404, "a path is no run id");
    let (code, report) = get(&format!("{}api/runs/{id}/report", s.url));
    assert!(code == 200 && report.contains(&id), "{code}");
    for page in ["", &format!("runs/{id}")] {
        let (code, html) = get(&format!("{}{page}", s.url));
        assert!(
            code == 200 && html.contains("<script>") && !html.contains("http"),
            "{page}"
        );
    }
    let (code, text) = get(&format!("{}metrics", s.url));
    assert_eq!(code, 200);
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    let value = |name: &str, label: (&str, &str)| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.get(label.0) == Some(label.1))
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    assert_eq!(value("wf_runs", ("status", "done")), Some(1.0), "{text}");
    let commits = scrape
        .samples
        .iter()
        .find(|s| s.metric == "wf_journal_commit_seconds")
        .map(|s| match &s.value {
            prometheus_parse::Value::Histogram(h) => h.last().map_or(0.0, |b| b.count),
            _ => 0.0,
        });
    assert!(
        commits.is_some_and(|n| n > 10.0),
        "journal commit latency histogram: {text}"
    );
    assert!(
        value("wf_rows_total", ("phase", "load")).unwrap() > 0.0,
        "{text}"
    );
    assert_eq!(
        value("wf_rows_total", ("phase", "extract")),
        value("wf_rows_total", ("phase", "load")),
        "every extracted row is loaded, counted once: {text}"
    );
}

#[test]
fn a_token_is_required_when_set_and_off_loopback() {
    let sb = Sandbox::new();
    let r = sb.run(["serve", "--bind", "0.0.0.0", "--port", "0"]);
    assert_ne!(r.code, Some(0));
    assert!(r.stderr.contains("token"), "{}", r.stderr);
    let s = serve(&sb, &["--token", "s3cret"]);
    assert_eq!(get(&format!("{}api/runs", s.url)).0, 401);
    assert_eq!(get(&format!("{}metrics", s.url)).0, 401);
    assert_eq!(get(&format!("{}api/runs?token=s3cret", s.url)).0, 200);
    let r = ureq::get(&format!("{}metrics", s.url))
        .header("Authorization", "Bearer s3cret")
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}
