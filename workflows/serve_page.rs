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
    r#"<div id=undelivered class=failed></div><p>Status <input id=status size=12> Workflow <input id=workflow size=10> District <input id=district size=6></p>
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
  const n = await fetch('/api/notifications' + (token ? '?token=' + encodeURIComponent(token) : ''));
  const failed = n.ok ? await n.json() : [];
  document.getElementById('undelivered').innerHTML = failed.length ? '<p><b>Notifications not delivered:</b></p><ul>' +
    failed.slice(-5).map(f => `<li>${esc(f.at)} ${esc(f.event)} of run ${esc(f.run)} to ${esc(f.target)}: ${esc(f.error)} (${f.attempts} attempts)</li>`).join('') + '</ul>' : '';
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
<h2>Steps</h2><table id=timeline><thead><tr><th>Step</th><th>Status</th><th>Attempts</th><th>Timeline</th><th>Seconds</th><th>Rows</th><th>Rows/s</th><th>ETA</th><th>CPU s</th><th>Peak MB</th></tr></thead><tbody></tbody></table>
<h2>Checkpoints</h2><ul id=checkpoints></ul>
<h2>Dependencies</h2><div id=graph></div>
<h2>Notifications</h2><ul id=notifications><li>(none sent)</li></ul>
<h2>Report</h2><pre id=report>(written when the run ends)</pre>"#,
    r##"<script>
const token = new URLSearchParams(location.search).get('token');
const id = decodeURIComponent(location.pathname.split('/').pop());
const q = token ? '?token=' + encodeURIComponent(token) : '';
function esc(s){ return String(s ?? '').replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c])); }
document.getElementById('back').href = '/' + q;
document.getElementById('title').textContent = id;
function phaseOf(step){ return step.split('/')[0]; }
// Rows per second of each phase's finished steps that counted rows.
function phaseRates(steps){
  const t = {};
  for (const s of steps) if (s.status === 'done' && s.metrics.rows && s.duration_ms) {
    const p = t[phaseOf(s.id)] = t[phaseOf(s.id)] || [0, 0]; p[0] += s.metrics.rows; p[1] += s.duration_ms / 1000;
  }
  return Object.fromEntries(Object.entries(t).map(([k, [r, sec]]) => [k, r / sec]));
}
// The steps as an SVG drawing: a column per depth (longest chain of dependencies), arrows from
// each dependency, boxes coloured by status.
function depGraph(steps){
  if (!steps.length) return '';
  const byId = Object.fromEntries(steps.map(s => [s.id, s])), depth = {};
  const d = id => { if (depth[id] != null) return depth[id]; depth[id] = 0;
    return depth[id] = Math.max(0, ...(byId[id].deps || []).filter(x => byId[x]).map(x => d(x) + 1)); };
  steps.forEach(s => d(s.id));
  const cols = {}, pos = {}, W = 190, H = 22;
  for (const s of steps) { const c = depth[s.id]; cols[c] = (cols[c] || 0) + 1; pos[s.id] = [c * W + 4, (cols[c] - 1) * H + 4]; }
  const fill = {done:'#d1f0da', failed:'#f8d0d0', failed_validation:'#f8d0d0', running:'#d0e2fb', pending:'#f3f3f3', paused:'#fbe9c5'};
  let svg = '';
  for (const s of steps) for (const x of (s.deps || []).filter(x => pos[x])) {
    const [x1, y1] = pos[x], [x2, y2] = pos[s.id];
    svg += `<line x1="${x1 + 170}" y1="${y1 + 9}" x2="${x2}" y2="${y2 + 9}" stroke="#aaa" marker-end="url(#arrow)"/>`;
  }
  for (const s of steps) { const [x, y] = pos[s.id], name = s.id.length > 26 ? s.id.slice(0, 25) + '…' : s.id;
    svg += `<g data-node="${esc(s.id)}"><title>${esc(s.id)}: ${esc(s.status)}</title><rect x="${x}" y="${y}" width="170" height="18" rx="3" fill="${fill[s.status] || '#eee'}" stroke="#999"/>` +
      `<text x="${x + 4}" y="${y + 13}" font-size="11">${esc(name)}</text></g>`; }
  const w = (Math.max(0, ...Object.keys(cols).map(Number)) + 1) * W, h = Math.max(...Object.values(cols)) * H + 8;
  return `<svg id=deps width="${w}" height="${h}"><defs><marker id=arrow markerWidth=6 markerHeight=6 refX=6 refY=3 orient=auto><path d="M0,0 L6,3 L0,6 z" fill="#aaa"/></marker></defs>${svg}</svg>`;
}
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
  const live = v.live_steps || {};
  const speed = phaseRates(v.steps);
  document.querySelector('#timeline tbody').innerHTML = v.steps.map(s => {
    const l = live[s.id], start = s.started_ms || (l && l.started_ms) || 0;
    const dur = s.duration_ms ?? (s.status === 'running' && start ? now - start : 0);
    const left = start ? 100 * (start - t0) / (t1 - t0) : 0, width = Math.max(0.5, 100 * dur / (t1 - t0));
    let rows = s.metrics.rows ?? '', rate = rows && dur ? Math.round(rows / (dur / 1000)) : '', eta = '';
    if (s.status === 'running' && l) {
      // Rows so far of those expected; the rate is the step's own once it reports rows, else
      // that of its phase's finished steps; the ETA follows from it.
      const r = l.rows && dur ? l.rows / (dur / 1000) : speed[phaseOf(s.id)];
      rows = l.expected != null ? `${l.rows} / ${l.expected}` : (l.rows || '');
      rate = r ? Math.round(r) : '';
      if (l.expected != null && r) eta = Math.max(0, (l.expected - l.rows) / r - (l.rows ? 0 : dur / 1000)).toFixed(0) + ' s';
    }
    const cls = s.status + (s.attempts > 1 ? ' retried' : '');
    return `<tr data-step="${esc(s.id)}"><td>${esc(s.id)}</td><td class="${esc(s.status)}">${esc(s.status)}</td><td>${s.attempts}</td>` +
      `<td><div class=track>${start ? `<div class="bar ${esc(cls)}" style="left:${left}%;width:${width}%"></div>` : ''}</div></td>` +
      `<td>${dur ? (dur / 1000).toFixed(2) : ''}</td><td class=rows>${rows}</td><td>${rate}</td><td class=eta>${eta}</td>` +
      `<td class=cpu>${s.metrics.cpu_ms != null ? (s.metrics.cpu_ms / 1000).toFixed(2) : ''}</td>` +
      `<td class=rss>${s.metrics.peak_rss_kb != null ? Math.round(s.metrics.peak_rss_kb / 1024) : ''}</td></tr>` +
      (s.error ? `<tr><td></td><td colspan=9 class=failed>${esc(s.error)}</td></tr>` : '');
  }).join('');
  document.getElementById('graph').innerHTML = depGraph(v.steps);
  const sent = v.notifications || [];
  if (sent.length) document.getElementById('notifications').innerHTML = sent.map(n =>
    `<li class="${n.delivered ? 'done' : 'failed'}">${esc(n.at)} ${esc(n.event)} to ${esc(n.target)}: ${n.delivered ? 'delivered' : 'not delivered, ' + esc(n.error)} (${n.attempts} attempts)</li>`).join('');
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
</script></body></html>"##
);
