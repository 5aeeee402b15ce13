//! Journal benchmark (issue 2): for a 10,000-step no-op selftest,
//! 1. the journal's cost per step — one durable commit (sled transaction + flush) per finished step —
//!    as p50/p99, measured straight on the journal;
//! 2. the whole runner end to end (`--jobs 1` and `--jobs 4`), to show what the scheduler adds;
//! 3. the time to resume a run whose steps are all recorded: take the lock, open the journal, load the
//!    state, re-check every artifact, decide nothing is left, record the run done.
//!
//! Run: `cargo bench --bench journal` (WF_BENCH_STEPS to change the size). It measures; it asserts
//! nothing about time.

use std::sync::Arc;
use std::time::{Duration, Instant};
use wf::selftest::Selftest;
use wf_engine::journal::{Commit, Journal, JournalRead, SledJournal};
use wf_engine::model::{now_ms, RunRecord, RunStatus, StepRecord, StepStatus};
use wf_engine::{
    Artifact, DataDir, Engine, Outcome, RunOptions, Silent, StepOutput, Stop, Workflow,
};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn selftest(out: &std::path::Path, steps: usize, jobs: usize) -> Selftest {
    let args: Vec<String> = [
        "--steps",
        &steps.to_string(),
        "--out",
        &out.to_string_lossy(),
        "--jobs",
        &jobs.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    match Selftest::from_args(&args) {
        Ok((wf, _)) => wf,
        Err(e) => panic!("selftest args: {e}"),
    }
}

/// 1: commit latency per step on a bare journal.
fn journal_cost(root: &std::path::Path, steps: usize) {
    let out = root.join("j-out");
    std::fs::create_dir_all(&out).expect("out dir");
    let wf = selftest(&out, steps, 1);
    let plan = wf.plan().expect("plan");
    let journal = SledJournal::open(&root.join("j-journal"), true).expect("journal");
    let run = RunRecord {
        id: "bench".into(),
        workflow: "selftest".into(),
        args: vec![],
        status: RunStatus::Running,
        generation: 0,
        config_hash: wf.config_hash(),
        created_ms: now_ms(),
        updated_ms: now_ms(),
        message: None,
        attrs: Default::default(),
    };
    journal.create(&run, &plan).expect("create");
    let artifact_file = out.join("a.out");
    std::fs::write(&artifact_file, "x".repeat(65)).expect("artifact");
    let artifact = Artifact::from_file(&artifact_file).expect("artifact");
    let mut times = Vec::with_capacity(steps);
    for (seq, spec) in plan.steps.iter().enumerate() {
        let mut output = StepOutput::with_value(&"0".repeat(64)).expect("value");
        output.artifacts.push(artifact.clone());
        output.metrics.insert("rows".into(), 1);
        let record = StepRecord {
            id: spec.id.clone(),
            generation: 0,
            status: StepStatus::Done,
            attempts: 1,
            output: Some(output),
            error: None,
            started_ms: now_ms(),
            finished_ms: Some(now_ms()),
            done_seq: seq as u64 + 1,
        };
        let event = wf_engine::model::EventKind::StepSucceeded {
            step: spec.id.clone(),
            attempt: 1,
            duration_ms: 0,
        };
        let commit = Commit {
            steps: vec![record],
            events: vec![(0, event)],
            ..Commit::default()
        };
        let t = Instant::now();
        journal.commit(&commit).expect("commit");
        times.push(t.elapsed());
    }
    times.sort();
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    println!(
        "journal commit per step ({steps} steps, sled transaction + flush + fdatasync): p50 {:.3} ms, p99 {:.3} ms, mean {:.3} ms, max {:.3} ms",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        ms(mean),
        ms(*times.last().expect("times"))
    );
}

/// 2 and 3: the runner end to end, then resumes of the fully recorded run.
fn runner_and_resume(
    rt: &tokio::runtime::Runtime,
    root: &std::path::Path,
    steps: usize,
    jobs: usize,
) {
    let data = root.join(format!("data-j{jobs}"));
    let out = root.join(format!("out-j{jobs}"));
    std::fs::create_dir_all(&out).expect("out dir");
    let engine = Engine::new(DataDir::new(&data));
    let wf: Arc<dyn Workflow> = Arc::new(selftest(&out, steps, jobs));
    let options = RunOptions {
        jobs,
        ..RunOptions::default()
    };
    let t = Instant::now();
    let open = engine.create(wf.as_ref(), vec![]).expect("create");
    let id = open.run.id.clone();
    let outcome = rt
        .block_on(engine.execute(
            open,
            wf.clone(),
            options.clone(),
            Arc::new(Silent),
            Stop::default(),
        ))
        .expect("execute");
    assert_eq!(outcome, Outcome::Done);
    let total = t.elapsed();
    println!(
        "selftest {steps} no-op steps end to end, --jobs {jobs}: {:.2} s, {:.3} ms/step, {:.0} steps/s",
        total.as_secs_f64(),
        ms(total) / steps as f64,
        steps as f64 / total.as_secs_f64()
    );
    if jobs != 1 {
        return;
    }
    let mut times = Vec::new();
    for _ in 0..10 {
        // Make it look like the runner died right after recording the last step.
        {
            let journal =
                SledJournal::open(&engine.data().journal_path(&id), false).expect("journal");
            let mut run = journal.run().expect("run");
            run.status = RunStatus::Running;
            journal
                .commit(&Commit {
                    run: Some(run),
                    ..Commit::default()
                })
                .expect("reset");
        }
        let t = Instant::now();
        let open = engine.open(&id).expect("open");
        let outcome = rt
            .block_on(engine.execute(
                open,
                wf.clone(),
                options.clone(),
                Arc::new(Silent),
                Stop::default(),
            ))
            .expect("resume");
        times.push(t.elapsed());
        assert_eq!(outcome, Outcome::Done);
    }
    times.sort();
    println!(
        "resume of a fully recorded {steps}-step run (lock + open + load + {steps} artifact checks + decide + record done): p50 {:.1} ms, max {:.1} ms (10 resumes)",
        ms(percentile(&times, 0.5)),
        ms(*times.last().expect("times"))
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists; nothing to list here.
    }
    let steps: usize = std::env::var("WF_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let root = tempfile::tempdir().expect("temp dir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    journal_cost(root.path(), steps);
    runner_and_resume(&rt, root.path(), steps, 1);
    runner_and_resume(&rt, root.path(), steps, 4);
}
