//! The data directory: `journal/<run>/` (sled), `runs/<run>/` (lock, lease, control, live status, step
//! files), `logs/<run>.log`. Also the run lock: an OS file lock (`flock`) that the kernel releases when
//! its holder dies, so a crashed runner's lease is stale exactly when its lock is free.

use crate::error::{EngineError, Result};
use crate::model::Lease;
use serde::{de::DeserializeOwned, Serialize};
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A request to a live runner, left in `runs/<run>/control`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Pause,
    Cancel,
}

/// The paths of one data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

/// Exclusive access to a run, held for as long as this value lives.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// How a run could be reached.
pub enum Access {
    /// Nobody runs it: this process holds the lock and may open the journal.
    Exclusive(RunLock),
    /// A runner holds it; its lease, if it wrote one yet.
    Live(Option<Lease>),
}

/// How long to wait for a lock that a short reader (`wf status`) may hold.
const LOCK_PATIENCE: Duration = Duration::from_secs(3);

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn journal_path(&self, run: &str) -> PathBuf {
        self.root.join("journal").join(run)
    }

    pub fn run_dir(&self, run: &str) -> PathBuf {
        self.root.join("runs").join(run)
    }

    pub fn log_path(&self, run: &str) -> PathBuf {
        self.root.join("logs").join(format!("{run}.log"))
    }

    fn not_writable(&self, path: PathBuf) -> impl FnOnce(std::io::Error) -> EngineError {
        move |source| EngineError::NotWritable { path, source }
    }

    /// Creates the directory tree, or says why it cannot.
    /// The root is made owner-only (0700) if it is not: it holds raw PII and manifests.
    pub fn ensure(&self) -> Result<()> {
        for sub in ["journal", "runs", "logs"] {
            let p = self.root.join(sub);
            std::fs::create_dir_all(&p).map_err(self.not_writable(p.clone()))?;
        }
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(&self.root).map_err(self.not_writable(self.root.clone()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
                .map_err(self.not_writable(self.root.clone()))?;
        }
        Ok(())
    }

    /// Allocates the next free run id `<prefix>-<yyyymmdd>-<nnn>` by creating its run directory, which
    /// is atomic: two processes starting runs at once get different ids.
    pub fn allocate_run_id(&self, prefix: &str) -> Result<String> {
        self.ensure()?;
        let day = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let day: String = day.chars().take(10).filter(|c| *c != '-').collect();
        for n in 1..100_000u32 {
            let id = format!("{prefix}-{day}-{n:03}");
            match std::fs::create_dir(self.run_dir(&id)) {
                Ok(()) => return Ok(id),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(EngineError::NotWritable {
                        path: self.run_dir(&id),
                        source: e,
                    })
                }
            }
        }
        Err(EngineError::Workflow(format!(
            "no free run id left for {prefix}-{day} in {}",
            self.root.display()
        )))
    }

    /// Ids of every run that has a journal, sorted.
    pub fn run_ids(&self) -> Result<Vec<String>> {
        let dir = self.root.join("journal");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(EngineError::io(dir, e)),
        };
        let mut ids: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// True when run `run` has a journal here.
    pub fn has_run(&self, run: &str) -> bool {
        !run.is_empty()
            && !run.contains(['/', '\\'])
            && run != "."
            && run != ".."
            && self.journal_path(run).is_dir()
    }

    fn try_lock(&self, run: &str) -> Result<Option<RunLock>> {
        let dir = self.run_dir(run);
        std::fs::create_dir_all(&dir).map_err(self.not_writable(dir.clone()))?;
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(self.not_writable(path.clone()))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(RunLock { _file: file })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(EngineError::io(path, e)),
        }
    }

    /// Locks a run that is being created (its journal does not exist yet).
    pub fn lock_for_runner_new(&self, run: &str) -> Result<RunLock> {
        self.try_lock(run)?.ok_or_else(|| EngineError::Busy {
            run: run.to_string(),
            holder: "another wf process".into(),
        })
    }

    /// Takes the run for a runner, or refuses with `Busy` naming the live holder.
    pub fn lock_for_runner(&self, run: &str) -> Result<RunLock> {
        match self.access(run, true)? {
            Access::Exclusive(lock) => Ok(lock),
            Access::Live(lease) => Err(EngineError::Busy {
                run: run.to_string(),
                holder: lease
                    .map(|l| l.describe())
                    .unwrap_or_else(|| "another wf process".into()),
            }),
        }
    }

    /// Takes the run briefly (to read or edit its journal) or reports that a runner holds it.
    /// A lock held without a live lease is a short reader or a runner starting: wait a little.
    pub fn access(&self, run: &str, runner_only: bool) -> Result<Access> {
        if !self.has_run(run) {
            return Err(EngineError::UnknownRun(run.to_string()));
        }
        let start = Instant::now();
        loop {
            if let Some(lock) = self.try_lock(run)? {
                return Ok(Access::Exclusive(lock));
            }
            let lease = self.read_lease(run);
            if let Some(l) = &lease {
                if holder_alive(l) {
                    return Ok(Access::Live(lease));
                }
            }
            if start.elapsed() > LOCK_PATIENCE {
                return Ok(Access::Live(if runner_only { None } else { lease }));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn lease_path(&self, run: &str) -> PathBuf {
        self.run_dir(run).join("lease.json")
    }

    pub fn write_lease(&self, run: &str, lease: Option<&Lease>) -> Result<()> {
        let path = self.lease_path(run);
        match lease {
            Some(l) => write_json_atomic(&path, l),
            None => remove_if_exists(&path),
        }
    }

    pub fn read_lease(&self, run: &str) -> Option<Lease> {
        read_json(&self.lease_path(run))
    }

    fn control_path(&self, run: &str) -> PathBuf {
        self.run_dir(run).join("control")
    }

    /// Leaves a request for the live runner of `run`.
    pub fn request(&self, run: &str, control: Control) -> Result<()> {
        let text = match control {
            Control::Pause => "pause",
            Control::Cancel => "cancel",
        };
        let path = self.control_path(run);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).map_err(|e| EngineError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| EngineError::io(&path, e))
    }

    /// Takes the pending request for `run`, if any (the runner polls this between steps).
    pub fn take_request(&self, run: &str) -> Option<Control> {
        let path = self.control_path(run);
        let text = std::fs::read_to_string(&path).ok()?;
        let _ = std::fs::remove_file(&path);
        match text.trim() {
            "pause" => Some(Control::Pause),
            "cancel" => Some(Control::Cancel),
            _ => None,
        }
    }

    fn snapshot_path(&self, run: &str) -> PathBuf {
        self.run_dir(run).join("state.json")
    }

    /// Publishes a live runner's status for readers, which cannot open a journal the runner holds.
    pub fn write_snapshot<T: Serialize>(&self, run: &str, value: &T) -> Result<()> {
        write_json_atomic(&self.snapshot_path(run), value)
    }

    pub fn read_snapshot<T: DeserializeOwned>(&self, run: &str) -> Option<T> {
        read_json(&self.snapshot_path(run))
    }

    pub fn clear_snapshot(&self, run: &str) -> Result<()> {
        remove_if_exists(&self.snapshot_path(run))
    }
}

/// Whether the lease's process still exists (checked through /proc on this host; a lease of another
/// host is assumed alive, since the lock is what really decides).
fn holder_alive(lease: &Lease) -> bool {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    if lease.host != host || !Path::new("/proc/self").exists() {
        return true;
    }
    Path::new(&format!("/proc/{}", lease.pid)).exists()
}

fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let bytes = serde_json::to_vec(value).map_err(|e| EngineError::Workflow(e.to_string()))?;
    std::fs::write(&tmp, bytes).map_err(|e| EngineError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| EngineError::io(path, e))
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(EngineError::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_unique_and_sequential() {
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::new(dir.path());
        let a = d.allocate_run_id("st").unwrap();
        let b = d.allocate_run_id("st").unwrap();
        assert!(a.starts_with("st-") && a.ends_with("-001"), "{a}");
        assert!(b.ends_with("-002"), "{b}");
    }

    #[test]
    fn second_lock_on_a_run_is_refused_while_the_first_lives() {
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::new(dir.path());
        d.ensure().unwrap();
        std::fs::create_dir_all(d.journal_path("r1")).unwrap();
        let held = d.try_lock("r1").unwrap();
        assert!(held.is_some());
        assert!(d.try_lock("r1").unwrap().is_none());
        drop(held);
        assert!(d.try_lock("r1").unwrap().is_some());
    }

    #[test]
    fn control_requests_are_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::new(dir.path());
        std::fs::create_dir_all(d.run_dir("r")).unwrap();
        d.request("r", Control::Pause).unwrap();
        assert_eq!(d.take_request("r"), Some(Control::Pause));
        assert_eq!(d.take_request("r"), None);
    }

    #[test]
    fn unknown_and_path_like_run_ids_are_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::new(dir.path());
        assert!(!d.has_run("../x"));
        assert!(matches!(
            d.access("nope", false),
            Err(EngineError::UnknownRun(_))
        ));
    }
}
