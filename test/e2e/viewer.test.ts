/**
 * End to end, as a person would use it: a real agent (dist/agent/main.js, real Xvnc started as vdtest36 with the
 * default session script), the real controller (buildApp: REST API, proxy, viewer), and headless Debian Chromium
 * driven by playwright-core. The portal's part is played by the test: it POSTs a session and opens the viewerUrl.
 *
 * Nothing is mocked except in the dashboard XSS test, which serves hostile data for the dashboard's API calls with
 * page.route(): the real API validates names, so strings like `<img onerror>` can only reach the page from places a
 * test cannot easily control (an agent's hostname, a gRPC error text). Screenshots go to test-artifacts/.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { launchChromium } from '../helpers/browser.js';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { buildApp, type ControllerApp } from '../../controller/app.js';
import { parseConfig } from '../../controller/config.js';
import { createLogger } from '../../controller/log.js';
import { SqliteStore } from '../../controller/store/sqlite-store.js';
import { startAgent, alive, type AgentProcess } from '../helpers/agent-process.js';
import { makePki } from '../helpers/certs.js';
import { startPrefixProxy } from '../helpers/prefix-proxy.js';
import { canvasShares, keepCanvas, whiteTurnedDark } from '../helpers/canvas.js';
import { testUser } from '../helpers/users.js';

/** agent/vnc/default-xstartup.sh paints the root window with this (xsetroot -solid '#3465a4'). */
const DESKTOP_BLUE = '#3465a4';
const API_KEY = 'e2e-viewer-api-key-0123456789abcdef';
const ARTIFACTS = new URL('../../test-artifacts/', import.meta.url);
const USER = testUser(36);
const RECONNECT_USER = testUser(37);
const ASYNC_USER = testUser(121);
const EARLY_USER = testUser(141);

let agent: AgentProcess;
let store: SqliteStore;
let ctl: ControllerApp;
let base: string;
let browser: Browser;
let context: BrowserContext | undefined;
let dataDir: string;
const xvncPids = new Set<number>();

async function api(method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${API_KEY}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
    ...(body !== undefined && { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null };
}

async function newPage(): Promise<{ page: Page; dialogs: string[]; errors: string[] }> {
  context = await browser.newContext({ viewport: { width: 1024, height: 768 } });
  const page = await context.newPage();
  const dialogs: string[] = [];
  const errors: string[] = [];
  page.on('dialog', (d) => {
    dialogs.push(`${d.type()}: ${d.message()}`);
    void d.dismiss();
  });
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  return { page, dialogs, errors };
}

function saveArtifact(name: string, png: Buffer): string {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = new URL(name, ARTIFACTS);
  writeFileSync(path, png);
  return path.pathname;
}

/**
 * Waits until the desktop's blue covers a good part of noVNC's canvas (the first update may still be in flight) and,
 * with `terminal`, until the session's xterm has been drawn too: the root colour is painted before the xterm maps, so
 * a desktop read as soon as the blue shows may have no terminal yet. Returns the shares of the colours a person sees.
 */
async function drawnDesktop(page: Page, terminal = false): Promise<{ blue: number; white: number; black: number }> {
  let seen = { blue: 0, white: 0, black: 0 };
  await vi.waitFor(async () => {
    const s = await canvasShares(page, [DESKTOP_BLUE, '#ffffff', '#000000']);
    seen = { blue: s[DESKTOP_BLUE]!, white: s['#ffffff']!, black: s['#000000']! };
    if (!(seen.blue > 0.3 && (!terminal || seen.white > 0.01))) throw new Error(`desktop not drawn yet: ${JSON.stringify(seen)}`);
  }, { timeout: 15_000, interval: 200 }).catch(() => undefined);
  return seen;
}

async function postSession(username: string): Promise<{ id: string; viewerUrl: string; display: number }> {
  const res = await api('POST', '/api/v1/sessions', { username });
  expect([200, 201]).toContain(res.status);
  return res.json;
}

beforeAll(async () => {
  const pki = makePki();
  agent = await startAgent({ pki });
  dataDir = mkdtempSync(join(tmpdir(), 'vd-e2e-viewer-'));
  const config = parseConfig([
    '--listen', '127.0.0.1:0',
    '--blade', `blade-e2e=127.0.0.1:${agent.port}`,
    '--agent-tls-cert', pki.clientCert, '--agent-tls-key', pki.clientKey, '--agent-tls-ca', pki.caCert,
    '--api-key', API_KEY,
    '--data-dir', dataDir,
    '--log-level', 'warn',
  ]);
  if (!config) throw new Error('no config');
  store = new SqliteStore({ dataDir });
  await store.init();
  ctl = await buildApp({ config, store, log: createLogger({ logLevel: 'warn' }) });
  await ctl.app.listen({ host: '127.0.0.1', port: 0 });
  base = ctl.publicUrl();
  await vi.waitFor(async () => {
    if ((await api('GET', '/api/v1/blades')).json?.blades?.[0]?.state !== 'UP') throw new Error('the blade is not UP yet');
  }, { timeout: 15_000, interval: 100 });
  browser = await launchChromium();
}, 60_000);

afterEach(async () => {
  await context?.close();
  context = undefined;
});

afterAll(async () => {
  await browser?.close();
  // End every session the tests started (stops the desktops through the agent), then anything left by pid.
  if (ctl) {
    for (const s of (await api('GET', '/api/v1/sessions').catch(() => ({ json: null }))).json?.sessions ?? []) {
      await api('DELETE', `/api/v1/sessions/${s.id}`).catch(() => undefined);
    }
    await ctl.close();
  }
  await store?.close();
  await agent?.stop();
  for (const pid of xvncPids) if (alive(pid)) process.kill(pid, 'SIGKILL');
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
}, 60_000);

describe('the viewer in a real browser', () => {
  it('shows the desktop without a password prompt, then says so when the session is deleted', async () => {
    const session = await postSession(USER);
    const record = await store.getSession(session.id);
    if (record?.pid) xvncPids.add(record.pid);
    const { page, dialogs, errors } = await newPage();
    await page.goto(session.viewerUrl);

    await page.locator('#status[data-state="connected"]').waitFor({ timeout: 15_000 });
    // The secrets left the address bar.
    expect(page.url()).toBe(`${base}/viewer/`);
    const { blue, white, black } = await drawnDesktop(page, true);
    const file = saveArtifact('viewer-desktop.png', await page.screenshot());
    // A person sees the blue desktop with a terminal on it: mostly blue, some light xterm, not a black screen.
    expect(blue, `share of ${DESKTOP_BLUE} (screenshot ${file})`).toBeGreaterThan(0.3);
    expect(black, `black share (screenshot ${file})`).toBeLessThan(0.5);
    expect(white, `xterm white (screenshot ${file})`).toBeGreaterThan(0.01);
    // No password was asked for, in any form.
    expect(dialogs).toEqual([]);
    expect(await page.locator('input[type=password]').count()).toBe(0);
    expect(await page.locator('#status').getAttribute('data-state')).toBe('connected');
    expect(errors).toEqual([]);

    // Keyboard input reaches the desktop: typing into the focused xterm turns some of its white into dark text.
    await keepCanvas(page, 'before-typing');
    await page.locator('#screen canvas').click({ position: { x: 200, y: 150 } });
    await page.keyboard.type('echo the quick brown fox jumps over the lazy dog 0123456789');
    await page.keyboard.press('Enter');
    let inked = 0;
    await vi.waitFor(async () => {
      inked = await whiteTurnedDark(page, 'before-typing');
      if (inked <= 300) throw new Error(`only ${inked} pixels of typed text so far`);
    }, { timeout: 10_000, interval: 200 }).catch(() => undefined);
    saveArtifact('viewer-typed.png', await page.screenshot());
    expect(inked, 'pixels of new text in the xterm').toBeGreaterThan(300);

    const del = await api('DELETE', `/api/v1/sessions/${session.id}`);
    expect(del.status).toBeLessThan(300);
    await page.locator('#status[data-state="ended"]').waitFor({ timeout: 10_000 });
    await expect(page.locator('#screen .notice').textContent()).resolves.toBe('This desktop session has ended.');
    saveArtifact('viewer-ended.png', await page.screenshot());
  });

  it('opened from a 202 (Prefer: respond-async) while the desktop starts, shows the desktop once it runs', async () => {
    const res = await fetch(`${base}/api/v1/sessions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json', prefer: 'respond-async' },
      body: JSON.stringify({ username: ASYNC_USER }),
    });
    expect(res.status).toBe(202);
    const session = await res.json() as { id: string; viewerUrl: string; state: string };
    expect(session.state).toBe('starting');
    const { page, errors } = await newPage();
    await page.goto(session.viewerUrl);
    await page.locator('#status[data-state="connected"]').waitFor({ timeout: 15_000 });
    const { blue } = await drawnDesktop(page);
    expect(blue, `share of ${DESKTOP_BLUE}`).toBeGreaterThan(0.3);
    expect(errors).toEqual([]);
    const record = await store.getSession(session.id);
    if (record?.pid) xvncPids.add(record.pid);
    expect(record?.state).toBe('running');
    await api('DELETE', `/api/v1/sessions/${session.id}`);
  });

  it('opens its WebSocket while the page is parsed: the desktop answers before the viewer\'s scripts have arrived', async () => {
    const session = await postSession(EARLY_USER);
    const record = await store.getSession(session.id);
    if (record?.pid) xvncPids.add(record.pid);
    const { page, errors } = await newPage();
    // Hold the viewer's scripts until the desktop's first bytes have reached the page (or 15 s have passed).
    let release!: () => void;
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    await page.route(/\/assets\/(?:viewer|chunk)-[A-Z0-9]+\.js$/, async (route) => {
      await released;
      await route.continue();
    });
    const firstFrame = new Promise<string>((resolve) => {
      page.on('websocket', (ws) => ws.once('framereceived', (f) => resolve(typeof f.payload === 'string' ? f.payload : f.payload.toString('latin1'))));
    });
    const held = setTimeout(release, 15_000);
    try {
      void page.goto(session.viewerUrl).catch(() => undefined);
      const first = await Promise.race([firstFrame, released.then(() => 'the scripts were released first')]);
      // The controller's RFB version, sent once it reached the desktop, before any module of the page ran.
      expect(first).toBe('RFB 003.008\n');
    } finally {
      clearTimeout(held);
      release();
    }
    // What arrived before noVNC was loaded is handed to it: the handshake completes and the desktop shows.
    await page.locator('#status[data-state="connected"]').waitFor({ timeout: 15_000 });
    expect((await drawnDesktop(page)).blue, `share of ${DESKTOP_BLUE}`).toBeGreaterThan(0.3);
    expect(errors).toEqual([]);
    await api('DELETE', `/api/v1/sessions/${session.id}`);
  });

  it('reconnects with a fresh token when the connection drops, and after a reload', async () => {
    const session = await postSession(RECONNECT_USER);
    const record = await store.getSession(session.id);
    if (record?.pid) xvncPids.add(record.pid);
    const { page, dialogs } = await newPage();
    const reconnects: number[] = [];
    page.on('response', (r) => {
      if (r.url().endsWith('/viewer/reconnect')) reconnects.push(r.status());
    });
    await page.goto(session.viewerUrl);
    await page.locator('#status[data-state="connected"]').waitFor({ timeout: 15_000 });

    // Record every state the status passes through: 'disconnected' may last only a few milliseconds.
    await page.evaluate(() => {
      const el = document.getElementById('status')!;
      const seen: string[] = [];
      (window as unknown as { __states: string[] }).__states = seen;
      new MutationObserver(() => seen.push(el.dataset.state ?? '')).observe(el, { attributes: true, attributeFilter: ['data-state'] });
    });
    // The controller drops the browser's connection (as a restart or network blip would); the session stays live.
    expect(ctl.proxy.closeSession(session.id, 'test: drop the connection')).toBeGreaterThan(0);
    const states = () => page.evaluate(() => (window as unknown as { __states: string[] }).__states);
    await expect.poll(states, { timeout: 10_000, message: 'the viewer to notice the drop' }).toContain('disconnected');
    await page.locator('#status[data-state="connected"]').waitFor({ timeout: 15_000 });
    expect((await states()).slice(0, 3)).toEqual(['disconnected', 'connecting', 'connected']);
    expect(reconnects).toEqual([200]);
    expect((await drawnDesktop(page)).blue).toBeGreaterThan(0.3);

    // A reload has no fragment any more: the page uses the key it kept in sessionStorage.
    await page.reload();
    await page.locator('#status[data-state="connected"]').waitFor({ timeout: 15_000 });
    expect(reconnects).toEqual([200, 200]);
    const { blue } = await drawnDesktop(page);
    saveArtifact('viewer-after-reload.png', await page.screenshot());
    expect(blue).toBeGreaterThan(0.3);
    expect(dialogs).toEqual([]);

    await api('DELETE', `/api/v1/sessions/${session.id}`);
    await page.locator('#status[data-state="ended"]').waitFor({ timeout: 10_000 });
  });

  it('says the session has ended when an old link is opened after the session was deleted', async () => {
    const session = await postSession(USER);
    const record = await store.getSession(session.id);
    if (record?.pid) xvncPids.add(record.pid);
    await api('DELETE', `/api/v1/sessions/${session.id}`);
    const { page, dialogs } = await newPage();
    await page.goto(session.viewerUrl);
    await page.locator('#status[data-state="ended"]').waitFor({ timeout: 10_000 });
    await expect(page.locator('#screen .notice').textContent()).resolves.toBe('This desktop session has ended.');
    expect(dialogs).toEqual([]);
  });
});

describe('behind a reverse proxy that serves the controller under a path prefix', () => {
  it('the viewer shows the desktop, reconnects and ends, and the dashboard works, all under the prefix', async () => {
    const rp = await startPrefixProxy('/desk', Number(new URL(base).port));
    try {
      const session = await postSession(USER);
      const record = await store.getSession(session.id);
      if (record?.pid) xvncPids.add(record.pid);
      const { page, dialogs, errors } = await newPage();
      const notFound: string[] = [];
      page.on('response', (r) => {
        if (r.status() === 404) notFound.push(r.url());
      });
      // What --public-url https://host/desk would have put in viewerUrl.
      await page.goto(`${rp.base}/viewer/${new URL(session.viewerUrl).hash}`);
      await page.locator('#status[data-state="connected"][data-connections="1"]').waitFor({ timeout: 15_000 });
      expect(page.url()).toBe(`${rp.base}/viewer/`);
      const { blue } = await drawnDesktop(page);
      saveArtifact('viewer-under-prefix.png', await page.screenshot());
      expect(blue).toBeGreaterThan(0.3);

      // Reconnect goes through the prefix too (POST /desk/viewer/reconnect, then /desk/websockify).
      expect(ctl.proxy.closeSession(session.id, 'test: drop the connection')).toBeGreaterThan(0);
      // Wait for the second completed connection (a counter), never for the brief 'disconnected' state in between.
      await page.locator('#status[data-state="connected"][data-connections="2"]').waitFor({ timeout: 15_000 });

      await api('DELETE', `/api/v1/sessions/${session.id}`);
      await page.locator('#status[data-state="ended"]').waitFor({ timeout: 10_000 });

      // The dashboard: /desk/ redirects to /desk/dashboard/, whose API calls stay under the prefix.
      await page.goto(`${rp.base}/`);
      expect(page.url()).toBe(`${rp.base}/dashboard/`);
      await page.fill('#api-key', API_KEY);
      await page.click('#login button[type=submit]');
      await page.locator('#status[data-state="ok"]').waitFor({ timeout: 10_000 });
      await expect(page.locator('#blades tbody tr', { hasText: 'blade-e2e' }).count()).resolves.toBe(1);

      expect(rp.strays, 'requests that escaped the prefix').toEqual([]);
      expect(notFound).toEqual([]);
      expect(dialogs).toEqual([]);
      // The one console error allowed: the browser's own line for the 410 that told the viewer the session ended.
      expect(errors.filter((e) => !e.includes('410'))).toEqual([]);
    } finally {
      await context?.close();
      context = undefined;
      await rp.close();
    }
  });
});

describe('the dashboard in a real browser', () => {
  it('shows the real blade and a live session after the operator enters an API key', async () => {
    const session = await postSession(USER);
    const record = await store.getSession(session.id);
    if (record?.pid) xvncPids.add(record.pid);
    const { page, errors } = await newPage();
    await page.goto(`${base}/`);
    expect(page.url()).toBe(`${base}/dashboard/`);
    await page.fill('#api-key', API_KEY);
    await page.click('#login button[type=submit]');
    await page.locator('#status[data-state="ok"]').waitFor({ timeout: 10_000 });
    const blade = page.locator('#blades tbody tr', { hasText: 'blade-e2e' });
    await expect(blade.locator('.state').textContent()).resolves.toBe('UP');
    await expect(page.locator('#sessions tbody tr', { hasText: USER }).count()).resolves.toBe(1);
    // The key stays in this tab's sessionStorage and never lands in the URL.
    expect(page.url()).not.toContain(API_KEY);
    saveArtifact('dashboard.png', await page.screenshot({ fullPage: true }));
    expect(errors).toEqual([]);
    await api('DELETE', `/api/v1/sessions/${session.id}`);
  });

  it('renders hostile strings from blades and sessions as text and runs none of them (threat 7)', async () => {
    const hostile = {
      name: 'blade-x',
      hostname: '<img src=x onerror="window.__xss=1;alert(1)">',
      lastError: '</td><script>window.__xss=2</script><svg onload="window.__xss=3">',
      username: '"><iframe src="javascript:alert(4)"></iframe>',
      state: 'UP" onmouseover="window.__xss=5',
    };
    const { page, dialogs } = await newPage();
    const blade = {
      name: hostile.name, hostname: hostile.hostname, address: '127.0.0.1:1', state: hostile.state, sessions: 1,
      capacity: 4, load: { load1: 0.5, load5: 0.4, load15: 0.3 }, lastSeen: new Date().toISOString(),
      lastError: hostile.lastError, version: hostile.hostname,
    };
    const session = {
      id: 'sess-1', username: hostile.username, blade: hostile.name, display: 3, state: 'running',
      createdAt: new Date().toISOString(), viewers: 1, bytesDown: 10, bytesUp: 5, viewerIps: [hostile.lastError],
    };
    // The dashboard's data arrives as server-sent events; its history of ended sessions as a paged GET.
    await page.route('**/api/v1/events', (route) => route.fulfill({
      contentType: 'text/event-stream',
      body: `event: snapshot\ndata: ${JSON.stringify({ blades: [blade], sessions: [session] })}\n\n`,
    }));
    await page.route('**/api/v1/sessions?*', (route) => route.fulfill({
      contentType: 'application/json',
      body: JSON.stringify({ sessions: [{ ...session, id: 'sess-0', state: 'ended', endReason: hostile.lastError,
        endedAt: new Date().toISOString() }], nextOffset: null }),
    }));
    await page.goto(`${base}/dashboard/`);
    await page.fill('#api-key', 'anything');
    await page.click('#login button[type=submit]');
    // The mocked stream ends after its snapshot (the page then reconnects), so wait for the rows, not the status.
    await page.locator('#sessions tbody tr[data-session-id="sess-1"]').waitFor({ timeout: 10_000 });

    const bladeText = await page.locator('#blades tbody').innerText();
    expect(bladeText).toContain(hostile.hostname);
    expect(bladeText).toContain(hostile.lastError);
    expect(bladeText).toContain(hostile.state);
    expect(await page.locator('#sessions tbody').innerText()).toContain(hostile.username);
    await expect.poll(() => page.locator('#history tbody').innerText()).toContain(hostile.lastError);
    // Nothing was parsed as markup, nothing ran.
    expect(await page.locator('#content img, #content script, #content svg, #content iframe').count()).toBe(0);
    await page.hover('#blades .state');
    expect(await page.evaluate(() => (window as unknown as { __xss?: number }).__xss)).toBeUndefined();
    expect(dialogs).toEqual([]);
    // An unknown state gets the neutral badge: the class list never comes from the data.
    expect(await page.locator('#blades .state').getAttribute('class')).toBe('state');
  });
});
