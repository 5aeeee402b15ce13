//! `wf demo` end to end on embedded stores: seed, migrate one district, check CERT holds exactly
//! the district (relational and graph), anonymized and still joinable; then roll it back.

use crate::util::Sandbox;
use std::collections::HashSet;
use std::path::Path;

const KEY: &str = "demo-test-key-0123456789abcdef";

fn sql_strings(db: &Path, q: &str) -> Vec<String> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
            .await
            .expect("open");
        sqlx::query_scalar::<_, Option<String>>(sqlx::AssertSqlSafe(q.to_string()))
            .fetch_all(&pool)
            .await
            .unwrap_or_else(|e| panic!("{q}: {e}"))
            .into_iter()
            .map(|v| v.unwrap_or_default())
            .collect()
    })
}

fn count(db: &Path, q: &str) -> i64 {
    sql_strings(db, &format!("select cast(({q}) as text)"))[0]
        .parse()
        .expect("count")
}

#[test]
fn demo_migrates_one_district_anonymized_and_rollback_empties_cert() {
    let sb = Sandbox::new();
    let out = crate::util::ran(
        sb.cmd(["demo", "--district", "1"])
            .env("WF_ANON_KEY", KEY)
            .output()
            .expect("demo"),
    );
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let run = out
        .stdout
        .lines()
        .find(|l| l.starts_with("mig-"))
        .expect("run id")
        .to_string();
    let demo = sb.data().join("demo");
    let (prod, cert) = (demo.join("prod"), demo.join("cert"));
    // Every district-1 row, and nothing else.
    for (store, tables) in [
        (
            "ids",
            vec!["districts", "schools", "staff", "students", "guardians"],
        ),
        ("hcp1", vec!["courses", "sections", "enrollments"]),
        ("hcp2", vec!["attendance", "grades"]),
        ("adb", vec!["assessments", "results"]),
    ] {
        let db = format!("{store}.db");
        for t in tables {
            let col = if t == "districts" {
                "id"
            } else {
                "district_id"
            };
            let want = count(
                &prod.join(&db),
                &format!("select count(*) from {t} where {col} = 1"),
            );
            let got = count(&cert.join(&db), &format!("select count(*) from {t}"));
            assert!(want > 0, "{store}.{t} has district-1 rows");
            assert_eq!(got, want, "{store}.{t}");
            let other = count(
                &cert.join(&db),
                &format!("select count(*) from {t} where {col} <> 1"),
            );
            assert_eq!(other, 0, "{store}.{t}: no other district");
        }
    }
    assert_eq!(
        count(&cert.join("ids.db"), "select count(*) from grade_levels"),
        13
    );
    // Cross-store references still join after anonymization.
    let ids_students: HashSet<String> = sql_strings(
        &cert.join("ids.db"),
        "select cast(id as text) from students",
    )
    .into_iter()
    .collect();
    for (db, q) in [
        (
            "hcp1.db",
            "select cast(student_id as text) from enrollments",
        ),
        ("hcp2.db", "select cast(student_id as text) from attendance"),
        ("adb.db", "select cast(student_id as text) from results"),
    ] {
        for s in sql_strings(&cert.join(db), q) {
            assert!(
                ids_students.contains(&s),
                "{db}: student {s} is in CERT ids"
            );
        }
    }
    // No original email or name survives, in the tables or the graph.
    let prod_emails = sql_strings(
        &prod.join("ids.db"),
        "select email from students where district_id = 1",
    );
    let cert_emails: HashSet<String> =
        sql_strings(&cert.join("ids.db"), "select email from students")
            .into_iter()
            .collect();
    let graph_props = sql_strings(&cert.join("sp.graph"), "select props from nodes").join("\n");
    for e in &prod_emails {
        assert!(!cert_emails.contains(e), "email {e} leaked");
        assert!(
            !graph_props.contains(e.as_str()),
            "email {e} leaked into the graph"
        );
    }
    let prod_last: HashSet<String> = sql_strings(
        &prod.join("ids.db"),
        "select last_name from students where district_id = 1",
    )
    .into_iter()
    .collect();
    let cert_last = sql_strings(&cert.join("ids.db"), "select last_name from students");
    let same = cert_last.iter().filter(|n| prod_last.contains(*n)).count();
    assert!(
        same * 3 < cert_last.len(),
        "most last names replaced ({same} of {})",
        cert_last.len()
    );
    // The same email anonymizes alike in ids and in the graph (one person, two stores).
    let pairs = sql_strings(
        &cert.join("ids.db"),
        "select cast(id as text) || ' ' || email from students",
    );
    let graph = sql_strings(&cert.join("sp.graph"), "select json_extract(props, '$.id') || ' ' || json_extract(props, '$.email') from nodes where label = 'Student'");
    let graph: HashSet<String> = graph.into_iter().collect();
    assert_eq!(pairs.len(), graph.len());
    for p in &pairs {
        assert!(graph.contains(p), "graph Student {p} matches ids.students");
    }
    // The graph holds the district's subgraph: students, their sections, guardians, teachers.
    let students = count(
        &prod.join("ids.db"),
        "select count(*) from students where district_id = 1",
    );
    assert_eq!(
        count(
            &cert.join("sp.graph"),
            "select count(*) from nodes where label = 'Student'"
        ),
        students
    );
    assert_eq!(
        count(
            &cert.join("sp.graph"),
            "select count(*) from rels where type = 'ENROLLED_IN'"
        ),
        count(&cert.join("hcp1.db"), "select count(*) from enrollments")
    );
    // Rollback empties CERT again.
    let rb = sb.run([
        "--config",
        demo.join("wf.toml").to_str().unwrap(),
        "rollback",
        &run,
        "--yes",
    ]);
    assert_eq!(rb.code, Some(0), "{}\n{}", rb.stdout, rb.stderr);
    for (db, t) in [
        ("ids.db", "students"),
        ("ids.db", "grade_levels"),
        ("hcp2.db", "attendance"),
    ] {
        assert_eq!(
            count(&cert.join(db), &format!("select count(*) from {t}")),
            0,
            "{db} {t}"
        );
    }
    assert_eq!(
        count(&cert.join("sp.graph"), "select count(*) from nodes"),
        0
    );
    assert_eq!(
        count(&cert.join("sp.graph"), "select count(*) from rels"),
        0
    );
}
