// The canary dashboard in a real browser: Debian's Chromium driven by
// playwright-core, against a real `canary serve` with `canary demo-backend`
// processes behind real proxy rollouts. Everything listens on port 0 (the
// ports are read back from the processes' first lines) and is stopped by
// its PID. Waits are for conditions, each bounded.
//
//   cd tests/dashboard && npm ci && node --test
//
// CANARY_BIN (default: target/debug/canary), CHROMIUM (default:
// /usr/bin/chromium), SCREENSHOTS (default: docs/img) and PERF_OUT
// (default: tests/dashboard/out/perf.json) can be set.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import http from 'node:http';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..', '..');
const BIN = resolve(root, process.env.CANARY_BIN || 'target/debug/canary');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = resolve(root, process.env.SCREENSHOTS || 'docs/img');
const PERF_OUT = resolve(root, process.env.PERF_OUT || 'tests/dashboard/out/perf.json');
const TOKEN = 'dashboard-browser-token-0123456789';
const WAIT = 30000;

const children = [];
let dir;
let browser;
let main; // the server with the proxy rollouts
let stable;
let goodCanary;
let badCanary;
const loads = [];
const problems = []; // console errors, page errors, CSP violations, off-origin requests

// ------------------------------------------------------------ processes

// Starts `canary args…` and resolves with its first stdout line.
function startProcess(args, env = {}) {
  return new Promise((res, rej) => {
    const child = spawn(BIN, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    const rl = createInterface({ input: child.stdout });
    const timer = setTimeout(() => rej(new Error(`${args[0]}: no first line in ${WAIT} ms`)), WAIT);
    child.once('error', (e) => { clearTimeout(timer); rej(e); });
    child.once('exit', (code) => { clearTimeout(timer); rej(new Error(`${args[0]} exited (${code}) before its first line`)); });
    rl.once('line', (line) => {
      clearTimeout(timer);
      child.removeAllListeners('exit');
      rl.on('line', () => {}); // keep draining stdout
      res({ child, line });
    });
  });
}

function stopProcess(child) {
  if (child.exitCode === null && child.signalCode === null) {
    try { process.kill(child.pid, 'SIGKILL'); } catch { /* already gone */ }
  }
}

async function backend(name, errorRate) {
  const { child, line } = await startProcess(['demo-backend', '--port', '0', '--threads', '1', '--name', name,
    '--error-rate', String(errorRate), '--latency-ms', '2', '--jitter-ms', '4']);
  const url = line.trim().split(' ').pop();
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
  return { child, url };
}

async function serve(db, listen = '127.0.0.1:0', extra = []) {
  const { child, line } = await startProcess(['serve', '--listen', listen, '--db', db, ...extra], { CANARY_TOKEN: TOKEN });
  const base = line.trim().replace('canary serve listening on ', '');
  assert.match(base, /^http:\/\/127\.0\.0\.1:\d+$/, line);
  return { child, base, db };
}

// Sends requests through a proxy, `concurrency` at a time, until stopped.
function load(url, concurrency = 3) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const state = { stop: false, sent: 0 };
  const one = () => new Promise((res) => {
    const req = http.get(url, { agent }, (r) => { r.resume(); r.on('end', res); r.on('error', res); });
    req.on('error', () => setTimeout(res, 50));
    req.setTimeout(5000, () => req.destroy());
  });
  const loop = async () => { while (!state.stop) { await one(); state.sent += 1; } };
  state.done = Promise.all(Array.from({ length: concurrency }, loop)).then(() => agent.destroy());
  loads.push(state);
  return state;
}

// ------------------------------------------------------------ the API

async function call(base, method, path, { body, token = TOKEN, type = 'application/json' } = {}) {
  const headers = { 'X-Canary-Actor': 'node-test' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = type;
  const r = await fetch(base + path, { method, headers, body });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, json, text };
}

async function create(base, spec) {
  const r = await call(base, 'POST', '/api/v1/rollouts', { body: spec, type: 'application/yaml' });
  assert.equal(r.status, 201, r.text);
  return r.json;
}

function proxySpec(name, canaryUrl, stages = '  - {weight: 20, duration: 1h}\n  - {weight: 60, duration: 1h}\n  - {weight: 100, duration: 1h}\n') {
  return `name: ${name}\nstages:\n${stages}analysis: {interval: 250ms}\ntraffic:\n  listen: 127.0.0.1:0\n  stable: ${stable.url}\n  canary: ${canaryUrl}\n`;
}

function simulatedSpec(name, scenario, interval = '1s', stages = '  - {weight: 5, duration: 1h}\n  - {weight: 25, duration: 1h}\n  - {weight: 100, duration: 1h}\n') {
  return `name: ${name}\nstages:\n${stages}analysis: {interval: ${interval}}\ntraffic: {provider: simulated, scenario: ${scenario}, requests_per_second: 200}\n`;
}

async function until(what, fn, limit = WAIT) {
  const end = Date.now() + limit;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`never happened within ${limit} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function events(base, name) {
  const r = await call(base, 'GET', `/api/v1/rollouts/${name}/events`);
  assert.equal(r.status, 200, r.text);
  return r.json.events;
}

// ------------------------------------------------------------ the browser

async function newPage(base, viewport = { width: 1360, height: 900 }) {
  const context = await browser.newContext({ viewport, colorScheme: 'light', reducedMotion: 'reduce' });
  const page = await context.newPage();
  const origin = new URL(base).origin;
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('request', (r) => {
    const u = r.url();
    if (!u.startsWith(`${origin}/`)) problems.push(`request off the origin: ${u}`);
    if (u.includes(TOKEN) || u.includes('token=')) problems.push(`the token in a URL: ${u}`);
  });
  await context.addInitScript(() => {
    window.__csp = [];
    document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  return page;
}

async function phaseShown(page) {
  return (await page.locator('.head .phase').textContent()).trim();
}

async function enterToken(page, token, actor) {
  await page.locator('#token-button').click();
  const dlg = page.locator('#token-dialog');
  await dlg.getByLabel('Token', { exact: true }).fill(token);
  if (actor !== undefined) await dlg.getByLabel(/your name/i).fill(actor);
  await dlg.getByRole('button', { name: 'Save' }).click();
  await until('the token dialog closed', () => page.locator('#token-dialog').evaluate((d) => !d.open));
}

async function act(page, label) {
  await page.locator('.actions').getByRole('button', { name: label, exact: true }).click();
  const dlg = page.locator('#confirm-dialog');
  await until('the confirmation opened', () => dlg.evaluate((d) => d.open));
  await dlg.getByRole('button', { name: label, exact: true }).click();
}

async function cspViolations(page) {
  return page.evaluate(() => window.__csp);
}

// ------------------------------------------------------------ setup

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'canary-dashboard-'));
  mkdirSync(SHOTS, { recursive: true });
  stable = await backend('stable', 0.005);
  goodCanary = await backend('canary-good', 0.005);
  badCanary = await backend('canary-bad', 0.3);
  main = await serve(join(dir, 'main.db'));
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update'],
  });
});

after(async () => {
  for (const l of loads) l.stop = true;
  await Promise.all(loads.map((l) => l.done));
  if (browser) await browser.close();
  for (const c of children) stopProcess(c);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

// ------------------------------------------------------------ tests

test('with no rollouts yet the overview says how to create one, then lists one as it is created', async () => {
  const page = await newPage(main.base);
  await page.goto(`${main.base}/`);
  const empty = page.locator('#empty');
  await empty.waitFor({ timeout: WAIT });
  assert.match(await empty.textContent(), /No rollouts yet/);
  assert.match(await empty.textContent(), /canary rollouts apply -f rollout\.yaml/);
  assert.equal(await page.locator('#conn').textContent(), 'Live');

  const web = await create(main.base, proxySpec('web', goodCanary.url));
  load(`http://${web.traffic.listen}/`);
  // No reload: the stream brings it.
  await page.locator('tr[data-name="web"]').waitFor({ timeout: WAIT });
  assert.equal(await empty.count(), 0);
  assert.deepEqual(await cspViolations(page), []);
  await page.context().close();
});

test('the overview lists every rollout with its phase, stage, weight, time in stage and verdict', async () => {
  const bad = await create(main.base, proxySpec('checkout', badCanary.url));
  load(`http://${bad.traffic.listen}/`);
  await create(main.base, simulatedSpec('search', 'healthy', '500ms', '  - {weight: 10, duration: 3s}\n  - {weight: 50, duration: 3s}\n  - {weight: 100, duration: 3s}\n'));
  await create(main.base, simulatedSpec('payments', 'latency-50pct', '500ms'));
  await create(main.base, simulatedSpec('recommendations', 'healthy'));
  await create(main.base, simulatedSpec('profile', 'healthy'));
  assert.equal((await call(main.base, 'POST', '/api/v1/rollouts/profile/pause', { body: '{"reason": "waiting for the DBA"}' })).status, 200);

  const page = await newPage(main.base);
  await page.goto(`${main.base}/`);
  const names = ['web', 'checkout', 'search', 'payments', 'recommendations', 'profile'];
  for (const n of names) await page.locator(`tr[data-name="${n}"]`).waitFor({ timeout: WAIT });
  const row = page.locator('tr[data-name="profile"]');
  await until('profile shown paused', async () => (await row.locator('.phase').textContent()) === 'paused');
  assert.match(await row.locator('td[data-label="Stage"]').textContent(), /^1 of 3$/);
  assert.match(await row.locator('td[data-label="Weight"]').textContent(), /^5 %$/);

  // The bad canary is rolled back, shown without a reload.
  const checkout = page.locator('tr[data-name="checkout"]');
  await until('checkout shown rolled back', async () => (await checkout.locator('.phase').textContent()) === 'rolled back');
  assert.match(await checkout.locator('td.verdict').textContent(), /^fail: /);
  // The healthy simulated one with short stages is promoted.
  await until('search shown succeeded', async () => (await page.locator('tr[data-name="search"] .phase').textContent()) === 'succeeded', 60000);

  // Filter by phase, and sort.
  await page.getByLabel('Phase').selectOption('rolled_back');
  const visible = () => page.locator('tbody tr:visible').evaluateAll((rs) => rs.map((r) => r.dataset.name));
  // Exactly the rolled-back ones (another may roll back meanwhile: the page
  // follows).
  await until('the filter shows the rolled-back rollouts', async () => {
    const rolledBack = (await call(main.base, 'GET', '/api/v1/rollouts')).json.rollouts
      .filter((r) => r.phase === 'rolled_back').map((r) => r.name);
    const shown = await visible();
    return shown.includes('checkout') && JSON.stringify(shown) === JSON.stringify(rolledBack);
  });
  await page.getByLabel('Phase').selectOption('');
  await page.getByRole('button', { name: 'Weight', exact: true }).click();
  const weights = async () => page.locator('tbody tr td[data-label="Weight"]').evaluateAll((cs) => cs.map((c) => parseFloat(c.textContent)));
  const asc = await weights();
  assert.deepEqual(asc, [...asc].sort((a, b) => a - b));
  assert.equal(await page.locator('th[aria-sort]').getAttribute('aria-sort'), 'ascending');
  await page.getByRole('button', { name: 'Rollout', exact: true }).click();
  assert.deepEqual(await visible(), [...names].sort());

  // Time in stage moves on without a reload.
  const time = page.locator('tr[data-name="recommendations"] td[data-label="Time in stage"]');
  const t0 = await time.textContent();
  await until('the time in stage moves', async () => (await time.textContent()) !== t0);

  await page.screenshot({ path: join(SHOTS, 'dashboard-overview.png'), fullPage: true });
  const phone = await newPage(main.base, { width: 390, height: 844 });
  await phone.goto(`${main.base}/`);
  await phone.locator('tr[data-name="checkout"]').waitFor({ timeout: WAIT });
  await phone.screenshot({ path: join(SHOTS, 'dashboard-overview-phone.png') });
  // On a phone the table becomes cards: nothing runs off the screen.
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than the phone`);
  await phone.context().close();
  assert.deepEqual(await cspViolations(page), []);
  await page.context().close();
});

test("a bad canary's page shows the rollback, its reason and the evidence", async () => {
  const page = await newPage(main.base);
  await page.goto(`${main.base}/#/rollouts/checkout`);
  await until('shown rolled back', async () => (await phaseShown(page)) === 'rolled back');
  const status = (await call(main.base, 'GET', '/api/v1/rollouts/checkout')).json;
  assert.equal(status.phase, 'rolled_back');
  const log = page.locator('.log li[data-event="rollback"]').first();
  await log.waitFor({ timeout: WAIT });
  const shown = await log.locator('.why').textContent();
  assert.ok(shown.length > 10);
  assert.ok(status.reason.includes(shown) || shown.includes(status.reason.slice(0, 40)), `${shown} vs ${status.reason}`);
  assert.match(await page.locator('.waiting').textContent(), /rolled back/i);
  // Evidence over time: the error rate's e-value against 1/α, per look.
  const chart = page.locator('.metric[data-metric="error_rate"] svg');
  await chart.waitFor({ timeout: WAIT });
  assert.match(await chart.getAttribute('aria-label'), /e-value on a log scale over \d+ looks/);
  assert.equal(await page.locator('.metric[data-metric="error_rate"] svg path.threshold').count(), 1);
  assert.ok(await page.locator('.metric[data-metric="error_rate"] svg .point-fail').count() >= 1, 'the failing look is marked');
  // Per-version numbers of the stage.
  const counts = await page.locator('table.counts tbody tr').allTextContents();
  assert.equal(counts.length, 2);
  // Retry is the only action a rolled-back rollout takes.
  const enabled = await page.locator('.actions button:not([disabled])').allTextContents();
  assert.deepEqual(enabled, ['Retry']);
  await page.screenshot({ path: join(SHOTS, 'dashboard-rollout-rolled-back.png'), fullPage: true });
  assert.deepEqual(await cspViolations(page), []);
  await page.context().close();
});

test('a wrong token shows an error and changes nothing', async () => {
  const page = await newPage(main.base);
  await page.goto(`${main.base}/#/rollouts/web`);
  await until('shown progressing', async () => (await phaseShown(page)) === 'progressing');
  const before = await events(main.base, 'web');
  const revision = (await call(main.base, 'GET', '/api/v1/rollouts/web')).json.revision;
  await enterToken(page, 'not-the-token-0123456789', 'mallory');
  await act(page, 'Pause');
  const msg = page.locator('.action-msg.error');
  await msg.waitFor({ timeout: WAIT });
  assert.match(await msg.textContent(), /refused: wrong token\. Nothing changed/);
  const after = (await call(main.base, 'GET', '/api/v1/rollouts/web')).json;
  assert.equal(after.phase, 'progressing');
  const evs = await events(main.base, 'web');
  assert.ok(!evs.some((e) => e.actor.includes('mallory')), 'nothing logged for the wrong token');
  assert.ok(!evs.slice(before.length).some((e) => e.event === 'pause'));
  assert.ok(after.revision >= revision);
  assert.equal(await phaseShown(page), 'progressing');
  await page.context().close();
});

test('pause then resume change the phase shown and log the actor', async () => {
  const page = await newPage(main.base);
  await page.goto(`${main.base}/#/rollouts/web`);
  await until('shown progressing', async () => (await phaseShown(page)) === 'progressing');
  await enterToken(page, TOKEN, 'alice');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('canary.token')), TOKEN);
  assert.ok(!page.url().includes(TOKEN));

  // By keyboard: Tab to Pause, Enter opens the confirmation, Escape closes
  // it and nothing is sent.
  await page.locator('.crumb').focus();
  let focused = '';
  for (let i = 0; i < 20 && focused !== 'pause'; i += 1) {
    await page.keyboard.press('Tab');
    focused = await page.evaluate(() => document.activeElement && document.activeElement.dataset.action);
  }
  assert.equal(focused, 'pause');
  await page.keyboard.press('Enter');
  assert.ok(await page.locator('#confirm-dialog').evaluate((d) => d.open));
  await page.keyboard.press('Escape');
  assert.ok(!(await page.locator('#confirm-dialog').evaluate((d) => d.open)));
  assert.equal((await call(main.base, 'GET', '/api/v1/rollouts/web')).json.phase, 'progressing');

  await act(page, 'Pause');
  await until('shown paused', async () => (await phaseShown(page)) === 'paused');
  const pauseItem = page.locator('.log li[data-event="pause"]').first();
  await pauseItem.waitFor({ timeout: WAIT });
  assert.match(await pauseItem.textContent(), /by api:alice/);
  await until('the result noted from the stream', async () => /Recorded: pause by api:alice/.test(await page.locator('.action-msg').textContent()));
  assert.match(await page.locator('.waiting').textContent(), /Paused/);

  await act(page, 'Resume');
  await until('shown progressing again', async () => (await phaseShown(page)) === 'progressing');
  const resumeItem = page.locator('.log li[data-event="resume"]').first();
  await resumeItem.waitFor({ timeout: WAIT });
  assert.match(await resumeItem.textContent(), /by api:alice/);

  const evs = await events(main.base, 'web');
  const mine = evs.filter((e) => e.actor === 'api:alice').map((e) => e.event);
  assert.deepEqual(mine, ['pause', 'resume']);
  await page.screenshot({ path: join(SHOTS, 'dashboard-rollout.png'), fullPage: true });
  const phone = await newPage(main.base, { width: 390, height: 844 });
  await phone.goto(`${main.base}/#/rollouts/web`);
  await phone.locator('.metric svg').first().waitFor({ timeout: WAIT });
  await phone.screenshot({ path: join(SHOTS, 'dashboard-rollout-phone.png') });
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than the phone`);
  await phone.context().close();
  assert.deepEqual(await cspViolations(page), []);
  await page.context().close();
});

test('labels and contrast: every control is labelled, every phase readable', async () => {
  const page = await newPage(main.base);
  await page.goto(`${main.base}/#/rollouts/web`);
  await page.locator('.metric svg').first().waitFor({ timeout: WAIT });
  for (const url of [`${main.base}/`, `${main.base}/#/rollouts/web`]) {
    await page.goto(url);
    await page.waitForFunction(() => document.querySelector('tbody tr, .metric svg'));
    const unlabelled = await page.evaluate(() => [...document.querySelectorAll('input, select, button')]
      .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.textContent.trim())
      .map((el) => el.outerHTML));
    assert.deepEqual(unlabelled, []);
  }
  // WCAG AA: 4.5:1 for each phase badge and the muted text.
  const ratios = await page.evaluate(() => {
    const lum = (c) => {
      const [r, g, b] = c.match(/\d+(\.\d+)?/g).slice(0, 3).map(Number).map((v) => {
        const x = v / 255;
        return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4;
      });
      return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
    const out = {};
    for (const p of ['pending', 'progressing', 'paused', 'succeeded', 'rolling_back', 'rolled_back', 'aborted']) {
      const el = document.createElement('span');
      el.className = `phase ${p}`;
      el.textContent = p;
      document.body.append(el);
      const cs = getComputedStyle(el);
      out[p] = ratio(cs.color, cs.backgroundColor);
      el.remove();
    }
    const m = document.createElement('p');
    m.className = 'muted';
    document.querySelector('.panel').append(m);
    out.muted = ratio(getComputedStyle(m).color, getComputedStyle(document.querySelector('.panel')).backgroundColor);
    m.remove();
    return out;
  });
  for (const [k, r] of Object.entries(ratios)) assert.ok(r >= 4.5, `${k}: contrast ${r.toFixed(2)}:1`);
  await page.context().close();
});

test('a rollout that no longer exists is said so, on its open page and by its address', async () => {
  await create(main.base, simulatedSpec('doomed', 'healthy', '500ms'));
  const page = await newPage(main.base);
  await page.goto(`${main.base}/#/rollouts/doomed`);
  await until('shown progressing', async () => (await phaseShown(page)) === 'progressing');
  const r = await call(main.base, 'DELETE', '/api/v1/rollouts/doomed?force=true');
  assert.equal(r.status, 204, r.text);
  await page.locator('#gone').waitFor({ timeout: WAIT });
  assert.match(await page.locator('#gone').textContent(), /Rollout doomed no longer exists/);
  assert.equal(await page.locator('.actions button:not([disabled])').count(), 0);

  await page.goto(`${main.base}/#/rollouts/never-was`);
  await page.locator('#gone').waitFor({ timeout: WAIT });
  assert.match(await page.locator('#gone').textContent(), /no rollout of this name/);
  await page.context().close();
});

test('an unreachable server is shown, and the page reconnects when it is back', async () => {
  const db = join(dir, 'restart.db');
  let srv = await serve(db);
  await create(srv.base, simulatedSpec('survivor', 'healthy', '500ms'));
  const page = await newPage(srv.base);
  await page.goto(`${srv.base}/`);
  await page.locator('tr[data-name="survivor"]').waitFor({ timeout: WAIT });
  stopProcess(srv.child);
  await until('shown unreachable', async () => /Server unreachable/.test(await page.locator('#conn').textContent()));
  assert.match(await page.locator('[role="alert"]').first().textContent(), /unreachable/);
  // The last state stays on screen.
  assert.equal(await page.locator('tr[data-name="survivor"]').count(), 1);
  // The same address again (the port the system gave the first one).
  srv = await serve(db, new URL(srv.base).host);
  await until('live again', async () => (await page.locator('#conn').textContent()) === 'Live', 40000);
  await until('the banner is gone', async () => (await page.locator('.notice.error').count()) === 0);
  assert.equal(await page.locator('tr[data-name="survivor"]').count(), 1);
  stopProcess(srv.child);
  await page.context().close();
});

test('with --auth-reads the page asks for the token and then reads with it', async () => {
  const srv = await serve(join(dir, 'auth.db'), '127.0.0.1:0', ['--auth-reads']);
  await create(srv.base, simulatedSpec('private', 'healthy', '500ms'));
  const page = await newPage(srv.base);
  await page.goto(`${srv.base}/`);
  await until('asked for the token', async () => /needs the token to read/.test(await page.locator('main').textContent()));
  assert.equal(await page.locator('tr[data-name="private"]').count(), 0);
  await enterToken(page, TOKEN);
  await page.locator('tr[data-name="private"]').waitFor({ timeout: WAIT });
  await page.locator('tr[data-name="private"] a').click();
  await page.locator('.metric svg').first().waitFor({ timeout: WAIT });
  stopProcess(srv.child);
  await page.context().close();
});

test('200 rollouts: time to first render and the cost of the stream\'s updates', async (t) => {
  const srv = await serve(join(dir, 'many.db'));
  const N = 200;
  const scenarios = ['healthy', 'healthy', 'healthy', 'errors-5x', 'latency-50pct'];
  for (let i = 0; i < N; i += 1) {
    const name = `svc-${String(i).padStart(3, '0')}`;
    await create(srv.base, simulatedSpec(name, scenarios[i % scenarios.length]));
  }
  const page = await newPage(srv.base);
  await page.goto(`${srv.base}/`);
  await page.waitForFunction((n) => document.querySelectorAll('tbody tr').length === n, N, { timeout: WAIT, polling: 'raf' });
  const firstRender = await page.evaluate(() => performance.now());
  // Every row shows its verdict once the snapshot is in.
  await page.waitForFunction(() => [...document.querySelectorAll('td.verdict')].every((c) => c.textContent !== 'no verdict yet'), null, { timeout: WAIT });
  const fullRender = await page.evaluate(() => performance.now());

  // The update cost over a 10 s window of the live stream.
  await page.evaluate(() => {
    window.__updates = [];
    window.__long = [];
    new PerformanceObserver((l) => {
      for (const e of l.getEntries()) if (e.name === 'canary:overview-update') window.__updates.push(e);
    }).observe({ type: 'measure' });
    new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__long.push(e.duration); }).observe({ type: 'longtask' });
  });
  const window0 = Date.now();
  const firstRows = await page.locator('td[data-label="Time in stage"]').allTextContents();
  await new Promise((r) => setTimeout(r, 10000));
  const seconds = (Date.now() - window0) / 1000;
  const m = await page.evaluate(() => {
    const es = window.__updates;
    const d = es.map((e) => e.duration).sort((a, b) => a - b);
    const statuses = es.reduce((s, e) => s + ((e.detail && e.detail.statuses) || 0), 0);
    return {
      flushes: es.length,
      statuses,
      total_ms: d.reduce((a, b) => a + b, 0),
      p50_ms: d[Math.floor(d.length / 2)] || 0,
      p99_ms: d[Math.floor(d.length * 0.99)] || 0,
      max_ms: d[d.length - 1] || 0,
      long_tasks: window.__long.length,
      long_task_ms: window.__long.reduce((a, b) => a + b, 0),
    };
  });
  const lastRows = await page.locator('td[data-label="Time in stage"]').allTextContents();
  assert.ok(m.statuses > N, `the stream updated the page: ${m.statuses} statuses applied`);
  assert.notDeepEqual(lastRows, firstRows, 'the rows moved on');
  const perf = {
    rollouts: N,
    first_render_ms: Math.round(firstRender),
    all_verdicts_shown_ms: Math.round(fullRender),
    window_seconds: Number(seconds.toFixed(1)),
    statuses_per_second: Number((m.statuses / seconds).toFixed(1)),
    flushes_per_second: Number((m.flushes / seconds).toFixed(1)),
    ms_per_status: Number((m.total_ms / Math.max(1, m.statuses)).toFixed(3)),
    flush_p50_ms: Number(m.p50_ms.toFixed(2)),
    flush_p99_ms: Number(m.p99_ms.toFixed(2)),
    flush_max_ms: Number(m.max_ms.toFixed(2)),
    main_thread_busy_in_updates_pct: Number(((m.total_ms / (seconds * 1000)) * 100).toFixed(2)),
    long_tasks: m.long_tasks,
    long_task_ms: Math.round(m.long_task_ms),
    chromium: browser.version(),
    cpus: `${cpus().length} × ${cpus()[0] ? cpus()[0].model : '?'}`,
  };
  mkdirSync(dirname(PERF_OUT), { recursive: true });
  writeFileSync(PERF_OUT, `${JSON.stringify(perf, null, 2)}\n`);
  t.diagnostic(`200 rollouts: ${JSON.stringify(perf)}`);
  console.log(`dashboard perf: ${JSON.stringify(perf)}`);

  // Sorting and filtering 200 rows stays interactive.
  const s0 = await page.evaluate(() => performance.now());
  await page.getByRole('button', { name: 'Latest verdict', exact: true }).click();
  await page.getByLabel('Phase').selectOption('rolled_back');
  await page.waitForFunction(() => [...document.querySelectorAll('tbody tr')].every((r) => r.hidden || r.dataset.phase === 'rolled_back'));
  t.diagnostic(`sort and filter of 200 rows: ${Math.round((await page.evaluate(() => performance.now())) - s0)} ms`);
  stopProcess(srv.child);
  await page.context().close();
});

test('no page broke its Content-Security-Policy, logged an error or left the origin', () => {
  assert.deepEqual(problems.filter((p) => !/Failed to load resource|ERR_CONNECTION_REFUSED|net::ERR/.test(p)), []);
});
