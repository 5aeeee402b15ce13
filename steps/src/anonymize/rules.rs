//! `config/anonymization.toml`: which fields get which strategy. Exact fields win over patterns,
//! patterns over value detectors; within a kind, the first rule in the file wins.

use super::detect::Detector;
use super::strategy::FakeKind;
use regex::Regex;
use serde::Deserialize;
use std::path::Path;
use wf_stores::config_at::{key, syntax_error, Problem, Seg};

/// What a rule does to a field's values.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    Hmac,
    Fake,
    ShiftDate,
    Mask,
    Redact,
    Null,
    Keep,
}

/// One rule as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Exact field: `store.table.column` (or `sp.Label.property`).
    pub field: Option<String>,
    /// Regex over `store.table.column`.
    pub pattern: Option<String>,
    /// A value detector: email, phone, ssn, street_address, person_name.
    pub detector: Option<Detector>,
    pub strategy: Strategy,
    /// For `fake`: which kind of value.
    pub kind: Option<FakeKind>,
    /// For `shift_date`: the column naming the entity whose dates move together (default: the field).
    pub entity: Option<String>,
    /// For `mask`: characters kept at the start.
    #[serde(default)]
    pub keep_prefix: usize,
    /// For `redact`: the replacement text (default `REDACTED`).
    pub value: Option<String>,
    /// The leak scan also compares this field's values with the originals of that field
    /// (`store.table.column`): for a column holding copies of another field's values.
    pub scan_as: Option<String>,
}

/// The whole rules file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    /// Environment variable holding the key (default `WF_ANON_KEY`).
    #[serde(default = "default_key_env")]
    pub key_env: String,
    /// `shift_date` moves dates by at most this many days either way (default 180).
    #[serde(default = "default_shift")]
    pub shift_days: u32,
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

fn default_key_env() -> String {
    "WF_ANON_KEY".into()
}

fn default_shift() -> u32 {
    180
}

/// A rule ready to match.
#[derive(Debug, Clone)]
pub struct Rule {
    pub index: usize,
    pub spec: RuleSpec,
    pattern: Option<Regex>,
}

impl Rule {
    /// How the rule is named in reports and errors.
    pub fn label(&self) -> String {
        let what = match (&self.spec.field, &self.spec.pattern, &self.spec.detector) {
            (Some(f), _, _) => format!("field {f}"),
            (_, Some(p), _) => format!("pattern {p}"),
            (_, _, Some(d)) => format!("detector {d:?}"),
            _ => "?".into(),
        };
        format!(
            "rule {} ({what} -> {:?})",
            self.index + 1,
            self.spec.strategy
        )
    }
}

/// The parsed, validated rules.
#[derive(Debug, Clone)]
pub struct Rules {
    pub key_env: String,
    pub shift_days: u32,
    pub rules: Vec<Rule>,
}

fn bad(file: &Path, msg: String) -> String {
    format!("anonymization rules {}: {msg}", file.display())
}

impl Rules {
    /// Parses and checks a rules file's text (`file` names it in messages).
    pub fn parse(text: &str, file: &Path) -> Result<Rules, String> {
        let f: RulesFile = toml::from_str(text).map_err(|e| bad(file, syntax_error(text, &e)))?;
        let mut rules = Vec::new();
        for (index, spec) in f.rules.into_iter().enumerate() {
            let n = index + 1;
            let bad = |at: &str, msg: String| {
                let at = vec![key("rules"), Seg::Index(index), key(at)];
                bad(file, Problem::at(at, msg).with_line(text))
            };
            let selectors = [
                spec.field.is_some(),
                spec.pattern.is_some(),
                spec.detector.is_some(),
            ];
            if selectors.iter().filter(|s| **s).count() != 1 {
                return Err(bad(
                    "field",
                    format!("rule {n} needs exactly one of field, pattern, detector"),
                ));
            }
            if spec.strategy == Strategy::Fake && spec.kind.is_none() {
                return Err(bad(
                    "strategy",
                    format!("rule {n}: strategy fake needs a kind (first_name, email, …)"),
                ));
            }
            let pattern = match &spec.pattern {
                Some(p) => Some(
                    Regex::new(p)
                        .map_err(|e| bad("pattern", format!("rule {n}: bad pattern: {e}")))?,
                ),
                None => None,
            };
            rules.push(Rule {
                index,
                spec,
                pattern,
            });
        }
        Ok(Rules {
            key_env: f.key_env,
            shift_days: f.shift_days,
            rules,
        })
    }

    /// Reads a rules file.
    pub fn load(file: &Path) -> Result<Rules, String> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| bad(file, format!("cannot read it ({e})")))?;
        Rules::parse(&text, file)
    }

    /// True when a rule names `field` exactly.
    pub fn has_field(&self, field: &str) -> bool {
        self.rules
            .iter()
            .any(|r| r.spec.field.as_deref() == Some(field))
    }

    /// The rule for `field` (`store.table.column`), given what the detector found in its values.
    pub fn rule_for(&self, field: &str, detected: &[Detector]) -> Option<&Rule> {
        let exact = self
            .rules
            .iter()
            .find(|r| r.spec.field.as_deref() == Some(field));
        let pattern = || {
            self.rules
                .iter()
                .find(|r| r.pattern.as_ref().is_some_and(|p| p.is_match(field)))
        };
        let detector = || {
            self.rules.iter().find(|r| {
                r.spec
                    .detector
                    .as_ref()
                    .is_some_and(|d| detected.contains(d))
            })
        };
        exact.or_else(pattern).or_else(detector)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r#"
        [[rules]]
        field = "ids.students.email"
        strategy = "keep"
        [[rules]]
        pattern = "(?i)email$"
        strategy = "fake"
        kind = "email"
        [[rules]]
        detector = "ssn"
        strategy = "redact"
    "#;

    #[test]
    fn exact_beats_pattern_beats_detector() {
        let r = Rules::parse(RULES, Path::new("a.toml")).unwrap();
        assert_eq!(r.key_env, "WF_ANON_KEY");
        assert_eq!(
            r.rule_for("ids.students.email", &[]).unwrap().spec.strategy,
            Strategy::Keep
        );
        assert_eq!(
            r.rule_for("ids.staff.email", &[Detector::Ssn])
                .unwrap()
                .spec
                .strategy,
            Strategy::Fake
        );
        assert_eq!(
            r.rule_for("ids.staff.notes", &[Detector::Ssn])
                .unwrap()
                .spec
                .strategy,
            Strategy::Redact
        );
        assert!(r.rule_for("ids.staff.notes", &[]).is_none());
    }

    #[test]
    fn the_shipped_example_rules_are_valid() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/anonymization.toml"
        ));
        let r = Rules::load(path).unwrap();
        assert_eq!(r.key_env, "WF_ANON_KEY");
        assert!(r.rule_for("ids.students.email", &[]).is_some());
        assert_eq!(
            r.rule_for("ids.schools.name", &[]).unwrap().spec.strategy,
            Strategy::Keep
        );
    }

    #[test]
    fn malformed_rules_are_named() {
        let e = Rules::parse(
            "[[rules]]\nstrategy = \"fake\"\nfield = \"a.b.c\"\n",
            Path::new("a.toml"),
        )
        .unwrap_err();
        assert!(
            e.contains("a.toml") && e.contains("rule 1") && e.contains("kind"),
            "{e}"
        );
        let e = Rules::parse("[[rules]]\nstrategy = \"keep\"\n", Path::new("a.toml")).unwrap_err();
        assert!(e.contains("exactly one of"), "{e}");
    }

    #[test]
    fn rule_errors_name_the_line_of_the_setting() {
        let two = "[[rules]]\nfield = \"a.b.c\"\nstrategy = \"keep\"\n[[rules]]\nstrategy = \"keep\"\npattern = \"(\"\n";
        let e = Rules::parse(two, Path::new("a.toml")).unwrap_err();
        assert!(e.contains("a.toml: line 6: rule 2: bad pattern"), "{e}");
        let e = Rules::parse("[[rules]]\nstrategy = keep\n", Path::new("a.toml")).unwrap_err();
        assert!(e.contains("a.toml: line 2: "), "{e}");
    }
}
