//! Anonymization of staged tables: keyed (HMAC-SHA256), consistent across tables, stores and runs,
//! format-preserving, default-deny (a PII-looking field without a rule stops the run), and checked
//! by a leak scan. The key comes from the environment and only its fingerprint is ever recorded.

mod column;
pub mod detect;
pub mod input;
pub mod key;
pub mod leak;
pub mod leak_scan;
pub mod originals;
mod pipeline;
mod report;
pub mod rules;
pub mod strategy;
pub mod table;
mod unique;

pub use column::Hashes;
pub use key::{AnonKey, KeyError};
pub use leak_scan::{scan, LEAK_HASHES};
pub use rules::Rules;
pub use table::{
    anonymize, anonymize_table, collision_fixes, AnonError, Fixes, Report, TableInput, TableOut,
};
