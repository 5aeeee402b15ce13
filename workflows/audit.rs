//! The audit trail: `audit/audit.jsonl` in the data directory, one JSON line per action that reads
//! PROD or writes CERT — each session of a migrate run (PROD tables read and CERT tables written,
//! with row counts), a rollback, a purge of raw PII, a CERT enrollment: who, when, the command,
//! the run, its key fingerprint and config hash. Never values, never secrets. Each line carries the
//! SHA-256 of the line before it and `audit/head` holds the number and hash of the last one, so
//! `wf audit verify` finds a line removed, edited or added anywhere, the last one included.
//! Appends hold an exclusive lock on `audit/lock` (batch children append side by side).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One line of the trail.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// 1 for the first line, then one more per line.
    pub seq: u64,
    /// RFC 3339, UTC.
    pub at: String,
    /// `user@host`.
    pub who: String,
    /// The command line (wf's own arguments: paths and ids, no secrets).
    pub command: String,
    /// `migrate`, `rollback`, `purge`, `cert enroll`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// Counts and names: tables read and written, files purged, stores enrolled.
    #[serde(default)]
    pub details: serde_json::Value,
    /// SHA-256 (hex) of the previous line; 64 zeros for the first.
    pub prev: String,
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn dir(root: &Path) -> PathBuf {
    root.join("audit")
}

fn sha(line: &str) -> String {
    hex::encode(Sha256::digest(line.as_bytes()))
}

/// `(seq, hash)` of the last line, from `audit/head`; `(0, zeros)` before the first.
fn head(root: &Path) -> anyhow::Result<(u64, String)> {
    let path = dir(root).join("head");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let (seq, hash) = text
                .trim()
                .split_once(' ')
                .ok_or_else(|| anyhow::anyhow!("{} is damaged", path.display()))?;
            Ok((seq.parse()?, hash.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((0, GENESIS.into())),
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// Appends one line (under the lock; the line is synced before the head moves).
pub fn append(
    root: &Path,
    action: &str,
    run: Option<&str>,
    details: serde_json::Value,
) -> anyhow::Result<()> {
    let d = dir(root);
    std::fs::create_dir_all(&d)?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(d.join("lock"))?;
    lock.lock()?;
    let (seq, prev) = head(root)?;
    let entry = Entry {
        seq: seq + 1,
        at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        who: wf_stores::guard::who(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        action: action.into(),
        run: run.map(str::to_string),
        details,
        prev,
    };
    let line = serde_json::to_string(&entry)?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(d.join("audit.jsonl"))?;
    writeln!(f, "{line}")?;
    f.sync_all()?;
    let tmp = d.join("head.tmp");
    std::fs::write(&tmp, format!("{} {}\n", entry.seq, sha(&line)))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, d.join("head"))?;
    Ok(())
}

/// Appends, or says on stderr that the action is missing from the trail (the action itself
/// happened; hiding that would be worse than reporting it).
pub fn record(root: &Path, action: &str, run: Option<&str>, details: serde_json::Value) {
    if let Err(e) = append(root, action, run, details) {
        eprintln!("wf: audit: could not record `{action}`: {e}");
    }
}

/// Every line, checked: each names the hash of the one before, numbers run 1, 2, 3 …, and the
/// last matches `audit/head`. The first problem is an error naming its line.
pub fn verify(root: &Path) -> anyhow::Result<Vec<Entry>> {
    let path = dir(root).join("audit.jsonl");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
    };
    let mut prev = GENESIS.to_string();
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i as u64 + 1;
        let e: Entry = serde_json::from_str(line)
            .map_err(|err| anyhow::anyhow!("audit line {n} is not an audit entry: {err}"))?;
        if e.seq != n {
            anyhow::bail!(
                "audit line {n} is numbered {}: a line before it was removed or added",
                e.seq
            );
        }
        if e.prev != prev {
            anyhow::bail!(
                "audit line {n} does not follow line {}: that line was edited or removed",
                n - 1
            );
        }
        prev = sha(line);
        entries.push(e);
    }
    let (seq, hash) = head(root)?;
    if seq != entries.len() as u64 || hash != prev {
        anyhow::bail!(
            "the audit trail ends at line {} but its head records line {seq}: the last lines were edited, removed or added",
            entries.len()
        );
    }
    Ok(entries)
}

/// The details of a migrate session: PROD tables read and CERT tables written, with row counts.
pub fn run_details(
    record: &wf_engine::model::RunRecord,
    outputs: &[(String, wf_engine::model::StepOutput)],
    status: &str,
) -> serde_json::Value {
    use wf_steps::migrate::{ExtractOut, LoadOut};
    let out = |id: &str| outputs.iter().find(|(s, _)| s == id).map(|(_, o)| o);
    let read: serde_json::Map<String, serde_json::Value> = ExtractOut::from_outputs(outputs)
        .and_then(Result::ok)
        .map(|ex| {
            ex.all_files()
                .map(|f| (f.table.clone(), f.rows.into()))
                .collect()
        })
        .unwrap_or_default();
    let mut written = serde_json::Map::new();
    for (_, o) in outputs.iter().filter(|(s, _)| s.starts_with("load/")) {
        let Ok(l) = o.value_as::<LoadOut>() else {
            continue;
        };
        for t in l.report.iter().flat_map(|r| &r.tables) {
            written.insert(t.table.clone(), serde_json::json!({"inserted": t.inserted}));
        }
    }
    serde_json::json!({
        "status": status,
        "district": record.attrs.get("district"),
        "key_fingerprint": record.attrs.get("key_fingerprint"),
        "config_hash": record.config_hash,
        "generation": record.generation,
        "prod_tables_read": read,
        "cert_tables_written": written,
        "raw_pii_files_deleted_by_the_run": out("purge-raw").and_then(|o| o.value_as::<u64>().ok()),
    })
}

/// `wf audit verify` and `wf audit show [--run R]`: the text to print.
pub fn command(root: &Path, action: &str, run: Option<&str>, json: bool) -> anyhow::Result<String> {
    let entries = verify(root)?;
    if action == "verify" {
        return Ok(format!("audit trail intact: {} entries\n", entries.len()));
    }
    let mut out = String::new();
    for e in entries
        .iter()
        .filter(|e| run.is_none() || e.run.as_deref() == run)
    {
        if json {
            out.push_str(&serde_json::to_string(e)?);
        } else {
            out.push_str(&format!(
                "{:>5} {} {} {} {} {}",
                e.seq,
                e.at,
                e.who,
                e.action,
                e.run.as_deref().unwrap_or("-"),
                e.details
            ));
        }
        out.push('\n');
    }
    Ok(out)
}
