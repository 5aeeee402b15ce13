//! `wf analyze` end to end on SQLite PROD files made from the stores' fixtures.

use crate::util::Sandbox;
use wf_stores::config::{Side, StoreConfig, StoreKind};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/stores/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture")
}

/// Writes the rostering PROD files and a wf.toml pointing at them; returns the config path.
fn rostering(sb: &Sandbox) -> std::path::PathBuf {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for (store, files) in [
        ("ids", ["ids_schema_sqlite.sql", "ids_data.sql"]),
        ("hcp1", ["hcp1_schema.sql", "hcp1_data.sql"]),
    ] {
        let url = format!("sqlite://{}", sb.out(&format!("{store}_prod.db")).display());
        let cfg = StoreConfig {
            name: store.into(),
            kind: StoreKind::Sqlite,
            prod: "unused".into(),
            cert: url,
            triggers: Default::default(),
        };
        rt.block_on(async {
            let db = wf_stores::connect(&cfg, Side::Cert).await.expect("open");
            for f in files {
                db.execute(&fixture(f)).await.expect("fixture");
            }
        });
    }
    let dir = sb.dir.path().display();
    let toml = format!(
        r#"
district_column = "district_id"
reference_tables = ["ids.grade_levels"]
[[stores]]
name = "ids"
kind = "sqlite"
prod = "sqlite://{dir}/ids_prod.db"
cert = "env:WF_TEST_CERT_IDS"
[[stores]]
name = "hcp1"
kind = "sqlite"
prod = "sqlite://{dir}/hcp1_prod.db"
cert = "sqlite://{dir}/hcp1_cert.db"
[[virtual_fks]]
from = "hcp1.enrollments.student_id"
to = "ids.students.id"
"#
    );
    let path = sb.out("wf.toml");
    std::fs::write(&path, toml).expect("wf.toml");
    path
}

#[test]
fn analyze_writes_schema_graph_and_order() {
    let sb = Sandbox::new();
    let cfg = rostering(&sb);
    let r = sb.run(["--config", &cfg.to_string_lossy(), "analyze"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.contains("2 stores, 13 tables"), "{}", r.stdout);
    assert!(
        r.stdout.contains("cycle ids.schools -> ids.staff"),
        "{}",
        r.stdout
    );
    let dir = sb.data().join("analysis");
    let schema: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("schema-analysis.json")).expect("schema"))
            .expect("json");
    assert_eq!(schema["stores"].as_array().expect("stores").len(), 2);
    let order: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("extraction-order.json")).expect("order"))
            .expect("json");
    let order: Vec<&str> = order["order"]
        .as_array()
        .expect("order")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    let at = |t: &str| order.iter().position(|x| *x == t).expect(t);
    assert!(at("ids.students") < at("hcp1.enrollments"), "{order:?}");
    let dot = std::fs::read_to_string(dir.join("dependency-graph.dot")).expect("dot");
    assert!(dot.starts_with("digraph wf {"), "{dot}");
}

#[test]
fn malformed_config_is_a_one_line_error_naming_the_file() {
    let sb = Sandbox::new();
    let path = sb.out("wf.toml");
    std::fs::write(
        &path,
        "[[stores]]\nname = \"ids\"\nkind = \"oracle\"\nprod = \"a\"\ncert = \"b\"\n",
    )
    .expect("write");
    let r = sb.run(["--config", &path.to_string_lossy(), "analyze"]);
    assert_eq!(r.code, Some(1));
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", r.stderr);
    assert!(
        lines[0].contains("wf.toml") && lines[0].contains("oracle") && lines[0].contains("line 3"),
        "{}",
        lines[0]
    );
    let r = sb.run([
        "--config",
        &sb.out("missing.toml").to_string_lossy(),
        "analyze",
    ]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("missing.toml") && r.stderr.contains("--config"),
        "{}",
        r.stderr
    );
}

#[test]
fn unreadable_prod_database_names_the_store() {
    let sb = Sandbox::new();
    let path = sb.out("wf.toml");
    let toml = format!(
        "[[stores]]\nname = \"adb\"\nkind = \"sqlite\"\nprod = \"sqlite://{}/nope.db\"\ncert = \"sqlite://x.db\"\n",
        sb.dir.path().display()
    );
    std::fs::write(&path, toml).expect("write");
    let r = sb.run(["--config", &path.to_string_lossy(), "analyze"]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr
            .starts_with("wf: PROD store adb: cannot open sqlite://"),
        "{}",
        r.stderr
    );
}

#[test]
fn the_dependency_graph_draws_the_graph_labels_and_relationship_types() {
    let sb = Sandbox::new();
    let cfg = crate::validation::setup(&sb, "");
    let r = sb.run(["--config", &cfg.to_string_lossy(), "analyze"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let dot = std::fs::read_to_string(sb.data().join("analysis").join("dependency-graph.dot"))
        .expect("dot");
    assert!(dot.contains("subgraph \"cluster_sp\""), "{dot}");
    assert!(dot.contains("\"sp:Student\" [label=\"Student\\n"), "{dot}");
    assert!(
        dot.contains("\"sp:Student\" -> \"sp:Section\" [label=\"ENROLLED_IN ("),
        "{dot}"
    );
    // Still one drawing: the relational tables are in it, and it closes once.
    assert!(dot.contains("\"ids.students\""), "{dot}");
    assert!(dot.trim_end().ends_with('}') && dot.matches("digraph").count() == 1);
}
