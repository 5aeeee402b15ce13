//! `wf run migrate` end to end on embedded SQLite stores (and PostgreSQL): district 1 lands in
//! CERT anonymized, raw staging is purged, `wf rollback` restores CERT exactly, a dry run commits
//! nothing. The fixture and its helpers serve the other test modules (refusals, select_districts,
//! crash).

use crate::util::Sandbox;
use std::collections::BTreeMap;
use wf_stores::config::{Side, StoreConfig, StoreKind};

pub(crate) const KEY: &str = "an-end-to-end-test-key-0123";

pub(crate) const RULES: &str = r#"
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

/// Where the PROD and CERT databases live: SQLite files in the sandbox, or fresh databases on the
/// PostgreSQL server that scripts/services.sh started.
#[derive(Clone)]
pub(crate) enum Backend {
    Sqlite,
    Postgres(String),
}

pub(crate) struct Dbs {
    pub(crate) kind: StoreKind,
    pub(crate) urls: BTreeMap<&'static str, String>,
}

/// The PostgreSQL databases go when the test ends, unless it failed (then they stay for a look).
impl Drop for Dbs {
    fn drop(&mut self) {
        if self.kind != StoreKind::Postgres || std::thread::panicking() {
            return;
        }
        let Ok(rt) = tokio::runtime::Runtime::new() else {
            return;
        };
        rt.block_on(async {
            for url in self.urls.values() {
                let Some((base, name)) = url.rsplit_once('/') else {
                    continue;
                };
                let Ok(pool) = sqlx::PgPool::connect(&format!("{base}/postgres")).await else {
                    continue;
                };
                let sql = format!("drop database if exists {name} with (force)");
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
            }
        });
    }
}

pub(crate) fn exec(kind: StoreKind, url: &str, files: &[&str]) {
    let cfg = StoreConfig {
        name: "x".into(),
        kind,
        prod: "-".into(),
        cert: url.into(),
        triggers: Default::default(),
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let db = wf_stores::connect(&cfg, Side::Cert).await.expect("open");
        for f in files {
            db.execute(&fixture(f)).await.expect("fixture");
        }
    });
}

fn databases(sb: &Sandbox, backend: &Backend) -> Dbs {
    let names = ["ids_prod", "hcp1_prod", "ids_cert", "hcp1_cert"];
    match backend {
        Backend::Sqlite => Dbs {
            kind: StoreKind::Sqlite,
            urls: names
                .iter()
                .map(|n| {
                    (
                        *n,
                        format!("sqlite://{}", sb.out(&format!("{n}.db")).display()),
                    )
                })
                .collect(),
        },
        Backend::Postgres(admin) => {
            let admin_cfg = StoreConfig {
                name: "admin".into(),
                kind: StoreKind::Postgres,
                prod: "-".into(),
                cert: admin.clone(),
                triggers: Default::default(),
            };
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            let tag = sb
                .dir
                .path()
                .file_name()
                .map(|n| {
                    n.to_string_lossy()
                        .to_lowercase()
                        .replace(|c: char| !c.is_ascii_alphanumeric(), "")
                })
                .unwrap_or_default();
            let base = admin
                .rsplit_once('/')
                .map(|(b, _)| b.to_string())
                .unwrap_or_else(|| admin.clone());
            let urls = rt.block_on(async {
                let db = wf_stores::connect(&admin_cfg, Side::Cert)
                    .await
                    .expect("admin");
                let mut urls = BTreeMap::new();
                for n in names {
                    let db_name = format!("wf_m_{tag}_{n}");
                    db.execute(&format!("drop database if exists {db_name}"))
                        .await
                        .expect("drop");
                    db.execute(&format!("create database {db_name}"))
                        .await
                        .expect("create");
                    urls.insert(n, format!("{base}/{db_name}"));
                }
                urls
            });
            Dbs {
                kind: StoreKind::Postgres,
                urls,
            }
        }
    }
}

/// PROD and CERT databases, wf.toml and anonymization.toml; returns the config path and databases.
pub(crate) fn setup_on(sb: &Sandbox, backend: &Backend, rules: &str) -> (std::path::PathBuf, Dbs) {
    let dbs = databases(sb, backend);
    let ids_schema = if dbs.kind == StoreKind::Sqlite {
        "ids_schema_sqlite.sql"
    } else {
        "ids_schema_pg.sql"
    };
    exec(
        dbs.kind,
        &dbs.urls["ids_prod"],
        &[ids_schema, "ids_data.sql"],
    );
    exec(
        dbs.kind,
        &dbs.urls["hcp1_prod"],
        &["hcp1_schema.sql", "hcp1_data.sql"],
    );
    exec(
        dbs.kind,
        &dbs.urls["ids_cert"],
        &[ids_schema, "cert_seed_ids.sql"],
    );
    exec(
        dbs.kind,
        &dbs.urls["hcp1_cert"],
        &["hcp1_schema.sql", "cert_seed_hcp1.sql"],
    );
    std::fs::write(sb.out("anonymization.toml"), rules).expect("rules");
    let kind = if dbs.kind == StoreKind::Sqlite {
        "sqlite"
    } else {
        "postgres"
    };
    let toml = format!(
        r#"
anonymization_rules = "anonymization.toml"
reference_tables = ["ids.grade_levels"]
follow_children = ["ids.student_guardians.student_id", "ids.terms.school_id", "ids.report_cards.student_id", "hcp1.enrollments.section_id"]
[[stores]]
name = "ids"
kind = "{kind}"
prod = "{}"
cert = "{}"
[[stores]]
name = "hcp1"
kind = "{kind}"
prod = "{}"
cert = "{}"
[[virtual_fks]]
from = "hcp1.enrollments.student_id"
to = "ids.students.id"
"#,
        dbs.urls["ids_prod"], dbs.urls["ids_cert"], dbs.urls["hcp1_prod"], dbs.urls["hcp1_cert"]
    );
    let path = sb.out("wf.toml");
    std::fs::write(&path, toml).expect("wf.toml");
    let enrolled = sb.run(["--config", path.to_str().unwrap(), "cert", "enroll"]);
    assert_eq!(
        enrolled.code,
        Some(0),
        "wf cert enroll: {}",
        enrolled.stderr
    );
    (path, dbs)
}

pub(crate) fn setup(sb: &Sandbox, rules: &str) -> std::path::PathBuf {
    setup_on(sb, &Backend::Sqlite, rules).0
}

/// First column of `query` on CERT database `db` (`ids_cert` / `hcp1_cert`), as text.
pub(crate) fn query(dbs: &Dbs, db: &str, q: &str) -> Vec<String> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let url = dbs.urls[db].clone();
    rt.block_on(async {
        match dbs.kind {
            StoreKind::Postgres => {
                let pool = sqlx::PgPool::connect(&url).await.expect("cert");
                let wrapped = format!("select x::text from ({q}) t(x)");
                sqlx::query_scalar::<_, Option<String>>(sqlx::AssertSqlSafe(wrapped))
                    .fetch_all(&pool)
                    .await
                    .unwrap_or_else(|e| panic!("{q}: {e}"))
                    .into_iter()
                    .map(|v| v.unwrap_or_default())
                    .collect()
            }
            StoreKind::Sqlite => {
                use sqlx::{Row, TypeInfo, ValueRef};
                let pool = sqlx::SqlitePool::connect(&url).await.expect("cert");
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
            }
        }
    })
}

pub(crate) fn cert(sb: &Sandbox, sql: &str) -> Vec<String> {
    let (db, q) = sql.split_once(':').expect("db:query");
    let dbs = databases(sb, &Backend::Sqlite);
    query(&dbs, db.trim_end_matches(".db"), q)
}

fn counts_of(dbs: &Dbs) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (db, tables) in [
        (
            "ids_cert",
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
            "hcp1_cert",
            vec!["sections", "enrollments", "rooms", "attendance"],
        ),
    ] {
        for t in tables {
            out.insert(
                t.to_string(),
                query(dbs, db, &format!("select count(*) from {t}"))[0].clone(),
            );
        }
    }
    out
}

/// `wf --config <cfg> run migrate --district 1` with the test key.
pub(crate) fn migrate(sb: &Sandbox, cfg: &str) -> crate::util::Ran {
    migrate_with(sb, cfg, &[], &[("WF_ANON_KEY", KEY)])
}

/// `wf --config <cfg> run migrate --district 1 <extra>` with exactly the environment `env`.
pub(crate) fn migrate_with(
    sb: &Sandbox,
    cfg: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> crate::util::Ran {
    let mut c = sb.cmd(["--config", cfg, "run", "migrate", "--district", "1"]);
    c.args(extra).env_remove("WF_ANON_KEY");
    for (k, v) in env {
        c.env(k, v);
    }
    crate::util::ran(c.output().expect("run"))
}

pub(crate) fn counts(sb: &Sandbox) -> BTreeMap<String, String> {
    counts_of(&databases(sb, &Backend::Sqlite))
}

#[test]
fn migrate_loads_the_district_anonymized_and_rollback_restores_cert() {
    let sb = Sandbox::new();
    let config = setup(&sb, RULES);
    let before = counts(&sb);
    let cfg = config.to_string_lossy().to_string();
    let r = migrate(&sb, &cfg);
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

    // The run journaled its configuration file: rollback needs no --config to find CERT.
    let st = sb.run(["status", &run, "--json"]);
    let st: serde_json::Value = serde_json::from_str(&st.stdout).expect("status json");
    assert_eq!(st["attrs"]["config_file"], cfg.as_str());
    let rb = sb.run(["rollback", &run, "--yes"]);
    assert_eq!(rb.code, Some(0), "{}", rb.stderr);
    assert!(rb.stdout.contains("rolled back"), "{}", rb.stdout);
    assert_eq!(counts(&sb), before, "CERT is exactly as before the run");
    // The saved report is rewritten: it no longer says the rows are in CERT.
    let md = std::fs::read_to_string(sb.data().join("reports").join(format!("{run}.md")))
        .expect("report");
    assert!(
        md.contains("**rolled_back**") && md.contains("This run was rolled back"),
        "{md}"
    );
    assert!(!md.contains(&format!("wf rollback {run}")), "{md}");
}

#[test]
fn a_dry_run_says_so_everywhere_and_commits_nothing() {
    let sb = Sandbox::new();
    let config = setup(&sb, RULES);
    let before = counts(&sb);
    let cfg = config.to_string_lossy().to_string();
    let r = migrate_with(&sb, &cfg, &["--dry-run"], &[("WF_ANON_KEY", KEY)]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let run = r.stdout.lines().next().expect("run id").to_string();
    assert_eq!(counts(&sb), before, "a dry run commits nothing");
    let runs = sb.run(["runs"]);
    let line = runs
        .stdout
        .lines()
        .find(|l| l.starts_with(&run))
        .expect("listed");
    assert!(line.contains("done_dry_run"), "{}", runs.stdout);
    let st = sb.run(["status", &run]);
    assert!(st.stdout.contains(": done_dry_run,"), "{}", st.stdout);
    let md = std::fs::read_to_string(sb.data().join("reports").join(format!("{run}.md")))
        .expect("report");
    assert!(
        md.starts_with(&format!("# Dry-run report: {run}"))
            && md.contains("Nothing was committed")
            && md.contains("| Would load |")
            && md.contains("**done_dry_run**"),
        "{md}"
    );
    assert!(
        !md.contains("wf rollback"),
        "no rollback hint for a dry run: {md}"
    );
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(sb.data().join("reports").join(format!("{run}.json"))).expect("json"),
    )
    .expect("json");
    assert_eq!(json["status"], "done_dry_run");
    // Wall time is split into time with steps running and idle time.
    let (wall, busy, idle) = (
        json["seconds"].as_f64().unwrap(),
        json["busy_seconds"].as_f64().unwrap(),
        json["idle_seconds"].as_f64().unwrap(),
    );
    assert!(busy > 0.0 && busy <= wall + 0.001, "{busy} of {wall}");
    assert!(
        (wall - busy - idle).abs() < 0.01,
        "{wall} = {busy} + {idle}"
    );
    assert!(md.contains("s with steps running,"), "{md}");
}

/// The same path on the real PostgreSQL server: migrate, resume, rollback.
#[test]
fn migrate_and_rollback_on_postgres() {
    let Some(admin) = std::env::var("WF_TEST_PG_URL").ok() else {
        assert!(
            std::env::var("CI").is_err(),
            "WF_TEST_PG_URL is not set in CI: run scripts/test.sh"
        );
        eprintln!(
            "skipped: WF_TEST_PG_URL is not set (scripts/test.sh starts PostgreSQL and sets it)"
        );
        return;
    };
    let sb = Sandbox::new();
    let (config, dbs) = setup_on(&sb, &Backend::Postgres(admin), RULES);
    let before = counts_of(&dbs);
    let cfg = config.to_string_lossy().to_string();
    let r = migrate(&sb, &cfg);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let run = r.stdout.lines().next().expect("run id").to_string();
    let after = counts_of(&dbs);
    assert_eq!(after["students"], "3");
    assert_eq!(after["enrollments"], "3");
    assert_eq!(
        query(
            &dbs,
            "ids_cert",
            "select principal_id from schools where id = 10"
        ),
        ["100"],
        "cycle closed after load"
    );
    let names = query(&dbs, "ids_cert", "select first_name from students");
    assert!(
        !names
            .iter()
            .any(|n| ["Eve", "Finn", "Gus"].contains(&n.as_str())),
        "{names:?}"
    );
    let rb = sb.run(["--config", &cfg, "rollback", &run, "--yes"]);
    assert_eq!(rb.code, Some(0), "{}", rb.stderr);
    assert_eq!(counts_of(&dbs), before);
}
