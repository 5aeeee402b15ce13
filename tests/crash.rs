//! Crash tests: the `wf` process is really killed (SIGKILL, or abort at a failpoint), then resumed.
//! After every kill the steps recorded done are noted; no later execution may name one of them.

use crate::migrate::{counts, migrate, setup, KEY, RULES};
use crate::util::{assert_outputs_correct, executions, Sandbox};
use rand::{RngExt, SeedableRng};
use std::collections::HashSet;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Child;
use std::time::Duration;

const KILLS: usize = 30;

fn selftest_args(out: &Path, steps: usize, work_ms: u64) -> Vec<String> {
    [
        "run",
        "selftest",
        "--steps",
        &steps.to_string(),
        "--jobs",
        "4",
        "--work-ms",
        &work_ms.to_string(),
        "--fail-rate",
        "0.05",
        "--backoff-ms",
        "2",
        "--max-backoff-ms",
        "10",
        "--max-attempts",
        "20",
        "--out",
        &out.to_string_lossy(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Kills `child` with SIGKILL. `None` if it was killed, its exit status if it had already ended.
fn kill(child: &mut Child) -> Option<std::process::ExitStatus> {
    if let Some(done) = child.try_wait().expect("try_wait") {
        return Some(done);
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    None
}

/// Lines of executions.log from index `from` that name a step in `done`.
fn repeats(out: &Path, from: usize, done: &HashSet<String>) -> Vec<(String, u32)> {
    executions(out)
        .into_iter()
        .skip(from)
        .filter(|(s, _)| done.contains(s))
        .collect()
}

#[test]
fn sigkill_at_random_moments_then_resume_redoes_nothing_done() {
    let sb = Sandbox::new();
    // Seeded, so a failure can be replayed: WF_TEST_SEED=<the seed printed>.
    let seed: u64 = std::env::var("WF_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash test seed {seed} (WF_TEST_SEED replays it)");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut kills = 0;
    let mut run_no = 0;
    let mut progress = Vec::new();
    while kills < KILLS {
        run_no += 1;
        let out = sb.out(&format!("out{run_no}"));
        let args = selftest_args(&out, 300, 20);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (mut child, run) = sb.spawn_run(&args, &[]);
        // (executions seen, steps done) when the current child started, to check after it stops.
        let mut guard: Option<(usize, HashSet<String>)> = None;
        loop {
            std::thread::sleep(Duration::from_millis(rng.random_range(1..200)));
            let ended = kill(&mut child);
            if let Some((seen, done)) = guard.take() {
                let again = repeats(&out, seen, &done);
                assert!(
                    again.is_empty(),
                    "run {run}: steps recorded done ran again: {again:?}"
                );
            }
            if let Some(status) = ended {
                assert_eq!(status.code(), Some(0), "run {run} ended badly");
                break;
            }
            kills += 1;
            let done = sb.done_steps(&run);
            let seen = executions(&out).len();
            progress.push(done.len());
            if kills >= KILLS {
                let status = sb.spawn_resume(&run).wait().expect("final resume");
                assert_eq!(status.code(), Some(0), "final resume of {run}");
                let again = repeats(&out, seen, &done);
                assert!(
                    again.is_empty(),
                    "run {run}: steps recorded done ran again: {again:?}"
                );
                break;
            }
            guard = Some((seen, done));
            child = sb.spawn_resume(&run);
        }
        let st = sb.status(&run);
        assert_eq!(st["status"], "done", "run {run}");
        assert_eq!(st["counts"]["done"], 300);
        assert_outputs_correct(&st, &out);
        let ran: HashSet<String> = executions(&out).into_iter().map(|(s, _)| s).collect();
        assert_eq!(ran.len(), 300, "every step executed at least once");
    }
    assert!(kills >= KILLS);
    eprintln!("{kills} kills over {run_no} runs; steps done at each kill: {progress:?}");
}

/// Runs a selftest armed with a failpoint at `step:point`, checks the process died by abort,
/// resumes it, and returns the sandbox and how often the step executed.
fn crash_at(point: &str, step: &str) -> (Sandbox, usize) {
    let sb = Sandbox::new();
    let out = sb.out("out");
    let fp = format!("{step}:{point}");
    let args = selftest_args(&out, 40, 1);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mut child, run) = sb.spawn_run(&args, &[("WF_FAILPOINT", &fp)]);
    let status = child.wait().expect("wait");
    assert_eq!(
        status.signal(),
        Some(6),
        "{fp}: expected SIGABRT, got {status:?}"
    );
    let before = sb.status(&run);
    assert_eq!(
        before["status"], "interrupted",
        "{fp}: a crashed run (journal says running, lock free) shows as interrupted"
    );
    let r = sb.run(["resume", &run]);
    assert_eq!(r.code, Some(0), "{fp}: resume failed: {}", r.stderr);
    let st = sb.status(&run);
    assert_eq!(st["status"], "done");
    assert_outputs_correct(&st, &out);
    let count = executions(&out).iter().filter(|(s, _)| s == step).count();
    (sb, count)
}

#[test]
fn failpoint_before_the_step_runs_it_once_after_resume() {
    let (_sb, count) = crash_at("before", "L02/001");
    assert_eq!(count, 1, "a step killed before it ran runs exactly once");
}

#[test]
fn failpoint_after_effect_runs_the_step_again() {
    let (_sb, count) = crash_at("after-effect", "L02/001");
    assert_eq!(
        count, 2,
        "the effect happened but was not recorded: at-least-once"
    );
}

#[test]
fn failpoint_after_record_never_runs_the_step_again() {
    let (_sb, count) = crash_at("after-record", "L02/001");
    assert_eq!(count, 1, "a recorded step is not executed again");
}

#[test]
fn damaged_artifact_makes_its_step_and_downstream_run_again() {
    let sb = Sandbox::new();
    let out = sb.out("out");
    let args = selftest_args(&out, 40, 1);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mut child, run) = sb.spawn_run(&args, &[("WF_FAILPOINT", "L04/000:after-record")]);
    assert_eq!(child.wait().expect("wait").signal(), Some(6));
    let done = sb.done_steps(&run);
    assert!(done.contains("L01/000"));
    std::fs::write(out.join("L01~000.out"), "tampered\n").expect("tamper");
    let seen = executions(&out).len();
    let r = sb.run(["resume", &run]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let again: HashSet<String> = executions(&out)
        .into_iter()
        .skip(seen)
        .map(|(s, _)| s)
        .collect();
    assert!(again.contains("L01/000"), "the damaged step ran again");
    assert!(
        !again.contains("start"),
        "upstream of the damage stays done"
    );
    assert!(
        !again.contains("L01/001"),
        "siblings of the damage stay done"
    );
    let st = sb.status(&run);
    assert_outputs_correct(&st, &out);
    let log = sb.run(["log", &run]).stdout;
    assert!(log.contains("L01/000: artifact"), "{log}");
}

/// A crash at every failpoint of every migrate step, then `wf resume`: CERT ends exactly as after an
/// uninterrupted run (no duplicate, no missing row). The load steps' `after-effect` point is the one
/// that matters most: CERT committed, the journal did not, and the re-executed load must see its
/// marker and do nothing.
#[test]
fn a_crash_at_any_step_boundary_then_resume_gives_the_same_cert() {
    use std::os::unix::process::ExitStatusExt;
    let reference = {
        let sb = Sandbox::new();
        let config = setup(&sb, RULES);
        let r = migrate(&sb, &config.to_string_lossy());
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        counts(&sb)
    };
    for step in ["extract", "anonymize", "purge-raw", "load/ids", "load/hcp1"] {
        for point in ["before", "after-effect", "after-record"] {
            let sb = Sandbox::new();
            let config = setup(&sb, RULES);
            let cfg = config.to_string_lossy().to_string();
            let crashed = sb
                .cmd(["--config", &cfg, "run", "migrate", "--district", "1"])
                .env("WF_ANON_KEY", KEY)
                .env("WF_FAILPOINT", format!("{step}:{point}"))
                .output()
                .expect("run");
            assert_eq!(
                crashed.status.signal(),
                Some(6),
                "{step}:{point} should abort"
            );
            let run = String::from_utf8_lossy(&crashed.stdout)
                .lines()
                .next()
                .expect("run id")
                .to_string();
            let resumed = sb
                .cmd(["--config", &cfg, "resume", &run])
                .env("WF_ANON_KEY", KEY)
                .output()
                .expect("resume");
            assert_eq!(
                resumed.status.code(),
                Some(0),
                "{step}:{point}: {}",
                String::from_utf8_lossy(&resumed.stderr)
            );
            assert_eq!(
                counts(&sb),
                reference,
                "CERT after a crash at {step}:{point}"
            );
        }
    }
}
