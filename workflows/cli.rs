//! The `wf` command line: parse first (no I/O), then act; one-line errors; documented exit codes.

use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;

/// Exit codes, documented in the README and `wf --help`.
pub mod exit {
    pub const DONE: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const FAILED: u8 = 3;
    pub const PAUSED: u8 = 4;
    pub const BUSY: u8 = 5;
    pub const CANCELLED: u8 = 6;
    pub const FAILED_VALIDATION: u8 = 7;
}

const AFTER_HELP: &str =
    "Exit codes: 0 done · 1 error · 2 usage error (unknown run, workflow or checkpoint too) · \
3 run failed · 4 run paused (wf pause, Ctrl-C) · 5 run held by another runner · 6 run cancelled · \
7 run failed validation";

/// wf: a durable workflow engine. Runs survive crashes: `wf resume <run>` continues where they stopped.
#[derive(Debug, Parser)]
#[command(name = "wf", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Where journals, staging files, reports and logs live.
    #[arg(long, global = true, env = "WF_DATA_DIR", default_value = "wf-data")]
    pub data_dir: PathBuf,
    /// The configuration file: stores, links, rules (see config/wf.example.toml).
    #[arg(long, global = true, env = "WF_CONFIG", default_value = "wf.toml")]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a new run of a workflow (`wf run selftest --help` for its arguments); prints the run id first.
    Run {
        /// Use this id, allocated beforehand (by `wf batch`, which records it before the run exists).
        #[arg(long = "run-id", hide = true)]
        run_id: Option<String>,
        /// The workflow: selftest.
        workflow: String,
        /// The workflow's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Continue a paused, failed or interrupted run without redoing finished steps.
    Resume {
        run: String,
        /// Steps running at once (default: as the run was started).
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Rerun everything after a reached checkpoint (earlier results stay in the history).
    Recover {
        run: String,
        checkpoint: String,
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Ask a running run to stop at the next step boundary.
    Pause { run: String },
    /// Stop a run for good (running steps are aborted).
    Cancel { run: String },
    /// Discover every store (read-only): tables, keys, FKs, cycles, load order; writes analysis/.
    Analyze {
        #[arg(long)]
        json: bool,
    },
    /// Rank the districts by size, activity and completeness; recommend pilots; write the manifest.
    SelectDistricts {
        #[arg(long)]
        json: bool,
    },
    /// Replace a district in CERT with PROD's current data: a migrate whose loads delete the rows
    /// of the run that loaded it last, in the same transaction per store; that run becomes
    /// `superseded`. Takes `wf run migrate`'s arguments.
    Refresh {
        /// The district to refresh.
        #[arg(long)]
        district: String,
        /// Use this id, allocated beforehand (by `wf batch --refresh`).
        #[arg(long = "run-id", hide = true)]
        run_id: Option<String>,
        /// `wf run migrate` arguments (`--dry-run`, `--config-file`, `--jobs`, …).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Delete from CERT exactly the rows a migrate run inserted (children first); asks first.
    Rollback {
        run: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Rebuild missing or damaged rollback manifests from the run's anonymized staging first
        /// (for tables whose every staged row the load inserted).
        #[arg(long)]
        rebuild_manifests: bool,
    },
    /// List the runs.
    Runs {
        #[arg(long)]
        json: bool,
    },
    /// Show a run: status, steps, checkpoints, lease.
    Status {
        run: String,
        #[arg(long)]
        json: bool,
        /// List every step, not only those not done.
        #[arg(long)]
        all: bool,
    },
    /// List a run's checkpoints and whether they are reached.
    Checkpoints {
        run: String,
        #[arg(long)]
        json: bool,
    },
    /// A read-only dashboard of the runs and Prometheus metrics (`/metrics`), on 127.0.0.1:8737.
    Serve(ServeArgs),
    /// Show a run's event log.
    Log {
        run: String,
        #[arg(long)]
        json: bool,
    },
    /// Migrate several districts unattended, one run each (`wf batch --help`); resumable as a whole.
    Batch {
        /// --districts a,b,c | --manifest <file>, --parallel N, --config-file, then `--` and
        /// arguments for every migrate run.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Check CERT against a migrate run: row counts, checksums, references, PII leak scan.
    Validate {
        run: String,
        #[arg(long)]
        json: bool,
    },
    /// Write and print a migrate run's report (reports/<run>.md and .json).
    Report {
        run: String,
        #[arg(long)]
        json: bool,
    },
    /// Synthetic data for demos, tests and benchmarks: `--env prod` fills empty PROD stores (it
    /// refuses a database with tables, so never real PROD); `--env cert` creates the empty schema
    /// in CERT stores that have no tables.
    Seed {
        #[arg(long, value_parser = ["prod", "cert"])]
        env: String,
        /// Size: district 3 gets 1,200 students per unit (about 46,000 rows across the stores).
        #[arg(long, default_value_t = 1)]
        scale: u64,
    },
    /// Delete raw (PII) staging: of one run, or of every run whose raw files are older than an age.
    Purge {
        /// The run whose raw staging goes.
        run: Option<String>,
        /// With --older-than: raw staging of every run.
        #[arg(long)]
        raw: bool,
        /// Age, e.g. 24h or 7d (with --raw).
        #[arg(long)]
        older_than: Option<String>,
    },
    /// CERT databases: `wf cert enroll` marks every CERT store and graph of the config as CERT
    /// (after proving none of them is a PROD source); wf writes only into enrolled databases.
    Cert {
        #[arg(value_parser = ["enroll", "check"])]
        action: String,
        /// Only these stores (default: every CERT store and the graph).
        #[arg(long = "store")]
        stores: Vec<String>,
    },
    /// The audit trail of PROD reads and CERT writes: `wf audit verify` checks its hash chain,
    /// `wf audit show [--run R]` prints it.
    Audit {
        #[arg(value_parser = ["verify", "show"])]
        action: String,
        /// Only this run's lines (show).
        #[arg(long)]
        run: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// No servers needed: seed embedded PROD, migrate one district into embedded CERT, report.
    Demo {
        /// The district to migrate (1 small, 2 medium, 3 large, 4 tiny and incomplete).
        #[arg(long, default_value = "2")]
        district: String,
        #[arg(long, default_value_t = 1)]
        scale: u64,
    },
}

/// Prints `line` and a newline to stdout, flushed; a closed pipe (`wf runs | head`) is not an error.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|_| out.flush());
}

/// Writes a whole view to stdout; returns the success exit code (a closed pipe is not an error).
pub fn emit(text: &str) -> u8 {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
    exit::DONE
}

/// Arguments of `wf serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to bind; anything but loopback needs a token.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: String,
    /// Port (0: any free port; the first line printed says which).
    #[arg(long, default_value_t = 8737)]
    pub port: u16,
    /// Token every request must carry (`Authorization: Bearer …` or `?token=…`); default
    /// from WF_SERVE_TOKEN.
    #[arg(long, env = "WF_SERVE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}
