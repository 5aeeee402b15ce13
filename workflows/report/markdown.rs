//! A run's report as Markdown (`reports/<run>.md`): counts, anonymized example keys and field
//! names only.

use super::model::RunReport;

/// The report as GitHub-flavoured Markdown.
pub fn markdown(r: &RunReport) -> String {
    let mut m = String::new();
    let gate = r.validation_status.map(|g| g.as_str()).unwrap_or("not run");
    let dry = r.status == "done_dry_run";
    if dry {
        m += &format!("# Dry-run report: {}\n\n", r.run);
        m += "Nothing was committed: every CERT transaction was rolled back at its end. The \"Would load\" column says what a real run would have loaded.\n\n";
    } else {
        m += &format!("# Migration report: {}\n\n", r.run);
    }
    if r.status == "rolled_back" {
        m += "This run was rolled back: the rows, nodes and relationships it loaded were deleted from CERT. The \"Loaded\" column says what it had loaded.\n\n";
    }
    m += "| | |\n|---|---|\n";
    m += &format!("| Status | **{}** |\n", r.status);
    m += &format!("| District | {} |\n", r.district.as_deref().unwrap_or("-"));
    m += &format!("| Validation | **{gate}** |\n");
    m += &format!(
        "| Wall time | {:.1} s: {:.1} s with steps running, {:.1} s idle |\n",
        r.seconds, r.busy_seconds, r.idle_seconds
    );
    m += &format!("| Retries | {} |\n", r.retries);
    m += &format!(
        "| Recoveries | {} |\n",
        if r.recoveries.is_empty() {
            "none".to_string()
        } else {
            r.recoveries.join("; ")
        }
    );
    if let Some(msg) = &r.message {
        m += &format!("| Message | {} |\n", msg.replace('|', "\\|"));
    }
    if r.raw_pii_on_disk {
        m += &format!(
            "| **Warning** | raw PII staging is still on disk; delete it with `wf purge {}` |\n",
            r.run
        );
    }
    m += "\n## Next\n\n";
    for n in &r.next {
        m += &format!("    {n}\n");
    }
    if r.next.is_empty() {
        m += "Nothing to do.\n";
    }
    m += "\n## Phases\n\nCPU and peak memory are the process's while the step ran (steps that ran at once share them).\n\n| Step | Status | Attempts | Seconds | Rows | CPU s | Peak MB |\n|---|---|---:|---:|---:|---:|---:|\n";
    for p in &r.phases {
        m += &format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            p.step,
            p.status,
            p.attempts,
            p.seconds.map(|s| format!("{s:.2}")).unwrap_or_default(),
            p.rows.map(|x| x.to_string()).unwrap_or_default(),
            p.cpu_seconds.map(|s| format!("{s:.2}")).unwrap_or_default(),
            p.peak_rss_mb.map(|s| format!("{s:.0}")).unwrap_or_default()
        );
    }
    m += "\n## Checkpoints\n\n";
    for (c, reached) in &r.checkpoints {
        m += &format!("- [{}] {c}\n", if *reached { "x" } else { " " });
    }
    md_rows(&mut m, r, dry);
    md_anonymization(&mut m, r);
    md_validation(&mut m, r);
    m
}

/// The report's rows per table; an incremental refresh's also the rows its load left unchanged.
fn md_rows(m: &mut String, r: &RunReport, dry: bool) {
    let incremental = r.tables.values().any(|x| x.unchanged.is_some());
    *m += "\n## Rows per store and table\n\n";
    if incremental {
        *m += "An incremental refresh: \"Loaded\" counts the rows it wrote (new or changed), \"Unchanged\" the district's rows it left as they were.\n\n";
    }
    let unchanged = if incremental { " Unchanged |" } else { "" };
    *m += &format!(
        "| Table | Extracted | Anonymized | {} |{unchanged} PROD snapshot |\n|---|---:|---:|---:|{}---|\n",
        if dry { "Would load" } else { "Loaded" },
        if incremental { "---:|" } else { "" }
    );
    let count = |n: Option<u64>| n.map(|l| l.to_string()).unwrap_or_else(|| "-".into());
    for (t, x) in &r.tables {
        let kept = if incremental {
            format!(" {} |", count(x.unchanged))
        } else {
            String::new()
        };
        *m += &format!(
            "| {t} | {} | {} | {} |{kept} {} |\n",
            x.extracted,
            x.anonymized,
            count(x.loaded),
            x.snapshot.as_deref().unwrap_or("-")
        );
    }
}

/// The report's anonymization section.
fn md_anonymization(m: &mut String, r: &RunReport) {
    if let Some(a) = &r.anonymization {
        *m += "\n## Anonymization\n\n";
        *m += &format!(
            "- Key fingerprint `{}` (the key itself is never written)\n- {} fields, {} with a rule, {} values changed\n- Leak scan: {}\n",
            a.key_fingerprint, a.fields, a.fields_with_rules, a.values_changed, a.leak_scan
        );
        if !a.kept_on_purpose.is_empty() {
            *m += &format!("- Kept on purpose: {}\n", a.kept_on_purpose.join(", "));
        }
        if !a.detector_findings.is_empty() {
            *m += &format!(
                "- Detector findings (all covered by rules): {}\n",
                a.detector_findings.join(", ")
            );
        }
    }
}

/// The report's validation section and the rules checked in the load transactions.
fn md_validation(m: &mut String, r: &RunReport) {
    if let Some(v) = &r.validation {
        *m += &format!(
            "\n## Validation: {}\n\n{} tables, {} rows checked in {:.2} s.\n\n| Category | Run | Passed | Failed |\n|---|---:|---:|---:|\n",
            v.status.as_str(), v.tables, v.rows, v.seconds
        );
        for (c, n) in &v.categories {
            *m += &format!("| {c} | {} | {} | {} |\n", n.run, n.passed, n.failed);
        }
        if !v.findings.is_empty() {
            *m += "\n| Severity | Category | Table | Check | Rows | Examples (anonymized keys) |\n|---|---|---|---|---:|---|\n";
            for f in &v.findings {
                *m += &format!(
                    "| {:?} | {} | {} | {} | {} | {} |\n",
                    f.severity,
                    f.category,
                    f.table,
                    f.check.replace('|', "\\|"),
                    f.violations,
                    f.examples.join("; ").replace('|', "\\|")
                );
            }
        }
    }
    if !r.load_checks.is_empty() {
        *m += "\n## Rules checked in the load transaction\n\n| Store | Rule | Severity | Violations |\n|---|---|---|---:|\n";
        for c in &r.load_checks {
            *m += &format!(
                "| {} | {} | {} | {} |\n",
                c.store, c.rule, c.severity, c.violations
            );
        }
    }
}
