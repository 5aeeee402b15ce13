//! District statistics for choosing pilots (`wf select-districts`): per district, its whole subset
//! as sized (rows across every table that has the district column, plus the rows `follow_children`
//! pulls in from tables without it), the latest date or timestamp seen, and in how many district
//! tables it appears. Read-only, on the PROD side; names only are introspected, no table counted.

use crate::config::{Config, Side, StoreKind};
use crate::error::StoreError;
use serde::Serialize;
use std::collections::BTreeMap;

/// One district's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DistrictStats {
    pub district: String,
    /// The district's whole subset as sized: `district_rows` + `child_rows`.
    pub rows: u64,
    /// Rows across all tables that have the district column.
    pub district_rows: u64,
    /// Rows `follow_children` pulls in from tables without the district column.
    pub child_rows: u64,
    /// The latest date or timestamp in its district rows (ISO text), if any.
    pub latest: Option<String>,
    /// How many of the district tables hold at least one of its rows.
    pub tables_present: usize,
    /// How many tables have the district column.
    pub tables_total: usize,
    /// Graph nodes of the district labels whose district property holds the district.
    pub nodes: u64,
}

impl DistrictStats {
    /// Share of the district tables this district appears in.
    pub fn completeness(&self) -> f64 {
        if self.tables_total == 0 {
            0.0
        } else {
            self.tables_present as f64 / self.tables_total as f64
        }
    }
}

/// Every district's figures, largest whole subset first, and the followed child tables that
/// could not be sized (with why), which the command prints rather than leaving out silently.
pub struct Sizing {
    pub districts: Vec<DistrictStats>,
    pub not_sized: Vec<String>,
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Figures for every district found in PROD, largest whole subset first.
pub async fn district_stats(cfg: &Config) -> Result<Sizing, StoreError> {
    let mut dbs = BTreeMap::new();
    let mut schemas = Vec::new();
    for s in &cfg.stores {
        let db = crate::connect(s, Side::Prod).await?;
        schemas.push(db.introspect_shape().await?);
        dbs.insert(s.name.clone(), db);
    }
    crate::analysis::add_virtual_fks(&mut schemas, cfg).map_err(|message| StoreError::Config {
        file: "wf.toml".into(),
        message,
    })?;
    let mut by: BTreeMap<String, DistrictStats> = BTreeMap::new();
    let mut tables_total = 0;
    for schema in &schemas {
        let db = &dbs[&schema.store];
        for t in schema
            .tables
            .iter()
            .filter(|t| t.column(&cfg.district_column).is_some())
        {
            tables_total += 1;
            let sql = district_sql(
                schema.kind,
                &db.quote_table(&t.name),
                t,
                &cfg.district_column,
            );
            for (district, n, latest) in db.district_rows(sql).await? {
                let d = entry(&mut by, district);
                d.district_rows += n.max(0) as u64;
                d.tables_present += 1;
                if latest > d.latest {
                    d.latest = latest;
                }
            }
        }
    }
    let mut not_sized = Vec::new();
    if let Some(g) = &cfg.graph {
        tables_total += graph_counts(g, &mut by).await?;
    }
    for f in &cfg.follow_children {
        match crate::sizing::chain(f, &cfg.follow_children, &schemas, &cfg.district_column) {
            Ok(None) => {}
            Ok(Some(chain)) => {
                let db = &dbs[&chain.store];
                let sql = chain.sql(|n| db.quote_table(n), quote, &cfg.district_column);
                for (district, n, _) in db.district_rows(sql).await? {
                    entry(&mut by, district).child_rows += n.max(0) as u64;
                }
            }
            Err(why) => not_sized.push(format!("{f}: {why}")),
        }
    }
    let mut out: Vec<DistrictStats> = by
        .into_values()
        .map(|mut d| {
            d.tables_total = tables_total;
            d.rows = d.district_rows + d.child_rows;
            d
        })
        .collect();
    out.sort_by(|a, b| {
        (b.rows + b.nodes)
            .cmp(&(a.rows + a.nodes))
            .then_with(|| a.district.cmp(&b.district))
    });
    Ok(Sizing {
        districts: out,
        not_sized,
    })
}

/// Adds each district's graph nodes (district labels, or every label) to `by`; returns how many
/// labels were counted (they count as district tables for completeness).
async fn graph_counts(
    g: &crate::graph::GraphConfig,
    by: &mut BTreeMap<String, DistrictStats>,
) -> Result<usize, StoreError> {
    let mut r = crate::graph::open_read(g, Side::Prod).await?;
    let labels: Vec<String> = if g.district_labels.is_empty() {
        r.label_counts()
            .await?
            .into_iter()
            .map(|(l, _)| l)
            .collect()
    } else {
        g.district_labels.clone()
    };
    for l in &labels {
        for (district, n) in r.district_counts(l, &g.district_property).await? {
            let d = entry(by, district);
            d.nodes += n;
            d.tables_present += 1;
        }
    }
    r.finish().await?;
    Ok(labels.len())
}

fn entry(by: &mut BTreeMap<String, DistrictStats>, district: String) -> &mut DistrictStats {
    by.entry(district.clone()).or_insert_with(|| DistrictStats {
        district,
        ..DistrictStats::default()
    })
}

/// Rows and latest date per district of a table that has the district column (`name` as the
/// engine's SQL spells it).
fn district_sql(kind: StoreKind, name: &str, t: &crate::schema::Table, district: &str) -> String {
    let dates: Vec<String> = t
        .columns
        .iter()
        .filter(|c| {
            let ty = c.data_type.to_ascii_lowercase();
            ty.contains("date") || ty.contains("timestamp")
        })
        .map(|c| format!("max({})", quote(&c.name)))
        .collect();
    let latest = match (dates.len(), kind) {
        (0, _) => "null".to_string(),
        (1, _) => dates[0].clone(),
        // greatest() is PostgreSQL; SQLite's max() takes several arguments.
        (_, StoreKind::Postgres) => format!("greatest({})", dates.join(", ")),
        (_, StoreKind::Sqlite) => format!("max({})", dates.join(", ")),
    };
    format!(
        "select cast({d} as text), count(*), cast(({latest}) as text) from {t} where {d} is not null group by 1",
        d = quote(district),
        t = name
    )
}

/// Pilot recommendations: the most complete district near the 10th, 50th and 90th percentile of size.
pub fn recommend(stats: &[DistrictStats]) -> BTreeMap<&'static str, String> {
    let mut picks = BTreeMap::new();
    if stats.is_empty() {
        return picks;
    }
    // `stats` is largest first; walk sizes ascending. A near-empty district (under 1 % of the
    // largest one's rows, or in under half of the district tables) is no pilot while real ones exist.
    // Size counts relational rows and graph nodes, so a graph-only district is sized too.
    let size = |s: &DistrictStats| s.rows + s.nodes;
    let largest = stats.iter().map(size).max().unwrap_or(0);
    let real =
        |s: &&DistrictStats| size(s) > 0 && size(s) * 100 >= largest && s.completeness() >= 0.5;
    let mut ascending: Vec<&DistrictStats> = stats.iter().rev().filter(real).collect();
    if ascending.is_empty() {
        ascending = stats.iter().rev().collect();
    }
    for (label, q) in [("small", 0.1), ("medium", 0.5), ("large", 0.9)] {
        let at = ((ascending.len() - 1) as f64 * q).round() as usize;
        let lo = at.saturating_sub(1);
        let hi = (at + 1).min(ascending.len() - 1);
        let best = ascending[lo..=hi]
            .iter()
            .max_by(|a, b| {
                a.completeness()
                    .total_cmp(&b.completeness())
                    .then_with(|| a.latest.cmp(&b.latest))
            })
            .unwrap_or(&ascending[at]);
        picks.insert(label, best.district.clone());
    }
    picks
}

#[cfg(test)]
mod pilot_tests {
    use super::*;

    fn d(name: &str, rows: u64, present: usize) -> DistrictStats {
        DistrictStats {
            district: name.into(),
            rows,
            district_rows: rows,
            child_rows: 0,
            latest: None,
            tables_present: present,
            tables_total: 4,
            nodes: 0,
        }
    }

    #[test]
    fn near_empty_districts_are_no_pilots_while_real_ones_exist() {
        // Largest first, as district_stats returns them.
        let stats = vec![
            d("big", 100_000, 4),
            d("mid", 40_000, 4),
            d("small", 9_000, 4),
            d("stub", 12, 4),
            d("half-empty", 5_000, 1),
            d("empty", 0, 0),
        ];
        let picks = recommend(&stats);
        for bad in ["stub", "half-empty", "empty"] {
            assert!(!picks.values().any(|p| p == bad), "{bad} picked: {picks:?}");
        }
        assert!(picks
            .values()
            .all(|p| ["big", "mid", "small"].contains(&p.as_str())));
        assert_eq!(picks["large"], "big");
        // Only near-empty districts: they are all there is, so they are still offered.
        let only = vec![d("stub", 3, 1), d("empty", 0, 0)];
        assert_eq!(recommend(&only).len(), 3);
    }
}
