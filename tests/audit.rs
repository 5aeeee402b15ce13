//! The audit trail: a migrate run, `wf purge` of its raw PII and its rollback each leave a line with the
//! PROD tables read and the CERT tables written (counts, never values); `wf audit verify` finds a
//! line edited, removed, or the last one changed.

use crate::util::Sandbox;
use crate::validation::{count, setup, KEY};

fn audit(sb: &Sandbox, cfg: &str, args: &[&str]) -> crate::util::Ran {
    let mut c = sb.cmd(["--config", cfg, "audit"]);
    c.args(args);
    crate::util::ran(c.output().expect("wf audit"))
}

#[test]
fn every_prod_read_and_cert_write_is_audited_and_tampering_is_found() {
    let sb = Sandbox::new();
    let cfg = setup(&sb, "");
    let cfg_s = cfg.to_str().unwrap().to_string();
    let r = crate::util::ran(
        sb.cmd([
            "run",
            "migrate",
            "--district",
            "1",
            "--keep-raw",
            "--config-file",
            &cfg_s,
        ])
        .env("WF_ANON_KEY", KEY)
        .output()
        .unwrap(),
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let run = r.stdout.lines().next().unwrap().to_string();
    let p = sb.run(["purge", &run]);
    assert_eq!(p.code, Some(0), "{}", p.stderr);
    let rb = sb.run(["rollback", &run, "--yes"]);
    assert_eq!(rb.code, Some(0), "{}", rb.stderr);

    let v = audit(&sb, &cfg_s, &["verify"]);
    assert_eq!(v.code, Some(0), "{}", v.stderr);
    assert!(v.stdout.starts_with("audit trail intact:"), "{}", v.stdout);
    let show = audit(&sb, &cfg_s, &["show", "--run", &run, "--json"]);
    assert_eq!(show.code, Some(0), "{}", show.stderr);
    let lines: Vec<serde_json::Value> = show
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<&str> = lines
        .iter()
        .map(|l| l["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"purge"), "{actions:?}");
    let migrate = lines
        .iter()
        .find(|l| l["action"] == "migrate")
        .expect("migrate line");
    let prod = cfg.parent().unwrap().join("prod").join("ids.db");
    let students = count(&prod, "students where district_id = 1") as u64;
    let d = &migrate["details"];
    assert_eq!(d["status"], "done");
    assert_eq!(
        d["raw_pii_files_deleted_by_the_run"], 0,
        "--keep-raw kept them"
    );
    assert_eq!(d["prod_tables_read"]["ids.students"], students);
    assert_eq!(
        d["cert_tables_written"]["ids.students"]["inserted"],
        students
    );
    assert!(d["key_fingerprint"].is_string() && !show.stdout.contains(KEY));
    let rollbacks: u64 = lines
        .iter()
        .filter(|l| l["action"] == "rollback")
        .filter_map(|l| l["details"]["cert_tables_written"]["ids.students"]["deleted"].as_u64())
        .sum();
    assert_eq!(rollbacks, students);

    // Tampering: an edited line, a removed line, a changed last line.
    let path = sb.data().join("audit").join("audit.jsonl");
    let good = std::fs::read_to_string(&path).unwrap();
    let n = good.lines().count();
    assert!(n >= 3, "{good}");
    let edit = |f: &dyn Fn(Vec<String>) -> Vec<String>| {
        let lines: Vec<String> = good.lines().map(str::to_string).collect();
        std::fs::write(&path, f(lines).join("\n") + "\n").unwrap();
        let v = audit(&sb, &cfg_s, &["verify"]);
        assert_eq!(v.code, Some(1), "{}", v.stdout);
        v.stderr
    };
    let e = edit(&|mut l| {
        l[0] = l[0].replace("\"status\":\"", "\"status\":\"x");
        l
    });
    assert!(e.contains("audit line 2 does not follow line 1"), "{e}");
    let e = edit(&|mut l| {
        l.remove(1);
        l
    });
    assert!(e.contains("audit line 2 is numbered 3"), "{e}");
    let e = edit(&|mut l| {
        let last = l.len() - 1;
        l[last] = l[last].replace("\"deleted\":", "\"deleted\":1");
        l
    });
    assert!(e.contains("its head records line"), "{e}");
    std::fs::write(&path, &good).unwrap();
    assert_eq!(audit(&sb, &cfg_s, &["verify"]).code, Some(0));
}
