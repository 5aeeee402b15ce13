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
