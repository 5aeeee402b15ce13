//! A wf.toml with only `[graph]` (no relational store), on the embedded graph and on ArcadeDB over
//! Bolt: select-districts counts the graph's nodes per district, migrate loads a district that
//! exists only in the graph, validate passes, rollback empties CERT, batch runs, and a district
//! the graph does not have is refused naming the graph. On the embedded graph, an incremental
//! refresh writes only the graph's changes and equals a fresh migrate.

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

/// Rows of an embedded graph file's `table` as text, sorted (wf's markers are in their own table).
fn embedded_rows(file: &Path, table: &str) -> Vec<String> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = format!("sqlite://{}?mode=ro", file.display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let cols = match table {
            "nodes" => "label, key, labels, props",
            _ => "type, start_label, start_key, end_label, end_key, props",
        };
        let q = format!("select json_array({cols}) from {table} order by 1");
        sqlx::query_scalar(sqlx::AssertSqlSafe(q))
            .fetch_all(&pool)
            .await
            .unwrap()
    })
}

fn embedded_exec(file: &Path, sql: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", file.display()))
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    });
}

/// `wf refresh --incremental` on the embedded graph after PROD changed (students' properties, a
/// guardian and its relationship gone, an enrollment gone): the refresh writes only the changed
/// nodes and relationships, leaves the rest, and CERT then equals a migrate of the new PROD into
/// an empty CERT, node by node and relationship by relationship; rolling the refresh back
/// empties CERT (it owns what it left as it was). Without the replaced run's graph staging the
/// next one replaces the graph whole, saying why.
#[test]
fn an_incremental_refresh_of_the_embedded_graph_equals_a_fresh_migrate() {
    let sb = Sandbox::new();
    let dir = sb.out("gr");
    let full = |cert: &str| {
        format!(
            "[graph]\nname = \"sp\"\nkind = \"embedded\"\nprod = \"{0}/prod.graph\"\ncert = \"{0}/{cert}\"\n\
             district_labels = [\"School\", \"Teacher\", \"Student\"]\n\
             [[graph.follow]]\ntype = \"ENROLLED_IN\"\ndirection = \"out\"\n\
             [[graph.follow]]\ntype = \"GUARDIAN_OF\"\ndirection = \"in\"\n",
            dir.display()
        )
    };
    let a = graph_only(&full("a.graph"), &dir.join("a"));
    let b = graph_only(&full("b.graph"), &dir.join("b"));
    ok(&sb, &a, &["seed", "--env", "prod"]);
    ok(&sb, &a, &["seed", "--env", "cert"]);
    ok(&sb, &b, &["seed", "--env", "cert"]);
    let first = ok(&sb, &a, &["run", "migrate", "--district", "2"]);
    let prod = dir.join("prod.graph");
    let students = "select key from nodes where label = 'Student' and json_extract(props, '$.district_id') = 2";
    embedded_exec(
        &prod,
        &format!(
            "update nodes set props = json_set(props, '$.grade', 'G-x') where label = 'Student' and key in ({students} order by key limit 3);
             create temp table gone as select start_key k from rels where type = 'GUARDIAN_OF' and end_key in ({students}) order by start_key limit 1;
             delete from rels where start_label = 'Guardian' and start_key in (select k from gone);
             delete from nodes where label = 'Guardian' and key in (select k from gone);
             delete from rels where type = 'ENROLLED_IN' and (start_key, end_key) in (select start_key, end_key from rels where type = 'ENROLLED_IN' and start_key in ({students}) order by 1, 2 limit 1);"
        ),
    );
    let out = ok(&sb, &a, &["refresh", "--district", "2", "--incremental"]);
    assert!(
        out.contains(&format!("replaces run {}", first.lines().next().unwrap())),
        "{out}"
    );
    let refresh = out
        .lines()
        .find(|l| l.starts_with("mig-"))
        .unwrap()
        .to_string();
    ok(&sb, &b, &["run", "migrate", "--district", "2"]);
    for table in ["nodes", "rels"] {
        let (got, want) = (
            embedded_rows(&dir.join("a.graph"), table),
            embedded_rows(&dir.join("b.graph"), table),
        );
        assert!(!want.is_empty());
        assert_eq!(got, want, "{table}: the refresh equals a fresh migrate");
    }
    let st: Value = serde_json::from_str(&ok(&sb, &a, &["status", &refresh, "--json"])).unwrap();
    let load = st["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "load/sp")
        .unwrap();
    let (kept, written) = (
        load["metrics"]["unchanged_rows"].as_u64().unwrap(),
        load["metrics"]["rows"].as_u64().unwrap(),
    );
    assert!(
        written > 0 && kept > 10 * written,
        "{kept} kept, {written} written"
    );
    ok(&sb, &a, &["validate", &refresh]);
    // Without the replaced run's graph staging there is nothing to compare with: the next
    // incremental refresh replaces the graph whole, says why, and CERT is the same.
    let staged = files_named(&sb.data(), &refresh, "sp.");
    assert!(!staged.is_empty());
    staged.iter().for_each(|f| std::fs::remove_file(f).unwrap());
    let out = ok(&sb, &a, &["refresh", "--district", "2", "--incremental"]);
    let again = out
        .lines()
        .find(|l| l.starts_with("mig-"))
        .unwrap()
        .to_string();
    let why = crate::util::grep_dir(&sb.data(), "replacing the district's graph whole");
    assert!(why.contains("not by difference"), "{why}");
    for table in ["nodes", "rels"] {
        assert_eq!(
            embedded_rows(&dir.join("a.graph"), table),
            embedded_rows(&dir.join("b.graph"), table),
            "{table} after a whole replace"
        );
    }
    ok(&sb, &a, &["rollback", &again, "--yes"]);
    assert_eq!(
        embedded_nodes(&dir.join("a.graph")),
        0,
        "the rollback empties CERT"
    );
}

/// Files under `dir` whose path names `run` and whose name starts with `prefix` (`.arrow`).
fn files_named(dir: &Path, run: &str, prefix: &str) -> Vec<PathBuf> {
    let (mut out, mut todo) = (Vec::new(), vec![dir.to_path_buf()]);
    while let Some(d) = todo.pop() {
        for p in std::fs::read_dir(&d)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
        {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                todo.push(p);
            } else if p.to_string_lossy().contains(run)
                && name.starts_with(prefix)
                && name.ends_with(".arrow")
            {
                out.push(p);
            }
        }
    }
    out
}
