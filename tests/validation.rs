//! The validation gate on crafted bad inputs: each check fires, FAILED loads nothing into CERT,
//! warnings load and say PASSED_WITH_WARNINGS; `wf validate` and the report after a real run.

use crate::util::Sandbox;
use std::path::{Path, PathBuf};

pub(crate) const KEY: &str = "validation-test-key-0123456789";

/// Seeded embedded PROD and an empty CERT schema; returns the config path.
pub(crate) fn setup(sb: &Sandbox, validation: &str) -> PathBuf {
    let dir = sb.out("env");
    for d in ["prod", "cert"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let cfg = dir.join("wf.toml");
    std::fs::write(&cfg, wf::demo::demo_config(&dir)).unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    std::fs::copy(
        format!("{root}/config/anonymization.toml"),
        dir.join("anonymization.toml"),
    )
    .unwrap();
    std::fs::write(dir.join("validation.toml"), validation).unwrap();
    for env in ["prod", "cert"] {
        let seeded = sb.run(["--config", cfg.to_str().unwrap(), "seed", "--env", env]);
        assert_eq!(seeded.code, Some(0), "{}\n{}", seeded.stdout, seeded.stderr);
    }
    cfg
}

fn exec(db: &Path, sql: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    });
}

pub(crate) fn count(db: &Path, table: &str) -> i64 {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!("select count(*) from {table}")))
            .fetch_one(&pool)
            .await
            .unwrap()
    })
}

fn migrate(sb: &Sandbox, cfg: &Path) -> (crate::util::Ran, String) {
    let r = crate::util::ran(
        sb.cmd([
            "run",
            "migrate",
            "--district",
            "1",
            "--config-file",
            cfg.to_str().unwrap(),
        ])
        .env("WF_ANON_KEY", KEY)
        // Uniqueness checks spill sorted runs of 7 hashes: every finding here must come out
        // as it does in memory, examples included.
        .env("WF_VALIDATE_MEMORY_HASHES", "7")
        .output()
        .unwrap(),
    );
    let run = r.stdout.lines().next().unwrap_or_default().to_string();
    (r, run)
}

fn report(sb: &Sandbox, run: &str, stderr: &str) -> serde_json::Value {
    let p = sb.data().join("reports").join(format!("{run}.json"));
    serde_json::from_slice(
        &std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}\nstderr:\n{stderr}", p.display())),
    )
    .unwrap()
}

fn cert(cfg: &Path, db: &str) -> PathBuf {
    cfg.parent().unwrap().join("cert").join(db)
}

fn prod(cfg: &Path, db: &str) -> PathBuf {
    cfg.parent().unwrap().join("prod").join(db)
}

/// Runs migrate, expects failed_validation with a finding of `category` on `table`, and an empty CERT.
fn expect_failure(sb: &Sandbox, cfg: &Path, category: &str, table: &str) -> serde_json::Value {
    let (r, run) = migrate(sb, cfg);
    assert_eq!(r.code, Some(7), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("failed validation")
            && r.stderr.contains(&format!("wf recover {run} anonymized")),
        "{}",
        r.stderr
    );
    let rep = report(sb, &run, &r.stderr);
    assert_eq!(rep["status"], "failed_validation");
    assert_eq!(rep["validation_status"], "FAILED");
    let findings = rep["validation"]["findings"].as_array().unwrap();
    assert!(
        findings.iter().any(|f| f["category"] == category
            && f["table"] == table
            && f["violations"].as_u64().unwrap() > 0),
        "{category} on {table}: {findings:#?}"
    );
    // The run's error says what went wrong: each blocking finding's own message.
    let blocking = |f: &&serde_json::Value| {
        (f["severity"] == "error" || f["severity"] == "critical")
            && f["violations"].as_u64().unwrap_or(0) > 0
    };
    for f in findings.iter().filter(blocking) {
        let said = format!(
            "{}: {}",
            f["table"].as_str().unwrap(),
            f["message"].as_str().unwrap()
        );
        assert!(r.stderr.contains(&said), "{said} not in: {}", r.stderr);
    }
    for (db, t) in [
        ("ids.db", "students"),
        ("hcp1.db", "enrollments"),
        ("hcp2.db", "attendance"),
        ("adb.db", "results"),
    ] {
        assert_eq!(count(&cert(cfg, db), t), 0, "CERT {t} untouched");
    }
    rep
}

#[test]
fn duplicate_key_against_a_cert_unique_constraint_fails_the_gate() {
    let sb = Sandbox::new();
    let cfg = setup(&sb, "");
    // CERT drifted: a unique constraint PROD does not have, which the district's rows violate.
    exec(
        &cert(&cfg, "ids.db"),
        "create unique index students_one_per_grade on students (grade)",
    );
    let rep = expect_failure(&sb, &cfg, "uniqueness", "ids.students");
    let f = rep["validation"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["category"] == "uniqueness")
        .unwrap()
        .clone();
    assert!(
        !f["examples"].as_array().unwrap().is_empty(),
        "examples are given: {f}"
    );
    let md = std::fs::read_to_string(
        sb.data()
            .join("reports")
            .join(format!("{}.md", rep["run"].as_str().unwrap())),
    )
    .unwrap();
    assert!(md.contains("FAILED") && md.contains("uniqueness"), "{md}");
}

#[test]
fn a_unique_value_cert_holds_in_another_row_fails_the_gate_for_every_strategy() {
    let sb = Sandbox::new();
    let cfg = setup(&sb, "");
    // CERT has its own district (another id) named like the one the run brings, under a unique
    // index: the insert would fail on it, an upsert too, and skip-existing would keep CERT's row.
    let prod_ids = prod(&cfg, "ids.db");
    exec(
        &cert(&cfg, "ids.db"),
        &format!(
            "attach database '{}' as p; create unique index districts_name on districts (name); \
             insert into districts select 999999, name, state from p.districts where id = 1",
            prod_ids.display()
        ),
    );
    let rep = expect_failure(&sb, &cfg, "cert_conflicts", "ids.districts");
    let f = rep["validation"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["category"] == "cert_conflicts")
        .unwrap()
        .clone();
    assert!(f["message"].as_str().unwrap().contains("name"), "{f}");
    for strategy in ["upsert", "skip-existing"] {
        let r = crate::util::ran(
            sb.cmd(["run", "migrate", "--district", "1", "--strategy", strategy])
                .args(["--config-file", cfg.to_str().unwrap()])
                .env("WF_ANON_KEY", KEY)
                .output()
                .unwrap(),
        );
        assert_eq!(r.code, Some(7), "{strategy}: {}\n{}", r.stdout, r.stderr);
        assert_eq!(count(&cert(&cfg, "ids.db"), "students"), 0, "{strategy}");
    }
}

#[test]
fn dangling_reference_fails_the_gate() {
    let sb = Sandbox::new();
    let cfg = setup(&sb, "");
    // PROD lost a school its students still point at (FK checks were off when it was deleted).
    exec(&prod(&cfg, "ids.db"), "pragma foreign_keys = off; delete from schools where id = (select min(id) from schools where district_id = 1)");
    expect_failure(&sb, &cfg, "referential_integrity", "ids.students");
}

#[test]
fn null_in_a_not_null_column_and_a_type_mismatch_fail_the_gate() {
    let sb = Sandbox::new();
    let cfg = setup(&sb, "");
    exec(
        &prod(&cfg, "hcp2.db"),
        "update grades set comments = null where district_id = 1 and id % 2 = 0",
    );
    exec(&cert(&cfg, "hcp2.db"), "drop table grades; create table grades (id bigint primary key, district_id bigint not null, student_id bigint not null, section_id bigint not null, term integer not null, mark text not null, comments text not null)");
    expect_failure(&sb, &cfg, "nullability", "hcp2.grades");
    let sb = Sandbox::new();
    let cfg = setup(&sb, "");
    exec(&cert(&cfg, "hcp2.db"), "drop table attendance; create table attendance (id bigint primary key, district_id bigint not null, student_id bigint not null, section_id bigint not null, day date not null, status integer not null)");
    let rep = expect_failure(&sb, &cfg, "schema", "hcp2.attendance");
    let f = rep["validation"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["category"] == "schema")
        .unwrap()
        .clone();
    assert!(f["message"].as_str().unwrap().contains("status"), "{f}");
}

const SQL_RULE: &str = r#"
[[rules]]
name = "no student without a guardian"
kind = "sql"
store = "ids"
query = "select s.id from students s where s.id % 5 = 0"
severity = "SEVERITY"
"#;

#[test]
fn a_failing_sql_rule_with_severity_error_leaves_cert_unchanged() {
    let sb = Sandbox::new();
    let cfg = setup(&sb, &SQL_RULE.replace("SEVERITY", "error"));
    let rep = expect_failure(&sb, &cfg, "business_rules", "ids");
    let f = rep["validation"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["category"] == "business_rules")
        .unwrap()
        .clone();
    assert_eq!(f["check"], "no student without a guardian");
    assert_eq!(count(&cert(&cfg, "ids.db"), "grade_levels"), 0);
    // Fix the rule (a warning after all) and re-run from the anonymized checkpoint.
    let run = rep["run"].as_str().unwrap().to_string();
    let vfile = cfg.parent().unwrap().join("validation.toml");
    std::fs::write(&vfile, SQL_RULE.replace("SEVERITY", "warning")).unwrap();
    let r = crate::util::ran(
        sb.cmd(["recover", &run, "anonymized"])
            .env("WF_ANON_KEY", KEY)
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let students = count(&prod(&cfg, "ids.db"), "students where district_id = 1");
    assert_eq!(count(&cert(&cfg, "ids.db"), "students"), students);
    assert_eq!(
        report(&sb, &run, &r.stderr)["validation_status"],
        "PASSED_WITH_WARNINGS"
    );
}

#[test]
fn a_failing_sql_rule_with_severity_warning_loads_and_passes_with_warnings() {
    let sb = Sandbox::new();
    let cfg = setup(&sb, &SQL_RULE.replace("SEVERITY", "warning"));
    let (r, run) = migrate(&sb, &cfg);
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let rep = report(&sb, &run, &r.stderr);
    assert_eq!(rep["validation_status"], "PASSED_WITH_WARNINGS");
    let students = count(&prod(&cfg, "ids.db"), "students where district_id = 1");
    assert_eq!(count(&cert(&cfg, "ids.db"), "students"), students);
    // SQLite: the rehearsal is rolled back, and load/ids loads the store itself.
    let st = crate::util::ran(sb.cmd(["status", &run, "--json"]).output().unwrap());
    let st: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    let by_gate = |step: &str| {
        st["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == step)
            .unwrap()["metrics"]["loaded_by_the_gate"]
            .as_u64()
    };
    assert_eq!(by_gate("load/ids"), Some(0));
    assert_eq!(by_gate("load/hcp1"), Some(0));
    let checks = rep["load_checks"].as_array().unwrap();
    assert!(
        checks
            .iter()
            .any(|c| c["rule"] == "no student without a guardian"
                && c["violations"].as_u64().unwrap() > 0),
        "{checks:?}"
    );
    // Post-load validation agrees with what was loaded, then notices CERT drifting.
    let v = crate::util::ran(
        sb.cmd(["validate", &run])
            .env("WF_ANON_KEY", KEY)
            .output()
            .unwrap(),
    );
    assert_eq!(v.code, Some(0), "{}\n{}", v.stdout, v.stderr);
    assert!(v.stdout.contains("CERT validation PASSED"), "{}", v.stdout);
    exec(
        &cert(&cfg, "hcp2.db"),
        "update attendance set status = 'excused' where id = (select min(id) from attendance)",
    );
    exec(
        &cert(&cfg, "adb.db"),
        "delete from results where id = (select min(id) from results)",
    );
    let v = crate::util::ran(
        sb.cmd(["validate", &run, "--json"])
            .env("WF_ANON_KEY", KEY)
            .output()
            .unwrap(),
    );
    assert_eq!(v.code, Some(7), "{}\n{}", v.stdout, v.stderr);
    let j: serde_json::Value = serde_json::from_str(&v.stdout).unwrap();
    let failed: Vec<(String, String)> = j["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["table"].as_str().unwrap().to_string(),
                f["check"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        failed.contains(&("hcp2.attendance".into(), "checksum".into())),
        "{failed:?}"
    );
    assert!(
        failed.contains(&("adb.results".into(), "row count".into())),
        "{failed:?}"
    );
}

#[test]
fn rows_already_in_cert_are_conflicts_for_insert_and_fine_for_upsert() {
    let sb = Sandbox::new();
    let cfg = setup(&sb, "");
    let (first, _) = migrate(&sb, &cfg);
    assert_eq!(first.code, Some(0), "{}\n{}", first.stdout, first.stderr);
    let (again, run) = migrate(&sb, &cfg);
    assert_eq!(again.code, Some(7), "{}\n{}", again.stdout, again.stderr);
    let rep = report(&sb, &run, &again.stderr);
    let f = rep["validation"]["findings"].as_array().unwrap();
    assert!(
        f.iter()
            .any(|f| f["category"] == "cert_conflicts" && f["table"] == "ids.students"),
        "{f:#?}"
    );
    let up = crate::util::ran(
        sb.cmd([
            "run",
            "migrate",
            "--district",
            "1",
            "--strategy",
            "upsert",
            "--config-file",
            cfg.to_str().unwrap(),
        ])
        .env("WF_ANON_KEY", KEY)
        .output()
        .unwrap(),
    );
    assert_eq!(up.code, Some(0), "{}\n{}", up.stdout, up.stderr);
}

/// `wf validate` scans anonymized fields in CERT too: an original email planted into a loaded
/// student's anonymized email is a critical finding, while the run as loaded passes.
#[test]
fn an_original_planted_in_an_anonymized_cert_column_fails_wf_validate() {
    let sb = Sandbox::new();
    let cfg = setup(&sb, "");
    let (r, run) = migrate(&sb, &cfg);
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    // `budget`: WF_LEAK_MEMORY_HASHES; a small one makes `wf validate` look the originals up in
    // their file rather than in memory.
    let validate_with = |budget: &str| {
        crate::util::ran(
            sb.cmd(["--config", cfg.to_str().unwrap(), "validate", &run])
                .env("WF_ANON_KEY", KEY)
                .env("WF_LEAK_MEMORY_HASHES", budget)
                .output()
                .unwrap(),
        )
    };
    let validate = || validate_with("8000000");
    let v = validate();
    assert_eq!(v.code, Some(0), "{}\n{}", v.stdout, v.stderr);
    exec(
        &cert(&cfg, "ids.db"),
        &format!(
            "attach database '{}' as p; update students set email = \
             (select email from p.students where district_id = 1 and email is not null limit 1) \
             where id = (select min(id) from students)",
            prod(&cfg, "ids.db").display()
        ),
    );
    for v in [validate(), validate_with("10")] {
        assert_eq!(v.code, Some(7), "{}\n{}", v.stdout, v.stderr);
        assert!(
            v.stdout
                .contains("Critical ids.students no original value in CERT: 1 original"),
            "{}",
            v.stdout
        );
    }
}

#[test]
fn a_graph_node_already_in_cert_stops_the_run_at_validate_with_every_store_unchanged() {
    let sb = Sandbox::new();
    let cfg = setup(&sb, "");
    let config = wf_stores::Config::load(&cfg).unwrap();
    let g = config.graph.clone().expect("the demo config has a graph");
    // A student of district 1, already in the CERT graph (loaded by someone else).
    let db = prod(&cfg, "ids.db");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let id: i64 = rt.block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        sqlx::query_scalar("select min(id) from students where district_id = 1")
            .fetch_one(&pool)
            .await
            .unwrap()
    });
    let planted = wf_stores::graph::NodeRec {
        labels: vec!["Student".into()],
        props: std::collections::BTreeMap::from([
            ("id".to_string(), wf_stores::graph::GValue::Int(id)),
            ("district_id".to_string(), wf_stores::graph::GValue::Int(1)),
        ]),
    };
    let cert_students = |g: &wf_stores::graph::GraphConfig| {
        rt.block_on(async {
            let mut r = wf_stores::graph::open_read(g, wf_stores::Side::Cert)
                .await
                .unwrap();
            let counts = r.label_counts().await.unwrap();
            r.finish().await.unwrap();
            counts
                .into_iter()
                .filter(|(l, _)| l == "Student")
                .map(|(_, n)| n)
                .sum::<u64>()
        })
    };
    rt.block_on(async {
        let mut w = wf_stores::graph::open_write(&g).await.unwrap();
        w.merge_nodes("Student", std::slice::from_ref(&planted))
            .await
            .unwrap();
        w.commit().await.unwrap();
    });
    assert_eq!(cert_students(&g), 1);
    let rep = expect_failure(&sb, &cfg, "cert_conflicts", &format!("{}.Student", g.name));
    let f = rep["validation"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "nodes not yet in CERT")
        .unwrap()
        .clone();
    assert_eq!(f["violations"], 1, "{f:#?}");
    assert_eq!(f["examples"][0], id.to_string(), "{f:#?}");
    assert!(
        f["message"].as_str().unwrap().contains("skip-existing"),
        "the finding says what to do: {f:#?}"
    );
    // The graph was not loaded either: only the planted node is there.
    assert_eq!(cert_students(&g), 1);
}

#[test]
fn graph_nodes_without_their_key_skipped_when_configured_are_counted_in_the_gate_and_report() {
    let sb = Sandbox::new();
    let cfg = setup(&sb, "");
    let config = wf_stores::Config::load(&cfg).unwrap();
    let g = config.graph.clone().expect("the demo config has a graph");
    // PROD holds a district-1 student node without its key property.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", g.prod))
            .await
            .unwrap();
        sqlx::raw_sql(
            "INSERT INTO nodes VALUES ('Student', 's-nokey', '[\"Student\"]', '{\"district_id\": 1, \"name\": \"No key\"}')",
        )
        .execute(&pool)
        .await
        .unwrap();
    });
    // Refused by default, naming the option.
    let (r, _) = migrate(&sb, &cfg);
    assert_ne!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stderr.contains("1 Student nodes of the district") && r.stderr.contains("without_key"),
        "{}",
        r.stderr
    );
    // Configured to skip: the run loads, and the gate and the report count what was left out.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("[graph]\n", "[graph]\nwithout_key = \"skip\"\n"),
    )
    .unwrap();
    let (r, run) = migrate(&sb, &cfg);
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let rep = report(&sb, &run, &r.stderr);
    assert_eq!(rep["validation_status"], "PASSED_WITH_WARNINGS", "{rep:#?}");
    let f = rep["validation"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "nodes without their key skipped")
        .unwrap_or_else(|| panic!("{rep:#?}"))
        .clone();
    assert_eq!(f["violations"], 1, "{f:#?}");
    assert_eq!(
        f["examples"][0], "1 Student nodes of the district",
        "{f:#?}"
    );
    let md = std::fs::read_to_string(sb.data().join("reports").join(format!("{run}.md"))).unwrap();
    assert!(md.contains("nodes without their key skipped"), "{md}");
}
