//! What each `wf` command does, once its arguments are parsed.

use crate::cli::{emit, exit, say, Cli, Command};
use crate::environment::{analyze, cert, seed, select_districts};
use crate::logging::RunLog;
use crate::progress::Bars;
use crate::registry::{self, BuildError, Built};
use crate::show;
use anyhow::Context;
use clap::Parser;
use std::sync::Arc;
use wf_engine::{Control, ControlOutcome, DataDir, Engine, EngineError, OpenRun, Outcome, Stop};

/// Runs the parsed command; `Ok` carries the exit code.
pub async fn dispatch(cli: Cli, log: RunLog) -> anyhow::Result<u8> {
    let engine = Engine::new(DataDir::new(&cli.data_dir));
    match cli.command {
        Command::Run {
            workflow,
            args,
            run_id,
        } => {
            start(
                &engine,
                &workflow,
                &args,
                &cli.config,
                &log,
                run_id.as_deref(),
            )
            .await
        }
        Command::Refresh {
            district,
            args,
            run_id,
        } => {
            let all = refresh_args(&engine, district, args, &cli.config)?;
            start(
                &engine,
                "migrate",
                &all,
                &cli.config,
                &log,
                run_id.as_deref(),
            )
            .await
        }
        Command::Resume { run, jobs } => resume(&engine, &run, None, jobs, &cli.config, &log).await,
        Command::Recover {
            run,
            checkpoint,
            jobs,
        } => resume(&engine, &run, Some(&checkpoint), jobs, &cli.config, &log).await,
        Command::Pause { run } => control(&engine, &run, Control::Pause),
        Command::Cancel { run } => control(&engine, &run, Control::Cancel),
        Command::Analyze { json } => analyze(&cli.config, &engine, json).await,
        Command::SelectDistricts { json } => select_districts(&cli.config, &engine, json).await,
        Command::Rollback {
            run,
            yes,
            rebuild_manifests,
        } => crate::rollback::rollback(&engine, &run, yes, rebuild_manifests, &cli.config).await,
        Command::Runs { json } => show::runs(&engine, json),
        Command::Status { run, json, all } => show::status(&engine, &run, json, all),
        Command::Checkpoints { run, json } => show::checkpoints(&engine, &run, json),
        Command::Log { run, json } => show::log(&engine, &run, json),
        Command::Serve(args) => crate::serve::serve(engine, args).await,
        Command::Batch { args } => start(&engine, "batch", &args, &cli.config, &log, None).await,
        Command::Validate { run, json } => {
            crate::post::validate(&engine, &run, &cli.config, json).await
        }
        Command::Report { run, json } => crate::post::report(&engine, &run, json),
        Command::Seed { env, scale } => seed(&cli.config, &engine, scale, env == "cert").await,
        Command::Purge {
            run,
            raw,
            older_than,
        } => {
            if older_than.is_some() && !raw {
                anyhow::bail!("--older-than goes with --raw: wf purge --raw --older-than 24h");
            }
            crate::purge::command(&engine, run.as_deref(), older_than.as_deref())
        }
        Command::Cert { action, stores } => cert(&cli.config, &engine, &action, &stores).await,
        Command::Audit { action, run, json } => {
            let text = crate::audit::command(engine.data().root(), &action, run.as_deref(), json)?;
            Ok(emit(&text))
        }
        Command::Demo { district, scale } => {
            let p = crate::demo::prepare(&engine, &district, scale).await?;
            let code = start(&engine, "migrate", &p.args, &p.config, &log, None).await?;
            crate::demo::finish(&p, code);
            Ok(code)
        }
    }
}

/// `wf refresh`'s migrate arguments: the run that holds the district replaced, and
/// `--incremental` dropped, saying why, when that run was anonymized under another key or rules.
fn refresh_args(
    engine: &Engine,
    district: String,
    args: Vec<String>,
    default_config: &std::path::Path,
) -> anyhow::Result<Vec<String>> {
    let config = args
        .iter()
        .position(|a| a == "--config-file")
        .and_then(|i| args.get(i + 1))
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| default_config.to_path_buf());
    let prev = crate::refresh::current_run(engine, &district, &config)?;
    say(&format!(
        "refresh of district {district}: replaces run {prev}"
    ));
    let mut all = vec![
        "--district".to_string(),
        district.clone(),
        "--replaces".into(),
        prev.clone(),
    ];
    all.extend(args);
    if all.iter().any(|a| a == "--incremental") {
        let attrs = build("migrate", &all, default_config)?.workflow.attrs();
        if let Some(why) = crate::refresh::changed_since(engine, &prev, &attrs)? {
            say(&format!(
                "refresh of district {district}: {why}: every row changes, so it replaces the district whole, not by difference"
            ));
            all.retain(|a| a != "--incremental");
        }
    }
    Ok(all)
}

fn build(name: &str, args: &[String], config: &std::path::Path) -> anyhow::Result<Built> {
    built(registry::build(name, args, config))
}

fn built(result: Result<Built, BuildError>) -> anyhow::Result<Built> {
    match result {
        Ok(b) => Ok(b),
        Err(BuildError::Args(e)) => Err(e.into()),
        Err(BuildError::Failed(m)) => Err(anyhow::anyhow!(m)),
        Err(BuildError::Unknown(n)) => {
            Err(EngineError::UnknownWorkflow(n, registry::WORKFLOWS.join(", ")).into())
        }
    }
}

pub(crate) async fn start(
    engine: &Engine,
    name: &str,
    args: &[String],
    config: &std::path::Path,
    log: &RunLog,
    run_id: Option<&str>,
) -> anyhow::Result<u8> {
    let built = build(name, args, config)?;
    // Every name in the config and rules exists, every env: connection is set: before a run exists.
    if let Some((p, file)) = &built.preflight {
        wf_steps::preflight::check(p, file)
            .await
            .map_err(anyhow::Error::msg)?;
    }
    let (workflow, args) = (built.workflow.as_ref(), built.args.clone());
    let open = match run_id {
        Some(id) => engine.create_as(workflow, args, id)?,
        None => engine.create(workflow, args)?,
    };
    say(&open.run.id);
    execute(engine, open, built, None, log).await
}

async fn resume(
    engine: &Engine,
    run: &str,
    checkpoint: Option<&str>,
    jobs: Option<usize>,
    config: &std::path::Path,
    log: &RunLog,
) -> anyhow::Result<u8> {
    let mut open = engine.open(run)?;
    let built = built(registry::rebuild(&open.run, config))?;
    // Another anonymization key would produce outputs that do not join with those already made.
    let (was, now) = (
        open.run.attrs.get("key_fingerprint"),
        built.workflow.attrs().get("key_fingerprint").cloned(),
    );
    if let (Some(was), Some(now)) = (was, now) {
        if *was != now {
            anyhow::bail!(
                "run {run} started with another anonymization key (fingerprint {was}, now {now}): resume with the original key, or start a new run"
            );
        }
    }
    if let Some(cp) = checkpoint {
        // A recover applies the current config: its names are checked as a new run's are.
        if let Some((p, file)) = &built.preflight {
            wf_steps::preflight::check(p, file)
                .await
                .map_err(anyhow::Error::msg)?;
        }
        let n = engine.recover(&mut open, cp, built.workflow.as_ref())?;
        say(&format!(
            "run {run}: recovered from checkpoint {cp}, generation {}; {n} step records moved to history",
            open.run.generation
        ));
    }
    execute(engine, open, built, jobs, log).await
}

async fn execute(
    engine: &Engine,
    open: OpenRun,
    built: Built,
    jobs: Option<usize>,
    log: &RunLog,
) -> anyhow::Result<u8> {
    let id = open.run.id.clone();
    let log_path = engine.data().log_path(&id);
    log.set(&log_path)
        .with_context(|| format!("cannot open the run log {}", log_path.display()))?;
    for dir in &built.dirs {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create {} for run {id}", dir.display()))?;
    }
    let mut options = built.runner.options();
    if let Some(j) = jobs {
        options.jobs = j.max(1);
    }
    let stop = Stop::default();
    let signals = tokio::spawn(watch_signals(stop.clone(), id.clone()));
    tracing::info!(run = %id, workflow = %open.run.workflow, generation = open.run.generation, "Runner starting");
    let is_migrate = built.workflow.name() == "migrate";
    let is_batch = built.workflow.name() == "batch";
    let keep_raw = built.keep_raw;
    let replaces = built.workflow.attrs().get("replaces").cloned();
    let dry_run = built.preflight.as_ref().is_some_and(|(p, _)| p.dry_run);
    let notifier = crate::notify::Notifier::new(built.notify.clone(), engine.data().root());
    let base = crate::notify::Event::new(
        "",
        &id,
        built.workflow.name(),
        built.workflow.attrs().get("district").cloned(),
    );
    let live = crate::live::Live::new(Arc::new(Bars::new()), &engine.data().run_dir(&id));
    let watch = crate::notify::Watch::start(Arc::new(live), notifier.clone(), base.clone());
    let outcome = engine
        .execute(open, built.workflow, options, watch.clone(), stop)
        .await;
    watch.end();
    signals.abort();
    let outcome = outcome?;
    tracing::info!(run = %id, ?outcome, "Runner finished");
    if is_migrate {
        crate::refresh::after_run(engine, &id, &outcome, dry_run, replaces.as_deref());
        crate::purge::after_run(engine, &id, &outcome, keep_raw);
        audit_session(engine, &id);
        match crate::report::write(engine, &id) {
            Ok(p) => say(&format!("report: {}", p.display())),
            Err(e) => eprintln!("wf: run {id}: could not write its report: {e}"),
        }
    }
    let code = if is_batch {
        batch_summary(engine, &id, &outcome)?
    } else {
        run_summary(&id, &outcome, dry_run)
    };
    if let Some(e) = ended_event(&base, &outcome, code) {
        notifier.send(&e);
    }
    notifier.flush();
    Ok(code)
}

/// The `[[notify]]` event of a run or batch that ended (a batch with a failed district failed).
fn ended_event(
    base: &crate::notify::Event,
    outcome: &Outcome,
    code: u8,
) -> Option<crate::notify::Event> {
    let id = &base.run;
    let (event, message, next) = match outcome {
        Outcome::Done if code == exit::DONE => ("done", None, None),
        Outcome::Done => (
            "failed",
            Some("a district did not finish".to_string()),
            Some(format!("wf resume {id}")),
        ),
        Outcome::AlreadyDone => return None,
        Outcome::Failed { step, error } => (
            "failed",
            Some(format!("step {step}: {error}")),
            Some(format!("wf resume {id}")),
        ),
        Outcome::FailedGate { step, error } => (
            "failed_validation",
            Some(format!("step {step}: {error}")),
            Some(format!("wf recover {id} <checkpoint>")),
        ),
        Outcome::Paused { reason } => (
            "paused",
            Some(reason.clone()),
            Some(format!("wf resume {id}")),
        ),
        Outcome::Cancelled => ("cancelled", None, None),
    };
    let e = crate::notify::Event {
        event: event.into(),
        ..base.clone()
    };
    Some(e.with(message, next))
}

/// The end of a run on the terminal; its exit code.
fn run_summary(id: &str, outcome: &Outcome, dry_run: bool) -> u8 {
    match outcome {
        Outcome::Done if dry_run => {
            say(&format!(
                "run {id} done_dry_run: nothing was committed to CERT"
            ));
            exit::DONE
        }
        Outcome::Done => {
            say(&format!("run {id} done"));
            exit::DONE
        }
        Outcome::AlreadyDone => {
            say(&format!("run {id} is already done"));
            exit::DONE
        }
        Outcome::Failed { step, error } => {
            eprintln!("wf: run {id} failed at step {step}: {error}");
            eprintln!("wf: fix the cause, then: wf resume {id}");
            exit::FAILED
        }
        Outcome::FailedGate { step, error } => {
            eprintln!("wf: run {id} failed validation at step {step}: {error}");
            eprintln!("wf: fix the data or the rules, then: wf recover {id} <checkpoint>");
            exit::FAILED_VALIDATION
        }
        Outcome::Paused { reason } => {
            say(&format!(
                "run {id} paused ({reason}); continue with: wf resume {id}"
            ));
            exit::PAUSED
        }
        Outcome::Cancelled => {
            say(&format!("run {id} cancelled"));
            exit::CANCELLED
        }
    }
}

/// One audit line per store a rollback committed in (each store is its own transaction, so a
/// later store's failure does not undo it): rows, nodes and relationships deleted per table.
/// One audit line for the session of a migrate run that just ended: what it read and wrote.
fn audit_session(engine: &Engine, id: &str) {
    match engine.outputs(id) {
        Ok((record, outputs)) => {
            let status = record.status.as_str().to_string();
            let details = crate::audit::run_details(&record, &outputs, &status);
            crate::audit::record(engine.data().root(), "migrate", Some(id), details);
        }
        Err(e) => eprintln!("wf: audit: could not read run {id} to record it: {e}"),
    }
}

/// The end of a batch: a table of its districts; non-zero when any district did not finish.
fn batch_summary(engine: &Engine, id: &str, outcome: &Outcome) -> anyhow::Result<u8> {
    let (_, outputs) = engine.outputs(id)?;
    let results = crate::batch::results(&outputs);
    let mut table = format!(
        "{:<12} {:<22} {:<18} {:>10}\n",
        "DISTRICT", "RUN", "STATUS", "ROWS"
    );
    for r in &results {
        let rows: u64 = std::fs::read(
            engine
                .data()
                .root()
                .join("reports")
                .join(format!("{}.json", r.run)),
        )
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            v["tables"]
                .as_object()
                .map(|t| t.values().filter_map(|x| x["loaded"].as_u64()).sum())
        })
        .unwrap_or(0);
        table.push_str(&format!(
            "{:<12} {:<22} {:<18} {:>10}\n",
            r.district, r.run, r.status, rows
        ));
    }
    emit(&table);
    let failed: Vec<&crate::batch::DistrictResult> =
        results.iter().filter(|r| r.exit_code != 0).collect();
    for r in &failed {
        eprintln!(
            "wf: district {} ({}): {} {}",
            r.district, r.run, r.status, r.message
        );
    }
    Ok(match outcome {
        Outcome::Done | Outcome::AlreadyDone if failed.is_empty() => {
            say(&format!("batch {id} done: {} districts", results.len()));
            exit::DONE
        }
        Outcome::Done | Outcome::AlreadyDone => {
            eprintln!(
                "wf: batch {id}: {} of {} districts did not finish; see their reports",
                failed.len(),
                results.len()
            );
            exit::FAILED
        }
        Outcome::Paused { reason } => {
            say(&format!(
                "batch {id} paused ({reason}); continue with: wf resume {id}"
            ));
            exit::PAUSED
        }
        Outcome::Cancelled => exit::CANCELLED,
        Outcome::Failed { step, error } | Outcome::FailedGate { step, error } => {
            eprintln!("wf: batch {id} failed at {step}: {error}; continue with: wf resume {id}");
            exit::FAILED
        }
    })
}

/// First Ctrl-C or SIGTERM: stop at the next step boundary. Second: abort running steps.
async fn watch_signals(stop: Stop, run: String) {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        return;
    };
    for round in 0..2 {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        if round == 0 {
            eprintln!(
                "wf: stopping run {run} at the next step boundary (again to abort running steps)"
            );
            stop.graceful.cancel();
        } else {
            eprintln!("wf: aborting the running steps of run {run}");
            stop.abort.cancel();
        }
    }
}

fn control(engine: &Engine, run: &str, control: Control) -> anyhow::Result<u8> {
    let verb = match control {
        Control::Pause => "pause",
        Control::Cancel => "cancel",
    };
    match engine.control(run, control)? {
        ControlOutcome::Requested => say(&format!(
            "{verb} requested: run {run} stops at its next step boundary"
        )),
        ControlOutcome::Applied(s) => {
            say(&format!("run {run} is now {}", s.as_str()));
            // Cancelled is terminal: the raw PII goes unless the run keeps it.
            if let Ok(v) = engine.status(run) {
                let keep = v.attrs.get("keep_raw").is_some_and(|k| k == "true");
                crate::purge::after_run(engine, run, &Outcome::Cancelled, keep);
            }
        }
    }
    Ok(exit::DONE)
}

/// Prints `e` once, as one line, and picks the exit code from its kind.
pub fn report_error(e: &anyhow::Error) -> u8 {
    if let Some(c) = e.downcast_ref::<clap::Error>() {
        let _ = c.print();
        return c.exit_code().clamp(0, 255) as u8;
    }
    if let Some(store) = e.downcast_ref::<wf_stores::StoreError>() {
        eprintln!("wf: {store}");
        return exit::ERROR;
    }
    if let Some(engine) = e.downcast_ref::<EngineError>() {
        eprintln!("wf: {engine}");
        return match engine {
            EngineError::UnknownRun(_)
            | EngineError::UnknownCheckpoint { .. }
            | EngineError::UnknownWorkflow(..)
            | EngineError::CheckpointNotReached { .. }
            | EngineError::WrongState { .. } => exit::USAGE,
            EngineError::Busy { .. } => exit::BUSY,
            _ => exit::ERROR,
        };
    }
    eprintln!("wf: {e:#}");
    exit::ERROR
}

/// Parses the command line and runs it; the process's exit code.
pub fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return std::process::ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    let log = crate::logging::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wf: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(exit::ERROR);
        }
    };
    let outcome = runtime.block_on(dispatch(cli, log));
    // Everything the command writes is durable before `dispatch` returns. Shutdown is bounded: a
    // sqlx 0.9 pool maintenance task was seen spinning without yielding after a run had ended,
    // and a plain drop of the runtime waits for its worker forever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match outcome {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            let code = report_error(&e);
            std::process::ExitCode::from(code)
        }
    }
}
