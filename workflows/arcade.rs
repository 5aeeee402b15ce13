//! ArcadeDB's HTTP API, for the Bolt server wf's tests and benchmarks run: server commands
//! (`create database X`, `drop database X`) and queries (OpenCypher or SQL, to build graphs wf did
//! not write). The credentials reach curl on its standard input, never on a command line that
//! `ps` shows.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// POSTs the JSON `body` to `url` with curl; the credentials and the body go in curl's config on
/// its standard input, never on its command line.
fn post(url: &str, (user, pw): (&str, &str), body: &str) -> std::io::Result<Output> {
    let mut child = Command::new("curl")
        .args(["-fsS", "-K", "-", "-X", "POST"])
        .args(["-H", "Content-Type: application/json"])
        .arg(url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    if let Some(mut stdin) = child.stdin.take() {
        writeln!(stdin, "user = \"{}:{}\"", quote(user), quote(pw))?;
        writeln!(stdin, "data-binary = \"{}\"", quote(body))?;
    }
    child.wait_with_output()
}

/// Runs `command` on the server at `http` as `user`; curl's output (a failure is in its status).
pub fn server_command(http: &str, user: &str, pw: &str, command: &str) -> std::io::Result<Output> {
    let body = serde_json::json!({ "command": command }).to_string();
    post(&format!("{http}/api/v1/server"), (user, pw), &body)
}

/// Runs `command` in `language` (`opencypher`, `sql`) with `params` on database `db` over the
/// HTTP API; the answer's `result` rows. Tests use it to build graphs wf did not write (maps
/// included, which only ArcadeDB's SQL stores) and to read CERT without wf.
pub fn command(
    http: &str,
    creds: (&str, &str),
    db: &str,
    (language, command): (&str, &str),
    params: serde_json::Value,
) -> std::io::Result<Vec<serde_json::Value>> {
    let body = serde_json::json!({ "language": language, "command": command, "params": params })
        .to_string();
    let out = post(&format!("{http}/api/v1/command/{db}"), creds, &body)?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "{language} on {db} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(std::io::Error::other)?;
    Ok(v["result"].as_array().cloned().unwrap_or_default())
}
