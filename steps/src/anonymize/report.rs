//! What anonymizing reports: per field, per table (with its originals' hashes for the leak
//! scan), and for the whole set (`anonymization-report.json`).

use super::column::Hashes;
use super::detect::Detector;
use wf_stores::staging::FileInfo;

/// What happened to one field.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FieldReport {
    pub field: String,
    pub rule: Option<String>,
    pub detected: Vec<Detector>,
    pub changed: u64,
    /// Whether the leak scan compared what was written for this field with the originals.
    pub scanned: bool,
    /// The field's leak-scan domains (`field:…`, `detector:…`), which `wf validate` scans CERT with.
    pub leak_tags: Vec<String>,
}

/// The outcome of anonymizing a set of tables (written as `anonymization-report.json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub key_fingerprint: String,
    pub fields: Vec<FieldReport>,
    /// Output files, per table.
    #[serde(skip)]
    pub files: Vec<(String, FileInfo)>,
    /// Fields where an original value was found after anonymization, with counts (never values).
    pub leaks: Vec<(String, u64)>,
    /// How many distinct keyed hashes of originals the leak scan compared with (written sorted
    /// to `leak-hashes.bin` for the leak scan of `wf validate`; without the key they reveal
    /// nothing).
    #[serde(skip)]
    pub originals: u64,
}

/// One table anonymized: its output file, what happened to each field, and the keyed hashes of
/// its originals (in sorted runs), which the leak scan over every table needs.
pub struct TableOut {
    pub table: String,
    pub info: FileInfo,
    pub fields: Vec<FieldReport>,
    pub originals: Hashes,
    pub written: Written,
}

/// The keyed hashes of the values a table's scanned fields were written with (in each field's
/// domains), which the leak scan looks up among the originals instead of reading the file again.
#[derive(Default)]
pub enum Written {
    /// Not gathered (a file merged with an earlier run's rows): the scan reads the file.
    #[default]
    Unknown,
    /// Gathered by the workers that wrote the file.
    Hashes(Hashes),
    /// Sorted and distinct, in a file of little-endian u64s (a per-table step's).
    File(std::path::PathBuf),
}
