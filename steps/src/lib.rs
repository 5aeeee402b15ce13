//! wf's steps: where the engine meets the stores. The migrate workflow's steps (extract, anonymize,
//! validate, load, report), its preflight checks, discovery for `wf analyze`, and the selftest node.

pub mod analyze;
pub mod anonymize;
pub mod carry;
pub mod migrate;
pub mod preflight;
mod runs;
pub mod selftest;
pub mod validate;
