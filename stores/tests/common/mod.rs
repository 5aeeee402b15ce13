//! Test helpers: fresh PostgreSQL databases (on the server started by scripts/services.sh) and
//! SQLite files, loaded from the fixtures.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use wf_stores::config::{Config, Side, StoreConfig, StoreKind, VirtualFk};
use wf_stores::{connect, RelationalStore};

/// The admin URL of the test server; `None` (test skipped) outside CI when no server is set up.
pub fn pg_admin_url() -> Option<String> {
    match std::env::var("WF_TEST_PG_URL") {
        Ok(u) => Some(u),
        Err(_) if std::env::var("CI").is_ok() => {
            panic!("WF_TEST_PG_URL is not set in CI: run scripts/test.sh")
        }
        Err(_) => {
            eprintln!("skipped: WF_TEST_PG_URL is not set (scripts/test.sh starts PostgreSQL and sets it)");
            None
        }
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Drops the databases earlier test processes made (`wf_t<pid>_…` of a process that is gone), once
/// per process: they are kept after a run for a look, and go at the next.
async fn sweep(pool: &sqlx::PgPool) {
    if SWEPT.swap(true, Ordering::SeqCst) {
        return;
    }
    let names: Vec<String> =
        sqlx::query_scalar("select datname::text from pg_database where datname like 'wf\\_t%'")
            .fetch_all(pool)
            .await
            .unwrap_or_default();
    for name in names {
        let pid = name
            .strip_prefix("wf_t")
            .and_then(|r| r.split('_').next())
            .and_then(|p| p.parse::<u32>().ok());
        let gone = pid.is_some_and(|p| {
            p != std::process::id() && !std::path::Path::new(&format!("/proc/{p}")).exists()
        });
        if gone {
            let sql = format!("drop database if exists {name} with (force)");
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(pool).await;
        }
    }
}

/// Creates an empty database and returns its URL. Names are unique per process and call.
pub async fn fresh_pg_db(admin: &str, label: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let name = format!("wf_t{}_{n}_{label}", std::process::id());
    let pool = sqlx::PgPool::connect(admin)
        .await
        .expect("connect to the test server");
    sweep(&pool).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "drop database if exists {name}"
    )))
    .execute(&pool)
    .await
    .expect("drop");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database {name}")))
        .execute(&pool)
        .await
        .expect("create database");
    pool.close().await;
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(admin);
    format!("{base}/{name}")
}

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture")
}

/// Runs fixture files against a store opened as CERT (writable).
pub async fn load(cfg: &StoreConfig, files: &[&str]) {
    let store = connect(cfg, Side::Cert)
        .await
        .expect("connect for fixtures");
    for f in files {
        store
            .execute(&fixture(f))
            .await
            .unwrap_or_else(|e| panic!("{f}: {e}"));
    }
}

/// Runs fixture files against a store's PROD database, through a writable (CERT-side) handle.
pub async fn load_prod(cfg: &StoreConfig, files: &[&str]) {
    let mut writable = cfg.clone();
    writable.cert = cfg.prod.clone();
    load(&writable, files).await;
}

/// A two-store rostering config (`ids`, `hcp1`) with the virtual FK between them.
pub fn rostering_config(kind: StoreKind, urls: [(String, String); 2]) -> Config {
    let [(ids_prod, ids_cert), (hcp_prod, hcp_cert)] = urls;
    Config {
        district_column: "district_id".into(),
        stores: vec![
            StoreConfig {
                name: "ids".into(),
                kind,
                prod: ids_prod,
                cert: ids_cert,
                triggers: Default::default(),
            },
            StoreConfig {
                name: "hcp1".into(),
                kind,
                prod: hcp_prod,
                cert: hcp_cert,
                triggers: Default::default(),
            },
        ],
        virtual_fks: vec![VirtualFk {
            from: "hcp1.enrollments.student_id".into(),
            to: "ids.students.id".into(),
        }],
        reference_tables: vec!["ids.grade_levels".into()],
        follow_children: vec![],
        cycle_breaks: vec![],
        anonymization_rules: None,
        validation_rules: None,
        graph: None,
        snapshot: Default::default(),
        notify: Vec::new(),
        change_tracking: Vec::new(),
    }
}

/// PROD databases of the rostering fixture on PostgreSQL (CERT ones created empty).
pub async fn rostering_pg(admin: &str) -> Config {
    let mut urls = Vec::new();
    for store in ["ids", "hcp1"] {
        urls.push((
            fresh_pg_db(admin, &format!("{store}_prod")).await,
            fresh_pg_db(admin, &format!("{store}_cert")).await,
        ));
    }
    let cfg = rostering_config(StoreKind::Postgres, [urls[0].clone(), urls[1].clone()]);
    load_prod(&cfg.stores[0], &["ids_schema_pg.sql", "ids_data.sql"]).await;
    load_prod(&cfg.stores[1], &["hcp1_schema.sql", "hcp1_data.sql"]).await;
    cfg
}

/// PROD files of the rostering fixture on SQLite, in `dir`.
pub async fn rostering_sqlite(dir: &std::path::Path) -> Config {
    let url = |n: &str| format!("sqlite://{}", dir.join(n).display());
    let cfg = rostering_config(
        StoreKind::Sqlite,
        [
            (url("ids_prod.db"), url("ids_cert.db")),
            (url("hcp1_prod.db"), url("hcp1_cert.db")),
        ],
    );
    load_prod(&cfg.stores[0], &["ids_schema_sqlite.sql", "ids_data.sql"]).await;
    load_prod(&cfg.stores[1], &["hcp1_schema.sql", "hcp1_data.sql"]).await;
    cfg
}

pub async fn prod(cfg: &Config, store: usize) -> Box<dyn RelationalStore> {
    connect(&cfg.stores[store], Side::Prod)
        .await
        .expect("connect PROD")
}

/// The Bolt test server (ArcadeDB started by scripts/services.sh): address, user, password, HTTP
/// base. `None` (test skipped) outside CI when no server is set up.
pub fn bolt_env() -> Option<(String, String, String, String)> {
    let get = |k: &str| std::env::var(k).ok();
    match (
        get("WF_TEST_BOLT_URL"),
        get("WF_TEST_BOLT_USER"),
        get("WF_TEST_BOLT_PASSWORD"),
        get("WF_TEST_ARCADE_HTTP"),
    ) {
        (Some(u), Some(n), Some(p), Some(h)) => Some((u, n, p, h)),
        _ if std::env::var("CI").is_ok() => {
            panic!("WF_TEST_BOLT_URL is not set in CI: run scripts/test.sh")
        }
        _ => {
            eprintln!("skipped: WF_TEST_BOLT_URL is not set (scripts/test.sh starts ArcadeDB and sets it)");
            None
        }
    }
}

/// Runs one Cypher command in database `db` of the Bolt test server, over its HTTP API (for
/// shapes wf itself never writes, such as a node without its key).
#[allow(dead_code)]
pub fn graph_command(db: &str, cypher: &str) {
    let (_, user, pw, http) = bolt_env().expect("bolt test server");
    let body = serde_json::json!({"language": "cypher", "command": cypher}).to_string();
    http_post(&http, &user, &pw, &format!("/api/v1/command/{db}"), &body);
}

/// POSTs `body` to the test server's HTTP API; the credentials go to curl on stdin.
fn http_post(http: &str, user: &str, pw: &str, path: &str, body: &str) {
    let mut child = std::process::Command::new("curl")
        .args(["-fsS", "-K", "-", "-X", "POST"])
        .args(["-H", "Content-Type: application/json", "-d"])
        .arg(body)
        .arg(format!("{http}{path}"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("curl");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "user = \"{user}:{pw}\"").expect("credentials");
    }
    let out = child.wait_with_output().expect("curl");
    assert!(
        out.status.success(),
        "POST {path} {body}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Creates a fresh graph database on the Bolt test server (over its HTTP API) and returns its name.
pub fn fresh_graph_db(http: &str, user: &str, pw: &str, label: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let name = format!("wf_t{}_{n}_{label}", std::process::id());
    let body = format!("{{\"command\":\"create database {name}\"}}");
    http_post(http, user, pw, "/api/v1/server", &body);
    name
}

/// A write transaction on `side` of `cfg`'s graph, whatever its kind.
pub async fn graph_write(
    cfg: &wf_stores::graph::GraphConfig,
    side: Side,
) -> Box<dyn wf_stores::graph::GraphWrite> {
    use wf_stores::graph::{bolt::BoltWrite, embedded::EmbeddedWrite, GraphKind};
    match cfg.kind {
        GraphKind::Bolt => Box::new(BoltWrite::open_side(cfg, side).await.unwrap()),
        GraphKind::Embedded => Box::new(EmbeddedWrite::open_side(cfg, side).await.unwrap()),
    }
}

/// Node counts by label and relationship counts by type on `side` of `cfg`'s graph.
pub async fn graph_counts(
    cfg: &wf_stores::graph::GraphConfig,
    side: Side,
) -> (Vec<(String, u64)>, Vec<(String, u64)>) {
    let mut r = wf_stores::graph::open_read(cfg, side).await.unwrap();
    let out = (
        r.label_counts().await.unwrap(),
        r.rel_type_counts().await.unwrap(),
    );
    r.finish().await.unwrap();
    out
}

/// `(name, count)` pairs as owned strings.
pub fn owned(v: &[(&str, u64)]) -> Vec<(String, u64)> {
    v.iter().map(|(a, b)| (a.to_string(), *b)).collect()
}

/// A graph store `sp` on `prod` and `cert`, keyed by `id`, seeded by `district_id` on
/// `district_labels`, following nothing (tests add what they follow).
pub fn graph_config(
    kind: wf_stores::graph::GraphKind,
    prod: String,
    cert: String,
    district_labels: &[&str],
) -> wf_stores::graph::GraphConfig {
    wf_stores::graph::GraphConfig {
        name: "sp".into(),
        kind,
        prod,
        cert,
        user: None,
        password: None,
        prod_database: None,
        cert_database: None,
        district_property: "district_id".into(),
        district_labels: district_labels.iter().map(|l| l.to_string()).collect(),
        key_property: "id".into(),
        keys: Default::default(),
        maps: Default::default(),
        follow: vec![],
        max_depth: None,
        links: vec![],
        without_key: Default::default(),
    }
}

/// `cfg` moved onto the test ArcadeDB over Bolt, with a fresh PROD and CERT database each;
/// `None` (the test skipped) only outside CI without the server (`bolt_env` panics in CI).
pub fn on_bolt(mut cfg: wf_stores::graph::GraphConfig) -> Option<wf_stores::graph::GraphConfig> {
    let (url, user, pw, http) = bolt_env()?;
    cfg.prod_database = Some(fresh_graph_db(&http, &user, &pw, "prod"));
    cfg.cert_database = Some(fresh_graph_db(&http, &user, &pw, "cert"));
    std::env::set_var("WF_T_BOLT_PW", &pw);
    cfg.kind = wf_stores::graph::GraphKind::Bolt;
    cfg.prod = url.clone();
    cfg.cert = url;
    cfg.user = Some(user);
    cfg.password = Some("env:WF_T_BOLT_PW".into());
    Some(cfg)
}
