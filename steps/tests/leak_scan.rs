//! The leak scan on real staging files: a kept copy of PII fails the run, values are compared
//! within their domains (anonymized fields whose outputs cannot be real values scanned too), and
//! the written values' hashes the workers gather are exactly the scanned fields' in the file.

mod common;
use common::*;
use std::path::Path;
use wf_steps::anonymize::{anonymize, AnonError, Rules};
use wf_stores::staging::ColType;

#[test]
fn leak_scan_fails_on_a_kept_copy_of_anonymized_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut inputs = fixture(dir.path(), "fine");
    let copy = write(
        dir.path(),
        "hcp1.audit",
        &[("id", ColType::Int), ("contact", ColType::Text)],
        vec![
            vec![V::I(1), V::T("finn@north.example")],
            vec![V::I(2), V::T("eve@north.example")],
        ],
    );
    inputs.push(input("hcp1.audit", copy, &[]));
    let rules = Rules::parse(
        &format!("{RULES}\n[[rules]]\nfield = \"hcp1.audit.contact\"\nstrategy = \"keep\"\n"),
        Path::new("r.toml"),
    )
    .expect("rules");
    let e = anonymize(
        &inputs,
        &rules,
        Path::new("r.toml"),
        &key(),
        &dir.path().join("anon"),
    )
    .expect_err("leak");
    let text = e.to_string();
    assert!(matches!(e, AnonError::Leak(_)));
    assert!(
        text.contains("hcp1.audit.contact (2 values)") && !text.contains("north.example"),
        "{text}"
    );
}

#[test]
fn the_leak_scan_compares_within_a_domain_and_scans_anonymized_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rows: Vec<Vec<V>> = (0..200)
        .map(|i| {
            vec![
                V::I(i),
                V::S(format!("{:05}", 10_000 + i)),
                V::S(format!("{:05}", 10_000 + (i + 7) % 200)),
                V::S(format!("kid{i}@school.example")),
            ]
        })
        .collect();
    let cols = [
        ("id", ColType::Int),
        ("zip", ColType::Text),
        ("ref_code", ColType::Text),
        ("email", ColType::Text),
    ];
    let file = write(dir.path(), "ids.kids", &cols, rows);
    let base = "[[rules]]\nfield = \"ids.kids.zip\"\nstrategy = \"mask\"\n\
                [[rules]]\nfield = \"ids.kids.ref_code\"\nstrategy = \"keep\"\n";
    let run = |email_rule: &str, out: &str| {
        let rules =
            Rules::parse(&format!("{base}{email_rule}"), Path::new("r.toml")).expect("rules");
        let table = input("ids.kids", file.clone(), &[]);
        anonymize(
            &[table],
            &rules,
            Path::new("r.toml"),
            &key(),
            &dir.path().join(out),
        )
    };
    // Every kept reference code is some postal code's original: another domain, no leak.
    let report = run(
        "[[rules]]\nfield = \"ids.kids.email\"\nstrategy = \"fake\"\nkind = \"email\"\n",
        "a",
    )
    .expect("no false positive across domains");
    assert!(report.leaks.is_empty(), "{:?}", report.leaks);
    let field = |f: &str| report.fields.iter().find(|x| x.field == f).expect("field");
    assert!(field("ids.kids.email").scanned && field("ids.kids.ref_code").scanned);
    assert!(
        !field("ids.kids.zip").scanned,
        "a mask maps onto real codes by design"
    );
    // A redaction that writes one of the field's own originals is caught in the anonymized field.
    let e = run(
        "[[rules]]\nfield = \"ids.kids.email\"\nstrategy = \"redact\"\nvalue = \"kid7@school.example\"\n",
        "b",
    )
    .expect_err("an original in an anonymized field");
    assert!(e.to_string().contains("ids.kids.email (200 values)"), "{e}");
}

/// The leak scan looks written values up by the hashes the workers gathered as they wrote them
/// (a repeat served by a worker's memo is not hashed again); those must be exactly the hashes of
/// what the file holds in its scanned fields, in each field's domains: a value missing there
/// would be a leak never looked up. Many batches on parallel workers, values repeating (the
/// memo), a redaction, a kept column, fake emails, and fields not scanned (mask).
#[test]
fn the_written_values_hashes_are_exactly_those_of_the_scanned_fields_in_the_file() {
    use wf_steps::anonymize::leak::{leak_hash, tag_id, tagged};
    use wf_steps::anonymize::table::{anonymize_table, Fixes, Written};
    let dir = tempfile::tempdir().expect("tempdir");
    let rows: Vec<Vec<V>> = (0..20_000)
        .map(|i| {
            vec![
                V::I(i),
                V::S(format!("Name{}", i % 37)),
                V::S(format!("kid{i}@school.example")),
                V::S(format!("note {}", i % 5)),
                V::S(format!("ref-{}", i % 1000)),
                V::S(format!("{:05}", 10_000 + i % 300)),
            ]
        })
        .collect();
    let cols = [
        ("id", ColType::Int),
        ("nickname", ColType::Text),
        ("email", ColType::Text),
        ("remarks", ColType::Text),
        ("ref_code", ColType::Text),
        ("zip", ColType::Text),
    ];
    let file = write(dir.path(), "ids.kids", &cols, rows);
    let rules = Rules::parse(
        concat!(
            "[[rules]]\nfield = \"ids.kids.id\"\nstrategy = \"hmac\"\n",
            "[[rules]]\nfield = \"ids.kids.nickname\"\nstrategy = \"hmac\"\n",
            "[[rules]]\nfield = \"ids.kids.email\"\nstrategy = \"fake\"\nkind = \"email\"\n",
            "[[rules]]\nfield = \"ids.kids.remarks\"\nstrategy = \"redact\"\n",
            "[[rules]]\nfield = \"ids.kids.ref_code\"\nstrategy = \"keep\"\n",
            "[[rules]]\nfield = \"ids.kids.zip\"\nstrategy = \"mask\"\n",
        ),
        Path::new("r.toml"),
    )
    .expect("rules");
    let key = key();
    let out = anonymize_table(
        &input("ids.kids", file, &["id"]),
        &rules,
        Path::new("r.toml"),
        &key,
        &Fixes::new(),
        &dir.path().join("anon"),
    )
    .expect("anonymize");
    let Written::Hashes(h) = out.written else {
        panic!("the workers gathered the written values' hashes")
    };
    let gathered = h.into_sorted().expect("sorted");
    let mut expected = Vec::new();
    let mut scanned = Vec::new();
    for f in out.fields.iter().filter(|f| f.scanned) {
        let column_name = f.field.rsplit('.').next().expect("column");
        let tags: Vec<u64> = f.leak_tags.iter().map(|t| tag_id(&key, t)).collect();
        scanned.push(column_name.to_string());
        if column_name == "id" {
            continue; // an integer column: the scan compares text
        }
        for v in column(&out.info.path, column_name) {
            if v.len() >= 4 {
                let h = leak_hash(&key, &v);
                expected.extend(tags.iter().map(|t| tagged(h, *t)));
            }
        }
    }
    scanned.sort();
    assert_eq!(scanned, ["email", "id", "nickname", "ref_code", "remarks"]);
    expected.sort_unstable();
    expected.dedup();
    assert_eq!(gathered.len(), expected.len());
    assert!(gathered == expected, "the same hashes, every one");
}
