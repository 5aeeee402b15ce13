//! `wf refresh`: which run holds a district in CERT now, and marking it `superseded` once a
//! refresh has replaced its rows (its rollback is refused from then on, naming the refresh).

use wf_engine::{Engine, Outcome};

/// The attribute a replaced run carries: the run that replaced it.
pub const SUPERSEDED_BY: &str = "superseded_by";

/// The newest migrate of `district` with configuration `config` (so into the same CERT) that
/// loaded it and still holds it: done, not a dry run, not rolled back, not superseded.
pub fn current_run(
    engine: &Engine,
    district: &str,
    config: &std::path::Path,
) -> anyhow::Result<String> {
    let config = std::path::absolute(config).unwrap_or_else(|_| config.to_path_buf());
    let config = config.to_string_lossy();
    let (list, _) = engine.list()?;
    list.into_iter()
        .filter(|v| v.workflow == "migrate" && v.status == "done")
        .filter(|v| v.attrs.get("config_file").map(String::as_str) == Some(&*config))
        .filter(|v| v.attrs.get("district").map(String::as_str) == Some(district))
        .filter(|v| v.attrs.get("dry_run").map(String::as_str) != Some("true"))
        .filter(|v| !v.attrs.contains_key(SUPERSEDED_BY))
        .max_by_key(|v| v.created_ms)
        .map(|v| v.id)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no run of {config} holds district {district} in CERT (none done, loaded and not rolled back): copy it first with `wf run migrate --district {district}`"
            )
        })
}

/// After a refresh ran to the end (not a dry run), the run it replaced is `superseded`.
pub fn after_run(
    engine: &Engine,
    id: &str,
    outcome: &Outcome,
    dry_run: bool,
    replaces: Option<&str>,
) {
    let Some(prev) = replaces else {
        return;
    };
    if dry_run || !matches!(outcome, Outcome::Done | Outcome::AlreadyDone) {
        return;
    }
    match engine.set_attr(prev, SUPERSEDED_BY, id) {
        Ok(()) => crate::cli::say(&format!("run {prev} is superseded by {id}")),
        Err(e) => eprintln!("wf: run {prev}: could not mark it superseded by {id}: {e}"),
    }
}

/// Why an `--incremental` refresh of `prev` would rewrite every row (another anonymization key,
/// or rules other than those `prev` was anonymized under; `attrs` are the new run's): then it
/// replaces the district whole, which is faster than a difference where every value differs.
/// `None` when nothing says so (a run from before the rules were recorded is compared by key).
pub fn changed_since(
    engine: &Engine,
    prev: &str,
    attrs: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<Option<String>> {
    let (list, _) = engine.list()?;
    let Some(was) = list.into_iter().find(|v| v.id == prev).map(|v| v.attrs) else {
        return Ok(None);
    };
    for (attr, what) in [
        ("key_fingerprint", "another anonymization key"),
        (crate::migrate::RULES_SHA256, "other anonymization rules"),
    ] {
        if let (Some(a), Some(b)) = (was.get(attr), attrs.get(attr)) {
            if a != b {
                return Ok(Some(format!(
                    "run {prev} was anonymized under {what} ({attr} {}, now {})",
                    short(a),
                    short(b)
                )));
            }
        }
    }
    Ok(None)
}

fn short(s: &str) -> &str {
    s.get(..12).unwrap_or(s)
}
