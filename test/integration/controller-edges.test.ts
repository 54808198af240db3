/**
 * What an attacker can do to the controller's door, against the real controller process and a real agent
 * (test users vdtest41..vdtest43): requests that used to kill the process, handshakes that burnt tokens and leaked
 * per-address slots, the bad-token back-off locking out good tokens, and a flood of idle connections.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { alive } from '../helpers/agent-process.js';
import { api } from '../helpers/controller-checks.js';
import { startEdgeRig, type EdgeRig } from '../helpers/edge-rig.js';
import { idleConnections, rawRequest, upgradeRequest } from '../helpers/raw-http.js';
import { isRefused, openWebSocket, type RfbWsClient } from '../helpers/rfb-ws-client.js';
import { testUser } from '../helpers/users.js';

let rig: EdgeRig;
const open: RfbWsClient[] = [];

beforeAll(async () => {
  // Back-off tests come from their own addresses (X-Forwarded-For from a trusted 127.0.0.1), so they never put the
  // address the other tests use into back-off.
  rig = await startEdgeRig({ args: ['--max-connections-per-ip', '3', '--trust-proxy', '127.0.0.1'] });
});

afterAll(async () => {
  for (const c of open) c.ws.terminate();
  await rig?.close();
});

function code(body: string): string | undefined {
  try {
    return (JSON.parse(body) as { error?: { code?: string } }).error?.code;
  } catch {
    return undefined;
  }
}

async function connectDesktop(token: string, headers: Record<string, string> = {}): Promise<RfbWsClient> {
  const c = await openWebSocket(`ws://127.0.0.1:${rig.port}/websockify?token=${encodeURIComponent(token)}`, { headers });
  if (isRefused(c)) throw new Error(`refused: ${c.status} ${JSON.stringify(c.body)}`);
  open.push(c);
  await c.handshakeNone();
  return c;
}

describe('the upgrade door', () => {
  it.each(['//', '//[', '//a:b@', '//:99999', 'http://['])(
    'a WebSocket request to %j is refused with 400 and the controller keeps serving',
    async (target) => {
      const answer = await rawRequest(rig.port, upgradeRequest(target));
      expect(answer.status).toBe(400);
      expect(code(answer.body)).toBe('VD_ERR_BAD_REQUEST');
      expect(alive(rig.controller.pid)).toBe(true);
      expect(await rig.healthy()).toBe(true);
    },
  );

  it.each([
    ['a POST', {}, 'POST', 405, 'VD_ERR_METHOD_NOT_ALLOWED'],
    ['Upgrade: h2c', { Upgrade: 'h2c' }, 'GET', 400, 'VD_ERR_BAD_REQUEST'],
    ['a short Sec-WebSocket-Key', { 'Sec-WebSocket-Key': 'c2hvcnQ=' }, 'GET', 400, 'VD_ERR_BAD_REQUEST'],
    ['no Sec-WebSocket-Key', { 'Sec-WebSocket-Key': null }, 'GET', 400, 'VD_ERR_BAD_REQUEST'],
    ['Sec-WebSocket-Version: 12', { 'Sec-WebSocket-Version': '12' }, 'GET', 400, 'VD_ERR_BAD_REQUEST'],
    ['a broken Sec-WebSocket-Protocol', { 'Sec-WebSocket-Protocol': 'binary,,base64' }, 'GET', 400, 'VD_ERR_BAD_REQUEST'],
  ] as const)('a handshake with %s is refused and the token still opens the desktop', async (_what, overrides, method, status, errCode) => {
    const { token } = await rig.grant(testUser(41));
    const headers: Record<string, string | null> = { ...overrides };
    const answer = await rawRequest(rig.port, upgradeRequest(`/websockify?token=${token}`, headers, method));
    expect(answer.status).toBe(status);
    expect(code(answer.body)).toBe(errCode);
    if (headers['Sec-WebSocket-Version']) expect(answer.headers['sec-websocket-version']).toBe('13, 8');
    const c = await connectDesktop(token);
    c.ws.terminate();
  });

  it('refused handshakes do not use up the address\'s connection slots', async () => {
    // The cap is 3 per address; ten refused handshakes with real tokens, then three desktops at once still open.
    for (let i = 0; i < 10; i++) {
      const { token } = await rig.grant(testUser(41));
      expect((await rawRequest(rig.port, upgradeRequest(`/websockify?token=${token}`, { 'Sec-WebSocket-Version': '7' }))).status).toBe(400);
    }
    const clients = [];
    for (let i = 0; i < 3; i++) clients.push(await connectDesktop((await rig.grant(testUser(41))).token));
    for (const c of clients) c.ws.terminate();
  });

  it('an address in bad-token back-off can still use a valid token', async () => {
    const from = { 'X-Forwarded-For': '198.51.100.7' };
    const bad = 'A'.repeat(43);
    let last = 0;
    for (let i = 0; i < 25; i++) last = (await rawRequest(rig.port, upgradeRequest(`/websockify?token=${bad}`, from))).status;
    expect(last).toBe(429);
    const { token } = await rig.grant(testUser(42));
    const c = await connectDesktop(token, from);
    c.ws.terminate();
    // Bad tokens from that address are still held back.
    expect((await rawRequest(rig.port, upgradeRequest(`/websockify?token=${bad}`, from))).status).toBe(429);
  });
});

describe('REST answers', () => {
  it('root cannot have a desktop: 403 VD_ERR_USER_NOT_ALLOWED, and no session row is left', async () => {
    const before = await rig.sessionCount();
    const r = await api(rig.controller, 'POST', '/api/v1/sessions', { username: 'root' });
    expect(r.status).toBe(403);
    expect(r.body.error.code).toBe('VD_ERR_USER_NOT_ALLOWED');
    expect(await rig.sessionCount()).toBe(before);
  });

  it('registering a second blade under a taken name is refused with 409 VD_ERR_BLADE_EXISTS', async () => {
    // A blade without live sessions may be moved to another address; one carrying desktops may not. This test makes
    // its own live session rather than count on other tests' leftovers.
    await rig.grant(testUser(41));
    const before = (await api(rig.controller, 'GET', '/api/v1/blades/edge')).body.address as string;
    const r = await api(rig.controller, 'POST', '/api/v1/blades', { name: 'edge', address: '127.0.0.1:1' });
    expect(r.status).toBe(409);
    expect(r.body.error.code).toBe('VD_ERR_BLADE_EXISTS');
    expect((await api(rig.controller, 'GET', '/api/v1/blades/edge')).body.address).toBe(before);
  });
});

describe('slow, odd and oversized requests', () => {
  it('a CONNECT request gets 405 VD_ERR_METHOD_NOT_ALLOWED instead of a silently dropped connection', async () => {
    const answer = await rawRequest(rig.port, 'CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n');
    expect(answer.status).toBe(405);
    expect(code(answer.body)).toBe('VD_ERR_METHOD_NOT_ALLOWED');
  });

  it('a client that shuts down its sending side after its request still gets the viewer page', async () => {
    // rawRequest half-closes once the request is written, as `nc -N` does; the page is read from disk, so its answer
    // is not ready when the FIN arrives. Found by the HTTP fuzzer at FUZZ_SCALE=100: no answer at all.
    const answer = await rawRequest(rig.port, 'GET /viewer/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n', { boundMs: 20_000 });
    expect(answer.status).toBe(200);
    expect(answer.body).toContain('<!doctype html>');
  });

  it('headers over 16 KiB get 431 VD_ERR_HEADERS_TOO_LARGE', async () => {
    const answer = await rawRequest(rig.port, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    expect(answer.status).toBe(431);
    expect(code(answer.body)).toBe('VD_ERR_HEADERS_TOO_LARGE');
  });

  it('a request line that is not HTTP gets 400 VD_ERR_BAD_REQUEST in the same JSON as every other error', async () => {
    const answer = await rawRequest(rig.port, 'GET /healthz HTTP/9.9\r\n\r\n');
    expect(answer.status).toBe(400);
    expect(code(answer.body)).toBe('VD_ERR_BAD_REQUEST');
  });
});

describe('connection flood', () => {
  let flooded: EdgeRig;

  beforeAll(async () => {
    flooded = await startEdgeRig({ withAgent: false, args: ['--max-connections', '40', '--headers-timeout-ms', '500'] });
  });

  it('a client that never finishes its headers gets 408 VD_ERR_REQUEST_TIMEOUT', async () => {
    // Waits for the controller to answer and close; the bound only stops waiting if it never does.
    const answer = await rawRequest(flooded.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\n', { keepOpen: true, boundMs: 20_000 });
    expect(answer.status).toBe(408);
    expect(code(answer.body)).toBe('VD_ERR_REQUEST_TIMEOUT');
  });

  afterAll(async () => {
    await flooded?.close();
  });

  it('a flood of idle connections does not keep /healthz from answering', async () => {
    // Ten times the cap, all silent: the controller keeps the newest and closes the oldest idle ones.
    const socks = await idleConnections(flooded.port, 400);
    try {
      const answer = await rawRequest(flooded.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      expect(answer.status).toBe(200);
      // The closes reach the client as events; on a loaded machine 360 of them take longer than poll's default 1 s.
      await expect.poll(() => socks.filter((s) => !s.destroyed).length, { timeout: 10_000 }).toBeLessThanOrEqual(40);
      expect(alive(flooded.controller.pid)).toBe(true);
    } finally {
      for (const s of socks) s.destroy();
    }
  });
});
