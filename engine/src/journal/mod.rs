//! The `Journal` seam: the durable record of one run. `SledJournal` is the embedded default; a shared
//! PostgreSQL journal (several workers on several machines) can implement the same two traits later.
//!
//! # Durability contract
//! A step counts as done only when `Journal::commit` has returned: its record, the checkpoints it
//! completes and their events are written in one atomic transaction and flushed before the runner
//! moves on. `SledJournal` flushes with sled's `flush` (write + `sync_file_range`, which survives a
//! killed process) and then `fdatasync`s the database file, so a record also survives power loss. For a crash (SIGKILL, power loss) at each point of a step's life, resume does this:
//! - **before the step starts**: the step is pending; it runs.
//! - **during the step**: its attempt record may or may not have reached disk (attempt records are not
//!   flushed); the step runs again, with the attempt count possibly one lower than the truth.
//! - **after its effect, before its record**: the step runs again; the step itself makes the repeated
//!   effect harmless (idempotent files, a marker row in the effect's own transaction).
//! - **after its record**: the step is done and is never run again in this generation; its output is read
//!   from the journal, and its artifacts are checked (size, mtime, else their digest, see `digest`): a damaged one makes the
//!   step, and everything downstream of it, run again.

pub mod latency;
mod sled_journal;

pub use sled_journal::SledJournal;

use crate::error::Result;
use crate::model::{CheckpointRecord, Event, EventKind, Lease, Plan, RunRecord, StepRecord};

/// The on-disk format this binary writes. Older journals are migrated on open; newer ones are refused.
pub const FORMAT: u32 = 1;

/// Everything that becomes durable together when a batch of steps finishes.
#[derive(Debug, Default)]
pub struct Commit {
    pub run: Option<RunRecord>,
    pub steps: Vec<StepRecord>,
    pub checkpoints: Vec<CheckpointRecord>,
    /// Events, each with the generation it belongs to.
    pub events: Vec<(u32, EventKind)>,
}

/// Reading a run's journal: what status, log and resume need.
pub trait JournalRead: Send + Sync {
    fn run(&self) -> Result<RunRecord>;
    fn plan(&self) -> Result<Plan>;
    /// Step records of the current generation.
    fn steps(&self) -> Result<Vec<StepRecord>>;
    /// Step records invalidated by recover or artifact checks, oldest generation first.
    fn history(&self) -> Result<Vec<StepRecord>>;
    fn checkpoints(&self) -> Result<Vec<CheckpointRecord>>;
    /// Events in order, those after `after` only when given.
    fn events(&self, after: Option<u64>) -> Result<Vec<Event>>;
    fn lease(&self) -> Result<Option<Lease>>;
}

/// Writing a run's journal.
pub trait Journal: JournalRead {
    /// Creates the run: its record, plan and first event, durably.
    fn create(&self, run: &RunRecord, plan: &Plan) -> Result<()>;
    /// Records an attempt start. Not flushed: losing it only undercounts attempts after a crash.
    fn record_attempt(&self, record: &StepRecord, event: EventKind) -> Result<()>;
    /// Appends an event, not flushed (the next commit or flush makes it durable).
    fn append(&self, generation: u32, event: EventKind) -> Result<()>;
    /// Writes `commit` atomically and durably; after `Ok` its steps count as done.
    fn commit(&self, commit: &Commit) -> Result<()>;
    /// Moves the current records of `steps` to history and drops `checkpoints`, writing `run` and
    /// `events` in the same atomic, durable batch (recover, damaged artifacts). Nothing is erased.
    fn invalidate(
        &self,
        steps: &[String],
        checkpoints: &[String],
        run: &RunRecord,
        events: Vec<EventKind>,
    ) -> Result<()>;
    /// Sets or clears the lease record, durably.
    fn put_lease(&self, lease: Option<&Lease>) -> Result<()>;
}
