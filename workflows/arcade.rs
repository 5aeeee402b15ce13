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
