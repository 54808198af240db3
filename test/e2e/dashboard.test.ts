/**
 * The operators' dashboard end to end, as an operator would use it: a real agent (dist/agent/main.js, real Xvnc as
 * vdtest81..84), the real controller process (dist/controller/main.js) and headless Debian Chromium. Nothing is
 * mocked. Changes are made through the REST API (as a portal would) or through the page's own buttons, and every
 * assertion waits for the DOM change the event stream causes, never for time to pass. Screenshots go to
 * test-artifacts/.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, waitFor, type AgentProcess } from '../helpers/agent-process.js';
import { launchChromium } from '../helpers/browser.js';
import { makePki } from '../helpers/certs.js';
import { startController, type ControllerProcess } from '../helpers/controller-process.js';
import { testUser } from '../helpers/users.js';

const ARTIFACTS = new URL('../../test-artifacts/', import.meta.url);
const READ_KEY = 'dashboard-read-only-key-0123456789';
const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

let agent: AgentProcess;
let ctl: ControllerProcess;
let browser: Browser;
let context: BrowserContext | undefined;
let keysDir: string;

async function api(method: string, path: string, body?: unknown, key = ctl.apiKey): Promise<{ status: number; json: any }> {
  const res = await fetch(`${ctl.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
    ...(body !== undefined && { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null };
}

async function openSession(username: string): Promise<{ id: string; respondedAt: number }> {
  const res = await api('POST', '/api/v1/sessions', { username });
  const respondedAt = Date.now();
  expect(res.status).toBe(201);
  const s = await api('GET', `/api/v1/sessions/${res.json.id}`);
  expect(s.json.state).toBe('running');
  return { id: res.json.id, respondedAt };
}

function saveArtifact(name: string, png: Buffer): void {
  mkdirSync(ARTIFACTS, { recursive: true });
  writeFileSync(new URL(name, ARTIFACTS), png);
}

/** Opens the dashboard signed in with `key` and waits until the event stream has delivered its snapshot. */
async function signedIn(key = ctl.apiKey): Promise<{ page: Page; errors: string[] }> {
  context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('dialog', (d) => {
    errors.push(`unexpected native dialog: ${d.message()}`);
    void d.dismiss();
  });
  await page.goto(`${ctl.url}/dashboard/`);
  await page.fill('#api-key', key);
  await page.click('#login button[type=submit]');
  await page.locator('#status[data-state="ok"]').waitFor({ timeout: 10_000 });
  // A marker that survives only as long as the document: a reload would lose it.
  await page.evaluate(() => ((window as unknown as { __sameDocument: boolean }).__sameDocument = true));
  return { page, errors };
}

async function sameDocument(page: Page): Promise<boolean> {
  return page.evaluate(() => (window as unknown as { __sameDocument?: boolean }).__sameDocument === true);
}

/** Clicks `button`, then the confirmation dialog's confirm button. */
async function confirmed(page: Page, button: string): Promise<void> {
  await page.click(button);
  await page.locator('#confirm[open]').waitFor();
  await page.click('#confirm-ok');
}

async function axeViolations(page: Page): Promise<{ id: string; impact: string; nodes: number }[]> {
  // Evaluated through the DevTools protocol, so the page's strict CSP (no inline scripts) still holds for the page.
  await page.evaluate(AXE_SOURCE);
  const result = await page.evaluate(async () => {
    const r = await (window as unknown as { axe: { run(): Promise<{ violations: { id: string; impact: string; nodes: unknown[] }[] }> } }).axe.run();
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length }));
  });
  return result.filter((v) => v.impact === 'serious' || v.impact === 'critical');
}

beforeAll(async () => {
  const pki = makePki();
  agent = await startAgent({ pki });
  keysDir = mkdtempSync(join(tmpdir(), 'vd-dashboard-keys-'));
  const keysFile = join(keysDir, 'keys');
  writeFileSync(keysFile, `read ${READ_KEY}\n`, { mode: 0o600 });
  ctl = await startController({ pki, blades: [{ name: 'blade-a', address: `127.0.0.1:${agent.port}` }],
    args: ['--api-keys-file', keysFile] });
  await waitFor(async () => (await api('GET', '/api/v1/blades/blade-a')).json?.state === 'UP', 'blade-a to be UP', 15_000);
  browser = await launchChromium();
}, 60_000);

afterEach(async () => {
  await context?.close();
  context = undefined;
  for (const s of (await api('GET', '/api/v1/sessions')).json?.sessions ?? []) {
    await api('DELETE', `/api/v1/sessions/${s.id}`);
  }
  await api('POST', '/api/v1/blades/blade-a/uncordon');
});

afterAll(async () => {
  await browser?.close();
  await ctl?.stop();
  await agent?.stop();
  if (keysDir) rmSync(keysDir, { recursive: true, force: true });
  if (ctl) rmSync(ctl.dataDir, { recursive: true, force: true });
}, 60_000);

describe('the dashboard shows the fleet live', () => {
  it('a session that starts or ends shows up within a second, without a reload', async () => {
    const { page, errors } = await signedIn();
    const { id, respondedAt } = await openSession(testUser(81));
    const row = page.locator(`#sessions tbody tr[data-session-id="${id}"]`);
    await row.waitFor({ timeout: 5000 });
    const shownAt = Number(await row.getAttribute('data-shown-at'));
    expect(shownAt - respondedAt).toBeLessThan(1000);
    await expect(row.locator('td').first().textContent()).resolves.toBe(testUser(81));
    // The row may first show the session still 'starting' (the stream can be faster than the POST's answer): wait
    // for its update to 'running', never read the state at the moment the row appears.
    await row.locator('.state', { hasText: /^running$/ }).waitFor({ timeout: 5000 });
    saveArtifact('dashboard-live-session.png', await page.screenshot({ fullPage: true }));

    const endRequestedAt = Date.now();
    expect((await api('DELETE', `/api/v1/sessions/${id}`)).status).toBe(200);
    await row.waitFor({ state: 'detached', timeout: 5000 });
    const removedAt = Number(await page.evaluate(() => document.body.dataset.lastEndedAt));
    expect(removedAt - endRequestedAt).toBeLessThan(1000);
    // The ended session is in the history with its reason.
    const ended = page.locator(`#history tbody tr[data-session-id="${id}"]`);
    await ended.waitFor({ timeout: 5000 });
    await expect(ended.innerText()).resolves.toContain('deleted');
    expect(await sameDocument(page)).toBe(true);
    expect(errors).toEqual([]);
  });

  it('shows each blade with its state, sessions and capacity, load, memory, last seen and version', async () => {
    const { page } = await signedIn();
    const row = page.locator('#blades tbody tr[data-blade="blade-a"]');
    await row.waitFor();
    const cells = await row.locator('td').allInnerTexts();
    const blade = (await api('GET', '/api/v1/blades/blade-a')).json;
    expect(cells[0]).toBe('blade-a');
    expect(cells[1]).toBe(blade.hostname);
    expect(cells[3]).toBe(blade.version);
    expect(cells[4]).toBe('UP');
    expect(cells[5]).toMatch(new RegExp(`^\\d+ / ${blade.capacity}$`));
    expect(cells[6]).toMatch(/^\d+\.\d\d \d+\.\d\d \d+\.\d\d$/);
    expect(cells[7]).toMatch(/iB \/ .*iB$/);
    expect(cells[8]).toMatch(/ago$/);
  });
});

describe('every action asks first, works and shows up live', () => {
  it('cordon, drain and uncordon a blade from its row', async () => {
    const { page, errors } = await signedIn();
    const badge = page.locator('#blades tbody tr[data-blade="blade-a"] .state');
    await confirmed(page, 'button[aria-label="Cordon blade-a"]');
    await page.locator('#blades tbody tr[data-blade="blade-a"] .state-CORDONED').waitFor({ timeout: 5000 });
    expect((await api('GET', '/api/v1/blades/blade-a')).json.adminState).toBe('CORDONED');
    await confirmed(page, 'button[aria-label="Drain blade-a"]');
    await page.locator('#blades tbody tr[data-blade="blade-a"] .state-DRAINING').waitFor({ timeout: 5000 });
    await confirmed(page, 'button[aria-label="Uncordon blade-a"]');
    await page.locator('#blades tbody tr[data-blade="blade-a"] .state-UP').waitFor({ timeout: 5000 });
    await expect(badge.textContent()).resolves.toBe('UP');
    await expect(page.locator('#message').textContent()).resolves.toContain('Uncordon: blade-a done.');
    expect(await sameDocument(page)).toBe(true);
    expect(errors).toEqual([]);
  });

  it('cancelling the confirmation changes nothing', async () => {
    const { page } = await signedIn();
    await page.click('button[aria-label="Cordon blade-a"]');
    await page.locator('#confirm[open]').waitFor();
    await page.click('#confirm-cancel');
    await page.locator('#confirm:not([open])').waitFor({ state: 'attached' });
    expect((await api('GET', '/api/v1/blades/blade-a')).json.adminState).toBe('ACTIVE');
  });

  it('ends a session from its row; it moves to the history with its reason', async () => {
    const { id } = await openSession(testUser(82));
    const { page } = await signedIn();
    const row = page.locator(`#sessions tbody tr[data-session-id="${id}"]`);
    await row.waitFor();
    await confirmed(page, `#sessions tbody tr[data-session-id="${id}"] button[data-action="end"]`);
    await row.waitFor({ state: 'detached', timeout: 5000 });
    await page.locator(`#history tbody tr[data-session-id="${id}"]`).waitFor({ timeout: 5000 });
    expect((await api('GET', `/api/v1/sessions/${id}`)).json.state).toBe('ended');
  });

  it('registers a blade and removes it again, both showing up live', async () => {
    const { page, errors } = await signedIn();
    await page.fill('#register-name', 'spare-blade');
    await page.fill('#register-address', '127.0.0.1:9');
    await page.click('#register button[type=submit]');
    await page.locator('#confirm[open]').waitFor();
    await page.click('#confirm-ok');
    const row = page.locator('#blades tbody tr[data-blade="spare-blade"]');
    await row.waitFor({ timeout: 5000 });
    saveArtifact('dashboard-registered-blade.png', await page.screenshot({ fullPage: true }));
    await confirmed(page, 'button[aria-label="Remove spare-blade"]');
    await row.waitFor({ state: 'detached', timeout: 5000 });
    expect((await api('GET', '/api/v1/blades/spare-blade')).status).toBe(404);
    expect(errors).toEqual([]);
  });

  it('a refused action says why, with the error code', async () => {
    const { page } = await signedIn();
    await page.fill('#register-name', 'bad-blade');
    await page.fill('#register-address', 'not an address');
    await page.click('#register button[type=submit]');
    await page.click('#confirm-ok');
    await page.locator('#message[data-kind="error"]').waitFor();
    await expect(page.locator('#message').textContent()).resolves.toMatch(/^Register blade failed: VD_ERR_BAD_REQUEST: .*HOST:PORT/);
    expect((await api('GET', '/api/v1/blades/bad-blade')).status).toBe(404);
  });

  it('a read-only key sees everything, and an action it may not take is refused with VD_ERR_FORBIDDEN', async () => {
    const { page } = await signedIn(READ_KEY);
    await page.locator('#blades tbody tr[data-blade="blade-a"]').waitFor();
    await confirmed(page, 'button[aria-label="Cordon blade-a"]');
    await page.locator('#message[data-kind="error"]').waitFor();
    await expect(page.locator('#message').textContent()).resolves.toContain('VD_ERR_FORBIDDEN');
    expect((await api('GET', '/api/v1/blades/blade-a')).json.adminState).toBe('ACTIVE');
  });
});

describe('filters and history', () => {
  it('filters live sessions by user and blade, and blades by state', async () => {
    const a = await openSession(testUser(83));
    const b = await openSession(testUser(84));
    const { page } = await signedIn();
    await page.locator(`#sessions tbody tr[data-session-id="${a.id}"]`).waitFor({ timeout: 5000 });
    await page.locator(`#sessions tbody tr[data-session-id="${b.id}"]`).waitFor({ timeout: 5000 });
    await page.fill('#filter-user', testUser(84));
    await page.locator(`#sessions tbody tr[data-session-id="${a.id}"]`).waitFor({ state: 'detached', timeout: 5000 });
    expect(await page.locator('#sessions tbody tr[data-session-id]').count()).toBe(1);
    await page.fill('#filter-user', '');
    await page.fill('#filter-blade', 'no-such-blade');
    await page.locator('#sessions tbody td.empty').waitFor({ timeout: 5000 });
    await page.fill('#filter-blade', '');
    await page.selectOption('#filter-state', 'DOWN');
    await page.locator('#blades tbody td.empty').waitFor({ timeout: 5000 });
    await page.selectOption('#filter-state', 'UP');
    await page.locator('#blades tbody tr[data-blade="blade-a"]').waitFor({ timeout: 5000 });
  });

  it('pages through ended sessions', async () => {
    // 21 ended sessions of one user make two pages of 20.
    for (let i = 0; i < 21; i++) {
      const { id } = await openSession(testUser(85));
      await api('DELETE', `/api/v1/sessions/${id}`);
    }
    const { page } = await signedIn();
    // The filter applies after a debounce: wait for the filtered page's answer (an event), so the clicks below cannot
    // race the filter resetting the page to 1.
    const filtered = page.waitForResponse((r) => r.url().includes('/api/v1/sessions?') && r.url().includes(`user=${testUser(85)}`));
    await page.fill('#filter-user', testUser(85));
    await filtered;
    await expect.poll(() => page.locator('#history tbody tr[data-session-id]').count(), { timeout: 5000 }).toBe(20);
    await page.locator('#history-next:not([disabled])').click();
    await expect.poll(() => page.locator('#history-page').textContent()).toBe('Page 2');
    expect(await page.locator('#history tbody tr[data-session-id]').count()).toBeGreaterThanOrEqual(1);
    await page.locator('#history-prev').click();
    await expect.poll(() => page.locator('#history-page').textContent()).toBe('Page 1');
  }, 180_000);
});

describe('accessibility', () => {
  it('axe-core finds nothing serious or critical on the sign-in form, the live dashboard or the confirmation', async () => {
    await openSession(testUser(86));
    context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    const login = await context.newPage();
    await login.goto(`${ctl.url}/dashboard/`);
    await login.locator('#login:not([hidden])').waitFor();
    expect(await axeViolations(login)).toEqual([]);
    await context.close();

    const { page } = await signedIn();
    await page.locator('#sessions tbody tr[data-session-id]').first().waitFor();
    await page.locator('#history tbody tr').first().waitFor();
    expect(await axeViolations(page)).toEqual([]);
    await page.click('button[aria-label="Cordon blade-a"]');
    await page.locator('#confirm[open]').waitFor();
    expect(await axeViolations(page)).toEqual([]);
    saveArtifact('dashboard-confirm.png', await page.screenshot({ fullPage: true }));
    await page.click('#confirm-cancel');
  });
});
