/**
 * Fuzzing RFB through the real controller process with real tokens: the browser side during and after the
 * handshake (against a real Xvnc started by a real agent), and the server side during the handshake. For the
 * server side only the desktop is mocked: the real agent starts test/fixtures/hostile-xvnc.mjs in place of Xvnc
 * (--xvnc) and relays to its Unix socket, since a real Xvnc cannot be made to send arbitrary bytes. Properties: the
 * process stays up and keeps answering /healthz; every close the browser sees carries a documented close code;
 * the server side also leaves no connection open in the controller's books.
 * Fixed seed; FUZZ_SCALE (npm run test:fuzz) multiplies the runs.
 */
import { chmodSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { alive, startAgent, type AgentProcess } from '../helpers/agent-process.js';
import { makePki } from '../helpers/certs.js';
import { api, waitForBladeStates } from '../helpers/controller-checks.js';
import { startController, type ControllerProcess } from '../helpers/controller-process.js';
import { startEdgeRig, type EdgeRig } from '../helpers/edge-rig.js';
import { DOCUMENTED_CLOSE_CODES, fuzzParams, fuzzTimeout } from '../helpers/fuzz.js';
import { repoRoot } from '../helpers/node-service.js';
import { isRefused, openWebSocket, type RfbWsClient } from '../helpers/rfb-ws-client.js';
import { testUser } from '../helpers/users.js';

let rig: EdgeRig;
const HOSTILE_XVNC = resolve(repoRoot(), 'test', 'fixtures', 'hostile-xvnc.mjs');

beforeAll(async () => {
  // A short handshake timeout: a hostile server that stalls costs a run this long, not the default 10 s.
  rig = await startEdgeRig({ args: ['--handshake-timeout-ms', '300'] });
});

afterAll(async () => {
  await rig?.close();
});

async function connect(token: string): Promise<RfbWsClient> {
  const c = await openWebSocket(`ws://127.0.0.1:${rig.port}/websockify?token=${encodeURIComponent(token)}`);
  if (isRefused(c)) throw new Error(`refused: ${c.status} ${JSON.stringify(c.body)}`);
  return c;
}

/**
 * Resolves once the proxy has handled everything sent so far: a ping's pong comes back after the frames before it
 * were processed, and a close the proxy decided on is sent before that pong. Or once the socket closed. After the
 * handshake the proxy may rightly stop reading the browser (the desktop is not reading what it already got), so the
 * ping may never be read: after `boundMs` the connection is taken as alive and left; nothing is asserted on time.
 */
function settled(c: RfbWsClient, boundMs = 1000): Promise<void> {
  return new Promise((resolve) => {
    if (c.closed) return resolve();
    setTimeout(resolve, boundMs).unref();
    c.ws.once('pong', () => resolve());
    void c.closedPromise.then(() => resolve());
    try {
      c.ws.ping();
    } catch {
      resolve();
    }
  });
}

function expectDocumentedClose(c: RfbWsClient, context: string): void {
  if (!c.closed) return;
  expect(DOCUMENTED_CLOSE_CODES.has(c.closed.code), `close ${c.closed.code} ${c.closed.reason} after ${context}`).toBe(true);
  if (c.closed.code === 1011 && c.closed.reason) expect(c.closed.reason).toMatch(/^VD_ERR_[A-Z_]+$/);
}

const VERSION = Buffer.from('RFB 003.008\n', 'latin1');
/** Browser-side messages: valid handshake pieces mixed with garbage, as binary or text frames. */
const browserFrame = fc.oneof(
  fc.uint8Array({ maxLength: 64 }).map((b) => ({ data: Buffer.from(b), binary: true })),
  fc.constantFrom(VERSION, Buffer.from('RFB 003.003\n'), Buffer.from('RFB 999.999\n'), Buffer.of(1), Buffer.of(2), Buffer.of(0), Buffer.of(1, 1))
    .map((data) => ({ data, binary: true })),
  fc.string({ maxLength: 20 }).map((s) => ({ data: Buffer.from(s), binary: false })),
  fc.integer({ min: 60 * 1024, max: 70 * 1024 }).map((n) => ({ data: Buffer.alloc(n, 1), binary: true })),
);

describe('fuzzing the browser side of RFB', () => {
  // Xvnc blacklists an address after a few broken handshakes, and the proxy breaks one whenever the browser does:
  // each property has its own user, so its own Xvnc.

  it('anything the browser sends during the handshake ends at most its own connection, with a documented close', async () => {
    const user = testUser(45);
    await fc.assert(fc.asyncProperty(fc.array(browserFrame, { minLength: 1, maxLength: 6 }), async (frames) => {
      const c = await connect((await rig.grant(user)).token);
      try {
        // The proxy's ProtocolVersion, sent once it has done the VNC handshake with the desktop. On a loaded machine
        // that can outlast this rig's 300 ms handshake timeout; the close must then be a documented one.
        const greeted = await c.read(12).then(() => true, () => false);
        if (!greeted) {
          await c.closedPromise;
          expectDocumentedClose(c, 'the desktop handshake');
          return;
        }
        for (const f of frames) if (!c.closed) c.ws.send(f.data, { binary: f.binary });
        await settled(c);
        expectDocumentedClose(c, JSON.stringify(frames.map((f) => f.data.subarray(0, 16).toString('hex'))));
      } finally {
        c.ws.terminate();
      }
      expect(await rig.healthy()).toBe(true);
    }), fuzzParams(100));
    expect(alive(rig.controller.pid)).toBe(true);
  }, fuzzTimeout(120_000));

  it('anything the browser sends after the handshake ends at most its own connection, with a documented close', async () => {
    const user = testUser(47);
    await fc.assert(fc.asyncProperty(fc.array(browserFrame, { minLength: 1, maxLength: 6 }), async (frames) => {
      const c = await connect((await rig.grant(user)).token);
      try {
        // Garbage from earlier runs may have made Xvnc drop or blacklist us; then the handshake ends with a close
        // that must be a documented one, and there is nothing further to send.
        const ok = await c.handshakeNone().then(() => true, () => false);
        if (!ok) {
          await c.closedPromise;
          expectDocumentedClose(c, 'the handshake');
          return;
        }
        for (const f of frames) if (!c.closed) c.ws.send(f.data, { binary: f.binary });
        await settled(c);
        expectDocumentedClose(c, JSON.stringify(frames.map((f) => f.data.subarray(0, 16).toString('hex'))));
      } finally {
        c.ws.terminate();
      }
      expect(await rig.healthy()).toBe(true);
    }), fuzzParams(100));
    expect(alive(rig.controller.pid)).toBe(true);
  }, fuzzTimeout(120_000));
});

describe('fuzzing the server side of RFB during the handshake', () => {
  // Only the desktop is mocked: the real agent starts test/fixtures/hostile-xvnc.mjs in place of Xvnc (--xvnc, as the
  // user, with -rfbunixpath and -displayfd) and relays to it over mutual TLS; a real Xvnc cannot be made to send
  // arbitrary bytes. The session script only sleeps (there is no X server to run a desktop on).
  const user = testUser(104);
  let dir: string;
  let scriptFile: string;
  let agent: AgentProcess;
  let controller: ControllerProcess;

  const writeScript = (s: { chunks: Buffer[]; stall: boolean }) => {
    writeFileSync(`${scriptFile}.new`, JSON.stringify({ chunks: s.chunks.map((b) => b.toString('hex')), stall: s.stall }), { mode: 0o644 });
    renameSync(`${scriptFile}.new`, scriptFile);
  };

  beforeAll(async () => {
    const pki = makePki();
    dir = mkdtempSync(join(tmpdir(), 'vd-hostile-xvnc-'));
    chmodSync(dir, 0o755);
    scriptFile = join(dir, 'script.json');
    writeScript({ chunks: [], stall: false });
    const wrapper = join(dir, 'xvnc');
    writeFileSync(wrapper, `#!/bin/sh\nexec ${process.execPath} ${HOSTILE_XVNC} --script ${scriptFile} "$@"\n`, { mode: 0o755 });
    const session = join(dir, 'session');
    writeFileSync(session, '#!/bin/sh\nexec sleep 86400\n', { mode: 0o755 });
    agent = await startAgent({ pki, args: ['--xvnc', wrapper, '--session-script', session] });
    controller = await startController({ pki, blades: [{ name: 'hostile', address: `127.0.0.1:${agent.port}` }],
      args: ['--handshake-timeout-ms', '300'] });
    await waitForBladeStates(controller, { hostile: 'UP' });
  }, 90_000);

  afterAll(async () => {
    const live = await api(controller, 'GET', '/api/v1/sessions?state=live').catch(() => null);
    for (const s of live?.body?.sessions ?? []) await api(controller, 'DELETE', `/api/v1/sessions/${s.id}`).catch(() => {});
    await controller?.stop();
    await agent?.stop();
    for (const d of [dir, agent?.stateDir, controller?.dataDir]) if (d) rmSync(d, { recursive: true, force: true });
  }, 60_000);

  const u32 = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n >>> 0);
    return b;
  };
  /** Server messages: valid handshake pieces (versions, security lists, results, reasons) mixed with garbage. */
  const serverChunk = fc.oneof(
    fc.uint8Array({ maxLength: 48 }).map((b) => Buffer.from(b)),
    fc.constantFrom(VERSION, Buffer.from('RFB 003.003\n'), Buffer.from('RFB 003.007\n'), Buffer.from('RFB 004.001\n'),
      Buffer.from('RFB 000.000\n'), Buffer.of(1, 1), Buffer.of(1, 2), Buffer.of(0), Buffer.of(255), u32(0), u32(1), u32(2),
      u32(0xffffffff), Buffer.alloc(16, 7)),
    fc.tuple(fc.integer({ min: 0, max: 0xffffffff }), fc.uint8Array({ maxLength: 32 })).map(([n, b]) => Buffer.concat([u32(n), Buffer.from(b)])),
    fc.tuple(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0xffffffff }))
      .map(([w, h, n]) => Buffer.concat([Buffer.from([w >> 8, w & 255, h >> 8, h & 255]), Buffer.alloc(16), u32(n)])),
  );

  async function openConnections(): Promise<number> {
    const text = await (await fetch(`${controller.url}/metrics`)).text();
    return Number(/^vncdispatch_proxy_connections_open(?:\{[^}]*\})? (\d+)/m.exec(text)?.[1] ?? NaN);
  }

  it('anything a VNC server sends during the handshake ends at most its own connection, with a documented close', async () => {
    let desktopFailures = 0;
    await fc.assert(fc.asyncProperty(fc.array(serverChunk, { maxLength: 6 }), fc.boolean(), async (chunks, stall) => {
      writeScript({ chunks, stall });
      const r = await api(controller, 'POST', '/api/v1/sessions', { username: user });
      expect([200, 201], r.text).toContain(r.status);
      const c = await openWebSocket(`${controller.url.replace('http', 'ws')}/websockify?token=${r.body.token as string}`);
      if (isRefused(c)) throw new Error(`refused: ${c.status} ${JSON.stringify(c.body)}`);
      try {
        // The browser plays a well-behaved noVNC; the server decides how far the handshake gets.
        await c.handshakeNone().catch(() => {});
        await settled(c);
        expectDocumentedClose(c, `${chunks.map((b) => b.subarray(0, 16).toString('hex')).join(' ')} stall=${stall}`);
        if (c.closed?.code === 1011) desktopFailures++;
      } finally {
        c.ws.terminate();
      }
      const health = await fetch(`${controller.url}/healthz`).catch(() => null);
      expect(health?.status).toBe(200);
      // Nothing leaks: the connection is gone from the controller's books (its relay with it).
      await expect.poll(openConnections, { timeout: 10_000 }).toBe(0);
    }), fuzzParams(60));
    expect(alive(controller.pid)).toBe(true);
    // The hostile bytes really came from behind the relay: the proxy blamed the desktop side (1011) for some runs.
    expect(desktopFailures).toBeGreaterThan(0);
    // The hostile desktop broke only its own connections: its session is still live, and the agent still answers.
    const live = await api(controller, 'GET', '/api/v1/sessions?state=live');
    expect((live.body.sessions as { username: string }[]).map((s) => s.username)).toEqual([user]);
    expect((await api(controller, 'GET', '/api/v1/blades/hostile')).body.state).toBe('UP');
  }, fuzzTimeout(180_000));
});
