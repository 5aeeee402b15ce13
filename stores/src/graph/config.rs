//! The `[graph]` section of `wf.toml`: the graph store (sp), how its district subgraph is chosen,
//! and which node properties point at relational rows.

use super::key::{KeyMap, KeySpec};
use crate::config_at::{key, Problem, Seg};
use crate::error::StoreError;
use crate::refs::{ColumnRef, Side};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where the graph lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GraphKind {
    /// Neo4j (or another Bolt + OpenCypher server) through neo4rs.
    Bolt,
    /// A property graph in one embedded file (the demo and quick tests).
    Embedded,
}

/// Which way a followed relationship is walked from an already selected node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Out,
    In,
    Both,
}

/// A relationship type along which connected nodes are pulled into the subgraph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Follow {
    #[serde(rename = "type")]
    pub rel_type: String,
    #[serde(default)]
    pub direction: Direction,
}

/// A node property that holds a relational key, e.g. `Student.student_id` → `ids.students.id`:
/// anonymization applies the relational column's rule to it, so the two still join.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphLink {
    /// `Label.property`.
    pub from: String,
    /// `store.table.column`.
    pub to: String,
}

/// The graph store, in PROD and in CERT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphConfig {
    /// Short name used in field ids (`sp.Student.email`) and file names.
    #[serde(default = "default_name")]
    pub name: String,
    pub kind: GraphKind,
    /// PROD: a Bolt address (`bolt://host:7687` or `host:7687`) or an embedded file path; `env:VAR` allowed.
    pub prod: String,
    /// CERT, same forms; must differ from PROD.
    pub cert: String,
    /// Bolt user (`env:VAR` allowed).
    #[serde(default)]
    pub user: Option<String>,
    /// Bolt password (`env:VAR` allowed; write the env form, never the password).
    #[serde(default)]
    pub password: Option<String>,
    /// Database name on the PROD server (default: the server's default database).
    #[serde(default)]
    pub prod_database: Option<String>,
    /// Database name on the CERT server.
    #[serde(default)]
    pub cert_database: Option<String>,
    /// Property that holds the district id.
    #[serde(default = "default_district_property")]
    pub district_property: String,
    /// Labels whose nodes are selected by the district property (empty: every label).
    #[serde(default)]
    pub district_labels: Vec<String>,
    /// Property that identifies a node within its label, for labels `keys` does not name.
    #[serde(default = "default_key_property")]
    pub key_property: String,
    /// Keys per label: `{ Book = "isbn", Edition = ["isbn", "lang"] }` (a list is a composite key).
    #[serde(default)]
    pub keys: BTreeMap<String, KeySpec>,
    /// Relationship types followed from selected nodes.
    #[serde(default)]
    pub follow: Vec<Follow>,
    /// How many hops `follow` goes (default: to a fixpoint).
    #[serde(default)]
    pub max_depth: Option<u32>,
    /// Node properties that hold relational keys.
    #[serde(default)]
    pub links: Vec<GraphLink>,
    /// What a migrate does with district nodes that lack `key_property`: refuse the district
    /// (default), or skip them, counted in the validation gate and the report.
    #[serde(default)]
    pub without_key: WithoutKey,
    /// Property values a Bolt server may refuse (maps, nested lists, lists of mixed kinds):
    /// loaded as JSON text (default), refused by the validation gate, or kept as they are.
    #[serde(default)]
    pub maps: Maps,
}

/// `[graph] maps`: what becomes of map, nested-list and mixed-list properties.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Maps {
    /// Staged and loaded as their JSON text (what Neo4j can store).
    #[default]
    Json,
    /// Each one is a validation-gate error, before any store commits.
    Refuse,
    /// Loaded as they are (servers that store maps, such as ArcadeDB or Memgraph).
    Keep,
}

/// `[graph] without_key`: nodes without their key cannot be keyed, copied or rolled back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WithoutKey {
    /// The district is refused with the counts, before anything is loaded.
    #[default]
    Refuse,
    /// They (and their relationships) are left out, and the counts reported.
    Skip,
}

fn default_name() -> String {
    "sp".into()
}
fn default_district_property() -> String {
    "district_id".into()
}
fn default_key_property() -> String {
    "id".into()
}

/// The graph store's own name goes into file names and field ids: identifier characters only.
pub fn is_ident(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Characters a label, relationship type or property name may not hold: `.` separates the parts
/// of a field id (`sp.Label.property`), `/` and `\` would reach file names, quotes the embedded
/// graph's JSON paths. Everything else (spaces, backticks, non-ASCII) is quoted in every query.
const NOT_IN_NAMES: &[char] = &['.', '/', '\\', '"', '\''];

/// A label, relationship type or property name wf can quote everywhere it goes.
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.trim() == s
        && !s
            .chars()
            .any(|c| c.is_control() || NOT_IN_NAMES.contains(&c))
}

/// The error text for a name `is_name` refuses.
fn bad_name(what: &str, n: &str) -> String {
    format!("graph {what} `{n}` may not be empty, start or end with a space, or hold . / \\ \" ' or control characters (spaces, backticks and non-ASCII letters are fine)")
}

/// The path of `[graph] <field>` (and below) in wf.toml.
fn at(rest: &[Seg]) -> Vec<Seg> {
    [key("graph")]
        .into_iter()
        .chain(rest.iter().cloned())
        .collect()
}

impl GraphConfig {
    /// Checks names and links; `stores` are the relational store names.
    pub fn check(&self, stores: &[&str]) -> Result<(), Problem> {
        if !is_ident(&self.name) || stores.contains(&self.name.as_str()) {
            return Err(Problem::at(
                at(&[key("name")]),
                format!(
                    "graph name `{}` must be letters, digits or _ and differ from the relational stores",
                    self.name
                ),
            ));
        }
        if self.prod.trim() == self.cert.trim() && self.prod_database == self.cert_database {
            return Err(Problem::at(
                at(&[key("cert")]),
                "graph: the CERT connection equals the PROD one; CERT must be another database",
            ));
        }
        let one = |f: &str| vec![key(f)];
        let item = |f: &str, i: usize| vec![key(f), Seg::Index(i)];
        let names = std::iter::once((
            one("district_property"),
            "district_property",
            &self.district_property,
        ))
        .chain(std::iter::once((
            one("key_property"),
            "key_property",
            &self.key_property,
        )))
        .chain(
            self.district_labels
                .iter()
                .enumerate()
                .map(|(i, l)| (item("district_labels", i), "district_labels", l)),
        )
        .chain(self.follow.iter().enumerate().map(|(i, f)| {
            (
                [item("follow", i), one("type")].concat(),
                "follow type",
                &f.rel_type,
            )
        }));
        for (path, what, n) in names {
            if !is_name(n) {
                return Err(Problem::at(at(&path), bad_name(what, n)));
            }
        }
        for (label, k) in &self.keys {
            let path = at(&[key("keys"), key(label)]);
            let props = k.props();
            let mut seen = props.clone();
            seen.sort();
            seen.dedup();
            if props.is_empty() || seen.len() != props.len() {
                return Err(Problem::at(
                    path,
                    format!(
                        "graph keys: `{label}` needs one property or a list of distinct properties"
                    ),
                ));
            }
            if let Some(n) = std::iter::once(label).chain(&props).find(|n| !is_name(n)) {
                return Err(Problem::at(path, bad_name("keys name", n)));
            }
        }
        for (i, l) in self.links.iter().enumerate() {
            let ok_from = l
                .from
                .split_once('.')
                .is_some_and(|(a, b)| is_name(a) && is_name(b));
            if !ok_from {
                return Err(Problem::at(
                    at(&[key("links"), Seg::Index(i), key("from")]),
                    format!("graph link from `{}` is not Label.property", l.from),
                ));
            }
            match ColumnRef::parse(&l.to) {
                Some(r) if stores.contains(&r.store.as_str()) => {}
                _ => {
                    return Err(Problem::at(
                        at(&[key("links"), Seg::Index(i), key("to")]),
                        format!(
                            "graph link to `{}` is not store.table.column of a declared store",
                            l.to
                        ),
                    ))
                }
            }
        }
        Ok(())
    }

    fn resolve(&self, raw: &str, side: Side, what: &str) -> Result<String, StoreError> {
        match raw.strip_prefix("env:") {
            Some(var) => std::env::var(var).map_err(|_| StoreError::Connect {
                store: self.name.clone(),
                side: side.as_str(),
                message: format!(
                    "environment variable {var} is not set; export it with the {} graph {what}",
                    side.as_str()
                ),
            }),
            None => Ok(raw.to_string()),
        }
    }

    /// The address (or file) of `side`, with `env:VAR` read.
    pub fn url(&self, side: Side) -> Result<String, StoreError> {
        let raw = match side {
            Side::Prod => &self.prod,
            Side::Cert => &self.cert,
        };
        self.resolve(raw, side, "address")
    }

    /// User and password for `side` (empty when not configured).
    pub fn credentials(&self, side: Side) -> Result<(String, String), StoreError> {
        let user = match &self.user {
            Some(u) => self.resolve(u, side, "user")?,
            None => String::new(),
        };
        let pw = match &self.password {
            Some(p) => self.resolve(p, side, "password")?,
            None => String::new(),
        };
        Ok((user, pw))
    }

    pub fn database(&self, side: Side) -> Option<&str> {
        match side {
            Side::Prod => self.prod_database.as_deref(),
            Side::Cert => self.cert_database.as_deref(),
        }
    }

    /// Every label's key: `keys`, else `key_property`.
    pub fn key_map(&self) -> KeyMap {
        KeyMap::new(&self.key_property, &self.keys)
    }

    /// Field-rule aliases from the links: `sp.Label.property` → `store.table.column`.
    pub fn link_aliases(&self) -> Vec<(String, String)> {
        self.links
            .iter()
            .map(|l| (format!("{}.{}", self.name, l.from), l.to.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::is_name;

    #[test]
    fn names_with_spaces_backticks_and_non_ascii_are_accepted_separators_and_quotes_not() {
        for ok in ["Livre Édition", "lang code", "a`b", "名前", "HAS EDITION"] {
            assert!(is_name(ok), "{ok}");
        }
        for bad in ["", " x", "x ", "a.b", "a/b", "a\\b", "a\"b", "a'b", "a\nb"] {
            assert!(!is_name(bad), "{bad:?}");
        }
    }
}
