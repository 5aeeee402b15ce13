//! The dashboard's pages, embedded in the binary: plain HTML, CSS and a little JavaScript that
//! polls the JSON API every second (no build step, no CDN, nothing fetched from elsewhere).

/// `/`: the runs and batches, newest first, filterable.
pub const RUNS: &str = concat!(
    "<!doctype html><html><head><meta charset=utf-8><title>wf runs</title>",
    r#"<style>
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.25em .6em;border-bottom:1px solid #ddd;text-align:left}
.done{color:#17803d}.failed,.failed_validation{color:#c0392b}.running{color:#1f6feb}.paused,.interrupted{color:#b7791f}
</style>"#,
    "</head><body><h1>wf runs</h1>",
    r#"<p>Status <input id=status size=12> Workflow <input id=workflow size=10> District <input id=district size=6></p>
<table id=runs><thead><tr><th>Run</th><th>Workflow</th><th>District</th><th>Status</th><th>Steps</th><th>Started</th><th>Updated</th></tr></thead><tbody></tbody></table>"#,
    r#"<script>
const token = new URLSearchParams(location.search).get('token');
function esc(s){ return String(s ?? '').replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c])); }
function when(ms){ return ms ? new Date(ms).toISOString().replace('T',' ').slice(0,19) : ''; }
async function refresh(){
  const u = new URL('/api/runs', location.origin);
  for (const k of ['status','workflow','district']) { const v = document.getElementById(k).value.trim(); if (v) u.searchParams.set(k, v); }
  if (token) u.searchParams.set('token', token);
  const r = await fetch(u); if (!r.ok) return;
  const rows = await r.json();
  document.querySelector('#runs tbody').innerHTML = rows.map(x =>
    `<tr data-run="${esc(x.id)}"><td><a href="/runs/${esc(x.id)}${token ? '?token='+encodeURIComponent(token) : ''}">${esc(x.id)}</a></td><td>${esc(x.workflow)}</td><td>${esc(x.district)}</td>` +
    `<td class="${esc(x.status)}">${esc(x.status)}${x.live ? ' (live)' : ''}</td><td>${x.done}/${x.total}</td><td>${when(x.created_ms)}</td><td>${when(x.updated_ms)}</td></tr>`).join('');
}
for (const k of ['status','workflow','district']) document.getElementById(k).addEventListener('input', refresh);
refresh(); setInterval(refresh, 1000);
</script></body></html>"#
);

/// `/runs/<id>`: a run (or batch): status, a timeline of its steps with attempts, live rows,
/// checkpoints, the error and the command to type next, the batch's districts, the report.
pub const RUN: &str = concat!(
    "<!doctype html><html><head><meta charset=utf-8><title>wf run</title>",
    r#"<style>
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.25em .6em;border-bottom:1px solid #ddd;text-align:left}
.done{color:#17803d}.failed,.failed_validation{color:#c0392b}.running{color:#1f6feb}.paused,.interrupted{color:#b7791f}
.track{position:relative;width:480px;height:12px;background:#f3f3f3}
.bar{position:absolute;height:12px;background:#1f6feb;border-radius:2px}.bar.done{background:#2da44e}.bar.failed{background:#cf222e}
.bar.retried{outline:2px solid #d4a72c}
pre{background:#f6f8fa;padding:1em;overflow:auto;max-width:70em}code{background:#f6f8fa;padding:.1em .3em}
</style>"#,
    r#"</head><body><p><a id=back href="/">all runs</a></p><h1 id=title>run</h1>
<p>Status: <b id=status></b> · generation <span id=gen></span> · steps <span id=steps></span></p>
<p id=message></p><p id=next></p>
<div id=districts></div>
<h2>Steps</h2><table id=timeline><thead><tr><th>Step</th><th>Status</th><th>Attempts</th><th>Timeline</th><th>Seconds</th><th>Rows</th><th>Rows/s</th></tr></thead><tbody></tbody></table>
<h2>Checkpoints</h2><ul id=checkpoints></ul>
<h2>Report</h2><pre id=report>(written when the run ends)</pre>"#,
    r#"<script>
const token = new URLSearchParams(location.search).get('token');
const id = decodeURIComponent(location.pathname.split('/').pop());
const q = token ? '?token=' + encodeURIComponent(token) : '';
function esc(s){ return String(s ?? '').replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c])); }
document.getElementById('back').href = '/' + q;
document.getElementById('title').textContent = id;
async function refresh(){
  const r = await fetch('/api/runs/' + encodeURIComponent(id) + q); if (!r.ok) return;
  const v = await r.json();
  const st = document.getElementById('status'); st.textContent = v.shown_status + (v.live ? ' (live)' : ''); st.className = v.shown_status;
  document.getElementById('gen').textContent = v.generation;
  document.getElementById('steps').textContent = v.counts.done + '/' + v.counts.total;
  document.getElementById('message').textContent = v.message || '';
  document.getElementById('next').innerHTML = v.next ? 'Next: <code>' + esc(v.next) + '</code>' : '';
  const now = Date.now();
  v.steps.sort((a, b) => (a.started_ms || Infinity) - (b.started_ms || Infinity));
  const starts = v.steps.filter(s => s.started_ms).map(s => s.started_ms);
  const t0 = starts.length ? Math.min(...starts) : now;
  const t1 = Math.max(now * (v.live ? 1 : 0), ...v.steps.map(s => (s.started_ms || 0) + (s.duration_ms || 0)), t0 + 1);
  document.querySelector('#timeline tbody').innerHTML = v.steps.map(s => {
    const start = s.started_ms || 0, dur = s.duration_ms ?? (s.status === 'running' ? now - start : 0);
    const left = start ? 100 * (start - t0) / (t1 - t0) : 0, width = Math.max(0.5, 100 * dur / (t1 - t0));
    const rows = s.metrics.rows ?? '', rate = rows && dur ? Math.round(rows / (dur / 1000)) : '';
    const cls = s.status + (s.attempts > 1 ? ' retried' : '');
    return `<tr data-step="${esc(s.id)}"><td>${esc(s.id)}</td><td class="${esc(s.status)}">${esc(s.status)}</td><td>${s.attempts}</td>` +
      `<td><div class=track>${start ? `<div class="bar ${esc(cls)}" style="left:${left}%;width:${width}%"></div>` : ''}</div></td>` +
      `<td>${dur ? (dur / 1000).toFixed(2) : ''}</td><td>${rows}</td><td>${rate}</td></tr>` +
      (s.error ? `<tr><td></td><td colspan=6 class=failed>${esc(s.error)}</td></tr>` : '');
  }).join('');
  document.getElementById('checkpoints').innerHTML = v.checkpoints.map(c =>
    `<li>${c.reached ? '&#x2705;' : '&#x2B1C;'} ${esc(c.name)} (${c.steps_done}/${c.steps_total})</li>`).join('');
  if (Array.isArray(v.districts)) {
    document.getElementById('districts').innerHTML = '<h2>Districts</h2><table><tr><th>District</th><th>Run</th><th>Status</th><th>Rows loaded</th><th>Seconds</th></tr>' +
      v.districts.map(d => `<tr><td>${esc(d.district)}</td><td><a href="/runs/${esc(d.run)}${q}">${esc(d.run)}</a></td><td class="${esc(d.status)}">${esc(d.status)}</td><td>${d.rows ?? ''}</td><td>${d.seconds != null ? d.seconds.toFixed(1) : ''}</td></tr>`).join('') + '</table>';
  }
  if (!v.live) {
    const rep = await fetch('/api/runs/' + encodeURIComponent(id) + '/report' + q);
    document.getElementById('report').textContent = rep.ok ? await rep.text()
      : (v.workflow === 'batch' ? '(a batch reports through its runs: follow the links above)' : '(no report was written)');
  }
}
refresh(); setInterval(refresh, 1000);
</script></body></html>"#
);
