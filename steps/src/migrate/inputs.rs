//! What the anonymizer is told of each staged file: the columns that must stay unique (a
//! table's one-column keys, every part of a graph label's key) and the rules its columns take
//! from elsewhere (an FK column its parent's, a relationship end its node key's).

use super::{ExtractOut, GraphStaged, MigrateParams, StagedTable};
use crate::anonymize::TableInput;
use std::collections::BTreeMap;
use wf_stores::graph::stage::GraphFileKind;
use wf_stores::Config;

/// What anonymize needs of one extracted table: its file and the columns that must keep distinct
/// values distinct (see `unique_columns`).
pub(crate) fn table_input(ex: &ExtractOut, f: &StagedTable, p: &MigrateParams) -> TableInput {
    let table = ex
        .schemas
        .iter()
        .flat_map(|s| &s.tables)
        .find(|t| t.id() == f.table);
    let unique = table.map(unique_columns).unwrap_or_default();
    TableInput {
        table: f.table.clone(),
        file: f.path.clone(),
        sha256: Some(f.sha256.clone()),
        unique,
        rule_as: table.map(|t| fk_aliases(t, &p.config)).unwrap_or_default(),
    }
}

/// Every column of `t`'s primary key and unique constraints, once. A rule must map distinct
/// values of each to distinct outputs (colliding text gets a suffix): then a one-column key stays
/// unique, and so does a composite one whichever of its parts a rule changes.
pub(crate) fn unique_columns(t: &wf_stores::schema::Table) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let keys = std::iter::once(&t.primary_key).chain(t.uniques.iter().map(|u| &u.columns));
    for c in keys.flatten() {
        if !out.contains(c) {
            out.push(c.clone());
        }
    }
    out
}

/// Rule aliases for a table's foreign keys (declared and virtual): an FK column with no exact
/// rule of its own takes its parent column's rule (part by part for a composite FK; a column in
/// several FKs takes its one-column FK's parent first), so anonymized keys still join.
fn fk_aliases(t: &wf_stores::schema::Table, cfg: &Config) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut fks: Vec<_> = t.foreign_keys.iter().collect();
    fks.sort_by_key(|f| f.columns.len());
    for fk in fks {
        for (c, parent) in fk.columns.iter().zip(&fk.ref_columns) {
            out.entry(c.clone())
                .or_insert_with(|| format!("{}.{parent}", fk.ref_table));
        }
    }
    for v in &cfg.virtual_fks {
        if let Some((table, col)) = v.from.rsplit_once('.') {
            if table == t.id() {
                out.insert(col.to_string(), v.to.clone());
            }
        }
    }
    out
}

/// The anonymizer's view of a graph file: the key is unique per label; relationship ends take the
/// rule of their nodes' key; linked properties take their relational column's rule.
pub(crate) fn graph_input(g: &wf_stores::graph::GraphConfig, f: &GraphStaged) -> TableInput {
    let keys = g.key_map();
    let mut rule_as = BTreeMap::new();
    let mut unique = Vec::new();
    match &f.kind {
        GraphFileKind::Nodes { label } => {
            // Each part of the key maps distinct originals to distinct outputs (collisions get
            // a suffix), so a composite key stays unique as a whole whichever parts a rule
            // changes: two editions never merge into one in CERT.
            unique.extend(keys.of(label).props().iter().cloned());
            for (from, to) in g.link_aliases() {
                if let Some(prop) = from.strip_prefix(&format!("{}.{label}.", g.name)) {
                    rule_as.insert(prop.to_string(), to);
                }
            }
        }
        GraphFileKind::Rels { start, end, .. } => {
            // Each end column takes the rule of its node's key part, so ends still match.
            for (col, label) in [("_start", start), ("_end", end)] {
                let key = keys.of(label);
                for p in key.props() {
                    let name = if key.is_composite() {
                        format!("{col}.{p}")
                    } else {
                        col.to_string()
                    };
                    rule_as.insert(name, format!("{}.{label}.{p}", g.name));
                }
            }
        }
    }
    TableInput {
        table: f.staged.table.clone(),
        file: f.staged.path.clone(),
        sha256: Some(f.staged.sha256.clone()),
        unique,
        rule_as,
    }
}

/// True when a column of `t`'s keys (see `inputs::unique_columns`) holds text: its anonymized
/// values may collide, and the fixes must see it before any table under the same rule is written.
pub(crate) fn unique_text(t: &wf_stores::schema::Table, kind: wf_stores::StoreKind) -> bool {
    unique_columns(t).iter().any(|c| {
        t.column(c).is_some_and(|c| {
            wf_stores::staging::ColType::of(kind, &c.data_type) == wf_stores::staging::ColType::Text
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(table: &str, kind: GraphFileKind) -> GraphStaged {
        GraphStaged {
            staged: StagedTable {
                table: table.into(),
                path: "x.arrow".into(),
                rows: 0,
                bytes: 0,
                sha256: String::new(),
            },
            kind,
        }
    }

    #[test]
    fn every_key_column_of_a_table_stays_unique_and_composite_fks_take_their_parents_rules() {
        use wf_stores::schema::{ForeignKey, Table, Unique};
        let fk = |cols: &[&str], parent: &str, refs: &[&str]| ForeignKey {
            name: String::new(),
            columns: cols.iter().map(|c| c.to_string()).collect(),
            ref_table: parent.into(),
            ref_columns: refs.iter().map(|c| c.to_string()).collect(),
            deferrable: false,
            is_virtual: false,
        };
        let t = Table {
            store: "hcp1".into(),
            name: "enrollments".into(),
            columns: Vec::new(),
            primary_key: vec!["student_code".into(), "course".into()],
            uniques: vec![Unique {
                name: String::new(),
                columns: vec!["course".into(), "seat".into()],
                partial: false,
            }],
            foreign_keys: vec![
                fk(
                    &["student_code", "school"],
                    "ids.students",
                    &["code", "school"],
                ),
                fk(&["school"], "ids.schools", &["id"]),
            ],
            row_count: 0,
        };
        assert_eq!(unique_columns(&t), ["student_code", "course", "seat"]);
        let cfg = Config::parse("", std::path::Path::new("wf.toml")).unwrap();
        let aliases = fk_aliases(&t, &cfg);
        assert_eq!(aliases["student_code"], "ids.students.code");
        assert_eq!(
            aliases["school"], "ids.schools.id",
            "the one-column FK first"
        );
    }

    #[test]
    fn every_part_of_a_graph_key_stays_unique_and_ends_take_their_parts_rules() {
        let text = [
            "[graph]",
            "name = \"lib\"",
            "kind = \"embedded\"",
            "prod = \"p\"",
            "cert = \"c\"",
            "district_labels = [\"Book\"]",
            "keys = { Book = \"isbn\", Edition = [\"isbn\", \"lang code\"] }",
        ]
        .join("\n");
        let cfg = Config::parse(&text, std::path::Path::new("wf.toml")).unwrap();
        let g = cfg.graph.as_ref().unwrap();
        let node = |label: &str| GraphFileKind::Nodes {
            label: label.into(),
        };
        let edition = graph_input(g, &staged("lib.Edition", node("Edition")));
        assert_eq!(edition.unique, ["isbn", "lang code"]);
        let book = graph_input(g, &staged("lib.Book", node("Book")));
        assert_eq!(book.unique, ["isbn"]);
        let rel = GraphFileKind::Rels {
            rel_type: "HAS".into(),
            start: "Book".into(),
            end: "Edition".into(),
        };
        let has = graph_input(g, &staged("lib.Book-HAS-Edition", rel));
        assert!(has.unique.is_empty());
        assert_eq!(has.rule_as["_start"], "lib.Book.isbn");
        assert_eq!(has.rule_as["_end.lang code"], "lib.Edition.lang code");
    }
}
