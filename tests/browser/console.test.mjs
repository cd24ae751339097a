// Browser test of the vpcep web console: the user guide's cross-account scenario (chapters
// 2.3, 3 and 4) clicked through in Debian's headless Chromium against a real server, with
// the service's tags and approval switch, connection notes and the endpoint's source
// whitelist checked against what the API then returns.
//
//   cargo build -p vpcep && cd tests/browser && npm install
//   VPCEP_BIN=/path/to/target/debug/vpcep node --test
//
// Env: VPCEP_BIN (default ../../target/debug/vpcep), CHROMIUM (default /usr/bin/chromium).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const BIN = resolve(process.env.VPCEP_BIN || join(here, '../../target/debug/vpcep'));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = join(here, 'screenshots');
const STEP_TIMEOUT = 60_000;
const WAIT = 15_000;

let dataDir;
let server;
let base;
let browser;
let alice; // account 1: provider
let bob; // account 2: consumer
const pageErrors = [];
const state = {}; // what the steps learn: service name/id, endpoint id

// ---- server and API setup ---------------------------------------------------------------

function stopServer() {
  if (server && server.exitCode === null && server.signalCode === null) {
    server.kill('SIGTERM');
  }
}
process.on('exit', stopServer);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    stopServer();
    process.exit(130);
  });
}

async function startServer() {
  dataDir = mkdtempSync(join(tmpdir(), 'vpcep-browser-'));
  server = spawn(BIN, ['serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--metrics-listen', '127.0.0.1:0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, VPCEP_LOG: process.env.VPCEP_LOG || 'warn' },
  });
  let stderr = '';
  server.stderr.on('data', (d) => {
    stderr += d;
    if (stderr.length > 20_000) stderr = stderr.slice(-10_000);
  });
  const lines = createInterface({ input: server.stdout });
  const first = await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`vpcep did not start in 30 s; stderr:\n${stderr}`)), 30_000);
    server.once('exit', (code) => {
      clearTimeout(timer);
      fail(new Error(`vpcep exited with ${code} before listening; stderr:\n${stderr}`));
    });
    lines.once('line', (line) => {
      clearTimeout(timer);
      ok(line);
    });
  });
  const m = first.match(/^vpcep listening on (http:\/\/127\.0\.0\.1:\d+)/);
  assert.ok(m, `unexpected first line: ${first}`);
  lines.on('line', () => {}); // keep draining stdout
  return m[1];
}

function admin(args) {
  return JSON.parse(execFileSync(BIN, ['admin', ...args, '--data-dir', dataDir], { encoding: 'utf8' }));
}

function createAccount(name) {
  const acct = admin(['account', 'create', name]);
  for (const k of ['domain_id', 'project_id', 'password']) assert.ok(acct[k], `account JSON lacks ${k}`);
  return acct;
}

async function call(token, method, path, body) {
  const resp = await fetch(base + path, {
    method,
    headers: { 'X-Auth-Token': token, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  assert.ok(resp.ok, `${method} ${path} → ${resp.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** The API's answer (status and parsed body) without asserting success. */
async function raw(token, method, path, body) {
  const resp = await fetch(base + path, {
    method,
    headers: { 'X-Auth-Token': token, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  return { status: resp.status, body: text ? JSON.parse(text) : null };
}

async function tokenFor(acct) {
  const resp = await fetch(`${base}/v3/auth/tokens`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({
      auth: {
        identity: { methods: ['password'], password: { user: { name: acct.name, password: acct.password } } },
        scope: { project: { name: 'local-1' } },
      },
    }),
  });
  assert.equal(resp.status, 201, await resp.text());
  return resp.headers.get('x-subject-token');
}

/** A VPC and a subnet (and, when asked, a host to back a service) for one account. */
async function network(acct, withHost) {
  const token = await tokenFor(acct);
  const p = `/v1/${acct.project_id}`;
  const vpc = (await call(token, 'POST', `${p}/vpcs`, { vpc: { name: `vpc-${acct.name}`, cidr: '192.168.0.0/16' } })).vpc;
  const subnet = (await call(token, 'POST', `${p}/subnets`, { subnet: { name: `subnet-${acct.name}`, cidr: '192.168.0.0/24', vpc_id: vpc.id } })).subnet;
  const out = { token, vpc, subnet };
  if (withHost) {
    out.host = (await call(token, 'POST', `${p}/hosts`, { host: { vpc_id: vpc.id, subnet_id: subnet.id, name: 'web' } })).host;
    assert.ok(out.host.port_id, 'host has a port_id');
  }
  return out;
}

// ---- browser helpers --------------------------------------------------------------------

const tid = (id) => `[data-testid="${id}"]`;

async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

async function newPage() {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, locale: 'zh-CN' });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.on('pageerror', (e) => pageErrors.push(`${e.message}\n${e.stack || ''}`));
  page.on('dialog', (d) => d.dismiss()); // the console never uses alert/confirm
  return page;
}

async function login(page, acct) {
  // A browser asking for / gets the console (303), the SDK keeps getting JSON.
  await page.goto(`${base}/`);
  assert.match(page.url(), /\/console\/$/);
  await page.locator(tid('login-name')).fill(acct.name);
  await page.locator(tid('login-password')).fill(acct.password);
  await page.locator(tid('login-submit')).click();
  await page.locator(tid('account-id')).filter({ hasText: acct.domain_id }).waitFor();
}

async function text(locator) {
  return (await locator.textContent()).trim();
}

/** Waits until `locator` shows `status` (by data-status), the console polling or refreshing. */
async function waitStatus(locator, status, refresh) {
  const deadline = Date.now() + WAIT;
  for (;;) {
    const badge = locator.locator(`${tid('status')}[data-status="${status}"]`);
    if (await badge.count()) return badge.first();
    if (Date.now() > deadline) {
      const now = await locator.locator(tid('status')).allTextContents();
      assert.fail(`status ${status} not shown; showing ${JSON.stringify(now)}`);
    }
    if (refresh) await refresh();
    await new Promise((r) => setTimeout(r, 300));
  }
}

/** Every visible form control has an accessible name (a label, aria-label or -labelledby). */
async function assertLabelled(page) {
  const unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll('input, select, textarea')]
      .filter((el) => el.offsetParent !== null || el.getClientRects().length)
      .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby'))
      .map((el) => el.outerHTML.slice(0, 120)),
  );
  assert.deepEqual(unlabelled, [], 'form controls without a label');
}

async function confirmYes(page, expectText) {
  const dlg = page.locator(tid('confirm'));
  await dlg.waitFor();
  if (expectText) assert.match(await text(dlg.locator(tid('confirm-text'))), expectText);
  await dlg.locator(tid('confirm-ok')).click();
  await dlg.waitFor({ state: 'detached' });
}

// ---- the scenario -----------------------------------------------------------------------

let failed = false;
let page1; // alice, the provider
let page2; // bob, the consumer
/** Steps run in order; once one fails the rest are skipped rather than failing noisily. */
function step(name, fn) {
  it(name, { timeout: STEP_TIMEOUT }, async (t) => {
    if (failed) {
      t.skip('an earlier step failed');
      return;
    }
    try {
      await fn();
    } catch (e) {
      failed = true;
      for (const [who, page] of [['alice', page1], ['bob', page2]]) {
        if (page && !page.isClosed()) await shot(page, `failed-${who}`).catch(() => {});
      }
      throw e;
    }
  });
}

describe('vpcep web console', () => {
  before(async () => {
    mkdirSync(SHOTS, { recursive: true });
    base = await startServer();
    alice = createAccount('alice');
    bob = createAccount('bob');
    // Two cloud services registered by the operator (user guide 2.4): DNS and OBS.
    admin(['public-service', 'create', '--name', 'dns', '--type', 'interface', '--backend', '100.125.1.250', '--port', '53:53/UDP']);
    admin(['public-service', 'create', '--name', 'obs', '--type', 'gateway', '--backend', '100.125.0.1', '--cidr', '100.125.0.0/16']);
    alice.net = await network(alice, true);
    bob.net = await network(bob, false);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
        '--disable-quic',
      ],
    });
  });

  after(async () => {
    try {
      if (browser) await browser.close();
    } finally {
      stopServer();
      if (dataDir) rmSync(dataDir, { recursive: true, force: true });
    }
  });

  step('GET / answers the SDK with JSON and a browser with a redirect to the console', async () => {
    const json = await fetch(`${base}/`, { headers: { Accept: '*/*' } });
    assert.equal(json.status, 200);
    assert.ok(Array.isArray((await json.json()).versions));
    const html = await fetch(`${base}/`, { headers: { Accept: 'text/html,application/xhtml+xml' }, redirect: 'manual' });
    assert.equal(html.status, 303);
    assert.equal(html.headers.get('location'), '/console/');
    const js = await fetch(`${base}/console/app.js`);
    assert.equal(js.status, 200);
    assert.match(js.headers.get('content-type'), /^text\/javascript/);
    assert.equal(js.headers.get('cache-control'), 'no-cache');
  });

  step('login page: wrong password shows the server error; account 1 logs in', async () => {
    page1 = await newPage();
    await page1.goto(`${base}/console/`);
    await page1.locator(tid('login-form')).waitFor();
    await shot(page1, '01-login');
    await page1.locator(tid('login-name')).fill('alice');
    await page1.locator(tid('login-password')).fill('not-the-password');
    await page1.locator(tid('login-submit')).click();
    const err = page1.locator(tid('login-error'));
    await err.waitFor({ state: 'visible' });
    assert.match(await text(err), /APIGW\.0301/);
    await login(page1, alice);
    assert.equal(await text(page1.locator(tid('page-title'))), '终端节点');
  });

  step('account 1 creates a service with approval and two port mappings', async () => {
    const page = page1;
    await page.locator(tid('nav-services')).click();
    await page.locator(tid('svc-create')).click();
    const form = page.locator(tid('svc-create-form'));
    await form.waitFor();

    // Live validation of the name.
    await page.locator(tid('svc-name')).fill('bad name!');
    await page.locator(tid('svc-name-error')).waitFor({ state: 'visible' });
    await page.locator(tid('svc-name')).fill('web');
    await page.locator(tid('svc-name-error')).waitFor({ state: 'hidden' });

    await page.locator(tid('svc-vpc')).selectOption(alice.net.vpc.id);
    assert.equal(await page.locator(tid('svc-approval')).isChecked(), true, 'approval is on by default');

    // Port rows, with live range checks.
    const rows = page.locator(tid('port-row'));
    await rows.nth(0).locator(tid('port-server')).fill('70000');
    await rows.nth(0).locator(tid('port-server-error')).waitFor({ state: 'visible' });
    await rows.nth(0).locator(tid('port-server')).fill('80');
    await rows.nth(0).locator(tid('port-server-error')).waitFor({ state: 'hidden' });
    await rows.nth(0).locator(tid('port-client')).fill('8080');
    await page.locator(tid('port-add')).click();
    assert.equal(await rows.count(), 2);
    await rows.nth(1).locator(tid('port-protocol')).selectOption('UDP');
    await rows.nth(1).locator(tid('port-server')).fill('53');
    await rows.nth(1).locator(tid('port-client')).fill('5353');
    // A third row added and removed again.
    await page.locator(tid('port-add')).click();
    assert.equal(await rows.count(), 3);
    await rows.nth(2).locator(tid('port-remove')).click();
    assert.equal(await rows.count(), 2);

    // Backend: the host "web", listed by name; the security-group hint is shown.
    assert.match(await text(page.locator(tid('sg-hint'))), /198\.19\.128\.0\/20/);
    const resource = page.locator(tid('svc-resource'));
    const label = await resource.locator(`option[value="${alice.net.host.port_id}"]`).textContent();
    assert.match(label, /^web \(192\.168\.0\.\d+\)$/);
    await resource.selectOption(alice.net.host.port_id);
    await assertLabelled(page);
    await shot(page, '02-service-create');
    await page.locator(tid('svc-submit')).click();

    await page.waitForURL(/#\/services$/);
    await page.locator(tid('success-banner')).waitFor();
    const row = page.locator(tid('svc-table-row')).filter({ hasText: '.web.' });
    await waitStatus(row, 'available');
    assert.equal(await text(row.locator(`${tid('status')}`)), '可连接');
    state.serviceName = await text(row.locator(tid('svc-link')));
    state.serviceId = await row.getAttribute('data-id');
    assert.match(state.serviceName, /^local-1\.web\.[0-9a-f-]{36}$/);
    await shot(page, '03-service-list');
  });

  step('service details: basic info and the port mappings tab', async () => {
    const page = page1;
    await page.locator(tid('svc-link')).filter({ hasText: state.serviceName }).click();
    await page.locator(tid('panel-basic')).waitFor();
    assert.equal(await text(page.locator(tid('svc-full-name'))), state.serviceName);
    assert.equal(await text(page.locator(tid('svc-short-name'))), 'web');
    assert.match(await text(page.locator(tid('svc-backend'))), /^web \(/);
    assert.equal(await text(page.locator(tid('svc-approval-value'))), '开启');
    await shot(page, '04-service-detail');
    await page.locator(tid('tab-ports')).click();
    const ports = page.locator(`${tid('panel-ports')} ${tid('ports-table-row')}`);
    await ports.first().waitFor();
    assert.deepEqual(
      (await ports.allTextContents()).sort(),
      ['TCP808080', 'UDP535353'].sort(),
    );
  });

  step('service tags: the shared tag component adds, edits and deletes; the API returns them', async () => {
    const page = page1;
    const svcPath = `/v1/${alice.project_id}/vpc-endpoint-services/${state.serviceId}`;
    await page.locator(tid('tab-tags')).click();
    await page.locator(`${tid('panel-tags')} ${tid('svc-tags')}`).waitFor();
    const dlg = page.locator(tid('tag-dialog'));

    // A key the server refuses: its error stays in the dialog.
    await page.locator(tid('tag-add')).click();
    await dlg.locator(tid('tag-key-input')).fill('a<b');
    await dlg.locator(tid('tag-value-input')).fill('x');
    await dlg.locator(tid('tag-dialog-ok')).click();
    const err = dlg.locator(tid('tag-dialog-error'));
    await err.waitFor({ state: 'visible' });
    assert.match(await text(err), /EndPoint\.3068/);
    await dlg.locator(tid('tag-dialog-cancel')).click();
    await dlg.waitFor({ state: 'detached' });

    for (const [k, v] of [['owner', 'alice'], ['tier', 'gold']]) {
      await page.locator(tid('tag-add')).click();
      await dlg.locator(tid('tag-key-input')).fill(k);
      await dlg.locator(tid('tag-value-input')).fill(v);
      await dlg.locator(tid('tag-dialog-ok')).click();
      await dlg.waitFor({ state: 'detached' });
      await page.locator(`${tid('tag-table-row')}[data-id="${k}"]`).waitFor();
    }
    const tier = page.locator(`${tid('tag-table-row')}[data-id="tier"]`);
    await tier.locator(tid('tag-edit')).click();
    assert.equal(await dlg.locator(tid('tag-key-input')).inputValue(), 'tier');
    await dlg.locator(tid('tag-value-input')).fill('silver');
    await dlg.locator(tid('tag-dialog-ok')).click();
    await dlg.waitFor({ state: 'detached' });
    await tier.locator(tid('tag-value')).filter({ hasText: 'silver' }).waitFor();
    await assertLabelled(page);
    await shot(page, '16-service-tags');
    let svc = await call(alice.net.token, 'GET', svcPath);
    assert.deepEqual(svc.tags.map((x) => [x.key, x.value]).sort(), [['owner', 'alice'], ['tier', 'silver']]);

    await page.locator(`${tid('tag-table-row')}[data-id="owner"]`).locator(tid('tag-delete')).click();
    await confirmYes(page, /owner/);
    await page.locator(`${tid('tag-table-row')}[data-id="owner"]`).waitFor({ state: 'detached' });
    svc = await call(alice.net.token, 'GET', svcPath);
    assert.deepEqual(svc.tags, [{ key: 'tier', value: 'silver' }]);
  });

  step('whitelist: a malformed entry is refused clearly, account 2 is added', async () => {
    const page = page1;
    await page.locator(tid('tab-permissions')).click();
    await page.locator(tid('panel-permissions')).waitFor();
    await page.locator(tid('perm-add')).click();
    const dlg = page.locator(tid('perm-dialog'));
    await dlg.waitFor();
    const input = dlg.locator(tid('perm-input'));
    const format = dlg.locator(tid('perm-format'));

    await input.fill('iam:domain::NOT-AN-ID');
    await format.waitFor({ state: 'visible' });
    assert.equal(await format.getAttribute('data-valid'), 'false');
    assert.match(await text(format), /格式不正确/);
    await dlg.locator(tid('perm-dialog-ok')).click();
    const serverErr = dlg.locator(tid('perm-dialog-error'));
    await serverErr.waitFor({ state: 'visible' });
    assert.match(await text(serverErr), /EndPoint\.3002/);
    await assertLabelled(page);
    await shot(page, '05-whitelist-malformed');

    await input.fill(`iam:domain::${bob.domain_id}`);
    assert.equal(await format.getAttribute('data-valid'), 'true');
    await dlg.locator(tid('perm-desc')).fill('bob');
    await dlg.locator(tid('perm-dialog-ok')).click();
    await dlg.waitFor({ state: 'detached' });
    const row = page.locator(tid('perm-table-row')).filter({ hasText: bob.domain_id });
    await row.waitFor();
    assert.equal(await text(row.locator(tid('perm-value'))), `iam:domain::${bob.domain_id}`);

    // Two more entries, removed together with the checkboxes.
    for (const entry of ['*', `iam:domain::${'ab'.repeat(16)}`]) {
      await page.locator(tid('perm-add')).click();
      await dlg.locator(tid('perm-input')).fill(entry);
      await dlg.locator(tid('perm-dialog-ok')).click();
      await dlg.waitFor({ state: 'detached' });
    }
    const rows = page.locator(tid('perm-table-row'));
    await page.waitForFunction((sel) => document.querySelectorAll(sel).length === 3, tid('perm-table-row'));
    for (const v of ['*', `iam:domain::${'ab'.repeat(16)}`]) {
      await rows.filter({ has: page.locator(`${tid('perm-value')}:text-is("${v}")`) }).locator(tid('perm-select')).check();
    }
    await page.locator(tid('perm-delete-selected')).click();
    await confirmYes(page, /2/);
    await page.waitForFunction((sel) => document.querySelectorAll(sel).length === 1, tid('perm-table-row'));
    assert.match(await text(rows.first()), new RegExp(bob.domain_id));
    await shot(page, '06-whitelist');
  });

  step('quotas page and the language switch', async () => {
    const page = page1;
    await page.locator(tid('nav-quotas')).click();
    const svcRow = page.locator(`${tid('quota-table-row')}[data-id="endpoint_service"]`);
    await svcRow.waitFor();
    assert.equal(await text(svcRow.locator(tid('quota-used'))), '1');
    assert.equal(await text(svcRow.locator(tid('quota-total'))), '20');
    await shot(page, '07-quotas');
    await page.locator(tid('lang-toggle')).click();
    await page.locator(tid('page-title')).filter({ hasText: 'Quotas' }).waitFor();
    assert.equal(await text(page.locator(tid('nav-endpoints'))), 'Endpoints');
    await shot(page, '07-quotas-en');
    await page.locator(tid('lang-toggle')).click();
    await page.locator(tid('page-title')).filter({ hasText: '配额' }).waitFor();
  });

  step('approval switch: off and on again in place, as the API then says; a refusal is shown and undone', async () => {
    const page = page1;
    const svcPath = `/v1/${alice.project_id}/vpc-endpoint-services/${state.serviceId}`;
    await page.goto(`${base}/console/#/services/${state.serviceId}/basic`);
    const sw = page.locator(tid('svc-approval-switch'));
    const value = page.locator(tid('svc-approval-value'));
    await sw.waitFor();
    assert.equal(await sw.isChecked(), true);

    await sw.click();
    await page.locator(tid('success-banner')).filter({ hasText: '自动接受' }).waitFor();
    assert.equal(await text(value), '关闭');
    assert.equal(await sw.isChecked(), false);
    assert.equal((await call(alice.net.token, 'GET', svcPath)).approval_enabled, false);
    await shot(page, '17-service-approval-off');
    // The list shows it too, without a reload.
    await page.locator(tid('nav-services')).click();
    const row = page.locator(`${tid('svc-table-row')}[data-id="${state.serviceId}"]`);
    assert.equal(await text(row.locator('[data-col="approval"]')), '关闭');
    await row.locator(tid('svc-link')).click();
    await sw.waitFor();
    assert.equal(await sw.isChecked(), false);
    await sw.click();
    // The switch moves at once; the notice comes when the server has saved it.
    await page.locator(tid('success-banner')).filter({ hasText: '需要接受' }).waitFor();
    assert.equal(await text(value), '开启');
    assert.equal(await sw.isEnabled(), true);
    assert.equal((await call(alice.net.token, 'GET', svcPath)).approval_enabled, true);

    // A second service is deleted behind the page's back: the switch is refused by the
    // server, its error shown, and the switch shows the server's value again.
    const p = `/v1/${alice.project_id}`;
    const other = await call(alice.net.token, 'POST', `${p}/vpc-endpoint-services`, {
      vpc_id: alice.net.vpc.id,
      port_id: alice.net.host.port_id,
      server_type: 'VM',
      service_name: 'spare',
      ports: [{ client_port: 9090, server_port: 90, protocol: 'TCP' }],
    });
    await page.goto(`${base}/console/#/services/${other.id}/basic`);
    await page.locator(`${tid('svc-status')} ${tid('status')}[data-status="available"]`).waitFor();
    assert.equal(await sw.isChecked(), true);
    const gone = await raw(alice.net.token, 'DELETE', `${p}/vpc-endpoint-services/${other.id}`);
    assert.equal(gone.status, 204);
    await sw.click();
    const banner = page.locator(tid('error-banner'));
    await banner.waitFor({ state: 'visible' });
    assert.match(await text(banner), /EndPoint\.(3045|0005)/);
    await page.waitForFunction((sel) => document.querySelector(sel)?.checked === true, tid('svc-approval-switch'));
    assert.equal(await text(value), '开启');
    await shot(page, '18-service-approval-refused');
    // Wait until the spare service is really gone, so the quotas stay as the steps expect.
    const deadline = Date.now() + WAIT;
    while ((await raw(alice.net.token, 'GET', `${p}/vpc-endpoint-services/${other.id}`)).status !== 404) {
      assert.ok(Date.now() < deadline, 'the spare service was not removed');
      await new Promise((r) => setTimeout(r, 200));
    }
  });

  step('account 2 creates an endpoint by name: verify, confirm, submit', async () => {
    page2 = await newPage();
    const page = page2;
    await login(page, bob);
    await page.locator(tid('ep-create')).click();
    await page.locator(tid('ep-create-form')).waitFor();

    // Cloud services: a gateway one hides the private domain name and the subnet.
    assert.equal(await page.locator(tid('cat-cloud')).isChecked(), true);
    const publics = page.locator(tid('ep-public'));
    await publics.first().waitFor();
    assert.equal(await publics.count(), 2);
    await page.locator('label', { hasText: 'com.vpcep.local-1.obs' }).locator(tid('ep-public')).check();
    await page.locator(tid('ep-subnet')).waitFor({ state: 'detached' });
    assert.equal(await page.locator(tid('ep-dns')).count(), 0);
    await page.locator('label', { hasText: 'com.vpcep.local-1.dns' }).locator(tid('ep-public')).check();
    await page.locator(tid('ep-subnet')).waitFor();
    assert.equal(await page.locator(tid('ep-dns')).count(), 1);
    await shot(page, '08-endpoint-create-cloud');

    await page.locator(tid('cat-name')).check();

    const name = page.locator(tid('ep-service-name'));
    const result = page.locator(tid('verify-result'));
    await name.fill('local-1.nothing.here');
    await page.locator(tid('ep-verify')).click();
    await result.locator('text=未找到服务').waitFor();
    assert.equal(await result.getAttribute('data-found'), 'false');

    await name.fill(state.serviceName);
    await page.locator(tid('ep-verify')).click();
    await result.locator('text=已找到服务').waitFor();
    assert.equal(await result.getAttribute('data-found'), 'true');

    assert.equal(await page.locator(tid('ep-dns')).isChecked(), true);
    await page.locator(tid('ep-vpc')).selectOption(bob.net.vpc.id);
    await page.locator(tid('ep-subnet')).selectOption(bob.net.subnet.id);
    await assertLabelled(page);
    await shot(page, '08-endpoint-create');
    await page.locator(tid('ep-next')).click();

    const confirm = page.locator(tid('ep-confirm'));
    await confirm.waitFor();
    assert.equal(await text(confirm.locator(tid('confirm-service'))), state.serviceName);
    assert.match(await text(confirm.locator(tid('confirm-subnet'))), /192\.168\.0\.0\/24/);
    await shot(page, '09-endpoint-confirm');
    // Back and forth keeps the choices.
    await page.locator(tid('ep-prev')).click();
    assert.equal(await page.locator(tid('ep-service-name')).inputValue(), state.serviceName);
    await page.locator(tid('ep-next')).click();
    await page.locator(tid('ep-submit')).click();

    await page.waitForURL(/#\/endpoints$/);
    const row = page.locator(tid('ep-table-row')).filter({ hasText: state.serviceName });
    await waitStatus(row, 'pendingAcceptance');
    assert.equal(await text(row.locator(tid('status'))), '待接受');
    state.endpointId = await row.getAttribute('data-id');
    assert.ok(state.endpointId);
    await shot(page, '10-endpoint-list-pending');
  });

  step('account 1 accepts the connection', async () => {
    const page = page1;
    await page.goto(`${base}/console/#/services/${state.serviceId}/connections`);
    const row = page.locator(`${tid('conn-table-row')}[data-id="${state.endpointId}"]`);
    await waitStatus(row, 'pendingAcceptance', () => page.locator(tid('conn-refresh')).click());
    assert.equal(await text(row.locator(tid('status'))), '待接受');
    await shot(page, '11-connections-pending');
    await row.locator(tid('conn-accept')).click();
    await waitStatus(row, 'accepted');
    assert.equal(await text(row.locator(tid('status'))), '已接受');
    await shot(page, '12-connections-accepted');
  });

  step('connection note: a refused note shows the server error; a saved note is what the API returns', async () => {
    const page = page1;
    const row = page.locator(`${tid('conn-table-row')}[data-id="${state.endpointId}"]`);
    assert.equal(await text(row.locator(tid('conn-desc'))), '-');
    const dlg = page.locator(tid('conn-desc-dialog'));
    await row.locator(tid('conn-desc-edit')).click();
    await dlg.waitFor();
    await dlg.locator(tid('conn-desc-input')).fill('<script>');
    await dlg.locator(tid('conn-desc-dialog-ok')).click();
    const err = dlg.locator(tid('conn-desc-dialog-error'));
    await err.waitFor({ state: 'visible' });
    assert.match(await text(err), /EndPoint\.0002.*</);
    await dlg.locator(tid('conn-desc-input')).fill('customer bob, ticket 42');
    await assertLabelled(page);
    await dlg.locator(tid('conn-desc-dialog-ok')).click();
    await dlg.waitFor({ state: 'detached' });
    await row.locator(tid('conn-desc')).filter({ hasText: 'customer bob, ticket 42' }).waitFor();
    const conns = await call(alice.net.token, 'GET', `/v1/${alice.project_id}/vpc-endpoint-services/${state.serviceId}/connections?id=${state.endpointId}`);
    assert.equal(conns.connections[0].description, 'customer bob, ticket 42');
    await shot(page, '19-connection-note');
    // Editing again starts from the saved note.
    await row.locator(tid('conn-desc-edit')).click();
    assert.equal(await dlg.locator(tid('conn-desc-input')).inputValue(), 'customer bob, ticket 42');
    await dlg.locator(tid('conn-desc-dialog-cancel')).click();
    await dlg.waitFor({ state: 'detached' });
  });

  step('account 2 sees it accepted, with node IP and private domain name; tags it', async () => {
    const page = page2;
    const row = page.locator(`${tid('ep-table-row')}[data-id="${state.endpointId}"]`);
    await waitStatus(row, 'accepted', () => page.locator(tid('ep-refresh')).click());
    assert.equal(await text(row.locator(tid('status'))), '已接受');
    assert.match(await text(row.locator('[data-col="ip"]')), /^192\.168\.0\.\d+$/);
    assert.match(await text(row.locator('[data-col="dns"]')), /\.vpcep\./);
    await shot(page, '13-endpoint-list-accepted');

    await row.locator(tid('ep-link')).click();
    const detail = page.locator(tid('ep-detail'));
    await detail.locator(tid('ep-id')).filter({ hasText: state.endpointId }).waitFor();
    assert.match(await text(detail.locator(tid('ep-ip'))), /^192\.168\.0\.\d+$/);
    assert.match(await text(detail.locator(tid('ep-domain'))), new RegExp(`^${state.endpointId}\\.web\\.vpcep\\.`));

    const dlg = page.locator(tid('tag-dialog'));
    const tags = page.locator(tid('tag-table-row'));
    for (const [k, v] of [['env', 'prod'], ['team', 'net']]) {
      await page.locator(tid('tag-add')).click();
      await dlg.locator(tid('tag-key-input')).fill(k);
      await dlg.locator(tid('tag-value-input')).fill(v);
      await dlg.locator(tid('tag-dialog-ok')).click();
      await dlg.waitFor({ state: 'detached' });
      await page.locator(`${tid('tag-table-row')}[data-id="${k}"]`).waitFor();
    }
    // Edit a value.
    const env = page.locator(`${tid('tag-table-row')}[data-id="env"]`);
    await env.locator(tid('tag-edit')).click();
    assert.equal(await dlg.locator(tid('tag-key-input')).inputValue(), 'env');
    await dlg.locator(tid('tag-value-input')).fill('staging');
    await dlg.locator(tid('tag-dialog-ok')).click();
    await dlg.waitFor({ state: 'detached' });
    await env.locator(tid('tag-value')).filter({ hasText: 'staging' }).waitFor();
    // Delete one.
    await page.locator(`${tid('tag-table-row')}[data-id="team"]`).locator(tid('tag-delete')).click();
    await confirmYes(page, /team/);
    await page.locator(`${tid('tag-table-row')}[data-id="team"]`).waitFor({ state: 'detached' });
    assert.equal(await tags.count(), 1);
    await shot(page, '14-endpoint-detail');
  });

  step('account 2 edits the endpoint source whitelist; the server refuses a bad entry; the API returns the list', async () => {
    const page = page2;
    const epPath = `/v1/${bob.project_id}/vpc-endpoints/${state.endpointId}`;
    const card = page.locator(tid('ep-whitelist'));
    assert.equal(await text(card.locator(tid('wl-enabled'))), '关闭');
    const dlg = page.locator(tid('wl-dialog'));
    await card.locator(tid('wl-edit')).click();
    await dlg.waitFor();
    await dlg.locator(tid('wl-switch')).check();
    const rows = dlg.locator(tid('wl-row'));
    assert.equal(await rows.count(), 1);
    await rows.nth(0).locator(tid('wl-entry-input')).fill('10.0.0.300');
    assert.match(await text(rows.nth(0).locator(tid('wl-entry-error'))), /IPv4/);
    await dlg.locator(tid('wl-dialog-ok')).click();
    const err = dlg.locator(tid('wl-dialog-error'));
    await err.waitFor({ state: 'visible' });
    assert.match(await text(err), /EndPoint\.2044.*10\.0\.0\.300/);
    await rows.nth(0).locator(tid('wl-entry-input')).fill('192.168.0.0/24');
    assert.equal(await text(rows.nth(0).locator(tid('wl-entry-error'))), '');
    await dlg.locator(tid('wl-entry-add')).click();
    await rows.nth(1).locator(tid('wl-entry-input')).fill('10.1.2.3');
    await dlg.locator(tid('wl-entry-add')).click();
    await rows.nth(2).locator(tid('wl-entry-input')).fill('172.16.0.0/12');
    assert.equal(await text(dlg.locator(tid('wl-count'))), '3 / 20');
    await rows.nth(2).locator(tid('wl-entry-remove')).click();
    assert.equal(await rows.count(), 2);
    await assertLabelled(page);
    await shot(page, '20-endpoint-whitelist-edit');
    await dlg.locator(tid('wl-dialog-ok')).click();
    await dlg.waitFor({ state: 'detached' });
    await card.locator(tid('wl-enabled')).filter({ hasText: /^开启$/ }).waitFor();
    assert.deepEqual(await card.locator(tid('wl-entry')).allTextContents(), ['192.168.0.0/24', '10.1.2.3']);
    let ep = await call(bob.net.token, 'GET', epPath);
    assert.equal(ep.enable_whitelist, true);
    assert.deepEqual(ep.whitelist, ['192.168.0.0/24', '10.1.2.3']);
    await shot(page, '21-endpoint-whitelist');

    // Off again, and one entry fewer: the dialog starts from what the server has.
    await card.locator(tid('wl-edit')).click();
    await dlg.waitFor();
    assert.equal(await dlg.locator(tid('wl-switch')).isChecked(), true);
    assert.equal(await rows.count(), 2);
    await dlg.locator(tid('wl-switch')).uncheck();
    await rows.nth(0).locator(tid('wl-entry-remove')).click();
    await dlg.locator(tid('wl-dialog-ok')).click();
    await dlg.waitFor({ state: 'detached' });
    await card.locator(tid('wl-enabled')).filter({ hasText: /^关闭$/ }).waitFor();
    assert.deepEqual(await card.locator(tid('wl-entry')).allTextContents(), ['10.1.2.3']);
    ep = await call(bob.net.token, 'GET', epPath);
    assert.equal(ep.enable_whitelist, false);
    assert.deepEqual(ep.whitelist, ['10.1.2.3']);
  });

  step('account 1 cannot delete the service while the endpoint is connected', async () => {
    const page = page1;
    await page.locator(tid('nav-services')).click();
    const row = page.locator(`${tid('svc-table-row')}[data-id="${state.serviceId}"]`);
    await row.waitFor();
    await row.locator(tid('svc-delete')).click();
    await confirmYes(page, /web/);
    const banner = page.locator(tid('error-banner'));
    await banner.waitFor({ state: 'visible' });
    assert.match(await text(banner), /EndPoint\.3006/);
    await waitStatus(row, 'available');
    await shot(page, '15-service-delete-refused');
  });

  step('account 2 filters and deletes the endpoint', async () => {
    const page = page2;
    await page.locator(tid('nav-endpoints')).click();
    const row = page.locator(`${tid('ep-table-row')}[data-id="${state.endpointId}"]`);
    await row.waitFor();
    await page.locator(tid('ep-filter')).fill('no-such-service');
    await page.locator(tid('ep-search')).click();
    await row.waitFor({ state: 'detached' });
    assert.equal(await text(page.locator(tid('ep-pager-total'))), '共 0 条');
    await page.locator(tid('ep-filter')).fill('.web.');
    await page.locator(tid('ep-search')).click();
    await row.waitFor();
    await row.locator(tid('ep-delete')).click();
    await confirmYes(page, new RegExp(state.endpointId));
    await row.waitFor({ state: 'detached' });
    await page.locator(`${tid('ep-table')} td.empty`).waitFor();
  });

  step('account 1 deletes the service', async () => {
    const page = page1;
    const row = page.locator(`${tid('svc-table-row')}[data-id="${state.serviceId}"]`);
    await page.locator(tid('svc-refresh')).click();
    await row.waitFor();
    await row.locator(tid('svc-delete')).click();
    await confirmYes(page, /web/);
    await row.waitFor({ state: 'detached' });
    await page.locator(tid('nav-quotas')).click();
    const svcRow = page.locator(`${tid('quota-table-row')}[data-id="endpoint_service"]`);
    await svcRow.locator(tid('quota-used')).filter({ hasText: /^0$/ }).waitFor();
  });

  step('the API reference lists every operation with its schemas', async () => {
    const page = page1;
    await page.locator(tid('nav-openapi')).click();
    const op = page.locator(`${tid('openapi-op')}[data-op="create_endpoint"]`);
    await op.waitFor();
    assert.ok((await page.locator(tid('openapi-op')).count()) >= 70);
    await op.locator('summary').first().click();
    await op.locator(`${tid('openapi-request')} .schema-prop`, { hasText: /^endpoint_service_id$/ }).waitFor();
    const ok = op.locator(`${tid('openapi-response')}[data-status="200"]`);
    await ok.locator('code', { hasText: /^EndpointOut$/ }).waitFor();
    await ok.locator('.schema-prop', { hasText: /^marker_id$/ }).waitFor();
    await op.locator(`${tid('openapi-response')}[data-status="default"] .schema-prop`, { hasText: /^error_code$/ }).waitFor();
    await shot(page, '16-api-reference');
    await page.locator(tid('openapi-filter')).fill('quotas');
    await op.waitFor({ state: 'detached' });
    await page.locator(`${tid('openapi-op')}[data-op="list_quota_details"]`).waitFor();
  });

  step('logout returns to the login page', async () => {
    await page1.locator(tid('logout')).click();
    await page1.locator(tid('login-form')).waitFor();
    assert.equal(await page1.evaluate(() => sessionStorage.length), 0);
  });

  step('every text exists in Chinese and English; no script errors in the pages', async () => {
    const [zh, en] = await page1.evaluate(async () => {
      const m = await import('/console/i18n.js');
      return [m.keysOf('zh').sort(), m.keysOf('en').sort()];
    });
    assert.deepEqual(en, zh);
    assert.deepEqual(pageErrors, []);
  });
});
