//! Where in a TOML file a setting is, so a validation error can name its line even when the same
//! value appears several times (the spans come from `toml`'s own parser, not a text search).

use toml::de::{DeTable, DeValue};

/// One step of a setting's path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A validation problem and the setting it is about (empty path: the file as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub at: Vec<Seg>,
    pub message: String,
}

impl Problem {
    /// A problem with the setting at `at`.
    pub fn at(at: Vec<Seg>, message: impl Into<String>) -> Problem {
        Problem {
            at,
            message: message.into(),
        }
    }

    /// The message, prefixed with `line N: ` when `text` has the setting.
    pub fn with_line(&self, text: &str) -> String {
        match line_of(text, &self.at) {
            Some(n) => format!("line {n}: {}", self.message),
            None => self.message.clone(),
        }
    }
}

/// `key` as a path step.
pub fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

/// The 1-based line where the value at `at` starts in `text`; when the path ends early (a setting
/// left out), the line of the deepest part that is there. None when `text` does not parse.
pub fn line_of(text: &str, at: &[Seg]) -> Option<usize> {
    let doc = DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let mut span = None;
    let mut value: Option<&DeValue> = None;
    for seg in at {
        let next = match (seg, value) {
            (Seg::Key(k), None) => table.iter().find(|(n, _)| n.get_ref() == k).map(|e| e.1),
            (Seg::Key(k), Some(DeValue::Table(t))) => {
                table = t;
                table.iter().find(|(n, _)| n.get_ref() == k).map(|e| e.1)
            }
            (Seg::Index(i), Some(DeValue::Array(a))) => a.get(*i),
            _ => None,
        };
        let Some(next) = next else { break };
        span = Some(next.span());
        value = Some(next.get_ref());
    }
    Some(line_at(text, span?.start))
}

/// A TOML syntax or shape error as one line: `line N: message`.
pub fn syntax_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(s) => format!("line {}: {}", line_at(text, s.start), e.message()),
        None => e.message().to_string(),
    }
}

/// The 1-based line of byte `at` of `text`.
fn line_at(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_nested_keys_array_entries_and_repeated_values() {
        let text = concat!(
            "district_column = \"d\"\n",
            "reference_tables = [\n  \"a.b\",\n  \"a.b\",\n]\n",
            "[[stores]]\nname = \"x\"\n",
            "[[stores]]\nname = \"x\"\n",
            "[graph]\nkeys = { Book = \"x\" }\n",
        );
        let at = |p: Vec<Seg>| line_of(text, &p);
        assert_eq!(at(vec![key("district_column")]), Some(1));
        assert_eq!(at(vec![key("reference_tables"), Seg::Index(1)]), Some(4));
        assert_eq!(at(vec![key("stores"), Seg::Index(1), key("name")]), Some(9));
        assert_eq!(at(vec![key("graph"), key("keys"), key("Book")]), Some(11));
        assert_eq!(
            at(vec![key("graph"), key("nope")]),
            Some(10),
            "left out: its table"
        );
        assert_eq!(at(vec![key("nope")]), None);
        assert_eq!(at(vec![]), None);
        let p = Problem::at(vec![key("stores"), Seg::Index(0), key("name")], "dup");
        assert_eq!(p.with_line(text), "line 7: dup");
        let e = toml::from_str::<toml::Table>("a = 1\nb = = 2\n").unwrap_err();
        assert!(syntax_error("a = 1\nb = = 2\n", &e).starts_with("line 2: "));
    }
}
