//! Raw (PII) staging lifetime: deleted when a migrate run ends in a terminal state unless it was
//! started with `--keep-raw`, and on demand with `wf purge <run>` / `wf purge --raw --older-than`.

use crate::cli::say;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use wf_engine::Engine;

/// The directories that hold a run's raw extract: the plan's (`steps/extract/raw`, the tables)
/// and the graph's step's (`steps/extract~<graph>/raw`).
pub fn raw_dirs(engine: &Engine, run: &str) -> Vec<PathBuf> {
    let steps = engine.data().run_dir(run).join("steps");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&steps)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name == "extract" || name.starts_with("extract~")
        })
        .map(|e| e.path().join("raw"))
        .filter(|d| d.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// True while the run still holds raw PII files.
pub fn holds_raw(engine: &Engine, run: &str) -> bool {
    raw_dirs(engine, run).iter().any(|d| {
        std::fs::read_dir(d)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    })
}

/// Deletes a run's raw staging; how many files went.
pub fn purge_raw(engine: &Engine, run: &str) -> anyhow::Result<u64> {
    let mut n = 0;
    for dir in raw_dirs(engine, run) {
        let entries = match std::fs::read_dir(&dir) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => anyhow::bail!("cannot read {}: {e}", dir.display()),
        };
        for entry in entries {
            let path = entry?.path();
            std::fs::remove_file(&path)
                .map_err(|e| anyhow::anyhow!("cannot delete {}: {e}", path.display()))?;
            n += 1;
        }
    }
    if n > 0 {
        let details = serde_json::json!({"raw_files_deleted": n});
        crate::audit::record(engine.data().root(), "purge", Some(run), details);
    }
    Ok(n)
}

/// After a migrate run ends: a terminal state (done, failed for good, cancelled, failed
/// validation) deletes the raw staging unless the run keeps it. A paused run keeps it for resume.
pub fn after_run(engine: &Engine, run: &str, outcome: &wf_engine::Outcome, keep_raw: bool) {
    use wf_engine::Outcome as O;
    let terminal = matches!(
        outcome,
        O::Done | O::AlreadyDone | O::Failed { .. } | O::FailedGate { .. } | O::Cancelled
    );
    if !terminal || keep_raw {
        return;
    }
    match purge_raw(engine, run) {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            run,
            files = n,
            "Raw PII staging deleted at the end of the run"
        ),
        Err(e) => eprintln!(
            "wf: run {run}: could not delete its raw PII staging ({e:#}); run `wf purge {run}`"
        ),
    }
}

/// `wf purge <run>` or `wf purge --raw --older-than D`.
pub fn command(engine: &Engine, run: Option<&str>, older_than: Option<&str>) -> anyhow::Result<u8> {
    let runs: Vec<String> = match (run, older_than) {
        (Some(r), None) => {
            if !engine.data().run_dir(r).is_dir() {
                return Err(wf_engine::EngineError::UnknownRun(r.to_string()).into());
            }
            if engine.status(r).is_ok_and(|v| v.live) {
                anyhow::bail!(
                    "run {r} is running: its raw staging is in use; pause or cancel it first"
                );
            }
            vec![r.to_string()]
        }
        (None, Some(age)) => {
            let age: Duration = humantime::parse_duration(age)
                .map_err(|e| anyhow::anyhow!("--older-than {age}: {e} (for example 24h or 7d)"))?;
            let cutoff = SystemTime::now() - age;
            engine
                .data()
                .run_ids()?
                .into_iter()
                .filter(|id| {
                    // The newest raw directory's age: a run is purged once all of it is old.
                    let newest = raw_dirs(engine, id)
                        .iter()
                        .filter_map(|d| std::fs::metadata(d).and_then(|m| m.modified()).ok())
                        .max();
                    newest.is_some_and(|t| t < cutoff)
                })
                .collect()
        }
        _ => anyhow::bail!("give a run id, or --raw --older-than <age> (for example 24h)"),
    };
    let mut total = 0;
    for id in &runs {
        if run.is_none() && engine.status(id).is_ok_and(|v| v.live) {
            continue;
        }
        let n = purge_raw(engine, id)?;
        if n > 0 {
            say(&format!("run {id}: deleted {n} raw PII files"));
        }
        total += n;
    }
    if total == 0 {
        say("no raw PII staging to delete");
    }
    Ok(crate::cli::exit::DONE)
}
