//! Discovery and dependency analysis on the rostering fixture, on real PostgreSQL and on SQLite.

mod common;

use wf_stores::analysis::{add_virtual_fks, analyze, to_dot, Analysis};
use wf_stores::config::Config;
use wf_stores::schema::StoreSchema;

async fn discover(cfg: &Config) -> (Vec<StoreSchema>, Analysis) {
    let mut schemas = Vec::new();
    for i in 0..cfg.stores.len() {
        schemas.push(
            common::prod(cfg, i)
                .await
                .introspect()
                .await
                .expect("introspect"),
        );
    }
    add_virtual_fks(&mut schemas, cfg).expect("virtual fks");
    let a = analyze(&schemas, &[]);
    (schemas, a)
}

fn table<'a>(schemas: &'a [StoreSchema], id: &str) -> &'a wf_stores::schema::Table {
    schemas
        .iter()
        .flat_map(|s| &s.tables)
        .find(|t| t.id() == id)
        .unwrap_or_else(|| panic!("no table {id}"))
}

fn pos(a: &Analysis, id: &str) -> usize {
    a.order
        .iter()
        .position(|t| t == id)
        .unwrap_or_else(|| panic!("{id} not in order {:?}", a.order))
}

/// What both engines must agree on.
fn check(schemas: &[StoreSchema], a: &Analysis) {
    let students = table(schemas, "ids.students");
    assert_eq!(students.primary_key, ["id"]);
    assert_eq!(students.row_count, 4);
    assert!(
        students.uniques.iter().any(|u| u.columns == ["email"]),
        "{:?}",
        students.uniques
    );
    assert!(!students.column("id").expect("id").nullable);
    assert!(students.column("email").expect("email").nullable);
    let sg = table(schemas, "ids.student_guardians");
    assert_eq!(sg.primary_key, ["student_id", "guardian_id"]);
    let rc = table(schemas, "ids.report_cards");
    let composite = rc
        .foreign_keys
        .iter()
        .find(|f| f.ref_table == "ids.terms")
        .expect("composite fk");
    assert_eq!(composite.columns, ["school_id", "term_no"]);
    assert_eq!(composite.ref_columns, ["school_id", "term_no"]);
    let enr = table(schemas, "hcp1.enrollments");
    assert!(enr
        .foreign_keys
        .iter()
        .any(|f| f.is_virtual && f.ref_table == "ids.students"));
    // Cycles: the self reference and schools <-> staff, each broken at a nullable column.
    let breaks: Vec<(String, Vec<String>)> = a
        .cycles
        .iter()
        .map(|c| {
            let e = c
                .break_fk
                .as_ref()
                .expect("every fixture cycle has a nullable FK");
            (e.child.clone(), e.columns.clone())
        })
        .collect();
    assert!(
        breaks.contains(&("ids.staff".into(), vec!["manager_id".into()])),
        "{breaks:?}"
    );
    assert!(
        breaks.contains(&("ids.schools".into(), vec!["principal_id".into()])),
        "{breaks:?}"
    );
    assert!(a.cycles.iter().all(|c| c.reason.contains("nullable")));
    // Parents before children, across stores too.
    assert_eq!(a.order.len(), 13);
    assert!(pos(a, "hcp1.rooms") < pos(a, "hcp1.attendance"));
    assert!(pos(a, "ids.districts") < pos(a, "ids.schools"));
    assert!(pos(a, "ids.schools") < pos(a, "ids.staff"));
    assert!(pos(a, "ids.terms") < pos(a, "ids.report_cards"));
    assert!(pos(a, "ids.grade_levels") < pos(a, "ids.students"));
    assert!(pos(a, "ids.students") < pos(a, "hcp1.enrollments"));
    assert!(pos(a, "hcp1.sections") < pos(a, "hcp1.enrollments"));
    let dot = to_dot(a);
    assert!(
        dot.contains(
            "\"hcp1.enrollments\" -> \"ids.students\" [label=\"student_id\", style=dashed]"
        ),
        "{dot}"
    );
    assert!(dot.contains("color=red"));
}

#[tokio::test]
async fn postgres_discovery_finds_keys_cycles_and_order() {
    let Some(admin) = common::pg_admin_url() else {
        return;
    };
    let cfg = common::rostering_pg(&admin).await;
    let (schemas, a) = discover(&cfg).await;
    check(&schemas, &a);
    let staff = table(&schemas, "ids.staff");
    assert_eq!(staff.column("email").expect("email").data_type, "text");
    assert_eq!(staff.column("id").expect("id").data_type, "integer");
}

#[tokio::test]
async fn sqlite_discovery_finds_keys_cycles_and_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = common::rostering_sqlite(dir.path()).await;
    let (schemas, a) = discover(&cfg).await;
    check(&schemas, &a);
}

#[tokio::test]
async fn prod_connections_refuse_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = common::rostering_sqlite(dir.path()).await;
    let e = common::prod(&cfg, 0)
        .await
        .execute("insert into districts values (3, 'X')")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("readonly"), "{e}");
    let Some(admin) = common::pg_admin_url() else {
        return;
    };
    let cfg = common::rostering_pg(&admin).await;
    let e = common::prod(&cfg, 0)
        .await
        .execute("insert into districts values (3, 'X')")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("read-only transaction"), "{e}");
}

#[tokio::test]
async fn unreachable_server_is_a_one_line_error_naming_the_store() {
    let mut cfg = common::rostering_config(
        wf_stores::StoreKind::Postgres,
        [
            (
                "postgres://wf:secret@127.0.0.1:1/x".into(),
                "postgres://wf@127.0.0.1:1/y".into(),
            ),
            (
                "postgres://a@127.0.0.1:1/z".into(),
                "postgres://a@127.0.0.1:1/w".into(),
            ),
        ],
    );
    cfg.stores.truncate(1);
    let e = wf_stores::connect(&cfg.stores[0], wf_stores::Side::Prod)
        .await
        .err()
        .expect("must fail")
        .to_string();
    // Refused is transient (a restart): the runner retries it; the message still names all.
    assert!(
        e.starts_with("store ids: cannot connect to postgres://wf:***@127.0.0.1:1/x (PROD)")
            && e.contains("transient"),
        "{e}"
    );
    assert!(!e.contains("secret") && !e.contains('\n'), "{e}");
}
