// The canary dashboard: one ES module, no build step, no dependencies.
//
// It reads canary serve's API with fetch and follows its watch stream
// (server-sent events read from a streamed fetch, so that the bearer
// token can travel in a header when reads need it). The token lives in
// this tab's sessionStorage only. Every action's result is shown from the
// stream, never guessed. Text is always set as text, never parsed as HTML, and
// charts are SVG built element by element.

const SVG_NS = 'http://www.w3.org/2000/svg';
const TOKEN_KEY = 'canary.token';
const ACTOR_KEY = 'canary.actor';
const PHASES = ['pending', 'progressing', 'paused', 'rolling_back', 'succeeded', 'rolled_back', 'aborted'];
const PHASE_WORDS = {
  pending: 'pending', progressing: 'progressing', paused: 'paused', rolling_back: 'rolling back',
  succeeded: 'succeeded', rolled_back: 'rolled back', aborted: 'aborted',
};
const ACTIONS = [
  { id: 'pause', label: 'Pause', phases: ['progressing'],
    text: (n) => `Pause ${n}? Its weight is held where it is until it is resumed.` },
  { id: 'resume', label: 'Resume', phases: ['paused'],
    text: (n) => `Resume ${n}? The stage goes on and the judge decides again.` },
  { id: 'promote', label: 'Promote', phases: ['progressing', 'paused'],
    text: (n) => `Promote ${n}? The current stage ends now and the next stage's weight is set, whatever the evidence says.` },
  { id: 'promote-full', label: 'Promote to 100 %', phases: ['progressing', 'paused'], danger: true,
    text: (n) => `Promote ${n} to 100 %? The canary takes all the traffic at once and the rollout succeeds.` },
  { id: 'abort', label: 'Abort', phases: ['pending', 'progressing', 'paused', 'rolling_back'], danger: true,
    text: (n) => `Abort ${n}? The canary's weight goes to 0 % at once.` },
  { id: 'retry', label: 'Retry', phases: ['rolled_back', 'aborted'],
    text: (n) => `Retry ${n}? It starts again from its first stage, with fresh evidence.` },
];
const RECONNECT_MAX_MS = 10000;
const SILENCE_MS = 45000; // the server sends a keep-alive every 15 s
const MAX_POINTS = 1500;

// ---------------------------------------------------------------- helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  for (const c of children) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  for (const c of children) {
    if (c == null) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function setAttrs(el, attrs) {
  if (!attrs) return;
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === 'class') el.setAttribute('class', v);
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function setText(el, text) {
  const t = text == null ? '' : String(text);
  if (el.textContent !== t) el.textContent = t;
}

function phaseBadge(phase) {
  return h('span', { class: `phase ${phase}`, text: PHASE_WORDS[phase] || phase });
}

function setPhase(el, phase) {
  const cls = `phase ${phase}`;
  if (el.getAttribute('class') !== cls) el.setAttribute('class', cls);
  setText(el, PHASE_WORDS[phase] || phase);
}

function fmtDur(sec) {
  if (sec == null || !isFinite(sec)) return '—';
  const t = Math.max(0, Math.round(sec));
  if (t < 60) return `${t} s`;
  if (t < 3600) return `${Math.floor(t / 60)} m ${String(t % 60).padStart(2, '0')} s`;
  if (t < 86400) return `${Math.floor(t / 3600)} h ${String(Math.floor(t / 60) % 60).padStart(2, '0')} m`;
  return `${Math.floor(t / 86400)} d ${Math.floor(t / 3600) % 24} h`;
}

function fmtPct(x) {
  if (x == null || !isFinite(x)) return '—';
  return `${Number(x.toFixed(2))} %`;
}

function fmtNum(x) {
  if (x == null || !isFinite(x)) return '—';
  const a = Math.abs(x);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return x.toExponential(2);
  return String(Number(x.toPrecision(4)));
}

function fmtRate(x) {
  if (x == null || !isFinite(x)) return '—';
  return `${Number((x * 100).toPrecision(3))} %`;
}

function fmtMs(x) {
  if (x == null || !isFinite(x)) return '—';
  return `${Number(x.toPrecision(4))} ms`;
}

function fmtClock(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
}

function stageText(st) {
  if (st.stage != null) return `${st.stage + 1} of ${st.stages}`;
  if (st.phase === 'succeeded') return `${st.stages} of ${st.stages}`;
  return `– of ${st.stages}`;
}

function verdictLine(st) {
  const v = st.verdict;
  if (!v) return { outcome: null, text: st.reason || 'no verdict yet' };
  return { outcome: v.outcome, text: `${v.outcome}: ${v.reason}` };
}

// Reports the time since `t0` as a performance measure, which a
// PerformanceObserver (the browser test, the devtools) sees; the timeline
// does not keep it, so a page left open does not grow.
function measure(name, t0, detail) {
  performance.measure(name, { start: t0, detail });
  performance.clearMeasures(name);
}

function getToken() { return sessionStorage.getItem(TOKEN_KEY) || ''; }
function getActor() {
  const a = (sessionStorage.getItem(ACTOR_KEY) || '').trim();
  return /^[!-~]{1,64}$/.test(a) ? a : 'dashboard';
}

class ApiError extends Error {
  constructor(status, message, details) {
    super(message);
    this.status = status;
    this.details = details || [];
  }
}

function headers(json) {
  const hd = { Accept: json ? 'application/json' : 'text/event-stream' };
  const t = getToken();
  if (t) hd.Authorization = `Bearer ${t}`;
  return hd;
}

async function api(method, path, body) {
  const hd = headers(true);
  if (method !== 'GET') {
    hd['X-Canary-Actor'] = getActor();
    hd['Content-Type'] = 'application/json';
  }
  let res;
  try {
    res = await fetch(path, {
      method, headers: hd, cache: 'no-store', credentials: 'omit',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, 'the server is unreachable');
  }
  let data = null;
  try { data = await res.json(); } catch { /* an empty or non-JSON body */ }
  if (!res.ok) {
    throw new ApiError(res.status, (data && data.error) || `HTTP ${res.status}`, data && data.details);
  }
  return data;
}

function rolloutPath(name, rest = '') {
  return `/api/v1/rollouts/${encodeURIComponent(name)}${rest}`;
}

// ---------------------------------------------------------------- the stream

// Reads server-sent events from a streamed response. Resolves when the
// server ends the stream, rejects with an ApiError on an HTTP error, a
// network failure or silence longer than SILENCE_MS.
async function watch(path, signal, onOpen, onEvent) {
  const inner = new AbortController();
  const stop = () => inner.abort();
  signal.addEventListener('abort', stop);
  let silence = null;
  const quiet = () => {
    clearTimeout(silence);
    silence = setTimeout(() => inner.abort(), SILENCE_MS);
  };
  try {
    let res;
    try {
      res = await fetch(path, { headers: headers(false), cache: 'no-store', credentials: 'omit', signal: inner.signal });
    } catch {
      throw new ApiError(0, 'the server is unreachable');
    }
    if (!res.ok) {
      let data = null;
      try { data = await res.json(); } catch { /* not JSON */ }
      throw new ApiError(res.status, (data && data.error) || `HTTP ${res.status}`, data && data.details);
    }
    onOpen();
    quiet();
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch {
        throw new ApiError(0, 'the connection to the server was lost');
      }
      if (chunk.done) return;
      quiet();
      buf += chunk.value.replace(/\r/g, '');
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        let kind = 'message';
        const data = [];
        for (const line of block.split('\n')) {
          if (line.startsWith('event:')) kind = line.slice(6).trim();
          else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
        }
        if (data.length === 0) continue; // a keep-alive comment
        let parsed;
        try { parsed = JSON.parse(data.join('\n')); } catch { continue; }
        onEvent(kind, parsed);
      }
    }
  } finally {
    clearTimeout(silence);
    signal.removeEventListener('abort', stop);
  }
}

const conn = { ctrl: null, attempt: 0, timer: null, countdown: null, state: 'connecting' };

function setConn(state, text) {
  conn.state = state;
  const el = document.getElementById('conn');
  el.className = `conn ${state}`;
  setText(el, text);
}

function disconnect() {
  if (conn.ctrl) conn.ctrl.abort();
  conn.ctrl = null;
  clearTimeout(conn.timer);
  clearInterval(conn.countdown);
}

function connect() {
  disconnect();
  const ctrl = new AbortController();
  conn.ctrl = ctrl;
  const v = current;
  setConn('connecting', 'Connecting…');
  watch(v.streamPath(), ctrl.signal, () => {
    conn.attempt = 0;
    setConn('live', 'Live');
    v.onOpen();
  }, (kind, data) => v.onEvent(kind, data)).then(() => {
    if (ctrl.signal.aborted) return;
    if (v.onEnd()) return;
    scheduleReconnect(new ApiError(0, 'the server closed the stream'));
  }, (err) => {
    if (ctrl.signal.aborted) return;
    if (err.status === 401) {
      setConn('down', 'Token needed');
      v.onAuth(err);
      return;
    }
    if (err.status === 404 && v.onNotFound(err)) {
      setConn('live', 'Live');
      return;
    }
    scheduleReconnect(err);
  });
}

function scheduleReconnect(err) {
  const delay = Math.min(RECONNECT_MAX_MS, 1000 * 2 ** conn.attempt);
  conn.attempt += 1;
  const until = Date.now() + delay;
  const tick = () => {
    const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
    setConn('down', `Server unreachable — reconnecting in ${left} s`);
  };
  tick();
  conn.countdown = setInterval(tick, 1000);
  conn.timer = setTimeout(() => { clearInterval(conn.countdown); connect(); }, delay);
  current.onDown(err);
}

// ---------------------------------------------------------------- shared UI

const main = () => document.getElementById('main');

function downBanner(err) {
  return h('div', { class: 'notice error', role: 'alert' },
    h('p', null, h('strong', { text: 'The server is unreachable. ' }),
      `Showing what it last said; reconnecting on its own (${err.message}).`),
    h('p', null, h('button', { type: 'button', onclick: () => connect() }, 'Reconnect now')));
}

function authBanner(err) {
  return h('div', { class: 'notice warn', role: 'alert' },
    h('p', null, h('strong', { text: 'This server needs the token to read. ' }),
      getToken() ? `The token saved in this tab was refused (${err.message}).` : 'Enter it to see the rollouts.'),
    h('p', null, h('button', { type: 'button', class: 'primary', onclick: () => openTokenDialog() }, 'Enter token')));
}

function setBanner(node) {
  const b = document.getElementById('banner');
  if (!b) return;
  b.replaceChildren(...(node ? [node] : []));
}

// ---------------------------------------------------------------- overview

const COLUMNS = [
  { key: 'name', label: 'Rollout' },
  { key: 'phase', label: 'Phase' },
  { key: 'stage', label: 'Stage', num: true },
  { key: 'weight', label: 'Weight', num: true },
  { key: 'time', label: 'Time in stage', num: true },
  { key: 'verdict', label: 'Latest verdict' },
];

function sortValue(key, e) {
  const st = e.status;
  switch (key) {
    case 'name': return st.name;
    case 'phase': return PHASES.indexOf(st.phase);
    case 'stage': return st.stage != null ? st.stage / Math.max(1, st.stages) : (st.phase === 'succeeded' ? 2 : -1);
    case 'weight': return st.applied_weight;
    case 'time': return st.stage_elapsed_seconds != null ? st.stage_elapsed_seconds : -1;
    case 'verdict': return st.verdict ? st.verdict.outcome : '';
    default: return '';
  }
}

function elapsedNow(e) {
  const st = e.status;
  if (st.stage_elapsed_seconds == null) return null;
  return st.stage_elapsed_seconds + (performance.now() - e.at) / 1000;
}

class Overview {
  constructor() {
    this.rollouts = new Map(); // name -> {status, at}
    this.rows = new Map(); // name -> row
    this.dirty = new Set();
    this.listed = false;
    this.frame = 0;
    this.sort = { key: sessionStorage.getItem('canary.sort') || 'name', dir: Number(sessionStorage.getItem('canary.dir')) || 1 };
    this.filter = { phase: sessionStorage.getItem('canary.phase') || '', text: '' };
  }

  streamPath() { return '/api/v1/watch'; }

  render() {
    const phaseSel = h('select', { id: 'phase-filter', onchange: (ev) => {
      this.filter.phase = ev.target.value;
      sessionStorage.setItem('canary.phase', this.filter.phase);
      this.reorder(true);
    } }, h('option', { value: '', text: 'All phases' }),
    ...PHASES.map((p) => h('option', { value: p, text: PHASE_WORDS[p] })));
    phaseSel.value = this.filter.phase;
    const text = h('input', { id: 'name-filter', type: 'search', placeholder: 'part of a name', autocomplete: 'off',
      oninput: (ev) => { this.filter.text = ev.target.value.trim().toLowerCase(); this.reorder(true); } });
    this.countEl = h('p', { class: 'count', 'aria-live': 'polite' });
    this.heads = {};
    const headRow = h('tr', null, ...COLUMNS.map((c) => {
      const th = h('th', { scope: 'col', class: c.num ? 'num' : null },
        h('button', { type: 'button', onclick: () => this.sortBy(c.key), text: c.label }));
      this.heads[c.key] = th;
      return th;
    }));
    this.tbody = h('tbody');
    this.table = h('table', { class: 'rollouts' },
      h('colgroup', null, ...COLUMNS.map((c) => h('col', { class: `c-${c.key}` }))),
      h('thead', null, headRow), this.tbody);
    this.emptyEl = h('div');
    main().replaceChildren(
      h('div', { id: 'banner' }),
      h('h1', { tabindex: '-1', text: 'Rollouts' }),
      h('div', { class: 'toolbar' },
        h('div', null, h('label', { for: 'phase-filter', text: 'Phase' }), phaseSel),
        h('div', null, h('label', { for: 'name-filter', text: 'Name' }), text),
        this.countEl),
      this.emptyEl,
      h('div', { class: 'table-wrap' }, this.table));
    this.markSort();
    for (const name of this.rollouts.keys()) this.dirty.add(name);
    this.flush();
    this.ticker = setInterval(() => this.tickTimes(), 1000);
  }

  destroy() { clearInterval(this.ticker); cancelAnimationFrame(this.frame); }

  sortBy(key) {
    if (this.sort.key === key) this.sort.dir = -this.sort.dir;
    else this.sort = { key, dir: 1 };
    sessionStorage.setItem('canary.sort', this.sort.key);
    sessionStorage.setItem('canary.dir', String(this.sort.dir));
    this.markSort();
    this.reorder(true);
  }

  markSort() {
    for (const [k, th] of Object.entries(this.heads)) {
      if (k === this.sort.key) th.setAttribute('aria-sort', this.sort.dir > 0 ? 'ascending' : 'descending');
      else th.removeAttribute('aria-sort');
    }
  }

  async onOpen() {
    setBanner(null);
    // The stream is subscribed: a list read now is at least as new, and
    // drops rollouts deleted while the page was not connected.
    try {
      const list = await api('GET', '/api/v1/rollouts');
      const names = new Set(list.rollouts.map((r) => r.name));
      for (const name of this.rollouts.keys()) {
        if (!names.has(name)) { this.rollouts.delete(name); this.dirty.add(name); }
      }
      for (const r of list.rollouts) {
        if (!this.rollouts.has(r.name)) {
          this.rollouts.set(r.name, { at: performance.now(), status: {
            name: r.name, phase: r.phase, mode: r.mode, stage: r.stage, stages: r.stages,
            applied_weight: r.weight, desired_weight: r.desired_weight, updated_at: r.updated_at,
          } });
          this.dirty.add(r.name);
        }
      }
      this.listed = true;
      this.schedule();
    } catch (err) {
      if (err.status === 401) this.onAuth(err);
    }
  }

  onEvent(kind, data) {
    const st = data.status;
    if (!st || !st.name) return;
    if (kind === 'deleted') this.rollouts.delete(st.name);
    else this.rollouts.set(st.name, { status: st, at: performance.now() });
    this.dirty.add(st.name);
    this.schedule();
  }

  onEnd() { return false; }
  onNotFound() { return false; }
  onAuth(err) { setBanner(authBanner(err)); }
  onDown(err) { setBanner(downBanner(err)); }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.flush(); });
  }

  flush() {
    const t0 = performance.now();
    const n = this.dirty.size;
    for (const name of this.dirty) {
      const e = this.rollouts.get(name);
      let row = this.rows.get(name);
      if (!e) {
        if (row) { row.tr.remove(); this.rows.delete(name); }
        continue;
      }
      if (!row) { row = this.makeRow(name); this.rows.set(name, row); }
      this.updateRow(row, e);
    }
    this.dirty.clear();
    this.reorder(false);
    if (n > 0) measure('canary:overview-update', t0, { statuses: n });
  }

  makeRow(name) {
    const link = h('a', { href: `#/rollouts/${encodeURIComponent(name)}`, text: name });
    const cells = {
      name: h('td', { class: 'name', 'data-label': 'Rollout' }, link),
      phase: h('td', { 'data-label': 'Phase' }, phaseBadge('pending')),
      stage: h('td', { class: 'num', 'data-label': 'Stage' }),
      weight: h('td', { class: 'num', 'data-label': 'Weight' }),
      time: h('td', { class: 'num', 'data-label': 'Time in stage' }),
      verdict: h('td', { class: 'verdict', 'data-label': 'Latest verdict' }),
    };
    const tr = h('tr', { 'data-name': name }, ...Object.values(cells));
    return { tr, cells, badge: cells.phase.firstChild, sortKey: null, entry: null };
  }

  updateRow(row, e) {
    const st = e.status;
    row.entry = e;
    if (row.tr.dataset.phase !== st.phase) row.tr.dataset.phase = st.phase;
    setPhase(row.badge, st.phase);
    setText(row.cells.stage, stageText(st));
    const w = fmtPct(st.applied_weight);
    setText(row.cells.weight, st.desired_weight != null && st.desired_weight !== st.applied_weight
      ? `${w} → ${fmtPct(st.desired_weight)}` : w);
    this.setTime(row);
    const v = verdictLine(st);
    const cls = v.outcome ? `verdict outcome-${v.outcome}` : 'verdict muted';
    if (row.cells.verdict.getAttribute('class') !== cls) row.cells.verdict.setAttribute('class', cls);
    setText(row.cells.verdict, v.text);
    if (row.cells.verdict.title !== v.text) row.cells.verdict.title = v.text;
  }

  setTime(row) {
    const st = row.entry.status;
    const el = elapsedNow(row.entry);
    setText(row.cells.time, el == null ? '—'
      : st.stage_bake_seconds != null ? `${fmtDur(el)} / ${fmtDur(st.stage_bake_seconds)}` : fmtDur(el));
  }

  tickTimes() {
    for (const row of this.rows.values()) {
      if (row.entry && row.entry.status.stage_elapsed_seconds != null && !row.tr.hidden) this.setTime(row);
    }
  }

  reorder(force) {
    if (!this.tbody) return;
    const { key, dir } = this.sort;
    const rows = [...this.rows.values()];
    const val = (r) => sortValue(key, r.entry);
    rows.sort((a, b) => {
      const x = val(a); const y = val(b);
      const c = x < y ? -1 : x > y ? 1 : 0;
      return c !== 0 ? c * dir : a.entry.status.name.localeCompare(b.entry.status.name);
    });
    let shown = 0;
    const counts = {};
    for (const r of rows) {
      const st = r.entry.status;
      counts[st.phase] = (counts[st.phase] || 0) + 1;
      const hide = (this.filter.phase && st.phase !== this.filter.phase)
        || (this.filter.text && !st.name.toLowerCase().includes(this.filter.text));
      if (r.tr.hidden !== hide) r.tr.hidden = hide;
      if (!hide) shown += 1;
    }
    let same = this.tbody.children.length === rows.length;
    for (let i = 0; same && i < rows.length; i += 1) same = this.tbody.children[i] === rows[i].tr;
    if (!same) this.tbody.append(...rows.map((r) => r.tr));
    const total = rows.length;
    const byPhase = PHASES.filter((p) => counts[p]).map((p) => `${counts[p]} ${PHASE_WORDS[p]}`).join(', ');
    setText(this.countEl, total === 0 ? '' : `${shown === total ? total : `${shown} of ${total}`} rollout${total === 1 ? '' : 's'}${byPhase ? ` — ${byPhase}` : ''}`);
    const hideTable = total === 0 || shown === 0;
    if (this.table.hidden !== hideTable) this.table.hidden = hideTable;
    if (total === 0 && this.listed) this.showEmpty();
    else if (total > 0 && shown === 0) this.emptyEl.replaceChildren(h('p', { class: 'notice', text: 'No rollout matches the filter.' }));
    else if (force || this.emptyEl.firstChild) this.emptyEl.replaceChildren();
  }

  showEmpty() {
    if (this.emptyEl.dataset.empty === '1' && this.emptyEl.firstChild) return;
    this.emptyEl.dataset.empty = '1';
    const origin = location.origin;
    this.emptyEl.replaceChildren(h('div', { class: 'notice', id: 'empty' },
      h('h2', { text: 'No rollouts yet' }),
      h('p', { text: 'Create one with a spec (docs/spec.md) that has a traffic section, from a terminal:' }),
      h('pre', null, h('code', { text: `export CANARY_SERVER=${origin} CANARY_TOKEN=…   # the server's token\ncanary rollouts apply -f rollout.yaml` })),
      h('p', { text: 'or with curl:' }),
      h('pre', null, h('code', { text: `curl -X POST ${origin}/api/v1/rollouts -H "Authorization: Bearer $CANARY_TOKEN" \\\n     -H 'Content-Type: application/yaml' --data-binary @rollout.yaml` })),
      h('p', null, 'To try it without services of your own, ', h('code', { text: 'canary demo --serve' }),
        ' starts a server with a demo rollout on it. It appears here as soon as it is created.')));
  }
}

// ---------------------------------------------------------------- rollout page

function mergeBySeq(list, items) {
  const seen = new Set(list.map((x) => x.seq));
  let added = false;
  for (const it of items) {
    if (!seen.has(it.seq)) { list.push(it); seen.add(it.seq); added = true; }
  }
  if (added) list.sort((a, b) => a.seq - b.seq);
  return added;
}

function thin(list) {
  if (list.length <= MAX_POINTS) return list;
  return list.filter((_, i) => i % 2 === 0 || i === list.length - 1);
}

const DECISIONS = new Set(['start', 'advance', 'pause', 'resume', 'promote', 'promote_full', 'succeed', 'rollback', 'abort', 'rollback_step']);

class RolloutPage {
  constructor(name) {
    this.name = name;
    this.status = null;
    this.at = 0;
    this.events = [];
    this.looks = [];
    this.looksGeneration = null;
    this.gone = null;
    this.pending = null;
    this.frame = 0;
    this.rendered = { events: 0 };
  }

  streamPath() { return rolloutPath(this.name, '/watch'); }

  render() {
    this.title = h('h1', { tabindex: '-1', text: this.name });
    this.badge = phaseBadge('pending');
    this.facts = h('ul', { class: 'facts' });
    this.actionsEl = h('div', { class: 'actions', role: 'group', 'aria-label': 'Actions' });
    this.buttons = {};
    for (const a of ACTIONS) {
      const b = h('button', { type: 'button', class: a.danger ? 'danger' : null, 'data-action': a.id,
        onclick: () => openConfirm(this, a) }, a.label);
      b.disabled = true;
      this.buttons[a.id] = b;
      this.actionsEl.append(b);
    }
    this.msg = h('p', { class: 'action-msg', role: 'status', 'aria-live': 'polite' });
    this.waiting = h('div', { class: 'panel waiting', 'aria-live': 'polite' });
    this.weightChart = h('div');
    this.evidence = h('div');
    this.counts = h('div');
    this.log = h('ol', { class: 'log', 'aria-label': 'Decision log, newest first' });
    this.showWeight = h('input', { type: 'checkbox', id: 'show-weight', checked: true,
      onchange: () => { this.rendered.events = -1; this.schedule(); } });
    this.body = h('div', null,
      this.waiting,
      h('div', { class: 'grid' },
        h('section', { class: 'panel', 'aria-labelledby': 'h-weight' }, h('h2', { id: 'h-weight', text: 'Weight over time' }), this.weightChart),
        h('section', { class: 'panel', 'aria-labelledby': 'h-counts' }, h('h2', { id: 'h-counts', text: 'This stage, per version' }), this.counts)),
      h('section', { class: 'panel', 'aria-labelledby': 'h-evidence' }, h('h2', { id: 'h-evidence', text: 'Evidence over time' }), this.evidence),
      h('section', { class: 'panel', 'aria-labelledby': 'h-log' },
        h('h2', { id: 'h-log', text: 'Decision log' }),
        h('div', { class: 'log-tools' }, this.showWeight, h('label', { for: 'show-weight', text: 'show weight changes the traffic layer confirmed' })),
        this.log));
    this.body.hidden = true;
    this.goneEl = h('div');
    main().replaceChildren(
      h('a', { class: 'crumb', href: '#/', text: '← All rollouts' }),
      h('div', { id: 'banner' }),
      h('div', { class: 'head' }, this.title, this.badge),
      this.facts, this.actionsEl, this.msg, this.goneEl, this.body);
    this.ticker = setInterval(() => this.tickTimes(), 1000);
    this.onResize = () => this.schedule();
    window.addEventListener('resize', this.onResize);
  }

  destroy() {
    clearInterval(this.ticker);
    cancelAnimationFrame(this.frame);
    window.removeEventListener('resize', this.onResize);
  }

  async onOpen() {
    setBanner(null);
    try {
      const [log, hist] = await Promise.all([
        api('GET', rolloutPath(this.name, '/events')),
        api('GET', rolloutPath(this.name, '/history')),
      ]);
      mergeBySeq(this.events, log.events);
      if (this.looksGeneration == null || this.looksGeneration !== hist.generation) {
        this.looksGeneration = hist.generation;
        this.looks = [];
      }
      mergeBySeq(this.looks, hist.looks);
      this.rendered.events = -1;
      this.schedule();
    } catch (err) {
      if (err.status === 404) this.onNotFound(err);
      else if (err.status === 401) this.onAuth(err);
    }
  }

  onEvent(kind, data) {
    const st = data.status;
    if (!st || st.name !== this.name) return;
    if (kind === 'deleted') {
      this.showGone('It was deleted.');
      return;
    }
    if (this.status && st.revision < this.status.revision && st.generation === this.status.generation) return;
    if (this.looksGeneration != null && st.generation !== this.looksGeneration) {
      // Started over (retry): a new generation's evidence.
      this.looksGeneration = st.generation;
      this.looks = [];
    }
    this.status = st;
    this.at = performance.now();
    if (Array.isArray(data.events) && data.events.length) {
      mergeBySeq(this.events, data.events);
      this.noteResult(data.events);
    }
    if (data.look && st.generation === this.looksGeneration) {
      mergeBySeq(this.looks, [data.look]);
      this.looks = thin(this.looks);
    }
    this.schedule();
  }

  onEnd() {
    // The one-rollout stream ends when the rollout is deleted.
    if (this.gone) return true;
    return false;
  }

  onNotFound() {
    this.showGone(this.status ? 'It was deleted.' : 'There is no rollout of this name on this server.');
    return true;
  }

  onAuth(err) { setBanner(authBanner(err)); }
  onDown(err) { setBanner(downBanner(err)); }

  showGone(why) {
    this.gone = why;
    disconnect();
    setConn('live', 'Live');
    for (const b of Object.values(this.buttons)) b.disabled = true;
    this.goneEl.replaceChildren(h('div', { class: 'notice warn', role: 'alert', id: 'gone' },
      h('h2', { text: `Rollout ${this.name} no longer exists` }),
      h('p', { text: `${why} What it last showed is kept below.` }),
      h('p', null, h('a', { href: '#/', text: 'Back to all rollouts' }))));
  }

  noteResult(events) {
    if (!this.pending) return;
    const mine = events.filter((e) => e.actor && e.actor.startsWith('api'));
    if (mine.length === 0) return;
    const last = mine[mine.length - 1];
    this.pending = null;
    this.msg.className = 'action-msg';
    setText(this.msg, `Recorded: ${last.event} by ${last.actor} — ${last.reason}`);
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.draw(); });
  }

  tickTimes() {
    if (this.status && !this.gone) { this.drawFacts(); this.drawWaiting(); }
  }

  draw() {
    const st = this.status;
    if (!st) return;
    const t0 = performance.now();
    this.body.hidden = false;
    setPhase(this.badge, st.phase);
    document.title = `${st.name} — ${PHASE_WORDS[st.phase] || st.phase} — canary`;
    for (const a of ACTIONS) {
      const ok = !this.gone && a.phases.includes(st.phase);
      if (this.buttons[a.id].disabled === ok) this.buttons[a.id].disabled = !ok;
    }
    this.drawFacts();
    this.drawWaiting();
    this.drawWeight();
    this.drawEvidence();
    this.drawCounts();
    this.drawLog();
    measure('canary:rollout-draw', t0, null);
  }

  drawFacts() {
    const st = this.status;
    const el = st.stage_elapsed_seconds != null ? st.stage_elapsed_seconds + (performance.now() - this.at) / 1000 : null;
    const items = [
      ['Stage', stageText(st)],
      ['Weight', st.desired_weight !== st.applied_weight ? `${fmtPct(st.applied_weight)} → ${fmtPct(st.desired_weight)}` : fmtPct(st.applied_weight)],
      ['Time in stage', el == null ? '—' : `${fmtDur(el)}${st.stage_bake_seconds != null ? ` of ${fmtDur(st.stage_bake_seconds)} bake` : ''}`],
      ['Judge', st.verdict ? st.verdict.judge : '—'],
      ['Mode', st.mode],
      ['Traffic', st.traffic ? `${st.traffic.provider}${st.traffic.listen ? ` on ${st.traffic.listen}` : ''}` : '—'],
      ['Generation', String(st.generation)],
    ];
    if (this.facts.children.length !== items.length) {
      this.facts.replaceChildren(...items.map(([k]) => h('li', null, h('b', { text: k }), h('span'))));
    }
    items.forEach(([, v], i) => setText(this.facts.children[i].lastChild, v));
  }

  drawWaiting() {
    const st = this.status;
    const el = st.stage_elapsed_seconds != null ? st.stage_elapsed_seconds + (performance.now() - this.at) / 1000 : null;
    const bake = st.stage_bake_seconds;
    const v = st.verdict;
    let head = '';
    let detail = '';
    let progress = null;
    switch (st.phase) {
      case 'pending': head = 'Waiting to start.'; break;
      case 'progressing':
        if (v && v.guardrail) { head = 'Held by a guardrail.'; detail = v.guardrail; }
        else if (st.last_error && st.last_error.startsWith('metrics source')) { head = 'Waiting for data: the metrics source cannot be read.'; detail = st.last_error; }
        else if (bake != null && el != null && el < bake) {
          head = `Bake time: ${fmtDur(bake - el)} left of ${fmtDur(bake)} at ${fmtPct(st.applied_weight)}.`;
          detail = v ? `Then the stage needs a passing verdict. Now: ${v.outcome} — ${v.reason}` : 'No verdict yet: waiting for the first window of data.';
          progress = el / bake;
        } else if (!v) { head = 'Waiting for data: no verdict yet.'; detail = 'The judge has not seen a window with requests for this stage.'; }
        else if (v.outcome === 'pass') { head = 'Passing: the stage ends at the next look.'; detail = v.reason; }
        else { head = 'Bake time done; waiting for enough evidence to pass.'; detail = `${v.outcome} — ${v.reason}`; }
        break;
      case 'paused':
        head = /waiting for a manual promote/.test(st.reason || '') ? 'Waiting at a gate: promote to go on.'
          : /without metrics/.test(st.reason || '') ? 'Waiting for data: held until metrics come back.'
            : 'Paused: resume or promote to go on.';
        detail = st.reason || '';
        break;
      case 'rolling_back': head = 'Rolling back: the weight steps down to 0 %.'; detail = st.reason || ''; break;
      case 'succeeded': head = 'Nothing: promoted; the canary serves 100 %.'; break;
      case 'rolled_back': head = 'Nothing: rolled back. Retry to start again.'; detail = st.reason || ''; break;
      case 'aborted': head = 'Nothing: aborted. Retry to start again.'; detail = st.reason || ''; break;
      default: head = st.phase;
    }
    if (!this.waitHead) {
      this.waitHead = h('p', null, h('strong'));
      this.waitDetail = h('p', { class: 'muted' });
      this.waitBar = h('div', { class: 'bar', role: 'progressbar', 'aria-label': 'Bake time', 'aria-valuemin': '0', 'aria-valuemax': '100' }, h('span'));
      this.waitError = h('p', { class: 'muted' });
      this.waiting.replaceChildren(h('h2', { text: 'Waiting for' }), this.waitHead, this.waitDetail, this.waitBar, this.waitError);
    }
    setText(this.waitHead.firstChild, head);
    setText(this.waitDetail, detail);
    this.waitBar.hidden = progress == null;
    if (progress != null) {
      const pct = Math.max(0, Math.min(100, progress * 100));
      this.waitBar.firstChild.style.width = `${pct.toFixed(1)}%`;
      this.waitBar.setAttribute('aria-valuenow', pct.toFixed(0));
    }
    setText(this.waitError, st.last_error && !detail.includes(st.last_error) ? `Last problem: ${st.last_error}` : '');
  }

  // The x range shared by the charts: seconds since this generation began.
  span() {
    const st = this.status;
    const start = Date.parse(st.started_at);
    let end = (Date.now() - start) / 1000;
    const last = this.looks[this.looks.length - 1];
    if (last) end = Math.max(end, last.at_seconds);
    const finished = ['succeeded', 'rolled_back', 'aborted'].includes(st.phase);
    if (finished) {
      const evs = this.events.filter((e) => e.at_ms >= start);
      const lastEv = evs[evs.length - 1];
      if (lastEv) end = Math.max((lastEv.at_ms - start) / 1000, last ? last.at_seconds : 0);
    }
    return { start, end: Math.max(end, 1) };
  }

  drawWeight() {
    const st = this.status;
    const { start, end } = this.span();
    const evs = this.events.filter((e) => e.at_ms >= start - 1);
    const applied = [[0, 0]];
    const desired = [[0, 0]];
    for (const e of evs) {
      const t = Math.max(0, (e.at_ms - start) / 1000);
      const d = e.detail || {};
      if (e.event === 'weight_applied' && typeof d.weight_after === 'number') applied.push([t, d.weight_after]);
      else if (DECISIONS.has(e.event) && typeof d.weight_after === 'number') desired.push([t, d.weight_after]);
    }
    applied.push([end, st.applied_weight]);
    desired.push([end, st.desired_weight]);
    const W = chartWidth(this.weightChart, 560); const H = 190; const m = { l: 40, r: 10, t: 10, b: 26 };
    const x = (t) => m.l + (t / end) * (W - m.l - m.r);
    const y = (w) => m.t + (1 - w / 100) * (H - m.t - m.b);
    const steps = (pts) => {
      let d = '';
      pts.forEach(([t, w], i) => {
        if (i === 0) d += `M${x(t).toFixed(1)},${y(w).toFixed(1)}`;
        else d += `H${x(t).toFixed(1)}V${y(w).toFixed(1)}`;
      });
      return d;
    };
    const svg = s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img',
      'aria-label': `Weight over time: now ${fmtPct(st.applied_weight)} after ${fmtDur(end)}; ${applied.length - 2} changes confirmed by the traffic layer.` });
    for (const w of [0, 25, 50, 75, 100]) {
      svg.append(s('line', { class: w === 0 ? 'axis' : 'grid-line', x1: m.l, x2: W - m.r, y1: y(w), y2: y(w) }));
      svg.append(s('text', { x: m.l - 6, y: y(w) + 4, 'text-anchor': 'end' }, `${w}%`));
    }
    timeAxis(svg, end, x, H - m.b, m.t);
    const area = `${steps(applied)}V${y(0).toFixed(1)}H${x(0).toFixed(1)}Z`;
    svg.append(s('path', { class: 'weight-area', d: area }));
    if (desired.some(([, w], i) => w !== applied[Math.min(i, applied.length - 1)][1]) || st.mode === 'advisory') {
      svg.append(s('path', { class: 'desired', d: steps(desired) }));
    }
    svg.append(s('path', { class: 'weight', d: steps(applied) }));
    this.weightChart.replaceChildren(svg, h('div', { class: 'legend' },
      h('span', null, h('span', { class: 'swatch weight' }), 'applied (the traffic layer confirmed)'),
      h('span', null, h('span', { class: 'swatch desired' }), 'decided (where it differs)')));
  }

  drawEvidence() {
    const st = this.status;
    const { end } = this.span();
    const names = [];
    for (const l of this.looks) for (const mt of l.metrics) if (!names.includes(mt.name)) names.push(mt.name);
    if (st.verdict) for (const mt of st.verdict.metrics) if (!names.includes(mt.name)) names.push(mt.name);
    if (names.length === 0) {
      this.evidence.replaceChildren(h('p', { class: 'muted', text: 'No looks yet in this generation: the judge has not seen a window of data.' }));
      return;
    }
    const W = chartWidth(this.evidence, 900);
    const blocks = names.map((name) => metricChart(name, this.looks, st.verdict, end, W));
    this.evidence.replaceChildren(...blocks);
  }

  drawCounts() {
    const c = this.status.counts;
    if (!c) { this.counts.replaceChildren(h('p', { class: 'muted', text: 'No numbers yet.' })); return; }
    const row = (label, v) => h('tr', null, h('th', { scope: 'row', text: label }),
      h('td', { class: 'num', text: String(v.requests) }), h('td', { class: 'num', text: String(v.errors) }),
      h('td', { class: 'num', text: fmtRate(v.error_rate) }), h('td', { class: 'num', text: fmtMs(v.latency_p50_ms) }),
      h('td', { class: 'num', text: fmtMs(v.latency_p99_ms) }));
    const head = h('tr', null, ...['Version', 'Requests', 'Errors', 'Error rate', 'p50', 'p99'].map((t, i) => h('th', { scope: 'col', class: i ? 'num' : null, text: t })));
    const table = h('table', { class: 'counts' }, h('thead', null, head), h('tbody', null, row('stable', c.stable), row('canary', c.canary)));
    const extra = [];
    for (const [name, x] of Object.entries(c.canary.gauges || {})) extra.push(h('p', { class: 'muted', text: `${name}: canary reads ${fmtNum(x)}` }));
    for (const [name, r] of Object.entries(c.canary.business || {})) {
      const b = (c.stable.business || {})[name];
      extra.push(h('p', { class: 'muted', text: `${name}: canary ${r.numerator}/${r.denominator}${b ? `, stable ${b.numerator}/${b.denominator}` : ''}` }));
    }
    this.counts.replaceChildren(h('div', { class: 'scroll' }, table), ...extra);
  }

  drawLog() {
    const show = this.showWeight.checked;
    const list = this.events.filter((e) => show || e.event !== 'weight_applied');
    if (this.rendered.events === list.length && this.rendered.show === show) return;
    this.rendered = { events: list.length, show };
    const items = list.slice(-500).reverse().map((e) => h('li', { 'data-event': e.event },
      h('span', { class: 'when', title: e.time, text: fmtClock(e.at_ms) }),
      h('span', null, h('span', { class: 'what', text: e.event.replace(/_/g, ' ') }), ' ', h('span', { class: 'who', text: `by ${e.actor}` })),
      h('span', { class: 'why', text: e.reason })));
    this.log.replaceChildren(...items);
  }
}

// A chart's width in SVG units: its box's width in pixels, so that its
// text keeps its size on a phone.
function chartWidth(box, fallback) {
  const w = box.clientWidth;
  return w > 0 ? Math.max(300, Math.min(1200, Math.round(w))) : fallback;
}

// 1, 2 or 5 times a power of ten, at least `raw`.
function niceStep(raw) {
  if (!(raw > 0) || !isFinite(raw)) return 1;
  const p = 10 ** Math.floor(Math.log10(raw));
  const f = raw / p;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
}

function timeAxis(svg, end, x, yBase, yTop) {
  const stepsS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400];
  const step = stepsS.find((st) => end / st <= 6) || 86400;
  for (let t = 0; t <= end + 1e-9; t += step) {
    svg.append(s('line', { class: 'grid-line', x1: x(t), x2: x(t), y1: yTop, y2: yBase }));
    svg.append(s('text', { x: x(t), y: yBase + 16, 'text-anchor': 'middle' }, fmtDur(t)));
  }
}

// One metric's evidence over the looks: the e-value on a log scale against
// 1/α where the judge has e-values, else the judge's statistic against its
// threshold.
function metricChart(name, looks, verdict, end, W) {
  const pts = [];
  let hasE = false;
  for (const l of looks) {
    const mt = l.metrics.find((m) => m.name === name);
    if (!mt) continue;
    if (mt.e_value != null) hasE = true;
    pts.push({ t: l.at_seconds, stage: l.stage, m: mt });
  }
  const latest = verdict && verdict.metrics.find((m) => m.name === name);
  const H = 200; const mg = { l: 56, r: 12, t: 12, b: 26 };
  // y value: log10 e-value, or the statistic.
  const yv = hasE
    ? (m) => (m.e_value != null && m.e_value > 0 ? Math.log10(m.e_value) : m.statistic != null ? m.statistic / Math.LN10 : null)
    : (m) => m.statistic;
  const thr = hasE
    ? (m) => (m.threshold != null ? m.threshold / Math.LN10 : null)
    : (m) => m.threshold;
  const vals = [];
  for (const p of pts) { const a = yv(p.m); const b = thr(p.m); if (a != null) vals.push(a); if (b != null) vals.push(b); }
  let lo = vals.length ? Math.min(...vals) : 0;
  let hi = vals.length ? Math.max(...vals) : 1;
  if (hasE) { lo = Math.min(lo, -1); hi = Math.max(hi, 1); lo = Math.floor(lo); hi = Math.ceil(hi); }
  if (hi - lo < 1e-9) { hi += 1; lo -= 1; }
  const pad = hasE ? 0 : (hi - lo) * 0.08;
  lo -= pad; hi += pad;
  const x = (t) => mg.l + (Math.max(0, t) / end) * (W - mg.l - mg.r);
  const y = (v) => mg.t + (1 - (v - lo) / (hi - lo)) * (H - mg.t - mg.b);
  const lastThr = latest && latest.threshold != null ? (hasE ? latest.threshold / Math.LN10 : latest.threshold) : null;
  const desc = hasE
    ? `${name}: e-value on a log scale over ${pts.length} looks; latest ${fmtNum(latest ? latest.e_value : null)}${lastThr != null ? `, fails at ${fmtNum(10 ** lastThr)} (1/α)` : ''}.`
    : `${name}: ${verdict ? verdict.judge : 'judge'} statistic over ${pts.length} looks; latest ${fmtNum(latest ? latest.statistic : null)}${lastThr != null ? `, threshold ${fmtNum(lastThr)}` : ''}.`;
  const svg = s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': desc });
  // y grid
  if (hasE) {
    const stepE = Math.max(1, Math.ceil((hi - lo) / 6));
    for (let v = Math.ceil(lo); v <= hi; v += stepE) {
      svg.append(s('line', { class: 'grid-line', x1: mg.l, x2: W - mg.r, y1: y(v), y2: y(v) }));
      svg.append(s('text', { x: mg.l - 6, y: y(v) + 4, 'text-anchor': 'end' }, v === 0 ? '1' : `1e${v}`));
    }
  } else {
    const step = niceStep((hi - lo) / 4);
    for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-12; v += step) {
      const tick = Math.abs(v) < step * 1e-6 ? 0 : v;
      svg.append(s('line', { class: 'grid-line', x1: mg.l, x2: W - mg.r, y1: y(tick), y2: y(tick) }));
      svg.append(s('text', { x: mg.l - 6, y: y(tick) + 4, 'text-anchor': 'end' }, fmtNum(Number(tick.toPrecision(6)))));
    }
  }
  svg.append(s('line', { class: 'axis', x1: mg.l, x2: mg.l, y1: mg.t, y2: H - mg.b }));
  timeAxis(svg, end, x, H - mg.b, mg.t);
  // stage boundaries
  for (let i = 1; i < pts.length; i += 1) {
    if (pts[i].stage !== pts[i - 1].stage) {
      svg.append(s('line', { class: 'stage-line', x1: x(pts[i].t), x2: x(pts[i].t), y1: mg.t, y2: H - mg.b }));
      svg.append(s('text', { x: x(pts[i].t) + 3, y: H - mg.b - 4 }, `stage ${pts[i].stage + 1}`));
    }
  }
  // threshold, as steps (it may move with the samples or the stage)
  let dT = '';
  let prev = null;
  for (const p of pts) {
    const v = thr(p.m);
    if (v == null) { prev = null; continue; }
    dT += prev == null ? `M${x(p.t).toFixed(1)},${y(v).toFixed(1)}` : `H${x(p.t).toFixed(1)}V${y(v).toFixed(1)}`;
    prev = v;
  }
  if (dT) {
    svg.append(s('path', { class: 'threshold', d: `${dT}H${x(end).toFixed(1)}`, fill: 'none' }));
    if (lastThr != null) {
      svg.append(s('text', { class: 'threshold-label', x: W - mg.r - 4, y: y(lastThr) - 5, 'text-anchor': 'end' },
        hasE ? `1/α = ${fmtNum(10 ** lastThr)}` : `threshold ${fmtNum(lastThr)}`));
    }
  }
  // the evidence
  let d = '';
  for (const p of pts) {
    const v = yv(p.m);
    if (v == null) continue;
    d += `${d ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(v).toFixed(1)}`;
  }
  if (d) svg.append(s('path', { class: 'evidence', d }));
  for (const p of pts) {
    const v = yv(p.m);
    if (v != null && p.m.outcome === 'fail') svg.append(s('circle', { class: 'point-fail', cx: x(p.t), cy: y(v), r: 3.5 }));
  }
  const now = latest
    ? [h('span', { class: `outcome-${latest.outcome}`, text: latest.outcome }), ` — ${latest.reason}`]
    : [h('span', { class: 'muted', text: 'not judged at the latest look' })];
  const numbers = [];
  if (latest) {
    if (latest.e_value != null) numbers.push(`e-value ${fmtNum(latest.e_value)}`);
    else if (latest.statistic != null) numbers.push(`statistic ${fmtNum(latest.statistic)}`);
    if (latest.threshold != null) numbers.push(hasE ? `fails at ≥ ${fmtNum(Math.exp(latest.threshold))}` : `threshold ${fmtNum(latest.threshold)}`);
    if (latest.p_value != null) numbers.push(`p ${fmtNum(latest.p_value)}`);
    if (latest.interval) numbers.push(`${latest.interval_of || 'interval'} [${fmtNum(latest.interval[0])}, ${fmtNum(latest.interval[1])}]`);
    numbers.push(`n ${latest.n_baseline} / ${latest.n_canary}`);
  }
  return h('div', { class: 'metric', 'data-metric': name },
    h('h3', { text: name }),
    h('p', { class: 'now' }, ...now),
    h('p', { class: 'muted', text: numbers.join(' · ') }),
    svg,
    h('div', { class: 'legend' },
      h('span', null, h('span', { class: 'swatch evidence' }), hasE ? 'e-value (log scale)' : 'statistic'),
      h('span', null, h('span', { class: 'swatch threshold' }), hasE ? 'fails above 1/α' : 'threshold')));
}

// ---------------------------------------------------------------- dialogs

function openTokenDialog(why) {
  const dlg = document.getElementById('token-dialog');
  const input = document.getElementById('token-input');
  const actor = document.getElementById('actor-input');
  input.value = '';
  actor.value = sessionStorage.getItem(ACTOR_KEY) || '';
  if (why) setText(document.getElementById('token-why'), why);
  if (!dlg.open) dlg.showModal();
  input.focus();
}

function setupTokenDialog() {
  const dlg = document.getElementById('token-dialog');
  document.getElementById('token-button').addEventListener('click', () => openTokenDialog());
  document.getElementById('token-cancel').addEventListener('click', () => dlg.close());
  document.getElementById('token-forget').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    dlg.close();
    updateTokenButton();
    connect();
  });
  document.getElementById('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = document.getElementById('token-input').value.trim();
    const a = document.getElementById('actor-input').value.trim();
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    if (/^[!-~]{1,64}$/.test(a)) sessionStorage.setItem(ACTOR_KEY, a);
    else if (a === '') sessionStorage.removeItem(ACTOR_KEY);
    dlg.close();
    updateTokenButton();
    connect();
  });
}

function updateTokenButton() {
  const b = document.getElementById('token-button');
  setText(b, getToken() ? `Token ✓ (${getActor()})` : 'Enter token');
  b.setAttribute('aria-label', getToken() ? `Token saved for this tab; actions are logged as ${getActor()}. Change it` : 'Enter the API token');
}

let confirmTarget = null;

function openConfirm(page, action) {
  const dlg = document.getElementById('confirm-dialog');
  confirmTarget = { page, action };
  setText(document.getElementById('confirm-title'), `${action.label}: ${page.name}`);
  setText(document.getElementById('confirm-text'), action.text(page.name));
  document.getElementById('confirm-reason').value = '';
  const needToken = !getToken();
  document.getElementById('confirm-token-row').hidden = !needToken;
  document.getElementById('confirm-token').value = '';
  const ok = document.getElementById('confirm-ok');
  setText(ok, action.label);
  ok.className = action.danger ? 'danger' : 'primary';
  dlg.showModal();
  (needToken ? document.getElementById('confirm-token') : document.getElementById('confirm-reason')).focus();
}

function setupConfirmDialog() {
  const dlg = document.getElementById('confirm-dialog');
  document.getElementById('confirm-cancel').addEventListener('click', () => { dlg.close(); confirmTarget = null; });
  document.getElementById('confirm-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const target = confirmTarget;
    confirmTarget = null;
    dlg.close();
    if (!target) return;
    const t = document.getElementById('confirm-token').value.trim();
    if (t) { sessionStorage.setItem(TOKEN_KEY, t); updateTokenButton(); }
    const reason = document.getElementById('confirm-reason').value.trim();
    const { page, action } = target;
    page.pending = { action: action.id };
    page.msg.className = 'action-msg';
    setText(page.msg, `${action.label}: sent; waiting for the server's stream to show the result…`);
    try {
      await api('POST', rolloutPath(page.name, `/${action.id}`), reason ? { reason } : {});
      // The status comes from the stream (noteResult), not from this answer.
    } catch (err) {
      page.pending = null;
      page.msg.className = 'action-msg error';
      if (err.status === 401) {
        sessionStorage.removeItem(TOKEN_KEY);
        updateTokenButton();
        setText(page.msg, `${action.label} refused: ${err.message}. Nothing changed. Enter the right token and try again.`);
      } else if (err.status === 0) {
        setText(page.msg, `${action.label} failed: the server is unreachable. Nothing is known to have changed.`);
      } else {
        setText(page.msg, `${action.label} refused (${err.status}): ${err.message}. Nothing changed.`);
      }
    }
  });
}

// ---------------------------------------------------------------- routing

let current = null;

function parseRoute() {
  const m = /^#\/rollouts\/([^/]+)$/.exec(location.hash);
  if (m) {
    try { return { name: decodeURIComponent(m[1]) }; } catch { return {}; }
  }
  return {};
}

function navigate() {
  if (current) current.destroy();
  disconnect();
  const r = parseRoute();
  current = r.name ? new RolloutPage(r.name) : new Overview();
  document.title = r.name ? `${r.name} — canary` : 'Rollouts — canary';
  current.render();
  const h1 = main().querySelector('h1');
  if (h1 && document.activeElement && document.activeElement !== document.body) h1.focus();
  connect();
}

function start() {
  setupTokenDialog();
  setupConfirmDialog();
  updateTokenButton();
  window.addEventListener('hashchange', navigate);
  navigate();
}

start();
