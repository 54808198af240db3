/**
 * The viewer page in headless Chromium against desktops that misbehave in ways the real proxy never produces (it
 * always offers security type None): /websockify on the test server is a scripted RFB server on a real WebSocket
 * (ws, same origin), standing in for the proxy. (Playwright's routeWebSocket cannot be used: noVNC refuses its mock
 * WebSocket class.) The pages, noVNC and the reconnect endpoint are the real ones (test/helpers/web-app.ts: registerWeb
 * with a real SqliteStore and TokenService).
 *
 * - A server that asks for VNC authentication gets an error message, never a password prompt, and no retries.
 * - A desktop name full of markup (threat 7, noVNC CVE-2017-18635) is shown as text and runs nothing.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { launchChromium } from '../helpers/browser.js';
import { WebSocketServer, type WebSocket } from 'ws';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { newReconnectKey, newToken } from '../../controller/tokens/secrets.js';
import { startWebApp, type WebApp } from '../helpers/web-app.js';

let web: WebApp;
let base: string;
let browser: Browser;
let context: BrowserContext | undefined;
/** What the scripted server does with the next /websockify connection. */
let script: (ws: WebSocket) => void = (ws) => ws.close();
let sockets = 0;

beforeAll(async () => {
  web = await startWebApp();
  base = `http://127.0.0.1:${web.port}`;
  const wss = new WebSocketServer({ noServer: true });
  web.app.server.on('upgrade', (req, socket, head) => {
    sockets += 1;
    if (!req.url?.startsWith('/websockify?token=')) return socket.destroy();
    wss.handleUpgrade(req, socket, head, (ws) => script(ws));
  });
  browser = await launchChromium();
});

afterEach(async () => {
  await context?.close();
  context = undefined;
});

afterAll(async () => {
  await browser?.close();
  await web?.close();
});

/**
 * A scripted RFB 3.8 server: greets, offers `securityTypes`, answers the client's choice with `afterChoice` (a VNC
 * auth challenge, or SecurityResult OK for None) and its ClientInit with `serverInit`.
 */
function scriptedServer(securityTypes: number[], afterChoice: Buffer, serverInit?: Buffer): (ws: WebSocket) => void {
  return (ws) => {
    let step = 0;
    ws.send(Buffer.from('RFB 003.008\n', 'latin1'));
    ws.on('message', () => {
      step += 1;
      if (step === 1) ws.send(Buffer.from([securityTypes.length, ...securityTypes]));
      else if (step === 2) ws.send(afterChoice);
      else if (step === 3 && serverInit) ws.send(serverInit);
    });
  };
}

const SECURITY_RESULT_OK = Buffer.from([0, 0, 0, 0]);

function serverInitWithName(name: string): Buffer {
  const nameBytes = Buffer.from(name, 'utf8');
  const b = Buffer.alloc(24 + nameBytes.length);
  b.writeUInt16BE(320, 0);
  b.writeUInt16BE(200, 2);
  // 32 bpp, depth 24, little endian, true colour, max 255 each, shifts 16/8/0.
  Buffer.from([32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]).copy(b, 4);
  b.writeUInt32BE(nameBytes.length, 20);
  nameBytes.copy(b, 24);
  return b;
}

async function openViewer(): Promise<{ page: Page; dialogs: string[]; reconnects: number }> {
  context = await browser.newContext();
  const page = await context.newPage();
  const dialogs: string[] = [];
  page.on('dialog', (d) => {
    dialogs.push(d.message());
    void d.dismiss();
  });
  const counter = { reconnects: 0 };
  page.on('request', (r) => {
    if (r.url().endsWith('/viewer/reconnect')) counter.reconnects += 1;
  });
  return { page, dialogs, get reconnects() { return counter.reconnects; } };
}

function viewerUrl(): string {
  return `${base}/viewer/#session=${randomUUID()}&token=${newToken()}&key=${newReconnectKey()}`;
}

describe('the viewer against a misbehaving desktop', () => {
  it('never prompts for a password when a server asks for VNC authentication', async () => {
    const v = await openViewer();
    script = scriptedServer([2], randomBytes(16)); // VNC authentication: a 16-byte challenge
    await v.page.goto(viewerUrl());
    await v.page.locator('#status[data-state="error"]').waitFor({ timeout: 10_000 });
    expect(await v.page.locator('#screen .notice').textContent()).toMatch(/asked for a password/);
    expect(v.dialogs).toEqual([]);
    expect(await v.page.locator('input').count()).toBe(0);
    // A misconfiguration is not retried (a retry would ask the reconnect endpoint for another token).
    expect(v.reconnects).toBe(0);
  });

  it('shows a desktop name full of markup as text and runs none of it', async () => {
    const name = '<img src=x onerror="window.__xss=1;alert(1)"></title><script>window.__xss=2</script>';
    const v = await openViewer();
    script = scriptedServer([1], SECURITY_RESULT_OK, serverInitWithName(name));
    await v.page.goto(viewerUrl());
    await v.page.locator('#status[data-state="connected"]').waitFor({ timeout: 10_000 });
    expect(await v.page.title()).toBe(`${name} – Desktop`);
    expect(await v.page.locator('img, script:not([src])').count()).toBe(0);
    expect(await v.page.evaluate(() => (window as unknown as { __xss?: number }).__xss)).toBeUndefined();
    expect(v.dialogs).toEqual([]);
  });

  it('explains an incomplete link instead of connecting anywhere', async () => {
    const v = await openViewer();
    const before = sockets;
    await v.page.goto(`${base}/viewer/`);
    await v.page.locator('#status[data-state="error"]').waitFor({ timeout: 10_000 });
    expect(await v.page.locator('#screen .notice').textContent()).toMatch(/link is incomplete/);
    expect(sockets).toBe(before);
    expect(v.reconnects).toBe(0);
  });
});
