//! Load transactions left open before the gate (by `validate/<store>`, `validate/<graph>`, or the
//! gate itself; see `validate::rehearse`) for the load steps of the same process, by run and
//! store. A runner that dies takes them with it (the server rolls them back), and the load step
//! then loads as usual.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use wf_stores::load::HeldLoad;

/// An open load and the run key of the job it ran.
struct Open {
    run_key: String,
    load: HeldLoad,
}

static OPEN: LazyLock<Mutex<HashMap<String, Open>>> = LazyLock::new(Default::default);

fn open() -> std::sync::MutexGuard<'static, HashMap<String, Open>> {
    OPEN.lock().unwrap_or_else(|p| p.into_inner())
}

fn key(run: &str, store: &str) -> String {
    format!("{run}\u{0}{store}")
}

/// Leaves `load`, which ran the job of `run_key` into `store`, for run `run`'s load step of it.
pub(crate) fn give(run: &str, store: &str, run_key: &str, load: HeldLoad) {
    let o = Open {
        run_key: run_key.to_string(),
        load,
    };
    open().insert(key(run, store), o);
}

/// What was left for the job of `run_key` into `store`: the open load when it ran this very
/// job (same run key), else nothing, with any other load of the store rolled back first, so it
/// cannot hold the locks the step's own load needs.
pub(crate) async fn take(
    run: &str,
    store: &str,
    run_key: &str,
) -> Result<Option<HeldLoad>, wf_stores::StoreError> {
    let found = open().remove(&key(run, store));
    match found {
        Some(o) if o.run_key == run_key => Ok(Some(o.load)),
        Some(o) => o.load.abandon().await.map(|_| None),
        None => Ok(None),
    }
}

/// Rolls back what was left for `store`: by an earlier attempt of a step that loads it again, or
/// for a gate that failed.
pub(crate) async fn discard(run: &str, store: &str) {
    let found = open().remove(&key(run, store));
    if let Some(o) = found {
        if let Err(e) = o.load.abandon().await {
            tracing::warn!("rolling back an earlier rehearsal of {store}: {e}");
        }
    }
}
