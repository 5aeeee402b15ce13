//! Names in wf.toml and the rule files are checked against PROD's discovery before a run exists:
//! each kind of misspelling, a followed column that is no FK, and an unset CERT variable exit 1
//! with one line naming the thing (and the closest existing name), and create no run.

use crate::migrate::{migrate_with, setup, KEY, RULES};
use crate::util::Sandbox;

/// A change to wf.toml's text.
type Edit = Box<dyn Fn(String) -> String>;

/// `wf run migrate` on a config changed by `edit` and rules changed by `rules`.
/// Returns the run, its sandbox and the edited wf.toml's text.
fn attempt(edit: &dyn Fn(String) -> String, rules: &str) -> (crate::util::Ran, Sandbox, String) {
    let sb = Sandbox::new();
    let config = setup(&sb, rules);
    let text = edit(std::fs::read_to_string(&config).expect("wf.toml"));
    std::fs::write(&config, &text).expect("edit wf.toml");
    let r = migrate_with(&sb, &config.to_string_lossy(), &[], &[("WF_ANON_KEY", KEY)]);
    (r, sb, text)
}

#[test]
fn every_misspelled_name_is_refused_with_the_closest_one_and_no_run() {
    let same = |t: String| t;
    // (what, wf.toml edit, rules, expected text, the misspelled value whose line is named).
    let cases: Vec<(&str, Edit, String, &str, Option<&str>)> = vec![
        (
            "follow_children column",
            Box::new(|t: String| t.replace("ids.terms.school_id", "ids.terms.shool_id")),
            RULES.to_string(),
            "did you mean ids.terms.school_id?",
            Some("ids.terms.shool_id"),
        ),
        (
            "follow_children column that is no FK",
            Box::new(|t: String| t.replace("ids.terms.school_id", "ids.terms.name")),
            RULES.to_string(),
            "no foreign key",
            Some("ids.terms.name"),
        ),
        (
            "reference table",
            Box::new(|t: String| t.replace("ids.grade_levels", "ids.grade_level")),
            RULES.to_string(),
            "did you mean ids.grade_levels?",
            Some("ids.grade_level\""),
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
            Some("hcp1.enrollments.studentid"),
        ),
        (
            "anonymization rule field",
            Box::new(same),
            RULES.replace("ids.guardians.name", "ids.guardians.nmae"),
            "did you mean ids.guardians.name?",
            Some("ids.guardians.nmae"),
        ),
        (
            "anonymization rule table",
            Box::new(same),
            RULES.replace("ids.students.birth_date", "ids.student.birth_date"),
            "did you mean ids.students?",
            Some("ids.student.birth_date"),
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
            None,
        ),
    ];
    for (what, edit, rules, want, misspelled) in cases {
        let (r, sb, edited) = attempt(edit.as_ref(), &rules);
        if let Some(m) = misspelled {
            let (file, text) = match edited.contains(m) {
                true => ("wf.toml", edited),
                false => ("rules", rules.clone()),
            };
            let n = text
                .lines()
                .position(|l| l.contains(m))
                .expect("misspelled line")
                + 1;
            let at = format!(" line {n}: ");
            assert!(
                r.stderr.contains(&at),
                "{what}: expected `{at}` ({file}): {}",
                r.stderr
            );
        }
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
