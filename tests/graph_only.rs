//! A wf.toml with only `[graph]` (no relational store), on the embedded graph and on ArcadeDB over
//! Bolt: select-districts counts the graph's nodes per district, migrate loads a district that
//! exists only in the graph, validate passes, rollback empties CERT, batch runs, and a district
//! the graph does not have is refused naming the graph.

use crate::util::Sandbox;
use serde_json::Value;
use std::path::{Path, PathBuf};

const KEY: &str = "graph-only-key-0123456789abcdefXYZ";

/// The `[graph]` section of `full` (a whole wf.toml) without its links to relational columns,
/// with rules that cover the graph's fields only.
fn graph_only(full: &str, dir: &Path) -> PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    let rules = std::fs::read_to_string(format!("{root}/config/anonymization.toml")).unwrap();
    let mut parts = rules.split("\n[[rules]]");
    let mut kept = parts.next().unwrap().to_string();
    // Rules naming a relational field would name a table this config does not have.
    let relational = |p: &&str| p.contains("field = \"") && !p.contains("field = \"sp.");
    for p in parts.filter(|p| !relational(p)) {
        kept.push_str("\n[[rules]]");
        kept.push_str(p);
    }
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("anonymization.toml"), kept).unwrap();
    let mut text = String::from("anonymization_rules = \"anonymization.toml\"\n");
    let (mut inside, mut skip) = (false, false);
    for line in full.lines() {
        let t = line.trim_start();
        if t.starts_with('[') {
            inside = t.starts_with("[graph]") || t.starts_with("[[graph.");
            skip = t.starts_with("[[graph.links]]");
        }
        if inside && !skip {
            text.push_str(line);
            text.push('\n');
        }
    }
    let cfg = dir.join("wf.toml");
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// `wf --config cfg args…` with the test key; what it printed and its exit code.
pub(crate) fn wf(sb: &Sandbox, cfg: &Path, args: &[&str]) -> crate::util::Ran {
    let mut c = crate::e2e::wf(sb, &["--config", cfg.to_str().unwrap()]);
    c.args(args).env("WF_ANON_KEY", KEY);
    crate::util::ran(c.output().unwrap())
}

/// `wf` that must succeed; its standard output.
pub(crate) fn ok(sb: &Sandbox, cfg: &Path, args: &[&str]) -> String {
    let r = wf(sb, cfg, args);
    assert_eq!(r.code, Some(0), "wf {args:?}\n{}\n{}", r.stdout, r.stderr);
    r.stdout
}

/// The whole path on a graph-only config; `cert_nodes` counts CERT's nodes.
fn whole_path(sb: &Sandbox, cfg: &Path, cert_nodes: impl Fn() -> u64) {
    ok(sb, cfg, &["seed", "--env", "prod"]);
    ok(sb, cfg, &["seed", "--env", "cert"]);
    let sel: Value = serde_json::from_str(&ok(sb, cfg, &["select-districts", "--json"])).unwrap();
    let districts = sel["districts"].as_array().unwrap();
    assert!(districts.len() >= 2, "{sel}");
    for d in districts {
        assert_eq!(d["rows"], 0, "{d}");
        assert!(d["nodes"].as_u64().unwrap() > 0, "{d}");
    }
    let refused = wf(sb, cfg, &["run", "migrate", "--district", "99"]);
    assert_ne!(refused.code, Some(0));
    assert!(
        refused.stderr.contains("district 99 not found") && refused.stderr.contains("graph sp"),
        "{}",
        refused.stderr
    );
    assert_eq!(cert_nodes(), 0, "a refused district leaves CERT alone");
    let run = ok(sb, cfg, &["run", "migrate", "--district", "2"])
        .lines()
        .next()
        .unwrap()
        .to_string();
    let loaded = cert_nodes();
    assert!(loaded > 0);
    ok(sb, cfg, &["validate", &run]);
    ok(sb, cfg, &["rollback", &run, "--yes"]);
    assert_eq!(cert_nodes(), 0, "rollback empties CERT");
    let out = ok(sb, cfg, &["batch", "--districts", "1,2"]);
    assert!(out.contains("2 districts"), "{out}");
    assert!(cert_nodes() > loaded, "districts 1 and 2 are both in CERT");
}

#[test]
fn a_graph_only_config_on_the_embedded_graph() {
    let sb = Sandbox::new();
    let dir = sb.out("go");
    let full = format!(
        "[graph]\nname = \"sp\"\nkind = \"embedded\"\nprod = \"{0}/prod.graph\"\ncert = \"{0}/cert.graph\"\n\
         district_labels = [\"School\", \"Teacher\", \"Student\"]\n\
         [[graph.follow]]\ntype = \"ENROLLED_IN\"\ndirection = \"out\"\n\
         [[graph.links]]\nfrom = \"Student.student_id\"\nto = \"ids.students.id\"\n",
        dir.display()
    );
    let cfg = graph_only(&full, &dir);
    assert!(!std::fs::read_to_string(&cfg).unwrap().contains("links"));
    let cert = dir.join("cert.graph");
    whole_path(&sb, &cfg, || embedded_nodes(&cert));
}

/// Nodes in an embedded graph file (wf's markers left out).
fn embedded_nodes(file: &Path) -> u64 {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = format!("sqlite://{}?mode=ro", file.display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let n: i64 = sqlx::query_scalar("select count(*) from nodes")
            .fetch_one(&pool)
            .await
            .unwrap();
        n as u64
    })
}

#[test]
fn a_graph_only_config_on_arcadedb() {
    let sb = Sandbox::new();
    let Some(env) = crate::e2e::Env::get(&sb) else {
        return;
    };
    env.create(&["prod", "a"]);
    let full = env.config(&sb.out("full"), "a");
    let cfg = graph_only(&std::fs::read_to_string(full).unwrap(), &sb.out("go"));
    whole_path(&sb, &cfg, || {
        crate::e2e::cert_contents(&env, "a")
            .iter()
            .filter(|(k, _)| k.starts_with("sp.") && !k.starts_with("sp.:"))
            .map(|(_, v)| v.split(':').next().unwrap().parse::<u64>().unwrap())
            .sum()
    });
}
