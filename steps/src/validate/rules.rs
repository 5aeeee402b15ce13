//! `config/validation.toml`: business rules checked before CERT is touched (built-in kinds) or
//! inside the CERT load transaction (`sql`), each with a severity.

use regex::Regex;
use serde::{Deserialize, Serialize};
use std::path::Path;
use wf_stores::config_at::{key, syntax_error, Problem, Seg};

/// How bad a violation is: `error` and `critical` fail the gate, `warning` is reported and loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
    Critical,
}

impl Severity {
    pub fn blocks(self) -> bool {
        self >= Severity::Error
    }
}

/// The rule kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    NotNull,
    Range,
    Regex,
    Allowed,
    /// `a <= b` for two date/time columns of one table.
    DateOrder,
    /// Every `parent` key has at least `min` (at most `max`) rows in `child`.
    RowCount,
    /// A query returning the violating rows, run in the load transaction.
    Sql,
}

/// One rule as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub name: String,
    pub kind: Kind,
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// `store.table.column` (not_null, range, regex, allowed).
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default)]
    pub values: Vec<String>,
    /// date_order: `store.table.column` that must be <= `b` (same table).
    #[serde(default)]
    pub a: Option<String>,
    #[serde(default)]
    pub b: Option<String>,
    /// row_count: the parent key column and the child column that references it.
    #[serde(default)]
    pub parent: Option<String>,
    #[serde(default)]
    pub child: Option<String>,
    /// sql: the store it runs in, and the query.
    #[serde(default)]
    pub store: Option<String>,
    #[serde(default)]
    pub query: Option<String>,
}

fn default_severity() -> Severity {
    Severity::Error
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rules: Vec<RuleSpec>,
}

/// A checked rule (regexes compiled).
#[derive(Debug, Clone)]
pub struct Rule {
    pub spec: RuleSpec,
    pub regex: Option<Regex>,
}

/// The parsed, checked rules.
#[derive(Debug, Clone, Default)]
pub struct ValidationRules {
    pub rules: Vec<Rule>,
}

fn bad(file: &Path, msg: String) -> String {
    format!("validation rules {}: {msg}", file.display())
}

fn is_field(s: &Option<String>) -> bool {
    s.as_deref()
        .is_some_and(|f| matches!(f.split('.').count(), 3 | 4) && !f.split('.').any(str::is_empty))
}

impl ValidationRules {
    pub fn parse(text: &str, file: &Path) -> Result<ValidationRules, String> {
        let f: RulesFile = toml::from_str(text).map_err(|e| bad(file, syntax_error(text, &e)))?;
        let mut rules = Vec::new();
        for (i, spec) in f.rules.into_iter().enumerate() {
            let n = format!("rule {} ({})", i + 1, spec.name);
            let bad = |at: &str, msg: String| {
                let at = vec![key("rules"), Seg::Index(i), key(at)];
                bad(file, Problem::at(at, msg).with_line(text))
            };
            let need = |ok: bool, what: &str| {
                if ok {
                    Ok(())
                } else {
                    Err(bad("kind", format!("{n}: {:?} needs {what}", spec.kind)))
                }
            };
            match spec.kind {
                Kind::NotNull => need(is_field(&spec.field), "field = \"store.table.column\"")?,
                Kind::Range => need(
                    is_field(&spec.field) && (spec.min.is_some() || spec.max.is_some()),
                    "field and min and/or max",
                )?,
                Kind::Regex => need(
                    is_field(&spec.field) && spec.pattern.is_some(),
                    "field and pattern",
                )?,
                Kind::Allowed => need(
                    is_field(&spec.field) && !spec.values.is_empty(),
                    "field and values",
                )?,
                Kind::DateOrder => {
                    need(
                        is_field(&spec.a) && is_field(&spec.b),
                        "a and b (store.table.column)",
                    )?;
                    let table = |f: &Option<String>| {
                        f.as_deref()
                            .and_then(|f| f.rsplit_once('.'))
                            .map(|(t, _)| t.to_string())
                    };
                    need(
                        table(&spec.a) == table(&spec.b),
                        "a and b in the same table",
                    )?;
                }
                Kind::RowCount => need(
                    is_field(&spec.parent)
                        && is_field(&spec.child)
                        && (spec.min.is_some() || spec.max.is_some()),
                    "parent, child and min and/or max",
                )?,
                Kind::Sql => need(
                    spec.store.is_some() && spec.query.is_some(),
                    "store and query",
                )?,
            }
            let regex = match &spec.pattern {
                Some(p) => Some(
                    Regex::new(p).map_err(|e| bad("pattern", format!("{n}: bad pattern: {e}")))?,
                ),
                None => None,
            };
            rules.push(Rule { spec, regex });
        }
        Ok(ValidationRules { rules })
    }

    pub fn load(file: &Path) -> Result<ValidationRules, String> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| bad(file, format!("cannot read it ({e})")))?;
        ValidationRules::parse(&text, file)
    }

    /// The `sql` rules of `store`, for the load transaction.
    pub fn sql_checks(&self, store: &str) -> Vec<wf_stores::load::SqlCheck> {
        self.rules
            .iter()
            .filter(|r| r.spec.kind == Kind::Sql && r.spec.store.as_deref() == Some(store))
            .map(|r| wf_stores::load::SqlCheck {
                name: r.spec.name.clone(),
                query: r.spec.query.clone().unwrap_or_default(),
                blocking: r.spec.severity.blocks(),
                severity: format!("{:?}", r.spec.severity).to_lowercase(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_validation_rules_are_valid() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/validation.toml"
        ));
        let r = ValidationRules::load(path).unwrap();
        assert!(r.rules.iter().any(|r| r.spec.kind == Kind::Sql));
        assert_eq!(r.sql_checks("hcp1").len(), 1);
    }

    #[test]
    fn incomplete_rules_are_named() {
        let e = ValidationRules::parse(
            "[[rules]]\nname = \"x\"\nkind = \"range\"\nfield = \"a.b.c\"\n",
            Path::new("v.toml"),
        )
        .unwrap_err();
        assert!(
            e.contains("v.toml") && e.contains("rule 1 (x)") && e.contains("min"),
            "{e}"
        );
        let e = ValidationRules::parse(
            "[[rules]]\nname = \"x\"\nkind = \"nope\"\n",
            Path::new("v.toml"),
        )
        .unwrap_err();
        assert!(e.contains("v.toml: line 3: "), "{e}");
        let two = "[[rules]]\nname = \"a\"\nkind = \"not_null\"\nfield = \"a.b.c\"\n\n[[rules]]\nname = \"x\"\nkind = \"range\"\nfield = \"a.b.c\"\n";
        let e = ValidationRules::parse(two, Path::new("v.toml")).unwrap_err();
        assert!(e.contains("v.toml: line 8: rule 2 (x)"), "{e}");
    }
}
