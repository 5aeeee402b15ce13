//! Graph benchmark (issue 4): extract and load of a district subgraph of WF_BENCH_NODES nodes
//! (default 200,000: half Student with the district property, half Section reached through
//! ENROLLED_IN) and twice as many relationships, on the Bolt server (ArcadeDB) started by
//! `scripts/services.sh start && source /tmp/wf-services/env`; `cargo bench --bench graph`.
//! Reports nodes/s and relationships/s each way, and runs the plain loader `benches/graph_peer.py`
//! (the official Neo4j Python driver, installed with pip if missing) on the same shape in the same
//! run, so the load is quoted as a ratio. It measures, asserts nothing.

use std::collections::BTreeMap;
use std::time::Instant;

/// The allocator the `wf` binary runs with, so the load's CPU is wf's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// CPU seconds used by this process so far (0 where /proc is missing).
fn cpu_seconds() -> f64 {
    wf_engine::resources::cpu_ms().unwrap_or(0) as f64 / 1000.0
}
use wf_stores::config::Side;
use wf_stores::graph::bolt::BoltWrite;
use wf_stores::graph::extract::extract_graph;
use wf_stores::graph::load::{load_graph, rollback_graph, GraphLoad};
use wf_stores::graph::{
    Direction, Follow, GValue, GraphConfig, GraphKind, GraphWrite, NodeRec, RelRec,
};
use wf_stores::load::Strategy;

fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| {
        panic!("{k} is not set: run `scripts/services.sh start && source /tmp/wf-services/env`")
    })
}

fn http_db(command: &str) {
    let (user, pw, http) = (
        env("WF_TEST_BOLT_USER"),
        env("WF_TEST_BOLT_PASSWORD"),
        env("WF_TEST_ARCADE_HTTP"),
    );
    let _ = wf::arcade::server_command(&http, &user, &pw, command);
}

fn node(label: &str, id: i64, district: Option<i64>) -> NodeRec {
    let mut props = BTreeMap::from([
        ("id".to_string(), GValue::Int(id)),
        (
            "name".to_string(),
            GValue::Text(format!("{label} number {id}")),
        ),
        ("score".to_string(), GValue::Float(id as f64 / 7.0)),
    ]);
    if let Some(d) = district {
        props.insert("district_id".into(), GValue::Int(d));
    }
    NodeRec {
        labels: vec![label.into()],
        props,
    }
}

#[tokio::main]
async fn main() {
    let n: i64 = std::env::var("WF_BENCH_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let half = n / 2;
    for db in ["wf_bench_prod_sp", "wf_bench_cert_sp"] {
        http_db(&format!("drop database {db}"));
        http_db(&format!("create database {db}"));
    }
    let cfg = GraphConfig {
        name: "sp".into(),
        kind: GraphKind::Bolt,
        prod: env("WF_TEST_BOLT_URL"),
        cert: env("WF_TEST_BOLT_URL"),
        user: Some(env("WF_TEST_BOLT_USER")),
        password: Some(env("WF_TEST_BOLT_PASSWORD")),
        prod_database: Some("wf_bench_prod_sp".into()),
        cert_database: Some("wf_bench_cert_sp".into()),
        district_property: "district_id".into(),
        district_labels: vec!["Student".into()],
        key_property: "id".into(),
        keys: Default::default(),
        maps: Default::default(),
        follow: vec![Follow {
            rel_type: "ENROLLED_IN".into(),
            direction: Direction::Out,
        }],
        max_depth: None,
        links: vec![],
        without_key: Default::default(),
    };
    // PROD: `half` students, `half` sections, 4 enrollments per student.
    let t = Instant::now();
    let mut w: Box<dyn GraphWrite> = Box::new(
        BoltWrite::open_side(&cfg, Side::Prod)
            .await
            .expect("PROD graph"),
    );
    for l in ["Student", "Section"] {
        w.ensure_index(l).await.expect("index");
    }
    w.commit().await.expect("commit");
    for start in (0..half).step_by(10_000) {
        let mut w: Box<dyn GraphWrite> = Box::new(
            BoltWrite::open_side(&cfg, Side::Prod)
                .await
                .expect("PROD graph"),
        );
        let end = (start + 10_000).min(half);
        let students: Vec<NodeRec> = (start..end).map(|i| node("Student", i, Some(1))).collect();
        let sections: Vec<NodeRec> = (start..end)
            .map(|i| node("Section", half + i, None))
            .collect();
        for c in students.chunks(2000) {
            w.merge_nodes("Student", c).await.expect("students");
        }
        for c in sections.chunks(2000) {
            w.merge_nodes("Section", c).await.expect("sections");
        }
        w.commit().await.expect("commit");
    }
    for start in (0..half).step_by(10_000) {
        let mut w: Box<dyn GraphWrite> = Box::new(
            BoltWrite::open_side(&cfg, Side::Prod)
                .await
                .expect("PROD graph"),
        );
        let end = (start + 10_000).min(half);
        let rels: Vec<RelRec> = (start..end)
            .flat_map(|i| {
                (0..4).map(move |k| RelRec {
                    rel_type: "ENROLLED_IN".into(),
                    start: ("Student".into(), GValue::Int(i)),
                    end: (
                        "Section".into(),
                        GValue::Int(half + (i * 7 + k * 13_001) % half),
                    ),
                    props: BTreeMap::from([("term".to_string(), GValue::Int(k))]),
                })
            })
            .collect();
        for c in rels.chunks(2000) {
            w.merge_rels("ENROLLED_IN", ("Student", "Section"), c)
                .await
                .expect("rels");
        }
        w.commit().await.expect("commit");
    }
    println!(
        "seeded PROD: {n} nodes, {} relationships in {:.1}s (not measured below)",
        half * 4,
        t.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let ex = extract_graph(&cfg, "1", dir.path(), 8192)
        .await
        .expect("extract");
    let secs = t.elapsed().as_secs_f64();
    println!(
        "extract: {} nodes, {} relationships in {secs:.2}s ({:.2} s of wf's CPU): {:.0} nodes/s, {:.0} relationships/s (elements/s {:.0})",
        ex.nodes, ex.rels, cpu_seconds() - cpu, ex.nodes as f64 / secs, ex.rels as f64 / secs, (ex.nodes + ex.rels) as f64 / secs
    );
    let job = GraphLoad {
        run_key: "bench/g0/load/sp".into(),
        store: "sp".into(),
        files: ex.files.iter().map(|f| f.file.path.clone()).collect(),
        manifest: dir.path().join("manifest.jsonl"),
        strategy: Strategy::Insert,
        dry_run: false,
        replaces: None,
        by_difference: false,
    };
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let r = load_graph(&cfg, &job).await.expect("load");
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    let nodes: u64 = r
        .tables
        .iter()
        .filter(|t| !t.table.contains("-"))
        .map(|t| t.inserted)
        .sum();
    let rels: u64 = r
        .tables
        .iter()
        .filter(|t| t.table.contains("-"))
        .map(|t| t.inserted)
        .sum();
    println!(
        "load:    {nodes} nodes, {rels} relationships in {secs:.2}s ({cpu:.2} s of wf's CPU; one transaction, marker, manifest): {:.0} nodes/s, {:.0} relationships/s (elements/s {:.0})",
        nodes as f64 / secs, rels as f64 / secs, (nodes + rels) as f64 / secs
    );
    // Issue 18: the rollback of what the load created takes no longer than the load did.
    let t = Instant::now();
    let deleted = rollback_graph(&cfg, &job).await.expect("rollback");
    let back = t.elapsed().as_secs_f64();
    let gone: u64 = deleted.iter().map(|(_, n)| n).sum();
    println!(
        "rollback: {gone} elements deleted in {back:.2}s = {:.2}x the load",
        back / secs
    );
    let peer = peer_load(n);
    println!(
        "plain loader (Python neo4j driver, UNWIND CREATE, one transaction): {peer:.2}s: {:.0} elements/s; wf's load rate = {:.2}x the plain loader's",
        (nodes + rels) as f64 / peer,
        peer / secs
    );
}

/// Seconds the plain loader takes for the same shape, into a fresh database.
fn peer_load(n: i64) -> f64 {
    use std::process::Command;
    let python = "python3";
    let has = Command::new(python).args(["-c", "import neo4j"]).status();
    if !has.is_ok_and(|s| s.success()) {
        let pip = Command::new(python)
            .args(["-m", "pip", "install", "--quiet", "neo4j==6.4.1"])
            .status()
            .expect("pip");
        assert!(pip.success(), "pip install neo4j failed");
    }
    http_db("drop database wf_bench_peer_sp");
    http_db("create database wf_bench_peer_sp");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/graph_peer.py");
    let out = Command::new(python)
        .arg(script)
        .args([
            env("WF_TEST_BOLT_URL"),
            env("WF_TEST_BOLT_USER"),
            env("WF_TEST_BOLT_PASSWORD"),
        ])
        .args(["wf_bench_peer_sp".to_string(), n.to_string()])
        .output()
        .expect("peer loader");
    assert!(
        out.status.success(),
        "peer loader: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("peer seconds")
}
