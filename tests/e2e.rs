//! End to end on real servers: PostgreSQL for the four relational stores and the Bolt server
//! (ArcadeDB) for the graph. A migrate run is SIGKILLed again and again inside every phase
//! (extract, anonymize, validate, loads) and resumed each time; the CERT it leaves must equal the
//! CERT of an uninterrupted run of the same district, table by table (checksums) and in the graph.

use crate::util::Sandbox;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

const KEY: &str = "e2e-key-0123456789abcdef";
const STORES: [&str; 4] = ["ids", "hcp1", "hcp2", "adb"];

/// Where PROD and CERT live: the shared test servers, or (for CERT) servers of the test's own.
pub(crate) struct Env {
    admin: String,
    bolt: (String, String, String, String),
    /// CERT's PostgreSQL admin URL and Bolt server (address, user, password, HTTP API).
    pub(crate) cert_admin: String,
    pub(crate) cert_bolt: (String, String, String, String),
    tag: String,
    /// Sides whose databases `create` made: dropped when the test ends, unless it failed (then
    /// they stay for a look).
    created: std::sync::Mutex<Vec<String>>,
}

impl Drop for Env {
    fn drop(&mut self) {
        let sides = std::mem::take(&mut *self.created.lock().unwrap_or_else(|e| e.into_inner()));
        if std::thread::panicking() || sides.is_empty() {
            return;
        }
        let Ok(rt) = tokio::runtime::Runtime::new() else {
            return;
        };
        rt.block_on(async {
            for side in &sides {
                let Ok(pool) = sqlx::PgPool::connect(self.admin_of(side)).await else {
                    continue;
                };
                for s in STORES {
                    let url = self.pg_url(side, s);
                    let name = url.rsplit_once('/').map_or("", |(_, n)| n);
                    let sql = format!("drop database if exists {name} with (force)");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
                }
            }
        });
        for side in &sides {
            let (_, user, pw, http) = self.bolt_of(side);
            let _ = wf::arcade::server_command(
                http,
                user,
                pw,
                &format!("drop database {}", self.graph_db(side)),
            );
        }
    }
}

impl Env {
    pub(crate) fn get(sb: &Sandbox) -> Option<Env> {
        let admin = match std::env::var("WF_TEST_PG_URL") {
            Ok(u) => u,
            Err(_) if std::env::var("CI").is_ok() => panic!("WF_TEST_PG_URL is not set in CI"),
            Err(_) => {
                eprintln!(
                    "skipped: WF_TEST_PG_URL is not set (scripts/test.sh starts the servers)"
                );
                return None;
            }
        };
        let get = |k: &str| std::env::var(k).ok();
        let bolt = match (
            get("WF_TEST_BOLT_URL"),
            get("WF_TEST_BOLT_USER"),
            get("WF_TEST_BOLT_PASSWORD"),
            get("WF_TEST_ARCADE_HTTP"),
        ) {
            (Some(a), Some(b), Some(c), Some(d)) => (a, b, c, d),
            _ if std::env::var("CI").is_ok() => panic!("WF_TEST_BOLT_URL is not set in CI"),
            _ => {
                eprintln!("skipped: WF_TEST_BOLT_URL is not set");
                return None;
            }
        };
        let tag: String = sb
            .dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_lowercase()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        Some(Env {
            cert_admin: admin.clone(),
            cert_bolt: bolt.clone(),
            admin,
            bolt,
            tag,
            created: Default::default(),
        })
    }

    fn admin_of(&self, side: &str) -> &str {
        if side == "prod" {
            &self.admin
        } else {
            &self.cert_admin
        }
    }

    pub(crate) fn bolt_of(&self, side: &str) -> &(String, String, String, String) {
        if side == "prod" {
            &self.bolt
        } else {
            &self.cert_bolt
        }
    }

    /// A name part unique to the test's sandbox (for databases of its own).
    pub(crate) fn tag(&self) -> &str {
        &self.tag
    }

    pub(crate) fn pg_url(&self, side: &str, store: &str) -> String {
        let base = self.admin_of(side).rsplit_once('/').unwrap().0;
        format!("{base}/e2e_{}_{side}_{store}", self.tag)
    }

    pub(crate) fn graph_db(&self, side: &str) -> String {
        format!("e2e_{}_{side}_sp", self.tag)
    }

    /// Creates the PostgreSQL databases and graph databases of `sides`.
    pub(crate) fn create(&self, sides: &[&str]) {
        self.created
            .lock()
            .unwrap()
            .extend(sides.iter().map(|s| s.to_string()));
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            for side in sides {
                let pool = sqlx::PgPool::connect(self.admin_of(side)).await.unwrap();
                for s in STORES {
                    let name = self.pg_url(side, s).rsplit_once('/').unwrap().1.to_string();
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "drop database if exists {name}"
                    )))
                    .execute(&pool)
                    .await
                    .unwrap();
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database {name}")))
                        .execute(&pool)
                        .await
                        .unwrap();
                }
            }
        });
        for side in sides {
            let (_, user, pw, http) = self.bolt_of(side);
            for cmd in [
                format!("drop database {}", self.graph_db(side)),
                format!("create database {}", self.graph_db(side)),
            ] {
                wf::arcade::server_command(http, user, pw, &cmd).unwrap();
            }
        }
    }

    /// The config for PROD and the CERT of `side`, with its rules files, in `dir`.
    pub(crate) fn config(&self, dir: &Path, side: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let root = env!("CARGO_MANIFEST_DIR");
        let example = std::fs::read_to_string(format!("{root}/config/wf.example.toml")).unwrap();
        let mut text = String::new();
        let mut store = String::new();
        for line in example.lines() {
            let t = line.trim_start();
            if let Some(n) = t.strip_prefix("name = ") {
                store = n.trim_matches('"').to_string();
            }
            let key = t.split(' ').next().unwrap_or_default();
            let graph = store == "sp";
            let (u, n, p, _) = &self.bolt;
            let out = match (graph, key) {
                (false, "prod") => format!("prod = \"{}\"", self.pg_url("prod", &store)),
                (false, "cert") => format!("cert = \"{}\"", self.pg_url(side, &store)),
                (true, "prod") => format!("prod = \"{u}\""),
                (true, "cert") => format!("cert = \"{}\"", self.bolt_of(side).0),
                (true, "user") => format!("user = \"{n}\""),
                (true, "password") => {
                    std::env::set_var("WF_E2E_BOLT_PASSWORD", p);
                    "password = \"env:WF_E2E_BOLT_PASSWORD\"".to_string()
                }
                (true, "prod_database") => format!("prod_database = \"{}\"", self.graph_db("prod")),
                (true, "cert_database") => format!("cert_database = \"{}\"", self.graph_db(side)),
                _ => line.to_string(),
            };
            text.push_str(&out);
            text.push('\n');
        }
        let cfg = dir.join("wf.toml");
        std::fs::write(&cfg, text).unwrap();
        for f in ["anonymization.toml", "validation.toml"] {
            std::fs::copy(format!("{root}/config/{f}"), dir.join(f)).unwrap();
        }
        cfg
    }
}

pub(crate) fn wf(sb: &Sandbox, args: &[&str]) -> std::process::Command {
    let mut c = sb.cmd(args);
    c.env("WF_ANON_KEY", KEY).env(
        "WF_E2E_BOLT_PASSWORD",
        std::env::var("WF_TEST_BOLT_PASSWORD").unwrap_or_default(),
    );
    c
}

pub(crate) fn ok(sb: &Sandbox, args: &[&str]) -> String {
    let r = crate::util::ran(wf(sb, args).output().unwrap());
    assert_eq!(r.code, Some(0), "wf {args:?}\n{}\n{}", r.stdout, r.stderr);
    r.stdout
}

/// Per-table checksums of CERT (wf's own marker table left out), and per label and relationship
/// type of the graph its count and a checksum of its nodes' labels and properties (of its
/// relationships' ends and properties).
pub(crate) fn cert_contents(env: &Env, side: &str) -> BTreeMap<String, String> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut out = BTreeMap::new();
    rt.block_on(async {
        for s in STORES {
            let pool = sqlx::PgPool::connect(&env.pg_url(side, s)).await.unwrap();
            let tables: Vec<String> = sqlx::query_scalar("select tablename::text from pg_tables where schemaname = 'public' and tablename not in ('wf_loads', 'wf_enrollment') order by 1")
                .fetch_all(&pool).await.unwrap();
            for t in tables {
                let sum: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "select count(*)::text || ':' || coalesce(md5(string_agg(t::text, '|' order by t::text)), '') from {t} t"
                ))).fetch_one(&pool).await.unwrap();
                out.insert(format!("{s}.{t}"), sum.unwrap_or_default());
            }
        }
        let (u, n, p, _) = env.bolt_of(side);
        let g = wf_stores::graph::GraphConfig {
            name: "sp".into(),
            kind: wf_stores::graph::GraphKind::Bolt,
            prod: u.clone(),
            cert: u.clone(),
            user: Some(n.clone()),
            password: Some(p.clone()),
            prod_database: Some(env.graph_db("prod")),
            cert_database: Some(env.graph_db(side)),
            district_property: "district_id".into(),
            district_labels: vec![],
            key_property: "id".into(),
            keys: Default::default(),
            maps: Default::default(),
            follow: vec![],
            max_depth: None,
            links: vec![],
            without_key: Default::default(),
        };
        let mut r = wf_stores::graph::open_read(&g, wf_stores::Side::Cert).await.unwrap();
        for (l, c) in r.label_counts().await.unwrap() {
            // wf's marker nodes name their run: counted, their contents differ by design.
            let own = [wf_stores::graph::MARKER_LABEL, wf_stores::marker::ENROLL_LABEL];
            let sum = match own.contains(&l.as_str()) {
                true => String::new(),
                false => digest(r.sample_nodes(&l, c + 1).await.unwrap().iter().map(|n| {
                    let mut labels = n.labels.clone();
                    labels.sort();
                    format!("{labels:?} {:?}", n.props)
                })),
            };
            out.insert(format!("sp.{l}"), format!("{c}:{sum}"));
        }
        for (t, c) in r.rel_type_counts().await.unwrap() {
            let rels = r.sample_rels(&t, c + 1).await.unwrap();
            let sum = digest(rels.iter().map(|x| format!("{:?} {:?} {:?}", x.start, x.end, x.props)));
            out.insert(format!("sp.:{t}"), format!("{c}:{sum}"));
        }
        r.finish().await.unwrap();
    });
    out
}

/// An order-independent checksum of `items`: sorted, then hashed.
fn digest(items: impl Iterator<Item = String>) -> String {
    use std::hash::{Hash, Hasher};
    let mut v: Vec<String> = items.collect();
    v.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    format!("{:016x}", h.finish())
}

pub(crate) fn status(sb: &Sandbox, run: &str) -> serde_json::Value {
    let r = crate::util::ran(sb.cmd(["status", run, "--json"]).output().unwrap());
    serde_json::from_str(&r.stdout).unwrap_or(serde_json::Value::Null)
}

pub(crate) fn step_state(st: &serde_json::Value, prefix: &str) -> (bool, bool) {
    let steps: Vec<&serde_json::Value> = st["steps"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|s| s["id"].as_str().unwrap_or("").starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    let running = steps.iter().any(|s| s["status"] == "running");
    let done = !steps.is_empty() && steps.iter().all(|s| s["status"] == "done");
    (running, done)
}

fn kill(child: &mut Child) -> bool {
    let alive = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    alive
}

#[test]
fn sigkill_in_every_phase_then_resume_gives_the_same_cert_as_an_uninterrupted_run() {
    let sb = Sandbox::new();
    let Some(env) = Env::get(&sb) else { return };
    env.create(&["prod", "a", "b"]);
    let cfg_a = env.config(&sb.out("a"), "a");
    let cfg_b = env.config(&sb.out("b"), "b");
    ok(
        &sb,
        &["--config", cfg_a.to_str().unwrap(), "seed", "--env", "prod"],
    );
    for c in [&cfg_a, &cfg_b] {
        ok(
            &sb,
            &["--config", c.to_str().unwrap(), "seed", "--env", "cert"],
        );
    }
    // The uninterrupted run.
    let base_run = ok(
        &sb,
        &[
            "run",
            "migrate",
            "--district",
            "3",
            "--config-file",
            cfg_a.to_str().unwrap(),
        ],
    )
    .lines()
    .next()
    .unwrap_or_default()
    .to_string();
    // The run that is killed: several SIGKILLs inside each phase, then at the next boundary.
    let mut child = wf(
        &sb,
        &[
            "run",
            "migrate",
            "--district",
            "3",
            "--keep-raw",
            "--config-file",
            cfg_b.to_str().unwrap(),
        ],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let run = {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        line.trim().to_string()
    };
    // How long each phase took uninterrupted: kills land at random moments within that span.
    let base_status = status(&sb, &base_run);
    // On PostgreSQL the gate loads every store (hcp1's `sql` rule runs in its load) and the
    // graph is loaded by validate/sp while the tables are checked; the load steps commit those
    // transactions.
    let by_gate = |step: &str| {
        base_status["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["id"] == step)
            .and_then(|s| s["metrics"]["loaded_by_the_gate"].as_u64())
    };
    for step in ["load/hcp1", "load/ids", "load/hcp2", "load/adb", "load/sp"] {
        assert_eq!(by_gate(step), Some(1), "{step}");
    }
    let took = |prefix: &str| -> u64 {
        base_status["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["id"].as_str().unwrap_or("").starts_with(prefix))
            .filter_map(|s| s["duration_ms"].as_u64())
            .max()
            .unwrap_or(500)
    };
    const PHASES: [(&str, &str); 4] = [
        ("extract", "extract"),
        ("anonymize", "anonymize"),
        ("validate", "validate"),
        ("load/", "load/ids"),
    ];
    let current = |sb: &Sandbox| {
        PHASES
            .iter()
            .map(|(p, _)| *p)
            .find(|p| !step_state(&status(sb, &run), p).1)
    };
    let mut kills: Vec<String> = Vec::new();
    let mut inside: BTreeMap<&str, u32> = BTreeMap::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut random_ms = |max: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % max.max(1)
    };
    let spawn = |failpoint: Option<String>, delay: Option<String>| {
        let mut c = wf(&sb, &["resume", &run]);
        if let Some(f) = failpoint {
            c.env("WF_FAILPOINT", f);
        }
        if let Some(d) = delay {
            c.env("WF_FAILPOINT_DELAY", d);
        }
        c.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    if kill(&mut child) {
        kills.push("extract (first process)".into());
    }
    // Kill at random moments inside the current phase until it has five kills this round (the
    // loads, the last phase, until 22 have landed in all); then let the run go on to the start of
    // the next phase, where a failpoint stops it, so no phase is skipped by a late kill. If the run
    // ends with fewer than 22 kills (a slow machine), `wf recover <run> extracted` starts another
    // round over anonymize, validate and the loads (a new generation that replaces the rows the
    // earlier one loaded), stopped by a failpoint as it begins, and the killing goes on.
    for round in 0..4 {
        let mut this_round: BTreeMap<&str, u32> = BTreeMap::new();
        for _ in 0..80 {
            let Some(phase) = current(&sb) else { break };
            let n = this_round.get(phase).copied().unwrap_or(0);
            if n >= 5 && (phase != "load/" || kills.len() >= 22) {
                let next = PHASES
                    .iter()
                    .skip_while(|(p, _)| *p != phase)
                    .nth(1)
                    .map(|(_, first)| format!("{first}:before"));
                let _ = spawn(next, None).wait();
                continue;
            }
            let span = if n < 2 {
                took(phase) / 2
            } else {
                took(phase) * 4 / 5
            };
            // A phase's first kill of a round must land inside it even when the phase takes less
            // time than a process takes to start: its first step holds 2 s before its code runs,
            // and the kill comes within 1.5 s. Later kills land anywhere in the phase.
            let first_step = PHASES
                .iter()
                .find(|(p, _)| *p == phase)
                .map(|(_, first)| first.to_string());
            // The next phase's first step holds 2 s too: phases overlap (a table is validated
            // as soon as it is anonymized), and a process that finished this phase could run
            // the whole next one before the kill, leaving it without a kill inside.
            let next_hold = PHASES
                .iter()
                .skip_while(|(p, _)| *p != phase)
                .nth(1)
                .map(|(_, first)| format!("{first}=2000"));
            let (mut c, wait) = if n == 0 {
                let hold = first_step.map(|f| format!("{f}=2000"));
                let hold = [hold, next_hold].into_iter().flatten().collect::<Vec<_>>();
                (spawn(None, Some(hold.join(","))), random_ms(1500))
            } else {
                (spawn(None, next_hold), random_ms(span + 60))
            };
            std::thread::sleep(Duration::from_millis(wait));
            if kill(&mut c) {
                if current(&sb) == Some(phase) {
                    *inside.entry(phase).or_default() += 1;
                    *this_round.entry(phase).or_default() += 1;
                    kills.push(phase.to_string());
                } else {
                    kills.push(format!("after {phase}"));
                }
            }
        }
        if kills.len() >= 22 {
            break;
        }
        eprintln!(
            "e2e: round {round} ended with {} kills; recovering from `extracted`",
            kills.len()
        );
        let _ = wf(&sb, &["recover", &run, "extracted"])
            .env("WF_FAILPOINT", "anonymize:before")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
    let last = crate::util::ran(wf(&sb, &["resume", &run]).output().unwrap());
    assert_eq!(last.code, Some(0), "{}\n{}", last.stdout, last.stderr);
    eprintln!("{} SIGKILLs: {kills:?}", kills.len());
    assert!(
        kills.len() >= 20,
        "only {} kills landed: {kills:?}",
        kills.len()
    );
    for (phase, _) in PHASES {
        assert!(
            inside.get(phase).copied().unwrap_or(0) >= 1,
            "no kill inside {phase}: {kills:?}"
        );
    }
    let (a, b) = (cert_contents(&env, "a"), cert_contents(&env, "b"));
    assert!(a.len() >= 18, "{a:?}");
    assert_eq!(
        a, b,
        "CERT after the killed run differs from the uninterrupted run's"
    );
    // And wf validate agrees: every staged row is in CERT exactly as staged.
    let v = ok(&sb, &["validate", &run]);
    assert!(v.contains("CERT validation PASSED"), "{v}");
}
