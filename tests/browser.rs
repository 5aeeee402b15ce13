//! The dashboard in a real headless browser (Debian's Chromium, installed by scripts/services.sh):
//! a migrate held in its validate step appears on the runs page, its run page shows it running and
//! then done with more steps done; screenshots of a run page and of a batch page are written to
//! `target/tmp/dashboard/` (the pictures in docs/ were made this way, from synthetic data).

use crate::util::Sandbox;
use crate::validation::{setup, KEY};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn chromium() -> Option<String> {
    match std::env::var("WF_TEST_CHROMIUM")
        .ok()
        .filter(|c| !c.is_empty())
    {
        Some(c) => Some(c),
        None => {
            assert!(
                std::env::var("CI").is_err(),
                "WF_TEST_CHROMIUM is not set in CI (scripts/services.sh installs Chromium)"
            );
            eprintln!("skipped: WF_TEST_CHROMIUM is not set (scripts/test.sh sets it)");
            None
        }
    }
}

fn headless(bin: &str) -> Command {
    let mut c = Command::new(bin);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
    ])
    .args(["--virtual-time-budget=3000", "--window-size=1400,1000"])
    .stderr(Stdio::null());
    c
}

/// The page's DOM after its scripts ran.
fn dom(bin: &str, url: &str) -> String {
    let out = headless(bin).arg("--dump-dom").arg(url).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn screenshot(bin: &str, url: &str, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    headless(bin)
        .arg(format!("--screenshot={}", path.display()))
        .arg(url)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "{} is {size} bytes", path.display());
}

/// `(status text, steps done)` of the run page's header.
fn header(dom: &str) -> (String, u64) {
    let status = dom
        .split("id=\"status\"")
        .nth(1)
        .and_then(|r| r.split('>').nth(1))
        .and_then(|r| r.split('<').next())
        .unwrap_or_default()
        .to_string();
    let done = dom
        .split("id=\"steps\">")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (status, done)
}

#[test]
fn the_dashboard_in_chromium_follows_a_run_to_done_and_shows_a_batch() {
    let Some(bin) = chromium() else { return };
    let sb = Sandbox::new();
    let cfg = setup(&sb, "");
    let server = crate::serve::serve(&sb, &[]);
    let url = server.url.clone();
    let (mut run, id) = crate::serve::held_migrate(&sb, &cfg, 6000);
    let page = format!("{url}runs/{id}");
    let start = Instant::now();
    let mut running = None;
    while start.elapsed() < Duration::from_secs(60) && running.is_none() {
        let (status, done) = header(&dom(&bin, &page));
        if status.starts_with("running") {
            running = Some(done);
        }
    }
    let done_then = running.expect("the run page showed the run running");
    assert!(
        dom(&bin, &url).contains(&format!("data-run=\"{id}\"")),
        "the run is listed"
    );
    assert!(run.wait().unwrap().success());
    let finished = dom(&bin, &page);
    let (status, done_now) = header(&finished);
    assert_eq!(status, "done");
    // The dependency drawing has a box per step and arrows between them.
    let boxes = finished.matches("data-node=").count();
    assert!(
        boxes > 10 && boxes == finished.matches("data-step=").count(),
        "{boxes} boxes in the dependency graph"
    );
    assert!(finished.contains("<line"), "dependency arrows drawn");
    // Each finished step shows the CPU seconds and peak memory its attempt recorded.
    let cpu = finished.matches("<td class=\"cpu\">0.").count()
        + finished.matches("<td class=\"cpu\">1").count();
    assert!(
        cpu > 10 && finished.contains("<td class=\"rss\">"),
        "CPU and peak memory per step: {cpu} cells"
    );
    assert!(
        done_now > done_then,
        "progress advanced: {done_then} then {done_now}"
    );
    screenshot(&bin, &page, "run.png");
    let rb = sb.run(["rollback", &id, "--yes"]);
    assert_eq!(rb.code, Some(0), "{}", rb.stderr);
    let out = crate::util::ran(
        sb.cmd([
            "batch",
            "--districts",
            "1,4",
            "--config-file",
            cfg.to_str().unwrap(),
        ])
        .env("WF_ANON_KEY", KEY)
        .output()
        .unwrap(),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let batch = out.stdout.lines().next().unwrap().to_string();
    let batch_dom = dom(&bin, &format!("{url}runs/{batch}"));
    assert!(
        batch_dom.contains("Districts") && batch_dom.contains("mig-"),
        "the batch page lists its runs"
    );
    screenshot(&bin, &format!("{url}runs/{batch}"), "batch.png");
    drop(server);
}
