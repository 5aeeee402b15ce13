//! The graph spooler: nodes and relationships spilled (bincode) and written to Arrow staging read
//! back as they were: typed values (a NaN, dates, lists), a property some nodes lack, labels, and a
//! relationship whose end has a composite key.

use chrono::NaiveDate;
use std::collections::BTreeMap;
use wf_stores::graph::stage::{GraphBatch, GraphFileKind, GraphFileReader, Spooler};
use wf_stores::graph::{GValue, KeyMap, KeySpec, NodeRec, RelRec};

fn keys() -> KeyMap {
    let labels = BTreeMap::from([(
        "Edition".to_string(),
        KeySpec::Many(vec!["isbn".into(), "lang".into()]),
    )]);
    KeyMap::new("id", &labels)
}

fn text(s: &str) -> GValue {
    GValue::Text(s.to_string())
}

#[test]
fn spilled_nodes_and_relationships_read_back_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys();
    let day = NaiveDate::from_ymd_opt(2026, 12, 3).unwrap();
    let nodes = vec![
        NodeRec {
            labels: vec!["Book".into(), "Rare".into()],
            props: BTreeMap::from([
                ("id".to_string(), GValue::Int(1)),
                ("score".to_string(), GValue::Float(f64::NAN)),
                ("out".to_string(), GValue::Date(day)),
                (
                    "at".to_string(),
                    GValue::DateTime(day.and_hms_opt(7, 8, 9).unwrap()),
                ),
                ("tags".to_string(), GValue::List(vec![text("a"), text("b")])),
            ]),
        },
        NodeRec {
            labels: vec!["Book".into()],
            props: BTreeMap::from([
                ("id".to_string(), GValue::Int(2)),
                ("score".to_string(), GValue::Float(2.5)),
            ]),
        },
    ];
    let kind = GraphFileKind::Nodes {
        label: "Book".into(),
    };
    let mut s = Spooler::create(dir.path(), kind.clone(), &keys).unwrap();
    for n in &nodes {
        s.push_node(n).unwrap();
    }
    let (got_kind, info) = s.finish("sp", &keys, dir.path(), 1).unwrap();
    assert_eq!(got_kind, kind);
    assert_eq!(info.rows, 2);
    let mut rd = GraphFileReader::open(&info.path).unwrap();
    let mut read = Vec::new();
    while let Some(b) = rd.next_batch().unwrap() {
        let GraphBatch::Nodes(ns) = b else {
            panic!("a node file reads back as nodes")
        };
        read.extend(ns);
    }
    assert_eq!(read.len(), 2);
    assert_eq!(read[0].labels, nodes[0].labels);
    let p = &read[0].props;
    assert!(
        matches!(p["score"], GValue::Float(f) if f.is_nan()),
        "{p:?}"
    );
    for k in ["id", "out", "at", "tags"] {
        assert_eq!(p.get(k), nodes[0].props.get(k), "{k}");
    }
    assert_eq!(read[1].props.get("score"), Some(&GValue::Float(2.5)));
    assert!(
        matches!(read[1].props.get("out"), None | Some(GValue::Null)),
        "a property the node lacks stays absent: {:?}",
        read[1].props
    );

    let edition = GValue::List(vec![text("111"), text("fr")]);
    let rel = RelRec {
        rel_type: "HAS".into(),
        start: ("Book".into(), GValue::Int(1)),
        end: ("Edition".into(), edition.clone()),
        props: BTreeMap::from([("since".to_string(), GValue::Int(1843))]),
    };
    let kind = GraphFileKind::Rels {
        rel_type: "HAS".into(),
        start: "Book".into(),
        end: "Edition".into(),
    };
    let mut s = Spooler::create(dir.path(), kind, &keys).unwrap();
    s.push_rel(&rel).unwrap();
    let (_, info) = s.finish("sp", &keys, dir.path(), 8).unwrap();
    let mut rd = GraphFileReader::open(&info.path).unwrap();
    let Some(GraphBatch::Rels(rs)) = rd.next_batch().unwrap() else {
        panic!("a relationship file reads back as relationships")
    };
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].start.1, GValue::Int(1));
    assert_eq!(
        rs[0].end.1, edition,
        "the composite end's parts in key order"
    );
    assert_eq!(rs[0].props.get("since"), Some(&GValue::Int(1843)));
    let spills = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .to_string_lossy()
                .contains("spill")
        })
        .count();
    assert_eq!(spills, 0, "the raw spill files are removed");
}
