//! How `wf select-districts` sizes the rows `follow_children` pulls in from a table without the
//! district column: the chain of followed FKs from that table up to one that has the column, all
//! in one store, counted per district with one joined query. Each FK's referenced columns are
//! unique, so every child row joins at most one parent and is counted once.

use crate::config::ColumnRef;
use crate::schema::{ForeignKey, StoreSchema, Table};

/// Followed FKs per chain at most (deeper chains are reported as not sized).
const MAX_DEPTH: usize = 4;

/// A chain of followed FKs: `links[0]` starts at the followed child table; the last link's
/// parent has the district column.
pub struct Chain<'a> {
    pub store: String,
    links: Vec<(&'a Table, &'a ForeignKey, &'a Table)>,
}

/// The chain for `follow_children` entry `f` (`follows` is the whole list); `None` when its table
/// has the district column (its rows are counted with the district's own); `Err` says why it
/// cannot be sized.
pub fn chain<'a>(
    f: &str,
    follows: &[String],
    schemas: &'a [StoreSchema],
    district: &str,
) -> Result<Option<Chain<'a>>, String> {
    let find = |id: &str| {
        schemas
            .iter()
            .flat_map(|s| &s.tables)
            .find(|t| t.id() == id)
    };
    let fk_at = |t: &'a Table, column: &str| {
        t.foreign_keys
            .iter()
            .find(|fk| fk.columns.first().map(String::as_str) == Some(column))
    };
    let r = ColumnRef::parse(f).ok_or("not store.table.column")?;
    let mut child = find(&r.table_id()).ok_or("no such table in PROD")?;
    if child.column(district).is_some() {
        return Ok(None);
    }
    let mut fk = fk_at(child, &r.column).ok_or("no foreign key starts at this column")?;
    let mut links = Vec::new();
    loop {
        let parent = find(&fk.ref_table)
            .ok_or_else(|| format!("{} is not a discovered table", fk.ref_table))?;
        if parent.store != child.store {
            return Err(format!(
                "it reaches {} in another store, which one query cannot join",
                parent.id()
            ));
        }
        links.push((child, fk, parent));
        if parent.column(district).is_some() {
            return Ok(Some(Chain {
                store: child.store.clone(),
                links,
            }));
        }
        if links.len() >= MAX_DEPTH {
            return Err(format!(
                "more than {MAX_DEPTH} followed FKs from a district table"
            ));
        }
        // The parent is itself pulled in as a followed child of its own parent.
        let Some(next) = parent.foreign_keys.iter().find(|p| {
            p.columns
                .first()
                .is_some_and(|c| follows.contains(&format!("{}.{c}", parent.id())))
        }) else {
            return Err(format!(
                "{} has no {district} column and is not pulled in by follow_children",
                parent.id()
            ));
        };
        child = parent;
        fk = next;
    }
}

impl Chain<'_> {
    /// `select district, count(*)` over the chain's joins, with `table` and `column` quoting.
    pub fn sql(
        &self,
        table: impl Fn(&str) -> String,
        column: impl Fn(&str) -> String,
        district: &str,
    ) -> String {
        let mut from = format!("{} t0", table(&self.links[0].0.name));
        for (i, (_, fk, parent)) in self.links.iter().enumerate() {
            let on: Vec<String> = fk
                .columns
                .iter()
                .zip(&fk.ref_columns)
                .map(|(c, p)| format!("t{i}.{} = t{}.{}", column(c), i + 1, column(p)))
                .collect();
            from.push_str(&format!(
                " join {} t{} on {}",
                table(&parent.name),
                i + 1,
                on.join(" and ")
            ));
        }
        let d = format!("t{}.{}", self.links.len(), column(district));
        format!("select cast({d} as text), count(*), cast(null as text) from {from} where {d} is not null group by 1")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreKind;
    use crate::schema::Column;

    fn table(store: &str, name: &str, cols: &[&str], fks: &[(&str, &str, &str)]) -> Table {
        Table {
            store: store.into(),
            name: name.into(),
            columns: cols
                .iter()
                .map(|c| Column {
                    name: c.to_string(),
                    data_type: "integer".into(),
                    nullable: false,
                    default: None,
                })
                .collect(),
            primary_key: vec!["id".into()],
            uniques: vec![],
            foreign_keys: fks
                .iter()
                .map(|(col, to, ref_col)| ForeignKey {
                    name: format!("{name}_{col}"),
                    columns: vec![col.to_string()],
                    ref_table: to.to_string(),
                    ref_columns: vec![ref_col.to_string()],
                    deferrable: false,
                    is_virtual: false,
                })
                .collect(),
            row_count: 0,
        }
    }

    fn schemas() -> Vec<StoreSchema> {
        let s = |store: &str, tables| StoreSchema {
            store: store.into(),
            kind: StoreKind::Sqlite,
            tables,
        };
        vec![
            s(
                "a",
                vec![
                    table("a", "students", &["id", "district_id"], &[]),
                    table(
                        "a",
                        "links",
                        &["id", "student_id"],
                        &[("student_id", "a.students", "id")],
                    ),
                    table(
                        "a",
                        "notes",
                        &["id", "link_id"],
                        &[("link_id", "a.links", "id")],
                    ),
                    table("a", "codes", &["id"], &[]),
                    table(
                        "a",
                        "uses",
                        &["id", "code_id"],
                        &[("code_id", "a.codes", "id")],
                    ),
                    table("a", "far", &["id", "s"], &[("s", "b.people", "id")]),
                ],
            ),
            s("b", vec![table("b", "people", &["id", "district_id"], &[])]),
        ]
    }

    #[test]
    fn chains_follow_followed_fks_up_to_a_district_table_in_one_store() {
        let schemas = schemas();
        let follows: Vec<String> = ["a.links.student_id", "a.notes.link_id"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let found = chain("a.notes.link_id", &follows, &schemas, "district_id")
            .expect("sized")
            .expect("a chain");
        let q = |n: &str| format!("\"{n}\"");
        assert_eq!(
            found.sql(q, q, "district_id"),
            "select cast(t2.\"district_id\" as text), count(*), cast(null as text) from \"notes\" t0 \
             join \"links\" t1 on t0.\"link_id\" = t1.\"id\" join \"students\" t2 on t1.\"student_id\" = t2.\"id\" \
             where t2.\"district_id\" is not null group by 1"
        );
        assert!(chain("a.students.id", &follows, &schemas, "district_id")
            .expect("district table")
            .is_none());
    }

    #[test]
    fn what_cannot_be_sized_says_why() {
        let schemas = schemas();
        let why = |f: &str| match chain(f, &[f.to_string()], &schemas, "district_id") {
            Err(e) => e,
            Ok(_) => panic!("{f} was sized"),
        };
        assert!(why("a.uses.code_id")
            .contains("a.codes has no district_id column and is not pulled in"));
        assert!(why("a.far.s").contains("another store"));
        assert!(why("a.notes.id").contains("no foreign key starts"));
        assert!(why("a.nothing.x").contains("no such table"));
    }
}
