//! `wf seed --env prod --scale n`: synthetic PROD for demos, tests and benchmarks. Creates the
//! rostering schema in every configured (empty) PROD store and fills it, and the graph, with
//! generated rows. It refuses a database that already has tables: it is never for real PROD.

mod data;

pub use data::DISTRICTS;

use data::{Cell, Sink};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use wf_stores::analysis::{add_virtual_fks, analyze};
use wf_stores::connect::load_store;
use wf_stores::extract::{staged_columns, TableFile};
use wf_stores::graph::{GValue, GraphConfig, GraphKind, GraphWrite, NodeRec, RelRec};
use wf_stores::load::{plan_loads, LoadOptions, Strategy};
use wf_stores::staging::{arrow_schema, StagingWriter, Value};
use wf_stores::{connect, Config, Side, StoreConfig, StoreKind};

const SCHEMA: &str = include_str!("schema.sql");

/// What `seed` made.
#[derive(Debug, Default)]
pub struct Seeded {
    pub rows: BTreeMap<String, u64>,
    pub nodes: u64,
    pub rels: u64,
}

/// The DDL of `store` for its engine.
fn ddl(store: &str, kind: StoreKind) -> Option<String> {
    let mut out = None;
    for section in SCHEMA.split("-- store: ").skip(1) {
        let (name, body) = section.split_once('\n')?;
        if name.trim() == store {
            out = Some(body.to_string());
        }
    }
    let body = out?;
    Some(match kind {
        StoreKind::Sqlite => body.replace(
            "/*principal*/",
            "references staff(id) deferrable initially deferred",
        ),
        StoreKind::Postgres => {
            let mut b = body.replace("/*principal*/", "");
            if store == "ids" {
                b.push_str("alter table schools add constraint schools_principal_fk foreign key (principal_id) references staff(id) deferrable initially deferred;\n");
            }
            b
        }
    })
}

/// The store as a writable handle on its PROD database (seeding only).
fn prod_writable(s: &StoreConfig) -> StoreConfig {
    let mut w = s.clone();
    w.cert = s.prod.clone();
    w
}

struct Writers {
    tables: HashMap<String, (StagingWriter, HashMap<String, usize>, usize)>,
    graph: Option<std::io::BufWriter<std::fs::File>>,
    counts: BTreeMap<String, u64>,
    nodes: u64,
    rels: u64,
}

impl Sink for Writers {
    fn row(&mut self, table: &str, cells: &[(&str, Cell)]) -> Result<(), String> {
        let Some((w, cols, n)) = self.tables.get_mut(table) else {
            return Ok(()); // a store this config does not have
        };
        let mut row: Vec<Option<&Cell>> = vec![None; *n];
        for (c, v) in cells {
            let i = cols
                .get(*c)
                .ok_or_else(|| format!("{table} has no column {c}"))?;
            row[*i] = Some(v);
        }
        for (i, v) in row.iter().enumerate() {
            let value = match v {
                None => Value::Null,
                Some(Cell::Int(x)) => Value::Int(*x),
                Some(Cell::Float(x)) => Value::Float(*x),
                Some(Cell::Text(t)) => Value::Text(t),
            };
            w.push(i, value).map_err(|e| e.to_string())?;
        }
        w.end_row().map_err(|e| e.to_string())?;
        *self.counts.entry(table.to_string()).or_default() += 1;
        Ok(())
    }

    fn node(&mut self, label: &str, props: &[(&str, Cell)]) -> Result<(), String> {
        let Some(g) = self.graph.as_mut() else {
            return Ok(());
        };
        let p: serde_json::Map<String, serde_json::Value> = props
            .iter()
            .map(|(k, v)| (k.to_string(), cell_json(v)))
            .collect();
        self.nodes += 1;
        writeln!(g, "{}", serde_json::json!({"n": label, "p": p})).map_err(|e| e.to_string())
    }

    fn rel(&mut self, rel_type: &str, start: (&str, i64), end: (&str, i64)) -> Result<(), String> {
        let Some(g) = self.graph.as_mut() else {
            return Ok(());
        };
        self.rels += 1;
        writeln!(
            g,
            "{}",
            serde_json::json!({"r": rel_type, "s": [start.0, start.1], "e": [end.0, end.1]})
        )
        .map_err(|e| e.to_string())
    }
}

fn cell_json(c: &Cell) -> serde_json::Value {
    match c {
        Cell::Int(i) => (*i).into(),
        Cell::Float(f) => (*f).into(),
        Cell::Text(t) => t.clone().into(),
    }
}

/// Creates the (empty) rostering schema in every CERT store that has no tables yet, as a real
/// CERT would have it; stores that have tables are left alone.
pub async fn cert_schema(cfg: &Config) -> anyhow::Result<Vec<String>> {
    let mut made = Vec::new();
    for s in &cfg.stores {
        let db = connect(s, Side::Cert).await?;
        if db.introspect().await?.tables.is_empty() {
            if let Some(sql) = ddl(&s.name, s.kind) {
                db.execute(&sql).await?;
                made.push(s.name.clone());
            }
        }
    }
    // The schema makes these CERT databases: enroll them, proving first none of them is PROD.
    wf_stores::guard::enroll(cfg, &wf_stores::guard::Targets::all(cfg)).await?;
    Ok(made)
}

/// Seeds every PROD store of `cfg` at `scale`, staging in `work` (deleted afterwards).
pub async fn seed(cfg: &Config, scale: u64, work: &Path) -> anyhow::Result<Seeded> {
    std::fs::create_dir_all(work)?;
    let schemas = create_prod_schemas(cfg).await?;
    let (mut writers, graph_spool) = open_writers(cfg, &schemas, work)?;
    let mut writers =
        tokio::task::spawn_blocking(move || data::generate(scale, &mut writers).map(|_| writers))
            .await?
            .map_err(|e| anyhow::anyhow!("seed: {e}"))?;
    let mut files = Vec::new();
    for (id, (w, _, _)) in writers.tables.drain() {
        files.push(TableFile {
            table: id,
            file: w.finish()?,
        });
    }
    if let Some(g) = writers.graph.take() {
        g.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    load_prod(cfg, &schemas, &files, work).await?;
    if let Some(g) = &cfg.graph {
        seed_graph(g, &graph_spool).await?;
    }
    let out = Seeded {
        rows: writers.counts,
        nodes: writers.nodes,
        rels: writers.rels,
    };
    std::fs::remove_dir_all(work)?;
    Ok(out)
}

/// Creates wf's seed schema in every PROD store, after making sure each store (and the graph) is
/// empty: wf seed makes synthetic PROD, it never touches real data.
async fn create_prod_schemas(cfg: &Config) -> anyhow::Result<Vec<wf_stores::schema::StoreSchema>> {
    let mut schemas = Vec::new();
    for s in &cfg.stores {
        let w = prod_writable(s);
        let db = connect(&w, Side::Cert).await?;
        let before = db.introspect().await?;
        if !before.tables.is_empty() {
            anyhow::bail!(
                "PROD store {} already has {} tables: wf seed only fills an empty database (it makes synthetic PROD, never touches real data)",
                s.name,
                before.tables.len()
            );
        }
        let sql = ddl(&s.name, s.kind).ok_or_else(|| {
            anyhow::anyhow!(
                "wf seed knows the stores ids, hcp1, hcp2 and adb; the config has `{}`",
                s.name
            )
        })?;
        db.execute(&sql).await?;
        schemas.push(db.introspect().await?);
    }
    if let Some(g) = &cfg.graph {
        // A missing embedded file is created by the writer below; anything else must answer.
        let missing_file = g.kind == GraphKind::Embedded
            && !std::path::Path::new(wf_stores::graph::embedded::path_of(&g.url(Side::Prod)?))
                .exists();
        if !missing_file {
            let mut r = wf_stores::graph::open_read(g, Side::Prod).await?;
            let labels = r.label_counts().await?;
            r.finish().await?;
            if !labels.is_empty() {
                anyhow::bail!(
                    "PROD graph {} already has nodes: wf seed only fills an empty graph",
                    g.name
                );
            }
        }
    }
    Ok(schemas)
}

/// A staging writer per seed table and, with a graph, the spool file of its nodes and
/// relationships.
fn open_writers(
    cfg: &Config,
    schemas: &[wf_stores::schema::StoreSchema],
    work: &Path,
) -> anyhow::Result<(Writers, PathBuf)> {
    let mut writers = Writers {
        tables: HashMap::new(),
        graph: None,
        counts: BTreeMap::new(),
        nodes: 0,
        rels: 0,
    };
    for (s, schema) in cfg.stores.iter().zip(schemas) {
        for t in &schema.tables {
            let cols = staged_columns(s.kind, t);
            let path = work.join(format!("{}.arrow", t.id()));
            let idx = cols
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name.clone(), i))
                .collect();
            let w = StagingWriter::create(&path, arrow_schema(&s.name, &t.name, &cols), 8192)?;
            writers.tables.insert(t.id(), (w, idx, cols.len()));
        }
    }
    let graph_spool = work.join("graph.jsonl");
    if cfg.graph.is_some() {
        writers.graph = Some(std::io::BufWriter::new(std::fs::File::create(
            &graph_spool,
        )?));
    }
    Ok((writers, graph_spool))
}

/// Loads the generated tables into PROD with the loaders wf uses for CERT (the one place wf
/// writes PROD).
async fn load_prod(
    cfg: &Config,
    schemas: &[wf_stores::schema::StoreSchema],
    files: &[TableFile],
    work: &Path,
) -> anyhow::Result<()> {
    let mut writable = cfg.clone();
    writable.stores = cfg.stores.iter().map(prod_writable).collect();
    let mut with_virtual = schemas.to_vec();
    add_virtual_fks(&mut with_virtual, cfg).map_err(|e| anyhow::anyhow!(e))?;
    let analysis = analyze(&with_virtual, &cfg.cycle_breaks);
    let opts = LoadOptions {
        run_key: "wf-seed".into(),
        manifest_dir: work.join("manifests"),
        strategy: Strategy::Insert,
        dry_run: false,
    };
    for job in plan_loads(&writable, schemas, &analysis, files, &opts) {
        let store = writable
            .store(&job.store)
            .ok_or_else(|| anyhow::anyhow!("store {} vanished", job.store))?;
        load_store(store, &job).await?;
        connect(store, Side::Cert)
            .await?
            .execute("drop table if exists wf_loads")
            .await?;
    }
    Ok(())
}

async fn open_prod_writer(g: &GraphConfig) -> anyhow::Result<Box<dyn GraphWrite>> {
    Ok(match g.kind {
        GraphKind::Bolt => {
            Box::new(wf_stores::graph::bolt::BoltWrite::open_side(g, Side::Prod).await?)
        }
        GraphKind::Embedded => {
            Box::new(wf_stores::graph::embedded::EmbeddedWrite::open_side(g, Side::Prod).await?)
        }
    })
}

/// Writes the spooled nodes, then the relationships, in chunks, into the PROD graph.
async fn seed_graph(g: &GraphConfig, spool: &Path) -> anyhow::Result<()> {
    let mut w = open_prod_writer(g).await?;
    for label in ["School", "Teacher", "Section", "Student", "Guardian"] {
        w.ensure_index(label).await?;
    }
    for pass in ["n", "r"] {
        let mut nodes: BTreeMap<String, Vec<NodeRec>> = BTreeMap::new();
        let mut rels: BTreeMap<(String, String, String), Vec<RelRec>> = BTreeMap::new();
        let f = std::fs::File::open(spool)?;
        for line in std::io::BufReader::new(f).lines() {
            let v: serde_json::Value = serde_json::from_str(&line?)?;
            if pass == "n" {
                if let (Some(l), Some(p)) = (v["n"].as_str(), v.get("p")) {
                    let props = match GValue::from_json(p) {
                        GValue::Map(m) => m,
                        _ => BTreeMap::new(),
                    };
                    let batch = nodes.entry(l.to_string()).or_default();
                    batch.push(NodeRec {
                        labels: vec![l.to_string()],
                        props,
                    });
                    if batch.len() >= 2000 {
                        w.merge_nodes(l, batch).await?;
                        batch.clear();
                    }
                }
            } else if let Some(t) = v["r"].as_str() {
                let end = |k: &str| {
                    (
                        v[k][0].as_str().unwrap_or_default().to_string(),
                        GValue::Int(v[k][1].as_i64().unwrap_or_default()),
                    )
                };
                let (s, e) = (end("s"), end("e"));
                let key = (t.to_string(), s.0.clone(), e.0.clone());
                let batch = rels.entry(key.clone()).or_default();
                batch.push(RelRec {
                    rel_type: t.to_string(),
                    start: s,
                    end: e,
                    props: BTreeMap::new(),
                });
                if batch.len() >= 2000 {
                    w.merge_rels(&key.0, (&key.1, &key.2), batch).await?;
                    batch.clear();
                }
            }
        }
        for (l, batch) in nodes.iter().filter(|(_, b)| !b.is_empty()) {
            w.merge_nodes(l, batch).await?;
        }
        for (k, batch) in rels.iter().filter(|(_, b)| !b.is_empty()) {
            w.merge_rels(&k.0, (&k.1, &k.2), batch).await?;
        }
    }
    w.commit().await?;
    Ok(())
}
