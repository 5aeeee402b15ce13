//! Steering runs: recover from a checkpoint, pause from another process, SIGTERM, cancel, and two
//! resumes racing for one run.

use crate::util::{assert_outputs_correct, executions, finish, ran, steps_with_status, Sandbox};
use std::collections::HashSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn out_arg(sb: &Sandbox) -> String {
    sb.out("out").to_string_lossy().into_owned()
}

#[test]
fn recover_reruns_exactly_the_steps_after_the_checkpoint() {
    let sb = Sandbox::new();
    let out = out_arg(&sb);
    let r = sb.run(["run", "selftest", "--steps", "30", "--out", &out]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let id = r.stdout.lines().next().expect("id").to_string();
    let before = sb.status(&id);
    let seen = executions(&sb.out("out")).len();
    let rec = sb.run(["recover", &id, "layer-2"]);
    assert_eq!(rec.code, Some(0), "{}", rec.stderr);
    let rerun: Vec<String> = executions(&sb.out("out"))
        .into_iter()
        .skip(seen)
        .map(|(s, _)| s)
        .collect();
    let rerun_set: HashSet<String> = rerun.iter().cloned().collect();
    assert_eq!(
        rerun.len(),
        rerun_set.len(),
        "each step after the checkpoint ran once: {rerun:?}"
    );
    // Expected: every step that is not in layers 1-2 nor `start`.
    let expected: HashSet<String> = before["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_string())
        .filter(|id| id != "start" && !id.starts_with("L01/") && !id.starts_with("L02/"))
        .collect();
    assert_eq!(rerun_set, expected);
    let after = sb.status(&id);
    assert_eq!(after["status"], "done");
    assert_eq!(after["generation"], 1);
    assert_outputs_correct(&after, &sb.out("out"));
    let log = sb.run(["log", &id]).stdout;
    assert!(log.contains("recovered from checkpoint layer-2"), "{log}");
}

#[test]
fn recover_from_an_unreached_checkpoint_is_refused() {
    let sb = Sandbox::new();
    let out = out_arg(&sb);
    let r = sb.run([
        "run",
        "selftest",
        "--steps",
        "30",
        "--out",
        &out,
        "--fatal-step",
        "L02/000",
    ]);
    assert_eq!(r.code, Some(3));
    let id = r.stdout.lines().next().expect("id").to_string();
    let rec = sb.run(["recover", &id, "layer-3"]);
    assert_eq!(rec.code, Some(2));
    assert!(rec.stderr.contains("not reached yet"), "{}", rec.stderr);
}

const SLOW: &[&str] = &[
    "run",
    "selftest",
    "--steps",
    "60",
    "--jobs",
    "2",
    "--work-ms",
    "60",
];

/// Starts a slow run (about 2 s of work) in the background.
fn slow_run(sb: &Sandbox) -> (std::process::Child, String) {
    let (child, id, _) = slow_run_with_stdout(sb);
    (child, id)
}

fn slow_run_with_stdout(
    sb: &Sandbox,
) -> (
    std::process::Child,
    String,
    std::io::BufReader<std::process::ChildStdout>,
) {
    let out = out_arg(sb);
    let mut args = SLOW.to_vec();
    args.extend(["--out", &out]);
    sb.spawn_run_with_stdout(&args, &[])
}

fn wait_for_done_steps(sb: &Sandbox, run: &str, n: usize) {
    let start = Instant::now();
    loop {
        let r = sb.run(["status", run, "--json"]);
        if r.code == Some(0) {
            let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
            if steps_with_status(&v, "done").len() >= n {
                assert_eq!(
                    v["live"], true,
                    "a running run's status comes from its live snapshot"
                );
                return;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "run {run} made no progress"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn pause_from_another_process_stops_at_a_step_boundary() {
    let sb = Sandbox::new();
    let (child, id, rest) = slow_run_with_stdout(&sb);
    wait_for_done_steps(&sb, &id, 3);
    let p = sb.run(["pause", &id]);
    assert_eq!(p.code, Some(0), "{}", p.stderr);
    assert!(p.stdout.contains("pause requested"), "{}", p.stdout);
    let (code, stdout) = finish(child, rest);
    assert_eq!(code, Some(4), "paused runs exit 4");
    assert!(stdout.contains(&format!("wf resume {id}")), "{stdout}");
    let st = sb.status(&id);
    assert_eq!(st["status"], "paused");
    assert_eq!(st["counts"]["running"], 0, "no step was left half-done");
    assert!(st["counts"]["done"].as_u64() < Some(60));
    let res = sb.run(["resume", &id, "--jobs", "8"]);
    assert_eq!(res.code, Some(0), "{}", res.stderr);
    assert_outputs_correct(&sb.status(&id), &sb.out("out"));
}

#[test]
fn sigterm_pauses_and_prints_the_resume_command() {
    let sb = Sandbox::new();
    let (child, id, rest) = slow_run_with_stdout(&sb);
    wait_for_done_steps(&sb, &id, 2);
    let k = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(k.success());
    let (code, stdout) = finish(child, rest);
    assert_eq!(code, Some(4));
    assert!(
        stdout.contains(&format!("continue with: wf resume {id}")),
        "{stdout}"
    );
    assert_eq!(sb.status(&id)["status"], "paused");
}

#[test]
fn cancel_stops_for_good() {
    let sb = Sandbox::new();
    let (child, id) = slow_run(&sb);
    wait_for_done_steps(&sb, &id, 2);
    assert_eq!(sb.run(["cancel", &id]).code, Some(0));
    let r = ran(child.wait_with_output().expect("wait"));
    assert_eq!(r.code, Some(6));
    assert_eq!(sb.status(&id)["status"], "cancelled");
    let res = sb.run(["resume", &id]);
    assert_eq!(res.code, Some(2));
    assert!(res.stderr.contains("cancelled"), "{}", res.stderr);
}

#[test]
fn concurrent_resumes_let_exactly_one_proceed() {
    let sb = Sandbox::new();
    let (mut child, id) = slow_run(&sb);
    wait_for_done_steps(&sb, &id, 1);
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let spawn = || {
        sb.cmd(["resume", &id])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn resume")
    };
    let a = spawn();
    let b = spawn();
    let ra = ran(a.wait_with_output().expect("a"));
    let rb = ran(b.wait_with_output().expect("b"));
    let mut codes = [ra.code, rb.code];
    codes.sort();
    assert_eq!(
        codes,
        [Some(0), Some(5)],
        "a: {} b: {}",
        ra.stderr,
        rb.stderr
    );
    let loser = if ra.code == Some(5) { &ra } else { &rb };
    assert!(
        loser
            .stderr
            .contains(&format!("run {id} is being run by pid")),
        "the refusal names the holder: {}",
        loser.stderr
    );
    let st = sb.status(&id);
    assert_eq!(st["status"], "done");
    assert_outputs_correct(&st, &sb.out("out"));
    let log = sb.run(["log", &id]).stdout;
    assert!(
        log.contains("took over stale lease"),
        "the killed runner's lease was taken over: {log}"
    );
}

/// While one step runs longer than the heartbeat period (and no step changes, so the published
/// status snapshot is not renewed), `wf status` shows the runner's heartbeat as recent: from its
/// lease, renewed every 2 s, not the copy inside the snapshot.
#[test]
fn a_long_step_still_shows_a_recent_heartbeat() {
    let sb = Sandbox::new();
    let out = out_arg(&sb);
    let args = [
        "run",
        "selftest",
        "--steps",
        "3",
        "--jobs",
        "1",
        "--work-ms",
        "10",
        "--out",
        &out,
    ];
    let (child, id, rest) =
        sb.spawn_run_with_stdout(&args, &[("WF_FAILPOINT_DELAY", "L01/000=7000")]);
    let start = Instant::now();
    loop {
        let v = sb.status(&id);
        if steps_with_status(&v, "running").contains("L01/000") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "never ran: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(4500));
    let v = sb.status(&id);
    assert_eq!(v["live"], true, "{v}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let beat = v["lease"]["heartbeat_ms"].as_u64().expect("a lease");
    assert!(
        now.saturating_sub(beat) < 3000,
        "heartbeat {} ms ago: {v}",
        now - beat
    );
    let (code, _) = finish(child, rest);
    assert_eq!(code, Some(0));
}
