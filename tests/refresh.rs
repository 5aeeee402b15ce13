//! `wf refresh` on PostgreSQL + ArcadeDB. District 3 is migrated; PROD then changes at random (a
//! seeded generator: `WF_TEST_SEED` replays a failure) with updates, inserts, deletes, a row moved
//! to another district and a new parent, and in the graph nodes changed, added, removed and moved
//! to another district, relationships added and removed; the refresh must leave CERT equal,
//! table by table and label by label (counts and contents), to a migrate of the new PROD into an
//! empty CERT; that first refresh is `--incremental` (only the changed rows are written). A
//! reader on another connection counts the district's students all along: it sees the old count
//! or the new, never neither nor both. The replaced run shows `superseded` and its rollback is
//! refused, naming the refresh. Refreshes, whole and incremental in turn, are SIGKILLed at random
//! moments (at least 20 times) and resumed each time: the same CERT. Then a batch of incremental
//! refreshes.
use crate::e2e::{cert_contents, ok, status, wf, Env};
use crate::snapshots::exec;
use crate::util::Sandbox;
use rand::{RngExt, SeedableRng};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const KILLS: usize = 20;

/// `wf refresh --incremental` of district 3, before its `--config-file`.
pub(crate) const INCREMENTAL: [&str; 5] = [
    "refresh",
    "--district",
    "3",
    "--incremental",
    "--config-file",
];

fn first_line(s: String) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

fn run(sb: &Sandbox, args: &[&str], cfg: &Path) -> String {
    let mut all = args.to_vec();
    all.extend(["--district", "3", "--config-file", cfg.to_str().unwrap()]);
    first_line(ok(sb, &all))
}

/// A seeded PROD and two empty CERTs, `a` (refreshed) and `b` (migrated fresh to compare); their
/// configs.
pub(crate) fn two_certs(sb: &Sandbox, env: &Env) -> (std::path::PathBuf, std::path::PathBuf) {
    env.create(&["prod", "a", "b"]);
    let (a, b) = (env.config(&sb.out("a"), "a"), env.config(&sb.out("b"), "b"));
    ok(
        sb,
        &["--config", a.to_str().unwrap(), "seed", "--env", "prod"],
    );
    for c in [&a, &b] {
        ok(
            sb,
            &["--config", c.to_str().unwrap(), "seed", "--env", "cert"],
        );
    }
    (a, b)
}

/// Changes PROD at random, with `seed`: names updated, students added (so the district's count
/// changes), results deleted and one moved to district 1, a new assessment with results.
pub(crate) fn change_prod(env: &Env, seed: u64) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let pick = |rng: &mut rand_chacha::ChaCha8Rng| rng.random_range(0..1_000_000u32);
    let ids = env.pg_url("prod", "ids");
    exec(
        &ids,
        &format!(
            "update students set last_name = last_name || '-x' where id in (select id from students where district_id = 3 order by md5(id::text || '{a}') limit 5); \
             insert into students (id, district_id, school_id, first_name, last_name, email, state_id) \
               select m + k, 3, (select min(id) from schools where district_id = 3), 'Neo', 'Newcomer' || k, 'neo' || (m + k) || '@example.org', 'NEO-' || (m + k) \
               from (select max(id) m from students) s, generate_series(1, 2) k;",
            a = pick(&mut rng)
        ),
    );
    let adb = env.pg_url("prod", "adb");
    exec(
        &adb,
        &format!(
            "delete from results where id in (select id from results where district_id = 3 order by md5(id::text || '{a}') limit 3); \
             update results set district_id = 1 where id = (select id from results where district_id = 3 order by md5(id::text || '{b}') limit 1); \
             insert into assessments (id, district_id, title, subject, given_on) select max(id) + 1, 3, 'Refresh quiz', 'math', date '2026-11-30' from assessments; \
             insert into results (id, district_id, assessment_id, student_id, score) \
               select (select max(id) from results) + row_number() over (), 3, (select max(id) from assessments), id, 7.5 \
               from (select distinct student_id id from results where district_id = 3 order by 1 limit 4) s;",
            a = pick(&mut rng),
            b = pick(&mut rng)
        ),
    );
    change_graph(env, &mut rng, seed);
}

/// Changes PROD's graph with `rng`: students' properties changed, a guardian of a district
/// student added (a new node and relationship) and another removed with its relationships, an
/// enrollment relationship removed, and a teacher moved to district 1.
fn change_graph(env: &Env, rng: &mut rand_chacha::ChaCha8Rng, seed: u64) {
    let (_, user, pw, http) = env.bolt_of("prod");
    let db = env.graph_db("prod");
    let mut k = || rng.random_range(0..20u32);
    let statements = [
        "MATCH (s:Student) WHERE s.district_id = 3 WITH s ORDER BY s.id SKIP $k LIMIT 3 SET s.grade = 'G' + toString($k)",
        "MATCH (s:Student) WHERE s.district_id = 3 WITH s ORDER BY s.id SKIP $k LIMIT 1 CREATE (g:Guardian {id: $id, name: 'Graph Guardian'})-[:GUARDIAN_OF]->(s)",
        "MATCH (g:Guardian)-[:GUARDIAN_OF]->(s:Student) WHERE s.district_id = 3 AND g.id <> $id WITH g ORDER BY g.id SKIP $k LIMIT 1 DETACH DELETE g",
        "MATCH (s:Student)-[r:ENROLLED_IN]->(c:Section) WHERE s.district_id = 3 WITH r, s, c ORDER BY s.id, c.id SKIP $k LIMIT 1 DELETE r",
        "MATCH (t:Teacher) WHERE t.district_id = 3 WITH t ORDER BY t.id SKIP $k LIMIT 1 SET t.district_id = 1",
    ];
    for c in statements {
        let params = serde_json::json!({"k": k(), "id": 8_000_000_000u64 + seed % 1_000_000});
        wf::arcade::command(http, (user, pw), &db, ("opencypher", c), params)
            .unwrap_or_else(|e| panic!("{c}: {e}"));
    }
}

/// Counts district 3's students in CERT `side` on its own connection until `stop`; every count
/// seen.
fn reader(env: &Env, side: &str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<i64>> {
    let url = env.pg_url(side, "ids");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let n: i64 =
                    sqlx::query_scalar("select count(*) from students where district_id = 3")
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                if seen.last() != Some(&n) {
                    seen.push(n);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            seen
        })
    })
}

#[test]
fn a_refresh_replaces_the_district_at_once_and_equals_a_fresh_migrate() {
    let sb = Sandbox::new();
    let Some(env) = Env::get(&sb) else { return };
    let seed: u64 = std::env::var("WF_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261202);
    eprintln!("refresh test seed {seed} (WF_TEST_SEED replays it)");
    let (a, b) = two_certs(&sb, &env);
    let first = run(&sb, &["run", "migrate"], &a);
    let old = cert_contents(&env, "a");
    change_prod(&env, seed);

    let stop = Arc::new(AtomicBool::new(false));
    let watching = reader(&env, "a", stop.clone());
    // By difference: only the changed rows are written, the result is the whole refresh's. At
    // most 500 earlier rows compared at once: the larger tables are compared in several passes.
    let refresh = wf(&sb, &[&INCREMENTAL[..], &[a.to_str().unwrap()]].concat())
        .env("WF_DIFF_MEMORY_ROWS", "500")
        .output()
        .unwrap();
    let refresh = crate::util::ran(refresh);
    assert_eq!(refresh.code, Some(0), "{}", refresh.stderr);
    let out = refresh.stdout;
    stop.store(true, Ordering::Relaxed);
    let seen = watching.join().unwrap();
    assert!(out.contains(&format!("replaces run {first}")), "{out}");
    let second = out
        .lines()
        .find(|l| l.starts_with("mig-"))
        .unwrap()
        .to_string();
    run(&sb, &["run", "migrate"], &b);
    let fresh = cert_contents(&env, "b");
    assert_eq!(
        cert_contents(&env, "a"),
        fresh,
        "refresh equals a fresh migrate"
    );
    assert_ne!(old, fresh, "PROD did change");
    for graph in [
        "sp.Student",
        "sp.Guardian",
        "sp.Teacher",
        "sp.:GUARDIAN_OF",
        "sp.:ENROLLED_IN",
    ] {
        assert_ne!(old[graph], fresh[graph], "PROD's {graph} did change");
    }
    written_by_difference(&sb, &second);
    few_unique_lookups(&sb, &second);
    let (before, after) = (
        old["ids.students"]
            .split(':')
            .next()
            .unwrap()
            .parse::<i64>()
            .unwrap(),
        fresh["ids.students"]
            .split(':')
            .next()
            .unwrap()
            .parse::<i64>()
            .unwrap(),
    );
    // Every student in these CERTs is district 3's (CERT starts empty).
    assert_eq!(after, before + 2);
    assert!(
        seen.iter().all(|n| *n == before || *n == after) && seen.first() == Some(&before),
        "a reader saw only the old or the new district: {seen:?} (old {before}, new {after})"
    );
    assert_eq!(
        status(&sb, &first)["attrs"]["superseded_by"],
        second.as_str()
    );
    let runs = ok(&sb, &["runs"]);
    assert!(
        runs.lines()
            .any(|l| l.starts_with(&first) && l.contains("superseded")),
        "{runs}"
    );
    let refused = crate::util::ran(wf(&sb, &["rollback", &first, "--yes"]).output().unwrap());
    assert_ne!(refused.code, Some(0));
    assert!(
        refused
            .stderr
            .contains(&format!("superseded by refresh {second}")),
        "{}",
        refused.stderr
    );
    let last = killed_refresh(&sb, &env, &a, &fresh, seed, KILLS);
    // The monthly refresh of a manifest's districts: a batch of refreshes.
    let out = ok(
        &sb,
        &[
            "batch",
            "--refresh",
            "--incremental",
            "--districts",
            "3",
            "--config-file",
            a.to_str().unwrap(),
        ],
    );
    assert!(out.contains("done"), "{out}");
    assert_eq!(cert_contents(&env, "a"), fresh, "a batch refresh");
    let holder = status(&sb, &last)["attrs"]["superseded_by"]
        .as_str()
        .unwrap_or_else(|| panic!("the batch's refresh replaced {last}"))
        .to_string();
    preview_counts_what_is_in_cert(&sb, &env, &holder);
    rolled_back_whole(&sb, &env, &holder);
}

/// The refresh looked up in CERT the unique values (email, state_id) of the students PROD changed
/// or added (5 and 2) only: every other staged student is a row the replaced run loaded as it
/// is, whose values CERT holds under its own key.
fn few_unique_lookups(sb: &Sandbox, run: &str) {
    let st = status(sb, run);
    let step = st["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["id"] == "validate/ids.students")
        .unwrap_or_else(|| panic!("validate/ids.students in {st}"));
    let (rows, lookups) = (
        step["metrics"]["rows"].as_u64().unwrap(),
        step["metrics"]["unique_lookups"].as_u64().unwrap(),
    );
    assert!(
        lookups > 0 && lookups <= 7 * 2 && rows > 100,
        "{lookups} unique values looked up for {rows} students"
    );
}

/// Rolling back a refresh by difference removes the district: the refresh wrote only what
/// changed, but it owns every row it staged (its manifests and marker rows say so), and the
/// rollback's check of its manifests against the journaled report must not refuse it for
/// counting fewer rows written than owned.
fn rolled_back_whole(sb: &Sandbox, env: &Env, run: &str) {
    let out = crate::util::ran(wf(sb, &["rollback", run, "--yes"]).output().unwrap());
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("a refresh by difference: it wrote"),
        "{}",
        out.stdout
    );
    let left: Vec<(String, String)> = cert_contents(env, "a")
        .into_iter()
        .filter(|(_, v)| v != "0" && !v.starts_with("0:"))
        .collect();
    assert!(
        left.is_empty(),
        "every row of the district is gone: {left:?}"
    );
}

/// The refresh `run` wrote only what changed: every store's load was held before the gate, and
/// the load steps kept most of the district's rows as they were and wrote some (the changed
/// students and results; in the graph the changed students, the new guardian, their
/// relationships).
fn written_by_difference(sb: &Sandbox, run: &str) {
    let st = status(sb, run);
    let metric = |step: &str, m: &str| {
        st["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["id"] == step)
            .and_then(|s| s["metrics"][m].as_u64())
            .unwrap_or_else(|| panic!("{step} has no metric {m}: {st}"))
    };
    for store in ["ids", "hcp1", "hcp2", "adb"] {
        // Loaded in validate/<store> while the other tables were checked, committed here.
        assert_eq!(metric(&format!("load/{store}"), "loaded_by_the_gate"), 1);
    }
    for store in ["ids", "adb", "sp"] {
        let (kept, written) = (
            metric(&format!("load/{store}"), "unchanged_rows"),
            metric(&format!("load/{store}"), "rows"),
        );
        assert!(
            kept > 10 * written && written > 0,
            "load/{store}: {kept} kept, {written} written; {}",
            crate::util::grep_dir(&sb.data(), "by difference")
        );
    }
    // The report says so: per table, the rows written and the rows left unchanged.
    let report: serde_json::Value =
        serde_json::from_str(&ok(sb, &["report", run, "--json"])).unwrap();
    let students = &report["tables"]["ids.students"];
    let (loaded, unchanged) = (
        students["loaded"].as_u64().unwrap(),
        students["unchanged"].as_u64().unwrap(),
    );
    assert!(loaded > 0 && unchanged > 10 * loaded, "{students}");
    let md = std::fs::read_to_string(sb.data().join("reports").join(format!("{run}.md"))).unwrap();
    assert!(md.contains("| Unchanged |"), "{md}");
}

/// `wf rollback` without `--yes` says how many of the run's rows are in CERT now (after a tester
/// deleted two of its results) and, answered no, changes nothing.
fn preview_counts_what_is_in_cert(sb: &Sandbox, env: &Env, run: &str) {
    exec(
        &env.pg_url("a", "adb"),
        "delete from results where id in (select id from results order by id limit 2)",
    );
    let before = cert_contents(env, "a");
    let mut child = wf(sb, &["rollback", run])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"n\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let results: u64 = before["adb.results"]
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        stdout.contains(&format!("adb.results {results}")) && stdout.contains("will be deleted"),
        "the preview counts the {results} results left: {stdout}"
    );
    assert!(stdout.contains("rollback cancelled"), "{stdout}");
    assert_eq!(
        cert_contents(env, "a"),
        before,
        "answered no, nothing changed"
    );
}

/// Refreshes SIGKILLed at random moments, resumed after each kill, one refresh after another
/// until `want` kills: CERT as fresh after each (every refresh replaces the one before).
pub(crate) fn killed_refresh(
    sb: &Sandbox,
    env: &Env,
    cfg: &Path,
    fresh: &std::collections::BTreeMap<String, String>,
    seed: u64,
    want: usize,
) -> String {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let mut kills = 0;
    let mut refreshes = 0;
    let mut last = String::new();
    while kills < want {
        refreshes += 1;
        // By difference and whole, one after the other.
        let mut args = vec!["refresh", "--district", "3", "--config-file"];
        args.push(cfg.to_str().unwrap());
        if refreshes % 2 == 1 {
            args.push("--incremental");
        }
        let mut child = wf(sb, &args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let run = {
            use std::io::BufRead;
            let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
            lines
                .find_map(|l| l.ok().filter(|l| l.starts_with("mig-")))
                .expect("the refresh's run id")
        };
        let mut resumes = 0;
        loop {
            std::thread::sleep(Duration::from_millis(rng.random_range(30..700)));
            if child.try_wait().unwrap().is_none() {
                if kills < want {
                    let _ = child.kill();
                    let _ = child.wait();
                    kills += 1;
                } else {
                    let code = child.wait().unwrap();
                    let log =
                        std::fs::read_to_string(sb.out(&format!("resume-{run}-{resumes}.log")))
                            .unwrap_or_default();
                    assert!(code.success(), "{run}: {log}");
                }
            }
            if status(sb, &run)["status"] == "done" {
                break;
            }
            resumes += 1;
            assert!(resumes < 200, "refresh {run} never finished");
            let log =
                std::fs::File::create(sb.out(&format!("resume-{run}-{resumes}.log"))).unwrap();
            child = wf(sb, &["resume", &run])
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
        }
        assert_eq!(
            &cert_contents(env, "a"),
            fresh,
            "refresh {run} after {kills} kills in all"
        );
        last = run;
    }
    eprintln!("{kills} SIGKILLs over {refreshes} refreshes");
    last
}

/// Where a difference cannot be trusted, an incremental refresh replaces the store whole, says
/// why in the run's log, and CERT equals a fresh migrate all the same: PROD swapped two students'
/// emails (unique: the in-place update is refused, so the store's transaction is written again
/// whole), and a byte of the earlier run's anonymized results flipped (its SHA-256 no longer
/// matches, so that store is not diffed against it).
#[test]
fn an_incremental_refresh_replaces_whole_what_it_cannot_diff_and_equals_a_fresh_migrate() {
    let sb = Sandbox::new();
    let Some(env) = Env::get(&sb) else { return };
    let (a, b) = two_certs(&sb, &env);
    let alone = [
        "run",
        "migrate",
        "--district",
        "3",
        "--incremental",
        "--config-file",
    ];
    let refused = crate::util::ran(
        wf(&sb, &[&alone[..], &[a.to_str().unwrap()]].concat())
            .output()
            .unwrap(),
    );
    assert!(
        refused.code != Some(0)
            && refused
                .stderr
                .contains("use `wf refresh --district <id> --incremental`"),
        "{}",
        refused.stderr
    );
    let first = run(&sb, &["run", "migrate"], &a);
    exec(
        &env.pg_url("prod", "ids"),
        "create temp table two as select id, email from students where district_id = 3 and email is not null order by id limit 2; \
         update students set email = null where id in (select id from two); \
         update students s set email = (select t.email from two t where t.id <> s.id) where s.id in (select id from two);",
    );
    exec(
        &env.pg_url("prod", "adb"),
        "update results set score = score + 1 where id = (select min(id) from results where district_id = 3)",
    );
    let results = sb
        .data()
        .join("runs")
        .join(&first)
        .join("steps")
        .join("anonymize~adb.results")
        .join("anon")
        .join("adb.results.arrow");
    crate::integrity::flip_byte(&results);
    let out = ok(&sb, &[&INCREMENTAL[..], &[a.to_str().unwrap()]].concat());
    let second = out.lines().find(|l| l.starts_with("mig-")).unwrap();
    run(&sb, &["run", "migrate"], &b);
    assert_eq!(cert_contents(&env, "a"), cert_contents(&env, "b"));
    let log = crate::util::grep_dir(&sb.data(), "by difference");
    assert!(
        log.contains("store=ids") && log.contains("the refresh by difference failed"),
        "ids: the swapped emails: {log}"
    );
    assert!(
        log.contains("store=adb") && log.contains("not by difference"),
        "adb: the flipped byte: {log}"
    );
    let st = status(&sb, second);
    let kept = |store: &str| {
        st["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["id"] == format!("load/{store}"))
            .and_then(|s| s["metrics"]["unchanged_rows"].as_u64())
    };
    assert_eq!((kept("ids"), kept("adb")), (Some(0), Some(0)), "{st}");
    assert!(kept("hcp1").unwrap_or(0) > 0, "hcp1 was diffed: {st}");
    // Other anonymization rules change every row: the district is replaced whole, saying why.
    let rules = a.parent().unwrap().join("anonymization.toml");
    let text = std::fs::read_to_string(&rules).unwrap();
    std::fs::write(&rules, format!("{text}\n# reviewed in December\n")).unwrap();
    let out = ok(&sb, &[&INCREMENTAL[..], &[a.to_str().unwrap()]].concat());
    assert!(
        out.contains("was anonymized under other anonymization rules (rules_sha256 ")
            && out.contains("replaces the district whole, not by difference"),
        "{out}"
    );
    let third = out.lines().find(|l| l.starts_with("mig-")).unwrap();
    let st = status(&sb, third);
    let diffed = st["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["metrics"]["unchanged_rows"].is_u64())
        .count();
    assert_eq!(diffed, 0, "no store went by difference: {st}");
    assert_eq!(cert_contents(&env, "a"), cert_contents(&env, "b"));
    // A tester's CERT row under a key PROD then gives a new row of the district: the refresh
    // looks up only keys the replaced run did not load, and this one is a conflict (insert).
    let copy = |url: &str| {
        exec(
            url,
            "insert into results (id, district_id, assessment_id, student_id, score) \
               select 900000 + id, district_id, assessment_id, student_id, score from results \
               where district_id = 3 order by id limit 1",
        )
    };
    copy(&env.pg_url("a", "adb"));
    copy(&env.pg_url("prod", "adb"));
    let before = cert_contents(&env, "a");
    let stopped = crate::util::ran(
        wf(&sb, &[&INCREMENTAL[..], &[a.to_str().unwrap()]].concat())
            .output()
            .unwrap(),
    );
    assert_eq!(
        stopped.code,
        Some(7),
        "{}\n{}",
        stopped.stdout,
        stopped.stderr
    );
    assert!(
        format!("{}{}", stopped.stdout, stopped.stderr).contains("adb.results"),
        "{}\n{}",
        stopped.stdout,
        stopped.stderr
    );
    assert_eq!(
        cert_contents(&env, "a"),
        before,
        "the gate stopped it: CERT unchanged"
    );
}
