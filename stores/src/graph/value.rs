//! Graph property values: what Bolt and the embedded graph carry, with one JSON form (dates tagged)
//! used by the embedded file, for lists and maps in Arrow, and as the text of a node key.

use chrono::{NaiveDate, NaiveDateTime};
use std::collections::BTreeMap;

/// A property value.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum GValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Date(NaiveDate),
    /// A datetime in UTC (servers differ on offsets: ArcadeDB returns them as UTC local times).
    DateTime(NaiveDateTime),
    List(Vec<GValue>),
    Map(BTreeMap<String, GValue>),
}

const DATETIME_FMT: &str = "%Y-%m-%dT%H:%M:%S%.f";

impl GValue {
    /// The kind name used in discovery and in the staging files' `wf.type`.
    pub fn kind(&self) -> &'static str {
        match self {
            GValue::Null => "null",
            GValue::Bool(_) => "boolean",
            GValue::Int(_) => "integer",
            GValue::Float(_) => "float",
            GValue::Text(_) => "string",
            GValue::Date(_) => "date",
            GValue::DateTime(_) => "datetime",
            GValue::List(_) => "list",
            GValue::Map(_) => "map",
        }
    }

    /// JSON form: dates as `{"$date": "2020-01-31"}`, datetimes as `{"$datetime": "…T…"}`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            GValue::Null => J::Null,
            GValue::Bool(b) => J::Bool(*b),
            GValue::Int(i) => J::from(*i),
            GValue::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            GValue::Text(s) => J::String(s.clone()),
            GValue::Date(d) => serde_json::json!({ "$date": d.format("%Y-%m-%d").to_string() }),
            GValue::DateTime(d) => {
                serde_json::json!({ "$datetime": d.format(DATETIME_FMT).to_string() })
            }
            GValue::List(l) => J::Array(l.iter().map(GValue::to_json).collect()),
            GValue::Map(m) => J::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
        }
    }

    /// Reads the JSON form back.
    pub fn from_json(v: &serde_json::Value) -> GValue {
        use serde_json::Value as J;
        match v {
            J::Null => GValue::Null,
            J::Bool(b) => GValue::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => GValue::Int(i),
                None => GValue::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            J::String(s) => GValue::Text(s.clone()),
            J::Array(a) => GValue::List(a.iter().map(GValue::from_json).collect()),
            J::Object(o) => {
                if o.len() == 1 {
                    if let Some(d) = o.get("$date").and_then(|d| d.as_str()) {
                        if let Some(d) = parse_date(d) {
                            return GValue::Date(d);
                        }
                    }
                    if let Some(d) = o.get("$datetime").and_then(|d| d.as_str()) {
                        if let Some(d) = parse_datetime(d) {
                            return GValue::DateTime(d);
                        }
                    }
                }
                GValue::Map(
                    o.iter()
                        .map(|(k, v)| (k.clone(), GValue::from_json(v)))
                        .collect(),
                )
            }
        }
    }

    /// A node key as text (its JSON form): 42 and "42" stay different keys.
    pub fn key_text(&self) -> String {
        self.to_json().to_string()
    }

    /// Parses `key_text` back.
    pub fn from_key_text(text: &str) -> GValue {
        serde_json::from_str(text)
            .map(|j| GValue::from_json(&j))
            .unwrap_or_else(|_| GValue::Text(text.to_string()))
    }

    /// The value as a staging cell's text, for kinds held as text in Arrow.
    pub fn staging_text(&self) -> String {
        match self {
            GValue::Text(s) => s.clone(),
            GValue::Date(d) => d.format("%Y-%m-%d").to_string(),
            GValue::DateTime(d) => d.format(DATETIME_FMT).to_string(),
            other => other.to_json().to_string(),
        }
    }

    /// Whether a Bolt server stores the value as a property as it is: scalars, and lists of one
    /// scalar kind. Neo4j refuses maps, nested lists, lists of mixed kinds and nulls in lists.
    pub fn is_portable(&self) -> bool {
        match self {
            GValue::Map(_) => false,
            GValue::List(items) => {
                let mut kinds = items.iter().map(|v| match v {
                    GValue::Map(_) | GValue::List(_) | GValue::Null => None,
                    other => Some(other.kind()),
                });
                match kinds.next() {
                    None => true,
                    Some(None) => false,
                    Some(Some(first)) => kinds.all(|k| k == Some(first)),
                }
            }
            _ => true,
        }
    }

    /// The value as `[graph] maps = "json"` stores it: an unportable value as its JSON text.
    pub fn portable(self) -> GValue {
        if self.is_portable() {
            self
        } else {
            GValue::Text(self.to_json().to_string())
        }
    }

    /// The value of a text staging cell whose column has source kind `kind`.
    pub fn from_staging_text(kind: &str, text: &str) -> Result<GValue, String> {
        match kind {
            "string" => Ok(GValue::Text(text.to_string())),
            "date" => parse_date(text)
                .map(GValue::Date)
                .ok_or_else(|| format!("`{text}` is not a date (YYYY-MM-DD)")),
            "datetime" => parse_datetime(text)
                .map(GValue::DateTime)
                .ok_or_else(|| format!("`{text}` is not a datetime (YYYY-MM-DDTHH:MM:SS)")),
            _ => serde_json::from_str::<serde_json::Value>(text)
                .map(|j| GValue::from_json(&j))
                .map_err(|e| format!("`{text}` is not JSON ({e})")),
        }
    }
}

fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.get(..10)?, "%Y-%m-%d").ok()
}

fn parse_datetime(s: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(s, DATETIME_FMT)
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
        .ok()
}

/// The staging kind of a column that saw values of `kinds` (nulls ignored): one kind stays itself,
/// integers with floats become float, anything else mixed is held as JSON.
pub fn column_kind<'a>(kinds: impl IntoIterator<Item = &'a str>) -> &'static str {
    let mut seen: Vec<&str> = kinds.into_iter().filter(|k| *k != "null").collect();
    seen.sort_unstable();
    seen.dedup();
    match seen.as_slice() {
        [] => "string",
        ["boolean"] => "boolean",
        ["integer"] => "integer",
        ["float"] | ["float", "integer"] => "float",
        ["string"] => "string",
        ["date"] => "date",
        ["datetime"] => "datetime",
        _ => "json",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_every_kind() {
        let d = NaiveDate::from_ymd_opt(2021, 3, 4).unwrap();
        let values = vec![
            GValue::Null,
            GValue::Bool(true),
            GValue::Int(-7),
            GValue::Float(2.5),
            GValue::Text("x \"y\"\n".into()),
            GValue::Date(d),
            GValue::DateTime(d.and_hms_milli_opt(5, 6, 7, 890).unwrap()),
            GValue::List(vec![GValue::Text("a".into()), GValue::Text("b".into())]),
            GValue::Map(BTreeMap::from([("k".to_string(), GValue::Int(1))])),
        ];
        for v in values {
            assert_eq!(GValue::from_json(&v.to_json()), v);
            assert_eq!(GValue::from_key_text(&v.key_text()), v);
        }
        assert_ne!(
            GValue::Int(42).key_text(),
            GValue::Text("42".into()).key_text()
        );
    }

    #[test]
    fn maps_nested_and_mixed_lists_are_not_portable() {
        let t = |s: &str| GValue::Text(s.into());
        assert!(GValue::List(vec![t("a"), t("b")]).is_portable());
        assert!(GValue::List(vec![]).is_portable());
        assert!(!GValue::List(vec![t("a"), GValue::Int(1)]).is_portable());
        assert!(!GValue::List(vec![GValue::List(vec![])]).is_portable());
        assert!(!GValue::List(vec![GValue::Null]).is_portable());
        let m = GValue::Map(BTreeMap::from([("k".to_string(), GValue::Int(1))]));
        assert!(!m.is_portable());
        assert_eq!(m.portable(), t(r#"{"k":1}"#));
        assert_eq!(t("x").portable(), t("x"));
    }

    #[test]
    fn column_kinds_widen_as_documented() {
        assert_eq!(column_kind(["integer", "null", "integer"]), "integer");
        assert_eq!(column_kind(["integer", "float"]), "float");
        assert_eq!(column_kind(["string", "integer"]), "json");
        assert_eq!(column_kind(["null"]), "string");
        let v = GValue::from_staging_text("datetime", "2020-01-02T03:04:05").unwrap();
        assert_eq!(v.staging_text(), "2020-01-02T03:04:05");
        assert!(GValue::from_staging_text("date", "nope").is_err());
    }
}
