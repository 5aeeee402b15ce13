//! `wf run migrate` end to end on embedded SQLite stores: district 1 lands in CERT anonymized, raw
//! staging is purged, `wf rollback` restores CERT exactly, and missing keys or rules stop the run.

use crate::util::Sandbox;
use std::collections::BTreeMap;
use wf_stores::config::{Side, StoreConfig, StoreKind};

const KEY: &str = "an-end-to-end-test-key-0123";

const RULES: &str = r#"
[[rules]]
pattern = '\.(first_name|last_name)$'
strategy = "fake"
kind = "first_name"
[[rules]]
pattern = 'email$'
strategy = "fake"
kind = "email"
[[rules]]
field = "ids.guardians.name"
strategy = "fake"
kind = "name"
[[rules]]
field = "ids.students.birth_date"
strategy = "shift_date"
entity = "id"
[[rules]]
pattern = '^(ids\.(districts|schools|terms)|hcp1\.(sections|rooms))\.name$'
strategy = "keep"
"#;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/stores/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture")
}

fn exec(url: &str, files: &[&str]) {
    let cfg = StoreConfig {
        name: "x".into(),
        kind: StoreKind::Sqlite,
        prod: "-".into(),
        cert: url.into(),
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let db = wf_stores::connect(&cfg, Side::Cert).await.expect("open");
        for f in files {
            db.execute(&fixture(f)).await.expect("fixture");
        }
    });
}

fn url(sb: &Sandbox, file: &str) -> String {
    format!("sqlite://{}", sb.out(file).display())
}

/// PROD and CERT SQLite files, wf.toml and anonymization.toml; returns the config path.
fn setup(sb: &Sandbox, rules: &str) -> std::path::PathBuf {
    exec(
        &url(sb, "ids_prod.db"),
        &["ids_schema_sqlite.sql", "ids_data.sql"],
    );
    exec(
        &url(sb, "hcp1_prod.db"),
        &["hcp1_schema.sql", "hcp1_data.sql"],
    );
    exec(
        &url(sb, "ids_cert.db"),
        &["ids_schema_sqlite.sql", "cert_seed_ids.sql"],
    );
    exec(
        &url(sb, "hcp1_cert.db"),
        &["hcp1_schema.sql", "cert_seed_hcp1.sql"],
    );
    std::fs::write(sb.out("anonymization.toml"), rules).expect("rules");
    let toml = format!(
        r#"
anonymization_rules = "anonymization.toml"
reference_tables = ["ids.grade_levels"]
follow_children = ["ids.student_guardians.student_id", "ids.terms.school_id", "ids.report_cards.student_id", "hcp1.enrollments.section_id"]
[[stores]]
name = "ids"
kind = "sqlite"
prod = "{}"
cert = "{}"
[[stores]]
name = "hcp1"
kind = "sqlite"
prod = "{}"
cert = "{}"
[[virtual_fks]]
from = "hcp1.enrollments.student_id"
to = "ids.students.id"
"#,
        url(sb, "ids_prod.db"),
        url(sb, "ids_cert.db"),
        url(sb, "hcp1_prod.db"),
        url(sb, "hcp1_cert.db")
    );
    let path = sb.out("wf.toml");
    std::fs::write(&path, toml).expect("wf.toml");
    path
}

fn cert(sb: &Sandbox, sql: &str) -> Vec<String> {
    use sqlx::{Row, TypeInfo, ValueRef};
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (db, q) = sql.split_once(':').expect("db:query");
        let pool = sqlx::SqlitePool::connect(&url(sb, db)).await.expect("cert");
        let rows = sqlx::query(sqlx::AssertSqlSafe(q.to_string()))
            .fetch_all(&pool)
            .await
            .unwrap_or_else(|e| panic!("{q}: {e}"));
        rows.iter()
            .map(|r| {
                let raw = r.try_get_raw(0).expect("column");
                if raw.is_null() {
                    return String::new();
                }
                match raw.type_info().name() {
                    "INTEGER" => r.get::<i64, _>(0).to_string(),
                    _ => r.get::<String, _>(0),
                }
            })
            .collect()
    })
}

fn counts(sb: &Sandbox) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (db, tables) in [
        (
            "ids_cert.db",
            vec![
                "districts",
                "grade_levels",
                "schools",
                "staff",
                "students",
                "guardians",
                "student_guardians",
                "terms",
                "report_cards",
            ],
        ),
        (
            "hcp1_cert.db",
            vec!["sections", "enrollments", "rooms", "attendance"],
        ),
    ] {
        for t in tables {
            out.insert(
                t.to_string(),
                cert(sb, &format!("{db}:select count(*) from {t}"))[0].clone(),
            );
        }
    }
    out
}

#[test]
fn migrate_loads_the_district_anonymized_and_rollback_restores_cert() {
    let sb = Sandbox::new();
    let config = setup(&sb, RULES);
    let before = counts(&sb);
    let cfg = config.to_string_lossy().to_string();
    let r = crate::util::ran(
        sb.cmd(["--config", &cfg, "run", "migrate", "--district", "1"])
            .env("WF_ANON_KEY", KEY)
            .output()
            .expect("run"),
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let run = r.stdout.lines().next().expect("run id").to_string();
    assert!(run.starts_with("mig-"), "{run}");
    let after = counts(&sb);
    assert_eq!(after["students"], "3", "the 3 students of district 1");
    assert_eq!(
        after["districts"], "2",
        "CERT's own district and district 1"
    );
    assert_eq!(after["attendance"], "3");
    // Anonymized: no original name or email reached CERT; ids still join.
    let names = cert(&sb, "ids_cert.db:select first_name from students");
    for original in ["Eve", "Finn", "Gus"] {
        assert!(
            !names.contains(&original.to_string()),
            "{original} reached CERT: {names:?}"
        );
    }
    let emails = cert(&sb, "ids_cert.db:select email from staff");
    assert!(
        emails.iter().all(|e| !e.ends_with("north.example")),
        "{emails:?}"
    );
    assert!(
        emails.contains(&"qa@cert.example".to_string()),
        "CERT's own row is untouched"
    );
    let enrolled = cert(&sb, "hcp1_cert.db:select student_id from enrollments");
    let students = cert(&sb, "ids_cert.db:select id from students");
    assert!(
        enrolled.iter().all(|s| students.contains(s)),
        "{enrolled:?} vs {students:?}"
    );
    // The raw (PII) staging is gone; the anonymized staging and the report stay.
    let steps = sb.data().join("runs").join(&run).join("steps");
    let raw: Vec<_> = std::fs::read_dir(steps.join("extract").join("raw"))
        .expect("raw dir")
        .collect();
    assert!(raw.is_empty(), "raw staging purged");
    let report = std::fs::read_to_string(steps.join("anonymize").join("anonymization-report.json"))
        .expect("report");
    assert!(
        report.contains("key_fingerprint")
            && !report.contains(KEY)
            && !report.contains("north.example")
    );
    // Resuming or recovering loads nothing twice.
    let again = sb
        .cmd(["--config", &cfg, "resume", &run])
        .env("WF_ANON_KEY", KEY)
        .output()
        .expect("resume");
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(counts(&sb), after);

    let rb = sb.run(["--config", &cfg, "rollback", &run, "--yes"]);
    assert_eq!(rb.code, Some(0), "{}", rb.stderr);
    assert!(rb.stdout.contains("rolled back"), "{}", rb.stdout);
    assert_eq!(counts(&sb), before, "CERT is exactly as before the run");
}

#[test]
fn no_key_no_run() {
    let sb = Sandbox::new();
    let config = setup(&sb, RULES);
    let r = sb.run([
        "--config",
        &config.to_string_lossy(),
        "run",
        "migrate",
        "--district",
        "1",
    ]);
    assert_eq!(r.code, Some(1));
    let line = r.stderr.trim();
    assert!(
        line.contains("WF_ANON_KEY") && line.contains("no key, no run") && !line.contains('\n'),
        "{line}"
    );
    assert!(
        !sb.data().join("journal").exists()
            || std::fs::read_dir(sb.data().join("journal"))
                .expect("dir")
                .next()
                .is_none()
    );
}

#[test]
fn pii_without_a_rule_stops_the_run_before_any_load() {
    let sb = Sandbox::new();
    let rules = RULES.replace(
        "field = \"ids.guardians.name\"",
        "field = \"ids.guardians.nickname\"",
    );
    let config = setup(&sb, &rules);
    let before = counts(&sb);
    let r = crate::util::ran(
        sb.cmd([
            "--config",
            &config.to_string_lossy(),
            "run",
            "migrate",
            "--district",
            "1",
        ])
        .env("WF_ANON_KEY", KEY)
        .output()
        .expect("run"),
    );
    assert_eq!(r.code, Some(3), "{}", r.stderr);
    assert!(
        r.stderr.contains("anonymize") && r.stderr.contains("ids.guardians.name"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("Ivy Adams"), "no value in errors");
    assert_eq!(counts(&sb), before, "nothing was loaded");
}

/// A crash at every failpoint of every migrate step, then `wf resume`: CERT ends exactly as after an
/// uninterrupted run (no duplicate, no missing row). The load steps' `after-effect` point is the one
/// that matters most: CERT committed, the journal did not, and the re-executed load must see its
/// marker and do nothing.
#[test]
fn a_crash_at_any_step_boundary_then_resume_gives_the_same_cert() {
    use std::os::unix::process::ExitStatusExt;
    let reference = {
        let sb = Sandbox::new();
        let config = setup(&sb, RULES);
        let r = sb
            .cmd([
                "--config",
                &config.to_string_lossy(),
                "run",
                "migrate",
                "--district",
                "1",
            ])
            .env("WF_ANON_KEY", KEY)
            .output()
            .expect("run");
        assert_eq!(r.status.code(), Some(0));
        counts(&sb)
    };
    for step in ["extract", "anonymize", "purge-raw", "load/ids", "load/hcp1"] {
        for point in ["before", "after-effect", "after-record"] {
            let sb = Sandbox::new();
            let config = setup(&sb, RULES);
            let cfg = config.to_string_lossy().to_string();
            let crashed = sb
                .cmd(["--config", &cfg, "run", "migrate", "--district", "1"])
                .env("WF_ANON_KEY", KEY)
                .env("WF_FAILPOINT", format!("{step}:{point}"))
                .output()
                .expect("run");
            assert_eq!(
                crashed.status.signal(),
                Some(6),
                "{step}:{point} should abort"
            );
            let run = String::from_utf8_lossy(&crashed.stdout)
                .lines()
                .next()
                .expect("run id")
                .to_string();
            let resumed = sb
                .cmd(["--config", &cfg, "resume", &run])
                .env("WF_ANON_KEY", KEY)
                .output()
                .expect("resume");
            assert_eq!(
                resumed.status.code(),
                Some(0),
                "{step}:{point}: {}",
                String::from_utf8_lossy(&resumed.stderr)
            );
            assert_eq!(
                counts(&sb),
                reference,
                "CERT after a crash at {step}:{point}"
            );
        }
    }
}
