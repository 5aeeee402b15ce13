//! Load into CERT and roll back, on real PostgreSQL and on SQLite, with pre-existing CERT rows:
//! every FK resolves after the load, a second execution is a no-op (marker), a conflicting load
//! changes nothing and names table, constraint and key, rollback restores CERT exactly.

mod common;

use std::collections::BTreeMap;
use wf_stores::analysis::{add_virtual_fks, analyze};
use wf_stores::config::{Config, Side, StoreKind};
use wf_stores::connect::{load_store, rollback_store};
use wf_stores::extract::extract_district;
use wf_stores::load::{plan_loads, LoadOptions, Strategy};
use wf_stores::{connect, StoreError};

async fn counts(cfg: &Config) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for s in &cfg.stores {
        let schema = connect(s, Side::Cert)
            .await
            .expect("cert")
            .introspect()
            .await
            .expect("introspect");
        for t in schema.tables {
            out.insert(t.id(), t.row_count);
        }
    }
    out
}

async fn scalar(cfg: &Config, store: usize, sql: &str) -> Vec<Option<i64>> {
    let s = &cfg.stores[store];
    let url = s.url(Side::Cert).expect("url");
    match s.kind {
        StoreKind::Postgres => {
            let pool = sqlx::PgPool::connect(&url).await.expect("pg");
            let sql = format!("select v::int8 from ({sql}) q(v)");
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_all(&pool)
                .await
                .expect("query")
        }
        StoreKind::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&url).await.expect("sqlite");
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
                .fetch_all(&pool)
                .await
                .expect("query")
        }
    }
}

async fn scenario(mut cfg: Config, ids_schema: &str) {
    cfg.follow_children = [
        "ids.student_guardians.student_id",
        "ids.terms.school_id",
        "ids.report_cards.student_id",
        "hcp1.enrollments.section_id",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    common::load(&cfg.stores[0], &[ids_schema, "cert_seed_ids.sql"]).await;
    common::load(&cfg.stores[1], &["hcp1_schema.sql", "cert_seed_hcp1.sql"]).await;
    let before = counts(&cfg).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let ex = extract_district(&cfg, "1", &dir.path().join("anon"), 1000)
        .await
        .expect("extract");
    let mut schemas = ex.schemas.clone();
    add_virtual_fks(&mut schemas, &cfg).expect("virtual");
    let analysis = analyze(&schemas, &[]);
    let manifests = dir.path().join("loads");
    let jobs = plan_loads(
        &cfg,
        &ex.schemas,
        &analysis,
        &ex.files,
        &LoadOptions {
            run_key: "run1/g0/load".into(),
            manifest_dir: manifests.clone(),
            strategy: Strategy::Insert,
            dry_run: false,
        },
    );
    assert_eq!(jobs.len(), 2);

    // A dry run changes nothing.
    for job in &jobs {
        let mut dry = job.clone();
        dry.dry_run = true;
        dry.manifest_dir = dir.path().join("dry");
        let r = load_store(cfg.store(&job.store).expect("store"), &dry)
            .await
            .expect("dry run");
        assert!(!r.already_loaded);
    }
    assert_eq!(
        counts(&cfg).await,
        before,
        "a dry run leaves CERT as it was"
    );

    let mut first = Vec::new();
    for job in &jobs {
        let r = load_store(cfg.store(&job.store).expect("store"), job)
            .await
            .expect("load");
        assert!(!r.already_loaded);
        first.push(r.tables.clone());
        if job.store == "ids" {
            let gl = r
                .tables
                .iter()
                .find(|t| t.table == "ids.grade_levels")
                .expect("grade_levels");
            assert_eq!(
                (gl.rows_in_file, gl.inserted),
                (3, 2),
                "the code already in CERT is kept"
            );
        }
    }
    let after = counts(&cfg).await;
    for f in &ex.files {
        let pre = before.get(&f.table).copied().unwrap_or(0);
        let expected = if f.table == "ids.grade_levels" {
            3
        } else {
            pre + f.file.rows
        };
        assert_eq!(after[&f.table], expected, "{}", f.table);
    }
    // The cycle's break columns were set after the load; every FK resolves (virtual ones too).
    assert_eq!(
        scalar(&cfg, 0, "select principal_id from schools where id = 10").await,
        [Some(100)]
    );
    assert_eq!(
        scalar(&cfg, 0, "select manager_id from staff where id = 101").await,
        [Some(100)]
    );
    let students = scalar(&cfg, 0, "select id from students").await;
    for s in scalar(&cfg, 1, "select student_id from enrollments").await {
        assert!(
            students.contains(&s),
            "enrollment of student {s:?} has no student in CERT"
        );
    }
    assert_eq!(
        scalar(&cfg, 0, "select count(*) from districts where id = 2").await,
        [Some(0)]
    );

    // Executed again (e.g. after a crash right after commit): the marker makes it a no-op.
    for (job, tables) in jobs.iter().zip(&first) {
        let r = load_store(cfg.store(&job.store).expect("store"), job)
            .await
            .expect("reload");
        assert!(r.already_loaded);
        // What it loaded then, from its marker rows (the report of a resumed run shows it).
        let inserted = |t: &[wf_stores::load::TableReport]| -> Vec<(String, u64)> {
            t.iter().map(|t| (t.table.clone(), t.inserted)).collect()
        };
        assert_eq!(inserted(&r.tables), inserted(tables));
    }
    assert_eq!(counts(&cfg).await, after);

    // Another run inserting the same rows fails whole, naming table, constraint and key.
    let other = plan_loads(
        &cfg,
        &ex.schemas,
        &analysis,
        &ex.files,
        &LoadOptions {
            run_key: "run2/g0/load".into(),
            manifest_dir: dir.path().join("l2"),
            strategy: Strategy::Insert,
            dry_run: false,
        },
    );
    let e = load_store(cfg.store("ids").expect("ids"), &other[0])
        .await
        .expect_err("conflict");
    assert!(matches!(e, StoreError::Constraint { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("store ids, table districts")
            && text.contains("key (")
            && text.contains("(1)"),
        "{text}"
    );
    assert_eq!(
        counts(&cfg).await,
        after,
        "a failed load leaves CERT as it was"
    );
    // The same failure while a staged file no longer matches its SHA-256 (its reader never got
    // to the end, where it is checked): the damaged file is the error, so its producer runs again.
    let last = other[0].tables.last().expect("a table").file.clone();
    let clean = std::fs::read(&last).expect("staged file");
    let mut bad = clean.clone();
    bad.push(0);
    std::fs::write(&last, &bad).expect("damage");
    let e = load_store(cfg.store("ids").expect("ids"), &other[0])
        .await
        .expect_err("conflict on a damaged file");
    std::fs::write(&last, &clean).expect("restore");
    assert!(
        matches!(&e, StoreError::Corrupt { path, .. } if *path == last),
        "{e}"
    );
    assert_eq!(counts(&cfg).await, after);

    // Rollback deletes exactly what run1 inserted, and keeps CERT's own rows; the lookup indexes
    // a PostgreSQL rollback makes for unindexed foreign keys are gone with it.
    let indexes = match cfg.stores[0].kind {
        StoreKind::Postgres => "select count(*) from pg_indexes where schemaname not in ('pg_catalog', 'information_schema')",
        StoreKind::Sqlite => "select count(*) from sqlite_master where type = 'index'",
    };
    let indexes_before = scalar(&cfg, 0, indexes).await;
    for job in jobs.iter().rev() {
        let deleted = rollback_store(cfg.store(&job.store).expect("store"), job)
            .await
            .expect("rollback");
        assert!(!deleted.is_empty());
    }
    assert_eq!(counts(&cfg).await, before);
    assert_eq!(
        scalar(&cfg, 0, indexes).await,
        indexes_before,
        "CERT's schema is unchanged"
    );
    assert_eq!(
        scalar(&cfg, 0, "select principal_id from schools where id = 90").await,
        [Some(900)]
    );
    // A second rollback finds no committed marker and does nothing.
    let again = rollback_store(cfg.store("ids").expect("ids"), &jobs[0])
        .await
        .expect("rollback again");
    assert!(again.is_empty());
}

#[tokio::test]
async fn postgres_load_markers_conflicts_and_rollback() {
    let Some(admin) = common::pg_admin_url() else {
        return;
    };
    let cfg = common::rostering_pg(&admin).await;
    scenario(cfg, "ids_schema_pg.sql").await;
}

#[tokio::test]
async fn sqlite_load_markers_conflicts_and_rollback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = common::rostering_sqlite(dir.path()).await;
    scenario(cfg, "ids_schema_sqlite.sql").await;
}

/// A cycle whose FKs are NOT NULL but DEFERRABLE: no column can be loaded NULL, so the load relies
/// on deferring the constraints to commit.
#[tokio::test]
async fn postgres_deferrable_cycle_without_nullable_columns_loads() {
    let Some(admin) = common::pg_admin_url() else {
        return;
    };
    let ddl = "create table a (id int primary key, district_id int not null, b_id int not null);
        create table b (id int primary key, a_id int not null references a(id) deferrable initially immediate);
        alter table a add constraint a_b_fk foreign key (b_id) references b(id) deferrable initially immediate;";
    let prod = common::fresh_pg_db(&admin, "defer_prod").await;
    let cert = common::fresh_pg_db(&admin, "defer_cert").await;
    let store = wf_stores::StoreConfig {
        name: "s".into(),
        kind: StoreKind::Postgres,
        prod: prod.clone(),
        cert: cert.clone(),
        triggers: Default::default(),
    };
    let writer = wf_stores::StoreConfig {
        cert: prod.clone(),
        ..store.clone()
    };
    let db = connect(&writer, Side::Cert).await.expect("prod");
    db.execute(ddl).await.expect("ddl");
    db.execute("begin; set constraints all deferred; insert into a values (1, 7, 10); insert into b values (10, 1); commit;").await.expect("rows");
    connect(&store, Side::Cert)
        .await
        .expect("cert")
        .execute(ddl)
        .await
        .expect("cert ddl");
    let cfg = Config {
        district_column: "district_id".into(),
        stores: vec![store.clone()],
        virtual_fks: vec![],
        reference_tables: vec![],
        follow_children: vec![],
        cycle_breaks: vec![],
        anonymization_rules: None,
        validation_rules: None,
        graph: None,
        snapshot: Default::default(),
        notify: Vec::new(),
        change_tracking: Vec::new(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let ex = extract_district(&cfg, "7", dir.path(), 100)
        .await
        .expect("extract");
    let analysis = analyze(&ex.schemas, &[]);
    // No virtual and no nullable FK: the cycle breaks at a DEFERRABLE one, checked at commit.
    assert!(
        analysis
            .cycles
            .iter()
            .any(|c| c.break_fk.as_ref().is_some_and(|e| e.deferrable)
                && c.reason.contains("DEFERRABLE")),
        "{:?}",
        analysis.cycles
    );
    let opts = LoadOptions {
        run_key: "d/g0/load".into(),
        manifest_dir: dir.path().join("m"),
        strategy: Strategy::Insert,
        dry_run: false,
    };
    let jobs = plan_loads(&cfg, &ex.schemas, &analysis, &ex.files, &opts);
    let report = load_store(&store, &jobs[0])
        .await
        .expect("deferred constraints let the cycle load");
    assert_eq!(report.tables.iter().map(|t| t.inserted).sum::<u64>(), 2);
}
