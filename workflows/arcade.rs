//! Server commands for ArcadeDB, the Bolt server wf's tests and benchmarks run (`create database
//! X`, `drop database X` over its HTTP API). The credentials reach curl on its standard input,
//! never on a command line that `ps` shows.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Runs `command` on the server at `http` as `user`; curl's output (a failure is in its status).
pub fn server_command(http: &str, user: &str, pw: &str, command: &str) -> std::io::Result<Output> {
    let body = serde_json::json!({ "command": command }).to_string();
    let mut child = Command::new("curl")
        .args(["-fsS", "-K", "-", "-X", "POST"])
        .args(["-H", "Content-Type: application/json", "-d", &body])
        .arg(format!("{http}/api/v1/server"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    if let Some(mut stdin) = child.stdin.take() {
        writeln!(stdin, "user = \"{}:{}\"", quote(user), quote(pw))?;
    }
    child.wait_with_output()
}

/// Runs `command` in `language` (`opencypher`, `sql`) with `params` on database `db` over the
/// HTTP API; the answer's `result` rows. Tests use it to build graphs wf did not write (maps
/// included, which only ArcadeDB's SQL stores) and to read CERT without wf.
pub fn command(
    http: &str,
    (user, pw): (&str, &str),
    db: &str,
    (language, command): (&str, &str),
    params: serde_json::Value,
) -> std::io::Result<Vec<serde_json::Value>> {
    let body = serde_json::json!({ "language": language, "command": command, "params": params })
        .to_string();
    let mut child = Command::new("curl")
        .args(["-fsS", "-K", "-", "-X", "POST"])
        .args(["-H", "Content-Type: application/json"])
        .arg(format!("{http}/api/v1/command/{db}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    if let Some(mut stdin) = child.stdin.take() {
        // `-K -` reads curl's config from stdin, so the body goes there too (`data-binary`).
        writeln!(stdin, "user = \"{}:{}\"", quote(user), quote(pw))?;
        writeln!(stdin, "data-binary = \"{}\"", quote(&body))?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "cypher on {db} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(std::io::Error::other)?;
    Ok(v["result"].as_array().cloned().unwrap_or_default())
}
