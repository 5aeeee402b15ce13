//! The CERT guard: before wf writes into a CERT database it proves that database is not a PROD
//! source, by what the servers say they are rather than by how the URLs are spelled.
//!
//! Two proofs, both required:
//! - **Identity.** PostgreSQL: the cluster's system identifier and the database's oid; SQLite and
//!   the embedded graph: the file's device and inode; Bolt: the resolved socket addresses and the
//!   database name. A CERT target whose identity equals any PROD source's is refused.
//! - **Enrollment** (Rails' protected environments): a CERT database carries a small wf-owned marker
//!   (`wf_enrollment` table, or a `WfEnrollment` node) written once by `wf cert enroll`. wf writes
//!   only into enrolled databases, and refuses a PROD source that carries a CERT marker, which also
//!   catches aliases no identity comparison sees (another role, a unix socket, a proxy).

use crate::config::{Config, Side, StoreConfig};
use crate::error::StoreError;
use crate::graph::{GraphConfig, GraphKind};
use crate::relational::redact;

pub use crate::marker::{file_identity, who, Enrollment, Identity, ENROLL_LABEL, ENROLL_TABLE};

/// One database on one side: its identity, its marker, and how to name it in messages.
#[derive(Debug, Clone)]
pub struct Probe {
    pub what: String,
    pub identity: Identity,
    pub enrollment: Option<Enrollment>,
}

fn guard_err(message: String) -> StoreError {
    StoreError::Guard { message }
}

/// Probes a relational store on `side` (PROD read-only).
pub async fn probe_store(store: &StoreConfig, side: Side) -> Result<Probe, StoreError> {
    let url = store.url(side)?;
    let db = crate::connect(store, side).await?;
    Ok(Probe {
        what: format!("{} store {} ({})", side.as_str(), store.name, redact(&url)),
        identity: db.identity().await?,
        enrollment: db.enrollment().await?,
    })
}

/// Probes the graph on `side`.
pub async fn probe_graph(g: &GraphConfig, side: Side) -> Result<Probe, StoreError> {
    let url = g.url(side)?;
    let what = format!("{} graph {} ({url})", side.as_str(), g.name);
    let identity = match g.kind {
        GraphKind::Embedded => {
            let path = crate::graph::embedded::path_of(&url);
            if side == Side::Cert && !std::path::Path::new(path).exists() {
                // A CERT file not made yet cannot be any PROD file; opening for write creates it.
                crate::graph::open_write(g).await?.rollback().await?;
            }
            file_identity(std::path::Path::new(path))
                .map_err(|e| guard_err(format!("{what}: cannot stat {path}: {e}")))?
        }
        GraphKind::Bolt => {
            let hostport = url
                .split_once("://")
                .map(|(_, r)| r)
                .unwrap_or(&url)
                .trim_end_matches('/');
            let mut addrs: Vec<String> = tokio::net::lookup_host(hostport)
                .await
                .map_err(|e| guard_err(format!("{what}: cannot resolve {hostport}: {e}")))?
                .map(|a| a.to_string())
                .collect();
            addrs.sort();
            addrs.dedup();
            Identity::Bolt {
                addrs,
                database: g.database(side).unwrap_or("(default)").to_lowercase(),
            }
        }
    };
    let mut r = crate::graph::open_read(g, side).await?;
    let enrollment = r.enrollment().await?;
    r.finish().await?;
    Ok(Probe {
        what,
        identity,
        enrollment,
    })
}

fn same_server(a: &Identity, b: &Identity) -> bool {
    match (a, b) {
        (
            Identity::Bolt {
                addrs: x,
                database: d,
            },
            Identity::Bolt {
                addrs: y,
                database: e,
            },
        ) => d == e && x.iter().any(|a| y.contains(a)),
        _ => a == b,
    }
}

/// What `verify` checks: which CERT targets are about to be written.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// Relational store names.
    pub stores: Vec<String>,
    /// The graph too.
    pub graph: bool,
}

impl Targets {
    /// Every CERT target of `cfg`.
    pub fn all(cfg: &Config) -> Targets {
        Targets {
            stores: cfg.stores.iter().map(|s| s.name.clone()).collect(),
            graph: cfg.graph.is_some(),
        }
    }
}

/// Every PROD source of `cfg`, probed read-only.
async fn prod_probes(cfg: &Config) -> Result<Vec<Probe>, StoreError> {
    let mut out = Vec::new();
    for s in &cfg.stores {
        out.push(probe_store(s, Side::Prod).await?);
    }
    if let Some(g) = &cfg.graph {
        out.push(probe_graph(g, Side::Prod).await?);
    }
    Ok(out)
}

/// The CERT targets named, probed.
async fn cert_probes(cfg: &Config, targets: &Targets) -> Result<Vec<Probe>, StoreError> {
    let mut out = Vec::new();
    for name in &targets.stores {
        let s = cfg
            .store(name)
            .ok_or_else(|| guard_err(format!("store {name} is not in the config")))?;
        out.push(probe_store(s, Side::Cert).await?);
    }
    if targets.graph {
        if let Some(g) = &cfg.graph {
            out.push(probe_graph(g, Side::Cert).await?);
        }
    }
    Ok(out)
}

/// Refuses when a CERT target is a PROD source (by identity or by marker) or a PROD source
/// carries a CERT marker.
fn refuse_overlap(certs: &[Probe], prods: &[Probe]) -> Result<(), StoreError> {
    for p in prods {
        if let Some(e) = p.enrollment.as_ref().filter(|e| e.environment == "cert") {
            return Err(guard_err(format!(
                "{} is enrolled as a CERT database (by {} at {}): wf refuses it as PROD; fix the PROD connection in wf.toml",
                p.what, e.enrolled_by, e.enrolled_at
            )));
        }
    }
    for c in certs {
        for p in prods {
            if same_server(&c.identity, &p.identity) {
                return Err(guard_err(format!(
                    "{} is the same database as {} (same server identity): wf never writes into PROD; point CERT at another database in wf.toml",
                    c.what, p.what
                )));
            }
        }
    }
    Ok(())
}

/// Proves that every CERT target in `targets` is enrolled and is not a PROD source. Called before
/// any write into CERT (loads, rollbacks, recover's replacement of earlier loads).
pub async fn verify(cfg: &Config, targets: &Targets) -> Result<(), StoreError> {
    let certs = cert_probes(cfg, targets).await?;
    let prods = prod_probes(cfg).await?;
    refuse_overlap(&certs, &prods)?;
    for c in &certs {
        match &c.enrollment {
            Some(e) if e.environment == "cert" => {}
            Some(e) => {
                return Err(guard_err(format!(
                    "{} is enrolled as `{}`, not as CERT: wf writes only into CERT databases",
                    c.what, e.environment
                )))
            }
            None => {
                return Err(guard_err(format!(
                    "{} is not enrolled as a CERT database: check it is not PROD, then run `wf cert enroll` once (or `wf seed --env cert`)",
                    c.what
                )))
            }
        }
    }
    Ok(())
}

/// Enrolls the CERT targets (those not enrolled yet) after proving none of them is a PROD source.
/// Returns what was enrolled now, by name.
pub async fn enroll(cfg: &Config, targets: &Targets) -> Result<Vec<String>, StoreError> {
    let certs = cert_probes(cfg, targets).await?;
    let prods = prod_probes(cfg).await?;
    refuse_overlap(&certs, &prods)?;
    let mut done = Vec::new();
    for (name, probe) in targets.stores.iter().zip(&certs) {
        if probe.enrollment.is_some() {
            continue;
        }
        let s = cfg
            .store(name)
            .ok_or_else(|| guard_err(format!("store {name} is not in the config")))?;
        enroll_store(s, &Enrollment::new_cert()).await?;
        done.push(name.clone());
    }
    if let (true, Some(g)) = (targets.graph, &cfg.graph) {
        if certs.last().is_some_and(|p| p.enrollment.is_none()) {
            let mut w = crate::graph::open_write(g).await?;
            w.enroll(&Enrollment::new_cert()).await?;
            w.commit().await?;
            done.push(g.name.clone());
        }
    }
    Ok(done)
}

async fn enroll_store(s: &StoreConfig, e: &Enrollment) -> Result<(), StoreError> {
    crate::connect(s, Side::Cert).await?.enroll(e).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bolt_identity_matches_on_any_shared_address_and_same_database() {
        let a = Identity::Bolt {
            addrs: vec!["127.0.0.1:7687".into()],
            database: "cert".into(),
        };
        let b = Identity::Bolt {
            addrs: vec!["127.0.0.1:7687".into(), "[::1]:7687".into()],
            database: "cert".into(),
        };
        let c = Identity::Bolt {
            addrs: vec!["127.0.0.1:7687".into()],
            database: "prod".into(),
        };
        assert!(same_server(&a, &b));
        assert!(!same_server(&a, &c));
    }
}
