//! wf's workflows and command line. The binary (`main.rs`) only calls `wf::main` (the command
//! line is parsed in `cli`, run in `commands`); the workflow definitions live here so tests and
//! benchmarks can build them too.

pub mod arcade;
pub mod audit;
pub mod batch;
pub mod cli;
mod commands;
pub use commands::main;
pub mod demo;
mod environment;
pub mod live;
pub mod logging;
pub mod migrate;
pub mod notify;
pub mod params;
mod post;
pub mod progress;
pub mod purge;
mod refresh;
pub mod registry;
pub mod report;
mod rollback;
pub mod runner_args;
pub mod seed;
pub mod selftest;
pub mod serve;
mod serve_cache;
mod serve_page;
mod show;
