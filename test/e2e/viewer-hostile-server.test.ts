/**
 * The viewer page in headless Chromium against desktops that misbehave in ways the real proxy never produces (it
 * always offers security type None): /websockify on the test server is a scripted RFB server on a real WebSocket
 * (ws, same origin), standing in for the proxy. (Playwright's routeWebSocket cannot be used: noVNC refuses its mock
 * WebSocket class.) The pages, noVNC and the reconnect endpoint are the real ones (test/helpers/web-app.ts: registerWeb
 * with a real SqliteStore and TokenService).
 *
 * - A server that asks for VNC authentication gets an error message, never a password prompt, and no retries.
 * - A desktop name full of markup (threat 7, noVNC CVE-2017-18635) is shown as text and runs nothing.
 * - A connection that closes while the page is still decoding a picture: the bytes queued behind it are dropped
 *   without an error (stock noVNC 1.7 hands them to its disconnected RFB, which logs "Got data while disconnected").
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { Duplex } from 'node:stream';
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
/** What the scripted server does with the next /websockify connection (`socket` is the TCP connection under it). */
let script: (ws: WebSocket, socket: Duplex) => void = (ws) => ws.close();
let sockets = 0;

beforeAll(async () => {
  web = await startWebApp();
  base = `http://127.0.0.1:${web.port}`;
  const wss = new WebSocketServer({ noServer: true });
  web.app.server.on('upgrade', (req, socket, head) => {
    sockets += 1;
    if (!req.url?.startsWith('/websockify?token=')) return socket.destroy();
    wss.handleUpgrade(req, socket, head, (ws) => script(ws, socket));
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

const u16 = (n: number) => Buffer.from([n >> 8, n & 255]);
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};

/** Tight's compact length: 7 bits a byte, low bits first, the high bit set while more follow. */
function compactLength(n: number): Buffer {
  if (n < 0x80) return Buffer.of(n);
  if (n < 0x4000) return Buffer.of((n & 0x7f) | 0x80, n >> 7);
  return Buffer.of((n & 0x7f) | 0x80, ((n >> 7) & 0x7f) | 0x80, n >> 14);
}

/** A FramebufferUpdate of one Tight rectangle with JPEG compression (control byte 0x90), `w`×`h` at 0,0. */
function jpegUpdate(jpeg: Buffer, w: number, h: number): Buffer {
  return Buffer.concat([Buffer.of(0, 0), u16(1), u16(0), u16(0), u16(w), u16(h), u32(7), Buffer.of(0x90), compactLength(jpeg.length), jpeg]);
}

/** A FramebufferUpdate of one raw pixel. */
const ONE_PIXEL_UPDATE = Buffer.concat([Buffer.of(0, 0), u16(1), u16(0), u16(0), u16(1), u16(1), u32(0), Buffer.of(0, 0, 255, 0)]);

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
    expect(await v.page.locator('img').count()).toBe(0);
    // The only inline script is the one the page was served with (the early WebSocket), none from the name.
    const inline = await v.page.locator('script:not([src])').evaluateAll((els) => els.map((e) => e.textContent ?? ''));
    expect(inline).toHaveLength(1);
    expect(inline[0]).toContain('vdEarlySocket');
    expect(inline[0]).not.toContain('__xss');
    expect(await v.page.evaluate(() => (window as unknown as { __xss?: number }).__xss)).toBeUndefined();
    expect(v.dialogs).toEqual([]);
  });

  it('drops the bytes queued behind a picture still being decoded when the connection closes, without an error', async () => {
    const v = await openViewer();
    const errors: string[] = [];
    v.page.on('pageerror', (e) => errors.push(e.message));
    v.page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    // A JPEG of noise, made by the browser itself: a screenshot of a canvas of random pixels.
    const [W, H] = [1280, 960];
    await v.page.setViewportSize({ width: W, height: H });
    await v.page.setContent(`<body style="margin:0"><canvas width="${W}" height="${H}"></canvas></body>`);
    await v.page.evaluate(() => {
      const canvas = document.querySelector('canvas')!;
      const ctx = canvas.getContext('2d')!;
      const image = ctx.createImageData(canvas.width, canvas.height);
      for (let i = 0; i < image.data.length; i += 65536) crypto.getRandomValues(image.data.subarray(i, i + 65536));
      for (let i = 3; i < image.data.length; i += 4) image.data[i] = 255;
      ctx.putImageData(image, 0, 0);
    });
    const jpeg = await v.page.locator('canvas').screenshot({ type: 'jpeg', quality: 80 });
    // Every image the page creates, so the test can wait for noVNC's picture to finish decoding (an event).
    await v.page.addInitScript(() => {
      const images: HTMLImageElement[] = [];
      (window as unknown as { __images: HTMLImageElement[] }).__images = images;
      const Native = window.Image;
      window.Image = function Image(width?: number, height?: number) {
        const img = new Native(width, height);
        images.push(img);
        return img;
      } as unknown as typeof window.Image;
    });
    // The desktop's first update is the picture, then a second update queued behind it, then it hangs up: all in
    // one go, so the close reaches the page while the picture is still being decoded.
    script = (ws, socket) => {
      scriptedServer([1], SECURITY_RESULT_OK, serverInitWithName('late bytes'))(ws);
      let step = 0;
      ws.on('message', () => {
        step += 1;
        if (step !== 3) return;
        // Hung up as a dropped link does (no closing handshake), right behind the bytes.
        ws.send(Buffer.concat([jpegUpdate(jpeg, W, H), ONE_PIXEL_UPDATE]), () => socket.end());
      });
    };
    await v.page.goto(viewerUrl());
    // The connection completed, then dropped (the page asks the reconnect endpoint, which refuses a made-up session).
    await expect.poll(() => v.reconnects, { timeout: 10_000 }).toBeGreaterThan(0);
    const decoded = await v.page.evaluate(async () => {
      const images = (window as unknown as { __images: HTMLImageElement[] }).__images;
      await Promise.all(images.map((img) => new Promise((resolve) => {
        if (img.complete) return resolve(undefined);
        img.addEventListener('load', resolve);
        img.addEventListener('error', resolve);
      })));
      // noVNC resumes reading in a promise callback after the image's load event: let it run.
      await new Promise((resolve) => setTimeout(resolve, 0));
      return images.length;
    });
    expect(decoded).toBeGreaterThan(0);
    // The browser's own line for the refused reconnect is expected; noVNC's "Got data while disconnected" is not.
    expect(errors.filter((e) => !/Failed to load resource/.test(e))).toEqual([]);
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
