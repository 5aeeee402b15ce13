//! Every staged file a step consumes is checked against the SHA-256 its producer journaled, while
//! it is read. One byte flipped in a raw, an anonymized or a graph file (size and mtime kept, so
//! the resume's stat check sees nothing) is caught, its producer runs again, and CERT ends equal to
//! an uninterrupted run's.

use crate::util::Sandbox;
use crate::validation::{setup, KEY};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const NO_RULES: &str = "";

fn run_migrate(sb: &Sandbox, cfg: &Path, failpoint: Option<&str>) -> (Option<i32>, String) {
    let mut c = sb.cmd([
        "run",
        "migrate",
        "--district",
        "1",
        "--config-file",
        cfg.to_str().unwrap(),
    ]);
    c.env("WF_ANON_KEY", KEY);
    if let Some(fp) = failpoint {
        c.env("WF_FAILPOINT", fp);
    }
    let r = crate::util::ran(c.output().expect("run"));
    (
        r.code,
        r.stdout.lines().next().unwrap_or_default().to_string(),
    )
}

/// Every CERT table (relational stores and the embedded graph file), as a count and a hash of its
/// sorted rows; wf's own bookkeeping tables (markers, enrollment) are left out.
fn cert_state(cfg: &Path) -> BTreeMap<String, String> {
    let cert = cfg.parent().unwrap().join("cert");
    let mut out = BTreeMap::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for entry in std::fs::read_dir(&cert).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !(name.ends_with(".db") || name.ends_with(".graph")) {
            continue;
        }
        rt.block_on(async {
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            let tables: Vec<String> = sqlx::query_scalar(
                "select name from sqlite_master where type = 'table' and name not like 'sqlite_%' \
                 and name not in ('wf_loads', 'wf_enrollment', 'markers', 'enrollment')",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            for t in tables {
                let cols: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "select name from pragma_table_info('{t}')"
                )))
                .fetch_all(&pool)
                .await
                .unwrap();
                let expr = cols
                    .iter()
                    .map(|c| format!("quote(\"{c}\")"))
                    .collect::<Vec<_>>()
                    .join(" || ',' || ");
                let mut rows: Vec<String> =
                    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select {expr} from \"{t}\"")))
                        .fetch_all(&pool)
                        .await
                        .unwrap();
                rows.sort();
                let h = hex::encode(Sha256::digest(rows.join("\n").as_bytes()));
                out.insert(format!("{name}:{t}"), format!("{}:{h}", rows.len()));
            }
        });
    }
    out
}

/// Flips one byte in the middle of `file`, keeping its size and modification time.
pub(crate) fn flip_byte(file: &Path) {
    let meta = std::fs::metadata(file).unwrap();
    let mtime = meta.modified().unwrap();
    let mut bytes = std::fs::read(file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    std::fs::write(file, &bytes).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.set_modified(mtime).unwrap();
    let after = std::fs::metadata(file).unwrap();
    assert_eq!(
        (after.len(), after.modified().unwrap()),
        (meta.len(), mtime)
    );
}

fn staged(sb: &Sandbox, run: &str, step: &str, dir: &str, name: &str) -> PathBuf {
    sb.data()
        .join("runs")
        .join(run)
        .join("steps")
        .join(step)
        .join(dir)
        .join(name)
}

#[test]
fn a_flipped_byte_in_any_staged_file_makes_its_producer_run_again() {
    let clean = Sandbox::new();
    let cfg = setup(&clean, NO_RULES);
    let (code, _) = run_migrate(&clean, &cfg, None);
    assert_eq!(code, Some(0));
    let want = cert_state(&cfg);
    assert!(want.keys().any(|k| k.contains("students")), "{want:?}");

    // (what, failpoint that stops the run before the consumer, step and dir of the file, file, producer)
    let cases = [
        (
            "raw table",
            "anonymize/ids.students:before",
            "extract",
            "raw",
            "ids.students.arrow",
            "extract",
        ),
        (
            "raw graph",
            "anonymize/sp:before",
            "extract~sp",
            "raw",
            "Student.arrow",
            "extract/sp",
        ),
        (
            "anonymized table",
            "load/ids:before",
            "anonymize~ids.students",
            "anon",
            "ids.students.arrow",
            "anonymize/ids.students",
        ),
        (
            "anonymized graph",
            "validate:before",
            "anonymize~sp",
            "anon",
            "sp.Student-ENROLLED_IN-Section.arrow",
            "anonymize/sp",
        ),
    ];
    for (what, fp, step, dir, name, producer) in cases {
        let sb = Sandbox::new();
        let cfg = setup(&sb, NO_RULES);
        let (code, run) = run_migrate(&sb, &cfg, Some(fp));
        assert_ne!(code, Some(0), "{what}: the failpoint did not stop the run");
        let file = staged(&sb, &run, step, dir, name);
        assert!(file.exists(), "{what}: {} missing", file.display());
        flip_byte(&file);
        let r = crate::util::ran(
            sb.cmd(["resume", &run])
                .env("WF_ANON_KEY", KEY)
                .output()
                .expect("resume"),
        );
        assert_eq!(r.code, Some(0), "{what}: resume failed: {}", r.stderr);
        let log = sb.run(["log", &run]);
        assert!(
            log.stdout.contains(&format!("{producer}: artifact"))
                && log.stdout.contains(name)
                && log.stdout.contains("step runs again"),
            "{what}: the log does not show {producer} running again:\n{}",
            log.stdout
        );
        assert_eq!(
            cert_state(&cfg),
            want,
            "{what}: CERT differs from a clean run"
        );
    }
}
