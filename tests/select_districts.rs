//! `wf select-districts` on the SQLite fixture and on PostgreSQL: districts ranked by their
//! subset's rows (follow_children's included), pilots recommended, the manifest written.

use crate::migrate::{setup, setup_on, Backend, RULES};
use crate::util::Sandbox;

#[test]
fn select_districts_ranks_and_writes_the_manifest() {
    let sb = Sandbox::new();
    let config = setup(&sb, RULES);
    let r = sb.run(["--config", &config.to_string_lossy(), "select-districts"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(
        lines[1].starts_with('1') && lines[2].starts_with('2'),
        "district 1 is larger: {}",
        r.stdout
    );
    assert!(
        r.stdout.contains("recommended medium pilot"),
        "{}",
        r.stdout
    );
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(sb.data().join("manifests").join("district-manifest.json"))
            .expect("manifest"),
    )
    .expect("json");
    let d1 = &manifest["districts"][0];
    assert_eq!(d1["district"], "1");
    // District 1 of the fixture: 2 schools, 3 staff, 3 students, 2 guardians, 2 sections, 3
    // attendance; and what follow_children pulls in from tables without district_id: 3 guardian
    // links, 3 terms, 2 report cards, 3 enrollments (through sections).
    assert_eq!(d1["district_rows"], 15);
    assert_eq!(d1["child_rows"], 11);
    assert_eq!(d1["rows"], 26);
    assert_eq!(manifest["districts"][1]["child_rows"], 4);
    assert_eq!(manifest["not_sized"], serde_json::json!([]));
    assert_eq!(d1["tables_present"], d1["tables_total"]);
    assert_eq!(
        d1["latest"], "2019-03-01",
        "the latest date in district 1's rows (a birth date)"
    );
    assert!(manifest["recommended"]["large"].is_string());
}

#[test]
fn select_districts_on_postgres() {
    let Some(admin) = std::env::var("WF_TEST_PG_URL").ok() else {
        assert!(
            std::env::var("CI").is_err(),
            "WF_TEST_PG_URL is not set in CI: run scripts/test.sh"
        );
        return;
    };
    let sb = Sandbox::new();
    let (config, _dbs) = setup_on(&sb, &Backend::Postgres(admin), RULES);
    let r = sb.run([
        "--config",
        &config.to_string_lossy(),
        "select-districts",
        "--json",
    ]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let manifest: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(manifest["districts"][0]["district"], "1");
    assert_eq!(manifest["districts"][0]["rows"], 26);
    assert_eq!(manifest["districts"][0]["child_rows"], 11);
    assert_eq!(manifest["districts"][0]["latest"], "2019-03-01");
    assert_eq!(manifest["districts"][1]["district"], "2");
}
