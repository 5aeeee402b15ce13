//! `wf batch`: one migrate run per district, a failed district does not stop the others, and a
//! batch killed with SIGKILL resumes as a whole (children resumed where they were).

use crate::util::Sandbox;
use crate::validation::{count, setup, KEY};
use std::path::Path;

fn batch(sb: &Sandbox, cfg: &Path, districts: &str) -> std::process::Command {
    let mut c = sb.cmd([
        "batch",
        "--districts",
        districts,
        "--parallel",
        "2",
        "--config-file",
        cfg.to_str().unwrap(),
    ]);
    c.env("WF_ANON_KEY", KEY);
    c
}

fn assert_district_loaded(cfg: &Path, district: i64) {
    let dir = cfg.parent().unwrap();
    for (db, t) in [
        ("ids.db", "students"),
        ("hcp1.db", "enrollments"),
        ("hcp2.db", "attendance"),
    ] {
        let want = count(
            &dir.join("prod").join(db),
            &format!("{t} where district_id = {district}"),
        );
        let got = count(
            &dir.join("cert").join(db),
            &format!("{t} where district_id = {district}"),
        );
        assert_eq!(got, want, "district {district}: {db} {t}");
    }
}

#[test]
fn a_failed_district_is_reported_and_the_others_finish() {
    let sb = Sandbox::new();
    let cfg = setup(&sb, "");
    let out = crate::util::ran(batch(&sb, &cfg, "1,99,4").output().unwrap());
    assert_eq!(out.code, Some(3), "{}\n{}", out.stdout, out.stderr);
    let table: Vec<&str> = out.stdout.lines().collect();
    assert!(table[0].starts_with("bat-"), "{}", out.stdout);
    let row = |d: &str| {
        table
            .iter()
            .find(|l| l.split_whitespace().next() == Some(d))
            .map(|l| l.to_string())
            .unwrap_or_default()
    };
    assert!(row("1").contains(" done"), "{}", out.stdout);
    assert!(row("4").contains(" done"), "{}", out.stdout);
    assert!(row("99").contains("failed"), "{}", out.stdout);
    assert!(
        out.stderr.contains("district 99") && out.stderr.contains("not found"),
        "{}",
        out.stderr
    );
    assert_district_loaded(&cfg, 1);
    assert_district_loaded(&cfg, 4);
}

#[test]
fn a_killed_batch_resumes_as_a_whole() {
    let sb = Sandbox::new();
    let cfg = setup(&sb, "");
    let mut child = batch(&sb, &cfg, "3,1,2")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    {
        use std::io::BufRead;
        let mut r = std::io::BufReader::new(child.stdout.as_mut().unwrap());
        r.read_line(&mut first).unwrap();
    }
    let id = first.trim().to_string();
    assert!(id.starts_with("bat-"), "{id}");
    // SIGKILL the batch runner at several moments, resuming it in between; its children
    // (separate processes) go on running or not. A resume must never start a second run of a
    // district whose first run may still be going.
    for (round, ms) in [700u64, 150, 400].into_iter().enumerate() {
        if round > 0 {
            child = sb
                .cmd(["resume", &id])
                .env("WF_ANON_KEY", KEY)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(ms));
        let _ = child.kill(); // std's kill is SIGKILL
        let _ = child.wait();
    }
    let out = crate::util::ran(
        sb.cmd(["resume", &id])
            .env("WF_ANON_KEY", KEY)
            .output()
            .unwrap(),
    );
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    for d in ["1", "2", "3"] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with(d) && l.contains(" done")),
            "{}",
            out.stdout
        );
    }
    for d in [1, 2, 3] {
        assert_district_loaded(&cfg, d);
    }
    // Exactly one migrate run per district: the resumed batch resumed, it did not start again.
    let runs = crate::util::ran(sb.cmd(["runs", "--json"]).output().unwrap());
    let v: serde_json::Value = serde_json::from_str(&runs.stdout).unwrap();
    let migrates = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["workflow"] == "migrate")
        .count();
    assert_eq!(migrates, 3, "{}", runs.stdout);
}
