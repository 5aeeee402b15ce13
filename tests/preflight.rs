//! Names in wf.toml and the rule files are checked against PROD's discovery before a run exists:
//! each kind of misspelling, a followed column that is no FK, and an unset CERT variable exit 1
//! with one line naming the thing (and the closest existing name), and create no run.

use crate::migrate::{migrate_with, setup, KEY, RULES};
use crate::util::Sandbox;

/// A change to wf.toml's text.
type Edit = Box<dyn Fn(String) -> String>;

/// `wf run migrate` on a config changed by `edit` and rules changed by `rules`.
fn attempt(edit: &dyn Fn(String) -> String, rules: &str) -> (crate::util::Ran, Sandbox) {
    let sb = Sandbox::new();
    let config = setup(&sb, rules);
    let text = std::fs::read_to_string(&config).expect("wf.toml");
    std::fs::write(&config, edit(text)).expect("edit wf.toml");
    let r = migrate_with(&sb, &config.to_string_lossy(), &[], &[("WF_ANON_KEY", KEY)]);
    (r, sb)
}

#[test]
fn every_misspelled_name_is_refused_with_the_closest_one_and_no_run() {
    let same = |t: String| t;
    let cases: Vec<(&str, Edit, String, &str)> = vec![
        (
            "follow_children column",
            Box::new(|t: String| t.replace("ids.terms.school_id", "ids.terms.shool_id")),
            RULES.to_string(),
            "did you mean ids.terms.school_id?",
        ),
        (
            "follow_children column that is no FK",
            Box::new(|t: String| t.replace("ids.terms.school_id", "ids.terms.name")),
            RULES.to_string(),
            "no foreign key",
        ),
        (
            "reference table",
            Box::new(|t: String| t.replace("ids.grade_levels", "ids.grade_level")),
            RULES.to_string(),
            "did you mean ids.grade_levels?",
        ),
        (
            "virtual FK column",
            Box::new(|t: String| {
                t.replace(
                    "from = \"hcp1.enrollments.student_id\"",
                    "from = \"hcp1.enrollments.studentid\"",
                )
            }),
            RULES.to_string(),
            "did you mean hcp1.enrollments.student_id?",
        ),
        (
            "anonymization rule field",
            Box::new(same),
            RULES.replace("ids.guardians.name", "ids.guardians.nmae"),
            "did you mean ids.guardians.name?",
        ),
        (
            "anonymization rule table",
            Box::new(same),
            RULES.replace("ids.students.birth_date", "ids.student.birth_date"),
            "did you mean ids.students?",
        ),
        (
            "unset CERT variable",
            Box::new(|t: String| {
                let cert = t
                    .lines()
                    .find(|l| l.starts_with("cert = "))
                    .expect("cert line")
                    .to_string();
                t.replacen(&cert, "cert = \"env:WF_TEST_SURELY_UNSET_CERT\"", 1)
            }),
            RULES.to_string(),
            "WF_TEST_SURELY_UNSET_CERT is not set",
        ),
    ];
    for (what, edit, rules, want) in cases {
        let (r, sb) = attempt(edit.as_ref(), &rules);
        assert_eq!(r.code, Some(1), "{what}: {}\n{}", r.stdout, r.stderr);
        let line = r.stderr.trim();
        assert!(
            line.contains(want) && !line.contains('\n'),
            "{what}: expected `{want}` on one line: {line}"
        );
        assert!(
            r.stdout.is_empty(),
            "{what}: a run was started: {}",
            r.stdout
        );
        let runs = sb.run(["runs", "--json"]);
        assert_eq!(runs.stdout.trim(), "[]", "{what}: a run was created");
    }
}
