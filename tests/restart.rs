//! CERT's servers restarting in the middle of the load phase: a PostgreSQL server and a Bolt
//! server of the test's own (so the shared servers stay up for the other tests) are stopped for
//! 20 s while the run's load steps are running. The run retries the transient failures by itself,
//! with no resume, and CERT ends equal to an uninterrupted run's.

use crate::e2e::{cert_contents, ok, status, step_state, wf, Env};
use crate::util::Sandbox;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn must(c: &mut Command) {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A PostgreSQL server of this test's own (PostgreSQL refuses to run as root: as root it runs
/// as the `postgres` user, as scripts/services.sh does).
struct OwnPg {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
}

impl OwnPg {
    fn as_pg(&self, prog: &str) -> Command {
        let path = self.bin.join(prog);
        if rustix::process::geteuid().is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn new() -> OwnPg {
        let bin = PathBuf::from(
            std::env::var("WF_TEST_PG_BIN").unwrap_or("/usr/lib/postgresql/15/bin".into()),
        );
        let dir = std::env::temp_dir().join(format!("wf-own-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("pg dir");
        if rustix::process::geteuid().is_root() {
            must(Command::new("chown").arg("postgres").arg(&dir));
        }
        let pg = OwnPg {
            dir,
            port: free_port(),
            bin,
        };
        must(pg.as_pg("initdb").arg("-D").arg(pg.dir.join("data")).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ]));
        pg.start();
        pg
    }

    fn start(&self) {
        // Durable settings (unlike the shared test server's): an immediate stop is a crash, and a
        // commit acknowledged with synchronous_commit=off can be lost in one.
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {}",
            self.port,
            self.dir.join("data").display()
        );
        must(
            self.as_pg("pg_ctl")
                .arg("-D")
                .arg(self.dir.join("data"))
                .arg("-l")
                .arg(self.dir.join("log"))
                .args(["-w", "start", "-o", &opts]),
        );
    }

    /// Stops at once: open connections are cut, as a crash or a failover would.
    fn stop(&self) {
        must(
            self.as_pg("pg_ctl")
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-m", "immediate", "stop"]),
        );
    }

    fn admin(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnPg {
    fn drop(&mut self) {
        let _ = self
            .as_pg("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An ArcadeDB server (Bolt) of this test's own, from the package scripts/services.sh installed.
struct OwnArcade {
    dir: PathBuf,
    bolt: u16,
    http: u16,
    pw: String,
    child: Option<std::process::Child>,
}

impl OwnArcade {
    fn new(pw: &str) -> OwnArcade {
        let dir = std::env::temp_dir().join(format!("wf-own-arcade-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("databases")).expect("arcade dir");
        let mut a = OwnArcade {
            dir,
            bolt: free_port(),
            http: free_port(),
            pw: pw.to_string(),
            child: None,
        };
        a.start();
        a
    }

    fn start(&mut self) {
        let pkg = PathBuf::from(std::env::var("WF_TEST_ARCADE_PKG").expect("WF_TEST_ARCADE_PKG"));
        let args = self.dir.join("args");
        std::fs::write(
            &args,
            format!("-Darcadedb.server.rootPassword={}\n", self.pw),
        )
        .expect("argfile");
        let child = Command::new(pkg.join("jre/bin/java"))
            .current_dir(&self.dir)
            .args(["-Xms64m", "-Xmx512m", "-cp"])
            .arg(format!("{}/jars/*", pkg.display()))
            .arg(format!("-Darcadedb.server.rootPath={}", self.dir.display()))
            .arg(format!(
                "-Darcadedb.server.databaseDirectory={}",
                self.dir.join("databases").display()
            ))
            .arg(format!("@{}", args.display()))
            .arg("-Darcadedb.server.plugins=Bolt:com.arcadedb.bolt.BoltProtocolPlugin")
            .arg("-Darcadedb.bolt.host=127.0.0.1")
            .arg(format!("-Darcadedb.bolt.port={}", self.bolt))
            .arg("-Darcadedb.server.httpIncomingHost=127.0.0.1")
            .arg(format!("-Darcadedb.server.httpIncomingPort={}", self.http))
            .arg("com.arcadedb.server.ArcadeDBServer")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("java");
        self.child = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.bolt)).is_err()
            || !wf::arcade::server_command(&self.http_url(), "root", &self.pw, "list databases")
                .is_ok_and(|o| o.status.success())
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "ArcadeDB did not start"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Kills the server (SIGKILL), as a crash would; its databases stay on disk.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }
}

impl Drop for OwnArcade {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn cert_servers_down_for_20s_during_the_loads_the_run_completes_by_itself() {
    let sb = Sandbox::new();
    let Some(shared) = Env::get(&sb) else { return };
    let pw = shared.cert_bolt.2.clone();
    let pg = OwnPg::new();
    let mut arcade = OwnArcade::new(&pw);
    // Reference: PROD and CERT `b` on the shared servers. Run under test: CERT `a` on our own.
    let Some(mut own) = Env::get(&sb) else { return };
    own.cert_admin = pg.admin();
    own.cert_bolt = (
        format!("127.0.0.1:{}", arcade.bolt),
        shared.cert_bolt.1.clone(),
        pw.clone(),
        arcade.http_url(),
    );
    shared.create(&["prod", "b"]);
    own.create(&["a"]);
    let cfg_b = shared.config(&sb.out("b"), "b");
    let cfg_a = own.config(&sb.out("a"), "a");
    ok(
        &sb,
        &["--config", cfg_b.to_str().unwrap(), "seed", "--env", "prod"],
    );
    for c in [&cfg_a, &cfg_b] {
        ok(
            &sb,
            &["--config", c.to_str().unwrap(), "seed", "--env", "cert"],
        );
    }
    let migrate = |cfg: &PathBuf| {
        vec![
            "run".to_string(),
            "migrate".into(),
            "--district".into(),
            "3".into(),
            "--config-file".into(),
            cfg.to_string_lossy().into_owned(),
        ]
    };
    let args_b = migrate(&cfg_b);
    ok(&sb, &args_b.iter().map(String::as_str).collect::<Vec<_>>());

    // The loads wait 3 s once they start, long enough to see them running and stop the servers.
    // Every load at once, so the graph's too is under way when the servers go.
    let mut args_a = migrate(&cfg_a);
    args_a.extend(["--jobs".to_string(), "8".to_string()]);
    let mut child = wf(&sb, &args_a.iter().map(String::as_str).collect::<Vec<_>>())
        .env("WF_FAILPOINT_DELAY", "load/ids=3000,load/sp=3000")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn migrate");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().expect("stdout")),
        &mut line,
    )
    .expect("run id");
    let run = line.trim().to_string();
    let started = Instant::now();
    loop {
        let (running, _) = step_state(&status(&sb, &run), "load/");
        if running {
            break;
        }
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the run ended before its loads"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no load step started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    pg.stop();
    arcade.stop();
    std::thread::sleep(Duration::from_secs(20));
    pg.start();
    arcade.start();
    let deadline = Instant::now() + Duration::from_secs(240);
    let code = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s.code();
        }
        assert!(
            Instant::now() < deadline,
            "the run did not finish after the restart"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = crate::util::ran(sb.cmd(["log", &run]).output().expect("log"));
    assert_eq!(
        code,
        Some(0),
        "the run did not complete by itself:\n{}",
        log.stdout
    );
    for step in ["load/ids", "load/sp"] {
        assert!(
            log.stdout
                .lines()
                .any(|l| l.contains(&format!("{step}: attempt")) && l.contains("retry in")),
            "{step} was not retried through the outage:\n{}",
            log.stdout
        );
    }
    assert_eq!(cert_contents(&own, "a"), cert_contents(&shared, "b"));
}
