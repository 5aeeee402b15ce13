//! What this run (in earlier generations) or the run a refresh replaces loaded already, from their
//! load manifests: the loads replace those rows and nodes, so validation does not count them as
//! conflicts with CERT.

use super::cells::KeySet;
use crate::migrate::{store_err, MigrateParams};
use std::collections::{HashMap, HashSet};
use wf_engine::{StepContext, StepError};

/// The keys this run loaded in its earlier generations (their load manifests), per table (of
/// table `only` when given).
pub(super) fn owned_keys(
    cx: &StepContext,
    p: &MigrateParams,
    only: Option<&str>,
) -> Result<HashMap<String, KeySet>, StepError> {
    let mut out: HashMap<String, KeySet> = HashMap::new();
    let Some(steps) = cx.artifact_dir.parent() else {
        return Ok(out);
    };
    // A refresh replaces the earlier run's rows too: its manifests name them.
    let replaced: Vec<(String, std::path::PathBuf)> = crate::migrate::replaced_loads(cx, p)?
        .into_iter()
        .filter_map(|l| l.job.map(|j| (l.store, j.manifest_dir)))
        .collect();
    for s in &p.config.stores {
        let own = (0..cx.generation).map(|gen| {
            steps
                .join(format!("load~{}", s.name))
                .join("manifests")
                .join(format!("g{gen}"))
        });
        let theirs = replaced
            .iter()
            .filter(|r| r.0 == s.name)
            .map(|r| r.1.clone());
        for dir in own.chain(theirs) {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(table) = name.strip_suffix(".keys.arrow") else {
                    continue;
                };
                if only.is_some_and(|o| o != table) {
                    continue;
                }
                let set = out.entry(table.to_string()).or_default();
                let reader = wf_stores::staging::open(&e.path()).map_err(store_err)?;
                let mut buf = String::new();
                for b in reader {
                    let b = b.map_err(|e| StepError::Fatal(format!("{name}: {e}")))?;
                    let idx: Vec<usize> = (0..b.num_columns()).collect();
                    for r in 0..b.num_rows() {
                        set.insert(super::cells::hash_cells(&b, &idx, r, &mut buf));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The whole rows (hashed, every column) the run a refresh replaces staged of `table`, anonymized:
/// a staged row equal to one of them that the replaced run loaded (its key is owned) holds the
/// unique values CERT's own row holds under the same key, which CERT's unique indexes keep from
/// any other row, so its unique values need no lookup (nearly every row of a refresh). Should
/// CERT have changed under that row since, the held load of `validate/<store>` meets the
/// violation before anything commits. `None` outside a refresh, for a table without a unique
/// (nothing to spare), or when that staging is gone or damaged: its unique values are then
/// looked up in CERT as in a migrate (the replaced run's files only spare lookups).
pub(super) fn replaced_rows(
    cx: &StepContext,
    p: &MigrateParams,
    table: &wf_stores::schema::Table,
) -> Result<Option<KeySet>, StepError> {
    let Some(run) = &p.replaces else {
        return Ok(None);
    };
    if table.uniques.iter().all(|u| u.partial) {
        return Ok(None);
    }
    let id = table.id();
    let fatal = |m: String| StepError::Fatal(format!("the run this refresh replaces, {run}: {m}"));
    let (_, outputs) = cx.host.outputs(run).map_err(|e| fatal(e.to_string()))?;
    let step = format!("anonymize/{id}");
    let Some((_, o)) = outputs.iter().find(|(s, _)| *s == step) else {
        return Ok(None);
    };
    let part: crate::migrate::AnonPart = o
        .value_as()
        .map_err(|e| fatal(format!("output of {step}: {e}")))?;
    let mut set = KeySet::default();
    let mut buf = String::new();
    for f in part.files.iter().filter(|f| f.table == id) {
        let read = |set: &mut KeySet, buf: &mut String| -> Result<(), String> {
            let reader =
                wf_stores::staging::open_verified(&f.path, &f.sha256).map_err(|e| e.to_string())?;
            for b in reader {
                let b = b.map_err(|e| wf_stores::staging::damaged(&f.path, e).to_string())?;
                let idx: Vec<usize> = (0..b.num_columns()).collect();
                for r in 0..b.num_rows() {
                    set.insert(super::cells::hash_cells(&b, &idx, r, buf));
                }
            }
            Ok(())
        };
        if let Err(e) = read(&mut set, &mut buf) {
            tracing::warn!(
                "{id}: the staging of {run} it replaces cannot be compared ({e}): every unique value is looked up in CERT"
            );
            return Ok(None);
        }
    }
    Ok(Some(set))
}

/// The graph nodes this run's earlier generations loaded (from their manifests): the graph load
/// replaces them, so they are no conflict.
pub(super) fn graph_owned(
    cx: &StepContext,
    p: &MigrateParams,
) -> Result<HashSet<(String, String)>, StepError> {
    let mut out = HashSet::new();
    let (Some(g), Some(steps)) = (&p.config.graph, cx.artifact_dir.parent()) else {
        return Ok(out);
    };
    let replaced = crate::migrate::replaced_loads(cx, p)?
        .into_iter()
        .filter_map(|l| l.graph_job.map(|j| j.manifest));
    let own = (0..cx.generation).map(|gen| {
        steps
            .join(format!("load~{}", g.name))
            .join("manifests")
            .join(format!("g{gen}"))
            .join(format!("{}.created.jsonl", g.name))
    });
    for manifest in own.chain(replaced) {
        out.extend(wf_stores::graph::load::created_nodes(&manifest).map_err(store_err)?);
    }
    Ok(out)
}
