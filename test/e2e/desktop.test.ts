/**
 * The desktop as a person works in it, end to end: a real agent (dist/agent/main.js) starting real Xvnc with the
 * default session (IceWM and an xterm) as vdtest71…77, the real controller (REST API, proxy, bundled viewer), and
 * headless Debian Chromium. What the desktop holds is read back with X clients run inside it as its user (xdotool,
 * xclip, xdpyinfo: test/helpers/desktop-x.ts). Nothing is mocked. Screenshots go to test-artifacts/.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildApp, type ControllerApp } from '../../controller/app.js';
import { parseConfig } from '../../controller/config.js';
import { createLogger } from '../../controller/log.js';
import { SqliteStore } from '../../controller/store/sqlite-store.js';
import { alive, startAgent, waitFor, type AgentProcess } from '../helpers/agent-process.js';
import { launchChromium } from '../helpers/browser.js';
import { makePki } from '../helpers/certs.js';
import { desktopOf, runInDesktop, screenSize, windowGeometry, type Desktop } from '../helpers/desktop-x.js';
import { testUser } from '../helpers/users.js';

const API_KEY = 'e2e-desktop-api-key-0123456789abcdef';
// Each test starts a desktop and a browser page; on a loaded 2-core machine one can take 30 s (events, not sleeps).
const ARTIFACTS = new URL('../../test-artifacts/', import.meta.url);

let agent: AgentProcess;
let store: SqliteStore;
let ctl: ControllerApp;
let base: string;
let browser: Browser;
const contexts: BrowserContext[] = [];
let dataDir: string;
const xvncPids = new Set<number>();
const tempDirs: string[] = [];

async function api(method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${API_KEY}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
    ...(body !== undefined && { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null };
}

/** Opens (or gets back) the user's desktop and returns its viewer URL and the desktop to read back from. */
async function openDesktop(user: string, extra: Record<string, unknown> = {}): Promise<{ id: string; viewerUrl: string; desktop: Desktop }> {
  const res = await api('POST', '/api/v1/sessions', { username: user, ...extra });
  expect([200, 201], JSON.stringify(res.json)).toContain(res.status);
  const record = await store.getSession(res.json.id);
  if (!record?.pid || record.display === null || record.display === undefined) throw new Error('session has no Xvnc');
  xvncPids.add(record.pid);
  return { id: res.json.id, viewerUrl: res.json.viewerUrl, desktop: desktopOf(user, record.display, record.pid) };
}

async function newPage(viewport = { width: 1024, height: 768 }): Promise<{ page: Page; errors: string[] }> {
  const context = await browser.newContext({ viewport, permissions: ['clipboard-read', 'clipboard-write'] });
  contexts.push(context);
  const page = await context.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  return { page, errors };
}

async function connected(page: Page, viewerUrl: string): Promise<void> {
  await page.goto(viewerUrl);
  await page.locator('#status[data-state="connected"][data-connections="1"]').waitFor({ timeout: 15_000 });
}

function saveArtifact(name: string, png: Buffer): void {
  mkdirSync(ARTIFACTS, { recursive: true });
  writeFileSync(new URL(name, ARTIFACTS), png);
}

/** The size of the area the viewer gives the desktop (#screen), in CSS pixels = device pixels here. */
async function screenArea(page: Page): Promise<{ width: number; height: number }> {
  return page.locator('#screen').evaluate((el) => ({ width: el.clientWidth, height: el.clientHeight }));
}

/** Page coordinates of a desktop pixel, from the canvas's place and scale on the page. */
async function pagePoint(page: Page, x: number, y: number): Promise<{ x: number; y: number }> {
  const canvas = page.locator('#screen canvas');
  const box = await canvas.boundingBox();
  const fb = await canvas.evaluate((c: HTMLCanvasElement) => ({ width: c.width, height: c.height }));
  if (!box) throw new Error('no canvas');
  return { x: box.x + (x * box.width) / fb.width, y: box.y + (y * box.height) / fb.height };
}

/** The width IceWM gives its work area (_NET_WORKAREA): it sets it again each time it has handled a screen size change. */
async function workAreaWidth(d: Desktop): Promise<number | undefined> {
  const { stdout } = await runInDesktop(d, ['xprop', '-root', '_NET_WORKAREA']).catch(() => ({ stdout: '' }));
  const m = /=\s*-?\d+,\s*-?\d+,\s*(\d+),/.exec(stdout);
  return m ? Number(m[1]) : undefined;
}

/**
 * Waits until the viewer's desktop is settled and the session's xterm is mapped and managed (IceWM has put a frame
 * around it), and returns where the xterm is.
 *
 * Settled means the desktop has taken the page's size (the viewer asks for it on connecting) and IceWM has handled
 * that change. IceWM moves windows when the screen changes size (a terminal at 45,64 on the 1280x800 desktop Xvnc
 * starts with is at 5,24 once the desktop is 1024x736), so a position read before that is one the window is about
 * to leave. The resize itself is a counter (#status[data-resizes]); IceWM's handling of it shows as its work area
 * taking the new width.
 */
async function terminal(d: Desktop, page: Page): Promise<{ x: number; y: number; width: number; height: number }> {
  const area = await screenArea(page);
  await expect.poll(() => screenSize(d), { timeout: 15_000 }).toEqual(area);
  await expect.poll(() => workAreaWidth(d), { timeout: 15_000 }).toBe(area.width);
  let g: Awaited<ReturnType<typeof windowGeometry>>;
  await waitFor(async () => {
    g = await windowGeometry(d, 'XTerm').catch(() => undefined);
    const wm = await runInDesktop(d, ['xprop', '-root', '_NET_SUPPORTING_WM_CHECK']).catch(() => ({ stdout: '' }));
    return g !== undefined && wm.stdout.includes('window id');
  }, 'the terminal and the window manager', 15_000);
  return g!;
}

async function clipboardOf(d: Desktop): Promise<string> {
  return (await runInDesktop(d, ['xclip', '-selection', 'clipboard', '-o'], { timeoutMs: 3000 }).catch(() => ({ stdout: '' }))).stdout;
}

beforeAll(async () => {
  const pki = makePki();
  agent = await startAgent({ pki });
  dataDir = mkdtempSync(join(tmpdir(), 'vd-e2e-desktop-'));
  const config = parseConfig([
    '--listen', '127.0.0.1:0',
    '--blade', `blade-desktop=127.0.0.1:${agent.port}`,
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
  await waitFor(async () => (await api('GET', '/api/v1/blades')).json?.blades?.[0]?.state === 'UP', 'the blade to be UP', 15_000);
  browser = await launchChromium();
}, 60_000);

afterEach(async () => {
  for (const c of contexts.splice(0)) await c.close();
  for (const s of (await api('GET', '/api/v1/sessions').catch(() => ({ json: null }))).json?.sessions ?? []) {
    await api('DELETE', `/api/v1/sessions/${s.id}`).catch(() => undefined);
  }
});

afterAll(async () => {
  await browser?.close();
  await ctl?.close();
  await store?.close();
  await agent?.stop();
  for (const pid of xvncPids) if (alive(pid)) process.kill(pid, 'SIGKILL');
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
}, 60_000);

describe('the default desktop session', { timeout: 60_000 }, () => {
  it('has a window manager: the terminal can be moved by dragging its title bar with the mouse', async () => {
    const { viewerUrl, desktop } = await openDesktop(testUser(71));
    const { page } = await newPage();
    await connected(page, viewerUrl);
    const before = await terminal(desktop, page);
    // IceWM's title bar is just above the client area; grab it a little right of the window's left edge.
    const from = await pagePoint(page, before.x + 120, before.y - 8);
    await page.mouse.move(from.x, from.y);
    await page.mouse.down();
    await page.mouse.move(from.x + 100, from.y + 60, { steps: 8 });
    await page.mouse.move(from.x + 200, from.y + 120, { steps: 8 });
    await page.mouse.up();
    let after = before;
    await waitFor(async () => {
      after = (await windowGeometry(desktop, 'XTerm')) ?? before;
      return after.x !== before.x || after.y !== before.y;
    }, 'the terminal to move', 10_000).catch(() => undefined);
    saveArtifact('desktop-window-moved.png', await page.screenshot());
    expect(Math.abs(after.x - before.x - 200), `moved from ${before.x},${before.y} to ${after.x},${after.y}`).toBeLessThanOrEqual(4);
    expect(Math.abs(after.y - before.y - 120), `moved from ${before.x},${before.y} to ${after.x},${after.y}`).toBeLessThanOrEqual(4);
  });

  it('speaks UTF-8: äöü€ typed in the browser reach the terminal\'s shell as those characters', async () => {
    const user = testUser(72);
    const { viewerUrl, desktop } = await openDesktop(user);
    const dir = mkdtempSync(join(tmpdir(), 'vd-typed-'));
    tempDirs.push(dir);
    chownSync(dir, Number(execFileSync('id', ['-u', user], { encoding: 'utf8' })), -1);
    chmodSync(dir, 0o700);
    const { page } = await newPage();
    await connected(page, viewerUrl);
    const t = await terminal(desktop, page);
    const inside = await pagePoint(page, t.x + t.width / 2, t.y + t.height / 2);
    await page.mouse.click(inside.x, inside.y);
    await page.keyboard.type(`printf '%s\\n' '`);
    // One key press per character, as a German keyboard sends them (playwright's keyboard knows only the US layout and
    // would send text input, which a canvas never receives).
    const cdp = await page.context().newCDPSession(page);
    for (const ch of 'äöü€') {
      await cdp.send('Input.dispatchKeyEvent', { type: 'keyDown', key: ch, text: ch, unmodifiedText: ch });
      await cdp.send('Input.dispatchKeyEvent', { type: 'keyUp', key: ch });
    }
    await page.keyboard.type(`' > ${dir}/typed`);
    await page.keyboard.press('Enter');
    await waitFor(() => existsSync(join(dir, 'typed')) && readFileSync(join(dir, 'typed'), 'utf8').endsWith('\n'), 'the shell to write the file', 10_000)
      .catch(() => undefined);
    saveArtifact('desktop-utf8-typed.png', await page.screenshot());
    expect(readFileSync(join(dir, 'typed'), 'utf8')).toBe('äöü€\n');
  });
});

describe('the clipboard, both ways, UTF-8', { timeout: 60_000 }, () => {
  it('text copied in the desktop arrives in the page, and text pasted in the browser arrives in the desktop', async () => {
    const { viewerUrl, desktop } = await openDesktop(testUser(73));
    const { page, errors } = await newPage();
    await connected(page, viewerUrl);
    await terminal(desktop, page);

    // Desktop → browser: a program in the desktop copies text (xclip, as the user).
    const fromDesktop = 'Grüße aus dem Desktop: äöü € ✓ 漢字';
    await runInDesktop(desktop, ['xclip', '-selection', 'clipboard', '-i'], { input: fromDesktop });
    await expect.poll(() => page.locator('#clipboard-text').inputValue(), { timeout: 10_000 }).toBe(fromDesktop);
    // In a secure context (127.0.0.1 is one) it also reaches the browser's own clipboard.
    await expect.poll(() => page.evaluate(() => navigator.clipboard.readText()), { timeout: 5_000 }).toBe(fromDesktop);

    // Browser → desktop, through the clipboard panel.
    const viaPanel = 'vom Browser über das Feld: ßàé €';
    await page.click('#clipboard');
    await expect(page.locator('#clipboard-panel').isVisible()).resolves.toBe(true);
    await page.fill('#clipboard-text', viaPanel);
    await expect.poll(() => clipboardOf(desktop), { timeout: 10_000 }).toBe(viaPanel);
    await page.keyboard.press('Escape');
    await expect(page.locator('#clipboard-panel').isVisible()).resolves.toBe(false);

    // Browser → desktop, through the browser's clipboard: copied elsewhere, then the pointer comes back to the desktop.
    const viaClipboard = 'aus der Zwischenablage: ÄÖÜ € ✓';
    await page.evaluate((t) => navigator.clipboard.writeText(t), viaClipboard);
    await page.mouse.move(5, 5);
    const centre = await pagePoint(page, 400, 300);
    await page.mouse.move(centre.x, centre.y, { steps: 3 });
    await expect.poll(() => clipboardOf(desktop), { timeout: 10_000 }).toBe(viaClipboard);
    saveArtifact('desktop-clipboard.png', await page.screenshot());
    expect(errors).toEqual([]);
  });

  it('refuses a paste larger than the 256 KiB a clipboard may carry, and says so', async () => {
    const { viewerUrl, desktop } = await openDesktop(testUser(74));
    const { page } = await newPage();
    await connected(page, viewerUrl);
    await runInDesktop(desktop, ['xclip', '-selection', 'clipboard', '-i'], { input: 'before' });
    await expect.poll(() => page.locator('#clipboard-text').inputValue(), { timeout: 10_000 }).toBe('before');
    await page.click('#clipboard');
    await page.fill('#clipboard-text', '€'.repeat(100_000)); // 300,000 UTF-8 bytes
    await expect.poll(() => page.locator('#clipboard-note').textContent(), { timeout: 5_000 }).toMatch(/^Not sent: .*256 KiB/);
    expect(await clipboardOf(desktop)).toBe('before');
  });
});

describe('the desktop size', { timeout: 60_000 }, () => {
  it('follows the browser window by default, and stays put in scale mode', async () => {
    const { viewerUrl, desktop } = await openDesktop(testUser(75));
    const { page } = await newPage({ width: 1024, height: 768 });
    await connected(page, viewerUrl);
    await expect.poll(async () => screenSize(desktop), { timeout: 10_000 }).toEqual(await screenArea(page));

    await page.setViewportSize({ width: 900, height: 640 });
    const smaller = await screenArea(page);
    expect(smaller.width).toBe(900);
    await expect.poll(async () => screenSize(desktop), { timeout: 10_000 }).toEqual(smaller);

    // Scale mode: the window changes, the desktop does not; it is drawn scaled into the window instead.
    await page.click('#scale');
    await expect(page.locator('#scale').getAttribute('aria-pressed')).resolves.toBe('true');
    const resizes = await page.locator('#status').getAttribute('data-resizes');
    await page.setViewportSize({ width: 700, height: 500 });
    await expect.poll(async () => (await page.locator('#screen canvas').boundingBox())?.width, { timeout: 5_000 }).toBeLessThanOrEqual(700);
    // Nothing to wait for when nothing may happen: give a resize request (noVNC sends one within 100 ms) time to show.
    await new Promise((r) => setTimeout(r, 700));
    expect(await screenSize(desktop)).toEqual(smaller);
    expect(await page.locator('#status').getAttribute('data-resizes')).toBe(resizes);
    saveArtifact('desktop-scaled.png', await page.screenshot());

    // Back to following the window: the desktop takes the window's size again.
    await page.click('#scale');
    await expect.poll(async () => screenSize(desktop), { timeout: 10_000 }).toEqual(await screenArea(page));
  });

  it('a second viewer takes the desktop to its window size, and the first one scales instead of fighting back', async () => {
    const user = testUser(76);
    const first = await openDesktop(user);
    const a = await newPage({ width: 1024, height: 768 });
    await connected(a.page, first.viewerUrl);
    await expect.poll(async () => screenSize(first.desktop), { timeout: 10_000 }).toEqual(await screenArea(a.page));

    const second = await openDesktop(user); // the same desktop, a fresh token
    expect(second.id).toBe(first.id);
    const b = await newPage({ width: 800, height: 600 });
    await connected(b.page, second.viewerUrl);
    const bArea = await screenArea(b.page);
    await expect.poll(async () => screenSize(first.desktop), { timeout: 10_000 }).toEqual(bArea);
    await expect.poll(() => a.page.locator('#scale').getAttribute('aria-pressed'), { timeout: 5_000 }).toBe('true');
    await expect(a.page.locator('#status').textContent()).resolves.toContain('Another viewer resized the desktop');

    // The first viewer's window changes: the desktop keeps the second viewer's size.
    await a.page.setViewportSize({ width: 1100, height: 700 });
    await new Promise((r) => setTimeout(r, 700));
    expect(await screenSize(first.desktop)).toEqual(bArea);
    // The second viewer's window changes: the desktop follows it.
    await b.page.setViewportSize({ width: 860, height: 620 });
    await expect.poll(async () => screenSize(first.desktop), { timeout: 10_000 }).toEqual(await screenArea(b.page));
  });

  it('POST /api/v1/sessions starts a desktop at the requested geometry', async () => {
    const { desktop } = await openDesktop(testUser(77), { geometry: '1000x700' });
    expect(await screenSize(desktop)).toEqual({ width: 1000, height: 700 });
  });

  it('refuses a bad geometry with 400 before anything starts', async () => {
    const user = testUser(78);
    for (const geometry of ['99x99', '9000x700', '1000x100', '1000X700', '1000x700 ', 'ax b', '1000x700;id', '', 1000]) {
      const res = await api('POST', '/api/v1/sessions', { username: user, geometry });
      expect(res.status, String(geometry)).toBe(400);
      expect(res.json.error.code, String(geometry)).toBe('VD_ERR_BAD_REQUEST');
    }
    expect((await api('GET', '/api/v1/sessions?state=all')).json.sessions.filter((s: { username: string }) => s.username === user)).toEqual([]);
  });
});

describe('accessibility', { timeout: 60_000 }, () => {
  it('axe-core finds no serious or critical issue on the viewer, its toolbar and its panels', async () => {
    const { viewerUrl } = await openDesktop(testUser(79));
    const { page } = await newPage();
    await connected(page, viewerUrl);
    const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
    // Injected through the DevTools protocol, which the page's CSP does not govern (the page itself allows no inline script).
    await page.evaluate(axeSource);
    const findings = async (state: string) => {
      const result = await page.evaluate(async () => {
        const r = await (window as unknown as { axe: { run: (ctx: Document) => Promise<{ violations: Array<{ id: string; impact: string; nodes: Array<{ target: string[] }> }> }> } })
          .axe.run(document);
        return r.violations.map((v) => ({ id: v.id, impact: v.impact, targets: v.nodes.map((n) => n.target.join(' ')) }));
      });
      return result.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => ({ state, ...v }));
    };
    const all = [...await findings('toolbar')];
    await page.click('#keys');
    all.push(...await findings('keys panel'));
    await page.click('#clipboard');
    all.push(...await findings('clipboard panel'));
    saveArtifact('desktop-toolbar-panels.png', await page.screenshot());
    await page.keyboard.press('Escape');
    await page.click('#hide');
    all.push(...await findings('toolbar hidden'));
    expect(all).toEqual([]);
  });

  it('the toolbar works from the keyboard: Ctrl+Alt+Shift leaves the desktop, Tab and Enter reach every control', async () => {
    const { viewerUrl } = await openDesktop(testUser(80));
    const { page } = await newPage();
    await connected(page, viewerUrl);
    await page.locator('#screen canvas').click();
    await page.keyboard.down('Control');
    await page.keyboard.down('Alt');
    await page.keyboard.down('Shift');
    await page.keyboard.up('Shift');
    await page.keyboard.up('Alt');
    await page.keyboard.up('Control');
    await expect(page.evaluate(() => document.activeElement?.id)).resolves.toBe('hide');
    // Collapse and bring back the toolbar with the keyboard alone.
    await page.keyboard.press('Enter');
    await expect(page.locator('#hide').getAttribute('aria-expanded')).resolves.toBe('false');
    await expect(page.locator('#cad').isVisible()).resolves.toBe(false);
    await page.keyboard.press('Enter');
    await expect(page.locator('#cad').isVisible()).resolves.toBe(true);
    // The clipboard panel opens from the keyboard with the focus in its text field, and Escape closes it.
    await page.focus('#clipboard');
    await page.keyboard.press('Enter');
    await expect(page.evaluate(() => document.activeElement?.id)).resolves.toBe('clipboard-text');
    await page.keyboard.press('Escape');
    await expect(page.locator('#clipboard-panel').isVisible()).resolves.toBe(false);
    await expect(page.locator('#clipboard').getAttribute('aria-expanded')).resolves.toBe('false');
  });
});
