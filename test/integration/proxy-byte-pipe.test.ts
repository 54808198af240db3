/**
 * The proxy's byte pipe under load: backpressure both ways with bounded memory per connection, and every byte
 * delivered intact and in order whatever the peers' speeds. (The downstream path reuses one read buffer per
 * connection, so a reuse bug would show here as corrupted or reordered bytes.)
 *
 * The desktop is the fake VNC server in its `quiet` mode: after the RFB handshake the test drives the server's socket
 * itself (streams a pattern, stops reading). The browser is a `ws` client whose socket the test pauses and resumes.
 * authorize() is a plain Map standing in for the controller's token store (test/helpers/map-proxy.ts).
 *
 * The last test goes the production way, through the agent's real listener and relay over mutual TLS to a Unix
 * socket, where every read the proxy gets is one TLS record (at most 16 KiB). Only the agent's session table is a
 * stand-in naming the fake server's socket: a real Xvnc cannot stream a pattern the test can check byte for byte.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { Server as GrpcServer } from '@grpc/grpc-js';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig as parseAgentConfig } from '../../agent/config.js';
import { listenAgentPort, type AgentPort } from '../../agent/listener.js';
import { DesktopRelay } from '../../agent/relay/desktop-relay.js';
import { createAgentCredentials } from '../../controller/agent-client/agent-client.js';
import { openDesktopRelay } from '../../controller/agent-client/desktop-relay.js';
import type { ProxyTarget } from '../../controller/proxy/index.js';
import { makePki, type Pki } from '../helpers/certs.js';
import { waitFor } from '../helpers/agent-process.js';
import { startFakeVncServer, type FakeVncServer } from '../helpers/fake-vnc-server.js';
import { stalled } from '../helpers/stalled.js';
import { tcpDesktop } from '../helpers/tcp-desktop.js';
import { startMapProxy, type MapProxy } from '../helpers/map-proxy.js';
import { isRefused, openWebSocket, type RfbWsClient } from '../helpers/rfb-ws-client.js';

const MAX_READ = 256 * 1024;
/** WebSocket frame header for a payload of up to 2^64 bytes, server to client (unmasked). */
const MAX_HEADER = 10;
const TOTAL = 192 * 1024 * 1024;
/** The stream's bytes: a random block repeated; its odd length keeps block and read boundaries from lining up. */
const BLOCK = randomBytes(1024 * 1024 + 7);

let mp: MapProxy;
let fake: FakeVncServer;
const targets = new Map<string, ProxyTarget>();
/** The relay path: an agent port (mTLS) whose relay leads every session to `relayFake`'s Unix socket. */
let pki: Pki;
let relayDir: string;
let relayFake: FakeVncServer;
let agentPort: AgentPort;

/** `n` bytes of the stream from `offset` (one slice of BLOCK, no copy). */
function streamSlice(offset: number, n: number): Buffer {
  const at = offset % BLOCK.length;
  return BLOCK.subarray(at, Math.min(BLOCK.length, at + n));
}

/**
 * Writes the first `total` bytes of the stream into `desktop` as fast as it takes them, in `chunk`-byte writes, and
 * waits for 'drain' whenever it pushes back. Returns how many bytes have been written so far.
 */
function streamInto(desktop: Duplex, total: number, chunk: number): () => number {
  let sent = 0;
  const pump = () => {
    while (sent < total && !desktop.destroyed) {
      const slice = streamSlice(sent, Math.min(chunk, total - sent));
      sent += slice.length;
      if (!desktop.write(slice)) return;
    }
  };
  desktop.on('drain', pump);
  pump();
  return () => sent;
}

/** Checks arriving chunks against the stream; `bad` is the first offset that differed, or -1. */
function verifier() {
  const v = {
    offset: 0,
    bad: -1,
    push(chunk: Buffer) {
      let i = 0;
      while (i < chunk.length) {
        const want = streamSlice(v.offset, chunk.length - i);
        if (v.bad < 0 && !chunk.subarray(i, i + want.length).equals(want)) v.bad = v.offset;
        i += want.length;
        v.offset += want.length;
      }
    },
  };
  return v;
}

async function connect(viaRelay = false): Promise<{ browser: RfbWsClient; desktop: NonNullable<FakeVncServer['lastSocket']>; proxySide: Duplex }> {
  const token = randomBytes(16).toString('hex');
  const server = viaRelay ? relayFake : fake;
  let desktop = tcpDesktop('127.0.0.1', fake.port);
  if (viaRelay) {
    // The controller's own relay dialer with the TLS options its agent credentials give for 127.0.0.1.
    const tls = createAgentCredentials({ ca: pki.caCert, cert: pki.clientCert, key: pki.clientKey }).forHost('127.0.0.1').relayTls;
    desktop = (reads, timeoutMs) => openDesktopRelay({ host: '127.0.0.1', port: agentPort.port, tls, timeoutMs, onread: reads,
      sessionId: randomUUID(), blade: 'b' });
  }
  const before = server.lastSocket;
  targets.set(token, { sessionId: `s-${token.slice(0, 8)}`, username: 'vdtest33', blade: 'b', desktop, password: 'unused', tokenHash: token });
  const browser = await openWebSocket(`${mp.base}/websockify?token=${token}`);
  if (isRefused(browser)) throw new Error(`refused ${browser.status}`);
  await browser.handshakeNone();
  // From here on the test reads the messages itself (the helper would concatenate 192 MiB).
  browser.ws.removeAllListeners('message');
  await waitFor(() => server.lastSocket !== null && server.lastSocket !== before, 'the desktop\'s connection', 30_000);
  return { browser, desktop: server.lastSocket!, proxySide: mp.browserSockets.at(-1)! };
}

beforeAll(async () => {
  const log = pino({ level: 'silent' });
  fake = await startFakeVncServer('quiet');
  mp = await startMapProxy(targets, { log, maxReadBytes: MAX_READ, maxPayload: 64 * 1024 });
  pki = makePki();
  relayDir = mkdtempSync(join(tmpdir(), 'vd-byte-pipe-'));
  relayFake = await startFakeVncServer('quiet', join(relayDir, 'vnc.sock'));
  const config = parseAgentConfig(['--listen', '127.0.0.1:0', '--tls-cert', pki.serverCert, '--tls-key', pki.serverKey, '--tls-ca', pki.caCert]);
  const sessions = { desktopSocket: () => join(relayDir, 'vnc.sock'), on: () => sessions };
  const relay = new DesktopRelay({ sessions: sessions as never, log, handshakeTimeoutMs: config.relayHandshakeTimeoutMs,
    maxQueuedBytes: config.relayMaxQueuedBytes });
  agentPort = await listenAgentPort({ config, grpc: new GrpcServer(), relay, log });
});

afterAll(async () => {
  await mp?.close();
  await fake?.close();
  await relayFake?.close();
  await agentPort?.close();
  if (relayDir) rmSync(relayDir, { recursive: true, force: true });
  if (pki) rmSync(pki.dir, { recursive: true, force: true });
});

describe('byte pipe', () => {
  it('downstream: a browser that stops reading stalls the desktop, the proxy holds at most one read, and every byte arrives in order', async () => {
    const { browser, desktop, proxySide } = await connect();
    browser.ws.pause();
    const sent = streamInto(desktop, TOTAL, 256 * 1024);

    const stuckAt = await stalled(sent);
    expect(stuckAt).toBeLessThan(TOTAL); // backpressure reached the desktop
    expect(proxySide.writableLength).toBeLessThanOrEqual(MAX_READ + MAX_HEADER); // what the proxy holds

    const v = verifier();
    let messages = 0;
    let largest = 0;
    browser.ws.on('message', (d: Buffer) => {
      messages++;
      largest = Math.max(largest, d.length);
      v.push(d);
    });
    browser.ws.resume();
    await waitFor(() => v.offset >= TOTAL || browser.closed !== null, 'the whole stream', 30_000);
    expect(browser.closed).toBeNull();
    expect(v.offset).toBe(TOTAL);
    expect(v.bad).toBe(-1);
    expect(largest).toBeLessThanOrEqual(MAX_READ);
    // A stream this long is moved in large messages, not one per 64 KiB read.
    expect(messages).toBeLessThan(TOTAL / (64 * 1024));
    browser.close();
  });

  it('upstream: a desktop that stops reading keeps the rest queued at the browser, and every byte arrives in order', async () => {
    const { browser, desktop } = await connect();
    desktop.pause();
    const v = verifier();
    desktop.on('data', (d: Buffer) => v.push(d));
    for (let off = 0; off < TOTAL; ) {
      const chunk = streamSlice(off, Math.min(64 * 1024, TOTAL - off));
      browser.ws.send(chunk);
      off += chunk.length;
    }
    // bufferedAmount only counts what ws has not handed to the kernel yet; compute the bytes that left the browser.
    const leftBrowser = await stalled(() => TOTAL - browser.ws.bufferedAmount);
    // The proxy stopped taking the browser's bytes: most of the stream is still queued in the browser.
    expect(leftBrowser).toBeLessThan(TOTAL / 2);
    expect(v.offset).toBe(0);

    desktop.resume();
    await waitFor(() => v.offset >= TOTAL || browser.closed !== null, 'the whole stream', 30_000);
    expect(browser.closed).toBeNull();
    expect(v.offset).toBe(TOTAL);
    expect(v.bad).toBe(-1);
    browser.close();
  });

  it('through the agent relay (mutual TLS, 16 KiB records): every byte arrives in order, in large messages, and a stalled browser stalls the desktop', async () => {
    const { browser, desktop, proxySide } = await connect(true);
    const total = 64 * 1024 * 1024;
    browser.ws.pause();
    const sent = streamInto(desktop, total, 100_003);
    expect(await stalled(sent)).toBeLessThan(total);
    // One buffer, plus what the TLS socket had already decrypted when reading paused (one socket read, <= 64 KiB).
    expect(proxySide.writableLength).toBeLessThanOrEqual(MAX_READ + 64 * 1024 + 2 * MAX_HEADER);

    const v = verifier();
    let messages = 0;
    browser.ws.on('message', (d: Buffer) => {
      messages++;
      v.push(d);
    });
    const flap = setInterval(() => (browser.ws.isPaused ? browser.ws.resume() : browser.ws.pause()), 3);
    try {
      await waitFor(() => v.offset >= total || browser.closed !== null, 'the whole stream', 60_000);
    } finally {
      clearInterval(flap);
      browser.ws.resume();
    }
    expect(browser.closed).toBeNull();
    expect(v.offset).toBe(total);
    expect(v.bad).toBe(-1);
    // The proxy gathers TLS records into messages: far fewer than one per 16 KiB record.
    expect(messages).toBeLessThan(total / (16 * 1024) / 4);
    browser.close();
  });

  it('a browser that reads slowly (paused and resumed over and over) still receives every byte in order', async () => {
    const { browser, desktop } = await connect();
    const total = 48 * 1024 * 1024;
    streamInto(desktop, total, 100_003);
    const v = verifier();
    browser.ws.on('message', (d: Buffer) => v.push(d));
    const flap = setInterval(() => (browser.ws.isPaused ? browser.ws.resume() : browser.ws.pause()), 2);
    try {
      await waitFor(() => v.offset >= total || browser.closed !== null, 'the whole stream', 30_000);
    } finally {
      clearInterval(flap);
      browser.ws.resume();
    }
    expect(v.offset).toBe(total);
    expect(v.bad).toBe(-1);
    browser.close();
  });
});
