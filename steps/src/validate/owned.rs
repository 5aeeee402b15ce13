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
                        // `hash_key` of the cells' text, without building it; a key with a NULL
                        // (a table without a primary key) is built and hashed.
                        let h =
                            super::cells::hash_row(&b, &idx, r, &mut buf).unwrap_or_else(|| {
                                let k: Vec<Option<String>> = (0..b.num_columns())
                                    .map(|i| {
                                        super::cells::text(&wf_stores::staging::value_at(
                                            b.column(i).as_ref(),
                                            r,
                                        ))
                                    })
                                    .collect();
                                super::cells::hash_key(&k)
                            });
                        set.insert(h);
                    }
                }
            }
        }
    }
    Ok(out)
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
