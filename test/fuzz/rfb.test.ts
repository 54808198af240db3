/**
 * Fuzzing RFB through the real controller process with real tokens: the browser side during and after the
 * handshake (against a real Xvnc started by a real agent), and the server side during the handshake. For the
 * server side only the desktop is mocked: the real agent starts test/fixtures/hostile-xvnc.mjs in place of Xvnc
 * (--xvnc) and relays to its Unix socket, since a real Xvnc cannot be made to send arbitrary bytes. Properties: the
 * process stays up and keeps answering /healthz; every close the browser sees carries a documented close code; no
 * connection stays open in the controller's books (its per-IP slot is given back); the desktop survives (every grant
 * names the same session: nothing was spawned anew or lost).
 * No run waits on a fixed delay: a run ends when the proxy has answered (a pong, read after the frames before it) or
 * closed. Where a timeout is the behaviour under test (a desktop that stalls the handshake, a desktop gone away) the
 * rig configures it small. Fixed seed; FUZZ_SCALE (npm run test:fuzz) multiplies the runs.
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
/**
 * A desktop that goes away mid-connection is waited for this long (its session might be ending) before the browser
 * hears 1000; the fuzzer makes Xvnc drop connections all the time, and the wait is not what is under test here.
 */
const GONE_GRACE = ['--desktop-gone-grace-ms', '1'];

beforeAll(async () => {
  // The default handshake timeout: the browser side is not stalled on purpose, and a short one would make a loaded
  // machine's slow Xvnc handshakes end runs before the fuzzed bytes are sent.
  rig = await startEdgeRig({ args: GONE_GRACE });
});

afterAll(async () => {
  await rig?.close();
});

async function connect(token: string): Promise<RfbWsClient> {
  const c = await openWebSocket(`ws://127.0.0.1:${rig.port}/websockify?token=${encodeURIComponent(token)}`);
  if (isRefused(c)) throw new Error(`refused: ${c.status} ${JSON.stringify(c.body)}`);
  return c;
}

/** Desktop connections the controller counts as open (vncdispatch_proxy_connections_open). */
async function openConnections(controllerUrl: string): Promise<number> {
  const text = await (await fetch(`${controllerUrl}/metrics`)).text();
  return Number(/^vncdispatch_proxy_connections_open(?:\{[^}]*\})? (\d+)/m.exec(text)?.[1] ?? NaN);
}

/** How the controller's desktop connections ended so far, by reason (vncdispatch_proxy_connections_total). */
async function closeReasons(controllerUrl: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${controllerUrl}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^vncdispatch_proxy_connections_total\{reason="([^"]+)"\} (\d+)/gm)) out[m[1]!] = Number(m[2]);
  return out;
}

/** What a property's runs came to, for the log: close reasons counted since `before`. */
async function reportCloses(what: string, controllerUrl: string, before: Record<string, number>): Promise<void> {
  const after = await closeReasons(controllerUrl);
  const delta: Record<string, number> = {};
  for (const [k, n] of Object.entries(after)) if (n !== (before[k] ?? 0)) delta[k] = n - (before[k] ?? 0);
  const runs = Object.values(delta).reduce((a, n) => a + n, 0);
  console.log(`${what}: ${runs} connections (one per run) ended by ${JSON.stringify(delta)}`);
}

/**
 * Waits until the proxy has handled everything sent so far: its pong comes back after the frames before the ping
 * were processed, and a close it decided on is sent before that pong. Or until the socket closed. The proxy stops
 * reading the browser only while the desktop has not taken the last bytes (or, once the desktop is gone, for
 * --desktop-gone-grace-ms before it closes): a proxy that still has not answered after WEDGED_MS has wedged the
 * connection, which fails the property (the bound is a failure, not a wait any passing run sits out).
 */
const WEDGED_MS = 20_000;

/**
 * `p`, or a failure once WEDGED_MS pass first: a handshake that neither finishes nor ends in a close has wedged the
 * connection (the proxy's handshake timeout should have closed it long before).
 */
function unwedged<T>(p: Promise<T>, context: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const wedged = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the handshake neither finished nor closed within ${WEDGED_MS} ms after ${context()}`)), WEDGED_MS);
  });
  return Promise.race([p, wedged]).finally(() => clearTimeout(timer));
}

function settled(c: RfbWsClient, context: () => string): Promise<void> {
  return new Promise((resolve, reject) => {
    if (c.closed) return resolve();
    const wedged = setTimeout(() => reject(new Error(`the proxy neither answered a ping nor closed within ${WEDGED_MS} ms after ${context()}`)), WEDGED_MS);
    const done = () => {
      clearTimeout(wedged);
      resolve();
    };
    c.ws.once('pong', done);
    void c.closedPromise.then(done);
    try {
      c.ws.ping();
    } catch {
      done();
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

type Frame = { data: Buffer; binary: boolean };
const describeFrames = (frames: Frame[]) => JSON.stringify(frames.map((f) => `${f.binary ? '' : 'text:'}${f.data.subarray(0, 16).toString('hex')}`));

/**
 * One browser-side run: a fresh token for `user`'s desktop, a connection, `prelude` (how far the handshake gets
 * before the fuzzed frames; false when the proxy closed first), the frames, and the checks: a documented close if
 * any, the controller healthy, and the same desktop as in every other run (nothing spawned anew, nothing lost).
 * Slots are checked without a wait per run: a connection the proxy failed to give back keeps its per-IP slot, so
 * 20 of them refuse the next run's upgrade (a failure), and the property ends by seeing the books back at zero.
 */
async function browserRun(user: string, desktop: { sessionId?: string }, frames: Frame[],
  prelude: (c: RfbWsClient) => Promise<boolean>): Promise<void> {
  const grant = await rig.grant(user);
  desktop.sessionId ??= grant.sessionId;
  expect(grant.sessionId, 'the desktop survived every earlier run').toBe(desktop.sessionId);
  const c = await connect(grant.token);
  try {
    if (!(await unwedged(prelude(c), () => 'connecting'))) {
      await c.closedPromise;
      expectDocumentedClose(c, 'the handshake');
    } else {
      for (const f of frames) if (!c.closed) c.ws.send(f.data, { binary: f.binary });
      await settled(c, () => describeFrames(frames));
      expectDocumentedClose(c, describeFrames(frames));
    }
  } finally {
    c.ws.terminate();
  }
  expect(await rig.healthy()).toBe(true);
}

/** Runs one browser-side property and checks what it leaves behind. */
async function browserProperty(what: string, user: string, prelude: (c: RfbWsClient) => Promise<boolean>): Promise<void> {
  const desktop = {};
  const before = await closeReasons(rig.controller.url);
  await fc.assert(fc.asyncProperty(fc.array(browserFrame, { minLength: 1, maxLength: 6 }),
    (frames) => browserRun(user, desktop, frames, prelude)), fuzzParams(100));
  expect(alive(rig.controller.pid)).toBe(true);
  // Every connection's slot was given back once its browser hung up.
  await expect.poll(() => openConnections(rig.controller.url), { timeout: 10_000 }).toBe(0);
  await reportCloses(what, rig.controller.url, before);
}

describe('fuzzing the browser side of RFB', () => {
  // Each property has its own user, so its own Xvnc: what one property's garbage does to Xvnc stays out of the other.

  it('anything the browser sends during the handshake ends at most its own connection, with a documented close', async () => {
    // The proxy's ProtocolVersion, sent once it has done the VNC handshake with the desktop; then the fuzzed frames
    // meet the proxy's own half of the handshake.
    const greeted = (c: RfbWsClient) => c.read(12).then(() => true, () => false);
    await browserProperty('browser during the handshake', testUser(45), greeted);
  }, fuzzTimeout(120_000));

  it('anything the browser sends after the handshake ends at most its own connection, with a documented close', async () => {
    const handshaken = (c: RfbWsClient) => c.handshakeNone().then(() => true, () => false);
    await browserProperty('browser after the handshake', testUser(47), handshaken);
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
    // A loaded machine (the 100x runs share it) can take longer than the default 15 s to bring an agent up.
    agent = await startAgent({ pki, args: ['--xvnc', wrapper, '--session-script', session], timeoutMs: 60_000 });
    // A desktop that stops sending mid-handshake (most runs: the script's next chunk waits for the proxy's next bytes,
    // so a proxy waiting for more stalls it too) is answered after --handshake-timeout-ms. That timeout is under test
    // here, and it is most of what such a run costs: short, yet long enough for a loaded machine's relay and TLS.
    controller = await startController({ pki, blades: [{ name: 'hostile', address: `127.0.0.1:${agent.port}` }],
      args: ['--handshake-timeout-ms', '200', ...GONE_GRACE] });
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

  /**
   * Found at FUZZ_SCALE=100 (run 136), replayed first at every scale: RFB 3.3 with security None, then 16 bytes of a
   * ServerInit and silence. The handshake timeout ended at the browser's ClientInit, so the browser waited for the
   * rest of the ServerInit until the idle timeout.
   */
  const HOSTILE_REGRESSIONS: Array<[Buffer[], boolean]> = [
    [['524642203030332e3030330a', '00000001', '07070707070707070707070707070707', '00',
      '3b4b327e00000000000000000000000000000000b1a7d1b1', 'f4209add64e50b'].map((h) => Buffer.from(h, 'hex')), true],
  ];

  it('anything a VNC server sends during the handshake ends at most its own connection, with a documented close', async () => {
    let desktopFailures = 0;
    let sessionId: string | undefined;
    const before = await closeReasons(controller.url);
    await fc.assert(fc.asyncProperty(fc.array(serverChunk, { maxLength: 6 }), fc.boolean(), async (chunks, stall) => {
      const context = () => `${chunks.map((b) => b.subarray(0, 16).toString('hex')).join(' ')} stall=${stall}`;
      writeScript({ chunks, stall });
      const r = await api(controller, 'POST', '/api/v1/sessions', { username: user });
      expect([200, 201], r.text).toContain(r.status);
      sessionId ??= r.body.id as string;
      expect(r.body.id, 'the hostile desktop\'s session survived every earlier run').toBe(sessionId);
      const c = await openWebSocket(`${controller.url.replace('http', 'ws')}/websockify?token=${r.body.token as string}`);
      if (isRefused(c)) throw new Error(`refused: ${c.status} ${JSON.stringify(c.body)}`);
      try {
        // The browser plays a well-behaved noVNC; the server decides how far the handshake gets.
        await unwedged(c.handshakeNone().catch(() => {}), context);
        await settled(c, context);
        expectDocumentedClose(c, context());
        if (c.closed?.code === 1011) desktopFailures++;
      } finally {
        c.ws.terminate();
      }
      const health = await fetch(`${controller.url}/healthz`).catch(() => null);
      expect(health?.status).toBe(200);
      // Nothing leaks: the connection is gone from the controller's books (its relay with it).
      await expect.poll(() => openConnections(controller.url), { timeout: 10_000, interval: 5 }).toBe(0);
    }), { ...fuzzParams(60), examples: HOSTILE_REGRESSIONS });
    await reportCloses('hostile desktop', controller.url, before);
    expect(alive(controller.pid)).toBe(true);
    // The hostile bytes really came from behind the relay: the proxy blamed the desktop side (1011) for some runs.
    expect(desktopFailures).toBeGreaterThan(0);
    // The hostile desktop broke only its own connections: its session is still live, and the agent still answers.
    const live = await api(controller, 'GET', '/api/v1/sessions?state=live');
    expect((live.body.sessions as { username: string }[]).map((s) => s.username)).toEqual([user]);
    expect((await api(controller, 'GET', '/api/v1/blades/hostile')).body.state).toBe('UP');
  }, fuzzTimeout(180_000));
});
