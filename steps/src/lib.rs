//! wf's steps: where the engine meets the stores. For now the selftest node that exercises the engine;
//! the migration steps (analyze, extract, anonymize, validate, load, report, rollback) plug in here.

pub mod analyze;
pub mod anonymize;
pub mod migrate;
pub mod selftest;
pub mod validate;
