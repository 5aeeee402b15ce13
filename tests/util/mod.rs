//! Test sandbox: a temp dir with a data dir and an out dir, and helpers to run `wf` and read results.

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};

/// An isolated place to run `wf`.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

/// A finished `wf` command.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("wf-data")
    }

    pub fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A `wf` command with this sandbox's data dir, run from the sandbox.
    pub fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut c = Command::new(env!("CARGO_BIN_EXE_wf"));
        c.args(args)
            .current_dir(self.dir.path())
            .env("WF_DATA_DIR", self.data())
            .env_remove("WF_FAILPOINT")
            .env_remove("WF_LOG");
        c
    }

    pub fn run<I, S>(&self, args: I) -> Ran
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        ran(self.cmd(args).output().expect("run wf"))
    }

    /// Spawns `wf run …` and returns the child and the run id it printed first.
    pub fn spawn_run(&self, args: &[&str], env: &[(&str, &str)]) -> (Child, String) {
        let (child, id, _rest) = self.spawn_run_with_stdout(args, env);
        (child, id)
    }

    /// Like `spawn_run`, also returning the rest of the child's stdout.
    pub fn spawn_run_with_stdout(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (Child, String, BufReader<ChildStdout>) {
        let mut c = self.cmd(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn wf");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).expect("read run id");
        let id = line.trim().to_string();
        assert!(
            id.starts_with("st-"),
            "expected a run id first, got {line:?}"
        );
        (child, id, reader)
    }

    /// Spawns `wf resume <run>` with its output discarded.
    pub fn spawn_resume(&self, run: &str) -> Child {
        self.cmd(["resume", run])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn wf resume")
    }

    /// `wf status --json`; while a runner that just started has not published its status yet
    /// (a one-line refusal, exit 5), waits for it as that message asks, up to 10 s.
    pub fn status(&self, run: &str) -> Value {
        let start = std::time::Instant::now();
        loop {
            let r = self.run(["status", run, "--json"]);
            let starting = r.stderr.contains("has not published its status yet");
            if r.code != Some(0) && starting && start.elapsed().as_secs() < 10 {
                std::thread::sleep(std::time::Duration::from_millis(50));
                continue;
            }
            assert_eq!(r.code, Some(0), "wf status failed: {}", r.stderr);
            return serde_json::from_str(&r.stdout).expect("status json");
        }
    }

    pub fn done_steps(&self, run: &str) -> HashSet<String> {
        steps_with_status(&self.status(run), "done")
    }
}

pub fn ran(o: Output) -> Ran {
    Ran {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

pub fn steps_with_status(status: &Value, want: &str) -> HashSet<String> {
    status["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["status"] == want)
        .map(|s| s["id"].as_str().expect("id").to_string())
        .collect()
}

/// The lines of `executions.log` as (step, attempt).
pub fn executions(out: &Path) -> Vec<(String, u32)> {
    let text = std::fs::read_to_string(out.join("executions.log")).unwrap_or_default();
    text.lines()
        .map(|l| {
            let (s, a) = l.rsplit_once(' ').expect("line `step attempt`");
            (s.to_string(), a.parse().expect("attempt number"))
        })
        .collect()
}

/// Recomputes every node's value from the graph in `status` (independently of wf's code) and checks
/// each step's `.out` file against it.
pub fn assert_outputs_correct(status: &Value, out: &Path) {
    let steps = status["steps"].as_array().expect("steps");
    let mut values: HashMap<String, String> = HashMap::new();
    for s in steps {
        let id = s["id"].as_str().expect("id");
        let mut deps: Vec<&str> = s["deps"]
            .as_array()
            .expect("deps")
            .iter()
            .map(|d| d.as_str().expect("dep"))
            .collect();
        deps.sort();
        let mut h = Sha256::new();
        h.update(id.as_bytes());
        for d in deps {
            h.update(b"\n");
            h.update(
                values
                    .get(d)
                    .expect("deps listed before dependents")
                    .as_bytes(),
            );
        }
        let v = hex::encode(h.finalize());
        let file = out.join(format!("{}.out", id.replace('/', "~")));
        let got =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(got.trim(), v, "wrong output in {}", file.display());
        values.insert(id.to_string(), v);
    }
}

/// Waits for `child` and returns its exit code and the rest of its stdout.
pub fn finish(mut child: Child, mut rest: BufReader<ChildStdout>) -> (Option<i32>, String) {
    let mut text = String::new();
    rest.read_to_string(&mut text).expect("read stdout");
    let status = child.wait().expect("wait");
    (status.code(), text)
}

/// Every line of the files under `dir` (recursively) that contains `needle`, for a failure's
/// message.
pub fn grep_dir(dir: &std::path::Path, needle: &str) -> String {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if let Ok(text) = std::fs::read_to_string(&p) {
                out.extend(
                    text.lines()
                        .filter(|l| l.contains(needle))
                        .map(String::from),
                );
            }
        }
    }
    out.join("\n")
}
