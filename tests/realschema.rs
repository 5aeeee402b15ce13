//! The whole path on a PostgreSQL schema written with the features real databases have and wf's
//! own seed schema lacks (tests/fixtures/realschema/prod.sql lists them): analyze sees the
//! partitioned table as one and breaks the cycle at its virtual FK; migrate loads every type
//! exactly; wf validate passes; rollback leaves CERT as it was; a run killed before its load and
//! resumed loads again; the application can then insert into every table with a sequence.

use crate::util::Sandbox;
use std::collections::BTreeMap;

const KEY: &str = "real-schema-key-0123456789abcdef";

/// The PROD tables, as CERT must hold them after the load (trigger_log is CERT's own).
const TABLES: [&str; 7] = [
    "districts",
    "schools",
    "staff",
    "\"Students\"",
    "attendance",
    "audit_log",
    "\"Sales\".\"Orders\"",
];

fn fixture(name: &str) -> String {
    let p = format!(
        "{}/tests/fixtures/realschema/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// The session settings wf pins, so PROD and CERT values compare as the same text here too.
const PINNED: &str =
    "options=-c%20IntervalStyle%3Dpostgres%20-c%20bytea_output%3Dhex%20-c%20lc_monetary%3DC";

fn sql(url: &str, q: &str) -> Vec<String> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(&format!("{url}?{PINNED}"))
            .await
            .expect("connect");
        let rows: Vec<Option<String>> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select x::text from ({q}) t(x)"
        )))
        .fetch_all(&pool)
        .await
        .unwrap_or_else(|e| panic!("{q}: {e}"));
        rows.into_iter().map(Option::unwrap_or_default).collect()
    })
}

fn insert_returning(url: &str, q: &str) -> i64 {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(url).await.expect("connect");
        sqlx::query_scalar::<_, i32>(sqlx::AssertSqlSafe(q.to_string()))
            .fetch_one(&pool)
            .await
            .map(i64::from)
            .unwrap_or_else(|e| panic!("{q}: {e}"))
    })
}

fn exec(url: &str, script: &str) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(url).await.expect("connect");
        sqlx::raw_sql(sqlx::AssertSqlSafe(script.to_string()))
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    });
}

/// Count and an order-independent md5 of every PROD table's rows in database `url`.
fn contents(url: &str) -> BTreeMap<String, String> {
    TABLES
        .iter()
        .map(|t| {
            let q = format!(
                "select count(*)::text || ':' || coalesce(md5(string_agg(r::text, '|' order by r::text)), '') from {t} r"
            );
            (t.to_string(), sql(url, &q).join(""))
        })
        .collect()
}

fn wf(sb: &Sandbox, cfg: &str, args: &[&str]) -> crate::util::Ran {
    let mut c = sb.cmd(["--config", cfg]);
    c.args(args).env("WF_ANON_KEY", KEY);
    crate::util::ran(c.output().expect("wf"))
}

#[test]
fn a_real_world_schema_migrates_validates_rolls_back_and_loads_again() {
    let Some(admin) = std::env::var("WF_TEST_PG_URL").ok() else {
        assert!(
            std::env::var("CI").is_err(),
            "WF_TEST_PG_URL is not set in CI"
        );
        eprintln!("skipped: WF_TEST_PG_URL is not set (scripts/test.sh sets it)");
        return;
    };
    let sb = Sandbox::new();
    let tag: String = sb
        .dir
        .path()
        .file_name()
        .expect("name")
        .to_string_lossy()
        .to_lowercase()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let base = admin.rsplit_once('/').expect("db").0.to_string();
    let (prod, cert) = (format!("rs_{tag}_prod"), format!("rs_{tag}_cert"));
    for db in [&prod, &cert] {
        exec(&admin, &format!("drop database if exists {db}"));
        exec(&admin, &format!("create database {db}"));
    }
    let (prod_url, cert_url) = (format!("{base}/{prod}"), format!("{base}/{cert}"));
    exec(&prod_url, &fixture("prod.sql"));
    // CERT: the same schema without the rows, and a user trigger of its own.
    let prod_sql = fixture("prod.sql");
    let ddl = &prod_sql[..prod_sql.find("insert into").expect("rows after the DDL")];
    exec(&cert_url, &format!("{ddl}\n{}", fixture("cert.sql")));
    // Each side's own defaults change values' text forms; wf's sessions pin them.
    exec(
        &admin,
        &format!(
            "alter database {prod} set \"IntervalStyle\" = 'iso_8601'; \
             alter database {prod} set bytea_output = 'escape'; \
             alter database {cert} set \"IntervalStyle\" = 'sql_standard'; \
             alter database {cert} set \"DateStyle\" = 'SQL, DMY'"
        ),
    );
    std::fs::write(sb.out("anonymization.toml"), fixture("anonymization.toml")).expect("rules");
    let cfg = sb.out("wf.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"anonymization_rules = "anonymization.toml"
follow_children = ["rw.attendance.student_id", "rw.Sales.Orders.StudentId"]
[[stores]]
name = "rw"
kind = "postgres"
prod = "{prod_url}"
cert = "{cert_url}"
[[virtual_fks]]
from = "rw.schools.principal_id"
to = "rw.staff.id"
"#
        ),
    )
    .expect("wf.toml");
    let cfg = cfg.to_string_lossy().into_owned();
    let prod_before = contents(&prod_url);
    let cert_before = contents(&cert_url);

    let r = wf(&sb, &cfg, &["cert", "enroll"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    // A schema-qualified name spelled in the wrong case is refused with the right spelling.
    let good = std::fs::read_to_string(&cfg).expect("wf.toml");
    std::fs::write(
        &cfg,
        good.replace("rw.Sales.Orders.StudentId", "rw.sales.Orders.StudentId"),
    )
    .expect("wf.toml");
    let r = wf(&sb, &cfg, &["run", "migrate", "--district", "1"]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("did you mean rw.Sales.Orders"),
        "{}",
        r.stderr
    );
    std::fs::write(&cfg, &good).expect("wf.toml");
    // A large object's oid cannot be carried: named by analyze and refused by migrate unless a
    // rule replaces it (the fixture's rules null it).
    let rules = sb.out("anonymization.toml");
    let with_rule = std::fs::read_to_string(&rules).expect("rules");
    std::fs::write(
        &rules,
        with_rule.replace("field = \"rw.schools.logo\"", "field = \"rw.schools.code\""),
    )
    .expect("rules");
    for args in [
        &["analyze"][..],
        &["analyze", "--json"],
        &["run", "migrate", "--district", "1"],
    ] {
        let r = wf(&sb, &cfg, args);
        assert_eq!(r.code, Some(1), "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("cannot carry rw.schools.logo (oid)")
                && r.stderr.contains("strategy = \"null\""),
            "{args:?}: {}",
            r.stderr
        );
    }
    std::fs::write(&rules, with_rule).expect("rules");
    // cycle_breaks: a NOT NULL declared FK cannot break the cycle, an FK in no cycle breaks
    // nothing, a column that starts no FK is no break: each refused before a run exists.
    for (entry, says) in [
        (
            "rw.staff.school_id",
            "which is declared, NOT NULL and not DEFERRABLE",
        ),
        ("rw.attendance.student_id", "is in no cycle"),
        ("rw.staff.email", "no foreign key"),
    ] {
        std::fs::write(&cfg, format!("cycle_breaks = [\"{entry}\"]\n{good}")).expect("wf.toml");
        let r = wf(&sb, &cfg, &["run", "migrate", "--district", "1"]);
        assert_eq!(r.code, Some(1), "{entry}: {}", r.stderr);
        assert!(r.stderr.contains(says), "{entry}: {}", r.stderr);
    }
    let runs = wf(&sb, &cfg, &["runs"]);
    assert!(
        !runs.stdout.contains("mig-"),
        "no run was created: {}",
        runs.stdout
    );
    // Named where it can break, it is the break, and analyze says so.
    std::fs::write(
        &cfg,
        format!("cycle_breaks = [\"rw.schools.principal_id\"]\n{good}"),
    )
    .expect("wf.toml");
    let r = wf(&sb, &cfg, &["analyze"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stdout
            .contains("named in cycle_breaks; rw.schools.(principal_id)"),
        "{}",
        r.stdout
    );
    let r = wf(&sb, &cfg, &["analyze"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    // The partitions are part of attendance: 6 tables, each row counted once.
    assert!(
        r.stdout
            .starts_with("1 stores, 7 tables, 22 rows, 6 foreign keys, 1 cycles"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("rw.schools.(principal_id) is a virtual FK"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("attendance_2025"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("rw.audit_log has no primary key: rollback deletes"),
        "{}",
        r.stdout
    );

    let r = wf(&sb, &cfg, &["run", "migrate", "--district", "1"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let run = r.stdout.lines().next().expect("run id").to_string();
    // Every value that no rule changes arrives exactly as PROD has it, column by column.
    for (table, cols) in [
        ("\"Students\"", "\"StudentId\", tags, scores, doc, photo, balance, gpa, span, ip, net, mac, uid, flags, vflags, period, extra, born, seen, wake, points"),
        ("schools", "id, code, band, principal_id"),
        ("attendance", "student_id, day, status"),
        ("audit_log", "district_id, happened, note, payload, raw, spot"),
        ("\"Sales\".\"Orders\"", "\"OrderId\", \"StudentId\", amount, placed, at_tz, doc, bands, uids, amounts, days, qty"),
    ] {
        let q = format!("select md5(string_agg(r::text, '|' order by r::text)) from (select {cols} from {table} where district_id = 1) r");
        assert_eq!(sql(&cert_url, &q), sql(&prod_url, &q), "{table}: {cols}");
    }
    assert_eq!(
        sql(
            &cert_url,
            "select count(*) from schools where logo is not null"
        ),
        ["0"],
        "the rule nulled the large-object references"
    );
    // char(n) keeps its padding; the generated column is CERT's own, from the anonymized name.
    assert_eq!(
        sql(
            &cert_url,
            "select format('[%s]', code) from schools where id = 3"
        ),
        ["[NL3   ]"]
    );
    assert_eq!(
        sql(
            &cert_url,
            "select count(*) from staff where name_upper <> upper(full_name)"
        ),
        ["0"]
    );
    assert_eq!(
        sql(
            &cert_url,
            "select count(*) from staff where email like '%north.example'"
        ),
        ["0"],
        "anonymized"
    );
    let v = wf(&sb, &cfg, &["validate", &run]);
    assert_eq!(v.code, Some(0), "{}\n{}", v.stdout, v.stderr);
    assert!(v.stdout.contains("PASSED"), "{}", v.stdout);

    let rb = wf(&sb, &cfg, &["rollback", &run, "--yes"]);
    assert_eq!(rb.code, Some(0), "{}", rb.stderr);
    assert_eq!(contents(&cert_url), cert_before, "CERT as before the run");

    // Again, killed before its load and resumed.
    let mut c = sb.cmd(["--config", &cfg, "run", "migrate", "--district", "1"]);
    c.env("WF_ANON_KEY", KEY)
        .env("WF_FAILPOINT", "load/rw:before");
    let r = crate::util::ran(c.output().expect("wf"));
    assert_ne!(r.code, Some(0));
    let run = r.stdout.lines().next().expect("run id").to_string();
    let r = wf(&sb, &cfg, &["resume", &run]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let loaded = contents(&cert_url);
    assert_eq!(loaded["\"Students\""].split(':').next(), Some("2"));
    assert_eq!(loaded["attendance"].split(':').next(), Some("3"));
    assert_eq!(loaded["schools"].split(':').next(), Some("2"));
    assert_eq!(loaded["\"Sales\".\"Orders\""].split(':').next(), Some("2"));
    // CERT's user trigger ran for the loaded schools (triggers = "keep", the default): two
    // schools in each of the two loads (rollback does not undo what the trigger wrote)...
    assert_eq!(sql(&cert_url, "select count(*) from trigger_log"), ["4"]);
    // ...and with triggers = "disable" it does not, and is enabled again after the load.
    let rb = wf(&sb, &cfg, &["rollback", &run, "--yes"]);
    assert_eq!(rb.code, Some(0), "{}", rb.stderr);
    exec(&cert_url, "truncate trigger_log");
    let text = std::fs::read_to_string(&cfg).expect("wf.toml");
    std::fs::write(
        &cfg,
        text.replace(
            "kind = \"postgres\"",
            "kind = \"postgres\"\ntriggers = \"disable\"",
        ),
    )
    .expect("wf.toml");
    let r = wf(&sb, &cfg, &["run", "migrate", "--district", "1"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let disabled_run = r.stdout.lines().next().expect("run id").to_string();
    assert_eq!(sql(&cert_url, "select count(*) from trigger_log"), ["0"]);
    assert_eq!(
        sql(
            &cert_url,
            "select tgenabled::text from pg_trigger where tgname = 'schools_touch'"
        ),
        ["O"]
    );
    // The application under test inserts with its sequences: serial and identity were advanced.
    let new_school = insert_returning(
        &cert_url,
        "insert into schools (district_id, name, code, band, principal_id) values (1, 'New', 'NEW001', 'lower', 1) returning id",
    );
    assert_eq!(new_school, 4);
    let new_staff = insert_returning(
        &cert_url,
        "insert into staff (school_id, district_id, email, full_name) values (1, 1, 'n@cert.example', 'N N') returning id",
    );
    assert_eq!(new_staff, 4);
    let new_order = insert_returning(
        &cert_url,
        "insert into \"Sales\".\"Orders\" (district_id, \"StudentId\") values (1, 100) returning \"OrderId\"",
    );
    assert_eq!(new_order, 3, "past the largest loaded OrderId (2)");

    // A CERT trigger that changes the rows it loads, kept (the default): the load's log names
    // it, and wf validate finds the table whose rows differ from what was staged.
    // (The application's own rows reference the run's; rollback refuses while they do.)
    exec(
        &cert_url,
        "delete from \"Sales\".\"Orders\" where \"OrderId\" = 3; delete from staff where id = 4; delete from schools where id = 4",
    );
    let rb = wf(&sb, &cfg, &["rollback", &disabled_run, "--yes"]);
    assert_eq!(rb.code, Some(0), "{}", rb.stderr);
    exec(
        &cert_url,
        "create function bump() returns trigger language plpgsql as $$ begin new.amount := coalesce(new.amount, 0) + 1; return new; end $$; \
         create trigger orders_bump before insert on \"Sales\".\"Orders\" for each row execute function bump();",
    );
    std::fs::write(&cfg, text).expect("wf.toml");
    let r = wf(&sb, &cfg, &["run", "migrate", "--district", "1"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let run = r.stdout.lines().next().expect("run id").to_string();
    let log = std::fs::read_to_string(sb.data().join("logs").join(format!("{run}.log")))
        .expect("run log");
    assert!(log.contains("orders_bump"), "the load names the trigger");
    let v = wf(&sb, &cfg, &["validate", &run]);
    assert_eq!(v.code, Some(7), "{}\n{}", v.stdout, v.stderr);
    assert!(
        v.stdout
            .contains("rw.Sales.Orders checksum: CERT rows differ from the anonymized staging"),
        "{}",
        v.stdout
    );
    assert_eq!(contents(&prod_url), prod_before, "PROD untouched");
    // Passed: the databases go (a failed run keeps them for a look).
    for db in [&prod, &cert] {
        exec(
            &admin,
            &format!("drop database if exists {db} with (force)"),
        );
    }
}
