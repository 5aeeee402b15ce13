//! `wf recover` on migrate: after an anonymization rule changes, re-running from `extracted`
//! re-runs anonymize and everything after it (extract is kept), and CERT holds the new output in
//! place of the old, without duplicates.

use crate::util::Sandbox;
use crate::validation::{count, setup, KEY};

fn sql_one(db: &std::path::Path, q: &str) -> String {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(q.to_string()))
            .fetch_one(&pool)
            .await
            .unwrap()
    })
}

#[test]
fn recover_after_a_rule_change_reanonymizes_and_replaces_the_runs_rows_in_cert() {
    let sb = Sandbox::new();
    // The shipped validation rules: their sql rule makes validate rehearse the hcp1 load, which
    // must not trip over the rows the run's first generation loaded.
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/validation.toml"
    ))
    .unwrap();
    let cfg = setup(&sb, &shipped);
    let dir = cfg.parent().unwrap().to_path_buf();
    let run_cmd =
        |args: &[&str]| crate::util::ran(sb.cmd(args).env("WF_ANON_KEY", KEY).output().unwrap());
    let out = run_cmd(&[
        "run",
        "migrate",
        "--district",
        "1",
        "--keep-raw",
        "--config-file",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let run = out.stdout.lines().next().unwrap().to_string();
    let cert_ids = dir.join("cert").join("ids.db");
    let students = count(&cert_ids, "students");
    assert_ne!(
        sql_one(&cert_ids, "select min(address) from students"),
        "[moved]"
    );
    // A new rule for the address: redact it.
    let rules = dir.join("anonymization.toml");
    let text = std::fs::read_to_string(&rules).unwrap().replace(
        "field = \"ids.students.address\"\nstrategy = \"fake\"\nkind = \"street_address\"",
        "field = \"ids.students.address\"\nstrategy = \"redact\"\nvalue = \"[moved]\"",
    );
    assert!(text.contains("[moved]"));
    std::fs::write(&rules, text).unwrap();
    // The run is done: resume has nothing to do; recover applies the rules after `extracted`.
    let r = run_cmd(&["resume", &run]);
    assert!(r.stdout.contains("already done"), "{}", r.stdout);
    let r = run_cmd(&["recover", &run, "extracted"]);
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        count(&cert_ids, "students"),
        students,
        "replaced, not duplicated"
    );
    assert_eq!(count(&cert_ids, "students where address <> '[moved]'"), 0);
    let st: serde_json::Value =
        serde_json::from_str(&run_cmd(&["status", &run, "--json"]).stdout).unwrap();
    let gen = |id: &str| {
        st["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()["generation"]
            .clone()
    };
    assert_eq!(gen("extract"), 0, "extract is kept");
    for s in ["anonymize", "validate", "load/ids", "load/sp"] {
        assert_eq!(gen(s), 1, "{s} re-ran");
    }
    let v = run_cmd(&["validate", &run]);
    assert_eq!(v.code, Some(0), "{}\n{}", v.stdout, v.stderr);
    // Rollback removes the run's rows (the latest generation's) and leaves nothing behind.
    let rb = run_cmd(&["rollback", &run, "--yes"]);
    assert_eq!(rb.code, Some(0), "{}\n{}", rb.stdout, rb.stderr);
    assert_eq!(count(&cert_ids, "students"), 0);
    assert_eq!(count(&dir.join("cert").join("hcp2.db"), "attendance"), 0);
}

#[test]
fn recover_after_the_raw_extract_was_purged_extracts_again() {
    let sb = Sandbox::new();
    let cfg = setup(&sb, "");
    let out = crate::util::ran(
        sb.cmd([
            "run",
            "migrate",
            "--district",
            "4",
            "--config-file",
            cfg.to_str().unwrap(),
        ])
        .env("WF_ANON_KEY", KEY)
        .output()
        .unwrap(),
    );
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let run = out.stdout.lines().next().unwrap().to_string();
    let r = crate::util::ran(
        sb.cmd(["recover", &run, "extracted"])
            .env("WF_ANON_KEY", KEY)
            .output()
            .unwrap(),
    );
    // The raw extract is gone: anonymize names its producer, which reads PROD again, and says so.
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("its producer runs again"), "{}", r.stderr);
    let log = sb.run(["log", &run]);
    assert!(
        log.stdout.contains("extract: artifact") && log.stdout.contains("step runs again"),
        "{}",
        log.stdout
    );
}

#[test]
fn from_run_reuses_a_kept_extract_of_the_same_district() {
    let sb = Sandbox::new();
    let cfg = setup(&sb, "");
    let c = cfg.to_str().unwrap();
    let run =
        |args: &[&str]| crate::util::ran(sb.cmd(args).env("WF_ANON_KEY", KEY).output().unwrap());
    let a = run(&[
        "run",
        "migrate",
        "--district",
        "4",
        "--keep-raw",
        "--skip-load",
        "--config-file",
        c,
    ]);
    assert_eq!(a.code, Some(0), "{}\n{}", a.stdout, a.stderr);
    let a = a.stdout.lines().next().unwrap().to_string();
    // PROD changes after A's extract: a run reusing A's extract does not see it.
    let prod = cfg.parent().unwrap().join("prod").join("ids.db");
    let students = count(&prod, "students where district_id = 4");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", prod.display())).await.unwrap();
        sqlx::query("delete from student_guardians where student_id in (select id from students where district_id = 4 limit 1)").execute(&pool).await.unwrap();
    });
    let b = run(&[
        "run",
        "migrate",
        "--district",
        "4",
        "--from-run",
        &a,
        "--config-file",
        c,
    ]);
    assert_eq!(b.code, Some(0), "{}\n{}", b.stdout, b.stderr);
    let cert = cfg.parent().unwrap().join("cert").join("ids.db");
    assert_eq!(count(&cert, "students"), students);
    // Another district, or a run whose raw extract was purged, is refused with a clear message.
    let wrong = run(&[
        "run",
        "migrate",
        "--district",
        "1",
        "--from-run",
        &a,
        "--config-file",
        c,
    ]);
    assert_eq!(wrong.code, Some(3), "{}", wrong.stderr);
    assert!(
        wrong.stderr.contains("not a migrate run of district 1"),
        "{}",
        wrong.stderr
    );
    let b_id = b.stdout.lines().next().unwrap().to_string();
    let purged = run(&[
        "run",
        "migrate",
        "--district",
        "4",
        "--from-run",
        &b_id,
        "--skip-load",
        "--config-file",
        c,
    ]);
    assert_eq!(purged.code, Some(3), "{}", purged.stderr);
    assert!(purged.stderr.contains("--keep-raw"), "{}", purged.stderr);
}
