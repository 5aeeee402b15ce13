//! Logs: tracing to stderr (warnings by default, `WF_LOG` to change) and, once a run is known, to
//! `logs/<run>.log` at info level. Log lines carry ids, counts and errors, never row values.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{filter::LevelFilter, EnvFilter};

/// Where the per-run log goes; empty until `set` is called.
#[derive(Clone, Default)]
pub struct RunLog(Arc<Mutex<Option<File>>>);

impl RunLog {
    /// Starts appending this process's log lines to `path`.
    pub fn set(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(f);
        }
        Ok(())
    }
}

/// A writer into the run log; lines before `set` are dropped.
pub struct RunLogWriter(Arc<Mutex<Option<File>>>);

impl Write for RunLogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.lock() {
            Ok(mut slot) => match slot.as_mut() {
                Some(f) => f.write(buf),
                None => Ok(buf.len()),
            },
            Err(_) => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.0.lock() {
            Ok(mut slot) => slot.as_mut().map(|f| f.flush()).unwrap_or(Ok(())),
            Err(_) => Ok(()),
        }
    }
}

impl<'a> MakeWriter<'a> for RunLog {
    type Writer = RunLogWriter;
    fn make_writer(&'a self) -> Self::Writer {
        RunLogWriter(self.0.clone())
    }
}

/// Installs the subscriber; returns the handle that later points the file layer at a run's log.
pub fn init() -> RunLog {
    let run_log = RunLog::default();
    // sqlx warns of every statement slower than a second ("slow statement"); a night's batched
    // loads and rollbacks run many such statements on purpose, so those go to the run's log
    // file only, not the terminal.
    let stderr_filter = EnvFilter::try_from_env("WF_LOG")
        .unwrap_or_else(|_| EnvFilter::new("warn,sqlx::query=error"));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_filter(stderr_filter);
    let file = tracing_subscriber::fmt::layer()
        .with_writer(run_log.clone())
        .with_ansi(false)
        .with_filter(LevelFilter::INFO);
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file)
        .try_init();
    run_log
}
