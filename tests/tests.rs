//! wf's integration tests: they run the real `wf` binary as a child process.
//!
//! - `batch`: several districts, a failed one, a SIGKILLed batch resumed as a whole.
//! - `analyze`: `wf analyze` on SQLite stores made from the fixtures, and config errors.
//! - `change_tracking`: an incremental refresh reads only the changed rows of tables with a change column.
//! - `cli`: argument handling, one-line errors and exit codes, JSON shapes, retries and failures.
//! - `migrate`: `wf run migrate` and `wf rollback` end to end on embedded SQLite stores.
//! - `refusals`: no key, a guessable key, PII without a rule, a resume under another key.
//! - `select_districts`: `wf select-districts` on the SQLite fixture and on PostgreSQL.
//! - `crash`: SIGKILL at random moments and at every failpoint, then `wf resume`.
//! - `demo`: `wf demo` (seed + migrate + rollback) on embedded stores and the embedded graph.
//! - `validation`: the gate on crafted bad inputs, sql rules in the load transaction, `wf validate`.
//! - `recover`: a rule change applied with `wf recover`, replacing the run's rows in CERT.
//! - `e2e`: PostgreSQL + Bolt, SIGKILL inside every phase, CERT equal to an uninterrupted run.
//! - `graph_cert`: a wrong CERT graph database stops the run before any store commits.
//! - `graph_only`: a wf.toml with only `[graph]`, embedded and on ArcadeDB: select, migrate, validate, rollback, batch.
//! - `guard`: the CERT guard on PostgreSQL: aliases of PROD, unenrolled CERT, PROD enrolled as CERT.
//! - `safety`: rollback refuses missing or damaged manifests; raw PII purged at every terminal state.
//! - `integrity`: a flipped byte in raw, anonymized or graph staging is caught and its producer re-run.
//! - `restart`: CERT's PostgreSQL and Bolt servers down 20 s during the loads; the run completes alone.
//! - `realschema`: a PostgreSQL schema with partitions, cycles, identities, every common type.
//! - `preflight`: misspelled names and unset variables refused, with the closest name, before a run.
//! - `control`: recover from a checkpoint, pause, cancel, SIGTERM, concurrent resumes.
//! - `audit`: the audit trail of PROD reads and CERT writes, and its tamper checks.
//! - `notify`: `[[notify]]` webhooks and commands for a batch with a failing district; receiver down.
//! - `serve`: the dashboard API follows a live run; pages embedded; `/metrics` parses; tokens.
//! - `browser`: the dashboard in headless Chromium, a run followed to done; screenshots.
//! - `journal_format`: a journal of the previous step output format is read by this wf.
//! - `snapshots`: per-table extract steps killed mid-store, resumed in `strict` and `closure` mode.

mod util;

mod analyze;
mod audit;
mod batch;
mod browser;
mod change_tracking;
mod cli;
mod control;
mod crash;
mod demo;
mod e2e;
mod graph_cert;
mod graph_only;
mod guard;
mod integrity;
mod journal_format;
mod migrate;
mod natural_keys;
mod notify;
mod preflight;
mod realschema;
mod recover;
mod refresh;
mod refusals;
mod restart;
mod safety;
mod select_districts;
mod serve;
mod snapshots;
mod validation;
