//! A run's checked parameters, journaled as a versioned JSON attribute (`params`) when the run is
//! created, so `wf resume` rebuilds the workflow from typed values and never parses the run's
//! argument strings again (they stay in the record for people to read).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The run attribute holding the parameters.
pub const ATTR: &str = "params";

/// Version of the parameter format; bump it when a field changes name or meaning, and teach
/// [`decode`] the older one.
pub const VERSION: u32 = 1;

/// What is journaled: the format version, the workflow's name and its checked arguments.
#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    version: u32,
    workflow: String,
    params: T,
}

/// The parameters of workflow `workflow` as the text of the `params` attribute.
/// The parameters of workflow `workflow` as the text of the `params` attribute; empty when they
/// cannot be written as JSON (a path that is not UTF-8), which `registry::build` refuses before
/// the run exists.
pub fn encode<T: Serialize>(workflow: &str, params: &T) -> String {
    let envelope = Envelope {
        version: VERSION,
        workflow: workflow.to_string(),
        params,
    };
    serde_json::to_string(&envelope).unwrap_or_default()
}

/// Why journaled parameters could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum ParamsError {
    #[error("run {run} was started by a newer wf (parameters version {found}; this wf reads version {VERSION}): resume it with that wf")]
    Newer { run: String, found: u32 },
    #[error("run {run} is a {found} run, its parameters say {said}: the journal is damaged; start a new run")]
    Workflow {
        run: String,
        found: String,
        said: String,
    },
    #[error("run {run}: its journaled parameters cannot be read ({detail}); start a new run")]
    Unreadable { run: String, detail: String },
}

/// Reads back the parameters of run `run` of workflow `workflow` from its `params` attribute.
pub fn decode<T: DeserializeOwned>(
    run: &str,
    workflow: &str,
    text: &str,
) -> Result<T, ParamsError> {
    let unreadable = |e: serde_json::Error| ParamsError::Unreadable {
        run: run.to_string(),
        detail: e.to_string(),
    };
    #[derive(Deserialize)]
    struct Head {
        version: u32,
        workflow: String,
    }
    let head: Head = serde_json::from_str(text).map_err(unreadable)?;
    if head.version > VERSION {
        return Err(ParamsError::Newer {
            run: run.to_string(),
            found: head.version,
        });
    }
    if head.workflow != workflow {
        return Err(ParamsError::Workflow {
            run: run.to_string(),
            found: workflow.to_string(),
            said: head.workflow,
        });
    }
    let envelope: Envelope<T> = serde_json::from_str(text).map_err(unreadable)?;
    Ok(envelope.params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct P {
        district: String,
        jobs: usize,
    }

    #[test]
    fn parameters_round_trip_and_a_newer_version_is_refused() {
        let p = P {
            district: "d1".into(),
            jobs: 3,
        };
        let text = encode("migrate", &p);
        assert_eq!(decode::<P>("mig-1", "migrate", &text).unwrap(), p);
        let newer = text.replace("\"version\":1", "\"version\":2");
        let e = decode::<P>("mig-1", "migrate", &newer)
            .unwrap_err()
            .to_string();
        assert!(e.contains("newer wf") && e.contains("version 2"), "{e}");
        let e = decode::<P>("mig-1", "batch", &text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a batch run"), "{e}");
        let e = decode::<P>(
            "mig-1",
            "migrate",
            "{\"version\":1,\"workflow\":\"migrate\"}",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("cannot be read"), "{e}");
    }
}
