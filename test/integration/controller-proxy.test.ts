/**
 * The WebSocket-to-VNC proxy as wired into the real controller: token from the REST API, target from the session
 * record and its registered blade, VNC authentication done by the proxy against a real Xvnc started by a real agent.
 * Refusals are checked by what the desktop itself saw: TigerVNC logs every accepted connection in the session log,
 * so "no TCP connection reached the blade" is read from there. Users vdtest38..vdtest40.
 */
import { createServer, type Server } from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { desktopLog, startAgent, type AgentProcess } from '../helpers/agent-process.js';
import { makePki, type Pki } from '../helpers/certs.js';
import { api, waitForBladeStates } from '../helpers/controller-checks.js';
import { buildController, type InProcessController } from '../helpers/controller-process.js';
import { isRefused, openWebSocket, type RfbWsClient } from '../helpers/rfb-ws-client.js';
import { idsOf, testUser } from '../helpers/users.js';
import { hashSecret, newToken } from '../../controller/tokens/index.js';

const USER = testUser(38);
const OTHER = testUser(39);
const BOUND = testUser(40);

let pki: Pki;
let agent: AgentProcess;
let c: InProcessController;
let wsBase: string;
/** A TCP server standing where an attacker would like the proxy to connect: it must never see a connection. */
let decoy: Server;
let decoyPort: number;
let decoyHits = 0;

function sessionLog(username: string): string {
  return desktopLog(agent.runtimeDir, idsOf(username).uid);
}

/** How many connections the user's Xvnc has accepted so far. */
function accepted(username: string): number {
  return sessionLog(username).split('\n').filter((l) => l.includes('Connections: accepted')).length;
}

async function openSession(username: string, clientIp?: string): Promise<{ id: string; token: string; display: number }> {
  const r = await api(c, 'POST', '/api/v1/sessions', clientIp ? { username, clientIp } : { username });
  expect([200, 201]).toContain(r.status);
  return r.body;
}

async function connect(query: string, origin = c.url, path = '/websockify') {
  return openWebSocket(`${wsBase}${path}?${query}`, { origin });
}

/**
 * Reads one raw FramebufferUpdate of a 16x16 region near the top right corner, far from the xterm (top left) and the
 * window manager's taskbar (along the bottom, with its clock in the bottom right): the session script's background.
 */
async function sampleBackground(client: RfbWsClient, width: number): Promise<Buffer> {
  const x = width - 20;
  const y = 40;
  const req = Buffer.alloc(10);
  req.writeUInt8(3, 0); // FramebufferUpdateRequest
  req.writeUInt8(0, 1); // not incremental
  req.writeUInt16BE(x, 2);
  req.writeUInt16BE(y, 4);
  req.writeUInt16BE(16, 6);
  req.writeUInt16BE(16, 8);
  client.write(req);
  for (;;) {
    const type = (await client.read(1))[0];
    if (type === 0) break;
    if (type === 2) continue; // Bell
    throw new Error(`unexpected server message ${type}`);
  }
  await client.read(1); // padding
  const rects = (await client.read(2)).readUInt16BE(0);
  expect(rects).toBeGreaterThanOrEqual(1);
  const head = await client.read(12);
  expect(head.readInt32BE(8)).toBe(0); // Raw: no SetEncodings was sent
  return client.read(head.readUInt16BE(4) * head.readUInt16BE(6) * 4);
}

beforeAll(async () => {
  pki = makePki();
  agent = await startAgent({ pki });
  c = await buildController({ pki, blades: [{ name: 'blade-p', address: `127.0.0.1:${agent.port}` }] });
  wsBase = c.url.replace('http:', 'ws:');
  await waitForBladeStates(c, { 'blade-p': 'UP' });
  decoy = createServer((s) => {
    decoyHits++;
    s.destroy();
  });
  await new Promise<void>((r) => decoy.listen(0, '127.0.0.1', r));
  decoyPort = (decoy.address() as { port: number }).port;
});

afterAll(async () => {
  for (const s of (await api(c, 'GET', '/api/v1/sessions')).body?.sessions ?? []) {
    await api(c, 'DELETE', `/api/v1/sessions/${s.id}`);
  }
  await c?.stop();
  await agent?.stop();
  decoy?.close();
});

describe('a browser reaches its desktop through the controller', () => {
  it('completes RFB with security None (the proxy did VNC auth) and receives the real desktop pixels', async () => {
    const s = await openSession(USER);
    const client = await connect(`token=${s.token}`);
    if (isRefused(client)) throw new Error(`refused: ${JSON.stringify(client)}`);
    try {
      const init = await client.handshakeNone();
      expect(init.securityTypes).toEqual([1]);
      expect(init.name).toBe(`${USER}'s desktop`);
      expect([init.width, init.height]).toEqual([1280, 800]);
      expect(init.bpp).toBe(32);
      // TigerVNC's default pixel format is little-endian BGRX: the default session script's #3465a4 background. A
      // desktop started just now may not have run xsetroot yet, so sample until it has (it then stays).
      const bgrx = (p: Buffer) => new Set(Array.from({ length: p.length / 4 }, (_, i) => [...p.subarray(i * 4, i * 4 + 3)].join(',')));
      let seen = new Set<string>();
      await vi.waitFor(async () => {
        seen = bgrx(await sampleBackground(client, init.width));
        if (seen.size !== 1 || !seen.has('164,101,52')) throw new Error(`background not painted yet: ${[...seen].join(' ')}`);
      }, { timeout: 15_000, interval: 100 }).catch(() => undefined);
      expect([...seen]).toEqual(['164,101,52']);
    } finally {
      client.close();
    }
  });

  it('takes the target only from the session record: host/port in the query or path are ignored', async () => {
    const s = await openSession(USER);
    const before = accepted(USER);
    const client = await connect(`token=${s.token}&host=127.0.0.1&port=${decoyPort}&target=127.0.0.1:${decoyPort}`);
    if (isRefused(client)) throw new Error(`refused: ${JSON.stringify(client)}`);
    const init = await client.handshakeNone();
    expect(init.name).toBe(`${USER}'s desktop`);
    client.close();
    expect(accepted(USER)).toBe(before + 1);

    const viaPath = await connect(`token=${(await openSession(USER)).token}`, c.url, `/websockify/127.0.0.1:${decoyPort}`);
    expect(isRefused(viaPath) && viaPath.status).toBe(404);
    expect(decoyHits).toBe(0);
  });
});

describe('refusals happen before any connection to the blade', () => {
  it('unknown, malformed, expired, reused and revoked tokens, a foreign Origin and another client IP', async () => {
    const live = await openSession(OTHER);
    const bound = await openSession(BOUND, '203.0.113.9');
    const reused = await openSession(OTHER);
    const first = await connect(`token=${reused.token}`);
    if (isRefused(first)) throw new Error('a fresh token was refused');
    await first.handshakeNone();
    first.close();

    const expired = newToken();
    await c.store.insertToken({ hash: hashSecret(expired), sessionId: live.id, expiresAt: new Date(Date.now() - 1000),
      clientIp: null, createdAt: new Date(Date.now() - 61_000), usedAt: null, revokedAt: null });

    const victim = await openSession(USER);
    await api(c, 'DELETE', `/api/v1/sessions/${victim.id}`);

    const fresh = await openSession(OTHER); // valid, used only with a foreign Origin below
    const before = { other: accepted(OTHER), bound: accepted(BOUND) };
    const cases: [string, Promise<RfbWsClient | Awaited<ReturnType<typeof connect>>>, number, string][] = [
      ['unknown token', connect(`token=${newToken()}`), 401, 'VD_ERR_TOKEN_UNKNOWN'],
      ['malformed token', connect('token=../../etc/passwd'), 401, 'VD_ERR_TOKEN_MALFORMED'],
      ['no token', connect(''), 401, 'VD_ERR_TOKEN_REQUIRED'],
      ['expired token', connect(`token=${expired}`), 401, 'VD_ERR_TOKEN_EXPIRED'],
      ['reused single-use token', connect(`token=${reused.token}`), 401, 'VD_ERR_TOKEN_USED'],
      ['token of a deleted session', connect(`token=${victim.token}`), 401, 'VD_ERR_TOKEN_REVOKED'],
      ['foreign Origin', connect(`token=${fresh.token}`, 'https://evil.example'), 403, 'VD_ERR_ORIGIN_FORBIDDEN'],
      ['token bound to another IP', connect(`token=${bound.token}`), 403, 'VD_ERR_TOKEN_IP_MISMATCH'],
    ];
    for (const [what, attempt, status, code] of cases) {
      const r = await attempt;
      expect(isRefused(r), what).toBe(true);
      if (isRefused(r)) expect({ what, status: r.status, code: r.body.error?.code }).toEqual({ what, status, code });
    }
    expect({ other: accepted(OTHER), bound: accepted(BOUND) }).toEqual(before);

    // The foreign-Origin attempt did not use the token up: the real page can still connect with it.
    const ok = await connect(`token=${fresh.token}`);
    expect(isRefused(ok)).toBe(false);
    if (!isRefused(ok)) ok.close();
  });

  it('a DELETE on another controller sharing the store closes this controller\'s live connection', async () => {
    const other = await buildController({ pki, dataDir: c.dataDir, apiKey: c.apiKey,
      blades: [{ name: 'blade-p', address: `127.0.0.1:${agent.port}` }] });
    try {
      const s = await openSession(USER);
      const client = await connect(`token=${s.token}`);
      if (isRefused(client)) throw new Error('refused');
      await client.handshakeNone();
      // Freeze the agent so the desktop (and so the VNC side of the pipe) stays up: only the store can tell this
      // controller's proxy that the session ended, on its next re-check (every 500 ms). Access is cut anyway.
      process.kill(agent.pid, 'SIGSTOP');
      let deleted: Promise<unknown>;
      try {
        deleted = api(other, 'DELETE', `/api/v1/sessions/${s.id}`);
        const closed = await client.closedPromise;
        expect(closed.code).toBe(1008);
      } finally {
        process.kill(agent.pid, 'SIGCONT');
      }
      expect(await deleted).toMatchObject({ status: 200 });
    } finally {
      await other.stop();
    }
  });

  it('DELETE closes a live connection and the desktop goes away', async () => {
    const s = await openSession(USER);
    const client = await connect(`token=${s.token}`);
    if (isRefused(client)) throw new Error('refused');
    await client.handshakeNone();
    await api(c, 'DELETE', `/api/v1/sessions/${s.id}`);
    const closed = await client.closedPromise;
    expect(closed.code).toBe(1008);
  });
});
