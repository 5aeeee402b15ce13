//! The CERT graph is checked before any store commits: a wrong CERT database name, or a load CERT
//! refuses, stops the run at validation (PostgreSQL + Bolt), with every store, relational ones
//! included, unchanged.

use crate::e2e::{cert_contents, wf, Env};
use crate::util::Sandbox;

#[test]
fn a_wrong_cert_graph_database_stops_the_run_at_validate_with_every_store_unchanged() {
    let sb = Sandbox::new();
    let Some(env) = Env::get(&sb) else { return };
    env.create(&["prod", "w"]);
    let cfg = env.config(&sb.out("w"), "w");
    let c = cfg.to_str().unwrap();
    for side in ["prod", "cert"] {
        crate::e2e::ok(&sb, &["--config", c, "seed", "--env", side]);
    }
    let before = cert_contents(&env, "w");
    // Enrolled CERT, then a typo in the database name: the server has no such database.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let right = text
        .lines()
        .find(|l| l.trim_start().starts_with("cert_database"))
        .unwrap()
        .to_string();
    std::fs::write(
        &cfg,
        text.replace(&right, "cert_database = \"wf_no_such_cert_db\""),
    )
    .unwrap();
    let r = migrate(&sb, c);
    // The CERT guard opens every CERT target at the start of the validate step, before the load
    // rehearsal and before any load: the run stops there, naming the database.
    assert_eq!(r.code, Some(3), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("failed at step validate")
            && r.stderr.contains("wf_no_such_cert_db")
            && r.stderr.contains("check the graph's CERT database name"),
        "the error names the step and the database: {}",
        r.stderr
    );
    assert_eq!(cert_contents(&env, "w"), before, "CERT unchanged");
}

#[test]
fn a_graph_load_cert_refuses_is_a_gate_finding_and_no_store_commits() {
    let sb = Sandbox::new();
    let Some(env) = Env::get(&sb) else { return };
    env.create(&["prod", "u"]);
    let cfg = env.config(&sb.out("u"), "u");
    let c = cfg.to_str().unwrap();
    for side in ["prod", "cert"] {
        crate::e2e::ok(&sb, &["--config", c, "seed", "--env", side]);
    }
    // CERT has a rule of its own the gate's checks know nothing of: one School per district.
    // The district brings several, so the graph's held load fails inside its transaction.
    let (_, user, pw, http) = env.bolt_of("cert").clone();
    let db = env.graph_db("u");
    for sql in [
        "CREATE VERTEX TYPE School IF NOT EXISTS",
        "CREATE PROPERTY School.district_id IF NOT EXISTS LONG",
        "CREATE INDEX IF NOT EXISTS ON School (district_id) UNIQUE",
    ] {
        wf::arcade::command(
            &http,
            (&user, &pw),
            &db,
            ("sql", sql),
            serde_json::json!({}),
        )
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let before = cert_contents(&env, "u");
    let r = migrate(&sb, c);
    // validate/sp met the refusal in its held load; the gate failed before any store committed.
    assert_eq!(r.code, Some(7), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("failed validation") && r.stderr.contains("graph's load failed"),
        "the gate names the graph's load: {}",
        r.stderr
    );
    assert_eq!(cert_contents(&env, "u"), before, "CERT unchanged");
}

/// `wf run migrate --district 3` with config `c`, run to its end.
fn migrate(sb: &Sandbox, c: &str) -> crate::util::Ran {
    crate::util::ran(
        wf(
            sb,
            &["run", "migrate", "--district", "3", "--config-file", c],
        )
        .output()
        .unwrap(),
    )
}
