//! Extraction of district 1 from the rostering fixture, on real PostgreSQL and on SQLite: the subset
//! is referentially complete, has exactly the expected rows, and holds nothing of district 2, both
//! with key sets in memory and with every key set and queue spilled to disk.

mod common;

use arrow_array::{Array, Int64Array};
use std::collections::BTreeMap;
use wf_stores::config::Config;
use wf_stores::extract::{extract_district, extract_district_with_limit};
use wf_stores::staging::open;

const FOLLOW: [&str; 4] = [
    "ids.student_guardians.student_id",
    "ids.terms.school_id",
    "ids.report_cards.student_id",
    "hcp1.enrollments.section_id",
];

const EXPECTED: [(&str, u64); 13] = [
    ("hcp1.attendance", 3),
    ("hcp1.enrollments", 3),
    ("hcp1.rooms", 1),
    ("hcp1.sections", 2),
    ("ids.districts", 1),
    ("ids.grade_levels", 3),
    ("ids.guardians", 2),
    ("ids.report_cards", 2),
    ("ids.schools", 2),
    ("ids.staff", 3),
    ("ids.student_guardians", 3),
    ("ids.students", 3),
    ("ids.terms", 3),
];

/// Ids of district 2's rows in the fixture, per table and integer column.
const FOREIGN: [(&str, &str, i64); 9] = [
    ("hcp1.attendance", "id", 803),
    ("hcp1.rooms", "id", 2),
    ("ids.schools", "id", 20),
    ("ids.staff", "id", 200),
    ("ids.students", "id", 2000),
    ("ids.guardians", "id", 600),
    ("hcp1.sections", "id", 40),
    ("hcp1.enrollments", "id", 903),
    ("ids.report_cards", "id", 7002),
];

fn int_column(path: &std::path::Path, name: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for b in open(path).expect("open") {
        let b = b.expect("batch");
        let col = b.column_by_name(name).expect("column");
        let a = col
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("int column");
        out.extend((0..a.len()).filter(|&i| !a.is_null(i)).map(|i| a.value(i)));
    }
    out
}

async fn check(mut cfg: Config, key_limit: usize) {
    cfg.follow_children = FOLLOW.iter().map(|s| s.to_string()).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let ex = extract_district_with_limit(&cfg, "1", dir.path(), 2, key_limit)
        .await
        .expect("extract");
    let counts: BTreeMap<&str, u64> = ex
        .files
        .iter()
        .map(|f| (f.table.as_str(), f.file.rows))
        .collect();
    assert_eq!(counts, EXPECTED.into_iter().collect::<BTreeMap<_, _>>());
    for f in &ex.files {
        assert_eq!(
            f.file.sha256,
            wf_engine::digest::file(&f.file.path, None).expect("digest")
        );
        assert!(f.file.bytes > 0);
    }
    for (table, col, id) in FOREIGN {
        let path = dir.path().join(format!("{table}.arrow"));
        assert!(
            !int_column(&path, col).contains(&id),
            "{table} holds district 2's row {id}"
        );
    }
    // Every district column present says district 1.
    for t in [
        "ids.schools",
        "ids.staff",
        "ids.students",
        "ids.guardians",
        "hcp1.sections",
    ] {
        let d = int_column(&dir.path().join(format!("{t}.arrow")), "district_id");
        assert!(d.iter().all(|&x| x == 1), "{t}: {d:?}");
    }
    let e = extract_district(&cfg, "99", dir.path(), 2)
        .await
        .expect_err("unknown district");
    assert!(e.to_string().contains("district 99 not found"), "{e}");
}

#[tokio::test]
async fn postgres_district_subset_is_complete_and_exact() {
    let Some(admin) = common::pg_admin_url() else {
        return;
    };
    let cfg = common::rostering_pg(&admin).await;
    check(cfg.clone(), 1_000_000).await;
    // Every key set and queue spilled to disk after one entry: the same subset.
    check(cfg, 1).await;
}

#[tokio::test]
async fn sqlite_district_subset_is_complete_and_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = common::rostering_sqlite(dir.path()).await;
    check(cfg.clone(), 1_000_000).await;
    // Every key set and queue spilled to disk after one entry: the same subset.
    check(cfg, 1).await;
}

/// A snapshot wf drops ends its session with a Terminate message: a socket closed inside the read
/// transaction is logged by PROD's server as "unexpected EOF on client connection with an open
/// transaction" and counted in `pg_stat_database.sessions_abandoned`, once per snapshot.
#[tokio::test]
async fn a_dropped_snapshot_ends_its_session_cleanly() {
    let Some(admin) = common::pg_admin_url() else {
        return;
    };
    let cfg = common::rostering_pg(&admin).await;
    let name = cfg.stores[0].prod.rsplit('/').next().unwrap().to_string();
    let stats = sqlx::PgPool::connect(&admin).await.unwrap();
    let abandoned = || async {
        let mut c = stats.acquire().await.unwrap();
        sqlx::query("select pg_stat_clear_snapshot()")
            .execute(&mut *c)
            .await
            .unwrap();
        let n: i64 = sqlx::query_scalar(
            "select sessions_abandoned from pg_stat_database where datname = $1",
        )
        .bind(&name)
        .fetch_one(&mut *c)
        .await
        .unwrap();
        n
    };
    let before = abandoned().await;
    let db = common::prod(&cfg, 0).await;
    for _ in 0..3 {
        let snap = db.snapshot().await.unwrap();
        drop(snap);
    }
    drop(db);
    // The sessions end in tasks of their own; the server counts them as they go.
    let mut ended = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let live: i64 =
            sqlx::query_scalar("select count(*) from pg_stat_activity where datname = $1")
                .bind(&name)
                .fetch_one(&stats)
                .await
                .unwrap();
        if live == 0 {
            ended = true;
            break;
        }
    }
    assert!(ended, "the snapshots' sessions end");
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(
        abandoned().await,
        before,
        "no session ended by a dropped socket"
    );
}
