//! The command line: one-line errors naming the thing, exit codes, JSON shapes, retries and failures.

use crate::util::{executions, Sandbox};

fn one_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected a one-line error, got: {stderr:?}");
    lines[0]
}

fn small_run(sb: &Sandbox, extra: &[&str]) -> (crate::util::Ran, String) {
    let out = sb.out("out");
    let mut args = vec!["run", "selftest", "--steps", "12", "--out"];
    let out_s = out.to_string_lossy().to_string();
    args.push(&out_s);
    args.extend_from_slice(extra);
    let r = sb.run(&args);
    let id = r.stdout.lines().next().unwrap_or_default().to_string();
    (r, id)
}

#[test]
fn run_prints_the_id_first_and_json_views_have_their_fields() {
    let sb = Sandbox::new();
    let (r, id) = small_run(&sb, &[]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(id.starts_with("st-") && id.ends_with("-001"), "{id}");
    let runs: serde_json::Value =
        serde_json::from_str(&sb.run(["runs", "--json"]).stdout).expect("runs json");
    let first = &runs.as_array().expect("array")[0];
    assert_eq!(first["id"], id.as_str());
    assert_eq!(first["workflow"], "selftest");
    assert_eq!(first["status"], "done");
    let st = sb.status(&id);
    assert_eq!(st["id"], id.as_str());
    assert_eq!(st["generation"], 0);
    let steps = st["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 12);
    assert!(steps
        .iter()
        .all(|s| s["status"] == "done" && s["attempts"] == 1));
    let cps: serde_json::Value =
        serde_json::from_str(&sb.run(["checkpoints", &id, "--json"]).stdout).expect("cps");
    assert!(cps
        .as_array()
        .expect("cps")
        .iter()
        .all(|c| c["reached"] == true));
    // Resuming a finished run is a no-op that succeeds.
    let again = sb.run(["resume", &id]);
    assert_eq!(again.code, Some(0));
    assert!(again.stdout.contains("already done"), "{}", again.stdout);
}

#[test]
fn unknown_run_checkpoint_and_workflow_are_usage_errors() {
    let sb = Sandbox::new();
    let r = sb.run(["status", "st-20990101-001"]);
    assert_eq!(r.code, Some(2));
    assert!(
        one_line(&r.stderr).contains("unknown run `st-20990101-001`"),
        "{}",
        r.stderr
    );
    let r = sb.run(["resume", "nope"]);
    assert_eq!(r.code, Some(2));
    assert!(one_line(&r.stderr).contains("wf runs"), "{}", r.stderr);
    let r = sb.run(["run", "nosuch"]);
    assert_eq!(r.code, Some(2));
    assert!(
        one_line(&r.stderr).contains("unknown workflow `nosuch`"),
        "{}",
        r.stderr
    );
    let (ok, id) = small_run(&sb, &[]);
    assert_eq!(ok.code, Some(0));
    let r = sb.run(["recover", &id, "layer-99"]);
    assert_eq!(r.code, Some(2));
    let line = one_line(&r.stderr);
    assert!(
        line.contains("unknown checkpoint `layer-99`") && line.contains("wf checkpoints"),
        "{line}"
    );
}

#[test]
fn unwritable_journal_directory_is_a_clear_error() {
    let sb = Sandbox::new();
    let file = sb.out("not-a-dir");
    std::fs::write(&file, "x").expect("write");
    let out = sb.out("out");
    let r = sb.run([
        "--data-dir",
        &file.to_string_lossy(),
        "run",
        "selftest",
        "--out",
        &out.to_string_lossy(),
    ]);
    assert_eq!(r.code, Some(1));
    let line = one_line(&r.stderr);
    assert!(
        line.contains("not writable") && line.contains("--data-dir"),
        "{line}"
    );
}

#[test]
fn journal_of_a_newer_format_is_refused() {
    let sb = Sandbox::new();
    let (ok, id) = small_run(&sb, &[]);
    assert_eq!(ok.code, Some(0));
    {
        let db = sled::open(sb.data().join("journal").join(&id)).expect("open journal");
        let meta = db.open_tree("meta").expect("meta");
        meta.insert("format", &99u32.to_be_bytes()).expect("poke");
        db.flush().expect("flush");
    }
    let r = sb.run(["status", &id]);
    assert_eq!(r.code, Some(1));
    let line = one_line(&r.stderr);
    assert!(
        line.contains("format 99") && line.contains("newer wf"),
        "{line}"
    );
}

#[test]
fn retryable_failures_are_retried_until_success() {
    let sb = Sandbox::new();
    let (r, id) = small_run(
        &sb,
        &[
            "--fail-rate",
            "0.4",
            "--max-attempts",
            "30",
            "--backoff-ms",
            "1",
            "--max-backoff-ms",
            "2",
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let st = sb.status(&id);
    let retried = st["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["attempts"].as_u64() > Some(1))
        .count();
    assert!(
        retried > 0,
        "with a 40% failure rate some step needed a retry"
    );
    let lines = executions(&sb.out("out"));
    assert!(
        lines.iter().any(|(_, a)| *a > 1),
        "executions.log shows a second attempt"
    );
    let log = sb.run(["log", &id]).stdout;
    assert!(log.contains("failed, retry in"), "{log}");
}

#[test]
fn exhausted_retries_fail_the_run_and_resume_gives_a_fresh_budget() {
    let sb = Sandbox::new();
    let args = [
        "--fail-rate",
        "1",
        "--max-attempts",
        "3",
        "--backoff-ms",
        "1",
        "--max-backoff-ms",
        "1",
    ];
    let (r, id) = small_run(&sb, &args);
    assert_eq!(r.code, Some(3), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("wf resume {id}")),
        "{}",
        r.stderr
    );
    let st = sb.status(&id);
    assert_eq!(st["status"], "failed");
    let start = &st["steps"][0];
    assert_eq!(start["status"], "failed");
    assert_eq!(start["attempts"], 3);
    let again = sb.run(["resume", &id]);
    assert_eq!(again.code, Some(3));
    assert_eq!(sb.status(&id)["steps"][0]["attempts"], 6);
}

#[test]
fn fatal_errors_are_not_retried() {
    let sb = Sandbox::new();
    let (r, id) = small_run(&sb, &["--fatal-step", "L01/000", "--max-attempts", "5"]);
    assert_eq!(r.code, Some(3), "{}", r.stderr);
    let st = sb.status(&id);
    let step = st["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["id"] == "L01/000")
        .cloned()
        .expect("step");
    assert_eq!(step["attempts"], 1);
    assert!(step["error"]
        .as_str()
        .unwrap_or_default()
        .contains("fatal failure requested"));
    assert_eq!(
        executions(&sb.out("out"))
            .iter()
            .filter(|(s, _)| s == "L01/000")
            .count(),
        1
    );
}

#[test]
fn step_timeouts_are_retryable_errors() {
    let sb = Sandbox::new();
    let (r, id) = small_run(
        &sb,
        &[
            "--work-ms",
            "500",
            "--step-timeout-ms",
            "30",
            "--max-attempts",
            "2",
            "--backoff-ms",
            "1",
        ],
    );
    assert_eq!(r.code, Some(3), "{}", r.stderr);
    let st = sb.status(&id);
    assert_eq!(st["steps"][0]["attempts"], 2);
    assert!(st["steps"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .contains("timed out after 30 ms"));
}
