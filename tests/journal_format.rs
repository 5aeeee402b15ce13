//! A journal written before step outputs carried a format number (format 0, checked in as
//! tests/fixtures/journal-format0/data.tar.gz: a `wf demo` migrate run of district 2) is read by
//! this wf: its status, its event log, and the report rebuilt from every step's output. A future
//! format is refused by name (engine/src/codec.rs tests).

use crate::util::Sandbox;

const RUN: &str = "mig-20261202-001";

#[test]
fn a_journal_of_the_previous_output_format_is_read() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.data()).expect("data dir");
    let fixture = format!(
        "{}/tests/fixtures/journal-format0/data.tar.gz",
        env!("CARGO_MANIFEST_DIR")
    );
    let untar = std::process::Command::new("tar")
        .args(["xzf", &fixture, "-C"])
        .arg(sb.data())
        .status()
        .expect("tar");
    assert!(untar.success());
    let st = sb.run(["status", RUN, "--json"]);
    assert_eq!(st.code, Some(0), "{}", st.stderr);
    let st: serde_json::Value = serde_json::from_str(&st.stdout).expect("json");
    assert_eq!(st["status"], "done");
    // The report is built from the extract, anonymize and load outputs of the old format.
    let r = sb.run(["report", RUN]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(sb.data().join("reports").join(format!("{RUN}.json"))).expect("report"),
    )
    .expect("json");
    assert_eq!(report["district"], "2");
    assert_eq!(
        report["tables"]["adb.results"],
        serde_json::json!({"extracted": 1000, "anonymized": 1000, "loaded": 1000})
    );
    let log = sb.run(["log", RUN]);
    assert_eq!(log.code, Some(0), "{}", log.stderr);
    assert!(log.stdout.contains("load/ids"), "{}", log.stdout);
}
