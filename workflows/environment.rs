//! The commands that act on the environments rather than on a run: `wf analyze` and
//! `wf select-districts` read PROD, `wf seed` writes the synthetic PROD (or CERT's empty schema),
//! `wf cert` enrolls or checks CERT databases.

use crate::cli::{emit, exit, say};
use anyhow::Context;
use wf_engine::Engine;

/// `wf analyze`: discovers every store, writes the analysis, and names what no run could carry.
pub(crate) async fn analyze(
    config: &std::path::Path,
    engine: &Engine,
    json: bool,
) -> anyhow::Result<u8> {
    let cfg = wf_stores::Config::load(config)?;
    let out = engine.data().root().join("analysis");
    let d = wf_steps::analyze::discover(&cfg, &out).await?;
    // Columns no run can carry (see wf_steps::carry), unless a rule replaces their values.
    let rules = cfg.anonymization_rules.as_ref().map(|r| {
        let file = config.parent().unwrap_or(std::path::Path::new(".")).join(r);
        wf_steps::anonymize::Rules::load(&file)
    });
    let rules = match rules {
        Some(Err(e)) => anyhow::bail!(e),
        Some(Ok(r)) => Some(r),
        None => None,
    };
    let uncarried = wf_steps::carry::uncarried(&d.schemas, rules.as_ref());
    for line in &uncarried {
        eprintln!("wf: {line}");
    }
    let code = if uncarried.is_empty() {
        exit::DONE
    } else {
        exit::ERROR
    };
    if json {
        emit(&format!("{}\n", serde_json::to_string_pretty(&d.analysis)?));
        return Ok(code);
    }
    let tables: usize = d.schemas.iter().map(|s| s.tables.len()).sum();
    let rows: u64 = d
        .schemas
        .iter()
        .flat_map(|s| &s.tables)
        .map(|t| t.row_count)
        .sum();
    say(&format!(
        "{} stores, {tables} tables, {rows} rows, {} foreign keys, {} cycles",
        d.schemas.len(),
        d.analysis.edges.len(),
        d.analysis.cycles.len()
    ));
    for c in &d.analysis.cycles {
        say(&format!("cycle {}: {}", c.tables.join(" -> "), c.reason));
    }
    for t in d
        .schemas
        .iter()
        .flat_map(|s| &s.tables)
        .filter(|t| t.primary_key.is_empty())
    {
        say(&format!(
            "table {} has no primary key: rollback deletes the rows equal in every column to those a run loaded (NULLs included), so a CERT row identical to a loaded one goes too; declare a primary key to avoid it",
            t.id()
        ));
    }
    say(&format!("load order: {}", d.analysis.order.join(", ")));
    if let Some(g) = &d.graph {
        let nodes: u64 = g.labels.iter().map(|l| l.count).sum();
        let rels: u64 = g.rel_types.iter().map(|r| r.count).sum();
        say(&format!(
            "graph {}: {} labels, {nodes} nodes; {} relationship types, {rels} relationships",
            g.store,
            g.labels.len(),
            g.rel_types.len()
        ));
        for l in g.labels.iter().filter(|l| l.without_key > 0) {
            let hint = match l.key_candidates.as_slice() {
                [] => String::new(),
                c => format!(
                    "; every sampled node has, uniquely, {}: name one in [graph] keys = {{ {} = \"…\" }}",
                    c.join(", "),
                    l.label
                ),
            };
            say(&format!(
                "graph {}: {} of {} {} nodes lack their key `{}`: a migrate of a district that holds or reaches one is refused, naming the count{hint}",
                g.store, l.without_key, l.count, l.label, l.key
            ));
        }
    }
    for f in &d.files {
        say(&format!("wrote {}", f.display()));
    }
    Ok(code)
}

/// `wf seed --env prod`: synthetic PROD in every configured store and the graph.
pub(crate) async fn seed(
    config: &std::path::Path,
    engine: &Engine,
    scale: u64,
    cert_schema: bool,
) -> anyhow::Result<u8> {
    let cfg = wf_stores::Config::load(config)?;
    if cert_schema {
        let made = crate::seed::cert_schema(&cfg).await?;
        for s in &made {
            say(&format!("created the empty schema in CERT store {s}"));
        }
        if made.is_empty() {
            say("every CERT store already has tables: nothing to create");
        }
        return Ok(exit::DONE);
    }
    let work = engine.data().root().join("seed-work");
    let started = std::time::Instant::now();
    let s = crate::seed::seed(&cfg, scale.max(1), &work).await?;
    let rows: u64 = s.rows.values().sum();
    say(&format!(
        "seeded PROD at scale {scale}: {rows} rows in {} tables, {} nodes, {} relationships ({:.1}s)",
        s.rows.len(),
        s.nodes,
        s.rels,
        started.elapsed().as_secs_f64()
    ));
    Ok(exit::DONE)
}

/// `wf cert enroll|check`: marks CERT databases as CERT, or checks that they are enrolled and are
/// not PROD sources.
pub(crate) async fn cert(
    config: &std::path::Path,
    engine: &Engine,
    action: &str,
    only: &[String],
) -> anyhow::Result<u8> {
    let cfg = wf_stores::Config::load(config)?;
    let targets = cert_targets(&cfg, only)?;
    if action == "check" {
        wf_stores::guard::verify(&cfg, &targets).await?;
        say("every CERT target is enrolled and is not a PROD source");
        return Ok(exit::DONE);
    }
    let done = wf_stores::guard::enroll(&cfg, &targets).await?;
    for name in &done {
        say(&format!("enrolled CERT {name}"));
    }
    if !done.is_empty() {
        let details = serde_json::json!({"enrolled": done, "config": config});
        crate::audit::record(engine.data().root(), "cert enroll", None, details);
    }
    if done.is_empty() {
        say("every CERT target was already enrolled");
    }
    Ok(exit::DONE)
}

/// The CERT targets named by `--store` (all when none), each checked against the config.
fn cert_targets(
    cfg: &wf_stores::Config,
    only: &[String],
) -> anyhow::Result<wf_stores::guard::Targets> {
    if only.is_empty() {
        return Ok(wf_stores::guard::Targets::all(cfg));
    }
    let mut t = wf_stores::guard::Targets::default();
    for name in only {
        if cfg.store(name).is_some() {
            t.stores.push(name.clone());
        } else if cfg.graph.as_ref().is_some_and(|g| &g.name == name) {
            t.graph = true;
        } else {
            anyhow::bail!("--store {name}: no store or graph of that name in the config");
        }
    }
    Ok(t)
}

/// `wf select-districts`: figures per district, pilot picks, `manifests/district-manifest.json`.
pub(crate) async fn select_districts(
    config: &std::path::Path,
    engine: &Engine,
    json: bool,
) -> anyhow::Result<u8> {
    let cfg = wf_stores::Config::load(config)?;
    let sizing = wf_stores::districts::district_stats(&cfg).await?;
    let stats = &sizing.districts;
    let picks = wf_stores::districts::recommend(stats);
    let rows: Vec<serde_json::Value> = stats
        .iter()
        .map(|d| {
            serde_json::json!({
                "district": d.district, "rows": d.rows, "district_rows": d.district_rows,
                "child_rows": d.child_rows, "nodes": d.nodes, "latest": d.latest,
                "tables_present": d.tables_present, "tables_total": d.tables_total,
                "completeness": (d.completeness() * 1000.0).round() / 1000.0,
            })
        })
        .collect();
    let manifest = serde_json::json!({
        "district_column": cfg.district_column,
        "districts": rows,
        "recommended": picks,
        "not_sized": sizing.not_sized,
    });
    let dir = engine.data().root().join("manifests");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("district-manifest.json");
    let tmp = dir.join(".district-manifest.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&manifest)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    if json {
        return Ok(emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&manifest)?
        )));
    }
    let mut out = format!(
        "{:<16} {:>12} {:>12} {:>10} {:>13} {:>10}  LATEST\n",
        "DISTRICT", "ROWS", "CHILD ROWS", "NODES", "COMPLETENESS", "TABLES"
    );
    for d in stats {
        out.push_str(&format!(
            "{:<16} {:>12} {:>12} {:>10} {:>12.0}% {:>10}  {}\n",
            d.district,
            d.rows,
            d.child_rows,
            d.nodes,
            d.completeness() * 100.0,
            format!("{}/{}", d.tables_present, d.tables_total),
            d.latest.as_deref().unwrap_or("-")
        ));
    }
    for (label, district) in &picks {
        out.push_str(&format!("recommended {label} pilot: district {district}\n"));
    }
    for f in &sizing.not_sized {
        out.push_str(&format!("not sized: follow_children {f}\n"));
    }
    out.push_str(&format!("wrote {}\n", path.display()));
    Ok(emit(&out))
}
