//! Text and JSON views of runs for `wf runs`, `wf status`, `wf checkpoints` and `wf log`.

use crate::cli::emit;
use serde_json::json;
use std::fmt::Write;
use std::time::{Duration, UNIX_EPOCH};
use wf_engine::{Engine, StatusView};

fn when(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn lean(v: &StatusView, raw_pii: bool) -> serde_json::Value {
    json!({
        "raw_pii": raw_pii,
        "id": v.id,
        "workflow": v.workflow,
        "status": v.status,
        "generation": v.generation,
        "created_ms": v.created_ms,
        "updated_ms": v.updated_ms,
        "live": v.live,
        "message": v.message,
        "counts": v.counts,
    })
}

pub fn runs(engine: &Engine, as_json: bool) -> anyhow::Result<u8> {
    let mut o = String::new();
    let (list, unreadable) = engine.list()?;
    for (id, e) in &unreadable {
        eprintln!(
            "wf: run {id}: its journal cannot be read ({e}); look at {}",
            engine.data().journal_path(id).display()
        );
    }
    let code = if unreadable.is_empty() {
        crate::cli::exit::DONE
    } else {
        crate::cli::exit::ERROR
    };
    let raw = |id: &str| crate::purge::holds_raw(engine, id);
    if as_json {
        let arr: Vec<_> = list.iter().map(|v| lean(v, raw(&v.id))).collect();
        writeln!(o, "{}", serde_json::to_string_pretty(&arr)?)?;
        emit(&o);
        return Ok(code);
    }
    if list.is_empty() && unreadable.is_empty() {
        writeln!(o, "no runs in {}", engine.data().root().display())?;
        return Ok(emit(&o));
    }
    writeln!(
        o,
        "{:<22} {:<10} {:<18} {:>3} {:>13} {:<7}  UPDATED",
        "RUN", "WORKFLOW", "STATUS", "GEN", "STEPS", "RAW PII"
    )?;
    for v in &list {
        let shown = crate::report::shown_status(&v.status, &v.attrs);
        let status = if v.live {
            format!("{shown} (live)")
        } else {
            shown
        };
        let steps = format!("{}/{}", v.counts.done, v.counts.total);
        writeln!(
            o,
            "{:<22} {:<10} {:<18} {:>3} {:>13} {:<7}  {}",
            v.id,
            v.workflow,
            status,
            v.generation,
            steps,
            if raw(&v.id) { "yes" } else { "-" },
            when(v.updated_ms)
        )?;
    }
    emit(&o);
    Ok(code)
}

pub fn status(engine: &Engine, run: &str, as_json: bool, all: bool) -> anyhow::Result<u8> {
    let mut o = String::new();
    let v = engine.status(run)?;
    if as_json {
        writeln!(o, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(emit(&o));
    }
    let live = if v.live { " (live snapshot)" } else { "" };
    writeln!(
        o,
        "run {} ({}): {}{live}, generation {}",
        v.id,
        v.workflow,
        crate::report::shown_status(&v.status, &v.attrs),
        v.generation
    )?;
    if let Some(m) = &v.message {
        writeln!(o, "  {m}")?;
    }
    let c = &v.counts;
    writeln!(
        o,
        "steps: {}/{} done, {} running, {} failed, {} pending",
        c.done, c.total, c.running, c.failed, c.pending
    )?;
    if let Some(l) = &v.lease {
        writeln!(o, "lease: {}", l.describe())?;
    }
    let reached = v.checkpoints.iter().filter(|c| c.reached).count();
    writeln!(o, "checkpoints: {reached}/{} reached", v.checkpoints.len())?;
    let shown: Vec<_> = v
        .steps
        .iter()
        .filter(|s| all || s.status != "done")
        .collect();
    if !shown.is_empty() {
        writeln!(
            o,
            "{:<32} {:<8} {:>8} {:>8} {:>7} {:>8}  ERROR",
            "STEP", "STATUS", "ATTEMPTS", "SECONDS", "CPU_S", "PEAK_MB"
        )?;
        for s in shown.iter().take(if all { usize::MAX } else { 30 }) {
            let metric = |k: &str, div: f64, digits: usize| {
                s.metrics
                    .get(k)
                    .map(|x| format!("{:.*}", digits, *x as f64 / div))
                    .unwrap_or_default()
            };
            writeln!(
                o,
                "{:<32} {:<8} {:>8} {:>8} {:>7} {:>8}  {}",
                s.id,
                s.status,
                s.attempts,
                s.duration_ms
                    .map(|d| format!("{:.1}", d as f64 / 1000.0))
                    .unwrap_or_default(),
                metric(wf_engine::resources::CPU_MS, 1000.0, 1),
                metric(wf_engine::resources::PEAK_RSS_KB, 1024.0, 0),
                s.error.as_deref().unwrap_or("")
            )?;
        }
        if !all && shown.len() > 30 {
            writeln!(o, "… {} more (wf status {} --all)", shown.len() - 30, v.id)?;
        }
    }
    Ok(emit(&o))
}

pub fn checkpoints(engine: &Engine, run: &str, as_json: bool) -> anyhow::Result<u8> {
    let mut o = String::new();
    let v = engine.status(run)?;
    if as_json {
        writeln!(o, "{}", serde_json::to_string_pretty(&v.checkpoints)?)?;
        return Ok(emit(&o));
    }
    writeln!(
        o,
        "{:<24} {:<8} {:>11}  REACHED AT",
        "CHECKPOINT", "REACHED", "STEPS"
    )?;
    for c in &v.checkpoints {
        writeln!(
            o,
            "{:<24} {:<8} {:>11}  {}",
            c.name,
            if c.reached { "yes" } else { "no" },
            format!("{}/{}", c.steps_done, c.steps_total),
            c.reached_ms.map(when).unwrap_or_default()
        )?;
    }
    Ok(emit(&o))
}

pub fn log(engine: &Engine, run: &str, as_json: bool) -> anyhow::Result<u8> {
    let mut o = String::new();
    let events = engine.events(run)?;
    if as_json {
        writeln!(o, "{}", serde_json::to_string_pretty(&events)?)?;
        return Ok(emit(&o));
    }
    for e in &events {
        writeln!(
            o,
            "{:>6}  {}  g{}  {}",
            e.seq,
            when(e.at_ms),
            e.generation,
            e.kind.describe()
        )?;
    }
    Ok(emit(&o))
}
