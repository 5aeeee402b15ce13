//! Recovering to a checkpoint redoes the steps of later checkpoints that a fan-out ran early:
//! `discover` spawns `check/a` (a step of the later `gated` checkpoint); `leak` depends on
//! `discover`, so it waits for `check/a` too, yet `wf recover <run> scanned` must run `check/a`
//! again (its rules may have changed) and keep `leak`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use wf_engine::{
    Checkpoint, DataDir, Engine, EngineError, Outcome, Plan, RunOptions, Silent, Step, StepContext,
    StepError, StepOutput, StepSpec, Stop, Workflow,
};

#[derive(Default)]
struct Counts(Mutex<HashMap<String, usize>>);

struct Pipe(Arc<Counts>);

struct Node(Arc<Counts>);

#[async_trait::async_trait]
impl Step for Node {
    async fn run(&self, cx: &StepContext) -> Result<StepOutput, StepError> {
        if let Ok(mut m) = self.0 .0.lock() {
            *m.entry(cx.step_id.clone()).or_default() += 1;
        }
        let mut out = StepOutput::with_value(&cx.step_id)?;
        if cx.step_id == "discover" {
            out.spawn.push(StepSpec::new("scan/a", "scan", vec![]));
            out.spawn
                .push(StepSpec::new("check/a", "check", vec!["scan/a".into()]));
        }
        Ok(out)
    }
}

impl Workflow for Pipe {
    fn name(&self) -> &str {
        "pipe"
    }
    fn run_prefix(&self) -> &str {
        "pipe"
    }
    fn config_hash(&self) -> String {
        "h".into()
    }
    fn plan(&self) -> Result<Plan, EngineError> {
        let cp = |name: &str, steps: &[&str]| Checkpoint {
            name: name.into(),
            steps: steps.iter().map(|s| s.to_string()).collect(),
        };
        Ok(Plan {
            steps: vec![
                StepSpec::new("discover", "discover", vec![]),
                StepSpec::new("leak", "leak", vec!["discover".into()]),
                StepSpec::new("gate", "gate", vec!["discover".into(), "leak".into()]),
            ],
            checkpoints: vec![
                cp("found", &["=discover"]),
                cp("scanned", &["leak", "scan/*"]),
                cp("gated", &["gate", "check/*"]),
            ],
        })
    }
    fn step(&self, _spec: &StepSpec) -> Result<Arc<dyn Step>, EngineError> {
        Ok(Arc::new(Node(self.0.clone())))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_redoes_a_later_checkpoints_pipelined_steps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::new(DataDir::new(dir.path()));
    let counts = Arc::new(Counts::default());
    let wf = Arc::new(Pipe(counts.clone()));
    let run = |open| {
        let (engine, wf) = (&engine, wf.clone());
        async move {
            let opts = RunOptions {
                jobs: 2,
                ..RunOptions::default()
            };
            engine
                .execute(open, wf, opts, Arc::new(Silent), Stop::default())
                .await
        }
    };
    let open = engine.create(wf.as_ref(), vec![]).expect("create");
    let id = open.run.id.clone();
    assert_eq!(run(open).await.expect("first"), Outcome::Done);
    let mut open = engine.open(&id).expect("open");
    let invalidated = engine
        .recover(&mut open, "scanned", wf.as_ref())
        .expect("recover");
    assert_eq!(invalidated, 2, "check/a and gate are redone");
    assert_eq!(run(open).await.expect("after recover"), Outcome::Done);
    let counts = counts.0.lock().expect("counts").clone();
    let n = |id: &str| counts.get(id).copied().unwrap_or(0);
    assert_eq!(
        (
            n("discover"),
            n("scan/a"),
            n("leak"),
            n("check/a"),
            n("gate")
        ),
        (1, 1, 1, 2, 2)
    );
}
