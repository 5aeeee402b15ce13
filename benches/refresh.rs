//! Refresh benchmark (issue 16): district 3 of a seeded PROD (WF_BENCH_SCALE, default 25: about
//! 1,100,000 rows across the four PostgreSQL stores) is migrated into an empty CERT; then, in
//! WF_BENCH_ROUNDS rounds (default 3), PROD changes about 1 % of the district's rows (updates of
//! non-key columns in every table, some attendance rows deleted) before each refresh, whole and
//! `--incremental` in turn. Prints the migrate, each refresh and its phases (`WF_BENCH_STEPS=1`:
//! its steps), and the medians' ratios; "loads" are the stores' loads, from the first held load
//! (`validate/<store>`) to the last commit. Relational stores only unless `WF_BENCH_GRAPH=1`
//! (then also about 1 % of the district's students change in PROD's graph; the graph is read
//! whole either way, and written by difference with `--incremental`). With `WF_BENCH_TRACKED` (default 1) the tables of `TRACKED` get a change column
//! and a `[[change_tracking]]` entry, so an incremental refresh reads only what changed there.
//!
//! Before the migrate and before each refresh (untimed) both sides are vacuumed and analyzed, as
//! autovacuum would have done in the weeks between two refreshes: without it, autovacuum starts
//! on the freshly seeded or replaced tables during the timed runs, and the ratios move with it.
//!
//! Needs `scripts/services.sh start && source /tmp/wf-services/env`; `cargo bench --bench refresh`.
//! It measures, asserts nothing. It uses the release `wf` binary Cargo builds for benches.

use std::time::Instant;

mod common;
use common::*;

/// About `pct` % of district 3's rows changed, differently for each `round`.
fn change_prod(round: u32, pct: u32) {
    let pick = |t: &str| {
        format!("select id from {t} where district_id = 3 and (id * 7919 + {round}) % 100 < {pct}")
    };
    let stmts = [
        ("ids", format!("update students set last_name = last_name || 'r' where id in ({})", pick("students"))),
        ("ids", format!("update guardians set phone = '555-{round}' where id in ({})", pick("guardians"))),
        ("ids", format!("update staff set phone = '555-{round}' where id in ({})", pick("staff"))),
        ("hcp1", format!("update enrollments set enrolled_on = enrolled_on + 1 where id in ({})", pick("enrollments"))),
        ("hcp1", format!("update sections set room = 'R{round}' where id in ({})", pick("sections"))),
        ("hcp2", format!("update attendance set status = case status when 'present' then 'absent' else 'present' end where id in ({})", pick("attendance"))),
        ("hcp2", format!("delete from attendance where district_id = 3 and (id * 104729 + {round}) % 1000 = 0")),
        ("hcp2", format!("update grades set comments = 'round {round}' where id in ({})", pick("grades"))),
        ("adb", format!("update results set score = score + 1 where id in ({})", pick("results"))),
    ];
    for (store, sql) in stmts {
        psql(&pg(&format!("wfb_prod_{store}")), &["-c", &sql]);
    }
}

/// About `pct` % of district 3's students changed in PROD's graph, differently for each `round`.
fn change_graph(round: u32, pct: u32) {
    let c = format!(
        "MATCH (s:Student) WHERE s.district_id = 3 AND (s.id * 7919 + {round}) % 100 < {pct} SET s.grade = 'G{round}'"
    );
    wf::arcade::command(
        &env("WF_TEST_ARCADE_HTTP"),
        (&env("WF_TEST_BOLT_USER"), &env("WF_TEST_BOLT_PASSWORD")),
        "wfb_prod_sp",
        ("opencypher", &c),
        serde_json::json!({}),
    )
    .expect("graph change");
}

/// The first line of `wf`'s output that is a run id.
fn run_id(out: &str) -> String {
    out.lines()
        .find(|l| l.starts_with("mig-"))
        .expect("a run id")
        .to_string()
}

/// The wall time of each phase of `run` (overlapping phases overlap here too).
fn phases(data: &std::path::Path, run: &str) {
    let line: Vec<String> = ["extract", "anonymize", "validate", "=validate", "load"]
        .iter()
        .map(|p| format!("{p} {:.2} s", step_ms(data, run, p) / 1000.0))
        .collect();
    println!("      {}", line.join(", "));
}

/// The middle value; of an even count, the mean of the two middle ones (`WF_BENCH_ROUNDS=2`
/// took the larger).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n % 2 {
        0 if n > 0 => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        _ => v[n / 2],
    }
}

fn main() {
    let scale = std::env::var("WF_BENCH_SCALE").unwrap_or_else(|_| "25".into());
    let rounds: u32 = std::env::var("WF_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let work = tempfile::tempdir().expect("temp");
    let admin = env("WF_TEST_PG_URL");
    for side in ["prod", "inc"] {
        for s in STORES {
            let db = format!("wfb_{side}_{s}");
            psql(
                &admin,
                &[
                    "-c",
                    &format!("drop database if exists {db}"),
                    "-c",
                    &format!("create database {db}"),
                ],
            );
        }
    }
    // WF_BENCH_GRAPH=1: the graph too (its PROD and CERT databases made afresh).
    let graph = std::env::var("WF_BENCH_GRAPH").as_deref() == Ok("1");
    if graph {
        for side in ["prod", "inc"] {
            graph_db(&format!("drop database wfb_{side}_sp"));
            graph_db(&format!("create database wfb_{side}_sp"));
        }
    }
    let data = work.path().join("wf-data");
    let cfg = config(&work.path().join("inc"), "inc", graph);
    let cfg = cfg.to_str().expect("path");
    wf(
        &data,
        &["--config", cfg, "seed", "--env", "prod", "--scale", &scale],
    );
    wf(&data, &["--config", cfg, "seed", "--env", "cert"]);
    if std::env::var("WF_BENCH_TRACKED").as_deref() != Ok("0") {
        track_changes(std::path::Path::new(cfg));
    }
    let migrate = ["run", "migrate", "--district", "3", "--config-file", cfg];
    vacuum(&["prod", "inc"]);
    let t = Instant::now();
    let first = run_id(&wf(&data, &migrate));
    let migrate_s = t.elapsed().as_secs_f64();
    let rows = span_rows(&data, &first);
    println!("scale {scale}: migrate of district 3 ({rows} rows) {migrate_s:.2} s");
    phases(&data, &first);
    if std::env::var("WF_BENCH_STEPS").as_deref() == Ok("1") {
        steps(&data, &first);
    }
    let (mut whole, mut inc) = (Vec::new(), Vec::new());
    for round in 0..2 * rounds {
        vacuum(&["prod", "inc"]);
        change_prod(round, 1);
        if graph {
            change_graph(round, 1);
        }
        let incremental = round % 2 == 1;
        let mut args = vec!["refresh", "--district", "3", "--config-file", cfg];
        if incremental {
            args.push("--incremental");
        }
        let t = Instant::now();
        let run = run_id(&wf(&data, &args));
        let secs = t.elapsed().as_secs_f64();
        let loads = loads_ms(&data, &run) / 1000.0;
        println!(
            "  round {round}: refresh {} {secs:.2} s",
            if incremental {
                "--incremental"
            } else {
                "whole        "
            },
        );
        phases(&data, &run);
        if std::env::var("WF_BENCH_STEPS").as_deref() == Ok("1") {
            steps(&data, &run);
        }
        if incremental {
            inc.push((secs, loads));
        } else {
            whole.push((secs, loads));
        }
    }
    let m = |v: &[(f64, f64)], i: usize| {
        median(v.iter().map(|x| if i == 0 { x.0 } else { x.1 }).collect())
    };
    let (w, i) = (m(&whole, 0), m(&inc, 0));
    let (wl, il) = (m(&whole, 1), m(&inc, 1));
    println!(
        "medians: whole refresh {w:.2} s (loads {wl:.2} s), incremental {i:.2} s (loads {il:.2} s)"
    );
    println!(
        "incremental / migrate = {:.2}, incremental / whole refresh = {:.2}, loads {:.2}",
        i / migrate_s,
        i / w,
        il / wl
    );
}

/// Tables given an `updated_at` change column (stamped by a trigger in PROD) and a
/// `[[change_tracking]]` entry; those with a unique text column are still read whole.
const TRACKED: [(&str, &str); 8] = [
    ("ids", "guardians"),
    ("ids", "staff"),
    ("ids", "student_guardians"),
    ("hcp1", "enrollments"),
    ("hcp1", "sections"),
    ("hcp2", "attendance"),
    ("hcp2", "grades"),
    ("adb", "results"),
];

/// The change columns and their entries (`lag_seconds = 0`: nothing else writes PROD here).
fn track_changes(cfg: &std::path::Path) {
    let mut text = std::fs::read_to_string(cfg).expect("config");
    for (store, table) in TRACKED {
        let add = format!(
            "alter table {table} add column updated_at timestamptz not null default now();"
        );
        let stamp = format!(
            "create or replace function stamp() returns trigger language plpgsql as $$ begin new.updated_at := now(); return new; end $$; \
             create trigger stamp before update on {table} for each row execute function stamp();"
        );
        psql(
            &pg(&format!("wfb_prod_{store}")),
            &["-c", &format!("{add} {stamp}")],
        );
        psql(&pg(&format!("wfb_inc_{store}")), &["-c", &add]);
        text.push_str(&format!(
            "\n[[change_tracking]]\ntable = \"{store}.{table}\"\ncolumn = \"updated_at\"\nlag_seconds = 0\n"
        ));
    }
    std::fs::write(cfg, text).expect("config");
}

/// Rows the run's extract steps read.
fn span_rows(data: &std::path::Path, run: &str) -> u64 {
    let v: serde_json::Value =
        serde_json::from_str(&wf(data, &["status", run, "--json"])).expect("status");
    v["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| {
            s["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("extract/"))
        })
        .filter_map(|s| s["metrics"]["rows"].as_u64())
        .sum()
}
