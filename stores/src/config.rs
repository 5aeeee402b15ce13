//! `wf.toml`: the stores, cross-store links, the district column and the rule files.
//! Parsing and `validate` do no I/O; `resolve` reads the environment for `env:VAR` connections.

use crate::config_at::{key, Problem, Seg};
use crate::error::StoreError;
pub use crate::refs::{ColumnRef, Side};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Which engine a relational store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Postgres,
    Sqlite,
}

impl StoreKind {
    /// Whether a cycle's non-deferrable break columns load NULL and are set by UPDATE afterwards
    /// (PostgreSQL checks FKs per row); SQLite defers every FK to commit instead.
    pub fn loads_break_columns_later(self) -> bool {
        self == StoreKind::Postgres
    }
}

/// One relational store (ids, hcp1, hcp2, adb), in PROD and in CERT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Short name used in table ids (`ids.students`) and file names.
    pub name: String,
    /// `postgres` or `sqlite`.
    pub kind: StoreKind,
    /// PROD connection: a URL (`postgres://…`, `sqlite://path`) or `env:VAR` to read it from VAR.
    pub prod: String,
    /// CERT connection, same forms; must differ from PROD.
    pub cert: String,
    /// CERT's user triggers during a load: `keep` (default; they run, and wf names the ones on
    /// loaded tables) or `disable` (PostgreSQL: `ALTER TABLE … DISABLE TRIGGER USER` inside the load
    /// transaction, enabled again before commit; needs ownership of the tables).
    #[serde(default)]
    pub triggers: Triggers,
}

/// What a load does with CERT's user triggers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Triggers {
    #[default]
    Keep,
    Disable,
}

/// A reference no database declares, e.g. `hcp1.enrollments.student_id → ids.students.id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualFk {
    /// `store.table.column` of the referencing column.
    pub from: String,
    /// `store.table.column` of the referenced (unique) column.
    pub to: String,
}

/// A table whose changed rows a column shows (`wf refresh --incremental` reads only the rows
/// changed since the replaced run's snapshot, and the rows new to the district).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeTracking {
    /// `store.table`.
    pub table: String,
    /// A `timestamp`, `timestamptz` or `date` column every insert and update sets to the time
    /// of the change (a default and a trigger, say).
    pub column: String,
    /// Seconds before the replaced run's snapshot the reading starts: covers transactions that
    /// stamped a row before that snapshot and committed after it, and clocks apart.
    #[serde(default = "default_lag")]
    pub lag_seconds: u64,
}

fn default_lag() -> u64 {
    300
}

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Column that holds the district id in the tables that have one.
    #[serde(default = "default_district_column")]
    pub district_column: String,
    /// Relational stores.
    #[serde(default)]
    pub stores: Vec<StoreConfig>,
    /// Cross-store (or undeclared) foreign keys.
    #[serde(default)]
    pub virtual_fks: Vec<VirtualFk>,
    /// Tables copied whole (`store.table`), e.g. code lists such as grade levels.
    #[serde(default)]
    pub reference_tables: Vec<String>,
    /// FK columns (`store.table.column` of the child) along which child rows of selected parents are
    /// pulled in too. Child → parent references are always followed; parent → child only here.
    #[serde(default)]
    pub follow_children: Vec<String>,
    /// FK columns (`store.table.column` of the child) where cycles break, before wf's own order
    /// (virtual, nullable, deferrable); each must start an FK that can break the cycle it is in.
    #[serde(default)]
    pub cycle_breaks: Vec<String>,
    /// Anonymization rules file, relative to this file.
    #[serde(default)]
    pub anonymization_rules: Option<PathBuf>,
    /// Validation rules file, relative to this file.
    #[serde(default)]
    pub validation_rules: Option<PathBuf>,
    /// The graph store (sp), if there is one.
    #[serde(default)]
    pub graph: Option<crate::graph::config::GraphConfig>,
    /// What a resume does when the runner that held the extraction's snapshots died.
    #[serde(default)]
    pub snapshot: SnapshotMode,
    /// Who is told when a run or batch ends, retries a step often, or goes silent.
    #[serde(default)]
    pub notify: Vec<crate::notify::Notify>,
    /// Tables an incremental refresh reads by their change column.
    #[serde(default)]
    pub change_tracking: Vec<ChangeTracking>,
}

/// What a resume does about a store whose tables were partly extracted when the runner died (its
/// snapshot died with it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotMode {
    /// The store is planned and extracted again, whole, in a new snapshot: one store never mixes
    /// two moments. Stores whose tables were all extracted keep them.
    #[default]
    Strict,
    /// The store's remaining tables are read in a new snapshot; validation's referential checks
    /// catch a reference the change left dangling (for very large districts).
    Closure,
}

fn default_district_column() -> String {
    "district_id".into()
}

fn invalid(file: &Path, msg: String) -> StoreError {
    StoreError::Config {
        file: file.to_path_buf(),
        message: msg,
    }
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, StoreError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            invalid(
                path,
                format!("cannot read it ({e}); pass --config or set WF_CONFIG"),
            )
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates the text of a configuration file (`file` is only used in messages).
    pub fn parse(text: &str, file: &Path) -> Result<Config, StoreError> {
        let cfg: Config = toml::from_str(text)
            .map_err(|e| invalid(file, crate::config_at::syntax_error(text, &e)))?;
        cfg.check().map_err(|p| invalid(file, p.with_line(text)))?;
        Ok(cfg)
    }

    /// Checks what can be checked without I/O (errors name the setting; `parse` adds the line).
    pub fn validate(&self, file: &Path) -> Result<(), StoreError> {
        self.check().map_err(|p| invalid(file, p.message))
    }

    /// `validate`, with the path of the setting each problem is about.
    fn check(&self) -> Result<(), Problem> {
        if self.district_column.trim().is_empty() {
            return Err(Problem::at(
                vec![key("district_column")],
                "district_column is empty",
            ));
        }
        let names = self.check_stores()?;
        for (i, n) in self.notify.iter().enumerate() {
            if let Some(p) = n.problem() {
                return Err(Problem::at(vec![key("notify"), Seg::Index(i)], p));
            }
        }
        if let Some(g) = &self.graph {
            let stores: Vec<&str> = names.iter().copied().collect();
            g.check(&stores)?;
        }
        self.check_references(&names)
    }

    /// Each store's name is valid and distinct, and its CERT is not its PROD; returns the names.
    fn check_stores(&self) -> Result<HashSet<&str>, Problem> {
        let mut names = HashSet::new();
        for (i, s) in self.stores.iter().enumerate() {
            let at = |f: &str| vec![key("stores"), Seg::Index(i), key(f)];
            if s.name.is_empty()
                || !s
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(Problem::at(
                    at("name"),
                    format!("store name `{}` must be letters, digits or _", s.name),
                ));
            }
            if !names.insert(s.name.as_str()) {
                return Err(Problem::at(
                    at("name"),
                    format!("store `{}` is declared twice", s.name),
                ));
            }
            if s.kind == StoreKind::Sqlite && s.triggers == Triggers::Disable {
                return Err(Problem::at(
                    at("triggers"),
                    format!(
                        "store `{}`: triggers = \"disable\" is supported on PostgreSQL stores only",
                        s.name
                    ),
                ));
            }
            if s.prod.trim() == s.cert.trim() {
                return Err(Problem::at(
                    at("cert"),
                    format!("store `{}`: the CERT connection equals the PROD one; CERT must be another database", s.name),
                ));
            }
        }
        Ok(names)
    }

    /// Virtual FKs, reference tables, followed children and cycle breaks name declared stores.
    fn check_references(&self, names: &HashSet<&str>) -> Result<(), Problem> {
        let known = |store: &str| names.contains(store);
        for (i, v) in self.virtual_fks.iter().enumerate() {
            for (end, text) in [("from", &v.from), ("to", &v.to)] {
                let at = vec![key("virtual_fks"), Seg::Index(i), key(end)];
                declared_column(at, &format!("virtual_fks {end}"), text, names)?;
            }
        }
        for (i, t) in self.reference_tables.iter().enumerate() {
            let (store, table) = t.split_once('.').unwrap_or(("", ""));
            if table.is_empty() || table.split('.').count() > 2 || !known(store) {
                return Err(Problem::at(
                    vec![key("reference_tables"), Seg::Index(i)],
                    format!("reference table `{t}` is not store.table of a declared store"),
                ));
            }
        }
        let lists = [
            ("follow_children", &self.follow_children),
            ("cycle_breaks", &self.cycle_breaks),
        ];
        for (what, list) in lists {
            for (i, f) in list.iter().enumerate() {
                declared_column(vec![key(what), Seg::Index(i)], what, f, names)?;
            }
        }
        self.check_change_tracking(names)
    }

    /// Each `[[change_tracking]]` table is `store.table` of a declared PostgreSQL store, once.
    fn check_change_tracking(&self, names: &HashSet<&str>) -> Result<(), Problem> {
        let mut seen = HashSet::new();
        for (i, c) in self.change_tracking.iter().enumerate() {
            let at = |f: &str| vec![key("change_tracking"), Seg::Index(i), key(f)];
            let (store, table) = c.table.split_once('.').unwrap_or(("", ""));
            if table.is_empty() || table.split('.').count() > 2 || !names.contains(store) {
                return Err(Problem::at(
                    at("table"),
                    format!(
                        "change_tracking table `{}` is not store.table of a declared store",
                        c.table
                    ),
                ));
            }
            if self
                .store(store)
                .is_some_and(|s| s.kind != StoreKind::Postgres)
            {
                return Err(Problem::at(
                    at("table"),
                    format!("change_tracking table `{}`: change tracking is supported on PostgreSQL stores only", c.table),
                ));
            }
            if c.column.trim().is_empty() || c.column.contains('.') {
                return Err(Problem::at(
                    at("column"),
                    format!(
                        "change_tracking column `{}` must be a column name of {}",
                        c.column, c.table
                    ),
                ));
            }
            if !seen.insert(c.table.as_str()) {
                return Err(Problem::at(
                    at("table"),
                    format!("change_tracking names `{}` twice", c.table),
                ));
            }
        }
        Ok(())
    }

    /// The change-tracking entry of `store.table`, if any.
    pub fn change_tracking(&self, table: &str) -> Option<&ChangeTracking> {
        self.change_tracking.iter().find(|c| c.table == table)
    }

    pub fn store(&self, name: &str) -> Option<&StoreConfig> {
        self.stores.iter().find(|s| s.name == name)
    }
}

/// `text` is `store.table.column` of a declared store (`names`); `what` names the setting at `at`.
fn declared_column(
    at: Vec<Seg>,
    what: &str,
    text: &str,
    names: &HashSet<&str>,
) -> Result<(), Problem> {
    let r = ColumnRef::parse(text).ok_or_else(|| {
        Problem::at(
            at.clone(),
            format!("{what} `{text}` is not store.table.column"),
        )
    })?;
    if !names.contains(r.store.as_str()) {
        return Err(Problem::at(
            at,
            format!("{what} `{text}` names unknown store `{}`", r.store),
        ));
    }
    Ok(())
}

impl StoreConfig {
    /// The connection string of `side`, with `env:VAR` read from the environment.
    pub fn url(&self, side: Side) -> Result<String, StoreError> {
        let raw = match side {
            Side::Prod => &self.prod,
            Side::Cert => &self.cert,
        };
        match raw.strip_prefix("env:") {
            Some(var) => std::env::var(var).map_err(|_| StoreError::Connect {
                store: self.name.clone(),
                side: side.as_str(),
                message: format!(
                    "environment variable {var} is not set; export it with the {} connection URL",
                    side.as_str()
                ),
            }),
            None => Ok(raw.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        district_column = "district_id"
        reference_tables = ["ids.grade_levels"]
        follow_children = ["ids.students.school_id"]
        [[stores]]
        name = "ids"
        kind = "postgres"
        prod = "env:PROD_IDS"
        cert = "env:CERT_IDS"
        [[stores]]
        name = "hcp1"
        kind = "sqlite"
        prod = "sqlite://prod/hcp1.db"
        cert = "sqlite://cert/hcp1.db"
        [[virtual_fks]]
        from = "hcp1.enrollments.student_id"
        to = "ids.students.id"
    "#;

    fn parse(text: &str) -> Result<Config, StoreError> {
        Config::parse(text, Path::new("wf.toml"))
    }

    #[test]
    fn column_refs_name_a_table_in_public_or_in_another_schema() {
        let r = ColumnRef::parse("rw.Sales.Orders.amount").expect("schema-qualified");
        assert_eq!(
            (r.store.as_str(), r.table.as_str(), r.column.as_str()),
            ("rw", "Sales.Orders", "amount")
        );
        assert_eq!(r.table_id(), "rw.Sales.Orders");
        let r = ColumnRef::parse("ids.students.id").expect("public");
        assert_eq!((r.table.as_str(), r.column.as_str()), ("students", "id"));
        for bad in [
            "ids.students",
            "ids..id",
            "a.b.c.d.e",
            ".t.c",
            "s.t.",
            "s.a..c",
        ] {
            assert!(ColumnRef::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn parses_a_full_config() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.stores.len(), 2);
        assert_eq!(c.stores[1].kind, StoreKind::Sqlite);
        assert_eq!(
            ColumnRef::parse(&c.virtual_fks[0].from).unwrap().table_id(),
            "hcp1.enrollments"
        );
    }

    #[test]
    fn refuses_cert_equal_to_prod() {
        let bad = GOOD.replace("env:CERT_IDS", "env:PROD_IDS");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.contains("CERT connection equals the PROD one"), "{e}");
    }

    #[test]
    fn unknown_fields_and_stores_are_named() {
        let e = parse(&format!("{GOOD}\nsurprise = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("surprise") && e.contains("wf.toml"), "{e}");
        let e = parse(&GOOD.replace("ids.students.id", "nope.students.id"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown store `nope`"), "{e}");
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/wf.example.toml"
        ));
        let c = Config::load(path).unwrap();
        assert_eq!(c.stores.len(), 4);
        assert_eq!(
            c.anonymization_rules.as_deref(),
            Some(Path::new("anonymization.toml"))
        );
    }

    #[test]
    fn env_connections_name_the_missing_variable() {
        let c = parse(GOOD).unwrap();
        let e = c.stores[0].url(Side::Prod).unwrap_err().to_string();
        assert!(e.contains("PROD_IDS") && e.contains("ids"), "{e}");
        assert_eq!(
            c.stores[1].url(Side::Cert).unwrap(),
            "sqlite://cert/hcp1.db"
        );
    }

    #[test]
    fn validation_errors_name_the_line_of_the_setting_even_when_its_value_repeats() {
        // GOOD's second store renamed to the first: the name is twice in the file, and the
        // error points at the second declaration.
        let line = GOOD.lines().position(|l| l.contains("\"hcp1\"")).unwrap() + 1;
        let twice = GOOD.replacen("name = \"hcp1\"", "name = \"ids\"", 1);
        let e = parse(&twice).unwrap_err().to_string();
        assert!(
            e.contains(&format!("line {line}: store `ids` is declared twice")),
            "{e}"
        );
        let bad = GOOD.replace("\"ids.grade_levels\"", "\"ids.grade_levels\", \"nope.x\"");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.contains("line 3: reference table `nope.x`"), "{e}");
        let graph = format!(
            "{GOOD}\n[graph]\nkind = \"embedded\"\nprod = \"a\"\ncert = \"b\"\n[graph.keys]\nBook = \"is.bn\"\n"
        );
        let e = parse(&graph).unwrap_err().to_string();
        let line = graph.lines().position(|l| l.contains("is.bn")).unwrap() + 1;
        assert!(
            e.contains(&format!("line {line}: graph keys name `is.bn`")),
            "{e}"
        );
    }
}
