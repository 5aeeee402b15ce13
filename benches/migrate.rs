//! Migrate benchmark (issue 7): `wf run migrate` of district 3 of a seeded PROD (WF_BENCH_SCALE,
//! default 25: about 1,100,000 rows for that district across the four PostgreSQL stores, plus
//! its subgraph on the Bolt server) against the raw copy of the same relational rows with
//! `psql \copy` out and in (no processing), in one run on the same servers. Also reports the
//! validate step against the extract step (issue 6: validation must take less time), and per step
//! its seconds, rows/s, CPU seconds and peak resident memory (issue 17). `WF_BENCH_GRAPH=0` leaves
//! the graph out (seeding and runs), for the larger scales; `WF_BENCH_SERVE=0` leaves out the
//! dashboard's cost (four more migrates).
//!
//! Needs `scripts/services.sh start && source /tmp/wf-services/env`; `cargo bench --bench migrate`.
//! It measures, asserts nothing. It uses the release `wf` binary Cargo builds for benches.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const STORES: [&str; 4] = ["ids", "hcp1", "hcp2", "adb"];
const KEY: &str = "bench-key-0123456789abcdef";

fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| {
        panic!("{k} is not set: run `scripts/services.sh start && source /tmp/wf-services/env`")
    })
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pg(db: &str) -> String {
    let admin = env("WF_TEST_PG_URL");
    format!("{}/{db}", admin.rsplit_once('/').expect("url").0)
}

fn psql(url: &str, args: &[&str]) -> String {
    sh(Command::new("psql")
        .arg(url)
        .args(["-qAt", "-v", "ON_ERROR_STOP=1"])
        .args(args))
}

fn graph_db(command: &str) {
    let _ = wf::arcade::server_command(
        &env("WF_TEST_ARCADE_HTTP"),
        &env("WF_TEST_BOLT_USER"),
        &env("WF_TEST_BOLT_PASSWORD"),
        command,
    );
}

/// A config for PROD and CERT side `side` (graph included or not), with the shipped rules.
fn config(dir: &Path, side: &str, graph: bool) -> PathBuf {
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

fn wf(data: &Path, args: &[&str]) -> String {
    sh(Command::new(env!("CARGO_BIN_EXE_wf"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env("WF_ANON_KEY", KEY))
}

/// The district-3 subset of each table, as `\copy (query)` selects it.
fn subset(store: &str) -> Vec<(&'static str, String)> {
    let d = "district_id = 3";
    match store {
        "ids" => vec![
            ("districts", "select * from districts where id = 3".into()),
            ("grade_levels", "select * from grade_levels".into()),
            ("schools", format!("select * from schools where {d}")),
            ("staff", format!("select * from staff where {d}")),
            ("students", format!("select * from students where {d}")),
            ("guardians", format!("select * from guardians where {d}")),
            ("student_guardians", "select sg.* from student_guardians sg join students s on s.id = sg.student_id where s.district_id = 3".into()),
        ],
        "hcp1" => ["courses", "sections", "enrollments"].iter().map(|t| (*t, format!("select * from {t} where {d}"))).collect(),
        "hcp2" => ["attendance", "grades"].iter().map(|t| (*t, format!("select * from {t} where {d}"))).collect(),
        _ => ["assessments", "results"].iter().map(|t| (*t, format!("select * from {t} where {d}"))).collect(),
    }
}

/// Wall time of phase `step`: from the start of `step` (or the first of its `step/…` steps) to
/// the end of the last one, so per-table steps that overlap count once; `=step` times the step
/// alone.
fn step_ms(data: &Path, run: &str, step: &str) -> f64 {
    // `=step` is the step alone, without its `step/…` steps.
    let (step, prefix) = match step.strip_prefix('=') {
        Some(alone) => (alone.to_string(), None),
        None => (step.to_string(), Some(format!("{step}/"))),
    };
    span_ms(data, run, &|id| {
        id == step || prefix.as_ref().is_some_and(|p| id.starts_with(p))
    })
}

/// The loads' wall time: the stores' and the graph's loads held before the gate
/// (`validate/<store>`, `validate/<graph>`) and the load steps, first to last.
fn loads_ms(data: &Path, run: &str) -> f64 {
    span_ms(data, run, &|id| {
        id.starts_with("load/")
            || id
                .strip_prefix("validate/")
                .is_some_and(|rest| !rest.contains('.'))
    })
}

/// From the start of the first step `pick` accepts to the end of the last one.
fn span_ms(data: &Path, run: &str, pick: &dyn Fn(&str) -> bool) -> f64 {
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

/// One line per step of `run`: seconds, rows/s, CPU seconds and peak resident MB (the process's
/// while the step ran, from the step's journaled metrics); then the run's peak.
fn phases(data: &Path, run: &str) {
    let v: serde_json::Value =
        serde_json::from_str(&wf(data, &["status", run, "--json"])).expect("status");
    let mut peak = 0u64;
    for s in v["steps"].as_array().into_iter().flatten() {
        let m = &s["metrics"];
        let secs = s["duration_ms"].as_f64().unwrap_or(f64::NAN) / 1000.0;
        let rows = m["rows"].as_u64();
        let rss = m["peak_rss_kb"].as_u64().unwrap_or(0);
        peak = peak.max(rss);
        println!(
            "    {:<28} {secs:>7.2} s {:>12} {:>6.2} s CPU {:>6} MB peak",
            s["id"].as_str().unwrap_or("?"),
            rows.map(|r| format!("{:.0} rows/s", r as f64 / secs))
                .unwrap_or_default(),
            m["cpu_ms"].as_f64().unwrap_or(f64::NAN) / 1000.0,
            rss / 1024
        );
    }
    println!("    peak resident memory of the run: {} MB", peak / 1024);
}

fn main() {
    let scale = std::env::var("WF_BENCH_SCALE").unwrap_or_else(|_| "25".into());
    let work = tempfile::tempdir().expect("temp");
    let admin = env("WF_TEST_PG_URL");
    for side in ["prod", "full", "rel", "psql"] {
        for s in STORES {
            psql(
                &admin,
                &[
                    "-c",
                    &format!("drop database if exists wfb_{side}_{s}"),
                    "-c",
                    &format!("create database wfb_{side}_{s}"),
                ],
            );
        }
        graph_db(&format!("drop database wfb_{side}_sp"));
        graph_db(&format!("create database wfb_{side}_sp"));
    }
    let data = work.path().join("wf-data");
    let full = config(&work.path().join("full"), "full", true);
    let rel = config(&work.path().join("rel"), "rel", false);
    let raw = config(&work.path().join("psql"), "psql", false);
    // WF_BENCH_GRAPH=0: relational stores only (seeding and runs), for the larger scales.
    let graph = std::env::var("WF_BENCH_GRAPH").as_deref() != Ok("0");
    let seed_cfg = if graph { &full } else { &rel };
    let t = Instant::now();
    print!(
        "{}",
        wf(
            &data,
            &[
                "--config",
                seed_cfg.to_str().expect("path"),
                "seed",
                "--env",
                "prod",
                "--scale",
                &scale
            ]
        )
    );
    println!(
        "(seeding took {:.1}s, not measured)",
        t.elapsed().as_secs_f64()
    );
    for c in [&full, &rel, &raw] {
        wf(
            &data,
            &[
                "--config",
                c.to_str().expect("path"),
                "seed",
                "--env",
                "cert",
            ],
        );
    }
    // The raw copy: \copy out of PROD, \copy into CERT, one transaction per store.
    let files = work.path().join("copy");
    std::fs::create_dir_all(&files).expect("dir");
    let mut rows = 0u64;
    let t = Instant::now();
    for s in STORES {
        let mut script = String::from("begin;\n");
        for (table, q) in subset(s) {
            let f = files.join(format!("{s}.{table}.txt"));
            psql(
                &pg(&format!("wfb_prod_{s}")),
                &["-c", &format!("\\copy ({q}) to '{}'", f.display())],
            );
            script.push_str(&format!("\\copy {table} from '{}'\n", f.display()));
        }
        script.push_str("commit;\n");
        let sf = files.join(format!("{s}.sql"));
        std::fs::write(&sf, script).expect("script");
        psql(
            &pg(&format!("wfb_psql_{s}")),
            &["-f", sf.to_str().expect("path")],
        );
    }
    let psql_secs = t.elapsed().as_secs_f64();
    for s in STORES {
        for (table, _) in subset(s) {
            rows += psql(
                &pg(&format!("wfb_psql_{s}")),
                &["-c", &format!("select count(*) from {table}")],
            )
            .trim()
            .parse::<u64>()
            .unwrap_or(0);
        }
    }
    // wf, relational stores only (the same rows as psql), then with the graph.
    let mut results = Vec::new();
    let runs: &[(&str, &PathBuf)] = if graph {
        &[("relational only", &rel), ("with the graph", &full)]
    } else {
        &[("relational only", &rel)]
    };
    for &(what, cfg) in runs {
        let t = Instant::now();
        let out = wf(
            &data,
            &[
                "run",
                "migrate",
                "--district",
                "3",
                "--config-file",
                cfg.to_str().expect("path"),
            ],
        );
        let secs = t.elapsed().as_secs_f64();
        let run = out.lines().next().unwrap_or_default().to_string();
        results.push((what, run, secs));
    }
    println!("district 3: {rows} relational rows");
    println!("psql \\copy out + in (no processing): {psql_secs:.2}s");
    for (what, run, secs) in &results {
        let checks: serde_json::Value = serde_json::from_slice(
            &std::fs::read(
                data.join("runs")
                    .join(run)
                    .join("steps/validate/validation-report.json"),
            )
            .unwrap_or_default(),
        )
        .unwrap_or_default();
        println!(
            "wf run migrate, {what}: {secs:.2}s = {:.2}x psql  (phases, first step to last, overlapping: extract {:.2}s, anonymize {:.2}s, validate {:.2}s over {} rows, of which the gate step {:.2}s (the cross-table checks {:.2}s); loads {:.2}s, held from validate/<store> and validate/<graph> to their commits; run {run})",
            secs / psql_secs,
            step_ms(&data, run, "extract") / 1000.0,
            step_ms(&data, run, "anonymize") / 1000.0,
            step_ms(&data, run, "validate") / 1000.0,
            checks["rows"],
            step_ms(&data, run, "=validate") / 1000.0,
            checks["seconds"].as_f64().unwrap_or(f64::NAN),
            loads_ms(&data, run) / 1000.0,
        );
        phases(&data, run);
    }
    // Rollback of each run, against the time its loads took (issue 18: no longer than the load).
    for (what, run, _) in &results {
        let load = loads_ms(&data, run) / 1000.0;
        let t = Instant::now();
        wf(&data, &["rollback", run, "--yes"]);
        let secs = t.elapsed().as_secs_f64();
        println!(
            "wf rollback, {what}: {secs:.2}s = {:.2}x its loads ({load:.2}s, first held load to the last commit)",
            secs / load
        );
    }
    if std::env::var("WF_BENCH_SERVE").as_deref() != Ok("0") {
        serve_cost(&data, &rel);
    }
}

/// The dashboard's cost (issue 15): the relational migrate again, alternately without and with
/// `wf serve` on the data directory polled as an open run page does (the run, the runs list and
/// `/metrics` every second), each run rolled back after; two pairs.
fn serve_cost(data: &Path, rel: &Path) {
    let migrate = || {
        let t = Instant::now();
        let out = wf(
            data,
            &[
                "run",
                "migrate",
                "--district",
                "3",
                "--config-file",
                rel.to_str().expect("path"),
            ],
        );
        let secs = t.elapsed().as_secs_f64();
        let run = out.lines().next().unwrap_or_default().to_string();
        wf(data, &["rollback", &run, "--yes"]);
        secs
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        without.push(migrate());
        let mut server = Command::new(env!("CARGO_BIN_EXE_wf"))
            .arg("--data-dir")
            .arg(data)
            .args(["serve", "--port", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("wf serve");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let poll = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let base = format!("http://127.0.0.1:{port}");
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let runs = Command::new("curl")
                        .args(["-fsS", &format!("{base}/api/runs")])
                        .output();
                    let latest = runs
                        .ok()
                        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
                        .and_then(|v| v[0]["id"].as_str().map(String::from));
                    for path in latest
                        .map(|id| format!("/api/runs/{id}"))
                        .into_iter()
                        .chain(["/metrics".into()])
                    {
                        let _ = Command::new("curl")
                            .args(["-fsS", "-o", "/dev/null", &format!("{base}{path}")])
                            .output();
                    }
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
            })
        };
        with.push(migrate());
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = poll.join();
        let _ = server.kill();
        let _ = server.wait();
    }
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|s| format!("{s:.2}s"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let sum = |v: &[f64]| v.iter().sum::<f64>();
    println!(
        "wf run migrate, relational only, without / with wf serve polled every second: {} / {} ({:.3}x)",
        fmt(&without),
        fmt(&with),
        sum(&with) / sum(&without)
    );
}
