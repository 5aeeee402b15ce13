//! Discovery across all configured stores: schemas, virtual FKs, cycles and load order, written to
//! `analysis/schema-analysis.json`, `analysis/dependency-graph.dot` and `analysis/extraction-order.json`.

use serde::Serialize;
use std::path::{Path, PathBuf};
use wf_stores::analysis::{add_virtual_fks, analyze, to_dot, Analysis};
use wf_stores::graph::discover::{discover_graph, GraphSchema};
use wf_stores::schema::StoreSchema;
use wf_stores::{connect, Config, Side, StoreError};

/// What `wf analyze` found, for its summary.
pub struct Discovery {
    pub schemas: Vec<StoreSchema>,
    /// The graph store's labels, relationship types and properties, if one is configured.
    pub graph: Option<GraphSchema>,
    pub analysis: Analysis,
    pub files: Vec<PathBuf>,
}

#[derive(Serialize)]
struct SchemaFile<'a> {
    district_column: &'a str,
    stores: &'a [StoreSchema],
    #[serde(skip_serializing_if = "Option::is_none")]
    graph: Option<&'a GraphSchema>,
}

/// Discovers every store on the PROD side (read-only) and writes the analysis files into `out`.
pub async fn discover(cfg: &Config, out: &Path) -> Result<Discovery, StoreError> {
    let mut schemas = Vec::with_capacity(cfg.stores.len());
    for store in &cfg.stores {
        let db = connect(store, Side::Prod).await?;
        schemas.push(db.introspect().await?);
    }
    add_virtual_fks(&mut schemas, cfg).map_err(|message| StoreError::Config {
        file: PathBuf::from("wf.toml"),
        message,
    })?;
    let analysis = analyze(&schemas, &cfg.cycle_breaks);
    let graph = match &cfg.graph {
        Some(g) => Some(discover_graph(g).await?),
        None => None,
    };
    let staging = |path: &Path, message: String| StoreError::Staging {
        path: path.to_path_buf(),
        message,
    };
    std::fs::create_dir_all(out).map_err(|e| staging(out, e.to_string()))?;
    let schema_json = serde_json::to_vec_pretty(&SchemaFile {
        district_column: &cfg.district_column,
        stores: &schemas,
        graph: graph.as_ref(),
    })
    .map_err(|e| staging(out, e.to_string()))?;
    let order_json =
        serde_json::to_vec_pretty(&analysis).map_err(|e| staging(out, e.to_string()))?;
    let mut files = Vec::new();
    for (name, bytes) in [
        ("schema-analysis.json", schema_json),
        (
            "dependency-graph.dot",
            dot(&analysis, graph.as_ref()).into_bytes(),
        ),
        ("extraction-order.json", order_json),
    ] {
        let path = out.join(name);
        let tmp = out.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, bytes).map_err(|e| staging(&tmp, e.to_string()))?;
        std::fs::rename(&tmp, &path).map_err(|e| staging(&path, e.to_string()))?;
        files.push(path);
    }
    Ok(Discovery {
        schemas,
        graph,
        analysis,
        files,
    })
}

/// The relational dependency graph and, with a graph store, its labels and relationship types as
/// a cluster of the same drawing.
fn dot(analysis: &Analysis, graph: Option<&GraphSchema>) -> String {
    let mut s = to_dot(analysis);
    if let Some(g) = graph {
        let end = s.rfind('}').unwrap_or(s.len());
        s.insert_str(end, &wf_stores::graph::discover::dot_cluster(g));
    }
    s
}
