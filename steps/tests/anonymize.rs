//! Anonymization on real staging files: consistency across stores, joins kept, uniqueness kept under
//! forced collisions, a planted SSN caught, order kept across parallel workers, a damaged file
//! refused. The leak scan's tests are in `leak_scan.rs`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use wf_steps::anonymize::{anonymize, AnonError, AnonKey, Rules, TableInput};
use wf_stores::staging::ColType;

mod common;
use common::*;

#[test]
fn consistent_across_stores_and_joins_still_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inputs = fixture(dir.path(), "quiet");
    let rules = Rules::parse(RULES, Path::new("anonymization.toml")).expect("rules");
    let out = dir.path().join("anon");
    let report = anonymize(
        &inputs,
        &rules,
        Path::new("anonymization.toml"),
        &key(),
        &out,
    )
    .expect("anonymize");
    assert_eq!(report.key_fingerprint, key().fingerprint());
    let s = out.join("ids.students.arrow");
    let c = out.join("hcp1.contacts.arrow");
    let (ids, emails) = (column(&s, "id"), column(&s, "email"));
    // The same original email gives the same fake in both stores.
    let by_student: HashMap<&str, &str> = ids
        .iter()
        .map(String::as_str)
        .zip(emails.iter().map(String::as_str))
        .collect();
    for (sid, email) in column(&c, "student_id").iter().zip(column(&c, "email")) {
        assert_eq!(
            by_student.get(sid.as_str()).copied(),
            Some(email.as_str()),
            "FK joins and emails agree"
        );
    }
    assert!(!ids.contains(&"1000".to_string()), "ids were hashed");
    assert!(
        ids.iter().all(|i| i.len() == 4),
        "integers keep their digit count: {ids:?}"
    );
    assert!(
        emails
            .iter()
            .all(|e| e.contains('@') && !e.contains("north.example")),
        "{emails:?}"
    );
    let names = column(&s, "first_name");
    assert!(!names.contains(&"Eve".to_string()) || !names.contains(&"Finn".to_string()));
    let dates = column(&s, "birth_date");
    assert!(
        dates
            .iter()
            .all(|d| d.len() == 10 && d.as_bytes()[4] == b'-'),
        "{dates:?}"
    );
    let email_field = report
        .fields
        .iter()
        .find(|f| f.field == "ids.students.email")
        .expect("report");
    assert_eq!(email_field.changed, 3);
    assert!(email_field.rule.as_deref().unwrap_or("").contains("Fake"));
}

#[test]
fn a_planted_ssn_in_free_text_stops_the_run_until_a_rule_covers_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inputs = fixture(dir.path(), "mother says SSN 123-45-6789, call after 5");
    let no_ssn_rule = RULES.replace("detector = \"ssn\"", "detector = \"phone\"");
    let rules = Rules::parse(&no_ssn_rule, Path::new("anonymization.toml")).expect("rules");
    let e = anonymize(
        &inputs,
        &rules,
        Path::new("anonymization.toml"),
        &key(),
        &dir.path().join("a"),
    )
    .expect_err("flagged");
    let text = e.to_string();
    assert!(matches!(e, AnonError::Unclassified { .. }));
    assert!(
        text.contains("ids.students.remarks (ssn)") && text.contains("anonymization.toml"),
        "{text}"
    );
    assert!(
        !text.contains("123-45-6789"),
        "an error never carries the value"
    );
    let rules = Rules::parse(RULES, Path::new("anonymization.toml")).expect("rules");
    anonymize(
        &inputs,
        &rules,
        Path::new("anonymization.toml"),
        &key(),
        &dir.path().join("b"),
    )
    .expect("covered");
    assert!(column(&dir.path().join("b/ids.students.arrow"), "remarks")
        .contains(&"REDACTED".to_string()));
}

#[test]
fn unique_columns_stay_unique_under_forced_collisions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rows: Vec<Vec<V>> = (0..2000)
        .map(|i| vec![V::I(i + 1), V::S(format!("Person{i}"))])
        .collect();
    let file = write(
        dir.path(),
        "ids.people",
        &[("id", ColType::Int), ("nickname", ColType::Text)],
        rows,
    );
    let rules = Rules::parse(
        "[[rules]]\nfield = \"ids.people.nickname\"\nstrategy = \"fake\"\nkind = \"first_name\"\n[[rules]]\nfield = \"ids.people.id\"\nstrategy = \"hmac\"\n",
        Path::new("r.toml"),
    )
    .expect("rules");
    let table = input("ids.people", file, &["id", "nickname"]);
    // The same people on graph nodes, in reverse order, where the property is not unique: it
    // takes the column's rule and must get the very same (suffixed) outputs.
    let nodes: Vec<Vec<V>> = (0..2000)
        .rev()
        .map(|i| vec![V::S(format!("Person{i}"))])
        .collect();
    let node_file = write(
        dir.path(),
        "sp.Person",
        &[("nickname", ColType::Text)],
        nodes,
    );
    let node_input = TableInput {
        table: "sp.Person".into(),
        file: node_file,
        sha256: None,
        unique: vec![],
        rule_as: [("nickname".to_string(), "ids.people.nickname".to_string())].into(),
    };
    let out = dir.path().join("anon");
    anonymize(
        &[table, node_input],
        &rules,
        Path::new("r.toml"),
        &key(),
        &out,
    )
    .expect("anonymize");
    let names = column(&out.join("ids.people.arrow"), "nickname");
    let distinct: HashSet<&String> = names.iter().collect();
    assert_eq!(distinct.len(), 2000, "2000 people get 2000 distinct fakes");
    assert!(
        names.iter().any(|n| n.contains('-')),
        "first names do collide and were resolved"
    );
    let mut on_nodes = column(&out.join("sp.Person.arrow"), "nickname");
    on_nodes.reverse();
    assert_eq!(
        on_nodes, names,
        "each person's nickname is the same on the node"
    );
    let ids: HashSet<String> = column(&out.join("ids.people.arrow"), "id")
        .into_iter()
        .collect();
    assert_eq!(ids.len(), 2000, "hashed keys stay unique");
}

#[test]
fn another_key_gives_other_outputs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inputs = fixture(dir.path(), "x");
    let rules = Rules::parse(RULES, Path::new("r.toml")).expect("rules");
    anonymize(
        &inputs,
        &rules,
        Path::new("r.toml"),
        &key(),
        &dir.path().join("a"),
    )
    .expect("a");
    anonymize(
        &inputs,
        &rules,
        Path::new("r.toml"),
        &AnonKey::from_bytes(b"a-completely-other-key"),
        &dir.path().join("b"),
    )
    .expect("b");
    let a = column(&dir.path().join("a/ids.students.arrow"), "email");
    let b = column(&dir.path().join("b/ids.students.arrow"), "email");
    assert_ne!(a, b);
    let again = tempfile::tempdir().expect("tempdir");
    anonymize(&inputs, &rules, Path::new("r.toml"), &key(), again.path()).expect("again");
    assert_eq!(
        a,
        column(&again.path().join("ids.students.arrow"), "email"),
        "same key, same output: every run"
    );
}

#[test]
fn many_batches_on_parallel_workers_keep_row_order_and_consistency() {
    // 40,000 rows in batches of 64 spread over the workers; emails repeat every 15,000 rows, so
    // the per-worker memos see repeats, and a unique code column turns its memo off.
    let dir = tempfile::tempdir().expect("tempdir");
    let rows: Vec<Vec<V>> = (0..40_000)
        .map(|i| {
            vec![
                V::I(i),
                V::S(format!("kid{}@school.example", i % 15_000)),
                V::S(format!("CODE-{i:06}")),
            ]
        })
        .collect();
    let file = write(
        dir.path(),
        "ids.kids",
        &[
            ("n", ColType::Int),
            ("email", ColType::Text),
            ("code", ColType::Text),
        ],
        rows,
    );
    let rules = Rules::parse(
        "[[rules]]\nfield = \"ids.kids.n\"\nstrategy = \"keep\"\n[[rules]]\nfield = \"ids.kids.email\"\nstrategy = \"fake\"\nkind = \"email\"\n[[rules]]\nfield = \"ids.kids.code\"\nstrategy = \"mask\"\nkeep_prefix = 5\n",
        Path::new("r.toml"),
    )
    .expect("rules");
    let table = input("ids.kids", file, &[]);
    let out = dir.path().join("anon");
    let report = anonymize(&[table], &rules, Path::new("r.toml"), &key(), &out).expect("anonymize");
    let path = out.join("ids.kids.arrow");
    let n = column(&path, "n");
    assert_eq!(
        n,
        (0..40_000).map(|i| i.to_string()).collect::<Vec<_>>(),
        "row order kept"
    );
    let emails = column(&path, "email");
    let k = key();
    for (i, e) in emails.iter().enumerate() {
        let original = format!("kid{}@school.example", i % 15_000);
        assert_eq!(
            e,
            &wf_steps::anonymize::strategy::fake(
                &k,
                wf_steps::anonymize::strategy::FakeKind::Email,
                &original
            ),
            "row {i}: the same email anonymizes alike on every worker"
        );
    }
    let codes = column(&path, "code");
    assert!(codes
        .iter()
        .all(|c| c.starts_with("CODE-") && c.len() == 11));
    // Six masked digits for 40,000 codes: ~39,200 distinct expected (birthday collisions).
    assert!(codes.iter().collect::<HashSet<_>>().len() > 38_500);
    let changed: HashMap<&str, u64> = report
        .fields
        .iter()
        .map(|f| (f.field.as_str(), f.changed))
        .collect();
    assert_eq!(changed["ids.kids.email"], 40_000);
    assert_eq!(changed["ids.kids.n"], 0);
    // Keyed hashes of 15,000 distinct emails, once per domain (the field, the email detector),
    // and of 40,000 distinct codes (their field only), each once.
    assert_eq!(report.originals, 2 * 15_000 + 40_000);
}

#[test]
fn a_damaged_staging_file_is_a_clear_error_and_no_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rows: Vec<Vec<V>> = (0..5000)
        .map(|i| vec![V::I(i), V::S(format!("kid{i}@school.example"))])
        .collect();
    let file = write(
        dir.path(),
        "ids.kids",
        &[("id", ColType::Int), ("email", ColType::Text)],
        rows,
    );
    // Damage the middle of the file (record batch bodies), leaving header and footer intact.
    let mut bytes = std::fs::read(&file).expect("read");
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 4096] {
        *b = 0xff;
    }
    std::fs::write(&file, bytes).expect("write");
    let rules = Rules::parse(
        "[[rules]]\nfield = \"ids.kids.id\"\nstrategy = \"hmac\"\n[[rules]]\nfield = \"ids.kids.email\"\nstrategy = \"fake\"\nkind = \"email\"\n",
        Path::new("r.toml"),
    )
    .expect("rules");
    let table = input("ids.kids", file, &[]);
    let out = dir.path().join("anon");
    let e = anonymize(&[table], &rules, Path::new("r.toml"), &key(), &out)
        .expect_err("damaged input")
        .to_string();
    assert!(
        e.contains("ids.kids.arrow") && e.contains("re-run") && !e.contains('\n'),
        "{e}"
    );
    assert!(
        !out.join("ids.kids.arrow").exists(),
        "no output under the final name"
    );
}

#[test]
fn rules_that_would_collapse_a_unique_column_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rows: Vec<Vec<V>> = (0..50)
        .map(|i| vec![V::I(1000 + i), V::S(format!("C-{i:04}"))])
        .collect();
    let file = write(
        dir.path(),
        "ids.cards",
        &[("id", ColType::Int), ("code", ColType::Text)],
        rows,
    );
    for (rules, field) in [
        (
            "[[rules]]\nfield = \"ids.cards.id\"\nstrategy = \"mask\"\n",
            "ids.cards.id",
        ),
        (
            "[[rules]]\nfield = \"ids.cards.code\"\nstrategy = \"redact\"\n",
            "ids.cards.code",
        ),
    ] {
        let rules = Rules::parse(rules, Path::new("r.toml")).expect("rules");
        let table = input("ids.cards", file.clone(), &["id", "code"]);
        let out = dir.path().join("anon");
        let e = anonymize(&[table], &rules, Path::new("r.toml"), &key(), &out)
            .expect_err("refused")
            .to_string();
        assert!(e.contains(field) && e.contains("use hmac"), "{e}");
        assert!(!out.join("ids.cards.arrow").exists());
    }
}

/// Default deny by column name looks at text columns only: integer keys named like PII (`name_id`,
/// `zip`) pass, a text `username` and a column of password hashes are flagged as credentials,
/// and the message spells each detector as the rules file does.
#[test]
fn integer_keys_are_not_names_and_credentials_are_flagged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rows: Vec<Vec<V>> = (0..40)
        .map(|i| {
            vec![
                V::I(i),
                V::I(100 + i),
                V::I(90_000 + i),
                V::S(format!("u{i:03}")),
                V::S(format!(
                    "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO{i:04}"
                )),
            ]
        })
        .collect();
    let file = write(
        dir.path(),
        "ids.accounts",
        &[
            ("id", ColType::Int),
            ("name_id", ColType::Int),
            ("zip", ColType::Int),
            ("username", ColType::Text),
            ("secret_value", ColType::Text),
        ],
        rows,
    );
    let rules = Rules::parse(
        "[[rules]]\nfield = \"ids.accounts.id\"\nstrategy = \"hmac\"\n",
        Path::new("r.toml"),
    )
    .expect("rules");
    let e = anonymize(
        &[input("ids.accounts", file, &[])],
        &rules,
        Path::new("r.toml"),
        &key(),
        &dir.path().join("anon"),
    )
    .expect_err("credentials without a rule")
    .to_string();
    assert!(
        e.contains("ids.accounts.username (credential)")
            && e.contains("ids.accounts.secret_value (credential)"),
        "{e}"
    );
    assert!(
        !e.contains("name_id") && !e.contains("ids.accounts.zip"),
        "{e}"
    );
}

/// The leak scan compares values within a domain: a kept text reference code equal to masked
/// postal codes is no leak; a copy of the emails in a kept column is (the email detector); and so
/// is a value the rules chose for an anonymized field that is one of its originals.
/// A composite graph key (`[isbn, lang]`, as `graph_input` lists it): a rule whose outputs collide
/// on one part still leaves every key distinct, so no two nodes merge in CERT.
#[test]
fn composite_key_parts_stay_distinct_under_forced_collisions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rows: Vec<Vec<V>> = (0..2000)
        .map(|i| vec![V::T("978"), V::S(format!("Lang{i}"))])
        .collect();
    let cols = [("isbn", ColType::Text), ("lang", ColType::Text)];
    let file = write(dir.path(), "lib.Edition", &cols, rows);
    let rules = Rules::parse(
        concat!(
            "[[rules]]\nfield = \"lib.Edition.lang\"\nstrategy = \"fake\"\nkind = \"first_name\"\n",
            "[[rules]]\nfield = \"lib.Edition.isbn\"\nstrategy = \"keep\"\n",
        ),
        Path::new("r.toml"),
    )
    .expect("rules");
    let out = dir.path().join("anon");
    let table = input("lib.Edition", file, &["isbn", "lang"]);
    anonymize(&[table], &rules, Path::new("r.toml"), &key(), &out).expect("anonymize");
    let path = out.join("lib.Edition.arrow");
    let keys: HashSet<(String, String)> = column(&path, "isbn")
        .into_iter()
        .zip(column(&path, "lang"))
        .collect();
    assert_eq!(keys.len(), 2000, "2000 editions keep 2000 distinct keys");
    assert!(
        column(&path, "lang").iter().any(|l| l.contains('-')),
        "the fakes did collide and were given suffixes"
    );
}
