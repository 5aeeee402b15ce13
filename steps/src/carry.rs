//! Column types wf cannot carry from PROD to CERT. Values travel as their text form, which every
//! PostgreSQL type has; what does not travel is what some values *point at*: an `oid` names an
//! object of PROD's cluster (a large object, usually, whose contents wf does not copy), a `reg*`
//! value a catalog object by its PROD oid, and `pg_lsn`, `xid`, `tid`, snapshots positions inside
//! PROD's server. Such a column is named by `wf analyze` and refused before a run is created,
//! unless an anonymization rule replaces its values (`null` or `redact`).

use crate::anonymize::rules::{Rules, Strategy};
use wf_stores::schema::StoreSchema;

/// Why values of `data_type` (as `format_type` spells it, arrays included) cannot be carried.
pub fn uncarriable(data_type: &str) -> Option<&'static str> {
    let base = data_type.trim_end_matches("[]");
    match base {
        "oid" => Some("its values name objects of PROD's cluster (large objects, usually), which wf does not copy"),
        "regclass" | "regtype" | "regproc" | "regprocedure" | "regoper" | "regoperator"
        | "regconfig" | "regdictionary" | "regnamespace" | "regrole" | "regcollation" => {
            Some("its values name PROD catalog objects, which CERT may not have")
        }
        "pg_lsn" | "xid" | "xid8" | "cid" | "tid" | "txid_snapshot" | "pg_snapshot" => {
            Some("its values are positions inside PROD's server (WAL, transactions, tuples), meaningless in CERT")
        }
        _ => None,
    }
}

/// One line per column that cannot be carried and no rule replaces, naming it and what to do.
pub fn uncarried(schemas: &[StoreSchema], rules: Option<&Rules>) -> Vec<String> {
    let mut out = Vec::new();
    for t in schemas.iter().flat_map(|s| &s.tables) {
        for c in &t.columns {
            let Some(why) = uncarriable(&c.data_type) else {
                continue;
            };
            let field = format!("{}.{}", t.id(), c.name);
            let replaced = rules
                .and_then(|r| r.rule_for(&field, &[]))
                .is_some_and(|r| matches!(r.spec.strategy, Strategy::Null | Strategy::Redact));
            if !replaced {
                out.push(format!(
                    "cannot carry {field} ({}): {why}; give it an anonymization rule with strategy = \"null\" (or \"redact\")",
                    c.data_type
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::uncarriable;

    #[test]
    fn pointers_into_prod_are_named_and_values_are_not() {
        for t in ["oid", "regclass", "oid[]", "pg_lsn", "txid_snapshot", "tid"] {
            assert!(uncarriable(t).is_some(), "{t}");
        }
        for t in [
            "integer",
            "text",
            "bytea",
            "\"Kennzahl_é\"",
            "point",
            "jsonb[]",
            "tsvector",
        ] {
            assert!(uncarriable(t).is_none(), "{t}");
        }
    }
}
