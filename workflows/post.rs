//! `wf validate <run>` (CERT against the run's anonymized staging) and `wf report <run>`.

use crate::cli::exit;
use crate::cli::{emit, say};
use std::collections::HashMap;
use wf_engine::Engine;
use wf_steps::anonymize::originals::Originals;
use wf_steps::migrate::{AnonymizeOut, ExtractOut, LoadOut};
use wf_steps::validate::Gate;

/// The configuration file a migrate run recorded: its `config_file` attribute (runs from before
/// it was journaled: the `--config-file` of its arguments).
pub fn recorded_config(record: &wf_engine::model::RunRecord) -> Option<std::path::PathBuf> {
    if let Some(p) = record.attrs.get("config_file") {
        return Some(std::path::PathBuf::from(p));
    }
    record
        .args
        .iter()
        .position(|a| a == "--config-file")
        .and_then(|i| record.args.get(i + 1))
        .map(std::path::PathBuf::from)
}

/// The config a migrate run recorded, else the global one.
pub fn run_config(
    engine: &Engine,
    run: &str,
    fallback: &std::path::Path,
) -> anyhow::Result<(std::path::PathBuf, wf_stores::Config)> {
    let (record, _) = engine.outputs(run)?;
    if record.workflow != "migrate" {
        anyhow::bail!("run {run} is a {} run, not a migrate run", record.workflow);
    }
    let path = recorded_config(&record).unwrap_or_else(|| fallback.to_path_buf());
    let cfg = wf_stores::Config::load(&path)?;
    Ok((path, cfg))
}

/// `wf validate <run>`.
pub async fn validate(
    engine: &Engine,
    run: &str,
    config: &std::path::Path,
    json: bool,
) -> anyhow::Result<u8> {
    let (path, cfg) = run_config(engine, run, config)?;
    let (_, outputs) = engine.outputs(run)?;
    let get = |id: &str| outputs.iter().find(|(s, _)| s == id).map(|(_, o)| o);
    let ex: ExtractOut = ExtractOut::from_outputs(&outputs)
        .ok_or_else(|| anyhow::anyhow!("run {run} has not extracted yet: nothing to validate"))?
        .map_err(anyhow::Error::msg)?;
    let anon: AnonymizeOut = get("anonymize")
        .ok_or_else(|| anyhow::anyhow!("run {run} has not anonymized yet: nothing to validate"))?
        .value_as()
        .map_err(anyhow::Error::msg)?;
    // CERT is compared with the staging as the run recorded it, never with a file changed since.
    anon.expect_files();
    let loads: Vec<LoadOut> = outputs
        .iter()
        .filter(|(s, _)| s.starts_with("load/"))
        .filter_map(|(_, o)| o.value_as().ok())
        .collect();
    let loaded = loads.iter().any(|l| {
        l.job.as_ref().is_some_and(|j| !j.dry_run)
            || l.graph_job.as_ref().is_some_and(|j| !j.dry_run)
    });
    if !loaded {
        anyhow::bail!("run {run} has loaded nothing into CERT (dry run, --skip-load, or not there yet): nothing to validate");
    }
    if let Some(gone) = anon.files.iter().find(|f| !f.path.exists()) {
        anyhow::bail!(
            "run {run}: anonymized staging {} is gone; wf validate compares CERT with it",
            gone.path.display()
        );
    }
    let mut schemas = ex.schemas.clone();
    wf_stores::analysis::add_virtual_fks(&mut schemas, &cfg).map_err(anyhow::Error::msg)?;
    let anon_dir = engine.data().run_dir(run).join("steps").join("anonymize");
    let (scanned_fields, originals) = leak_scan_inputs(&anon_dir)?;
    let key = run_key(&cfg, &path, run, &anon)?;
    let (files, graph_files) = anon.split(cfg.graph.as_ref());
    let input = wf_steps::validate::post::PostInput {
        config: &cfg,
        schemas: &schemas,
        files,
        graph_files,
        scanned_fields,
        originals,
        key: key.as_ref(),
    };
    let v = wf_steps::validate::post::validate_loaded(input).await?;
    let dir = engine.data().root().join("reports");
    std::fs::create_dir_all(&dir)?;
    let out = dir.join(format!("{run}.validate.json"));
    std::fs::write(&out, serde_json::to_vec_pretty(&v)?)?;
    if json {
        emit(&format!("{}\n", serde_json::to_string_pretty(&v)?));
    } else {
        print_validation(run, &v, &out);
    }
    Ok(if v.status == Gate::Failed {
        exit::FAILED_VALIDATION
    } else {
        exit::DONE
    })
}

/// Fields the leak scan covered, with their domains (`field:…`, `detector:…`).
type ScannedFields = HashMap<String, Vec<String>>;

/// The fields the run's leak scan covered, with their domains, and the sorted keyed hashes of the
/// originals. A report from before domains has neither: its passed-through fields are scanned
/// against every original, as then.
fn leak_scan_inputs(anon_dir: &std::path::Path) -> anyhow::Result<(ScannedFields, Originals)> {
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(anon_dir.join("anonymization-report.json"))?)?;
    let scanned_fields: HashMap<String, Vec<String>> = report["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| match f["scanned"].as_bool() {
            Some(scanned) => scanned,
            None => f["changed"].as_u64() == Some(0),
        })
        .filter_map(|f| {
            let tags = f["leak_tags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(String::from))
                .collect();
            f["field"].as_str().map(|n| (n.to_string(), tags))
        })
        .collect();
    Ok((
        scanned_fields,
        read_originals(&anon_dir.join("leak-hashes.bin"))?,
    ))
}

/// The originals' hashes of `path` (none when the run wrote no file): in memory up to
/// `WF_LEAK_MEMORY_HASHES`, else looked up in the file.
fn read_originals(path: &std::path::Path) -> anyhow::Result<Originals> {
    let budget = wf_steps::anonymize::leak_scan::budget();
    Originals::open(path, budget).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The anonymization key of the environment if it is the run's; `None` (the leak scan skipped,
/// said) if it is not set; an error naming both fingerprints if it is another key.
fn run_key(
    cfg: &wf_stores::Config,
    path: &std::path::Path,
    run: &str,
    anon: &AnonymizeOut,
) -> anyhow::Result<Option<wf_steps::anonymize::AnonKey>> {
    let rules_file = cfg
        .anonymization_rules
        .as_ref()
        .map(|r| path.parent().unwrap_or(std::path::Path::new(".")).join(r));
    let key_env = rules_file
        .and_then(|f| wf_steps::anonymize::Rules::load(&f).ok())
        .map(|r| r.key_env)
        .unwrap_or_else(|| "WF_ANON_KEY".into());
    let key = wf_steps::anonymize::AnonKey::from_env(&key_env).ok();
    match &key {
        Some(k) if k.fingerprint() != anon.key_fingerprint => anyhow::bail!(
            "the key in {key_env} is not the one run {run} used (fingerprint {} vs {}); the leak scan needs the run's key",
            k.fingerprint(),
            anon.key_fingerprint
        ),
        None => say(&format!("wf validate: {key_env} is not set, so the PII leak scan against CERT is skipped")),
        _ => {}
    }
    Ok(key)
}

/// The validation's summary on the terminal.
fn print_validation(run: &str, v: &wf_steps::validate::ValidationReport, out: &std::path::Path) {
    say(&format!(
        "run {run}: CERT validation {} ({} tables, {} rows, {:.2}s)",
        v.status.as_str(),
        v.tables,
        v.rows,
        v.seconds
    ));
    for (c, n) in &v.categories {
        say(&format!(
            "  {c}: {} checks, {} passed, {} failed",
            n.run, n.passed, n.failed
        ));
    }
    for f in &v.findings {
        say(&format!(
            "  {:?} {} {}: {}",
            f.severity, f.table, f.check, f.message
        ));
    }
    say(&format!("wrote {}", out.display()));
}

/// `wf report <run>`: writes the run's report afresh and prints it.
pub fn report(engine: &Engine, run: &str, json: bool) -> anyhow::Result<u8> {
    let (record, _) = engine.outputs(run)?;
    if record.workflow != "migrate" {
        anyhow::bail!(
            "run {run} is a {} run: reports are for migrate runs",
            record.workflow
        );
    }
    let md = crate::report::write(engine, run)?;
    let path = if json { md.with_extension("json") } else { md };
    emit(&std::fs::read_to_string(&path)?);
    Ok(exit::DONE)
}
