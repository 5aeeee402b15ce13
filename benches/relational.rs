//! Relational benchmark (issue 3): on one table of WF_BENCH_ROWS rows (default 1,000,000; 10 columns),
//! side by side in one run on the same server: `psql \copy … to` vs wf's extraction, and
//! `psql \copy … from` vs wf's load (one transaction, markers, manifest). Also the peak RSS of each
//! wf phase (VmHWM, reset between phases through /proc/self/clear_refs).
//!
//! Needs a PostgreSQL server: `scripts/services.sh start && source /tmp/wf-services/env`, then
//! `cargo bench --bench relational` (WF_BENCH_PG_URL or WF_TEST_PG_URL). It measures, asserts nothing.

use std::path::Path;
use std::process::Command;
use std::time::Instant;
use wf_stores::analysis::{add_virtual_fks, analyze};
use wf_stores::config::{Config, Side, StoreConfig, StoreKind};
use wf_stores::connect::load_store;
use wf_stores::extract::extract_district;
use wf_stores::load::{plan_loads, LoadOptions, Strategy};

const DDL: &str = "create table facts (id bigint primary key, district_id int not null, student_id int, \
    seen_at timestamptz, score numeric(6,2), note text, present bool, amount double precision, code varchar(8), day date)";

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn psql(url: &str, command: &str) -> f64 {
    let t = Instant::now();
    let out = Command::new("psql")
        .args([url, "-qAt", "-v", "ON_ERROR_STOP=1", "-c", command])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed().as_secs_f64()
}

async fn fresh_db(admin: &str, name: &str) -> String {
    let store = StoreConfig {
        name: "admin".into(),
        kind: StoreKind::Postgres,
        prod: "-".into(),
        cert: admin.into(),
        triggers: Default::default(),
    };
    let db = wf_stores::connect(&store, Side::Cert)
        .await
        .expect("admin connection");
    db.execute(&format!("drop database if exists {name}"))
        .await
        .expect("drop");
    db.execute(&format!("create database {name}"))
        .await
        .expect("create");
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(admin);
    format!("{base}/{name}")
}

fn rate(rows: u64, secs: f64) -> String {
    format!("{:.2} s, {:.0} rows/s", secs, rows as f64 / secs)
}

async fn run(admin: &str, rows: u64, dir: &Path) {
    let prod = fresh_db(admin, "wf_bench_prod").await;
    let cert = fresh_db(admin, "wf_bench_cert").await;
    let store = StoreConfig {
        name: "bench".into(),
        kind: StoreKind::Postgres,
        prod: prod.clone(),
        cert: cert.clone(),
        triggers: Default::default(),
    };
    let writer = StoreConfig {
        cert: prod.clone(),
        ..store.clone()
    };
    let db = wf_stores::connect(&writer, Side::Cert).await.expect("prod");
    db.execute(DDL).await.expect("ddl");
    db.execute(&format!(
        "insert into facts select g, 1, g % 50000, timestamptz '2024-01-01' + g * interval '1 second', (g % 10000) / 100.0, \
         md5(g::text), g % 2 = 0, g * 1.5, 'C' || (g % 100), date '2020-01-01' + (g % 1000)::int \
         from generate_series(1, {rows}) g"
    ))
    .await
    .expect("data");
    db.execute("vacuum analyze facts").await.expect("vacuum");
    let certdb = wf_stores::connect(&store, Side::Cert).await.expect("cert");
    certdb.execute(DDL).await.expect("cert ddl");

    let copy_file = dir.join("facts.copy");
    let psql_out = psql(
        &prod,
        &format!(
            "\\copy (select * from facts where district_id = 1) to '{}'",
            copy_file.display()
        ),
    );

    let cfg = Config {
        district_column: "district_id".into(),
        stores: vec![store.clone()],
        virtual_fks: vec![],
        reference_tables: vec![],
        follow_children: vec![],
        cycle_breaks: vec![],
        anonymization_rules: None,
        validation_rules: None,
        graph: None,
        snapshot: Default::default(),
        notify: Vec::new(),
        change_tracking: Vec::new(),
    };
    reset_peak_rss();
    let t = Instant::now();
    let ex = extract_district(&cfg, "1", &dir.join("staging"), 8192)
        .await
        .expect("extract");
    let wf_out = t.elapsed().as_secs_f64();
    let extract_rss = peak_rss_mb();
    assert_eq!(ex.files[0].file.rows, rows);

    let psql_in = psql(
        &cert,
        &format!("\\copy facts from '{}'", copy_file.display()),
    );
    certdb.execute("truncate facts").await.expect("truncate");

    let mut schemas = ex.schemas.clone();
    add_virtual_fks(&mut schemas, &cfg).expect("fks");
    let analysis = analyze(&schemas, &cfg.cycle_breaks);
    let opts = LoadOptions {
        run_key: "bench/g0/load".into(),
        manifest_dir: dir.join("loads"),
        strategy: Strategy::Insert,
        dry_run: false,
    };
    let jobs = plan_loads(&cfg, &ex.schemas, &analysis, &ex.files, &opts);
    reset_peak_rss();
    let t = Instant::now();
    let report = load_store(&store, &jobs[0]).await.expect("load");
    let wf_in = t.elapsed().as_secs_f64();
    let load_rss = peak_rss_mb();
    assert_eq!(report.tables[0].inserted, rows);

    println!(
        "table: {rows} rows x 10 columns ({:.0} MB as COPY text, {:.0} MB as Arrow IPC)",
        std::fs::metadata(&copy_file).map(|m| m.len()).unwrap_or(0) as f64 / 1e6,
        ex.files[0].file.bytes as f64 / 1e6
    );
    println!("extract  psql \\copy to:   {}", rate(rows, psql_out));
    println!(
        "extract  wf:              {}  -> {:.2}x psql's throughput, peak RSS {:.0} MB",
        rate(rows, wf_out),
        psql_out / wf_out,
        extract_rss
    );
    println!("load     psql \\copy from: {}", rate(rows, psql_in));
    println!(
        "load     wf:              {}  -> {:.2}x psql's throughput, peak RSS {:.0} MB",
        rate(rows, wf_in),
        psql_in / wf_in,
        load_rss
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let Some(admin) = std::env::var("WF_BENCH_PG_URL")
        .or_else(|_| std::env::var("WF_TEST_PG_URL"))
        .ok()
    else {
        println!("skipped: set WF_BENCH_PG_URL or run `scripts/services.sh start && source /tmp/wf-services/env`");
        return;
    };
    let rows: u64 = std::env::var("WF_BENCH_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(&admin, rows, dir.path()));
}
