//! `wf refresh --incremental` with `[[change_tracking]]` on PostgreSQL (issue 16): PROD's
//! `adb.results`, `hcp2.attendance` (selected by their district column) and
//! `ids.student_guardians` (by the plan's key file) get an `updated_at` column that a trigger
//! stamps; after a migrate, PROD changes (updates, inserts, deletes, a row moved to another
//! district, a new parent), and the incremental refresh must read only the rows new to the
//! district or changed (its extract steps' metrics count them) and still leave CERT equal, table
//! by table, to a migrate of the new PROD into an empty CERT, also when refreshes are SIGKILLed
//! and resumed. A change column that is no time, or names no column, is refused before the run
//! with its line.

use crate::e2e::{cert_contents, ok, status, wf, Env};
use crate::refresh::{change_prod, killed_refresh, two_certs, INCREMENTAL};
use crate::snapshots::exec;
use crate::util::Sandbox;
use std::path::Path;

/// Tracked tables: (store, table).
/// Results and attendance have the district column; student_guardians (a composite key) is
/// chosen by the plan's key file.
const TRACKED: [(&str, &str); 3] = [
    ("adb", "results"),
    ("hcp2", "attendance"),
    ("ids", "student_guardians"),
];

/// `updated_at` on the tracked tables of `side` (stamped by a trigger on PROD).
fn add_change_columns(env: &Env, side: &str) {
    for (store, table) in TRACKED {
        let mut sql = format!(
            "alter table {table} add column updated_at timestamptz not null default now();"
        );
        if side == "prod" {
            sql.push_str(&format!(
                "create or replace function stamp() returns trigger language plpgsql as $$ begin new.updated_at := now(); return new; end $$; \
                 create trigger stamp before update on {table} for each row execute function stamp();"
            ));
        }
        exec(&env.pg_url(side, store), &sql);
    }
}

fn track(cfg: &Path, extra: &str) {
    let mut text = std::fs::read_to_string(cfg).unwrap();
    for (store, table) in TRACKED {
        text.push_str(&format!(
            "\n[[change_tracking]]\ntable = \"{store}.{table}\"\ncolumn = \"updated_at\"\nlag_seconds = 0\n{extra}"
        ));
    }
    std::fs::write(cfg, text).unwrap();
}

/// A step's metric in a `wf status --json`.
fn metric(st: &serde_json::Value, step: &str, name: &str) -> Option<u64> {
    st["steps"]
        .as_array()?
        .iter()
        .find(|s| s["id"] == step)
        .and_then(|s| s["metrics"][name].as_u64())
}

/// `wf run migrate --district 3 --config-file <cfg>`.
fn migrate_args(cfg: &Path) -> [&str; 6] {
    let cfg = cfg.to_str().unwrap();
    ["run", "migrate", "--district", "3", "--config-file", cfg]
}

fn refresh(sb: &Sandbox, cfg: &Path) -> String {
    refresh_with(sb, cfg, &[])
}

/// `refresh` with environment variables `vars` set; its run.
fn refresh_with(sb: &Sandbox, cfg: &Path, vars: &[(&str, &str)]) -> String {
    let mut cmd = wf(sb, &[&INCREMENTAL[..], &[cfg.to_str().unwrap()]].concat());
    cmd.envs(vars.iter().copied());
    let r = crate::util::ran(cmd.output().unwrap());
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    r.stdout
        .lines()
        .find(|l| l.starts_with("mig-"))
        .unwrap()
        .to_string()
}

#[test]
fn an_incremental_refresh_reads_only_what_changed_and_equals_a_fresh_migrate() {
    let sb = Sandbox::new();
    let Some(env) = Env::get(&sb) else { return };
    let (a, b) = two_certs(&sb, &env);
    for side in ["prod", "a", "b"] {
        add_change_columns(&env, side);
    }
    track(&a, "");
    track(&b, "");
    let first = ok(&sb, &migrate_args(&a));
    assert!(first.contains("mig-"), "{first}");
    // Three results deleted, one moved to district 1, four new (a new assessment); then two
    // results and five attendance rows updated, two attendance rows deleted.
    change_prod(&env, 16);
    exec(
        &env.pg_url("prod", "adb"),
        "update results set score = score + 1 where id in (select id from results where district_id = 3 order by id limit 2)",
    );
    exec(
        &env.pg_url("prod", "hcp2"),
        "update attendance set status = case status when 'present' then 'absent' else 'present' end where id in (select id from attendance where district_id = 3 order by id limit 5); \
         delete from attendance where id in (select id from attendance where district_id = 3 order by id desc limit 2)",
    );
    // Three links' relation changed, one link gone, one new (a new student's).
    exec(
        &env.pg_url("prod", "ids"),
        "update student_guardians set relation = 'guardian' where (student_id, guardian_id) in \
           (select g.student_id, g.guardian_id from student_guardians g join students s on s.id = g.student_id \
            where s.district_id = 3 order by 1, 2 limit 3); \
         delete from student_guardians where (student_id, guardian_id) in \
           (select g.student_id, g.guardian_id from student_guardians g join students s on s.id = g.student_id \
            where s.district_id = 3 order by 1 desc, 2 desc limit 1); \
         insert into student_guardians (student_id, guardian_id, relation) \
           select (select max(id) from students), min(guardian_id), 'parent' from student_guardians",
    );
    // At most 7 earlier keys in memory at once: every tracked table is compared with the
    // replaced run's keys in several passes, its district keys read from PROD once (those of
    // later passes wait on disk), and reads exactly what one pass would.
    // With statistics, student_guardians (the district's links are most of the table) has its
    // changed rows found by one scan of the table, not by its keys a batch at a time.
    exec(&env.pg_url("prod", "ids"), "analyze student_guardians");
    let second = refresh_with(&sb, &a, &[("WF_DIFF_MEMORY_ROWS", "7")]);
    let scanned = crate::util::grep_dir(&sb.data(), "found by one scan of the table");
    assert!(scanned.contains("ids.student_guardians"), "{scanned}");
    ok(&sb, &migrate_args(&b));
    assert_eq!(cert_contents(&env, "a"), cert_contents(&env, "b"));
    let passes = crate::util::grep_dir(&sb.data(), "compared with the replaced run's");
    for t in ["adb.results", "hcp2.attendance", "ids.student_guardians"] {
        assert!(passes.contains(t), "{t}: {passes}");
    }
    let st = status(&sb, &second);
    let read = |t: &str| {
        let m = |n: &str| metric(&st, &format!("extract/{t}"), n);
        (
            m("delta"),
            m("fresh_rows"),
            m("changed_rows"),
            m("gone_rows"),
            m("rows"),
        )
    };
    assert_eq!(
        read("adb.results"),
        (Some(1), Some(4), Some(2), Some(4), Some(6)),
        "{st}"
    );
    assert_eq!(
        read("hcp2.attendance"),
        (Some(1), Some(0), Some(5), Some(2), Some(5)),
        "{st}"
    );
    assert_eq!(
        read("ids.student_guardians"),
        (Some(1), Some(1), Some(3), Some(1), Some(4)),
        "{st}"
    );
    assert_eq!(read("ids.students").0, None, "not tracked: read whole");
    // Validation checked the changes alone (the migrate checked the rest and found nothing).
    let checked = crate::util::grep_dir(&sb.data(), "checked its 5 changed rows");
    assert!(checked.contains("hcp2.attendance"), "{checked}");
    // The load compared the tables read by difference from their changes alone.
    let compared = crate::util::grep_dir(&sb.data(), "not row by row");
    for t in ["adb.results", "hcp2.attendance"] {
        assert!(compared.contains(t), "{t}: {compared}");
    }
    // Nothing changed since: nothing read, CERT the same.
    let third = refresh(&sb, &a);
    assert_eq!(cert_contents(&env, "a"), cert_contents(&env, "b"));
    let st = status(&sb, &third);
    assert_eq!(metric(&st, "extract/adb.results", "rows"), Some(0), "{st}");
    assert_eq!(
        metric(&st, "extract/hcp2.attendance", "rows"),
        Some(0),
        "{st}"
    );
    // Refreshes, whole and by difference in turn, SIGKILLed at random moments and resumed: CERT
    // the same after each (seeded: WF_TEST_SEED replays it).
    let seed: u64 = std::env::var("WF_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261204);
    eprintln!("change tracking kill seed {seed} (WF_TEST_SEED replays it)");
    let fresh = cert_contents(&env, "b");
    killed_refresh(&sb, &env, &a, &fresh, seed, 6);
}

/// PROD seeded and CERT `a` created (empty); `a`'s configuration.
fn seeded_prod(sb: &Sandbox, env: &Env) -> std::path::PathBuf {
    env.create(&["prod", "a"]);
    let a = env.config(&sb.out("a"), "a");
    ok(
        sb,
        &["--config", a.to_str().unwrap(), "seed", "--env", "prod"],
    );
    a
}

/// A refresh that is refused at the gate: its stderr.
fn refused(sb: &Sandbox, cfg: &Path) -> String {
    let r = wf(sb, &[&INCREMENTAL[..], &[cfg.to_str().unwrap()]].concat())
        .output()
        .unwrap();
    let r = crate::util::ran(r);
    assert_ne!(r.code, Some(0), "{}", r.stdout);
    r.stderr
}

/// A unique constraint only CERT's attendance has: the changes alone cannot show a changed row
/// taking an unchanged row's (student, section, day), so every refresh checks the whole table
/// and refuses the collision. Leaves PROD as it found it and CERT without the constraint, with a
/// refresh after dropping it (so the next replaced run's checks are the ones before).
fn cert_only_unique(sb: &Sandbox, env: &Env, a: &Path) {
    let (prod, cert) = (env.pg_url("prod", "hcp2"), env.pg_url("a", "hcp2"));
    exec(
        &cert,
        "create unique index attendance_once on attendance (student_id, section_id, day)",
    );
    // The first refresh after it: CERT's definition changed, so the checks did.
    refresh(sb, a);
    // A row moved onto the day of another row of its student and section, which is unchanged.
    let pick = "select a.id from attendance a join attendance b on b.student_id = a.student_id \
        and b.section_id = a.section_id and b.day > a.day where a.district_id = 3 \
        order by a.id limit 1";
    let moved = crate::snapshots::scalar(&prod, pick);
    let was = crate::snapshots::scalar(
        &prod,
        &format!("select (day - date '2000-01-01')::bigint from attendance where id = {moved}"),
    );
    exec(
        &prod,
        &format!(
            "update attendance set day = (select max(b.day) from attendance a join attendance b \
             on b.student_id = a.student_id and b.section_id = a.section_id where a.id = {moved}) \
             where id = {moved}"
        ),
    );
    let err = refused(sb, a);
    assert!(err.contains("duplicate"), "{err}");
    let why = crate::util::grep_dir(&sb.data(), "unique constraints besides its key");
    assert!(why.contains("hcp2.attendance"), "{why}");
    let taken = "select count(*) from (select 1 from attendance group by student_id, section_id, day having count(*) > 1) d";
    assert_eq!(crate::snapshots::scalar(&cert, taken), 0);
    exec(
        &prod,
        &format!("update attendance set day = date '2000-01-01' + {was}::int where id = {moved}"),
    );
    exec(&cert, "drop index attendance_once");
    refresh(sb, a);
}

/// Validation of a table read by difference checks its changes alone only where that finds what
/// checking the whole table finds: a changed row breaking a rule stops the refresh; a rule added
/// since, or a parent losing a row that unchanged rows reference, makes it check the whole
/// table, which finds the unchanged rows that break them.
#[test]
fn checking_only_the_changes_still_stops_what_they_break() {
    let sb = Sandbox::new();
    let Some(env) = Env::get(&sb) else { return };
    let a = seeded_prod(&sb, &env);
    ok(
        &sb,
        &["--config", a.to_str().unwrap(), "seed", "--env", "cert"],
    );
    for side in ["prod", "a"] {
        add_change_columns(&env, side);
    }
    track(&a, "");
    ok(&sb, &migrate_args(&a));
    let (prod, cert) = (env.pg_url("prod", "hcp2"), env.pg_url("a", "hcp2"));
    let first_three = "select id from attendance where district_id = 3 order by id limit 3";
    exec(
        &prod,
        &format!("update attendance set status = 'tardy' where id in ({first_three})"),
    );
    refresh(&sb, &a);
    let checked = crate::util::grep_dir(&sb.data(), "checked its 3 changed rows");
    assert!(checked.contains("hcp2.attendance"), "{checked}");
    // A changed row outside the allowed statuses: found among the changes, nothing loaded.
    exec(
        &prod,
        &format!(
            "update attendance set status = 'gone fishing' where id in ({first_three} offset 2)"
        ),
    );
    let err = refused(&sb, &a);
    assert!(err.contains("attendance status is known"), "{err}");
    let bad = "select count(*) from attendance where status = 'gone fishing'";
    assert_eq!(crate::snapshots::scalar(&cert, bad), 0);
    exec(
        &prod,
        "update attendance set status = 'present' where status = 'gone fishing'",
    );
    // A rule added since the replaced run checked the table: the unchanged rows were never
    // checked under it, so the whole table is, and the three tardy rows break it.
    let rules = a.with_file_name("validation.toml");
    let before = std::fs::read_to_string(&rules).unwrap();
    let added = "\n[[rules]]\nname = \"present or absent\"\nkind = \"allowed\"\n\
        field = \"hcp2.attendance.status\"\nvalues = [\"present\", \"absent\"]\nseverity = \"error\"\n";
    std::fs::write(&rules, format!("{before}{added}")).unwrap();
    let err = refused(&sb, &a);
    assert!(err.contains("present or absent"), "{err}");
    let why = crate::util::grep_dir(&sb.data(), "its checks changed");
    assert!(why.contains("hcp2.attendance"), "{why}");
    std::fs::write(&rules, before).unwrap();
    cert_only_unique(&sb, &env, &a);
    // A student (read whole) deleted in PROD while unchanged attendance rows still reference
    // them (no constraint across databases): the whole table is checked and they dangle.
    let student = crate::snapshots::scalar(
        &prod,
        "select max(student_id) from attendance where district_id = 3",
    );
    exec(&env.pg_url("prod", "ids"), &format!("delete from student_guardians where student_id = {student}; delete from students where id = {student}"));
    let err = refused(&sb, &a);
    assert!(err.contains("hcp2.attendance"), "{err}");
    let why = crate::util::grep_dir(&sb.data(), "a parent lost keys");
    assert!(why.contains("hcp2.attendance"), "{why}");
}

#[test]
fn a_change_column_that_is_not_a_time_is_refused_with_its_line() {
    let sb = Sandbox::new();
    let Some(env) = Env::get(&sb) else { return };
    let a = seeded_prod(&sb, &env);
    let text = std::fs::read_to_string(&a).unwrap();
    let line = text.lines().count() + 4;
    for (column, says) in [
        ("score", "is double precision, not a timestamp or date"),
        ("updated", "adb.results has no column updated"),
    ] {
        std::fs::write(
            &a,
            format!(
                "{text}\n[[change_tracking]]\ntable = \"adb.results\"\ncolumn = \"{column}\"\n"
            ),
        )
        .unwrap();
        let r = crate::util::ran(wf(&sb, &migrate_args(&a)).output().unwrap());
        assert!(
            r.code != Some(0)
                && r.stderr.contains(says)
                && r.stderr.contains(&format!("line {line}")),
            "{column}: {}",
            r.stderr
        );
    }
}
