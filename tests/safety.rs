//! Safety rails on embedded stores: a rollback that cannot lie (missing or damaged manifests are
//! refused with the markers kept, rebuilt from the anonymized staging on request, and the run then
//! shows `rolled_back`), and the lifetime of raw (PII) staging after every terminal state.

use crate::migrate::{cert, counts, migrate, migrate_with, setup, KEY, RULES};
use crate::util::Sandbox;
use serde_json::Value;
use std::path::PathBuf;

fn manifest(sb: &Sandbox, run: &str, store: &str, table: &str) -> PathBuf {
    sb.data()
        .join("runs")
        .join(run)
        .join("steps")
        .join(format!("load~{store}"))
        .join("manifests")
        .join("g0")
        .join(format!("{store}.{table}.keys.arrow"))
}

/// Raw files of the plan's directory (the tables) and the graph's extract step's.
fn raw_files(sb: &Sandbox, run: &str) -> usize {
    let steps = sb.data().join("runs").join(run).join("steps");
    ["extract", "extract~sp"]
        .iter()
        .map(|d| {
            std::fs::read_dir(steps.join(d).join("raw"))
                .map(|d| d.count())
                .unwrap_or(0)
        })
        .sum()
}

fn run_entry(sb: &Sandbox, run: &str) -> Value {
    let r = sb.run(["runs", "--json"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let all: Vec<Value> = serde_json::from_str(&r.stdout).expect("runs json");
    all.into_iter()
        .find(|v| v["id"] == run)
        .unwrap_or_else(|| panic!("{run} not listed: {}", r.stdout))
}

fn markers(sb: &Sandbox) -> usize {
    cert(sb, "ids_cert.db:select run_key from wf_loads").len()
        + cert(sb, "hcp1_cert.db:select run_key from wf_loads").len()
}

#[test]
fn rollback_refuses_missing_or_damaged_manifests_then_rebuilds_them() {
    let sb = Sandbox::new();
    let config = setup(&sb, RULES);
    let cfg = config.to_string_lossy().to_string();
    let before = counts(&sb);
    let r = migrate(&sb, &cfg);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let run = r.stdout.lines().next().expect("run id").to_string();
    let loaded = counts(&sb);
    let marked = markers(&sb);
    assert!(marked > 0);

    // A missing manifest: refused, nothing deleted in any store, markers kept.
    let students = manifest(&sb, &run, "ids", "students");
    std::fs::remove_file(&students).expect("remove manifest");
    let rb = sb.run(["--config", &cfg, "rollback", &run, "--yes"]);
    assert_eq!(rb.code, Some(1), "{}\n{}", rb.stdout, rb.stderr);
    assert!(
        rb.stderr.contains("missing") && rb.stderr.contains("--rebuild-manifests"),
        "{}",
        rb.stderr
    );
    assert!(!rb.stdout.contains("rolled back"), "{}", rb.stdout);
    assert_eq!(counts(&sb), loaded, "nothing deleted");
    assert_eq!(markers(&sb), marked, "markers kept");
    assert_eq!(run_entry(&sb, &run)["status"], "done");

    // A damaged manifest (another store): refused the same way.
    let enrollments = manifest(&sb, &run, "hcp1", "enrollments");
    std::fs::write(&enrollments, b"ARROW1 but not really").expect("damage");
    let rb = sb.run(["--config", &cfg, "rollback", &run, "--yes"]);
    assert_eq!(rb.code, Some(1), "{}", rb.stderr);
    assert!(rb.stderr.contains("damaged"), "{}", rb.stderr);
    assert_eq!(counts(&sb), loaded);
    assert_eq!(markers(&sb), marked);

    // Rebuilt from the anonymized staging: CERT exactly as before the run, status rolled_back.
    let rb = sb.run([
        "--config",
        &cfg,
        "rollback",
        &run,
        "--yes",
        "--rebuild-manifests",
    ]);
    assert_eq!(rb.code, Some(0), "{}", rb.stderr);
    assert!(rb
        .stdout
        .contains("rebuilt the rollback manifest of ids.students"));
    assert!(rb
        .stdout
        .contains("rebuilt the rollback manifest of hcp1.enrollments"));
    assert_eq!(counts(&sb), before);
    assert_eq!(markers(&sb), 0);
    assert_eq!(run_entry(&sb, &run)["status"], "rolled_back");
    let st = sb.status(&run);
    assert_eq!(st["status"], "rolled_back");
    let rep = sb.run(["report", &run]);
    assert_eq!(rep.code, Some(0), "{}", rep.stderr);
    assert!(rep.stdout.contains("**rolled_back**"), "{}", rep.stdout);
    assert!(!rep.stdout.contains("wf rollback"), "{}", rep.stdout);
    let log = sb.run(["log", &run]);
    assert!(log.stdout.contains("rolled back:"), "{}", log.stdout);
    // Again: nothing to do, and resume is refused.
    let again = sb.run(["--config", &cfg, "rollback", &run, "--yes"]);
    assert_eq!(again.code, Some(0));
    assert!(
        again.stdout.contains("already rolled back"),
        "{}",
        again.stdout
    );
    let resume = sb
        .cmd(["--config", &cfg, "resume", &run])
        .env("WF_ANON_KEY", KEY)
        .output()
        .expect("resume");
    assert_eq!(resume.status.code(), Some(2));
}

#[test]
fn raw_pii_is_deleted_at_every_terminal_state_unless_kept() {
    let sb = Sandbox::new();
    // Failed for good (a PII field without a rule stops anonymize): raw goes.
    let bad_rules = RULES.replace(
        "[[rules]]\nfield = \"ids.guardians.name\"\nstrategy = \"fake\"\nkind = \"name\"\n",
        "",
    );
    let config = setup(&sb, &bad_rules);
    let cfg = config.to_string_lossy().to_string();
    let r = migrate(&sb, &cfg);
    assert_eq!(r.code, Some(3), "{}", r.stderr);
    let failed = r.stdout.lines().next().expect("run id").to_string();
    assert_eq!(raw_files(&sb, &failed), 0, "raw purged after a failed run");
    assert_eq!(run_entry(&sb, &failed)["raw_pii"], false);

    // Done: raw goes (purge-raw); with --keep-raw it stays, is shown, warned about, and purged on demand.
    std::fs::write(sb.out("anonymization.toml"), RULES).expect("rules");
    let keep = ["--keep-raw", "--skip-load"];
    let kept = migrate_with(&sb, &cfg, &keep, &[("WF_ANON_KEY", KEY)]);
    assert_eq!(kept.code, Some(0), "{}", kept.stderr);
    let kept = kept.stdout.lines().next().expect("run id").to_string();
    assert!(raw_files(&sb, &kept) > 0);
    assert_eq!(run_entry(&sb, &kept)["raw_pii"], true);
    let table = sb.run(["runs"]);
    assert!(table.stdout.contains("RAW PII"), "{}", table.stdout);
    let rep = sb.run(["report", &kept]);
    assert!(
        rep.stdout.contains("raw PII staging is still on disk")
            && rep.stdout.contains(&format!("wf purge {kept}")),
        "{}",
        rep.stdout
    );
    let purge = sb.run(["purge", &kept]);
    assert_eq!(purge.code, Some(0), "{}", purge.stderr);
    assert!(purge.stdout.contains("deleted"), "{}", purge.stdout);
    assert_eq!(raw_files(&sb, &kept), 0);
    assert_eq!(run_entry(&sb, &kept)["raw_pii"], false);

    // Done (purge-raw), then failed_validation: the same district again conflicts with CERT.
    let done = migrate(&sb, &cfg);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let done = done.stdout.lines().next().expect("run id").to_string();
    assert_eq!(raw_files(&sb, &done), 0, "raw purged after a done run");
    let gate = migrate(&sb, &cfg);
    assert_eq!(gate.code, Some(7), "{}", gate.stderr);
    let gate = gate.stdout.lines().next().expect("run id").to_string();
    assert_eq!(run_entry(&sb, &gate)["status"], "failed_validation");
    assert_eq!(
        raw_files(&sb, &gate),
        0,
        "raw purged after failed_validation"
    );

    // Cancelled while no runner is live (crashed before anonymize): raw goes.
    let crashed = migrate_with(
        &sb,
        &cfg,
        &["--skip-load"],
        &[("WF_ANON_KEY", KEY), ("WF_FAILPOINT", "anonymize:before")],
    );
    let crashed = crashed.stdout.lines().next().expect("run id").to_string();
    assert!(
        raw_files(&sb, &crashed) > 0,
        "a crashed run keeps raw for its resume"
    );
    assert_eq!(run_entry(&sb, &crashed)["status"], "interrupted");
    let cancel = sb.run(["cancel", &crashed]);
    assert_eq!(cancel.code, Some(0), "{}", cancel.stderr);
    assert_eq!(raw_files(&sb, &crashed), 0, "raw purged when cancelled");

    // Older than an age: every run's raw staging.
    let old = migrate_with(&sb, &cfg, &keep, &[("WF_ANON_KEY", KEY)]);
    let old = old.stdout.lines().next().expect("run id").to_string();
    assert!(raw_files(&sb, &old) > 0);
    let young = sb.run(["purge", "--raw", "--older-than", "1h"]);
    assert_eq!(young.code, Some(0), "{}", young.stderr);
    assert!(raw_files(&sb, &old) > 0, "younger than 1h: kept");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let all = sb.run(["purge", "--raw", "--older-than", "1s"]);
    assert_eq!(all.code, Some(0), "{}", all.stderr);
    assert_eq!(raw_files(&sb, &old), 0);
    let bad = sb.run(["purge", "--older-than", "1s"]);
    assert_eq!(bad.code, Some(1));
}

/// Every directory and file under `dir` that grants anything to group or others.
fn open_to_others(dir: &std::path::Path, found: &mut Vec<String>) {
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(dir).expect("read dir") {
        let e = e.expect("entry");
        let meta = std::fs::symlink_metadata(e.path()).expect("meta");
        if meta.permissions().mode() & 0o077 != 0 {
            found.push(format!(
                "{:o} {}",
                meta.permissions().mode() & 0o777,
                e.path().display()
            ));
        }
        if meta.is_dir() {
            open_to_others(&e.path(), found);
        }
    }
}

#[test]
fn the_data_dir_is_owner_only_whatever_the_umask() {
    let sb = Sandbox::new();
    let config = setup(&sb, RULES);
    let cfg = config.to_string_lossy().to_string();
    let keep = ["run", "migrate", "--district", "1", "--keep-raw"];
    let mut c = std::process::Command::new("sh");
    c.arg("-c")
        .arg("umask 000; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_wf"))
        .args(["--config", &cfg])
        .args(keep)
        .current_dir(sb.dir.path())
        .env("WF_DATA_DIR", sb.data())
        .env("WF_ANON_KEY", KEY);
    let r = crate::util::ran(c.output().expect("run"));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let run = r.stdout.lines().next().expect("run id").to_string();
    assert!(raw_files(&sb, &run) > 0, "raw PII kept for the check");
    use std::os::unix::fs::PermissionsExt;
    let root = std::fs::metadata(sb.data()).expect("data dir");
    assert_eq!(root.permissions().mode() & 0o777, 0o700);
    let mut found = Vec::new();
    open_to_others(&sb.data(), &mut found);
    assert!(found.is_empty(), "readable by others: {found:#?}");
}

/// The test servers run with their password nowhere on a command line: `ps` (every process's
/// /proc/<pid>/cmdline) never shows it.
#[test]
fn no_command_line_shows_the_graph_servers_password() {
    let Ok(pw) = std::env::var("WF_TEST_BOLT_PASSWORD") else {
        assert!(
            std::env::var("CI").is_err(),
            "WF_TEST_BOLT_PASSWORD is not set in CI"
        );
        return;
    };
    let mut java = 0;
    for e in std::fs::read_dir("/proc").expect("/proc") {
        let path = e.expect("entry").path().join("cmdline");
        let Ok(raw) = std::fs::read(&path) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmd.contains("ArcadeDBServer") {
            java += 1;
        }
        assert!(
            !cmd.contains(&pw),
            "{} shows the password: {cmd}",
            path.display()
        );
    }
    assert!(
        java > 0,
        "no ArcadeDB server is running: start it with scripts/services.sh"
    );
}

/// A journal holding fewer commits than were made durable (its mirror outside sled says more) is
/// reported by `wf runs` (exit 1, naming the run) and refused by `wf status` and `wf resume`.
#[test]
fn a_journal_that_lost_committed_records_is_reported_not_used() {
    let sb = Sandbox::new();
    let out = sb.out("st");
    let r = sb.run([
        "run",
        "selftest",
        "--steps",
        "6",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let run = r.stdout.lines().next().expect("run id").to_string();
    let listed = sb.run(["runs", "--json"]);
    assert_eq!(listed.code, Some(0), "{}", listed.stderr);
    let mirror = sb.data().join("journal").join(&run).join("wf-commits");
    let held = u64::from_be_bytes(
        std::fs::read(&mirror).expect("mirror")[..8]
            .try_into()
            .unwrap(),
    );
    assert!(held >= 6, "every step's commit is counted: {held}");
    // As if sled had lost its last commits: the mirror is ahead of it.
    std::fs::write(&mirror, (held + 3).to_be_bytes()).expect("write mirror");
    let listed = sb.run(["runs"]);
    assert_eq!(listed.code, Some(1), "{}", listed.stdout);
    assert!(
        listed.stderr.contains(&run) && listed.stderr.contains("lost committed records"),
        "{}",
        listed.stderr
    );
    assert!(!listed.stdout.contains("no runs"), "{}", listed.stdout);
    let st = sb.run(["status", &run]);
    assert_eq!(st.code, Some(1), "{}", st.stderr);
    let resume = sb.run(["resume", &run]);
    assert_eq!(resume.code, Some(1), "{}", resume.stderr);
    assert!(
        resume.stderr.contains("lost committed records"),
        "{}",
        resume.stderr
    );
}
