//! Failpoints for deterministic crash tests: `WF_FAILPOINT=<step-id>:<before|after-effect|after-record>`
//! aborts the process (no destructors, no flush) at that point of that step, as a power cut would.

use std::sync::OnceLock;

/// Where in a step's life the process may be made to abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// After the attempt is recorded as started, before the step's code runs.
    Before,
    /// After the step's code returned successfully, before its record is written.
    AfterEffect,
    /// After the step's record is durably written.
    AfterRecord,
}

fn parse(spec: &str) -> Option<(String, Point)> {
    let (step, point) = spec.rsplit_once(':')?;
    let point = match point {
        "before" => Point::Before,
        "after-effect" => Point::AfterEffect,
        "after-record" => Point::AfterRecord,
        _ => return None,
    };
    Some((step.to_string(), point))
}

fn armed() -> &'static Option<(String, Point)> {
    static ARMED: OnceLock<Option<(String, Point)>> = OnceLock::new();
    ARMED.get_or_init(|| std::env::var("WF_FAILPOINT").ok().and_then(|s| parse(&s)))
}

/// Aborts the process if the armed failpoint is `step` at `point`.
pub fn hit(step: &str, point: Point) {
    if let Some((s, p)) = armed() {
        if s == step && *p == point {
            eprintln!("wf: failpoint {step}:{point:?} hit, aborting");
            std::process::abort();
        }
    }
}

/// `WF_FAILPOINT_DELAY=<step-id>=<ms>[,…]`: the first attempt of that step in this process waits
/// that long before its code runs, so a test can act (stop a server) while the step is running.
fn delays() -> &'static std::collections::HashMap<String, u64> {
    static DELAYS: OnceLock<std::collections::HashMap<String, u64>> = OnceLock::new();
    DELAYS.get_or_init(|| {
        std::env::var("WF_FAILPOINT_DELAY")
            .unwrap_or_default()
            .split(',')
            .filter_map(|p| {
                let (step, ms) = p.rsplit_once('=')?;
                Some((step.trim().to_string(), ms.trim().parse().ok()?))
            })
            .collect()
    })
}

/// The delay armed for `step`'s first attempt, once per process.
pub fn delay(step: &str) -> Option<std::time::Duration> {
    static TAKEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let ms = *delays().get(step)?;
    let mut taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
    if taken.iter().any(|s| s == step) {
        return None;
    }
    taken.push(step.to_string());
    eprintln!("wf: failpoint delay {step}: waiting {ms} ms");
    Some(std::time::Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_step_ids_with_colons_and_rejects_unknown_points() {
        assert_eq!(
            parse("a/b:c:after-record"),
            Some(("a/b:c".into(), Point::AfterRecord))
        );
        assert_eq!(parse("x:before"), Some(("x".into(), Point::Before)));
        assert_eq!(parse("x:sometime"), None);
        assert_eq!(parse("nocolon"), None);
    }
}
