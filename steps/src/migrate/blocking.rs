//! Anonymizer work off the async threads, with its errors as step errors.

use super::input_err;
use crate::anonymize::AnonError;
use wf_engine::StepError;

fn anon_err(e: AnonError) -> StepError {
    match e {
        AnonError::Leak(_) => StepError::Gate(e.to_string()),
        AnonError::Staging(s) => input_err("extract")(s),
        other => StepError::Fatal(other.to_string()),
    }
}

/// Runs anonymizer work off the async threads; a leak stops the run at the gate, a damaged
/// input makes the step that wrote it run again.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AnonError> + Send + 'static,
) -> Result<T, StepError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StepError::Fatal(format!("anonymization task failed: {e}")))?
        .map_err(anon_err)
}
