//! What the anonymization tests share: staging files written from rows, a column read back, a
//! table input, the key, the rules and a two-store fixture.
#![allow(dead_code)] // each test binary uses its part

use arrow_array::{Array, Int64Array, StringArray};
use std::path::{Path, PathBuf};
use wf_steps::anonymize::{AnonKey, TableInput};
use wf_stores::staging::{arrow_schema, open, ColType, StagedColumn, StagingWriter, Value};

pub enum V {
    I(i64),
    T(&'static str),
    S(String),
}

pub fn write(dir: &Path, table: &str, cols: &[(&str, ColType)], rows: Vec<Vec<V>>) -> PathBuf {
    let (store, name) = table.split_once('.').expect("store.table");
    let staged: Vec<StagedColumn> = cols
        .iter()
        .map(|(n, t)| StagedColumn {
            name: n.to_string(),
            source_type: "text".into(),
            col_type: *t,
        })
        .collect();
    let path = dir.join(format!("{table}.arrow"));
    let mut w =
        StagingWriter::create(&path, arrow_schema(store, name, &staged), 64).expect("writer");
    for row in rows {
        for (i, v) in row.iter().enumerate() {
            match v {
                V::I(x) => w.push(i, Value::Int(*x)),
                V::T(s) => w.push(i, Value::Text(s)),
                V::S(s) => w.push(i, Value::Text(s)),
            }
            .expect("push");
        }
        w.end_row().expect("row");
    }
    w.finish().expect("finish");
    path
}

pub fn column(path: &Path, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for b in open(path).expect("open") {
        let b = b.expect("batch");
        let c = b.column_by_name(name).expect("column");
        if let Some(a) = c.as_any().downcast_ref::<StringArray>() {
            out.extend((0..a.len()).map(|i| a.value(i).to_string()));
        } else if let Some(a) = c.as_any().downcast_ref::<Int64Array>() {
            out.extend((0..a.len()).map(|i| a.value(i).to_string()));
        }
    }
    out
}

/// A table to anonymize, with no aliased columns.
pub fn input(table: &str, file: PathBuf, unique: &[&str]) -> TableInput {
    TableInput {
        table: table.into(),
        file,
        sha256: None,
        unique: unique.iter().map(|u| u.to_string()).collect(),
        rule_as: Default::default(),
    }
}

pub const RULES: &str = r#"
[[rules]]
pattern = '^[a-z0-9]+\.[a-z_]+\.(id|student_id)$'
strategy = "hmac"
[[rules]]
pattern = '(?i)email$'
strategy = "fake"
kind = "email"
[[rules]]
field = "ids.students.first_name"
strategy = "fake"
kind = "first_name"
[[rules]]
field = "ids.students.birth_date"
strategy = "shift_date"
entity = "id"
[[rules]]
detector = "ssn"
strategy = "redact"
"#;

pub fn key() -> AnonKey {
    AnonKey::from_bytes(b"an-anonymization-test-key")
}

pub fn fixture(dir: &Path, remarks: &'static str) -> Vec<TableInput> {
    let students = write(
        dir,
        "ids.students",
        &[
            ("id", ColType::Int),
            ("first_name", ColType::Text),
            ("email", ColType::Text),
            ("birth_date", ColType::Text),
            ("remarks", ColType::Text),
        ],
        vec![
            vec![
                V::I(1000),
                V::T("Eve"),
                V::T("eve@north.example"),
                V::T("2019-03-01"),
                V::T("likes math"),
            ],
            vec![
                V::I(1001),
                V::T("Finn"),
                V::T("finn@north.example"),
                V::T("2018-05-12"),
                V::T(remarks),
            ],
            vec![
                V::I(1002),
                V::T("Gus"),
                V::T("gus@north.example"),
                V::T("2017-09-30"),
                V::T("ok"),
            ],
        ],
    );
    let contacts = write(
        dir,
        "hcp1.contacts",
        &[
            ("id", ColType::Int),
            ("student_id", ColType::Int),
            ("email", ColType::Text),
        ],
        vec![
            vec![V::I(5), V::I(1000), V::T("eve@north.example")],
            vec![V::I(6), V::I(1002), V::T("gus@north.example")],
        ],
    );
    vec![
        input("ids.students", students, &["id", "email"]),
        input("hcp1.contacts", contacts, &["id"]),
    ]
}
