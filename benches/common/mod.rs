//! What the `migrate` and `refresh` benchmarks share: the servers from the environment, configs
//! of PROD and a CERT side, the `wf` binary Cargo builds for benches, and step timings.
#![allow(dead_code)] // each benchmark uses its part

use std::path::{Path, PathBuf};
use std::process::Command;

pub const STORES: [&str; 4] = ["ids", "hcp1", "hcp2", "adb"];
pub const KEY: &str = "bench-key-0123456789abcdef";

pub fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| {
        panic!("{k} is not set: run `scripts/services.sh start && source /tmp/wf-services/env`")
    })
}

pub fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn pg(db: &str) -> String {
    let admin = env("WF_TEST_PG_URL");
    format!("{}/{db}", admin.rsplit_once('/').expect("url").0)
}

pub fn psql(url: &str, args: &[&str]) -> String {
    sh(Command::new("psql")
        .arg(url)
        .args(["-qAt", "-v", "ON_ERROR_STOP=1"])
        .args(args))
}

/// `VACUUM (ANALYZE)` of the relational databases of `sides` (`wfb_<side>_<store>`), untimed: a
/// PROD that has been in use is vacuumed; a freshly seeded one is not, and autovacuum would
/// start on it during the timed runs and move the figures.
pub fn vacuum(sides: &[&str]) {
    for side in sides {
        for s in STORES {
            psql(&pg(&format!("wfb_{side}_{s}")), &["-c", "vacuum (analyze)"]);
        }
    }
}

pub fn graph_db(command: &str) {
    let _ = wf::arcade::server_command(
        &env("WF_TEST_ARCADE_HTTP"),
        &env("WF_TEST_BOLT_USER"),
        &env("WF_TEST_BOLT_PASSWORD"),
        command,
    );
}

/// A config for PROD and CERT side `side` (graph included or not), with the shipped rules.
pub fn config(dir: &Path, side: &str, graph: bool) -> PathBuf {
    std::fs::create_dir_all(dir).expect("dir");
    let root = env!("CARGO_MANIFEST_DIR");
    let example =
        std::fs::read_to_string(format!("{root}/config/wf.example.toml")).expect("example");
    let mut text = String::new();
    let mut store = String::new();
    for line in example.lines() {
        let t = line.trim_start();
        if t.starts_with("[graph]") && !graph {
            break;
        }
        if let Some(n) = t.strip_prefix("name = ") {
            store = n.trim_matches('"').to_string();
        }
        let key = t.split(' ').next().unwrap_or_default();
        let out = match (store == "sp", key) {
            (false, "prod") => format!("prod = \"{}\"", pg(&format!("wfb_prod_{store}"))),
            (false, "cert") => format!("cert = \"{}\"", pg(&format!("wfb_{side}_{store}"))),
            (true, "prod") | (true, "cert") => format!("{key} = \"{}\"", env("WF_TEST_BOLT_URL")),
            (true, "user") => format!("user = \"{}\"", env("WF_TEST_BOLT_USER")),
            (true, "password") => "password = \"env:WF_TEST_BOLT_PASSWORD\"".to_string(),
            (true, "prod_database") => "prod_database = \"wfb_prod_sp\"".to_string(),
            (true, "cert_database") => format!("cert_database = \"wfb_{side}_sp\""),
            _ => line.to_string(),
        };
        text.push_str(&out);
        text.push('\n');
    }
    let cfg = dir.join("wf.toml");
    std::fs::write(&cfg, text).expect("config");
    for f in ["anonymization.toml", "validation.toml"] {
        std::fs::copy(format!("{root}/config/{f}"), dir.join(f)).expect("rules");
    }
    cfg
}

pub fn wf(data: &Path, args: &[&str]) -> String {
    sh(Command::new(env!("CARGO_BIN_EXE_wf"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env("WF_ANON_KEY", KEY))
}

/// Wall time of phase `step`: from the start of `step` (or the first of its `step/…` steps) to
/// the end of the last one, so per-table steps that overlap count once; `=step` times the step
/// alone.
pub fn step_ms(data: &Path, run: &str, step: &str) -> f64 {
    // `=step` is the step alone, without its `step/…` steps.
    let (step, prefix) = match step.strip_prefix('=') {
        Some(alone) => (alone.to_string(), None),
        None => (step.to_string(), Some(format!("{step}/"))),
    };
    span_ms(data, run, &|id| {
        id == step || prefix.as_ref().is_some_and(|p| id.starts_with(p))
    })
}

/// From the start of the first step `pick` accepts to the end of the last one.
pub fn span_ms(data: &Path, run: &str, pick: &dyn Fn(&str) -> bool) -> f64 {
    let v: serde_json::Value =
        serde_json::from_str(&wf(data, &["status", run, "--json"])).expect("status");
    let spans: Vec<(f64, f64)> = v["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["id"].as_str().is_some_and(pick))
        .filter_map(|s| {
            let start = s["started_ms"].as_f64()?;
            Some((start, start + s["duration_ms"].as_f64()?))
        })
        .collect();
    let first = spans.iter().map(|s| s.0).fold(f64::INFINITY, f64::min);
    let last = spans.iter().map(|s| s.1).fold(f64::NEG_INFINITY, f64::max);
    if spans.is_empty() {
        f64::NAN
    } else {
        last - first
    }
}

/// The loads' wall time: the stores' and the graph's loads held before the gate
/// (`validate/<store>`, `validate/<graph>`) and the load steps, first to last.
pub fn loads_ms(data: &Path, run: &str) -> f64 {
    span_ms(data, run, &|id| {
        id.starts_with("load/")
            || id
                .strip_prefix("validate/")
                .is_some_and(|rest| !rest.contains('.'))
    })
}

/// One line per step of `run`: seconds, rows/s, CPU seconds and peak resident MB (the process's
/// while the step ran, from the step's journaled metrics); then the run's peak.
pub fn steps(data: &Path, run: &str) {
    let v: serde_json::Value =
        serde_json::from_str(&wf(data, &["status", run, "--json"])).expect("status");
    let mut peak = 0u64;
    let mut all = v["steps"].as_array().cloned().unwrap_or_default();
    // In the order they started: the critical path reads top to bottom.
    all.sort_by(|a, b| {
        let at = |s: &serde_json::Value| s["started_ms"].as_f64().unwrap_or(f64::INFINITY);
        at(a).total_cmp(&at(b))
    });
    let first = all
        .iter()
        .filter_map(|s| s["started_ms"].as_f64())
        .fold(f64::INFINITY, f64::min);
    for s in &all {
        let m = &s["metrics"];
        let secs = s["duration_ms"].as_f64().unwrap_or(f64::NAN) / 1000.0;
        let at = (s["started_ms"].as_f64().unwrap_or(f64::NAN) - first) / 1000.0;
        let rows = m["rows"].as_u64();
        let rss = m["peak_rss_kb"].as_u64().unwrap_or(0);
        peak = peak.max(rss);
        println!(
            "    {:<28} @{at:>6.2} s {secs:>7.2} s {:>12} {:>6.2} s CPU {:>6} MB peak",
            s["id"].as_str().unwrap_or("?"),
            rows.map(|r| format!("{:.0} rows/s", r as f64 / secs))
                .unwrap_or_default(),
            m["cpu_ms"].as_f64().unwrap_or(f64::NAN) / 1000.0,
            rss / 1024
        );
    }
    println!("    peak resident memory of the run: {} MB", peak / 1024);
}
