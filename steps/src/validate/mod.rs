//! The validation gate: checks on the anonymized staging before CERT is touched (schema against
//! CERT, nullability, uniqueness, referential integrity inside the subset and against CERT,
//! conflicts with CERT rows, graph ends and links, business rules, the PII leak scan), counted per
//! category, ending PASSED, PASSED_WITH_WARNINGS or FAILED. `sql` rules run in the load transaction.

mod business;
mod cells;
mod checks;
mod conflicts;
mod dups;
mod graph_cert;
mod graph_checks;
mod graph_staging_step;
mod graph_step;
mod incremental;
mod input;
mod owned;
pub mod post;
mod rehearse;
pub mod rules;
mod scan;
pub mod step;
mod store_step;
mod table_step;

pub(crate) use graph_staging_step::spec as graph_staging_spec;
pub use graph_staging_step::{GraphStagingStep, GRAPH_STAGING_KIND};
pub(crate) use graph_step::spec as graph_spec;
pub use graph_step::{ValidateGraphStep, GRAPH_VALIDATE_KIND};
pub use rules::{Severity, ValidationRules};
pub use scan::{validate, ValidateInput};
pub use step::{ValidateOut, ValidateStep};
pub(crate) use store_step::specs as store_specs;
pub use store_step::{ValidateStoreStep, STORE_VALIDATE_KIND};
pub(crate) use table_step::specs as table_specs;
pub use table_step::{ValidatePart, ValidateTableStep, ValidateTask, VALIDATE_KIND};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The gate's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Gate {
    Passed,
    PassedWithWarnings,
    Failed,
}

impl Gate {
    pub fn as_str(self) -> &'static str {
        match self {
            Gate::Passed => "PASSED",
            Gate::PassedWithWarnings => "PASSED_WITH_WARNINGS",
            Gate::Failed => "FAILED",
        }
    }
}

/// Checks run, passed and failed in one category.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryCount {
    pub run: u64,
    pub passed: u64,
    pub failed: u64,
}

/// One failed check: where, how bad, how many rows, a few example keys (anonymized values only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub category: String,
    pub check: String,
    pub table: String,
    pub severity: Severity,
    pub violations: u64,
    pub examples: Vec<String>,
    pub message: String,
}

/// What validation found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationReport {
    pub status: Gate,
    pub categories: BTreeMap<String, CategoryCount>,
    pub findings: Vec<Finding>,
    pub tables: u64,
    pub rows: u64,
    pub seconds: f64,
}

/// Example keys kept per finding.
pub const EXAMPLES: usize = 3;

/// Collects check results as they come.
#[derive(Default)]
pub struct Tally {
    pub categories: BTreeMap<String, CategoryCount>,
    pub findings: Vec<Finding>,
    /// Staged unique values looked up in CERT (a step metric: a refresh looks up few).
    pub unique_lookups: u64,
    /// Rows whose reference resolved in CERT, not in the staging (a step metric: see
    /// `incremental`).
    pub cert_resolved_refs: u64,
}

impl Tally {
    /// Records one check: passed when `violations` is 0.
    #[allow(clippy::too_many_arguments)]
    pub fn check(
        &mut self,
        category: &str,
        check: &str,
        table: &str,
        severity: Severity,
        violations: u64,
        examples: Vec<String>,
        message: String,
    ) {
        let c = self.categories.entry(category.to_string()).or_default();
        c.run += 1;
        if violations == 0 {
            c.passed += 1;
            return;
        }
        c.failed += 1;
        self.findings.push(Finding {
            category: category.to_string(),
            check: check.to_string(),
            table: table.to_string(),
            severity,
            violations,
            examples: examples.into_iter().take(EXAMPLES).collect(),
            message,
        });
    }

    /// Adds checks counted elsewhere (a per-table step, the load rehearsal).
    pub fn absorb(&mut self, categories: BTreeMap<String, CategoryCount>, findings: Vec<Finding>) {
        for (c, n) in categories {
            let e = self.categories.entry(c).or_default();
            e.run += n.run;
            e.passed += n.passed;
            e.failed += n.failed;
        }
        self.findings.extend(findings);
    }

    /// The verdict and the report.
    pub fn finish(mut self, tables: u64, rows: u64, seconds: f64) -> ValidationReport {
        self.findings
            .sort_by(|a, b| b.severity.cmp(&a.severity).then(a.table.cmp(&b.table)));
        let status = if self.findings.iter().any(|f| f.severity.blocks()) {
            Gate::Failed
        } else if self
            .findings
            .iter()
            .any(|f| f.severity == Severity::Warning)
        {
            Gate::PassedWithWarnings
        } else {
            Gate::Passed
        };
        ValidationReport {
            status,
            categories: self.categories,
            findings: self.findings,
            tables,
            rows,
            seconds,
        }
    }
}

impl ValidationReport {
    /// One line saying what the blocking findings found (their messages, not the checks'
    /// names), for the run's error.
    pub fn summary(&self) -> String {
        let blocking: Vec<String> = self
            .findings
            .iter()
            .filter(|f| f.severity.blocks())
            .map(|f| format!("{}: {}", f.table, f.message))
            .collect();
        format!(
            "validation {}: {} blocking findings: {}",
            self.status.as_str(),
            blocking.len(),
            blocking.join("; ")
        )
    }
}
