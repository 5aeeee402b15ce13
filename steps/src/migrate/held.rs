//! The PROD snapshots a plan keeps open for its per-table extract steps, in this process only: a
//! runner that dies takes them with it, which is why the plan step is session-bound (see
//! `Workflow::session_bound`). Entries go when the last table of their store is extracted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use wf_stores::extract::Snap;

/// One store's open snapshot: shared directly (engines that cannot export it), or attached to
/// by its exported id (PostgreSQL), so tables of one store are read in parallel.
pub(crate) struct Held {
    pub snap: tokio::sync::Mutex<Snap>,
    pub exported: Option<String>,
    remaining: AtomicUsize,
}

static HELD: LazyLock<Mutex<HashMap<String, Arc<Held>>>> = LazyLock::new(Default::default);

fn key(epoch: &str, store: &str) -> String {
    format!("{epoch}\u{0}{store}")
}

fn held() -> std::sync::MutexGuard<'static, HashMap<String, Arc<Held>>> {
    HELD.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keeps `snap` open for the `tables` extract steps of `store` planned in `epoch`.
pub(crate) fn hold(epoch: &str, store: &str, snap: Snap, exported: Option<String>, tables: usize) {
    let h = Held {
        snap: tokio::sync::Mutex::new(snap),
        exported,
        remaining: AtomicUsize::new(tables),
    };
    held().insert(key(epoch, store), Arc::new(h));
}

/// The snapshot of `store` planned in `epoch`, if this process still holds it.
pub(crate) fn get(epoch: &str, store: &str) -> Option<Arc<Held>> {
    held().get(&key(epoch, store)).cloned()
}

/// One table of `store` is extracted; the last one closes the snapshot.
pub(crate) fn table_done(epoch: &str, store: &str) {
    let k = key(epoch, store);
    let mut map = held();
    let last = map
        .get(&k)
        .is_some_and(|h| h.remaining.fetch_sub(1, Ordering::AcqRel) <= 1);
    if last {
        map.remove(&k);
    }
}

/// Closes every snapshot a plan of `epoch_prefix` (a run's step key) holds: a plan that runs again
/// replaces its predecessor's.
pub(crate) fn release(epoch_prefix: &str) {
    held().retain(|k, _| !k.starts_with(epoch_prefix));
}
