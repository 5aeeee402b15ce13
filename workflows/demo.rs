//! `wf demo`: the first command on a fresh machine. Seeds embedded PROD (SQLite files and an
//! embedded graph), migrates one district into embedded CERT and says where the results are.

use crate::cli::{exit, say};
use std::path::{Path, PathBuf};
use wf_engine::Engine;

const RULES: &str = include_str!("../config/anonymization.toml");
const VALIDATION: &str = include_str!("../config/validation.toml");
const EXAMPLE: &str = include_str!("../config/wf.example.toml");

/// The demo's wf.toml: the example config with every store embedded under `dir`.
pub fn demo_config(dir: &Path) -> String {
    let p = |side: &str, name: &str| dir.join(side).join(name).to_string_lossy().into_owned();
    let mut out = String::new();
    let mut store: Option<String> = None;
    let mut in_graph = false;
    for line in EXAMPLE.lines() {
        let t = line.trim_start();
        if t.starts_with("[[stores]]") {
            in_graph = false;
        } else if t.starts_with("[graph]") {
            in_graph = true;
        } else if t.starts_with("[[virtual_fks]]") {
            in_graph = false;
        }
        if let Some(n) = t.strip_prefix("name = ") {
            store = Some(n.trim_matches('"').to_string());
        }
        let name = store.clone().unwrap_or_default();
        let key = t.split(' ').next().unwrap_or_default();
        let replaced = match (in_graph, key) {
            (false, "kind") => Some("kind = \"sqlite\"".to_string()),
            (false, "prod") => Some(format!(
                "prod = \"sqlite://{}\"",
                p("prod", &format!("{name}.db"))
            )),
            (false, "cert") => Some(format!(
                "cert = \"sqlite://{}\"",
                p("cert", &format!("{name}.db"))
            )),
            (true, "kind") => Some("kind = \"embedded\"".to_string()),
            (true, "prod") => Some(format!("prod = \"{}\"", p("prod", "sp.graph"))),
            (true, "cert") => Some(format!("cert = \"{}\"", p("cert", "sp.graph"))),
            (true, "user" | "password" | "prod_database" | "cert_database") => Some(String::new()),
            _ => None,
        };
        out.push_str(&replaced.unwrap_or_else(|| line.to_string()));
        out.push('\n');
    }
    out
}

/// A seeded demo, ready for its migrate run (which the caller starts with `args`).
pub struct Prepared {
    pub config: PathBuf,
    pub args: Vec<String>,
    started: std::time::Instant,
    cert_dir: PathBuf,
}

/// Seeds the demo's embedded PROD and CERT and writes its config and rules.
pub async fn prepare(engine: &Engine, district: &str, scale: u64) -> anyhow::Result<Prepared> {
    let dir = std::path::absolute(engine.data().root().join("demo"))?;
    for side in ["prod", "cert"] {
        let d = dir.join(side);
        if d.exists() {
            std::fs::remove_dir_all(&d)?;
        }
        std::fs::create_dir_all(&d)?;
    }
    let config = dir.join("wf.toml");
    std::fs::write(&config, demo_config(&dir))?;
    std::fs::write(dir.join("anonymization.toml"), RULES)?;
    std::fs::write(dir.join("validation.toml"), VALIDATION)?;
    if std::env::var("WF_ANON_KEY").is_err() {
        use rand::RngExt;
        let key: String = (0..32)
            .map(|_| char::from(b'a' + rand::rng().random_range(0..26u8)))
            .collect();
        // Only this process sees it; it is never written. Set WF_ANON_KEY to choose your own.
        std::env::set_var("WF_ANON_KEY", key);
        say("demo: WF_ANON_KEY is not set, so this demo uses a random key it never writes down");
    }
    let cfg = wf_stores::Config::load(&config)?;
    let started = std::time::Instant::now();
    let s = crate::seed::seed(&cfg, scale.max(1), &dir.join("seed-work")).await?;
    // After PROD exists: enrolling CERT proves it is not one of the PROD sources.
    crate::seed::cert_schema(&cfg).await?;
    say(&format!(
        "demo: seeded embedded PROD: {} rows in {} tables, {} nodes, {} relationships ({:.1}s)",
        s.rows.values().sum::<u64>(),
        s.rows.len(),
        s.nodes,
        s.rels,
        started.elapsed().as_secs_f64()
    ));
    say(&format!(
        "demo: migrating district {district} into embedded CERT"
    ));
    let args: Vec<String> = vec![
        "--district".into(),
        district.into(),
        "--config-file".into(),
        config.to_string_lossy().into_owned(),
    ];
    Ok(Prepared {
        config,
        args,
        started,
        cert_dir: dir.join("cert"),
    })
}

/// Says where the demo's results are, after its migrate run ended with `code`.
pub fn finish(p: &Prepared, code: u8) {
    say(&format!(
        "demo: done in {:.1}s; config {}, CERT files in {}",
        p.started.elapsed().as_secs_f64(),
        p.config.display(),
        p.cert_dir.display()
    ));
    if code != exit::DONE {
        say("demo: the migrate run did not finish; `wf status <run>` shows why");
    }
}
