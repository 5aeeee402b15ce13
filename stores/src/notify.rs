//! `[[notify]]` in wf.toml: who is told what while wf runs unattended. Parsed and checked here
//! with the rest of the configuration; delivered by the `wf` binary (workflows/notify.rs).

use serde::{Deserialize, Serialize};

/// The events a target may pick.
pub const EVENTS: [&str; 7] = [
    "done",
    "failed",
    "failed_validation",
    "paused",
    "cancelled",
    "retried",
    "silent",
];

/// One notification target: a webhook (JSON POST with a `text` field Slack and Teams show), a
/// command (the same JSON on stdin), or both, for the events it names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// URL, or `env:VAR` (webhook URLs carry their secret in the path).
    #[serde(default)]
    pub webhook: Option<String>,
    /// A program and its arguments, run without a shell; the payload goes to its stdin.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Which of `EVENTS` to send.
    pub events: Vec<String>,
    /// `retried`: sent once a step has been retried more than this many times (default 3).
    #[serde(default)]
    pub retries_over: Option<u32>,
    /// `silent`: sent once a run has reported nothing (no step started, finished or made
    /// progress) for this many minutes (default 30).
    #[serde(default)]
    pub silent_minutes: Option<u64>,
}

impl Notify {
    /// What is wrong with this target, if anything (one line).
    pub fn problem(&self) -> Option<String> {
        if self.webhook.is_none() && self.command.as_ref().is_none_or(|c| c.is_empty()) {
            return Some("[[notify]] needs a webhook or a command".into());
        }
        if self.events.is_empty() {
            return Some(format!(
                "[[notify]] names no events; pick from {}",
                EVENTS.join(", ")
            ));
        }
        if let Some(bad) = self.events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
            return Some(format!(
                "[[notify]] event `{bad}` is unknown; pick from {}",
                EVENTS.join(", ")
            ));
        }
        if let Some(w) = &self.webhook {
            let direct = !w.starts_with("env:");
            if direct && !(w.starts_with("http://") || w.starts_with("https://")) {
                return Some(format!(
                    "[[notify]] webhook `{w}` is not an http(s) URL nor env:VAR"
                ));
            }
        }
        None
    }

    pub fn wants(&self, event: &str) -> bool {
        self.events.iter().any(|e| e == event)
    }

    /// The webhook URL, with `env:VAR` read.
    pub fn webhook_url(&self) -> Option<Result<String, String>> {
        let w = self.webhook.as_ref()?;
        Some(match w.strip_prefix("env:") {
            Some(var) => std::env::var(var)
                .map_err(|_| format!("environment variable {var} (the webhook URL) is not set")),
            None => Ok(w.clone()),
        })
    }

    /// The target as the log may show it: never the URL itself (its path is the secret).
    pub fn describe(&self) -> String {
        match (&self.webhook, &self.command) {
            (Some(w), _) if w.starts_with("env:") => format!("webhook {w}"),
            (Some(w), _) => {
                let host = w
                    .split("://")
                    .nth(1)
                    .and_then(|r| r.split('/').next())
                    .unwrap_or("?");
                format!("webhook https://{host}/…")
            }
            (None, Some(c)) => format!("command {}", c.first().map(String::as_str).unwrap_or("")),
            (None, None) => "nothing".into(),
        }
    }
}
