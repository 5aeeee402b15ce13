//! `Journal` on sled 0.34: one database per run (sled locks a database to one process, and independent
//! runs must proceed side by side), trees `meta`, `runs`, `steps`, `history`, `checkpoints`, `events`,
//! `leases`. Key layout (part of the format): `meta/format` = u32 BE; `runs/run`, `runs/plan`;
//! `steps/<step id>`; `history/<generation u32 BE><seq u64 BE><step id>`; `checkpoints/<name>`;
//! `events/<seq u64 BE>`; `leases/lease`. Values are `codec` (bincode) encodings of `model` types.

use super::{Commit, Journal, JournalRead, FORMAT};
use crate::codec;
use crate::error::{EngineError, Result};
use crate::model::{
    now_ms, CheckpointRecord, Event, EventKind, Lease, Plan, RunRecord, StepRecord,
};
use serde::{de::DeserializeOwned, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use std::path::{Path, PathBuf};

/// The embedded journal of one run.
pub struct SledJournal {
    path: PathBuf,
    db: sled::Db,
    runs: sled::Tree,
    steps: sled::Tree,
    history: sled::Tree,
    checkpoints: sled::Tree,
    events: sled::Tree,
    leases: sled::Tree,
    /// The database file, opened again: sled's `flush` writes with `sync_file_range`, which does not
    /// flush the drive's cache, so each durable commit also `fdatasync`s through this handle.
    sync_file: std::fs::File,
    /// `wf-commits` beside sled's files: the number of durable commits, written after each flush.
    /// sled never holds fewer; if it does on open, it lost committed records (see `open`).
    mirror: std::fs::File,
    /// Durable commits' durations, written beside the journal (see `latency`).
    latency: std::sync::Mutex<super::latency::CommitLatency>,
}

/// Key of the commit counter in the `runs` tree (u64 BE), bumped by every commit and invalidation.
const COMMITS: &str = "commits";
const MIRROR: &str = "wf-commits";

type TxResult<T> = std::result::Result<T, ConflictableTransactionError<String>>;

impl SledJournal {
    /// Opens (creating when `create`) the journal at `path`, checking its format number.
    /// The caller must hold the run's lock: sled itself refuses a second opener with an untyped error.
    pub fn open(path: &Path, create: bool) -> Result<Self> {
        if !create && !path.join("db").exists() {
            return Err(EngineError::Corrupt {
                path: path.to_path_buf(),
                detail: "no sled database in it".into(),
            });
        }
        // Callers hold the run's lock, so sled's own file lock can only be busy because a handle
        // just dropped in this process is still being torn down (sled's flusher thread keeps the
        // database for up to `flush_every_ms`): wait for it briefly instead of failing.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        let opened = loop {
            match sled::Config::new()
                .path(path)
                .flush_every_ms(Some(500))
                // A journal is small (records, events, outputs: paths and counts); sled's
                // default page cache of 1 GB would only grow the runner with its history.
                .cache_capacity(32 << 20)
                .open()
            {
                // sled reports its busy lock as ErrorKind::Other with this text (config.rs).
                Err(sled::Error::Io(e))
                    if (e.kind() == std::io::ErrorKind::WouldBlock
                        || e.to_string().starts_with("could not acquire lock"))
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                other => break other,
            }
        };
        let db = opened.map_err(|source| match source {
            sled::Error::Io(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                EngineError::NotWritable {
                    path: path.to_path_buf(),
                    source: e,
                }
            }
            source => EngineError::Journal {
                path: path.to_path_buf(),
                source,
            },
        })?;
        let sj = |source| EngineError::Journal {
            path: path.to_path_buf(),
            source,
        };
        let meta = db.open_tree("meta").map_err(sj)?;
        match meta.get("format").map_err(sj)? {
            Some(v) => {
                let bytes: [u8; 4] = v.as_ref().try_into().map_err(|_| EngineError::Corrupt {
                    path: path.to_path_buf(),
                    detail: "format number is not 4 bytes".into(),
                })?;
                let found = u32::from_be_bytes(bytes);
                if found > FORMAT {
                    return Err(EngineError::NewerFormat {
                        path: path.to_path_buf(),
                        found,
                        supported: FORMAT,
                    });
                }
                // Format 1 is the first: nothing older to migrate yet.
            }
            None => {
                meta.insert("format", &FORMAT.to_be_bytes()).map_err(sj)?;
            }
        }
        let tree = |name: &str| db.open_tree(name).map_err(sj);
        let db_file = path.join("db");
        let sync_file = std::fs::File::open(&db_file).map_err(|e| EngineError::io(&db_file, e))?;
        let runs = tree("runs")?;
        let mirror = check_commits(path, &runs)?;
        Ok(SledJournal {
            sync_file,
            mirror,
            latency: std::sync::Mutex::new(
                super::latency::CommitLatency::read(path).unwrap_or_default(),
            ),
            runs,
            steps: tree("steps")?,
            history: tree("history")?,
            checkpoints: tree("checkpoints")?,
            events: tree("events")?,
            leases: tree("leases")?,
            path: path.to_path_buf(),
            db,
        })
    }

    fn sled_err(&self, source: sled::Error) -> EngineError {
        EngineError::Journal {
            path: self.path.clone(),
            source,
        }
    }

    fn corrupt(&self, what: &str, detail: String) -> EngineError {
        EngineError::Corrupt {
            path: self.path.clone(),
            detail: format!("{what}: {detail}"),
        }
    }

    fn get<T: DeserializeOwned>(&self, tree: &sled::Tree, key: &str) -> Result<Option<T>> {
        match tree.get(key).map_err(|e| self.sled_err(e))? {
            Some(v) => codec::decode(&v)
                .map(Some)
                .map_err(|d| self.corrupt(key, d)),
            None => Ok(None),
        }
    }

    fn all<T: DeserializeOwned>(&self, tree: &sled::Tree, what: &str) -> Result<Vec<T>> {
        tree.iter()
            .values()
            .map(|v| {
                let v = v.map_err(|e| self.sled_err(e))?;
                codec::decode(&v).map_err(|d| self.corrupt(what, d))
            })
            .collect()
    }

    /// Makes everything written so far durable, against power loss too (see `sync_file`).
    fn flush(&self) -> Result<()> {
        self.db.flush().map_err(|e| self.sled_err(e))?;
        self.sync_file
            .sync_data()
            .map_err(|e| EngineError::io(self.path.join("db"), e))
    }

    /// Flushes, then records `commits` as durable in the mirror (not synced: after a power cut
    /// the mirror may lag sled, never lead it).
    fn flush_counted(&self, commits: u64) -> Result<()> {
        let started = std::time::Instant::now();
        self.flush()?;
        if let Ok(mut l) = self.latency.lock() {
            l.record(started.elapsed());
            // A measurement only: a failed write loses it, not the commit.
            let _ = l.write(&self.path);
        }
        std::os::unix::fs::FileExt::write_all_at(&self.mirror, &commits.to_be_bytes(), 0)
            .map_err(|e| EngineError::io(self.path.join(MIRROR), e))
    }

    fn tx_err(&self, e: TransactionError<String>) -> EngineError {
        match e {
            TransactionError::Abort(d) => self.corrupt("encoding", d),
            TransactionError::Storage(s) => self.sled_err(s),
        }
    }
}

/// Opens the commit mirror and compares it with sled's counter: a journal holding fewer commits
/// than were made durable lost records (a damaged disk, a restored backup, a copy taken mid-run)
/// and is refused rather than resumed from a past it does not know it has.
fn check_commits(path: &Path, runs: &sled::Tree) -> Result<std::fs::File> {
    let file = path.join(MIRROR);
    let mirror = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&file)
        .map_err(|e| EngineError::io(&file, e))?;
    let mut buf = [0u8; 8];
    let mirrored = match std::os::unix::fs::FileExt::read_exact_at(&mirror, &mut buf, 0) {
        Ok(()) => u64::from_be_bytes(buf),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
        Err(e) => return Err(EngineError::io(&file, e)),
    };
    let held = commits_in(runs.get(COMMITS).map_err(|source| EngineError::Journal {
        path: path.to_path_buf(),
        source,
    })?);
    if held < mirrored {
        return Err(EngineError::Corrupt {
            path: path.to_path_buf(),
            detail: format!(
                "it lost committed records: it holds {held} commits but {mirrored} were made durable; do not resume it: start a new run (CERT keeps what the run's markers say it loaded)"
            ),
        });
    }
    Ok(mirror)
}

fn commits_in(v: Option<sled::IVec>) -> u64 {
    v.and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

/// Bumps the commit counter inside a transaction; the new count.
fn bump(runs: &sled::transaction::TransactionalTree) -> TxResult<u64> {
    let n = commits_in(runs.get(COMMITS)?) + 1;
    runs.insert(COMMITS, &n.to_be_bytes())?;
    Ok(n)
}

fn enc<T: Serialize>(v: &T) -> TxResult<Vec<u8>> {
    codec::encode(v).map_err(ConflictableTransactionError::Abort)
}

fn event_bytes(seq: u64, generation: u32, kind: &EventKind) -> TxResult<Vec<u8>> {
    enc(&Event {
        seq,
        at_ms: now_ms(),
        generation,
        kind: kind.clone(),
    })
}

fn history_key(generation: u32, seq: u64, step: &str) -> Vec<u8> {
    let mut k = generation.to_be_bytes().to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k.extend_from_slice(step.as_bytes());
    k
}

impl JournalRead for SledJournal {
    fn run(&self) -> Result<RunRecord> {
        self.get(&self.runs, "run")?
            .ok_or_else(|| self.corrupt("run", "no run record".into()))
    }

    fn plan(&self) -> Result<Plan> {
        self.get(&self.runs, "plan")?
            .ok_or_else(|| self.corrupt("plan", "no plan record".into()))
    }

    fn steps(&self) -> Result<Vec<StepRecord>> {
        self.all(&self.steps, "step record")
    }

    fn history(&self) -> Result<Vec<StepRecord>> {
        self.all(&self.history, "history record")
    }

    fn checkpoints(&self) -> Result<Vec<CheckpointRecord>> {
        self.all(&self.checkpoints, "checkpoint record")
    }

    fn events(&self, after: Option<u64>) -> Result<Vec<Event>> {
        let start = after.map(|s| s.saturating_add(1)).unwrap_or(0);
        self.events
            .range(start.to_be_bytes()..)
            .values()
            .map(|v| {
                let v = v.map_err(|e| self.sled_err(e))?;
                codec::decode(&v).map_err(|d| self.corrupt("event", d))
            })
            .collect()
    }

    fn lease(&self) -> Result<Option<Lease>> {
        self.get(&self.leases, "lease")
    }
}

impl Journal for SledJournal {
    fn create(&self, run: &RunRecord, plan: &Plan) -> Result<()> {
        let created = EventKind::RunCreated {
            workflow: run.workflow.clone(),
        };
        (&self.runs, &self.events)
            .transaction(|(runs, events)| {
                runs.insert("run", enc(run)?)?;
                runs.insert("plan", enc(plan)?)?;
                let seq = events.generate_id()?;
                events.insert(&seq.to_be_bytes(), event_bytes(seq, 0, &created)?)?;
                Ok(())
            })
            .map_err(|e| self.tx_err(e))?;
        self.flush()
    }

    fn record_attempt(&self, record: &StepRecord, event: EventKind) -> Result<()> {
        (&self.steps, &self.events)
            .transaction(|(steps, events)| {
                steps.insert(record.id.as_bytes(), enc(record)?)?;
                let seq = events.generate_id()?;
                events.insert(
                    &seq.to_be_bytes(),
                    event_bytes(seq, record.generation, &event)?,
                )?;
                Ok(())
            })
            .map_err(|e| self.tx_err(e))
    }

    fn append(&self, generation: u32, event: EventKind) -> Result<()> {
        let seq = self.db.generate_id().map_err(|e| self.sled_err(e))?;
        let bytes = event_bytes(seq, generation, &event).map_err(|e| match e {
            ConflictableTransactionError::Abort(d) => self.corrupt("event", d),
            _ => self.corrupt("event", "conflict outside a transaction".into()),
        })?;
        self.events
            .insert(seq.to_be_bytes(), bytes)
            .map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    fn commit(&self, commit: &Commit) -> Result<()> {
        let n = (&self.runs, &self.steps, &self.checkpoints, &self.events)
            .transaction(|(runs, steps, checkpoints, events)| {
                if let Some(run) = &commit.run {
                    runs.insert("run", enc(run)?)?;
                }
                for rec in &commit.steps {
                    steps.insert(rec.id.as_bytes(), enc(rec)?)?;
                }
                for cp in &commit.checkpoints {
                    checkpoints.insert(cp.name.as_bytes(), enc(cp)?)?;
                }
                for (generation, kind) in &commit.events {
                    let seq = events.generate_id()?;
                    events.insert(&seq.to_be_bytes(), event_bytes(seq, *generation, kind)?)?;
                }
                bump(runs)
            })
            .map_err(|e| self.tx_err(e))?;
        self.flush_counted(n)
    }

    fn invalidate(
        &self,
        ids: &[String],
        cps: &[String],
        run: &RunRecord,
        new_events: Vec<EventKind>,
    ) -> Result<()> {
        let n = (
            &self.runs,
            &self.steps,
            &self.history,
            &self.checkpoints,
            &self.events,
        )
            .transaction(|(runs, steps, history, checkpoints, events)| {
                let n = bump(runs)?;
                for id in ids {
                    if let Some(old) = steps.remove(id.as_bytes())? {
                        let rec: StepRecord =
                            codec::decode(&old).map_err(ConflictableTransactionError::Abort)?;
                        let seq = history.generate_id()?;
                        history.insert(history_key(rec.generation, seq, id), old)?;
                    }
                }
                for name in cps {
                    checkpoints.remove(name.as_bytes())?;
                }
                runs.insert("run", enc(run)?)?;
                for kind in &new_events {
                    let seq = events.generate_id()?;
                    events.insert(&seq.to_be_bytes(), event_bytes(seq, run.generation, kind)?)?;
                }
                Ok(n)
            })
            .map_err(|e| self.tx_err(e))?;
        self.flush_counted(n)
    }

    fn put_lease(&self, lease: Option<&Lease>) -> Result<()> {
        match lease {
            Some(l) => {
                let bytes = codec::encode(l).map_err(|d| self.corrupt("lease", d))?;
                self.leases.insert("lease", bytes)
            }
            None => self.leases.remove("lease"),
        }
        .map_err(|e| self.sled_err(e))?;
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handle still held elsewhere in the process (as right after a runner ends) makes the next
    /// opening wait for it, not fail with sled's busy-lock error.
    #[test]
    fn opening_waits_for_a_handle_being_released() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j");
        let first = SledJournal::open(&path, true).expect("first");
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(400));
            drop(first);
        });
        let started = std::time::Instant::now();
        let second = SledJournal::open(&path, false);
        releaser.join().expect("releaser");
        assert!(second.is_ok(), "{:?}", second.err());
        assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    }
}
