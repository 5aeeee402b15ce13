//! The steps of the `migrate` workflow: extract (PROD → raw staging), anonymize (raw → anonymized
//! staging), purge-raw (the raw PII files go once anonymized output is journaled), load (one step
//! per CERT store). Each is safe to run again: files are written by temp-and-rename, loads are
//! exactly-once through their marker rows, purge deletes what is there.

use crate::anonymize::{anonymize, AnonError, AnonKey, Rules, TableInput};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wf_engine::{Artifact, Step, StepContext, StepError, StepOutput};
use wf_stores::analysis::{add_virtual_fks, analyze};
use wf_stores::extract::{extract_district, TableFile};
use wf_stores::load::{load_store, plan_loads, LoadOptions, LoadReport, StoreLoad, Strategy};
use wf_stores::schema::StoreSchema;
use wf_stores::staging::FileInfo;
use wf_stores::{Config, StoreError};

/// What every migrate step needs, built once from the run's arguments.
#[derive(Debug, Clone)]
pub struct MigrateParams {
    pub config: Config,
    /// The anonymization rules file (resolved against wf.toml's directory).
    pub rules_file: PathBuf,
    pub district: String,
    pub batch_rows: usize,
    pub strategy: Strategy,
    pub dry_run: bool,
    /// The key fingerprint the run started with: another key is refused.
    pub key_fingerprint: String,
}

/// A staged table as journaled.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StagedTable {
    pub table: String,
    pub path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

impl From<&TableFile> for StagedTable {
    fn from(t: &TableFile) -> Self {
        StagedTable {
            table: t.table.clone(),
            path: t.file.path.clone(),
            rows: t.file.rows,
            bytes: t.file.bytes,
            sha256: t.file.sha256.clone(),
        }
    }
}

/// Output of `extract`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExtractOut {
    pub schemas: Vec<StoreSchema>,
    pub files: Vec<StagedTable>,
    pub snapshots: BTreeMap<String, String>,
}

/// Output of `anonymize`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnonymizeOut {
    pub files: Vec<StagedTable>,
    pub key_fingerprint: String,
}

/// Output of `load/<store>`: the job (rollback needs it) and what it did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadOut {
    pub store: String,
    pub job: Option<StoreLoad>,
    pub report: Option<LoadReport>,
}

fn store_err(e: StoreError) -> StepError {
    if e.is_retryable() {
        StepError::Retryable(e.to_string())
    } else {
        StepError::Fatal(e.to_string())
    }
}

/// `extract`: the district's subset from every PROD store into raw staging (a 0700 directory).
pub struct ExtractStep(pub Arc<MigrateParams>);

#[async_trait::async_trait]
impl Step for ExtractStep {
    async fn run(&self, cx: &StepContext) -> Result<StepOutput, StepError> {
        let raw = cx.artifact_dir.join("raw");
        private_dir(&raw)?;
        let p = &self.0;
        let ex = extract_district(&p.config, &p.district, &raw, p.batch_rows)
            .await
            .map_err(store_err)?;
        let rows: u64 = ex.files.iter().map(|f| f.file.rows).sum();
        cx.progress.rows(rows);
        let out = ExtractOut {
            schemas: ex.schemas,
            files: ex.files.iter().map(StagedTable::from).collect(),
            snapshots: ex.snapshots,
        };
        let mut output = StepOutput::with_value(&out)?;
        output.metrics.insert("rows".into(), rows);
        output
            .metrics
            .insert("tables".into(), out.files.len() as u64);
        // The raw files are not artifacts: purge-raw deletes them on purpose.
        Ok(output)
    }
}

fn private_dir(dir: &Path) -> Result<(), StepError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|_| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| StepError::Fatal(format!("cannot create {}: {e}", dir.display())))
}

/// `anonymize`: raw staging → anonymized staging under the rules; default deny and leak scan.
pub struct AnonymizeStep(pub Arc<MigrateParams>);

#[async_trait::async_trait]
impl Step for AnonymizeStep {
    async fn run(&self, cx: &StepContext) -> Result<StepOutput, StepError> {
        let p = self.0.clone();
        let ex: ExtractOut = cx.input("extract")?;
        if let Some(gone) = ex.files.iter().find(|f| !f.path.exists()) {
            return Err(StepError::Fatal(format!(
                "raw staging {} is gone (purged after anonymization); start a new run to extract again",
                gone.path.display()
            )));
        }
        let rules = Rules::load(&p.rules_file).map_err(StepError::Fatal)?;
        let key = AnonKey::from_env(&rules.key_env).map_err(|e| StepError::Fatal(e.to_string()))?;
        if key.fingerprint() != p.key_fingerprint {
            return Err(StepError::Fatal(format!(
                "the anonymization key in {} is not the one this run started with (fingerprint {} vs {}): outputs would not join; use the original key or start a new run",
                rules.key_env,
                key.fingerprint(),
                p.key_fingerprint
            )));
        }
        let inputs: Vec<TableInput> = ex
            .files
            .iter()
            .map(|f| {
                let table = ex
                    .schemas
                    .iter()
                    .flat_map(|s| &s.tables)
                    .find(|t| t.id() == f.table);
                let mut unique: Vec<String> = Vec::new();
                if let Some(t) = table {
                    if t.primary_key.len() == 1 {
                        unique.push(t.primary_key[0].clone());
                    }
                    unique.extend(
                        t.uniques
                            .iter()
                            .filter(|u| u.columns.len() == 1)
                            .map(|u| u.columns[0].clone()),
                    );
                }
                TableInput {
                    table: f.table.clone(),
                    file: f.path.clone(),
                    unique,
                }
            })
            .collect();
        let out_dir = cx.artifact_dir.join("anon");
        let report_path = cx.artifact_dir.join("anonymization-report.json");
        let rules_file = p.rules_file.clone();
        let report = tokio::task::spawn_blocking(move || {
            anonymize(&inputs, &rules, &rules_file, &key, &out_dir)
        })
        .await
        .map_err(|e| StepError::Fatal(format!("anonymization task failed: {e}")))?
        .map_err(|e| match e {
            AnonError::Leak(_) => StepError::Gate(e.to_string()),
            AnonError::Staging(s) => store_err(s),
            other => StepError::Fatal(other.to_string()),
        })?;
        let json =
            serde_json::to_vec_pretty(&report).map_err(|e| StepError::Fatal(e.to_string()))?;
        std::fs::write(&report_path, json)
            .map_err(|e| StepError::Retryable(format!("{}: {e}", report_path.display())))?;
        let files: Vec<StagedTable> = report
            .files
            .iter()
            .map(|(t, f): &(String, FileInfo)| StagedTable {
                table: t.clone(),
                path: f.path.clone(),
                rows: f.rows,
                bytes: f.bytes,
                sha256: f.sha256.clone(),
            })
            .collect();
        let mut output = StepOutput::with_value(&AnonymizeOut {
            files: files.clone(),
            key_fingerprint: report.key_fingerprint.clone(),
        })?;
        for f in &files {
            output.artifacts.push(
                Artifact::from_file(&f.path)
                    .map_err(|e| StepError::Retryable(format!("{}: {e}", f.path.display())))?,
            );
        }
        output
            .metrics
            .insert("rows".into(), files.iter().map(|f| f.rows).sum());
        Ok(output)
    }
}

/// `purge-raw`: deletes the raw (PII) staging once the anonymized files are journaled.
pub struct PurgeRawStep;

#[async_trait::async_trait]
impl Step for PurgeRawStep {
    async fn run(&self, cx: &StepContext) -> Result<StepOutput, StepError> {
        let ex: ExtractOut = cx.input("extract")?;
        let mut removed = 0u64;
        for f in &ex.files {
            match std::fs::remove_file(&f.path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(StepError::Retryable(format!(
                        "cannot delete {}: {e}",
                        f.path.display()
                    )))
                }
            }
        }
        let mut out = StepOutput::with_value(&removed)?;
        out.metrics.insert("files".into(), removed);
        Ok(out)
    }
}

/// `load/<store>`: the anonymized tables of one store into its CERT database, in one transaction.
pub struct LoadStep {
    pub params: Arc<MigrateParams>,
    pub store: String,
}

#[async_trait::async_trait]
impl Step for LoadStep {
    async fn run(&self, cx: &StepContext) -> Result<StepOutput, StepError> {
        let p = &self.params;
        let ex: ExtractOut = cx.input("extract")?;
        let anon: AnonymizeOut = cx.input("anonymize")?;
        let mut schemas = ex.schemas.clone();
        add_virtual_fks(&mut schemas, &p.config).map_err(StepError::Fatal)?;
        let analysis = analyze(&schemas);
        let files: Vec<TableFile> = anon
            .files
            .iter()
            .map(|f| TableFile {
                table: f.table.clone(),
                file: FileInfo {
                    path: f.path.clone(),
                    rows: f.rows,
                    bytes: f.bytes,
                    sha256: f.sha256.clone(),
                },
            })
            .collect();
        let opts = LoadOptions {
            run_key: cx.idempotency_key.clone(),
            manifest_dir: cx.artifact_dir.join("manifests"),
            strategy: p.strategy,
            dry_run: p.dry_run,
        };
        let job = plan_loads(&p.config, &ex.schemas, &analysis, &files, &opts)
            .into_iter()
            .find(|j| j.store == self.store);
        let store = p.config.store(&self.store).ok_or_else(|| {
            StepError::Fatal(format!("store {} is not in the config", self.store))
        })?;
        let report = match &job {
            Some(j) => Some(load_store(store, j).await.map_err(store_err)?),
            None => None,
        };
        let rows = report
            .as_ref()
            .map(|r| r.tables.iter().map(|t| t.inserted).sum())
            .unwrap_or(0);
        let mut out = StepOutput::with_value(&LoadOut {
            store: self.store.clone(),
            job,
            report,
        })?;
        out.metrics.insert("rows".into(), rows);
        Ok(out)
    }
}
