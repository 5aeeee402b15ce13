//! District statistics for choosing pilots (`wf select-districts`): per district, rows across every
//! table that has the district column, the latest date or timestamp seen, and in how many of those
//! tables it appears. Read-only, on the PROD side.

use crate::config::{Config, Side, StoreKind};
use crate::error::StoreError;
use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;
use crate::RelationalStore;
use serde::Serialize;
use sqlx::Row;
use std::collections::BTreeMap;

/// One district's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DistrictStats {
    pub district: String,
    /// Rows across all tables that have the district column.
    pub rows: u64,
    /// The latest date or timestamp in those rows (ISO text), if any.
    pub latest: Option<String>,
    /// How many of the district tables hold at least one of its rows.
    pub tables_present: usize,
    /// How many tables have the district column.
    pub tables_total: usize,
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

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Figures for every district found in PROD, largest first.
pub async fn district_stats(cfg: &Config) -> Result<Vec<DistrictStats>, StoreError> {
    let mut by: BTreeMap<String, DistrictStats> = BTreeMap::new();
    let mut tables_total = 0;
    for s in &cfg.stores {
        let url = s.url(Side::Prod)?;
        let (schema, pg, lite) = match s.kind {
            StoreKind::Postgres => {
                let db = PgStore::connect(&s.name, &url, Side::Prod).await?;
                (db.introspect().await?, Some(db), None)
            }
            StoreKind::Sqlite => {
                let db = SqliteStore::connect(&s.name, &url, Side::Prod).await?;
                (db.introspect().await?, None, Some(db))
            }
        };
        for t in schema
            .tables
            .iter()
            .filter(|t| t.column(&cfg.district_column).is_some())
        {
            tables_total += 1;
            let dates: Vec<String> = t
                .columns
                .iter()
                .filter(|c| {
                    let ty = c.data_type.to_ascii_lowercase();
                    ty.contains("date") || ty.contains("timestamp")
                })
                .map(|c| format!("max({})", quote(&c.name)))
                .collect();
            let latest = if dates.is_empty() {
                "null".to_string()
            } else if dates.len() == 1 {
                dates[0].clone()
            } else {
                // greatest() is PostgreSQL; SQLite's max() takes several arguments.
                if s.kind == StoreKind::Postgres {
                    format!("greatest({})", dates.join(", "))
                } else {
                    format!("max({})", dates.join(", "))
                }
            };
            let sql = match s.kind {
                StoreKind::Postgres => format!(
                    "select {d}::text, count(*), ({latest})::text from {t} where {d} is not null group by 1",
                    d = quote(&cfg.district_column),
                    t = quote(&t.name)
                ),
                StoreKind::Sqlite => format!(
                    "select cast({d} as text), count(*), cast(({latest}) as text) from {t} where {d} is not null group by 1",
                    d = quote(&cfg.district_column),
                    t = quote(&t.name)
                ),
            };
            let rows: Vec<(String, i64, Option<String>)> = if let Some(db) = &pg {
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .fetch_all(db.pool())
                    .await
                    .map_err(|e| StoreError::from_sqlx(&s.name, e))?
                    .iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2)))
                    .collect()
            } else if let Some(db) = &lite {
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .fetch_all(db.pool())
                    .await
                    .map_err(|e| StoreError::from_sqlx(&s.name, e))?
                    .iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2)))
                    .collect()
            } else {
                Vec::new()
            };
            for (district, n, latest) in rows {
                let d = by.entry(district.clone()).or_insert_with(|| DistrictStats {
                    district,
                    ..DistrictStats::default()
                });
                d.rows += n.max(0) as u64;
                d.tables_present += 1;
                if latest > d.latest {
                    d.latest = latest;
                }
            }
        }
    }
    let mut out: Vec<DistrictStats> = by
        .into_values()
        .map(|mut d| {
            d.tables_total = tables_total;
            d
        })
        .collect();
    out.sort_by(|a, b| {
        b.rows
            .cmp(&a.rows)
            .then_with(|| a.district.cmp(&b.district))
    });
    Ok(out)
}

/// Pilot recommendations: the most complete district near the 10th, 50th and 90th percentile of size.
pub fn recommend(stats: &[DistrictStats]) -> BTreeMap<&'static str, String> {
    let mut picks = BTreeMap::new();
    if stats.is_empty() {
        return picks;
    }
    // `stats` is largest first; walk sizes ascending. A near-empty district (under 1 % of the
    // largest one's rows, or in under half of the district tables) is no pilot while real ones exist.
    let largest = stats.iter().map(|s| s.rows).max().unwrap_or(0);
    let real =
        |s: &&DistrictStats| s.rows > 0 && s.rows * 100 >= largest && s.completeness() >= 0.5;
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
            latest: None,
            tables_present: present,
            tables_total: 4,
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
