//! Per-table extract steps across a crash (PostgreSQL + Bolt). A migrate is SIGKILLed while one
//! table of `adb` is being extracted, after every table of the other stores is done; the resume
//! re-runs only what the snapshot mode says, as the journal's events show:
//! - `strict` (default): `adb` is planned and extracted again, whole; no other store's table runs
//!   again; CERT equals an uninterrupted run, also when PROD changed in `adb` meanwhile;
//! - `closure`: no finished table runs again; CERT has no dangling reference after PROD changed;
//!   when a table read after the crash references a row the plan did not select, the district is
//!   planned again and CERT equals a migrate of the new PROD state.
//!
//! A kill while one table is anonymized re-runs that table's step only.

use crate::e2e::{cert_contents, ok, status, wf, Env};
use crate::util::Sandbox;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// The table whose extraction is killed.
const KILLED: &str = "extract/adb.results";

/// Runs `sql` on the database at `url`.
pub(crate) fn exec(url: &str, sql: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    });
}

pub(crate) fn scalar(url: &str, sql: &str) -> i64 {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(&pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    })
}

fn migrate(sb: &Sandbox, cfg: &Path) -> String {
    let out = ok(
        sb,
        &[
            "run",
            "migrate",
            "--district",
            "3",
            "--config-file",
            cfg.to_str().unwrap(),
        ],
    );
    out.lines().next().unwrap_or_default().to_string()
}

/// Starts a migrate whose `KILLED` step holds 20 s before it reads, waits until every other
/// extract step is done, and SIGKILLs the process. Returns the run id.
fn kill_inside_the_last_table(sb: &Sandbox, cfg: &Path) -> String {
    kill_inside(sb, cfg, KILLED)
}

/// Starts a migrate whose step `held` holds 20 s before it runs, waits until every other step of
/// its phase (`extract/…`, `anonymize/…`) is done, and SIGKILLs the process. Returns the run id.
fn kill_inside(sb: &Sandbox, cfg: &Path, held: &str) -> String {
    let phase = format!("{}/", held.split('/').next().unwrap());
    let mut child = wf(
        sb,
        &[
            "run",
            "migrate",
            "--district",
            "3",
            "--config-file",
            cfg.to_str().unwrap(),
        ],
    )
    .env("WF_FAILPOINT_DELAY", format!("{held}=20000"))
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let run = {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        line.trim().to_string()
    };
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the extract never got to {KILLED}"
        );
        let st = status(sb, &run);
        let steps: Vec<&Value> = st["steps"].as_array().into_iter().flatten().collect();
        let extracts: Vec<&&Value> = steps
            .iter()
            .filter(|s| s["id"].as_str().is_some_and(|i| i.starts_with(&phase)))
            .collect();
        // `validate/<store>` waits for its store's tables, the held one included.
        let store_step = held
            .split_once('/')
            .and_then(|(_, t)| t.split_once('.'))
            .map(|(store, _)| format!("{phase}{store}"));
        // Nor can a step that depends on the held one (`anonymize/scan` on every table's).
        let waits_for_held = |s: &Value| {
            s["deps"]
                .as_array()
                .is_some_and(|d| d.iter().any(|x| x == held))
        };
        let others_done = extracts
            .iter()
            .filter(|s| {
                s["id"] != held
                    && Some(s["id"].as_str().unwrap_or("")) != store_step.as_deref()
                    && !waits_for_held(s)
            })
            .all(|s| s["status"] == "done");
        let killed_running = extracts
            .iter()
            .any(|s| s["id"] == held && s["status"] == "running");
        if extracts.len() > 2 && others_done && killed_running {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    run
}

/// The graph's extract starts with the run, beside the plan, not after the relational stores
/// are planned: in the run's journal it starts before the plan is done. Its staging checks run
/// in a step of their own, done before the gate starts.
fn graph_extract_beside_the_plan(sb: &Sandbox, run: &str) {
    let r = crate::util::ran(sb.cmd(["log", run, "--json"]).output().unwrap());
    let events: Vec<Value> = serde_json::from_str(&r.stdout).unwrap();
    let at = |kind: &str, step: &str| {
        events
            .iter()
            .position(|e| e["kind"][kind]["step"] == step)
            .unwrap_or_else(|| panic!("no {kind} of {step}: {}", r.stdout))
    };
    assert!(
        at("StepStarted", "extract/sp") < at("StepSucceeded", "extract"),
        "the graph's extract waited for the plan"
    );
    // The graph's staging checks are a step beside its held load, before the gate.
    assert!(at("StepSucceeded", "validate/sp.staging") < at("StepStarted", "validate"));
}

/// How often each step succeeded, and the steps `SessionLost` events sent back, from `wf log`.
fn journal(sb: &Sandbox, run: &str) -> (BTreeMap<String, u32>, Vec<String>) {
    let r = crate::util::ran(sb.cmd(["log", run, "--json"]).output().unwrap());
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let events: Vec<Value> = serde_json::from_str(&r.stdout).unwrap();
    let mut succeeded = BTreeMap::new();
    let mut rerun = Vec::new();
    for e in &events {
        if let Some(s) = e["kind"]["StepSucceeded"]["step"].as_str() {
            *succeeded.entry(s.to_string()).or_insert(0) += 1;
        }
        if let Some(l) = e["kind"]["SessionLost"]["rerun"].as_array() {
            rerun.extend(l.iter().filter_map(|v| v.as_str().map(String::from)));
        }
    }
    (succeeded, rerun)
}

fn resume(sb: &Sandbox, run: &str) {
    ok(sb, &["resume", run]);
    assert_eq!(status(sb, run)["status"], "done");
}

/// PROD changes in `adb` while the run is down: an assessment and its results deleted (a parent
/// row gone), and another result moved to district 1.
fn change_adb(env: &Env) {
    let url = env.pg_url("prod", "adb");
    exec(
        &url,
        "delete from results where assessment_id = (select min(id) from assessments where district_id = 3); \
         delete from assessments where id = (select min(id) from assessments where district_id = 3); \
         update results set district_id = 1 where id = (select max(id) from results where district_id = 3);",
    );
}

fn setup(sb: &Sandbox, env: &Env, sides: &[&str]) -> Vec<std::path::PathBuf> {
    let mut all = vec!["prod"];
    all.extend_from_slice(sides);
    env.create(&all);
    let cfgs: Vec<_> = sides.iter().map(|s| env.config(&sb.out(s), s)).collect();
    ok(
        sb,
        &[
            "--config",
            cfgs[0].to_str().unwrap(),
            "seed",
            "--env",
            "prod",
        ],
    );
    for c in &cfgs {
        ok(
            sb,
            &["--config", c.to_str().unwrap(), "seed", "--env", "cert"],
        );
    }
    cfgs
}

/// The report names one PROD snapshot per store for all of the store's tables.
fn same_snapshot_per_store(sb: &Sandbox, run: &str) {
    let r = crate::util::ran(sb.cmd(["report", run, "--json"]).output().unwrap());
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    let mut per_store: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for (t, row) in report["tables"].as_object().expect("tables") {
        let store = t.split('.').next().unwrap().to_string();
        if store == "sp" {
            continue;
        }
        let snap = row["snapshot"]
            .as_str()
            .expect("a snapshot per table")
            .to_string();
        per_store.entry(store).or_default().insert(snap);
    }
    assert_eq!(per_store.len(), 4, "{per_store:?}");
    assert!(per_store.values().all(|s| s.len() == 1), "{per_store:?}");
}

fn set_mode(cfg: &Path, mode: &str) {
    let text = std::fs::read_to_string(cfg).unwrap();
    std::fs::write(cfg, format!("snapshot = \"{mode}\"\n{text}")).unwrap();
}

#[test]
fn strict_a_crash_inside_one_store_re_extracts_that_store_only() {
    let sb = Sandbox::new();
    let Some(env) = Env::get(&sb) else { return };
    let cfgs = setup(&sb, &env, &["a", "b", "c"]);
    let clean = migrate(&sb, &cfgs[0]);
    graph_extract_beside_the_plan(&sb, &clean);
    let run = kill_inside_the_last_table(&sb, &cfgs[1]);
    let (before, _) = journal(&sb, &run);
    let done_before: Vec<String> = before
        .keys()
        .filter(|s| s.starts_with("extract/"))
        .cloned()
        .collect();
    assert!(
        done_before.iter().any(|s| s.starts_with("extract/adb.")),
        "{done_before:?}"
    );
    resume(&sb, &run);
    let (after, rerun) = journal(&sb, &run);
    let adb_done: Vec<String> = done_before
        .iter()
        .filter(|s| s.starts_with("extract/adb."))
        .cloned()
        .collect();
    assert_eq!(
        rerun, adb_done,
        "exactly adb's finished tables are sent back"
    );
    for s in &done_before {
        let want = if s.starts_with("extract/adb.") { 2 } else { 1 };
        assert_eq!(after.get(s), Some(&want), "{s}: {after:?}");
    }
    assert_eq!(after.get(KILLED), Some(&1));
    assert_eq!(cert_contents(&env, "a"), cert_contents(&env, "b"));
    same_snapshot_per_store(&sb, &run);

    // PROD changes in adb between the crash and the resume: CERT equals a clean run of the new
    // PROD state (adb was extracted again whole, in one new snapshot).
    let run = kill_inside_the_last_table(&sb, &cfgs[2]);
    change_adb(&env);
    resume(&sb, &run);
    env.create(&["a"]);
    ok(
        &sb,
        &[
            "--config",
            cfgs[0].to_str().unwrap(),
            "seed",
            "--env",
            "cert",
        ],
    );
    migrate(&sb, &cfgs[0]);
    assert_eq!(cert_contents(&env, "a"), cert_contents(&env, "c"));
}

#[test]
fn closure_a_crash_re_runs_no_finished_table_and_leaves_no_dangling_reference() {
    let sb = Sandbox::new();
    let Some(env) = Env::get(&sb) else { return };
    let cfgs = setup(&sb, &env, &["a"]);
    set_mode(&cfgs[0], "closure");
    let run = kill_inside_the_last_table(&sb, &cfgs[0]);
    let (before, _) = journal(&sb, &run);
    change_adb(&env);
    resume(&sb, &run);
    let (after, rerun) = journal(&sb, &run);
    assert!(rerun.is_empty(), "{rerun:?}");
    for (s, n) in before.iter().filter(|(s, _)| s.starts_with("extract")) {
        assert_eq!(after.get(s), Some(n), "{s} ran again");
    }
    assert_eq!(after.get(KILLED), Some(&1));
    let cert = env.pg_url("a", "adb");
    let dangling = scalar(
        &cert,
        "select count(*) from results r where not exists (select 1 from assessments a where a.id = r.assessment_id)",
    );
    assert_eq!(dangling, 0);
    let moved = scalar(&cert, "select count(*) from results where district_id <> 3");
    assert_eq!(moved, 0, "the result moved to district 1 is not in CERT");
}

/// With `closure`, PROD changes while the run is down so that the table read after the crash
/// references a row its plan did not select (a result moved to a new assessment): the subset is
/// no longer closed, so the district is planned again, once, in one snapshot per store, and CERT
/// equals a migrate of the new PROD state.
#[test]
fn closure_plans_again_when_a_table_read_after_the_crash_references_an_unplanned_row() {
    let sb = Sandbox::new();
    let Some(env) = Env::get(&sb) else { return };
    let cfgs = setup(&sb, &env, &["a", "b"]);
    set_mode(&cfgs[0], "closure");
    let run = kill_inside_the_last_table(&sb, &cfgs[0]);
    exec(
        &env.pg_url("prod", "adb"),
        "insert into assessments (id, district_id, title, subject, given_on) \
           select max(id) + 1, 3, 'Late quiz', 'math', date '2026-12-01' from assessments; \
         update results set assessment_id = (select max(id) from assessments) \
           where id = (select min(id) from results where district_id = 3);",
    );
    resume(&sb, &run);
    let (after, _) = journal(&sb, &run);
    assert_eq!(
        after.get("extract"),
        Some(&2),
        "planned again once: {after:?}"
    );
    let r = crate::util::ran(sb.cmd(["log", &run]).output().unwrap());
    assert!(
        r.stdout
            .contains("PROD changed while the run was down: adb.results references rows"),
        "{}",
        r.stdout
    );
    migrate(&sb, &cfgs[1]);
    assert_eq!(cert_contents(&env, "a"), cert_contents(&env, "b"));
    same_snapshot_per_store(&sb, &run);
}

/// Kills a migrate inside step `held` once the other steps of its phase are done, resumes, and
/// checks that no step done before the kill ran again and CERT equals a clean run's.
/// `None` only outside CI without servers (`Env::get` panics in CI).
fn kill_inside_then_resume(held: &str) -> Option<BTreeMap<String, u32>> {
    let sb = Sandbox::new();
    let env = Env::get(&sb)?;
    let cfgs = setup(&sb, &env, &["a", "b"]);
    migrate(&sb, &cfgs[0]);
    let run = kill_inside(&sb, &cfgs[1], held);
    let (before, _) = journal(&sb, &run);
    let phase = format!("{}/", held.split('/').next().unwrap());
    let finished = before.keys().filter(|s| s.starts_with(&phase)).count();
    assert!(finished > 3, "{before:?}");
    resume(&sb, &run);
    let (after, rerun) = journal(&sb, &run);
    assert!(rerun.is_empty(), "no snapshot was needed: {rerun:?}");
    for (s, n) in &before {
        assert_eq!(after.get(s), Some(n), "{s} ran again");
    }
    assert_eq!(after.get(held), Some(&1));
    assert_eq!(cert_contents(&env, "a"), cert_contents(&env, "b"));
    Some(before)
}

#[test]
fn a_kill_during_anonymize_re_runs_only_the_unfinished_tables() {
    kill_inside_then_resume("anonymize/hcp2.attendance");
}

#[test]
fn a_kill_during_validate_re_runs_only_the_unfinished_tables() {
    let Some(before) = kill_inside_then_resume("validate/hcp2.attendance") else {
        return;
    };
    assert!(
        !before.contains_key("validate"),
        "the gate waits for every table's checks"
    );
}
