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

use crate::config::{Config, Side, StoreConfig, StoreKind};
use crate::error::StoreError;
use crate::graph::{GraphConfig, GraphKind};
use crate::relational::redact;
use sqlx::Row;

/// Name of the marker table in enrolled relational databases.
pub const ENROLL_TABLE: &str = "wf_enrollment";
/// Label of the marker node in enrolled graphs.
pub const ENROLL_LABEL: &str = "WfEnrollment";

/// The marker a CERT database carries once enrolled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    /// Always `cert` for now; kept as text so other environments can be added.
    pub environment: String,
    /// Random, so a PROD connection that sees it is provably looking at this CERT database.
    pub token: String,
    pub enrolled_at: String,
    pub enrolled_by: String,
}

impl Enrollment {
    /// A new CERT marker: random token, now, this OS user at this host.
    pub fn new_cert() -> Enrollment {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(rand::random::<[u8; 32]>());
        Enrollment {
            environment: "cert".into(),
            token: hex::encode(&h.finalize()[..16]),
            enrolled_at: chrono::Utc::now().to_rfc3339(),
            enrolled_by: who(),
        }
    }
}

/// `user@host` of this process, for markers and the audit trail.
pub fn who() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into());
    format!("{user}@{host}")
}

/// What a database is, as its server or file system says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Postgres {
        system_id: String,
        db_oid: i64,
    },
    File {
        dev: u64,
        ino: u64,
    },
    Bolt {
        addrs: Vec<String>,
        database: String,
    },
}

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
    let what = format!("{} store {} ({})", side.as_str(), store.name, redact(&url));
    let q = |e| StoreError::from_sqlx(&store.name, e);
    let (identity, enrollment) = match store.kind {
        StoreKind::Postgres => {
            let db = crate::postgres::PgStore::connect(&store.name, &url, side).await?;
            let row = sqlx::query(
                "select (select system_identifier::text from pg_control_system()), \
                 (select oid::int8 from pg_database where datname = current_database())",
            )
            .fetch_one(db.pool())
            .await
            .map_err(q)?;
            let id = Identity::Postgres {
                system_id: row.get(0),
                db_oid: row.get(1),
            };
            let has: bool = sqlx::query_scalar("select to_regclass('wf_enrollment') is not null")
                .fetch_one(db.pool())
                .await
                .map_err(q)?;
            let e = if has {
                read_marker(db.pool()).await.map_err(q)?
            } else {
                None
            };
            (id, e)
        }
        StoreKind::Sqlite => {
            let db = crate::sqlite::SqliteStore::connect(&store.name, &url, side).await?;
            let path = sqlite_path(&url);
            let id = file_identity(&path)
                .map_err(|e| guard_err(format!("{what}: cannot stat {}: {e}", path.display())))?;
            let has: i64 = sqlx::query_scalar(
                "select count(*) from sqlite_master where type = 'table' and name = 'wf_enrollment'",
            )
            .fetch_one(db.pool())
            .await
            .map_err(q)?;
            let e = if has > 0 {
                read_marker(db.pool()).await.map_err(q)?
            } else {
                None
            };
            (id, e)
        }
    };
    Ok(Probe {
        what,
        identity,
        enrollment,
    })
}

async fn read_marker<'e, DB, E>(exec: E) -> Result<Option<Enrollment>, sqlx::Error>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'e, Database = DB>,
    String: sqlx::Type<DB> + for<'r> sqlx::Decode<'r, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
{
    let row = sqlx::query(
        "select environment, token, enrolled_at, enrolled_by from wf_enrollment limit 1",
    )
    .fetch_optional(exec)
    .await?;
    Ok(row.map(|r| Enrollment {
        environment: r.get(0),
        token: r.get(1),
        enrolled_at: r.get(2),
        enrolled_by: r.get(3),
    }))
}

/// The file a `sqlite:` URL names (query string and prefixes dropped).
fn sqlite_path(url: &str) -> std::path::PathBuf {
    let p = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    std::path::PathBuf::from(p.split('?').next().unwrap_or(p))
}

fn file_identity(path: &std::path::Path) -> std::io::Result<Identity> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok(Identity::File {
        dev: m.dev(),
        ino: m.ino(),
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
    let url = s.url(Side::Cert)?;
    let q = |e| StoreError::from_sqlx(&s.name, e);
    let create = "create table if not exists wf_enrollment (environment text not null, \
        token text not null, enrolled_at text not null, enrolled_by text not null)";
    let insert = "insert into wf_enrollment (environment, token, enrolled_at, enrolled_by) \
        values ($1, $2, $3, $4)";
    match s.kind {
        StoreKind::Postgres => {
            let db = crate::postgres::PgStore::connect(&s.name, &url, Side::Cert).await?;
            let mut tx = db.pool().begin().await.map_err(q)?;
            sqlx::query(create).execute(&mut *tx).await.map_err(q)?;
            // Readable by every role, so a PROD connection under another role still sees it.
            sqlx::query("grant select on wf_enrollment to public")
                .execute(&mut *tx)
                .await
                .map_err(q)?;
            bind4(sqlx::query(insert), e)
                .execute(&mut *tx)
                .await
                .map_err(q)?;
            tx.commit().await.map_err(q)?;
        }
        StoreKind::Sqlite => {
            let db = crate::sqlite::SqliteStore::connect(&s.name, &url, Side::Cert).await?;
            let mut tx = db.pool().begin().await.map_err(q)?;
            sqlx::query(create).execute(&mut *tx).await.map_err(q)?;
            sqlx::query(insert)
                .bind(&e.environment)
                .bind(&e.token)
                .bind(&e.enrolled_at)
                .bind(&e.enrolled_by)
                .execute(&mut *tx)
                .await
                .map_err(q)?;
            tx.commit().await.map_err(q)?;
        }
    }
    Ok(())
}

fn bind4<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    e: &'q Enrollment,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    q.bind(&e.environment)
        .bind(&e.token)
        .bind(&e.enrolled_at)
        .bind(&e.enrolled_by)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths_drop_prefix_and_query() {
        assert_eq!(
            sqlite_path("sqlite:///tmp/a.db?mode=ro"),
            std::path::PathBuf::from("/tmp/a.db")
        );
        assert_eq!(
            sqlite_path("sqlite:rel/b.db"),
            std::path::PathBuf::from("rel/b.db")
        );
    }

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
