//! `wf serve`: a read-only dashboard of the data directory (runs, a run's steps on a timeline,
//! batches) and Prometheus metrics at `/metrics`. Pages are embedded in the binary (no build step,
//! no CDN) and poll the JSON API, so a running run updates live. It binds 127.0.0.1 by default;
//! any other address needs a token (`--token` or `WF_SERVE_TOKEN`), asked of every request.

use crate::cli::ServeArgs;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use wf_engine::Engine;

struct App {
    engine: Engine,
    token: Option<String>,
    statuses: crate::serve_cache::Statuses,
}

type Shared = State<Arc<App>>;

/// Runs the server until the process is stopped.
pub async fn serve(engine: Engine, args: ServeArgs) -> anyhow::Result<u8> {
    let ip: std::net::IpAddr = args
        .bind
        .parse()
        .map_err(|e| anyhow::anyhow!("--bind {}: not an IP address ({e})", args.bind))?;
    let token = args.token.filter(|t| !t.is_empty());
    if !ip.is_loopback() && token.is_none() {
        anyhow::bail!(
            "--bind {ip} is reachable from other machines: give a token with --token or WF_SERVE_TOKEN (or bind 127.0.0.1)"
        );
    }
    let app = Arc::new(App {
        engine,
        token,
        statuses: Default::default(),
    });
    let router = Router::new()
        .route("/", get(|| async { Html(crate::serve_page::RUNS) }))
        .route(
            "/runs/{id}",
            get(|_: UrlPath<String>| async { Html(crate::serve_page::RUN) }),
        )
        .route("/api/runs", get(api_runs))
        .route("/api/runs/{id}", get(api_run))
        .route("/api/runs/{id}/report", get(api_report))
        .route("/api/notifications", get(api_notifications))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind((ip, args.port))
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {ip}:{}: {e}", args.port))?;
    let addr = listener.local_addr()?;
    crate::cli::say(&format!("wf serve: http://{addr}/"));
    axum::serve(listener, router)
        .await
        .map_err(|e| anyhow::anyhow!("wf serve: {e}"))?;
    Ok(crate::cli::exit::DONE)
}

/// Refuses a request without the token, when there is one.
async fn guard(
    State(app): Shared,
    headers: HeaderMap,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(want) = &app.token else {
        return next.run(req).await;
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let query = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="));
    let same = |got: Option<&str>| got.is_some_and(|g| same_secret(g, want));
    if same(bearer) || same(query) {
        return next.run(req).await;
    }
    (StatusCode::UNAUTHORIZED, "wf serve: a token is required\n").into_response()
}

/// Compares a token in time that does not depend on where it first differs.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// A run id from a URL, refused unless it is one (`../…` would name a file outside the reports).
fn run_id(id: &str) -> anyhow::Result<&str> {
    let ok = !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(id)
    } else {
        anyhow::bail!("`{id}` is not a run id")
    }
}

/// The blocking journal reads, off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())?
        .map_err(|e| (StatusCode::NOT_FOUND, format!("{e:#}\n")).into_response())
}

/// `/api/runs?status=&workflow=&district=`: newest first.
async fn api_runs(State(app): Shared, Query(q): Query<HashMap<String, String>>) -> Response {
    let r =
        blocking(move || {
            let (list, _) = app.statuses.all(&app.engine)?;
            let mut rows: Vec<serde_json::Value> = list
            .iter()
            .map(|v| {
                let shown = crate::report::shown_status(&v.status, &v.attrs);
                serde_json::json!({
                    "id": v.id, "workflow": v.workflow, "status": shown, "live": v.live,
                    "district": v.attrs.get("district"), "generation": v.generation,
                    "done": v.counts.done, "total": v.counts.total,
                    "created_ms": v.created_ms, "updated_ms": v.updated_ms, "message": v.message,
                })
            })
            .filter(|r| {
                ["status", "workflow", "district"].iter().all(|k| match q.get(*k) {
                    Some(want) if !want.is_empty() => r[*k].as_str() == Some(want.as_str()),
                    _ => true,
                })
            })
            .collect();
            rows.sort_by_key(|r| std::cmp::Reverse(r["created_ms"].as_u64().unwrap_or(0)));
            Ok(rows)
        })
        .await;
    match r {
        Ok(rows) => axum::Json(rows).into_response(),
        Err(e) => e,
    }
}

/// `/api/runs/<id>`: the run's status (live while a runner holds it), its batch districts, and
/// the command to type next.
async fn api_run(State(app): Shared, UrlPath(id): UrlPath<String>) -> Response {
    let r = blocking(move || {
        let v = app.statuses.get(&app.engine, run_id(&id)?)?;
        let shown = crate::report::shown_status(&v.status, &v.attrs);
        let next = match v.status.as_str() {
            "failed" | "paused" | "interrupted" => Some(format!("wf resume {id}")),
            "failed_validation" => Some(format!("wf recover {id} <checkpoint>")),
            _ => None,
        };
        let districts = if v.workflow == "batch" {
            let (_, outputs) = app.engine.outputs(&id)?;
            let rows: Vec<serde_json::Value> = crate::batch::results(&outputs)
                .into_iter()
                .map(|d| {
                    let child = app.statuses.get(&app.engine, &d.run).ok();
                    let rows = child.as_ref().map(|c| {
                        c.steps
                            .iter()
                            .filter(|s| s.id.starts_with("load/"))
                            .filter_map(|s| s.metrics.get("rows"))
                            .sum::<u64>()
                    });
                    let secs = child
                        .as_ref()
                        .map(|c| c.updated_ms.saturating_sub(c.created_ms) as f64 / 1000.0);
                    serde_json::json!({
                        "district": d.district, "run": d.run, "status": d.status,
                        "message": d.message, "rows": rows, "seconds": secs,
                    })
                })
                .collect();
            serde_json::Value::Array(rows)
        } else {
            serde_json::Value::Null
        };
        let mut out = serde_json::to_value(&v)?;
        if v.live {
            let dir = app.engine.data().run_dir(&v.id);
            out["live_steps"] = serde_json::to_value(crate::live::read(&dir))?;
        }
        let root = app.engine.data().root();
        out["notifications"] = crate::notify::deliveries(root, Some(&v.id), false, 20).into();
        out["shown_status"] = shown.into();
        out["next"] = next.into();
        out["districts"] = districts;
        Ok(out)
    })
    .await;
    match r {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e,
    }
}

/// `/api/notifications`: the last notifications that could not be delivered, oldest first.
async fn api_notifications(State(app): Shared) -> Response {
    let r = blocking(move || {
        Ok(crate::notify::deliveries(
            app.engine.data().root(),
            None,
            true,
            20,
        ))
    })
    .await;
    match r {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e,
    }
}

/// `/api/runs/<id>/report`: the run's Markdown report, as written.
async fn api_report(State(app): Shared, UrlPath(id): UrlPath<String>) -> Response {
    let r = blocking(move || {
        let path = app
            .engine
            .data()
            .root()
            .join("reports")
            .join(format!("{}.md", run_id(&id)?));
        std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    })
    .await;
    match r {
        Ok(text) => (
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(e) => e,
    }
}

/// `/metrics`: Prometheus text format 0.0.4.
async fn metrics(State(app): Shared) -> Response {
    let r = blocking(move || render_metrics(&app.engine, &app.statuses)).await;
    match r {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => e,
    }
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Runs by status, step seconds and rows by phase, retried attempts, failed notifications.
fn render_metrics(
    engine: &Engine,
    statuses: &crate::serve_cache::Statuses,
) -> anyhow::Result<String> {
    let (list, unreadable) = statuses.all(engine)?;
    let mut runs: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut secs: BTreeMap<(String, String), (f64, u64)> = BTreeMap::new();
    let mut rows: BTreeMap<String, u64> = BTreeMap::new();
    let mut retried = 0u64;
    let mut latency = wf_engine::journal::latency::CommitLatency::default();
    for v in &list {
        if let Some(l) = engine.commit_latency(&v.id) {
            latency.add(&l);
        }
        let shown = crate::report::shown_status(&v.status, &v.attrs);
        *runs.entry((v.workflow.clone(), shown)).or_default() += 1;
        let full = v;
        for s in &full.steps {
            let phase = s.id.split('/').next().unwrap_or(&s.id).to_string();
            if let Some(ms) = s.duration_ms {
                let e = secs.entry((v.workflow.clone(), phase.clone())).or_default();
                e.0 += ms as f64 / 1000.0;
                e.1 += 1;
            }
            // A phase of per-table steps counts their rows, not its summing step's again.
            let per_table = s.id.contains('/')
                || !full
                    .steps
                    .iter()
                    .any(|o| o.id.starts_with(&format!("{}/", s.id)));
            if let (Some(n), true) = (s.metrics.get("rows"), per_table) {
                *rows.entry(phase).or_default() += n;
            }
            retried += u64::from(s.attempts.saturating_sub(1));
        }
    }
    let mut o = String::new();
    writeln!(
        o,
        "# HELP wf_runs Runs in the data directory, by workflow and status."
    )?;
    writeln!(o, "# TYPE wf_runs gauge")?;
    for ((w, s), n) in &runs {
        writeln!(
            o,
            "wf_runs{{workflow=\"{}\",status=\"{}\"}} {n}",
            label(w),
            label(s)
        )?;
    }
    writeln!(
        o,
        "# HELP wf_runs_unreadable Runs whose journal cannot be read."
    )?;
    writeln!(o, "# TYPE wf_runs_unreadable gauge")?;
    writeln!(o, "wf_runs_unreadable {}", unreadable)?;
    writeln!(
        o,
        "# HELP wf_step_seconds Time steps took, by workflow and phase."
    )?;
    writeln!(o, "# TYPE wf_step_seconds summary")?;
    for ((w, p), (sum, count)) in &secs {
        let l = format!("workflow=\"{}\",phase=\"{}\"", label(w), label(p));
        writeln!(o, "wf_step_seconds_sum{{{l}}} {sum}")?;
        writeln!(o, "wf_step_seconds_count{{{l}}} {count}")?;
    }
    writeln!(o, "# HELP wf_rows_total Rows (and graph elements) steps handled, by phase (extract, anonymize, load, …).")?;
    writeln!(o, "# TYPE wf_rows_total counter")?;
    for (p, n) in &rows {
        writeln!(o, "wf_rows_total{{phase=\"{}\"}} {n}", label(p))?;
    }
    writeln!(
        o,
        "# HELP wf_step_retries_total Step attempts beyond the first, in all runs."
    )?;
    writeln!(o, "# TYPE wf_step_retries_total counter")?;
    writeln!(o, "wf_step_retries_total {retried}")?;
    commit_latency(&mut o, &latency)?;
    let log = std::fs::read_to_string(engine.data().root().join("notifications.jsonl"))
        .unwrap_or_default();
    let failed = log
        .lines()
        .filter(|l| l.contains("\"delivered\":false"))
        .count();
    writeln!(
        o,
        "# HELP wf_notifications_failed_total Notifications given up after their retries."
    )?;
    writeln!(o, "# TYPE wf_notifications_failed_total counter")?;
    writeln!(o, "wf_notifications_failed_total {failed}")?;
    Ok(o)
}

/// The journal's durable commits over all runs: a histogram of their seconds and the slowest.
fn commit_latency(
    o: &mut String,
    l: &wf_engine::journal::latency::CommitLatency,
) -> std::fmt::Result {
    use wf_engine::journal::latency::BOUNDS;
    writeln!(
        o,
        "# HELP wf_journal_commit_seconds Durable journal commits (sled flush and fdatasync), all runs."
    )?;
    writeln!(o, "# TYPE wf_journal_commit_seconds histogram")?;
    let mut below = 0u64;
    for (i, b) in BOUNDS.iter().enumerate() {
        below += l.buckets.get(i).copied().unwrap_or(0);
        writeln!(o, "wf_journal_commit_seconds_bucket{{le=\"{b}\"}} {below}")?;
    }
    writeln!(
        o,
        "wf_journal_commit_seconds_bucket{{le=\"+Inf\"}} {}",
        l.commits
    )?;
    writeln!(o, "wf_journal_commit_seconds_sum {}", l.sum_seconds)?;
    writeln!(o, "wf_journal_commit_seconds_count {}", l.commits)?;
    writeln!(
        o,
        "# HELP wf_journal_commit_seconds_max The slowest durable journal commit, all runs."
    )?;
    writeln!(o, "# TYPE wf_journal_commit_seconds_max gauge")?;
    writeln!(o, "wf_journal_commit_seconds_max {}", l.max_seconds)
}
