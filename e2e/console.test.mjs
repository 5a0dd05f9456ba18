// Browser tests of the fwdwatch operator's console, in headless Chromium (Debian's
// package, /usr/bin/chromium) driven by playwright-core.
//
// What runs: `fwdwatch up` with its bundled simulator (a small fleet), scanning
// every few seconds, with the notifier's generic webhook pointed at a receiver in
// this script (to see which alerts the next scans send). The simulator is both
// Microsoft 365 (its `/_sim/truth` is what the console must show) and Entra ID
// (operators sign in through its account picker).
//
// What is checked (each a step; any failure makes the exit code non-zero):
//   an anonymous visitor sees no data · sign-in through the simulated Entra ID ·
//   the Forwards page lists exactly the simulator's truth · Remove → confirm →
//   verified, and the truth changes · Approve with an expiry → listed under
//   Approvals, and the next scan does not alert it · Revoke · a POST without the
//   page's anti-forgery token (or from another site) is refused · `up`'s one-time
//   link signs in once · no Content-Security-Policy violation on any page.
//
// Screenshots of each page go to $SCREENSHOT_DIR (default e2e/out); `run.sh
// --update-docs` writes them to docs/ for docs/console.md.
//
// Environment: FWDWATCH_BIN (the fwdwatch binary), CHROMIUM (default /usr/bin/chromium).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..');
const BIN = process.env.FWDWATCH_BIN || path.join(root, 'target', 'debug', 'fwdwatch');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = path.resolve(process.env.SCREENSHOT_DIR || path.join(here, 'out'));
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
const WATCHDOG_MS = 240_000;

const started = Date.now();
const results = [];
const cleanups = [];
let cspViolations = [];

function log(...args) {
  console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s]`, ...args);
}

async function step(name, body) {
  const t0 = Date.now();
  try {
    await body();
    results.push({ name, ok: true });
    log(`ok    ${name} (${Date.now() - t0} ms)`);
  } catch (error) {
    results.push({ name, ok: false });
    log(`FAIL  ${name}: ${error && error.stack ? error.stack : error}`);
    if (onFailure) await onFailure(name);
  }
}
let onFailure = null;

async function cleanup() {
  for (const fn of cleanups.reverse()) {
    try {
      await fn();
    } catch (error) {
      log(`cleanup: ${error}`);
    }
  }
  cleanups.length = 0;
}

const watchdog = setTimeout(async () => {
  log(`FAIL  the browser tests did not finish within ${WATCHDOG_MS / 1000} s`);
  await cleanup();
  process.exit(2);
}, WATCHDOG_MS);

// ---- the webhook receiver (and an attacker's page on another origin) ----

const alerts = [];
const receiver = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/hook') {
    let body = '';
    req.on('data', (chunk) => (body += chunk));
    req.on('end', () => {
      try {
        alerts.push({ at: new Date(), body: JSON.parse(body) });
      } catch {
        // not JSON: not ours
      }
      res.writeHead(200).end('ok');
    });
    return;
  }
  if (req.method === 'GET' && req.url.startsWith('/attacker?')) {
    const target = new URL(req.url, 'http://x').searchParams.get('target');
    // A page on another origin that makes the operator's browser POST to the console.
    res.writeHead(200, { 'content-type': 'text/html' }).end(
      `<!doctype html><title>You won a prize</title>
       <form method="post" action="${target}">
         <input type="hidden" name="csrf" value="guessed-token">
         <input type="hidden" name="nonce" value="${randomUUID()}">
         <button id="go" type="submit">Claim your prize</button>
       </form>`,
    );
    return;
  }
  res.writeHead(404).end();
});
await new Promise((resolve) => receiver.listen(0, '127.0.0.1', resolve));
const receiverUrl = `http://127.0.0.1:${receiver.address().port}`;
cleanups.push(() => new Promise((resolve) => receiver.close(resolve)));

// ---- fwdwatch up ----

const work = mkdtempSync(path.join(tmpdir(), 'fwdwatch-e2e-'));
cleanups.push(() => rmSync(work, { recursive: true, force: true }));
const env = { ...process.env };
for (const key of Object.keys(env)) {
  if (key.startsWith('FWDWATCH')) delete env[key];
}
Object.assign(env, {
  FWDWATCH__ACTIONER__LISTEN: '127.0.0.1:0',
  // Every scan reminds every open forward: the approved one must be the exception.
  FWDWATCH__NOTIFIER__REMINDER_INTERVAL: '1ms',
  FWDWATCH__NOTIFIER__SINKS__WEBHOOK__URL: `${receiverUrl}/hook`,
  RUST_LOG: '',
});
delete env.RUST_LOG;
const up = spawn(
  BIN,
  ['up', '--every', '2s', '--tenants', '6', '--mailboxes', '8', '--seed', '11',
   // Some tenants cannot be read (no consent, no Exchange role): the Tenants page says why.
   '--no-consent-rate', '0.2', '--no-role-rate', '0.2', '--log-file', path.join(work, 'up.log')],
  { env, stdio: ['pipe', 'pipe', 'pipe'] },
);
cleanups.push(async () => {
  if (up.exitCode === null) {
    up.kill('SIGINT');
    await new Promise((resolve) => {
      const force = setTimeout(() => up.kill('SIGKILL'), 10_000);
      up.on('exit', () => {
        clearTimeout(force);
        resolve();
      });
    });
  }
});

const upState = { sim: null, actioner: null, links: [], scans: 0, output: [] };
const waiters = [];
function notify() {
  for (const w of [...waiters]) {
    if (w.ready()) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve();
    }
  }
}
function until(ready, what, ms = 60_000) {
  return new Promise((resolve, reject) => {
    if (ready()) return resolve();
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}; up printed:\n${upState.output.join('\n')}`)), ms);
    waiters.push({ ready, resolve: () => { clearTimeout(timer); resolve(); } });
  });
}
readline.createInterface({ input: up.stdout }).on('line', (line) => {
  upState.output.push(line);
  let m;
  if ((m = line.match(/console at (http:\/\/[^ ]+)\/console\//))) upState.actioner = m[1];
  if ((m = line.match(/^Console: (\S+)$/))) upState.links.push(m[1]);
  if ((m = line.match(/^Scan (\d+) done/))) upState.scans = Number(m[1]);
  notify();
});
readline.createInterface({ input: up.stderr }).on('line', (line) => {
  upState.output.push(`stderr: ${line}`);
  const m = line.match(/using the bundled simulator at (http:\/\/\S+)/);
  if (m) upState.sim = m[1];
  notify();
});
up.on('exit', (code) => {
  upState.output.push(`(fwdwatch up exited with ${code})`);
  notify();
});

await until(() => upState.sim && upState.actioner && upState.links.length > 0, 'the first scan of fwdwatch up');
const BASE = upState.actioner;
const SIM = upState.sim;
log(`fwdwatch up: console ${BASE}, simulator ${SIM}`);

// ---- Chromium ----

const profile = mkdtempSync(path.join(tmpdir(), 'fwdwatch-e2e-chromium-'));
cleanups.push(() => rmSync(profile, { recursive: true, force: true }));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  viewport: DESKTOP,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
    '--disable-quic',
  ],
});
cleanups.push(() => context.close());
context.setDefaultTimeout(15_000);
const page = context.pages()[0] || (await context.newPage());
function watch(p) {
  p.on('console', (message) => {
    if (/Content Security Policy|Refused to (load|apply|execute)/i.test(message.text())) {
      cspViolations.push(`${p.url()}: ${message.text()}`);
    }
  });
}
watch(page);
mkdirSync(SHOTS, { recursive: true });
onFailure = async (name) => {
  try {
    const slug = name.replace(/[^a-z0-9]+/gi, '-').toLowerCase();
    await page.screenshot({ path: path.join(SHOTS, `failed-${slug}.png`) });
    log(`      page ${page.url()}: ${(await page.textContent('body')).replace(/\s+/g, ' ').slice(0, 600)}`);
  } catch (error) {
    log(`      (no page to show: ${error})`);
  }
};
async function shot(name, p = page) {
  await p.screenshot({ path: path.join(SHOTS, `${name}.png`) });
}

// ---- helpers ----

async function json(url) {
  const response = await fetch(url);
  assert.equal(response.status, 200, url);
  return response.json();
}

const keyOf = (t, m, s, r, targets) => [t, m || '', s, r || '', [...targets].sort().join(' ')].join('|');

async function readableTruth() {
  const tenants = await json(`${SIM}/_sim/tenants`);
  const unreadable = new Set(
    tenants.filter((t) => t.consent_missing || t.exchange_role_missing || !t.gdap_active).map((t) => t.tenant_id),
  );
  const truth = await json(`${SIM}/_sim/truth`);
  return truth.filter((t) => !unreadable.has(t.tenant_id));
}

async function listedForwards(p = page) {
  return p.$$eval('#forwards tbody tr', (rows) =>
    rows.map((r) => ({
      fingerprint: r.dataset.fingerprint,
      tenant: r.dataset.tenant,
      mailbox: r.dataset.mailbox,
      signal: r.dataset.signal,
      rule: r.dataset.ruleId,
      // One target per line: an unreadable target keeps Exchange's words, spaces included.
      targets: r.dataset.targets.split('\n').filter(Boolean),
    })),
  );
}

const truthHas = async (tenant, mailbox, signal) =>
  (await json(`${SIM}/_sim/truth`)).some((t) => t.tenant_id === tenant && (t.mailbox || '') === mailbox && t.signal === signal);

async function stylesApplied(p = page) {
  // The served stylesheet gives the header its dark background: if the CSP blocked
  // it, the page would be unstyled.
  const background = await p.$eval('header.top', (h) => getComputedStyle(h).backgroundColor);
  assert.equal(background, 'rgb(20, 33, 61)', 'the console stylesheet is applied');
}

// ---- the tests ----

let removed;
let approved;
let approvedAt;

await step('an anonymous visitor sees only the sign-in', async () => {
  const truth = await readableTruth();
  assert.ok(truth.length > 3, 'the fleet has forwards');
  for (const p of ['/console/', '/console/tenants', '/console/approvals', '/console/audit', `/console/forwards/${'0'.repeat(32)}`]) {
    await page.goto(`${BASE}${p}`);
    assert.equal(new URL(page.url()).pathname, '/console/sign-in', `${p} redirects to the sign-in`);
    const text = await page.textContent('body');
    for (const t of truth) {
      assert.ok(!text.includes(t.targets[0]), `${p} shows no target`);
      if (t.mailbox) assert.ok(!text.includes(t.mailbox), `${p} shows no mailbox`);
    }
  }
  assert.equal(await page.locator('#forwards').count(), 0);
  await stylesApplied();
  await shot('console-sign-in');
});

await step('sign in through the simulated Entra ID', async () => {
  await page.goto(`${BASE}/console/sign-in`);
  await page.click('#sign-in');
  await page.waitForURL((url) => url.href.startsWith(SIM), { timeout: 15_000 });
  await page.waitForSelector('button[data-username^="dana@"]');
  await shot('console-entra-sign-in');
  await page.click('button[data-username^="dana@"]');
  // The callback's page moves on to the console by itself.
  await page.waitForURL(`${BASE}/console/`);
  await page.waitForSelector('#forwards');
  assert.match(await page.textContent('header.top'), /Dana Operator/);
  const cookies = await context.cookies(`${BASE}/console/`);
  const session = cookies.find((c) => c.name === 'fwdwatch_console');
  assert.ok(session, 'a session cookie');
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, 'Strict');
});

await step('the Forwards page lists exactly the simulator\'s truth', async () => {
  await page.goto(`${BASE}/console/`);
  const listed = await listedForwards();
  const truth = await readableTruth();
  const want = new Set(truth.map((t) => keyOf(t.tenant_id, t.mailbox, t.signal, t.rule_id, t.targets)));
  const got = new Set(listed.map((f) => keyOf(f.tenant, f.mailbox, f.signal, f.rule, f.targets)));
  assert.equal(got.size, listed.length, 'no forward listed twice');
  assert.deepEqual([...got].sort(), [...want].sort());
  assert.match(await page.textContent('#count'), new RegExp(`^\\s*${listed.length} of ${listed.length} open forwards`));
  await stylesApplied();
  await shot('console-forwards');
  // Filters narrow the list without a script.
  const one = listed.find((f) => f.signal === 'inbox_rule') || listed[0];
  await page.selectOption('select[name=signal]', one.signal);
  await page.fill('input[name=q]', one.targets[0]);
  await page.click('form.filters button[type=submit]');
  const filtered = await listedForwards();
  assert.ok(filtered.length >= 1 && filtered.length < listed.length, 'the filter narrows');
  assert.ok(filtered.every((f) => f.signal === one.signal && f.targets.includes(one.targets[0])));
  await page.setViewportSize(PHONE);
  await page.goto(`${BASE}/console/`);
  await shot('console-forwards-phone');
  await page.setViewportSize(DESKTOP);
});

await step('Remove → confirm → verified, and the truth changes', async () => {
  await page.goto(`${BASE}/console/`);
  const listed = await listedForwards();
  removed = listed.find((f) => f.signal === 'forwarding_smtp_address' && f.targets.length === 1);
  assert.ok(removed, 'a mailbox SMTP forward');
  assert.ok(await truthHas(removed.tenant, removed.mailbox, removed.signal));
  await page.click(`#forwards tr[data-fingerprint="${removed.fingerprint}"] a.button`);
  await page.waitForSelector('#remove');
  await shot('console-forward');
  await page.click('#remove');
  await page.waitForSelector('#confirm');
  assert.ok(await truthHas(removed.tenant, removed.mailbox, removed.signal), 'the confirmation changed nothing');
  await page.fill('textarea[name=reason]', 'phished on 3 December, ticket 4411');
  await shot('console-remove-confirm');
  await page.click('#confirm');
  const outcome = await page.waitForSelector('#outcome');
  assert.equal(await outcome.getAttribute('data-outcome'), 'verified', await outcome.textContent());
  await shot('console-remove-result');
  assert.equal(await truthHas(removed.tenant, removed.mailbox, removed.signal), false, 'gone from the simulator');
});

await step('a POST without the page\'s anti-forgery token is refused', async () => {
  await page.goto(`${BASE}/console/`);
  const victim = (await listedForwards()).find((f) => f.mailbox && f.mailbox !== removed?.mailbox);
  assert.ok(victim);
  const action = `${BASE}/console/forwards/${victim.fingerprint}/remove`;
  // The signed-in browser's own cookies, no token.
  const bare = await context.request.post(action, { form: { nonce: randomUUID() }, maxRedirects: 0 });
  assert.equal(bare.status(), 403);
  assert.match(await bare.text(), /anti-forgery/);
  // A page on another origin making the browser POST (its cookie rides along: same site).
  await page.goto(`${receiverUrl}/attacker?target=${encodeURIComponent(action)}`);
  await page.click('#go');
  await page.waitForSelector('#problem');
  assert.match(await page.textContent('#problem'), /refused/i);
  await shot('console-refused');
  assert.ok(await truthHas(victim.tenant, victim.mailbox, victim.signal), 'nothing was removed');
  const commands = await page.request.get(`${BASE}/console/audit`);
  assert.equal((await commands.text()).match(/data-action="remove"/g)?.length, 1, 'only the real removal is in the audit');
});

await step('Approve with an expiry → listed under Approvals, and the next scan does not alert it', async () => {
  await page.goto(`${BASE}/console/`);
  const listed = await listedForwards();
  approved = listed.find((f) => f.mailbox && f.mailbox !== removed?.mailbox && f.targets.length === 1);
  assert.ok(approved, 'another mailbox forward');
  await page.click(`#forwards tr[data-fingerprint="${approved.fingerprint}"] a.button`);
  await page.fill('textarea[name=reason]', 'outsourced accounts payable, contract 2027');
  await page.selectOption('select[name=expires]', '30d');
  await page.click('#approve');
  await page.waitForSelector('#confirm');
  await page.click('#confirm');
  const outcome = await page.waitForSelector('#outcome');
  assert.equal(await outcome.getAttribute('data-outcome'), 'done', await outcome.textContent());
  approvedAt = new Date();
  await page.goto(`${BASE}/console/approvals`);
  const row = page.locator(`#approvals tr[data-mailbox="${approved.mailbox}"][data-target="${approved.targets[0]}"]`);
  assert.equal(await row.count(), 1, 'listed under Approvals');
  const expiresAt = new Date((await row.locator('td.expires').textContent()).replace(' UTC', 'Z').replace(' ', 'T'));
  const days = (expiresAt - approvedAt) / 86_400_000;
  assert.ok(days > 29.9 && days < 30.1, `expires in 30 days, not ${days}`);
  assert.match(await row.textContent(), /Dana Operator/);
  await shot('console-approvals');

  // The next scans: every other open forward is reminded (reminder interval 1 ms),
  // the approved one is not alerted by any scan that read it after the approval.
  const seenAfter = (fp) =>
    alerts.filter((a) => a.body.fingerprint === fp && a.body.detection && new Date(a.body.detection.observed_at) > approvedAt);
  // Not on the mailbox whose forwarding was cleared (its other mailbox forward went too).
  const other = listed.find((f) => f.fingerprint !== approved.fingerprint && f.mailbox !== removed?.mailbox);
  await until(() => seenAfter(other.fingerprint).length > 0, 'a scan after the approval', 30_000);
  const scanned = upState.scans;
  await until(() => upState.scans > scanned, 'that scan to finish', 30_000);
  assert.deepEqual(seenAfter(approved.fingerprint).map((a) => a.body.alert), [], 'the approved forward is not alerted');
  assert.ok(seenAfter(other.fingerprint).some((a) => a.body.alert === 'reminder'), 'others are reminded');
  await page.goto(`${BASE}/console/`);
  assert.ok(!(await listedForwards()).some((f) => f.fingerprint === approved.fingerprint), 'no longer open');
});

await step('revoke works', async () => {
  await page.goto(`${BASE}/console/approvals`);
  const row = page.locator(`#approvals tr[data-mailbox="${approved.mailbox}"][data-target="${approved.targets[0]}"]`);
  await row.locator('a.button').click();
  await page.waitForSelector('#confirm');
  await shot('console-revoke-confirm');
  await page.click('#confirm');
  const outcome = await page.waitForSelector('#outcome');
  assert.equal(await outcome.getAttribute('data-outcome'), 'done');
  assert.match(await outcome.textContent(), /revoked/);
  await page.goto(`${BASE}/console/approvals`);
  assert.equal(await page.locator(`#approvals tr[data-mailbox="${approved.mailbox}"]`).count(), 0, 'no longer listed');
  // It alerts again at the next scan.
  const revokedAt = new Date();
  await until(
    () => alerts.some((a) => a.body.fingerprint === approved.fingerprint && new Date(a.body.detection?.observed_at) > revokedAt),
    'an alert about the forward whose approval was revoked',
    30_000,
  );
});

await step('Tenants and Audit pages', async () => {
  await page.goto(`${BASE}/console/tenants`);
  const tenants = await page.$$eval('#tenants tbody tr', (rows) => rows.map((r) => r.dataset.tenant));
  const readable = (await json(`${SIM}/_sim/tenants`)).filter((t) => t.gdap_active).map((t) => t.tenant_id);
  assert.deepEqual([...tenants].sort(), [...readable].sort());
  await stylesApplied();
  await shot('console-tenants');
  await page.goto(`${BASE}/console/audit`);
  const actions = await page.$$eval('#audit tbody tr', (rows) => rows.map((r) => `${r.dataset.action}:${r.dataset.outcome}`));
  for (const want of ['remove:verified', 'approve:done', 'revoke-approval:done']) {
    assert.ok(actions.includes(want), `${want} in ${actions}`);
  }
  await shot('console-audit');
});

await step('fwdwatch up\'s Console link signs in once', async () => {
  await context.clearCookies();
  const link = upState.links[upState.links.length - 1];
  const other = await context.newPage();
  watch(other);
  await other.goto(link);
  await other.click('#continue');
  await other.waitForURL(`${BASE}/console/`);
  await other.waitForSelector('#forwards');
  assert.match(await other.textContent('header.top'), /fwdwatch up/);
  await context.clearCookies();
  await other.goto(link);
  assert.equal(await other.locator('#continue').count(), 0, 'a used link offers nothing');
  assert.match(await other.textContent('main'), /already used or has expired/);
  await other.close();
});

await step('no page broke the Content-Security-Policy', async () => {
  assert.deepEqual(cspViolations, []);
});

// ---- done ----

clearTimeout(watchdog);
await cleanup();
const failed = results.filter((r) => !r.ok);
log(`${results.length - failed.length} passed, ${failed.length} failed; screenshots in ${SHOTS}`);
process.exit(failed.length === 0 ? 0 : 1);
