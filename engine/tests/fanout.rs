//! Dynamic fan-out through the real runner and journal: a `discover` step adds one `extract/<t>` step
//! per table; `report` (which depends on `discover`) must wait for all of them, and a resume must
//! replay the added steps from the journal without running discovery again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use wf_engine::{
    Checkpoint, DataDir, Engine, EngineError, Outcome, Plan, RunOptions, Silent, Step, StepContext,
    StepError, StepOutput, StepSpec, Stop, Workflow,
};

#[derive(Default)]
struct Counts(Mutex<HashMap<String, usize>>);

impl Counts {
    fn bump(&self, id: &str) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(id.to_string()).or_default() += 1;
        }
    }
    fn get(&self, id: &str) -> usize {
        self.0
            .lock()
            .map(|m| m.get(id).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

struct Fan {
    counts: Arc<Counts>,
    fail: Arc<Mutex<Option<String>>>,
    /// `discover` is session-bound; `extract/a` is cohort x, `extract/b` and `extract/c` cohort y.
    session: bool,
}

struct Node {
    counts: Arc<Counts>,
    fail: Arc<Mutex<Option<String>>>,
    kind: String,
    /// c after b too (the session test needs b done before c fails).
    chain: bool,
}

#[async_trait::async_trait]
impl Step for Node {
    async fn run(&self, cx: &StepContext) -> Result<StepOutput, StepError> {
        self.counts.bump(&cx.step_id);
        if self
            .fail
            .lock()
            .map(|f| f.as_deref() == Some(cx.step_id.as_str()))
            .unwrap_or(false)
        {
            return Err(StepError::Fatal(format!("{} told to fail", cx.step_id)));
        }
        match self.kind.as_str() {
            "discover" => {
                let mut out = StepOutput::with_value(&3u32)?;
                for t in ["a", "b", "c"] {
                    out.spawn
                        .push(StepSpec::new(format!("extract/{t}"), "extract", vec![]));
                }
                // b after a, to check deps among spawned steps.
                out.spawn[1].deps.push("extract/a".into());
                if self.chain {
                    out.spawn[2].deps.push("extract/b".into());
                }
                Ok(out)
            }
            _ => {
                let mut inputs: Vec<&String> = cx.inputs.keys().collect();
                inputs.sort();
                let joined = inputs
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(",");
                StepOutput::with_value(&joined)
            }
        }
    }
}

impl Workflow for Fan {
    fn name(&self) -> &str {
        "fan"
    }
    fn run_prefix(&self) -> &str {
        "fan"
    }
    fn config_hash(&self) -> String {
        "h".into()
    }
    fn plan(&self) -> Result<Plan, EngineError> {
        Ok(Plan {
            steps: vec![
                StepSpec::new("discover", "discover", vec![]),
                StepSpec::new("report", "report", vec!["discover".into()]),
            ],
            checkpoints: vec![
                Checkpoint {
                    name: "found".into(),
                    steps: vec!["discover".into()],
                },
                Checkpoint {
                    name: "reported".into(),
                    steps: vec!["report".into()],
                },
            ],
        })
    }
    fn session_bound(&self, spec: &StepSpec) -> bool {
        self.session && spec.id == "discover"
    }
    fn cohort(&self, spec: &StepSpec) -> Option<String> {
        match spec.id.as_str() {
            "extract/a" => Some("x".into()),
            "extract/b" | "extract/c" => Some("y".into()),
            _ => None,
        }
    }
    fn step(&self, spec: &StepSpec) -> Result<Arc<dyn Step>, EngineError> {
        Ok(Arc::new(Node {
            counts: self.counts.clone(),
            fail: self.fail.clone(),
            kind: spec.kind.clone(),
            chain: self.session,
        }))
    }
}

fn setup() -> (tempfile::TempDir, Engine, Arc<Fan>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::new(DataDir::new(dir.path()));
    let wf = Arc::new(Fan {
        counts: Arc::new(Counts::default()),
        fail: Arc::new(Mutex::new(None)),
        session: false,
    });
    (dir, engine, wf)
}

/// Runs `open` to its end with the test options.
async fn execute(
    engine: &Engine,
    open: wf_engine::OpenRun,
    wf: &Arc<Fan>,
) -> Result<Outcome, EngineError> {
    engine
        .execute(
            open,
            wf.clone(),
            options(),
            Arc::new(Silent),
            Stop::default(),
        )
        .await
}

fn options() -> RunOptions {
    RunOptions {
        jobs: 2,
        ..RunOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_steps_run_before_the_spawners_dependents() {
    let (_dir, engine, wf) = setup();
    let open = engine.create(wf.as_ref(), vec![]).expect("create");
    let id = open.run.id.clone();
    let outcome = execute(&engine, open, &wf).await.expect("execute");
    assert_eq!(outcome, Outcome::Done);
    let status = engine.status(&id).expect("status");
    let ids: Vec<&str> = status.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        ["discover", "report", "extract/a", "extract/b", "extract/c"]
    );
    let report = status
        .steps
        .iter()
        .find(|s| s.id == "report")
        .expect("report");
    let mut deps = report.deps.clone();
    deps.sort();
    assert_eq!(deps, ["discover", "extract/a", "extract/b", "extract/c"]);
    let found = status
        .checkpoints
        .iter()
        .find(|c| c.name == "found")
        .expect("found");
    assert!(found.reached);
    assert_eq!(
        found.steps_total, 4,
        "the checkpoint covers what its step spawned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_replays_spawned_steps_without_rediscovering() {
    let (_dir, engine, wf) = setup();
    *wf.fail.lock().expect("lock") = Some("extract/b".into());
    let open = engine.create(wf.as_ref(), vec![]).expect("create");
    let id = open.run.id.clone();
    let outcome = execute(&engine, open, &wf).await.expect("execute");
    assert!(
        matches!(outcome, Outcome::Failed { ref step, .. } if step == "extract/b"),
        "{outcome:?}"
    );
    assert_eq!(
        wf.counts.get("report"),
        0,
        "report waits for every spawned step"
    );
    *wf.fail.lock().expect("lock") = None;
    let open = engine.open(&id).expect("open");
    let outcome = execute(&engine, open, &wf).await.expect("resume");
    assert_eq!(outcome, Outcome::Done);
    assert_eq!(wf.counts.get("discover"), 1, "discovery is not run again");
    assert_eq!(wf.counts.get("extract/a"), 1);
    assert_eq!(wf.counts.get("extract/b"), 2);
    assert_eq!(wf.counts.get("report"), 1);
    assert_eq!(engine.status(&id).expect("status").counts.done, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_from_a_spawners_checkpoint_keeps_the_spawned_steps() {
    let (_dir, engine, wf) = setup();
    let open = engine.create(wf.as_ref(), vec![]).expect("create");
    let id = open.run.id.clone();
    execute(&engine, open, &wf).await.expect("execute");
    let mut open = engine.open(&id).expect("open");
    let n = engine
        .recover(&mut open, "found", wf.as_ref())
        .expect("recover");
    assert_eq!(
        n, 1,
        "only report is after `found` (which covers the spawned extracts)"
    );
    let outcome = execute(&engine, open, &wf).await.expect("after recover");
    assert_eq!(outcome, Outcome::Done);
    assert_eq!(wf.counts.get("extract/a"), 1);
    assert_eq!(wf.counts.get("report"), 2);
    let status = engine.status(&id).expect("status");
    assert_eq!(status.generation, 1);
    assert_eq!(status.steps.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_created_under_an_id_allocated_beforehand() {
    let (_dir, engine, wf) = setup();
    let id = engine
        .data()
        .allocate_run_id(wf.run_prefix())
        .expect("allocate");
    assert!(!engine.data().has_run(&id), "allocated, not created yet");
    let open = engine
        .create_as(wf.as_ref(), vec![], &id)
        .expect("create_as");
    assert_eq!(open.run.id, id);
    // While it is held, and once it exists, a second creation under the same id is refused.
    let held = engine.create_as(wf.as_ref(), vec![], &id);
    assert!(matches!(held, Err(EngineError::Busy { .. })), "held");
    let outcome = execute(&engine, open, &wf).await.expect("execute");
    assert_eq!(outcome, Outcome::Done);
    let again = engine.create_as(wf.as_ref(), vec![], &id);
    assert!(matches!(again, Err(EngineError::Busy { .. })), "created");
    for bad in ["never-allocated", "../x", ""] {
        let e = engine.create_as(wf.as_ref(), vec![], bad);
        assert!(matches!(e, Err(EngineError::UnknownRun(_))), "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_re_runs_a_session_bound_spawner_and_its_broken_cohorts_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::new(DataDir::new(dir.path()));
    let wf = Arc::new(Fan {
        counts: Arc::new(Counts::default()),
        fail: Arc::new(Mutex::new(Some("extract/c".into()))),
        session: true,
    });
    let open = engine.create(wf.as_ref(), vec![]).expect("create");
    let id = open.run.id.clone();
    let outcome = execute(&engine, open, &wf).await.expect("execute");
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    assert_eq!(wf.counts.get("extract/b"), 1, "b finished before c failed");
    *wf.fail.lock().expect("lock") = None;
    // A new runner: discover's state is gone; cohort y (b done, c not) runs again, x keeps a.
    let open = engine.open(&id).expect("open");
    let outcome = execute(&engine, open, &wf).await.expect("resume");
    assert_eq!(outcome, Outcome::Done);
    assert_eq!(wf.counts.get("discover"), 2);
    assert_eq!(
        wf.counts.get("extract/a"),
        1,
        "a whole cohort keeps its steps"
    );
    assert_eq!(
        wf.counts.get("extract/b"),
        2,
        "a broken cohort runs again whole"
    );
    assert_eq!(wf.counts.get("extract/c"), 2);
    assert_eq!(wf.counts.get("report"), 1);
    let lost: Vec<Vec<String>> = engine
        .events(&id)
        .expect("events")
        .into_iter()
        .filter_map(|e| match e.kind {
            wf_engine::model::EventKind::SessionLost { step, rerun } if step == "discover" => {
                Some(rerun)
            }
            _ => None,
        })
        .collect();
    assert_eq!(lost, vec![vec!["extract/b".to_string()]]);
    let status = engine.status(&id).expect("status");
    assert_eq!(status.counts.done, 5);
    assert!(status.checkpoints.iter().all(|c| c.reached));
    // A session whose spawned steps all finished changes nothing.
    let open = engine.open(&id).expect("open");
    assert_eq!(
        execute(&engine, open, &wf).await.expect("again"),
        Outcome::AlreadyDone
    );
    assert_eq!(wf.counts.get("discover"), 2);
}
