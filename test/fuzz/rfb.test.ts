/**
 * Fuzzing RFB through the real controller process with real tokens: the browser side during and after the
 * handshake (against a real Xvnc started by a real agent), and the server side during the handshake. For the
 * server side the session's VNC port is pointed, in the controller's store, at a scripted hostile VNC server
 * (test/helpers/fake-vnc-server.ts): a real Xvnc cannot be made to send arbitrary bytes. Properties: the process stays
 * up and keeps answering /healthz; every close the browser sees carries a documented close code.
 * Fixed seed; FUZZ_SCALE (npm run test:fuzz) multiplies the runs.
 */
import { join } from 'node:path';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SQLITE_FILE_NAME } from '../../controller/store/sqlite-store.js';
import { alive } from '../helpers/agent-process.js';
import { startEdgeRig, type EdgeRig } from '../helpers/edge-rig.js';
import { startScriptedVncServer, type ScriptedVncServer, type VncScript } from '../helpers/fake-vnc-server.js';
import { DOCUMENTED_CLOSE_CODES, fuzzParams, fuzzTimeout } from '../helpers/fuzz.js';
import { isRefused, openWebSocket, type RfbWsClient } from '../helpers/rfb-ws-client.js';
import { testUser } from '../helpers/users.js';

let rig: EdgeRig;

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
        await c.read(12); // the proxy's ProtocolVersion
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
  const user = testUser(46);
  let fake: ScriptedVncServer;
  let script: VncScript = { chunks: [], stall: false };

  beforeAll(async () => {
    fake = await startScriptedVncServer(() => script);
  });

  afterAll(async () => {
    await fake?.close();
  });

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

  // Skipped: desktops are now reached through the agent's mutual-TLS relay, not at the session's TCP port, so pointing
  // the session's port at the hostile server no longer puts it behind the proxy. It needs a hostile desktop behind
  // the relay (a Unix socket the agent relays to) before it can run again.
  it.skip('anything a VNC server sends during the handshake ends at most its own connection, with a documented close', async () => {
    // The session's desktop, as the store knows it, now listens at the hostile server's port.
    const { sessionId } = await rig.grant(user);
    const db = new Database(join(rig.controller.dataDir, SQLITE_FILE_NAME));
    try {
      db.prepare('UPDATE sessions SET port = ? WHERE id = ?').run(fake.port, sessionId);
    } finally {
      db.close();
    }
    await fc.assert(fc.asyncProperty(fc.array(serverChunk, { maxLength: 6 }), fc.boolean(), async (chunks, stall) => {
      script = { chunks, stall };
      const connectionsBefore = fake.connections;
      const c = await connect((await rig.grant(user)).token);
      try {
        // The browser plays a well-behaved noVNC; the server decides how far the handshake gets.
        await c.handshakeNone().catch(() => {});
        await expect.poll(() => fake.connections).toBeGreaterThan(connectionsBefore);
        await settled(c);
        expectDocumentedClose(c, `${chunks.map((b) => b.subarray(0, 16).toString('hex')).join(' ')} stall=${stall}`);
      } finally {
        c.ws.terminate();
      }
      expect(await rig.healthy()).toBe(true);
    }), fuzzParams(60));
    expect(alive(rig.controller.pid)).toBe(true);
  }, fuzzTimeout(180_000));
});
