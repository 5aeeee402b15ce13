//! What refuses a migrate before anything is loaded: no anonymization key, a key too easy to
//! guess, PII found in a field no rule covers, a resume under another key. Each refusal is one
//! line that names what to do and never the key or a value.

use crate::migrate::{counts, migrate, migrate_with, setup, KEY, RULES};
use crate::util::Sandbox;

#[test]
fn no_key_no_run() {
    let sb = Sandbox::new();
    let config = setup(&sb, RULES);
    let r = sb.run([
        "--config",
        &config.to_string_lossy(),
        "run",
        "migrate",
        "--district",
        "1",
    ]);
    assert_eq!(r.code, Some(1));
    let line = r.stderr.trim();
    assert!(
        line.contains("WF_ANON_KEY") && line.contains("no key, no run") && !line.contains('\n'),
        "{line}"
    );
    assert!(
        !sb.data().join("journal").exists()
            || std::fs::read_dir(sb.data().join("journal"))
                .expect("dir")
                .next()
                .is_none()
    );
}

#[test]
fn a_guessable_key_is_refused_like_a_missing_one() {
    let sb = Sandbox::new();
    let config = setup(&sb, RULES);
    for weak in [
        "aaaaaaaaaaaaaaaaaaaa",
        "passwordpassword1234",
        "                    ",
    ] {
        let r = migrate_with(
            &sb,
            &config.to_string_lossy(),
            &[],
            &[("WF_ANON_KEY", weak)],
        );
        assert_eq!(r.code, Some(1), "{weak:?}: {}", r.stderr);
        let line = r.stderr.trim();
        assert!(
            line.contains("WF_ANON_KEY")
                && line.contains("too easy to guess")
                && !line.contains('\n'),
            "{line}"
        );
        assert!(
            !line.contains(weak.trim()) || weak.trim().is_empty(),
            "the key itself is never printed: {line}"
        );
    }
    assert_eq!(
        sb.run(["runs", "--json"]).stdout.trim(),
        "[]",
        "no run was created"
    );
}

#[test]
fn pii_without_a_rule_stops_the_run_before_any_load() {
    let sb = Sandbox::new();
    let rules = RULES.replace(
        "[[rules]]\nfield = \"ids.guardians.name\"\nstrategy = \"fake\"\nkind = \"name\"\n",
        "",
    );
    let config = setup(&sb, &rules);
    let before = counts(&sb);
    let r = migrate(&sb, &config.to_string_lossy());
    assert_eq!(r.code, Some(3), "{}", r.stderr);
    assert!(
        r.stderr.contains("anonymize") && r.stderr.contains("ids.guardians.name"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("Ivy Adams"), "no value in errors");
    assert_eq!(counts(&sb), before, "nothing was loaded");
}

#[test]
fn resume_with_another_key_is_refused() {
    let sb = Sandbox::new();
    let config = setup(&sb, RULES);
    let cfg = config.to_string_lossy().to_string();
    let failpoint = ("WF_FAILPOINT", "extract:after-record");
    let crashed = migrate_with(&sb, &cfg, &[], &[("WF_ANON_KEY", KEY), failpoint]);
    let run = crashed.stdout.lines().next().expect("run id").to_string();
    let r = crate::util::ran(
        sb.cmd(["--config", &cfg, "resume", &run])
            .env("WF_ANON_KEY", "a-different-key-0123456789")
            .output()
            .expect("resume"),
    );
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("another anonymization key") && !r.stderr.contains("a-different-key"),
        "{}",
        r.stderr
    );
    let ok = sb
        .cmd(["--config", &cfg, "resume", &run])
        .env("WF_ANON_KEY", KEY)
        .output()
        .expect("resume");
    assert_eq!(ok.status.code(), Some(0), "the original key resumes");
}
