//! A graph wf did not design, keyed by natural keys: authors by `name` (text, anonymized),
//! books by `isbn`, editions (label `Livre Édition`: a space and a non-ASCII letter) by the composite
//! `[isbn, lang code]`, reached along `HAS EDITION`; no `id` anywhere, some nodes missing
//! properties, one author missing its key. On ArcadeDB (the graph written with plain Cypher over
//! HTTP, not by wf) and on the embedded graph, with a graph-only wf.toml: analyze, a migrate
//! refused for the keyless author, the same migrate with `without_key = "skip"`, validate,
//! relationships that still connect after the key was anonymized, rollback.

use crate::graph_only::{ok, wf};
use crate::util::Sandbox;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const RULES: &str = r#"key_env = "WF_ANON_KEY"

[[rules]]
field = "lib.Author.name"
strategy = "fake"
kind = "name"

[[rules]]
pattern = '^lib\.'
strategy = "keep"
"#;

/// Authors (key `name`), books (`isbn`) and editions (`[isbn, lang code]`) of two districts.
fn authors() -> Vec<Value> {
    vec![
        json!({"name": "Ada Lovelace", "country": "UK", "district_id": 1}),
        json!({"name": "Charles Babbage", "district_id": 1}),
        json!({"country": "FR", "district_id": 1}),
        json!({"name": "Grace Hopper", "country": "US", "district_id": 2}),
    ]
}

fn books() -> Vec<Value> {
    vec![
        json!({"isbn": "111", "title": "Notes", "district_id": 1}),
        json!({"isbn": "222", "title": "Passages", "district_id": 1, "codes": ["x", 1]}),
        json!({"isbn": "333", "title": "Compilers", "district_id": 2}),
    ]
}

fn editions() -> Vec<Value> {
    vec![
        json!({"isbn": "111", "lang code": "en", "pages": 120}),
        json!({"isbn": "111", "lang code": "fr"}),
        json!({"isbn": "222", "lang code": "en", "pages": 300}),
        json!({"isbn": "333", "lang code": "en", "pages": 90}),
    ]
}

/// (author, isbn) pairs, (isbn) editions by book, (isbn, lang) → translator.
const WROTE: [(&str, &str); 3] = [
    ("Ada Lovelace", "111"),
    ("Charles Babbage", "222"),
    ("Grace Hopper", "333"),
];
const TRANSLATED: [(&str, &str, &str); 1] = [("111", "fr", "Charles Babbage")];

/// What district 1 must look like in CERT (the keyless author skipped).
fn expected() -> BTreeMap<String, u64> {
    [
        ("Author", 2),
        ("Book", 2),
        ("Livre Édition", 3),
        ("WROTE", 2),
        ("HAS EDITION", 3),
        ("TRANSLATED_BY", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn graph_section(kind: &str, prod: &str, cert: &str, extra: &str) -> String {
    format!(
        "anonymization_rules = \"rules.toml\"\n\n[graph]\nname = \"lib\"\nkind = \"{kind}\"\nprod = \"{prod}\"\ncert = \"{cert}\"\n{extra}\
         district_labels = [\"Author\", \"Book\"]\n\
         keys = {{ Author = \"name\", Book = \"isbn\", \"Livre Édition\" = [\"isbn\", \"lang code\"] }}\n\
         [[graph.follow]]\ntype = \"HAS EDITION\"\n"
    )
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("rules.toml"), RULES).unwrap();
    let cfg = dir.join("wf.toml");
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// How a test reads CERT: label and type counts, and the translator of edition (111, fr) with
/// the author of book 222 (both must be the same anonymized name).
struct Cert<'a> {
    counts: &'a dyn Fn() -> BTreeMap<String, u64>,
    names: &'a dyn Fn() -> (Vec<String>, String, String),
    /// Book 111's `meta` (a map in PROD).
    meta: &'a dyn Fn() -> Value,
    /// District 1 in CERT once migrated.
    expected: BTreeMap<String, u64>,
}

/// The whole path on the configs of one graph.
fn whole_path(sb: &Sandbox, c: &Configs, cert: Cert<'_>) {
    let (refuse, skip) = (&c.refuse, &c.skip);
    ok(sb, refuse, &["cert", "enroll"]);
    let analyze = ok(sb, refuse, &["analyze"]);
    assert!(
        analyze.contains("1 of 4 Author nodes lack their key `name`"),
        "{analyze}"
    );
    let analysis =
        std::fs::read_to_string(sb.data().join("analysis/schema-analysis.json")).unwrap();
    assert!(
        analysis.contains(r#""key": "[isbn, lang code]""#),
        "{analysis}"
    );
    let refused = wf(sb, refuse, &["run", "migrate", "--district", "1"]);
    assert_ne!(refused.code, Some(0), "{}", refused.stdout);
    assert!(
        refused
            .stderr
            .contains("1 Author nodes of the district lack their key (Author by name)"),
        "{}",
        refused.stderr
    );
    assert!((cert.counts)().values().all(|n| *n == 0), "CERT untouched");
    // Maps and mixed lists refused: the gate stops the run before anything is loaded.
    let r = wf(sb, &c.no_maps, &["run", "migrate", "--district", "1"]);
    assert_eq!(r.code, Some(7), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("maps, nested lists or lists of mixed kinds")
            && r.stderr.contains("meta (1)"),
        "{}",
        r.stderr
    );
    assert!((cert.counts)().values().all(|n| *n == 0), "CERT untouched");
    let out = ok(sb, skip, &["run", "migrate", "--district", "1"]);
    let run = out.lines().next().unwrap().to_string();
    assert_eq!((cert.counts)(), cert.expected, "{out}");
    let (names, translator, author_of_222) = (cert.names)();
    assert_eq!(names.len(), 2);
    for real in ["Ada Lovelace", "Charles Babbage"] {
        assert!(!names.iter().any(|n| n == real), "{names:?} not anonymized");
    }
    assert_eq!(
        translator, author_of_222,
        "relationship ends follow the anonymized key"
    );
    assert_eq!(
        (cert.meta)(),
        json!(r#"{"pages":10,"tags":["a"]}"#),
        "a map property is loaded as its JSON text"
    );
    let report = ok(sb, skip, &["report", &run, "--json"]);
    assert!(
        report.contains("nodes without their key skipped"),
        "{report}"
    );
    ok(sb, skip, &["validate", &run]);
    ok(sb, skip, &["rollback", &run, "--yes"]);
    assert!(
        (cert.counts)().values().all(|n| *n == 0),
        "rollback empties CERT"
    );
}

/// The same config with `lines` added to `[graph]`, in `dir/name`.
fn variant(dir: &Path, text: &str, name: &str, lines: &str) -> PathBuf {
    let v = text.replace("[graph]\n", &format!("[graph]\n{lines}"));
    assert_ne!(v, text);
    write_config(&dir.join(name), &v)
}

/// The configs a test runs: without_key refused (default); skipped; skipped with maps refused.
struct Configs {
    refuse: PathBuf,
    skip: PathBuf,
    no_maps: PathBuf,
}

impl Configs {
    fn new(dir: &Path, text: &str) -> Configs {
        let skip = "without_key = \"skip\"\n";
        Configs {
            refuse: write_config(dir, text),
            skip: variant(dir, text, "skip", skip),
            no_maps: variant(dir, text, "no-maps", &format!("{skip}maps = \"refuse\"\n")),
        }
    }
}

#[test]
fn natural_and_composite_keys_on_arcadedb() {
    let sb = Sandbox::new();
    let Some(env) = crate::e2e::Env::get(&sb) else {
        return;
    };
    let (addr, user, pw, http) = env.bolt_of("prod").clone();
    let tag = env.tag();
    let (prod_db, cert_db) = (format!("nk_{tag}_prod"), format!("nk_{tag}_cert"));
    for db in [&prod_db, &cert_db] {
        let _ = wf::arcade::server_command(&http, &user, &pw, &format!("drop database {db}"));
        wf::arcade::server_command(&http, &user, &pw, &format!("create database {db}")).unwrap();
    }
    let q = |db: &str, c: &str, p: Value| {
        wf::arcade::command(&http, (&user, &pw), db, ("opencypher", c), p).unwrap()
    };
    q(
        &prod_db,
        "UNWIND $rows AS r CREATE (n:Author) SET n = r",
        json!({"rows": authors()}),
    );
    q(
        &prod_db,
        "UNWIND $rows AS r CREATE (n:Book) SET n = r",
        json!({"rows": books()}),
    );
    q(
        &prod_db,
        "UNWIND $rows AS r CREATE (n:`Livre Édition`) SET n = r",
        json!({"rows": editions()}),
    );
    q(
        &prod_db,
        "UNWIND $rows AS r MATCH (a:Author {name: r[0]}) MATCH (b:Book {isbn: r[1]}) CREATE (a)-[:WROTE {since: 1840}]->(b)",
        json!({"rows": WROTE.iter().map(|(a, b)| json!([a, b])).collect::<Vec<_>>()}),
    );
    // A parallel relationship (ArcadeDB keeps two of one type between the same nodes; the
    // embedded graph cannot hold one): `insert` carries both, `upsert` would merge them.
    q(
        &prod_db,
        "MATCH (a:Author {name: 'Ada Lovelace'}) MATCH (b:Book {isbn: '111'}) CREATE (a)-[:WROTE {since: 1843, role: 'translator'}]->(b)",
        json!({}),
    );
    // A map property: Cypher refuses to write one, ArcadeDB's SQL does not.
    wf::arcade::command(
        &http,
        (&user, &pw),
        &prod_db,
        (
            "sql",
            "UPDATE Book SET meta = {\"pages\": 10, \"tags\": [\"a\"]} WHERE isbn = '111'",
        ),
        json!({}),
    )
    .unwrap();
    q(
        &prod_db,
        "MATCH (b:Book) MATCH (e:`Livre Édition`) WHERE e.isbn = b.isbn CREATE (b)-[:`HAS EDITION`]->(e)",
        json!({}),
    );
    q(
        &prod_db,
        "UNWIND $rows AS r MATCH (e:`Livre Édition` {isbn: r[0], `lang code`: r[1]}) MATCH (a:Author {name: r[2]}) CREATE (e)-[:TRANSLATED_BY]->(a)",
        json!({"rows": TRANSLATED.iter().map(|(i, l, a)| json!([i, l, a])).collect::<Vec<_>>()}),
    );
    let extra = format!(
        "user = \"{user}\"\npassword = \"env:WF_TEST_BOLT_PASSWORD\"\nprod_database = \"{prod_db}\"\ncert_database = \"{cert_db}\"\n"
    );
    let text = graph_section("bolt", &addr, &addr, &extra);
    let dir = sb.out("nk");
    let configs = Configs::new(&dir, &text);
    let counts = || {
        let mut out = BTreeMap::new();
        for l in ["Author", "Book", "`Livre Édition`"] {
            let r = q(
                &cert_db,
                &format!("MATCH (n:{l}) RETURN count(n) AS c"),
                json!({}),
            );
            out.insert(l.trim_matches('`').to_string(), r[0]["c"].as_u64().unwrap());
        }
        for t in ["WROTE", "`HAS EDITION`", "TRANSLATED_BY"] {
            let r = q(
                &cert_db,
                &format!("MATCH ()-[x:{t}]->() RETURN count(x) AS c"),
                json!({}),
            );
            out.insert(t.trim_matches('`').to_string(), r[0]["c"].as_u64().unwrap());
        }
        out
    };
    let names = || {
        let all = q(&cert_db, "MATCH (a:Author) RETURN a.name AS n", json!({}));
        let t = q(
            &cert_db,
            "MATCH (:`Livre Édition` {isbn: '111', `lang code`: 'fr'})-[:TRANSLATED_BY]->(a:Author) RETURN a.name AS n",
            json!({}),
        );
        let w = q(
            &cert_db,
            "MATCH (a:Author)-[:WROTE]->(:Book {isbn: '222'}) RETURN a.name AS n",
            json!({}),
        );
        let text = |v: &Value| v["n"].as_str().unwrap().to_string();
        (all.iter().map(text).collect(), text(&t[0]), text(&w[0]))
    };
    let meta = || {
        let r = q(
            &cert_db,
            "MATCH (b:Book {isbn: '111'}) RETURN b.meta AS m",
            json!({}),
        );
        r[0]["m"].clone()
    };
    let mut expected = expected();
    expected.insert("WROTE".into(), 3);
    whole_path(
        &sb,
        &configs,
        Cert {
            counts: &counts,
            names: &names,
            meta: &meta,
            expected,
        },
    );
    let args = ["run", "migrate", "--district", "1", "--strategy", "upsert"];
    let r = wf(&sb, &configs.skip, &args);
    assert_eq!(r.code, Some(7), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("1 relationships repeat another of their type"),
        "{}",
        r.stderr
    );
    assert!(counts().values().all(|n| *n == 0), "CERT untouched");
}

#[test]
fn natural_and_composite_keys_on_the_embedded_graph() {
    use wf_stores::graph::{GValue, GraphWrite, NodeRec, RelRec};
    let sb = Sandbox::new();
    let dir = sb.out("nk");
    let (prod, cert) = (dir.join("prod.graph"), dir.join("cert.graph"));
    let text = graph_section(
        "embedded",
        prod.to_str().unwrap(),
        cert.to_str().unwrap(),
        "",
    );
    let configs = Configs::new(&dir, &text);
    let typo = write_config(&dir.join("typo"), &text.replace("Author = ", "Autor = "));
    let cfg = wf_stores::config::Config::load(&configs.refuse).unwrap();
    let g = cfg.graph.clone().unwrap();
    let node = |label: &str, v: &Value| NodeRec {
        labels: vec![label.to_string()],
        props: match GValue::from_json(v) {
            GValue::Map(m) => m,
            _ => unreachable!(),
        },
    };
    let t = |s: &str| GValue::Text(s.to_string());
    let rel = |ty: &str, s: (&str, GValue), e: (&str, GValue)| RelRec {
        rel_type: ty.to_string(),
        start: (s.0.to_string(), s.1),
        end: (e.0.to_string(), e.1),
        props: Default::default(),
    };
    let mut books = books();
    books[0]["meta"] = json!({"pages": 10, "tags": ["a"]});
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut w =
            wf_stores::graph::embedded::EmbeddedWrite::open_side(&g, wf_stores::config::Side::Prod)
                .await
                .unwrap();
        // The keyless author is stored apart: the embedded file keys rows by the key's text.
        for (label, rows) in [
            ("Author", authors()),
            ("Book", books.clone()),
            ("Livre Édition", editions()),
        ] {
            let rows: Vec<NodeRec> = rows.iter().map(|v| node(label, v)).collect();
            w.merge_nodes(label, &rows).await.unwrap();
        }
        let wrote: Vec<RelRec> = WROTE
            .iter()
            .map(|(a, b)| rel("WROTE", ("Author", t(a)), ("Book", t(b))))
            .collect();
        w.merge_rels("WROTE", ("Author", "Book"), &wrote)
            .await
            .unwrap();
        let has: Vec<RelRec> = editions()
            .iter()
            .map(|e| {
                let (i, l) = (
                    e["isbn"].as_str().unwrap(),
                    e["lang code"].as_str().unwrap(),
                );
                let k = GValue::List(vec![t(i), t(l)]);
                rel("HAS EDITION", ("Book", t(i)), ("Livre Édition", k))
            })
            .collect();
        w.merge_rels("HAS EDITION", ("Book", "Livre Édition"), &has)
            .await
            .unwrap();
        let tr: Vec<RelRec> = TRANSLATED
            .iter()
            .map(|(i, l, a)| {
                let k = GValue::List(vec![t(i), t(l)]);
                rel("TRANSLATED_BY", ("Livre Édition", k), ("Author", t(a)))
            })
            .collect();
        w.merge_rels("TRANSLATED_BY", ("Livre Édition", "Author"), &tr)
            .await
            .unwrap();
        Box::new(w).commit().await.unwrap();
    });
    let r = wf(&sb, &typo, &["analyze"]);
    assert_ne!(r.code, Some(0));
    assert!(
        r.stderr.contains("[graph] keys names label `Autor`") && r.stderr.lines().count() <= 2,
        "{}",
        r.stderr
    );
    // Names [graph] gives that the PROD graph lacks stop a run before it starts, with the line.
    for (from, to, says) in [
        (
            "district_labels = [\"Author\"",
            "district_labels = [\"Autor\"",
            "[graph] district_labels names label `Autor`, which the PROD graph does not have: fix its spelling in wf.toml; did you mean Author?",
        ),
        (
            "type = \"HAS EDITION\"",
            "type = \"HAS EDITON\"",
            "[graph] follow type `HAS EDITON` is not a relationship type of the PROD graph: fix its spelling in wf.toml; did you mean HAS EDITION?",
        ),
    ] {
        let bad = write_config(&dir.join("misnamed"), &text.replace(from, to));
        let r = wf(&sb, &bad, &["run", "migrate", "--district", "1"]);
        assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
        let line = text.lines().position(|l| l.contains(from)).unwrap() + 1;
        assert!(
            r.stderr.contains(&format!("wf.toml line {line}: {says}")),
            "{}",
            r.stderr
        );
        assert!(!cert.exists(), "nothing was written");
    }
    let read = |sql: &str| -> Vec<(String, i64)> {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let url = format!("sqlite://{}?mode=ro", cert.display());
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            sqlx::query_as(sqlx::AssertSqlSafe(sql.to_string()))
                .fetch_all(&pool)
                .await
                .unwrap()
        })
    };
    let counts = || {
        let mut out: BTreeMap<String, u64> = expected().keys().map(|k| (k.clone(), 0)).collect();
        if !cert.exists() {
            return out;
        }
        for (k, n) in read("SELECT label, count(*) FROM nodes GROUP BY label")
            .into_iter()
            .chain(read("SELECT type, count(*) FROM rels GROUP BY type"))
        {
            out.insert(k, n as u64);
        }
        out
    };
    let meta = || {
        let r = read("SELECT json_extract(props, '$.meta'), 0 FROM nodes WHERE label = 'Book' AND key = '\"111\"'");
        json!(r[0].0)
    };
    let names = || {
        let one = |sql: &str| read(sql).remove(0).0;
        let all = read("SELECT json_extract(props, '$.name'), 0 FROM nodes WHERE label = 'Author'");
        (
            all.into_iter().map(|(n, _)| n).collect(),
            one("SELECT json_extract(n.props, '$.name'), 0 FROM rels r JOIN nodes n ON n.label = 'Author' AND n.key = r.end_key WHERE r.type = 'TRANSLATED_BY'"),
            one("SELECT json_extract(n.props, '$.name'), 0 FROM rels r JOIN nodes n ON n.label = 'Author' AND n.key = r.start_key WHERE r.type = 'WROTE' AND r.end_key = '\"222\"'"),
        )
    };
    whole_path(
        &sb,
        &configs,
        Cert {
            counts: &counts,
            names: &names,
            meta: &meta,
            expected: expected(),
        },
    );
}
