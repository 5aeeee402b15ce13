//! What a run's report holds; serialized as `reports/<run>.json`, rendered as Markdown by
//! `markdown`.

use serde::Serialize;
use std::collections::BTreeMap;
use wf_steps::validate::{Gate, ValidationReport};

/// One step of the run: its outcome, time, rows and resources.
#[derive(Debug, Serialize)]
pub struct Phase {
    pub step: String,
    pub status: String,
    pub attempts: u32,
    pub seconds: Option<f64>,
    pub rows: Option<u64>,
    /// CPU seconds of the process while the step ran (shared by steps running at once).
    pub cpu_seconds: Option<f64>,
    /// Peak resident memory of the process while the step ran, in MB.
    pub peak_rss_mb: Option<f64>,
}

/// Rows of one table through the phases.
#[derive(Debug, Default, Serialize)]
pub struct TableRows {
    pub extracted: u64,
    pub anonymized: u64,
    pub loaded: Option<u64>,
    /// An incremental refresh: the run's rows its load left as they were (`loaded` counts the
    /// rows it wrote, new or changed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unchanged: Option<u64>,
    /// The PROD snapshot the table was read in (PostgreSQL `pg_current_snapshot()`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

/// What anonymization did, in counts and field names.
#[derive(Debug, Serialize)]
pub struct AnonSummary {
    pub key_fingerprint: String,
    pub fields: usize,
    pub fields_with_rules: usize,
    pub values_changed: u64,
    pub kept_on_purpose: Vec<String>,
    pub detector_findings: Vec<String>,
    pub leak_scan: String,
}

/// A `sql` rule run inside a store's load transaction, and its violations.
#[derive(Debug, Serialize)]
pub struct LoadCheck {
    pub store: String,
    pub rule: String,
    pub severity: String,
    pub violations: u64,
}

/// Everything a report says.
#[derive(Debug, Serialize)]
pub struct RunReport {
    pub run: String,
    pub status: String,
    pub district: Option<String>,
    /// The gate: validation's verdict, lowered to PASSED_WITH_WARNINGS by load-time warnings.
    pub validation_status: Option<Gate>,
    pub started_ms: u64,
    pub updated_ms: u64,
    /// From the run's creation to its last update, idle time included.
    pub seconds: f64,
    /// Time at least one step of the current generation was running.
    #[serde(default)]
    pub busy_seconds: f64,
    /// Wall time with no step running (a pause, a dead runner, waiting for a resume).
    #[serde(default)]
    pub idle_seconds: f64,
    pub phases: Vec<Phase>,
    pub tables: BTreeMap<String, TableRows>,
    pub anonymization: Option<AnonSummary>,
    pub validation: Option<ValidationReport>,
    pub load_checks: Vec<LoadCheck>,
    pub retries: u64,
    pub recoveries: Vec<String>,
    pub checkpoints: Vec<(String, bool)>,
    pub message: Option<String>,
    pub next: Vec<String>,
    /// Raw (PII) staging is still on disk (a run kept with `--keep-raw`, or not purged yet).
    #[serde(default)]
    pub raw_pii_on_disk: bool,
}
