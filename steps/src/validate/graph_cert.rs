//! The graph's CERT side, checked before any store commits: under the `insert` strategy none of
//! the staged nodes is there already, so the load can CREATE without looking (relationships join
//! staged nodes only, so new nodes mean new relationships). That the CERT graph answers (server,
//! database, credentials) the CERT guard has checked at the start of the validate step.

use super::cells::LOOKUP;
use super::input::ValidateInput;
use super::rules::Severity;
use super::Tally;
use std::collections::HashSet;
use wf_stores::config::Side;
use wf_stores::graph::stage::{GraphBatch, GraphFileKind, GraphFileReader};
use wf_stores::graph::{GValue, GraphConfig, GraphRead};
use wf_stores::load::Strategy;
use wf_stores::StoreError;

/// Records the CERT graph's findings. A CERT graph that cannot be opened is an error of the step
/// (retried when transient), as for the relational stores.
pub(super) async fn graph_cert(
    tally: &mut Tally,
    inp: &ValidateInput<'_>,
) -> Result<(), StoreError> {
    let Some(g) = &inp.config.graph else {
        return Ok(());
    };
    if inp.graph_files.is_empty() || inp.strategy != Strategy::Insert {
        return Ok(());
    }
    let mut r = wf_stores::graph::open_read(g, Side::Cert).await?;
    for path in &inp.graph_files {
        absent_nodes(tally, g, r.as_mut(), path, &inp.graph_owned).await?;
    }
    r.finish().await
}

/// Under `insert`: the nodes of one staged node file are not in CERT yet.
async fn absent_nodes(
    tally: &mut Tally,
    g: &GraphConfig,
    r: &mut dyn GraphRead,
    path: &std::path::Path,
    owned: &HashSet<(String, String)>,
) -> Result<(), StoreError> {
    let mut rd = GraphFileReader::open(path)?;
    let GraphFileKind::Nodes { label } = rd.kind.clone() else {
        return Ok(());
    };
    let key = g.key_map().of(&label).clone();
    let (mut n, mut ex) = (0u64, Vec::new());
    while let Some(b) = rd.next_batch()? {
        let GraphBatch::Nodes(ns) = b else { continue };
        // The load replaces what the run's earlier generations (or the run a refresh replaces)
        // loaded: those nodes are no conflict, and are not looked up (in a refresh, nearly all).
        let mut id = (label.clone(), String::new());
        let keys: Vec<GValue> = ns
            .iter()
            .filter_map(|n| key.value(&n.props))
            .filter(|k| {
                id.1 = k.key_text();
                !owned.contains(&id)
            })
            .collect();
        for chunk in keys.chunks(LOOKUP) {
            for found in r.nodes(&label, chunk).await? {
                let k = key
                    .value(&found.props)
                    .map(|v| v.key_text())
                    .unwrap_or_default();
                n += 1;
                if ex.len() < super::EXAMPLES {
                    ex.push(k);
                }
            }
        }
    }
    tally.check(
        "cert_conflicts",
        "nodes not yet in CERT",
        &format!("{}.{label}", g.name),
        Severity::Error,
        n,
        ex,
        format!(
            "{n} {label} nodes are in CERT already (strategy Insert); roll back the run that loaded them, or use --strategy skip-existing or upsert"
        ),
    );
    Ok(())
}

/// Nodes extract left out for lacking their key (`without_key = "skip"`): a warning with the
/// count, so the gate says PASSED_WITH_WARNINGS and the report shows them.
pub(super) fn skipped(tally: &mut Tally, inp: &ValidateInput<'_>) {
    let Some(g) = inp.config.graph.as_ref() else {
        return;
    };
    if g.without_key != wf_stores::graph::WithoutKey::Skip {
        return;
    }
    let n: u64 = inp.graph_skipped.iter().map(|(_, n)| n).sum();
    let ex: Vec<String> = inp
        .graph_skipped
        .iter()
        .map(|(w, n)| format!("{n} {w}"))
        .collect();
    tally.check(
        "graph",
        "nodes without their key skipped",
        &g.name,
        Severity::Warning,
        n,
        ex.clone(),
        format!(
            "{n} nodes lack their key and were left out with their relationships ([graph] without_key = \"skip\"): {}",
            ex.join(", ")
        ),
    );
}
