//! A graph rollback deletes what the load created and nothing else, on the embedded file and on a
//! real Bolt server (ArcadeDB): relationships between two created nodes go with those nodes,
//! relationships to a node CERT already had are deleted by their ends, and that node stays.

mod common;

use std::collections::BTreeMap;
use wf_stores::config::Side;
use wf_stores::graph::extract::extract_graph;
use wf_stores::graph::load::{load_graph, rollback_graph, GraphLoad};
use wf_stores::graph::{open_read, GValue, GraphConfig, GraphKind, NodeRec, RelRec};
use wf_stores::load::Strategy;

fn node(label: &str, id: i64, district: i64) -> NodeRec {
    NodeRec {
        labels: vec![label.into()],
        props: BTreeMap::from([
            ("id".to_string(), GValue::Int(id)),
            ("district_id".to_string(), GValue::Int(district)),
            ("name".to_string(), GValue::Text(format!("{label} {id}"))),
        ]),
    }
}

fn rel(t: &str, s: (&str, i64), e: (&str, i64)) -> RelRec {
    RelRec {
        rel_type: t.into(),
        start: (s.0.into(), GValue::Int(s.1)),
        end: (e.0.into(), GValue::Int(e.1)),
        props: BTreeMap::new(),
    }
}

fn config(kind: GraphKind, prod: String, cert: String) -> GraphConfig {
    common::graph_config(kind, prod, cert, &["School", "Teacher"])
}

/// PROD: district 1 has schools 10 and 11 and teachers 100 and 101; each teacher works at both
/// schools, and 100 mentors 101. CERT already has school 10 (a tester's). A `skip-existing` load
/// creates school 11, both teachers and the five relationships; its rollback must leave school 10.
async fn story(cfg: GraphConfig) {
    let mut w = common::graph_write(&cfg, Side::Prod).await;
    let schools = [node("School", 10, 1), node("School", 11, 1)];
    w.merge_nodes("School", &schools).await.unwrap();
    let teachers = [node("Teacher", 100, 1), node("Teacher", 101, 1)];
    w.merge_nodes("Teacher", &teachers).await.unwrap();
    let works: Vec<RelRec> = [100, 101]
        .iter()
        .flat_map(|t| [10, 11].map(|s| rel("WORKS_AT", ("Teacher", *t), ("School", s))))
        .collect();
    w.merge_rels("WORKS_AT", ("Teacher", "School"), &works)
        .await
        .unwrap();
    let mentors = [rel("MENTORS", ("Teacher", 100), ("Teacher", 101))];
    w.merge_rels("MENTORS", ("Teacher", "Teacher"), &mentors)
        .await
        .unwrap();
    w.commit().await.unwrap();
    let mut w = common::graph_write(&cfg, Side::Cert).await;
    w.merge_nodes("School", &[node("School", 10, 1)])
        .await
        .unwrap();
    w.commit().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ex = extract_graph(&cfg, "1", dir.path(), 1000).await.unwrap();
    assert_eq!((ex.nodes, ex.rels), (4, 5), "{:#?}", ex.files);
    let job = GraphLoad {
        run_key: "mig-1/g1/load/sp".into(),
        store: "sp".into(),
        files: ex.files.iter().map(|f| f.file.path.clone()).collect(),
        manifest: dir.path().join("sp.manifest.jsonl"),
        strategy: Strategy::SkipExisting,
        dry_run: false,
        replaces: None,
        by_difference: false,
    };
    let rep = load_graph(&cfg, &job).await.unwrap();
    assert_eq!(rep.tables.iter().map(|t| t.inserted).sum::<u64>(), 8);
    assert_eq!(
        common::graph_counts(&cfg, Side::Cert).await,
        (
            common::owned(&[("School", 2), ("Teacher", 2)]),
            common::owned(&[("MENTORS", 1), ("WORKS_AT", 4)])
        )
    );

    let mut gone = rollback_graph(&cfg, &job).await.unwrap();
    gone.sort();
    assert_eq!(
        gone,
        common::owned(&[
            ("sp.School", 1),
            ("sp.Teacher", 2),
            ("sp.Teacher-MENTORS-Teacher", 1),
            ("sp.Teacher-WORKS_AT-School", 4),
        ]),
        "what the load created, per table"
    );
    assert_eq!(
        common::graph_counts(&cfg, Side::Cert).await,
        (common::owned(&[("School", 1)]), vec![]),
        "CERT's own school stays, without the run's relationships to it"
    );
    let mut r = open_read(&cfg, Side::Cert).await.unwrap();
    let kept = r.nodes("School", &[GValue::Int(10)]).await.unwrap();
    r.finish().await.unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
}

#[tokio::test]
async fn embedded_rollback_keeps_cert_nodes_and_deletes_the_run_relationships_to_them() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    story(config(
        GraphKind::Embedded,
        p("prod.graph"),
        p("cert.graph"),
    ))
    .await;
}

#[tokio::test]
async fn bolt_rollback_keeps_cert_nodes_and_deletes_the_run_relationships_to_them() {
    let cfg = config(GraphKind::Bolt, String::new(), String::new());
    let Some(cfg) = common::on_bolt(cfg) else {
        return;
    };
    story(cfg).await;
}
