//! The CERT guard on the real PostgreSQL server: a CERT URL that reaches a PROD database through
//! any alias (host spelling, extra URL parameters, another role, a unix socket) is refused before
//! any write, for every load strategy; an unenrolled CERT is refused; a database enrolled as CERT
//! is refused as PROD. PROD's row counts and checksums are compared before and after every case.

use crate::migrate::{query, setup_on, Backend, Dbs, KEY, RULES};
use crate::util::Sandbox;
use std::collections::BTreeMap;

/// The admin URL of the test server; in CI its absence is a failure, never a skip.
fn admin() -> Option<String> {
    match std::env::var("WF_TEST_PG_URL") {
        Ok(u) => Some(u),
        Err(_) => {
            assert!(
                std::env::var("CI").is_err(),
                "WF_TEST_PG_URL is not set in CI: run scripts/test.sh"
            );
            eprintln!("skipped: WF_TEST_PG_URL is not set (scripts/test.sh sets it)");
            None
        }
    }
}

/// Row count and an order-independent md5 of every table of PROD database `db`.
fn fingerprint(dbs: &Dbs, db: &str) -> BTreeMap<String, String> {
    let tables = query(
        dbs,
        db,
        "select tablename from pg_tables where schemaname = 'public' and tablename not like 'wf\\_%' order by 1",
    );
    tables
        .into_iter()
        .map(|t| {
            let q = format!(
                "select count(*)::text || ':' || coalesce(md5(string_agg(x::text, '|' order by x::text)), '') from {t} x"
            );
            let v = query(dbs, db, &q).join("");
            (t, v)
        })
        .collect()
}

fn prod_state(dbs: &Dbs) -> Vec<BTreeMap<String, String>> {
    vec![fingerprint(dbs, "ids_prod"), fingerprint(dbs, "hcp1_prod")]
}

/// wf.toml with the ids store's CERT URL replaced by `ids_cert` (and PROD by `ids_prod`).
fn rewrite(config: &std::path::Path, dbs: &Dbs, ids_prod: &str, ids_cert: &str) -> String {
    let text = std::fs::read_to_string(config).expect("wf.toml");
    let text = text
        .replace(
            &format!("cert = \"{}\"", dbs.urls["ids_cert"]),
            &format!("cert = \"{ids_cert}\""),
        )
        .replace(
            &format!("prod = \"{}\"", dbs.urls["ids_prod"]),
            &format!("prod = \"{ids_prod}\""),
        );
    let path = config.with_file_name(format!("wf-{}.toml", rand::random::<u32>()));
    std::fs::write(&path, text).expect("write alias config");
    path.to_string_lossy().into_owned()
}

fn migrate(sb: &Sandbox, cfg: &str, strategy: &str) -> crate::util::Ran {
    crate::util::ran(
        sb.cmd([
            "--config",
            cfg,
            "run",
            "migrate",
            "--district",
            "1",
            "--strategy",
            strategy,
        ])
        .env("WF_ANON_KEY", KEY)
        .output()
        .expect("run"),
    )
}

/// The aliases of one PostgreSQL database that a text comparison of URLs does not see.
fn aliases(url: &str) -> Vec<(&'static str, String)> {
    let (base, db) = url.rsplit_once('/').expect("db in url");
    let port = base.rsplit_once(':').map(|(_, p)| p).unwrap_or("5432");
    let role = "wf_guard_alias";
    let mut out = vec![
        ("host spelling", url.replace("127.0.0.1", "localhost")),
        (
            "extra parameters",
            format!("{url}?sslmode=disable&application_name=alias"),
        ),
        (
            "another role",
            url.replace("postgres@", &format!("{role}@")),
        ),
    ];
    if let Ok(dir) = std::env::var("WF_TEST_PG_SOCKET_DIR") {
        out.push((
            "unix socket",
            format!("postgres://postgres@localhost/{db}?host={dir}&port={port}"),
        ));
    } else {
        assert!(
            std::env::var("CI").is_err(),
            "WF_TEST_PG_SOCKET_DIR is not set in CI"
        );
    }
    out
}

fn ensure_role(admin: &str) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(admin).await.expect("admin");
        // Several test binaries may race to create it; a duplicate is fine.
        let _ = sqlx::raw_sql(
            "do $$ begin if not exists (select 1 from pg_roles where rolname = 'wf_guard_alias') \
             then create role wf_guard_alias login superuser; end if; end $$",
        )
        .execute(&pool)
        .await;
    });
}

#[test]
fn cert_equal_to_prod_through_any_alias_is_refused_before_any_write() {
    let Some(admin) = admin() else { return };
    ensure_role(&admin);
    let sb = Sandbox::new();
    let (config, dbs) = setup_on(&sb, &Backend::Postgres(admin), RULES);
    let before = prod_state(&dbs);
    let hcp1_cert = fingerprint(&dbs, "hcp1_cert");
    for (name, alias) in aliases(&dbs.urls["ids_prod"]) {
        let cfg = rewrite(&config, &dbs, &dbs.urls["ids_prod"], &alias);
        let enroll = sb.run(["--config", &cfg, "cert", "enroll"]);
        assert_eq!(enroll.code, Some(1), "{name}: enroll {}", enroll.stderr);
        assert!(
            enroll.stderr.contains("same database"),
            "{name}: {}",
            enroll.stderr
        );
        for strategy in ["insert", "upsert", "skip-existing"] {
            let r = migrate(&sb, &cfg, strategy);
            assert_ne!(r.code, Some(0), "{name} / {strategy}: migrate passed");
            let said = format!("{}{}", r.stdout, r.stderr);
            assert!(
                said.contains("same database") && said.contains("never writes into PROD"),
                "{name} / {strategy}: {said}"
            );
            assert_eq!(
                prod_state(&dbs),
                before,
                "{name} / {strategy}: PROD changed"
            );
            assert_eq!(
                fingerprint(&dbs, "hcp1_cert"),
                hcp1_cert,
                "{name} / {strategy}: another CERT store was written"
            );
        }
    }
}

#[test]
fn unenrolled_cert_and_prod_enrolled_as_cert_are_refused() {
    let Some(admin) = admin() else { return };
    let sb = Sandbox::new();
    let (config, dbs) = setup_on(&sb, &Backend::Postgres(admin), RULES);
    let cfg = config.to_string_lossy().into_owned();
    let before = prod_state(&dbs);
    let cert_before = fingerprint(&dbs, "ids_cert");

    // A database enrolled as CERT named as PROD (the two URLs swapped) is refused as PROD.
    let swapped = rewrite(
        &config,
        &dbs,
        &dbs.urls["ids_cert"],
        &format!("{}?application_name=x", dbs.urls["ids_prod"]),
    );
    let r = migrate(&sb, &swapped, "upsert");
    assert_ne!(r.code, Some(0));
    assert!(
        r.stderr.contains("enrolled as a CERT database") && r.stderr.contains("refuses it as PROD"),
        "{}",
        r.stderr
    );

    // An unenrolled CERT: refused with the command to run, nothing written anywhere.
    exec_admin(&dbs.urls["ids_cert"], "drop table wf_enrollment");
    let r = migrate(&sb, &cfg, "insert");
    assert_ne!(r.code, Some(0));
    assert!(
        r.stderr.contains("is not enrolled as a CERT database")
            && r.stderr.contains("wf cert enroll"),
        "{}",
        r.stderr
    );
    assert_eq!(prod_state(&dbs), before);
    assert_eq!(fingerprint(&dbs, "ids_cert"), cert_before);
    let check = sb.run(["--config", &cfg, "cert", "check"]);
    assert_eq!(check.code, Some(1), "{}", check.stderr);

    // Enrolled again, the same run configuration migrates.
    let enroll = sb.run(["--config", &cfg, "cert", "enroll"]);
    assert_eq!(enroll.code, Some(0), "{}", enroll.stderr);
    assert!(
        enroll.stdout.contains("enrolled CERT ids"),
        "{}",
        enroll.stdout
    );
    let r = migrate(&sb, &cfg, "insert");
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(prod_state(&dbs), before);
}

fn exec_admin(url: &str, sql: &str) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(url).await.expect("connect");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&pool)
            .await
            .expect(sql);
    });
}
