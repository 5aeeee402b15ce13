//! Node keys: the properties that identify a node within its label. One property (`isbn`) or
//! several (`[isbn, lang]`, a composite key), chosen per label in `[graph] keys` with
//! `key_property` as the default. A composite key's value is the list of its parts, in order.

use super::{ident, GValue};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `[graph] keys` entry as written: `Book = "isbn"` or `Edition = ["isbn", "lang"]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KeySpec {
    One(String),
    Many(Vec<String>),
}

impl KeySpec {
    pub fn props(&self) -> Vec<String> {
        match self {
            KeySpec::One(p) => vec![p.clone()],
            KeySpec::Many(ps) => ps.clone(),
        }
    }
}

/// The key of one label.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeKey {
    props: Vec<String>,
}

impl NodeKey {
    pub fn new(props: Vec<String>) -> NodeKey {
        NodeKey { props }
    }

    pub fn props(&self) -> &[String] {
        &self.props
    }

    pub fn is_composite(&self) -> bool {
        self.props.len() > 1
    }

    /// The key value of a node with these properties; `None` when a part is missing or null.
    pub fn value(&self, props: &BTreeMap<String, GValue>) -> Option<GValue> {
        compose(&self.props, |p| props.get(p))
    }

    /// The parts of a key value, paired with their properties (a composite value is a list).
    pub fn parts<'a>(&'a self, v: &'a GValue) -> Vec<(&'a str, &'a GValue)> {
        match (self.props.as_slice(), v) {
            ([one], v) => vec![(one.as_str(), v)],
            (many, GValue::List(vs)) => many.iter().map(String::as_str).zip(vs).collect(),
            (many, v) => many.iter().map(|p| (p.as_str(), v)).take(1).collect(),
        }
    }

    /// Cypher property map matching a node whose key is the value `v` (a parameter or variable):
    /// `` {`isbn`: key} `` or `` {`isbn`: key[0], `lang`: key[1]} ``.
    pub fn pattern(&self, v: &str) -> String {
        let parts: Vec<String> = match self.props.as_slice() {
            [one] => vec![format!("{}: {v}", ident(one))],
            many => many
                .iter()
                .enumerate()
                .map(|(i, p)| format!("{}: {v}[{i}]", ident(p)))
                .collect(),
        };
        format!("{{{}}}", parts.join(", "))
    }

    /// Cypher expression of node `n`'s key value: `` n.`isbn` `` or `` [n.`isbn`, n.`lang`] ``.
    pub fn expr(&self, n: &str) -> String {
        match self.props.as_slice() {
            [one] => format!("{n}.{}", ident(one)),
            many => {
                let parts: Vec<String> = many.iter().map(|p| format!("{n}.{}", ident(p))).collect();
                format!("[{}]", parts.join(", "))
            }
        }
    }

    /// Cypher condition: node `n` lacks a part of its key.
    pub fn missing(&self, n: &str) -> String {
        let parts: Vec<String> = self
            .props
            .iter()
            .map(|p| format!("{n}.{} IS NULL", ident(p)))
            .collect();
        format!("({})", parts.join(" OR "))
    }
}

impl std::fmt::Display for NodeKey {
    /// `isbn`, or `[isbn, lang]` for a composite key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.props.as_slice() {
            [one] => f.write_str(one),
            many => write!(f, "[{}]", many.join(", ")),
        }
    }
}

/// Every label's key: `[graph] keys`, else `key_property`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMap {
    default: NodeKey,
    labels: BTreeMap<String, NodeKey>,
    /// Every key property, each once, in name order (see `union`).
    union: Vec<String>,
}

impl KeyMap {
    pub fn new(default: &str, labels: &BTreeMap<String, KeySpec>) -> KeyMap {
        let default = NodeKey::new(vec![default.to_string()]);
        let labels: BTreeMap<String, NodeKey> = labels
            .iter()
            .map(|(l, k)| (l.clone(), NodeKey::new(k.props())))
            .collect();
        let mut union: Vec<String> = std::iter::once(&default)
            .chain(labels.values())
            .flat_map(|k| k.props.iter().cloned())
            .collect();
        union.sort();
        union.dedup();
        KeyMap {
            default,
            labels,
            union,
        }
    }

    /// The key of `label`.
    pub fn of(&self, label: &str) -> &NodeKey {
        self.labels.get(label).unwrap_or(&self.default)
    }

    /// The labels with a key of their own (not `key_property`).
    pub fn labelled(&self) -> &BTreeMap<String, NodeKey> {
        &self.labels
    }

    /// Every property that is part of some label's key, each once, in name order.
    pub fn union(&self) -> &[String] {
        &self.union
    }

    /// Cypher list of node `n`'s values of `union()`, for nodes whose label is not known before
    /// the query (neighbours, relationship ends): `` [n.`id`, n.`isbn`] ``.
    pub fn union_expr(&self, n: &str) -> String {
        let parts: Vec<String> = self
            .union()
            .iter()
            .map(|p| format!("{n}.{}", ident(p)))
            .collect();
        format!("[{}]", parts.join(", "))
    }

    /// The key value of a `label` node from its `union_expr` values (called per row read, so
    /// it looks the parts up in the sorted union instead of building a map).
    pub fn from_union(&self, label: &str, values: &[GValue]) -> Option<GValue> {
        compose(&self.of(label).props, |p| {
            values.get(self.union.binary_search(p).ok()?)
        })
    }
}

/// A key value from its properties' values (`get`): the value itself for one property, a list
/// for a composite key; `None` when a part is missing or null.
fn compose<'a>(props: &[String], get: impl Fn(&String) -> Option<&'a GValue>) -> Option<GValue> {
    let part = |p: &String| get(p).filter(|v| !matches!(v, GValue::Null)).cloned();
    match props {
        [one] => part(one),
        many => many
            .iter()
            .map(part)
            .collect::<Option<Vec<_>>>()
            .map(GValue::List),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> KeyMap {
        KeyMap::new(
            "id",
            &BTreeMap::from([
                ("Book".to_string(), KeySpec::One("isbn".into())),
                (
                    "Edition".to_string(),
                    KeySpec::Many(vec!["isbn".into(), "lang".into()]),
                ),
            ]),
        )
    }

    #[test]
    fn keys_per_label_with_the_default_for_the_rest() {
        let m = map();
        assert_eq!(m.of("Book").to_string(), "isbn");
        assert_eq!(m.of("Edition").to_string(), "[isbn, lang]");
        assert_eq!(m.of("Other").to_string(), "id");
        assert_eq!(m.union(), vec!["id", "isbn", "lang"]);
    }

    #[test]
    fn a_composite_value_is_the_list_of_its_parts_and_a_missing_part_is_no_key() {
        let m = map();
        let t = |s: &str| GValue::Text(s.into());
        let props = BTreeMap::from([("isbn".to_string(), t("1")), ("lang".to_string(), t("en"))]);
        assert_eq!(
            m.of("Edition").value(&props),
            Some(GValue::List(vec![t("1"), t("en")]))
        );
        assert_eq!(m.of("Book").value(&props), Some(t("1")));
        assert_eq!(m.of("Other").value(&props), None);
        let union = [GValue::Null, t("1"), t("en")];
        assert_eq!(
            m.from_union("Edition", &union),
            Some(GValue::List(vec![t("1"), t("en")]))
        );
        assert_eq!(m.from_union("Other", &union), None);
        assert_eq!(m.of("Edition").pattern("k"), "{`isbn`: k[0], `lang`: k[1]}");
        assert_eq!(m.of("Edition").expr("n"), "[n.`isbn`, n.`lang`]");
        assert_eq!(m.of("Book").missing("n"), "(n.`isbn` IS NULL)");
    }
}
