//! Migrate benchmark (issue 7): `wf run migrate` of district 3 of a seeded PROD (WF_BENCH_SCALE,
//! default 25: about 1,100,000 rows for that district across the four PostgreSQL stores, plus
//! its subgraph on the Bolt server) against the raw copy of the same relational rows with
//! `psql \copy` out and in (no processing), in one run on the same servers. Also reports the
//! validate step against the extract step (issue 6: validation must take less time), and per step
//! its seconds, rows/s, CPU seconds and peak resident memory (issue 17). `WF_BENCH_GRAPH=0` leaves
//! the graph out (seeding and runs), for the larger scales; `WF_BENCH_SERVE=0` leaves out the
//! dashboard's cost (four more migrates); `WF_BENCH_ROUNDS=N` repeats psql and both migrates N
//! times, each round into CERT databases made afresh, and quotes medians (default 1), after
//! `WF_BENCH_WARMUP` rounds (default 1) that are run the same way and not counted. PROD is
//! vacuumed and analyzed after seeding (untimed), as a PROD in use would be.
//!
//! Needs `scripts/services.sh start && source /tmp/wf-services/env`; `cargo bench --bench migrate`.
//! It measures, asserts nothing. It uses the release `wf` binary Cargo builds for benches.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

mod common;
use common::*;

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

fn main() {
    let scale = std::env::var("WF_BENCH_SCALE").unwrap_or_else(|_| "25".into());
    let work = tempfile::tempdir().expect("temp");
    recreate(&["prod", "full", "rel", "psql"]);
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
    vacuum(&["prod"]);
    println!(
        "(seeding and vacuuming took {:.1}s, not measured)",
        t.elapsed().as_secs_f64()
    );
    // WF_BENCH_ROUNDS (default 1): rounds of psql, wf relational and wf with the graph, each
    // into CERT databases made afresh (a graph database that a rollback emptied loads slower:
    // 14.5 s, then 19.3 s two rollbacks later); medians, since the machine is shared and noisy.
    let rounds: usize = std::env::var("WF_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1)
        .max(1);
    let runs: &[(&str, &PathBuf)] = if graph {
        &[("relational only", &rel), ("with the graph", &full)]
    } else {
        &[("relational only", &rel)]
    };
    // WF_BENCH_WARMUP (default 1): rounds run first and not counted, for both sides: a freshly
    // started ArcadeDB (a JVM) loaded about 25 % slower in its first rounds.
    let warmup: usize = std::env::var("WF_BENCH_WARMUP")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let mut psql_secs = Vec::new();
    let mut wf_secs: Vec<Vec<f64>> = vec![Vec::new(); runs.len()];
    let mut rows = 0;
    let mut last = Vec::new();
    for round in 0..warmup + rounds {
        if round > 0 {
            recreate(&["full", "rel", "psql"]);
        }
        for c in [&full, &rel, &raw] {
            let c = c.to_str().expect("path");
            wf(&data, &["--config", c, "seed", "--env", "cert"]);
        }
        let psql = psql_copy(work.path());
        if round == 0 {
            rows = psql_rows();
        }
        let mut results = Vec::new();
        for &(what, cfg) in runs {
            let (run, secs) = migrate(&data, cfg);
            results.push((what, run, secs));
        }
        let label = if round < warmup {
            "warm-up (not counted)".to_string()
        } else {
            psql_secs.push(psql);
            for (i, (_, _, secs)) in results.iter().enumerate() {
                wf_secs[i].push(*secs);
            }
            format!("round {}", round - warmup + 1)
        };
        println!(
            "{label}: psql {:.2}s, {}",
            psql,
            results
                .iter()
                .map(|(what, _, secs)| format!("wf {what} {secs:.2}s"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        last = results;
    }
    println!("district 3: {rows} relational rows");
    let psql_med = median(&psql_secs);
    println!("psql \\copy out + in (no processing): {psql_med:.2}s (median of {rounds})");
    for (i, (what, run, _)) in last.iter().enumerate() {
        let secs = median(&wf_secs[i]);
        let ratios: Vec<String> = wf_secs[i]
            .iter()
            .zip(&psql_secs)
            .map(|(w, p)| format!("{:.2}", w / p))
            .collect();
        println!(
            "wf run migrate, {what}: {secs:.2}s (median of {rounds}) = {:.2}x psql; per round {}",
            secs / psql_med,
            ratios.join(", ")
        );
        phases(&data, run);
    }
    // Rollback of each run, against the time its loads took (issue 18: no longer than the load).
    for (what, run, _) in &last {
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

/// Empty databases `wfb_<side>_<store>` and graph databases `wfb_<side>_sp` for `sides`.
fn recreate(sides: &[&str]) {
    let admin = env("WF_TEST_PG_URL");
    for side in sides {
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
}

/// The raw copy: `\\copy` out of PROD, `\\copy` into empty CERT tables, one transaction per
/// store; its seconds.
fn psql_copy(work: &Path) -> f64 {
    let files = work.join("copy");
    std::fs::create_dir_all(&files).expect("dir");
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
    t.elapsed().as_secs_f64()
}

/// The relational rows the raw copy carried.
fn psql_rows() -> u64 {
    let mut rows = 0;
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
    rows
}

/// `wf run migrate --district 3` under `cfg`: the run id and its seconds.
fn migrate(data: &Path, cfg: &Path) -> (String, f64) {
    let t = Instant::now();
    let out = wf(
        data,
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
    (out.lines().next().unwrap_or_default().to_string(), secs)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The phases and steps of `run` (the last round's).
fn phases(data: &Path, run: &str) {
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
        "    last round's phases, first step to last, overlapping: extract {:.2}s, anonymize {:.2}s, validate {:.2}s over {} rows, of which the gate step {:.2}s (the cross-table checks {:.2}s); loads {:.2}s, held from validate/<store> and validate/<graph> to their commits; run {run}",
        step_ms(data, run, "extract") / 1000.0,
        step_ms(data, run, "anonymize") / 1000.0,
        step_ms(data, run, "validate") / 1000.0,
        checks["rows"],
        step_ms(data, run, "=validate") / 1000.0,
        checks["seconds"].as_f64().unwrap_or(f64::NAN),
        loads_ms(data, run) / 1000.0,
    );
    steps(data, run);
}

/// The dashboard's cost (issue 15): the relational migrate again, alternately without and with
/// `wf serve` on the data directory polled as an open run page does (the run, the runs list and
/// `/metrics` every second), each run rolled back after; two pairs.
fn serve_cost(data: &Path, rel: &Path) {
    let migrate = || {
        let (run, secs) = migrate(data, rel);
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
