//! `[[notify]]`: a local webhook receiver gets exactly one notification per chosen event and run
//! for a batch with a failing district (each run's own, and the batch's), with the `text` field
//! chat tools show; a command target gets the same payload on stdin; and a run completes, on time,
//! with its failed delivery recorded, when the receiver is down.

use crate::util::Sandbox;
use crate::validation::{setup, KEY};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A webhook receiver on a free local port: records each JSON body, answers 200.
fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook/secret-path", listener.local_addr().unwrap());
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let g = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let l = line.to_ascii_lowercase();
                if let Some(v) = l.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0u8; len];
            r.read_exact(&mut body).unwrap();
            g.lock()
                .unwrap()
                .push(serde_json::from_slice(&body).unwrap());
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, got)
}

fn add_notify(cfg: &Path, block: &str) {
    let text = std::fs::read_to_string(cfg).unwrap();
    std::fs::write(cfg, format!("{text}\n{block}\n")).unwrap();
}

#[test]
fn one_notification_per_event_and_run_for_a_batch_with_a_failing_district() {
    let sb = Sandbox::new();
    let cfg = setup(&sb, "");
    let (url, got) = receiver();
    let stdin_file = sb.out("command-payloads.jsonl");
    add_notify(
        &cfg,
        &format!(
            "[[notify]]\nwebhook = \"env:WF_TEST_HOOK\"\nevents = [\"done\", \"failed\"]\n\n\
             [[notify]]\ncommand = [\"sh\", \"-c\", \"cat >> {}; echo >> {}\"]\nevents = [\"failed\"]\n",
            stdin_file.display(),
            stdin_file.display()
        ),
    );
    let out = crate::util::ran(
        sb.cmd([
            "batch",
            "--districts",
            "1,99,4",
            "--config-file",
            cfg.to_str().unwrap(),
        ])
        .env("WF_ANON_KEY", KEY)
        .env("WF_TEST_HOOK", &url)
        .output()
        .unwrap(),
    );
    assert_eq!(out.code, Some(3), "{}\n{}", out.stdout, out.stderr);
    let batch = out.stdout.lines().next().unwrap().to_string();
    let mut seen: Vec<(String, String)> = got
        .lock()
        .unwrap()
        .iter()
        .map(|v| {
            assert!(
                v["text"]
                    .as_str()
                    .is_some_and(|t| t.contains(v["run"].as_str().unwrap())),
                "{v}"
            );
            assert!(
                !v.to_string().contains("secret-path"),
                "no URL in the payload"
            );
            (
                v["run"].as_str().unwrap().to_string(),
                v["event"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    let mut events: Vec<(&str, &str)> = seen
        .iter()
        .map(|(r, e)| {
            (
                if r.starts_with("bat-") {
                    "batch"
                } else {
                    "run"
                },
                e.as_str(),
            )
        })
        .collect();
    events.sort();
    assert_eq!(
        events,
        [
            ("batch", "failed"),
            ("run", "done"),
            ("run", "done"),
            ("run", "failed")
        ],
        "{seen:?}"
    );
    assert!(seen.contains(&(batch.clone(), "failed".into())));
    let failed_run = got
        .lock()
        .unwrap()
        .iter()
        .find(|v| v["event"] == "failed" && v["district"] == "99")
        .cloned()
        .expect("district 99's failure");
    assert!(
        failed_run["message"]
            .as_str()
            .unwrap()
            .contains("not found"),
        "{failed_run}"
    );
    assert_eq!(
        failed_run["next"],
        format!("wf resume {}", failed_run["run"].as_str().unwrap())
    );
    // The command target got the two failures on stdin.
    let lines = std::fs::read_to_string(&stdin_file).unwrap();
    let cmd: Vec<Value> = lines
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(cmd.len(), 2, "{lines}");
    assert!(cmd.iter().all(|v| v["event"] == "failed"));
    // Every delivery is recorded, without the URL.
    let log = std::fs::read_to_string(sb.data().join("notifications.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 6, "{log}");
    assert!(!log.contains("secret-path") && log.contains("env:WF_TEST_HOOK"));
}

#[test]
fn a_run_completes_when_the_receiver_is_down() {
    let sb = Sandbox::new();
    let cfg = setup(&sb, "");
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    add_notify(
        &cfg,
        &format!("[[notify]]\nwebhook = \"http://127.0.0.1:{port}/hook/secret-path\"\nevents = [\"done\"]\n"),
    );
    let t = std::time::Instant::now();
    let out = crate::util::ran(
        sb.cmd([
            "run",
            "migrate",
            "--district",
            "1",
            "--config-file",
            cfg.to_str().unwrap(),
        ])
        .env("WF_ANON_KEY", KEY)
        .output()
        .unwrap(),
    );
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(t.elapsed().as_secs() < 60, "the retries are bounded");
    let log = std::fs::read_to_string(sb.data().join("notifications.jsonl")).unwrap();
    let line: Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(line["delivered"], false, "{line}");
    assert_eq!(line["attempts"], 4);
    assert!(
        line["error"].as_str().unwrap().contains("webhook"),
        "{line}"
    );
    assert!(
        !log.contains("secret-path"),
        "the URL stays out of the record: {log}"
    );
}

#[test]
fn a_notify_block_with_an_unknown_event_is_refused_naming_it() {
    let sb = Sandbox::new();
    let cfg = setup(&sb, "");
    add_notify(
        &cfg,
        "[[notify]]\nwebhook = \"https://example.invalid/x\"\nevents = [\"finished\"]\n",
    );
    let out = crate::util::ran(
        sb.cmd([
            "run",
            "migrate",
            "--district",
            "1",
            "--config-file",
            cfg.to_str().unwrap(),
        ])
        .env("WF_ANON_KEY", KEY)
        .output()
        .unwrap(),
    );
    assert_ne!(out.code, Some(0));
    assert!(
        out.stderr.contains("event `finished` is unknown"),
        "{}",
        out.stderr
    );
}
