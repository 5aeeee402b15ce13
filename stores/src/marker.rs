//! What a database says it is (its identity), and the marker an enrolled CERT database carries:
//! the types the CERT guard compares, which every backend produces.

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

/// The identity of a database file: its device and inode.
pub fn file_identity(path: &std::path::Path) -> std::io::Result<Identity> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok(Identity::File {
        dev: m.dev(),
        ino: m.ino(),
    })
}

/// The first row of the marker table through `exec` (the caller knows the table exists).
pub(crate) async fn read_marker<'e, DB, E>(exec: E) -> Result<Option<Enrollment>, sqlx::Error>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'e, Database = DB>,
    String: sqlx::Type<DB> + for<'r> sqlx::Decode<'r, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
{
    use sqlx::Row;
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

/// The marker table, as both engines write it.
pub(crate) const CREATE_MARKER: &str =
    "create table if not exists wf_enrollment (environment text not null, \
    token text not null, enrolled_at text not null, enrolled_by text not null)";
/// One marker row (`$n` placeholders, which SQLite accepts too).
pub(crate) const INSERT_MARKER: &str =
    "insert into wf_enrollment (environment, token, enrolled_at, enrolled_by) \
    values ($1, $2, $3, $4)";
