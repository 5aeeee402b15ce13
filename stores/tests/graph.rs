//! The graph store on the embedded file and on a real Bolt server (ArcadeDB): discovery, the
//! district subgraph, staging round trip of property types, load, exactly-once, conflicts, rollback.

mod common;

use std::collections::BTreeMap;
use wf_stores::config::Side;
use wf_stores::graph::discover::discover_graph;
use wf_stores::graph::extract::extract_graph;
use wf_stores::graph::load::{load_graph, rollback_graph, GraphLoad};
use wf_stores::graph::stage::{GraphBatch, GraphFileReader};
use wf_stores::graph::{
    open_read, Direction, Follow, GValue, GraphConfig, GraphKind, GraphWrite, NodeRec, RelRec,
};
use wf_stores::load::Strategy;

fn node(labels: &[&str], props: Vec<(&str, GValue)>) -> NodeRec {
    NodeRec {
        labels: labels.iter().map(|s| s.to_string()).collect(),
        props: props.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    }
}

fn int(i: i64) -> GValue {
    GValue::Int(i)
}

fn text(s: &str) -> GValue {
    GValue::Text(s.into())
}

fn rel(t: &str, s: (&str, i64), e: (&str, i64)) -> RelRec {
    RelRec {
        rel_type: t.into(),
        start: (s.0.into(), int(s.1)),
        end: (e.0.into(), int(e.1)),
        props: BTreeMap::new(),
    }
}

/// The student whose every property type must survive the trip.
fn student_1000() -> NodeRec {
    let d = chrono::NaiveDate::from_ymd_opt(2011, 5, 17).unwrap();
    node(
        &["Person", "Student"],
        vec![
            ("id", int(1000)),
            ("district_id", int(1)),
            ("name", text("Ada \"Lovelace\"\nJr")),
            ("gpa", GValue::Float(3.75)),
            ("active", GValue::Bool(true)),
            ("dob", GValue::Date(d)),
            (
                "updated",
                GValue::DateTime(d.and_hms_opt(8, 30, 15).unwrap()),
            ),
            ("tags", GValue::List(vec![text("chess"), text("math")])),
        ],
    )
}

async fn seed_prod(w: &mut dyn GraphWrite) {
    let n = |l: &str, id: i64, d: Option<i64>| {
        let mut p = vec![("id", int(id)), ("name", text(&format!("{l} {id}")))];
        if let Some(d) = d {
            p.push(("district_id", int(d)));
        }
        node(&[l], p)
    };
    w.merge_nodes(
        "School",
        &[n("School", 10, Some(1)), n("School", 20, Some(2))],
    )
    .await
    .unwrap();
    w.merge_nodes(
        "Teacher",
        &[n("Teacher", 100, Some(1)), n("Teacher", 200, Some(2))],
    )
    .await
    .unwrap();
    w.merge_nodes(
        "Person",
        &[student_1000(), {
            let mut s = n("Student", 1001, Some(1));
            s.labels = vec!["Person".into(), "Student".into()];
            s
        }],
    )
    .await
    .unwrap();
    // District 2's student keeps its district as text: both forms must match their district.
    let mut s2 = n("Student", 2000, None);
    s2.props.insert("district_id".into(), text("2"));
    s2.labels = vec!["Person".into(), "Student".into()];
    w.merge_nodes("Person", &[s2]).await.unwrap();
    w.merge_nodes(
        "Section",
        &[
            n("Section", 5000, None),
            n("Section", 5001, None),
            n("Section", 6000, None),
        ],
    )
    .await
    .unwrap();
    w.merge_nodes("Guardian", &[n("Guardian", 9000, None)])
        .await
        .unwrap();
    let mut enrolled = rel("ENROLLED_IN", ("Person", 1000), ("Section", 5000));
    enrolled.props.insert("since".into(), int(2023));
    let rels = [
        (
            "ENROLLED_IN",
            vec![
                enrolled,
                rel("ENROLLED_IN", ("Person", 1000), ("Section", 5001)),
                rel("ENROLLED_IN", ("Person", 1001), ("Section", 5000)),
                rel("ENROLLED_IN", ("Person", 2000), ("Section", 5001)),
                rel("ENROLLED_IN", ("Person", 2000), ("Section", 6000)),
            ],
        ),
        (
            "TEACHES",
            vec![rel("TEACHES", ("Teacher", 100), ("Section", 5000))],
        ),
        (
            "GUARDIAN_OF",
            vec![rel("GUARDIAN_OF", ("Guardian", 9000), ("Person", 1000))],
        ),
        (
            "FRIEND",
            vec![
                rel("FRIEND", ("Person", 1000), ("Person", 1001)),
                rel("FRIEND", ("Person", 1000), ("Person", 2000)),
            ],
        ),
        (
            "WORKS_AT",
            vec![rel("WORKS_AT", ("Teacher", 100), ("School", 10))],
        ),
    ];
    for (t, rows) in rels {
        let ends = (rows[0].start.0.clone(), rows[0].end.0.clone());
        w.merge_rels(t, (&ends.0, &ends.1), &rows).await.unwrap();
    }
}

fn graph_config(kind: GraphKind, prod: String, cert: String) -> GraphConfig {
    let mut cfg = common::graph_config(kind, prod, cert, &["School", "Teacher", "Person"]);
    cfg.follow = vec![
        Follow {
            rel_type: "ENROLLED_IN".into(),
            direction: Direction::Out,
        },
        Follow {
            rel_type: "TEACHES".into(),
            direction: Direction::Out,
        },
        Follow {
            rel_type: "GUARDIAN_OF".into(),
            direction: Direction::In,
        },
    ];
    cfg
}

async fn whole_story(cfg: GraphConfig) {
    let mut w = common::graph_write(&cfg, Side::Prod).await;
    seed_prod(w.as_mut()).await;
    w.commit().await.unwrap();
    let mut w = common::graph_write(&cfg, Side::Cert).await;
    w.merge_nodes(
        "School",
        &[node(
            &["School"],
            vec![("id", int(99)), ("name", text("CERT's own"))],
        )],
    )
    .await
    .unwrap();
    w.commit().await.unwrap();

    // Discovery: labels counted, property kinds seen.
    let schema = discover_graph(&cfg).await.unwrap();
    let person = schema.labels.iter().find(|l| l.label == "Person").unwrap();
    assert_eq!(person.count, 3);
    let did = person
        .properties
        .iter()
        .find(|p| p.name == "district_id")
        .unwrap();
    assert_eq!(
        did.kinds,
        BTreeMap::from([("integer".into(), 2), ("string".into(), 1)])
    );
    let enrolled = schema
        .rel_types
        .iter()
        .find(|r| r.rel_type == "ENROLLED_IN")
        .unwrap();
    assert_eq!(enrolled.count, 5);
    assert_eq!(
        enrolled.ends,
        BTreeMap::from([("Person -> Section".into(), 5)])
    );

    // The district subgraph.
    let dir = tempfile::tempdir().unwrap();
    let ex = extract_graph(&cfg, "1", dir.path(), 2).await.unwrap();
    assert_eq!((ex.nodes, ex.rels), (7, 7), "{:#?}", ex.files);
    let tables: BTreeMap<String, u64> = ex
        .files
        .iter()
        .map(|f| (f.table.clone(), f.file.rows))
        .collect();
    assert_eq!(
        tables,
        BTreeMap::from([
            ("sp.Guardian".into(), 1),
            ("sp.Person".into(), 2),
            ("sp.School".into(), 1),
            ("sp.Section".into(), 2),
            ("sp.Teacher".into(), 1),
            ("sp.Person-ENROLLED_IN-Section".into(), 3),
            ("sp.Person-FRIEND-Person".into(), 1),
            ("sp.Guardian-GUARDIAN_OF-Person".into(), 1),
            ("sp.Teacher-TEACHES-Section".into(), 1),
            ("sp.Teacher-WORKS_AT-School".into(), 1),
        ])
    );
    // Staging keeps every property type.
    let person_file = ex.files.iter().find(|f| f.table == "sp.Person").unwrap();
    let mut rd = GraphFileReader::open(&person_file.file.path).unwrap();
    let mut staged = Vec::new();
    while let Some(b) = rd.next_batch().unwrap() {
        if let GraphBatch::Nodes(n) = b {
            staged.extend(n);
        }
    }
    assert_eq!(
        staged.iter().find(|n| n.props["id"] == int(1000)),
        Some(&student_1000())
    );
    let sec = ex.files.iter().find(|f| f.table == "sp.Section").unwrap();
    let mut rd = GraphFileReader::open(&sec.file.path).unwrap();
    let mut ids = Vec::new();
    while let Some(GraphBatch::Nodes(n)) = rd.next_batch().unwrap() {
        ids.extend(n.into_iter().map(|n| n.props["id"].clone()));
    }
    assert_eq!(
        ids,
        vec![int(5000), int(5001)],
        "shared section once, district 2's not at all"
    );

    // Load, exactly once.
    let job = GraphLoad {
        run_key: "mig-1/g1/load/sp".into(),
        store: "sp".into(),
        files: ex.files.iter().map(|f| f.file.path.clone()).collect(),
        manifest: dir.path().join("sp.manifest.jsonl"),
        strategy: Strategy::Insert,
        dry_run: false,
        replaces: None,
        by_difference: false,
    };
    let rep = load_graph(&cfg, &job).await.unwrap();
    assert!(!rep.already_loaded);
    assert_eq!(rep.tables.iter().map(|t| t.inserted).sum::<u64>(), 14);
    let after = common::graph_counts(&cfg, Side::Cert).await;
    let expect = (
        common::owned(&[
            ("Guardian", 1),
            ("Person", 2),
            ("School", 2),
            ("Section", 2),
            ("Teacher", 1),
        ]),
        common::owned(&[
            ("ENROLLED_IN", 3),
            ("FRIEND", 1),
            ("GUARDIAN_OF", 1),
            ("TEACHES", 1),
            ("WORKS_AT", 1),
        ]),
    );
    assert_eq!(after, expect);
    let mut r = open_read(&cfg, Side::Cert).await.unwrap();
    let got = r.nodes("Person", &[int(1000)]).await.unwrap();
    assert_eq!(
        got,
        vec![student_1000()],
        "every property type round-trips into CERT"
    );
    // Written in the same batch with fewer properties: exactly its own, none set to NULL.
    let got = r.nodes("Person", &[int(1001)]).await.unwrap();
    let mut s1001 = node(
        &["Person", "Student"],
        vec![
            ("id", int(1001)),
            ("name", text("Student 1001")),
            ("district_id", int(1)),
        ],
    );
    s1001.labels.sort();
    assert_eq!(got, vec![s1001]);
    let rels = r.out_rels("Person", &[int(1000)]).await.unwrap();
    let e = rels.iter().find(|x| x.end.1 == int(5000)).unwrap();
    assert_eq!(e.props.get("since"), Some(&int(2023)));
    let e = rels.iter().find(|x| x.end.1 == int(5001)).unwrap();
    assert!(e.props.is_empty(), "{e:?}");
    r.finish().await.unwrap();
    let again = load_graph(&cfg, &job).await.unwrap();
    assert!(again.already_loaded);
    let sorted = |mut t: Vec<wf_stores::load::TableReport>| {
        t.sort_by(|a, b| a.table.cmp(&b.table));
        t
    };
    assert_eq!(
        sorted(again.tables),
        sorted(rep.tables.clone()),
        "a load found committed reports what it loaded, from its manifest"
    );
    assert_eq!(common::graph_counts(&cfg, Side::Cert).await, expect);

    // Another run inserting the same nodes is refused as a whole.
    let mut again = job.clone();
    again.run_key = "mig-2/g1/load/sp".into();
    again.manifest = dir.path().join("sp2.manifest.jsonl");
    let e = load_graph(&cfg, &again).await.unwrap_err().to_string();
    assert!(
        e.contains("already exist in CERT") && e.contains("sp"),
        "{e}"
    );
    assert_eq!(common::graph_counts(&cfg, Side::Cert).await, expect);
    // skip-existing loads nothing new and is its own exactly-once load.
    again.strategy = Strategy::SkipExisting;
    let rep = load_graph(&cfg, &again).await.unwrap();
    assert_eq!(rep.tables.iter().map(|t| t.inserted).sum::<u64>(), 0);
    assert!(rollback_graph(&cfg, &again)
        .await
        .unwrap()
        .iter()
        .all(|(_, n)| *n == 0));

    // Rollback: exactly what the run created; CERT's own school stays.
    let gone = rollback_graph(&cfg, &job).await.unwrap();
    assert_eq!(gone.iter().map(|(_, n)| n).sum::<u64>(), 14, "{gone:?}");
    assert_eq!(
        common::graph_counts(&cfg, Side::Cert).await,
        (common::owned(&[("School", 1)]), vec![])
    );
    assert!(
        rollback_graph(&cfg, &job).await.unwrap().is_empty(),
        "a second rollback does nothing"
    );
}

#[tokio::test]
async fn embedded_graph_district_subgraph_load_and_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    whole_story(graph_config(
        GraphKind::Embedded,
        p("prod.graph"),
        p("cert.graph"),
    ))
    .await;
}

fn bolt_config() -> Option<GraphConfig> {
    common::on_bolt(graph_config(GraphKind::Bolt, String::new(), String::new()))
}

#[tokio::test]
async fn bolt_graph_district_subgraph_load_and_rollback() {
    let Some(cfg) = bolt_config() else { return };
    whole_story(cfg).await;
}

#[tokio::test]
async fn bolt_errors_name_the_store_and_the_server_text() {
    let Some(cfg) = bolt_config() else { return };
    let mut bad = cfg.clone();
    bad.password = Some("not-the-password".into());
    let e = open_read(&bad, Side::Prod).await.err().unwrap().to_string();
    assert!(
        e.contains("sp") && e.contains("authentication refused"),
        "{e}"
    );
    let mut down = cfg.clone();
    down.prod = "127.0.0.1:1".into();
    let e = open_read(&down, Side::Prod)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("store sp") && e.contains("cannot reach the PROD graph at 127.0.0.1:1"),
        "{e}"
    );
    let mut missing = graph_config(
        GraphKind::Embedded,
        "/nonexistent/prod.graph".into(),
        "x".into(),
    );
    missing.name = "sp".into();
    let e = open_read(&missing, Side::Prod)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("/nonexistent/prod.graph") && e.contains("wf seed"),
        "{e}"
    );
}

/// Nodes without the key property are never dropped silently: discovery counts them per label,
/// and extracting a district that holds one, or reaches one along a followed relationship, is
/// refused with the counts. `plant` adds, on PROD, a district-1 Person without `id` and a Section
/// without `id` enrolled in by Person 1000.
async fn keyless_story(cfg: GraphConfig, plant: impl FnOnce(&GraphConfig)) {
    let mut w = common::graph_write(&cfg, Side::Prod).await;
    seed_prod(w.as_mut()).await;
    w.commit().await.unwrap();
    let schema = discover_graph(&cfg).await.unwrap();
    assert!(
        schema.labels.iter().all(|l| l.without_key == 0),
        "{schema:#?}"
    );
    let dir = tempfile::tempdir().unwrap();
    extract_graph(&cfg, "1", dir.path(), 100).await.unwrap();

    plant(&cfg);
    let schema = discover_graph(&cfg).await.unwrap();
    let without: BTreeMap<&str, u64> = schema
        .labels
        .iter()
        .map(|l| (l.label.as_str(), l.without_key))
        .collect();
    assert_eq!(
        (without["Person"], without["Section"]),
        (1, 1),
        "{without:?}"
    );
    let e = extract_graph(&cfg, "1", dir.path(), 100)
        .await
        .expect_err("keyless nodes refuse the district")
        .to_string();
    assert!(
        e.contains("1 Person nodes of the district, 1 nodes reached along ENROLLED_IN from Person lack their key (Person by id)"),
        "{e}"
    );
    // District 2 neither holds nor reaches them.
    extract_graph(&cfg, "2", dir.path(), 100).await.unwrap();
    // Configured to skip them: the district is copied without them, and the counts say so.
    let skip = GraphConfig {
        without_key: wf_stores::graph::WithoutKey::Skip,
        ..cfg.clone()
    };
    let ex = extract_graph(&skip, "1", dir.path(), 100).await.unwrap();
    assert_eq!(
        ex.skipped,
        BTreeMap::from([
            ("Person nodes of the district".to_string(), 1),
            ("nodes reached along ENROLLED_IN from Person".to_string(), 1),
        ])
    );
    let mut staged_names = Vec::new();
    for f in ex.files.iter().filter(|f| f.table == "sp.Person") {
        let mut rd = GraphFileReader::open(&f.file.path).unwrap();
        while let Some(GraphBatch::Nodes(n)) = rd.next_batch().unwrap() {
            staged_names.extend(n.into_iter().map(|n| n.props.get("name").cloned()));
        }
    }
    assert!(
        !staged_names.contains(&Some(text("No key"))),
        "the keyless node is not staged: {staged_names:?}"
    );
    assert!(
        staged_names.contains(&student_1000().props.get("name").cloned()),
        "the district's keyed nodes are: {staged_names:?}"
    );
}

#[tokio::test]
async fn embedded_graph_nodes_without_their_key_are_counted_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let cfg = graph_config(GraphKind::Embedded, p("prod.graph"), p("cert.graph"));
    keyless_story(cfg, |cfg| {
        let rt = tokio::runtime::Handle::current();
        let url = format!("sqlite://{}", cfg.prod);
        std::thread::scope(|s| {
            s.spawn(|| {
                rt.block_on(async {
                    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
                    sqlx::raw_sql(
                        "INSERT INTO nodes VALUES ('Person', 'p-nokey', '[\"Person\"]', '{\"district_id\": 1, \"name\": \"No key\"}'); \
                         INSERT INTO nodes VALUES ('Section', 's-nokey', '[\"Section\"]', '{\"name\": \"No key\"}'); \
                         INSERT INTO rels VALUES ('ENROLLED_IN', 'Person', '1000', 'Section', 's-nokey', '{}');",
                    )
                    .execute(&pool)
                    .await
                    .unwrap();
                })
            })
            .join()
            .unwrap();
        });
    })
    .await;
}

#[tokio::test]
async fn bolt_graph_nodes_without_their_key_are_counted_and_refused() {
    let Some(cfg) = bolt_config() else { return };
    keyless_story(cfg, |cfg| {
        let db = cfg.prod_database.clone().unwrap();
        common::graph_command(&db, "CREATE (:Person {district_id: 1, name: 'No key'})");
        common::graph_command(
            &db,
            "MATCH (p:Person {id: 1000}) CREATE (p)-[:ENROLLED_IN]->(:Section {name: 'No key'})",
        );
    })
    .await;
}

/// Nodes and relationships whose properties differ from row to row are written exactly, none set
/// to NULL, whether a chunk has few property shapes (written as lists, one statement per shape)
/// or many (written as maps), under CREATE and MERGE.
async fn shapes_story(cfg: GraphConfig) {
    // Every subset of four optional properties: 16 shapes.
    let item = |i: i64| {
        let mut p = vec![("id", int(i))];
        for (bit, name) in ["a", "b", "c", "d"].iter().enumerate() {
            if i & (1 << bit) != 0 {
                p.push((name, text(&format!("{name}{i}"))));
            }
        }
        node(&["Item"], p)
    };
    let nodes: Vec<NodeRec> = (0..64).map(item).collect();
    let rels: Vec<RelRec> = (0..63)
        .map(|i| {
            let mut r = rel("NEXT", ("Item", i), ("Item", i + 1));
            for (bit, name) in ["w", "x", "y", "z"].iter().enumerate() {
                if i & (1 << bit) != 0 {
                    r.props.insert(name.to_string(), int(i));
                }
            }
            r
        })
        .collect();
    let mut w = common::graph_write(&cfg, Side::Cert).await;
    // Two shapes, then fifteen; MERGE of new nodes, then of the same ones again (no change).
    w.create_nodes("Item", &nodes[..2]).await.unwrap();
    w.create_nodes("Item", &nodes[2..32]).await.unwrap();
    w.merge_nodes("Item", &nodes[32..34]).await.unwrap();
    w.merge_nodes("Item", &nodes[34..]).await.unwrap();
    w.merge_nodes("Item", &nodes).await.unwrap();
    let ends = ("Item", "Item");
    w.create_rels("NEXT", ends, &rels[..2]).await.unwrap();
    w.create_rels("NEXT", ends, &rels[2..40]).await.unwrap();
    w.merge_rels("NEXT", ends, &rels[40..]).await.unwrap();
    w.commit().await.unwrap();
    let mut r = open_read(&cfg, Side::Cert).await.unwrap();
    let keys: Vec<GValue> = (0..64).map(int).collect();
    let mut got = r.nodes("Item", &keys).await.unwrap();
    got.sort_by_key(|n| n.props["id"].key_text().parse::<i64>().unwrap());
    assert_eq!(got, nodes);
    let mut out = r.out_rels("Item", &keys).await.unwrap();
    out.sort_by_key(|x| x.start.1.key_text().parse::<i64>().unwrap());
    assert_eq!(out, rels);
    r.finish().await.unwrap();
}

#[tokio::test]
async fn embedded_graph_writes_every_property_shape_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    shapes_story(graph_config(
        GraphKind::Embedded,
        p("prod.graph"),
        p("cert.graph"),
    ))
    .await;
}

#[tokio::test]
async fn bolt_graph_writes_every_property_shape_exactly() {
    let Some(cfg) = bolt_config() else { return };
    shapes_story(cfg).await;
}
