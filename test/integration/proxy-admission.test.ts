/**
 * Everything the proxy refuses before the upgrade (README, Security: threat 3, 4, 5, 13): missing/unknown/expired/revoked/
 * reused tokens, a foreign Origin, a token bound to another client IP, X-Forwarded-For only from trusted proxies, the
 * per-IP connection cap and the bad-token back-off. The target is a counting fake VNC server: every refusal must leave
 * its connection count untouched, i.e. no TCP connection to the "blade" was opened.
 *
 * authorize() is backed by a plain Map standing in for the controller's token store (single-use consumption, expiry,
 * IP binding are decided there in production; the controller's tests cover that wiring). Its error codes here are
 * this file's own, with the statuses the controller uses (401/403).
 */
import { randomBytes, createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VncDispatchError } from '../../controller/errors.js';
import { VncProxy, type ProxyOptions, type ProxyTarget } from '../../controller/proxy/index.js';
import { startFakeVncServer, type FakeVncServer } from '../helpers/fake-vnc-server.js';
import { tcpDesktop } from '../helpers/tcp-desktop.js';
import { isRefused, openWebSocket, type Refused, type RfbWsClient, type UpgradeOptions } from '../helpers/rfb-ws-client.js';

interface Grant {
  target: ProxyTarget;
  expiresAt: number;
  revoked: boolean;
  used: boolean;
  singleUse: boolean;
  clientIp: string | null;
}

let target: FakeVncServer;
let server: Server;
let proxy: VncProxy;
let base: string;
let ownOrigin: string;
let grants: Map<string, Grant>;
/** Client IPs authorize() was called with, in order. */
let seenIps: string[];
const clients: RfbWsClient[] = [];

function refusal(status: number, code: string): VncDispatchError {
  return new VncDispatchError(code, status, code);
}

function grant(options: Partial<Omit<Grant, 'target'>> = {}): string {
  const token = randomBytes(32).toString('base64url');
  grants.set(token, {
    target: {
      sessionId: `s-${randomBytes(4).toString('hex')}`,
      username: 'vdtest33',
      blade: 'fake',
      desktop: tcpDesktop('127.0.0.1', target.port),
      password: 'unused!!',
      tokenHash: createHash('sha256').update(token).digest('hex'),
    },
    expiresAt: Date.now() + 60_000,
    revoked: false,
    used: false,
    singleUse: true,
    clientIp: null,
    ...options,
  });
  return token;
}

async function startProxy(overrides: Partial<ProxyOptions> = {}): Promise<void> {
  proxy = new VncProxy({
    log: pino({ level: 'silent' }),
    async authorize(token, clientIp) {
      seenIps.push(clientIp);
      const g = grants.get(token);
      if (!g) throw refusal(401, 'TEST_TOKEN_UNKNOWN');
      if (g.revoked) throw refusal(403, 'TEST_TOKEN_REVOKED');
      if (Date.now() >= g.expiresAt) throw refusal(401, 'TEST_TOKEN_EXPIRED');
      if (g.singleUse && g.used) throw refusal(403, 'TEST_TOKEN_USED');
      if (g.clientIp !== null && g.clientIp !== clientIp) throw refusal(403, 'TEST_TOKEN_WRONG_IP');
      g.used = true;
      return g.target;
    },
    async revalidate(targets) {
      return new Set(targets.map((t) => t.tokenHash));
    },
    ...overrides,
  });
  server = createServer((_req, res) => res.writeHead(404).end());
  server.on('upgrade', (req, socket, head) => proxy.handleUpgrade(req, socket, head));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  base = `ws://127.0.0.1:${port}`;
  ownOrigin = `http://127.0.0.1:${port}`;
}

async function open(token: string | null, options: UpgradeOptions & { path?: string } = {}): Promise<RfbWsClient | Refused> {
  const { path = '/websockify', ...rest } = options;
  const query = token === null ? '' : `?token=${encodeURIComponent(token)}`;
  const r = await openWebSocket(`${base}${path}${query}`, { origin: ownOrigin, ...rest });
  if (!isRefused(r)) clients.push(r);
  return r;
}

async function expectRefused(p: Promise<RfbWsClient | Refused>, status: number, code: string): Promise<Refused> {
  const r = await p;
  expect(isRefused(r) ? { status: r.status, code: r.body.error?.code } : 'upgraded').toEqual({ status, code });
  return r as Refused;
}

async function expectWorking(p: Promise<RfbWsClient | Refused>): Promise<RfbWsClient> {
  const r = await p;
  if (isRefused(r)) throw new Error(`refused: ${r.status} ${JSON.stringify(r.body)}`);
  const init = await r.handshakeNone();
  expect(init.name).toBe('fake');
  r.write(Buffer.from('ping'));
  expect((await r.read(4)).toString()).toBe('ping');
  return r;
}

beforeEach(async () => {
  grants = new Map();
  seenIps = [];
  target = await startFakeVncServer('none');
});

afterEach(async () => {
  for (const c of clients.splice(0)) c.ws.terminate();
  await proxy?.close();
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  await target.close();
});

describe('tokens', () => {
  beforeEach(() => startProxy());

  it('a valid token connects (with or without the binary subprotocol)', async () => {
    const a = await expectWorking(open(grant()));
    expect(a.ws.protocol).toBe('binary');
    const b = await expectWorking(open(grant(), { protocols: [] }));
    expect(b.ws.protocol).toBe('');
    expect(target.connections).toBe(2);
    expect(proxy.connections).toBe(2);
  });

  it('refuses missing, unknown, expired and revoked tokens without touching the blade', async () => {
    await expectRefused(open(null), 401, 'VD_ERR_TOKEN_REQUIRED');
    await expectRefused(open('not-a-token'), 401, 'TEST_TOKEN_UNKNOWN');
    await expectRefused(open(grant({ expiresAt: Date.now() - 1 })), 401, 'TEST_TOKEN_EXPIRED');
    await expectRefused(open(grant({ revoked: true })), 403, 'TEST_TOKEN_REVOKED');
    expect(target.connections).toBe(0);
  });

  it('a single-use token connects once; a reusable one reconnects', async () => {
    const once = grant();
    (await expectWorking(open(once))).close();
    await expectRefused(open(once), 403, 'TEST_TOKEN_USED');
    expect(target.connections).toBe(1);
    const reusable = grant({ singleUse: false });
    (await expectWorking(open(reusable))).close();
    await expectWorking(open(reusable));
    expect(target.connections).toBe(3);
  });

  it('other paths get 404 and never reach authorize()', async () => {
    await expectRefused(open(grant(), { path: '/other' }), 404, 'VD_ERR_NOT_FOUND');
    expect(seenIps).toEqual([]);
    expect(target.connections).toBe(0);
  });

  it('a failing token store answers 503, not a connection', async () => {
    await proxy.close();
    await new Promise<void>((r) => server.close(() => r()));
    await startProxy({
      authorize: () => Promise.reject(new Error('store down')),
    });
    await expectRefused(open(grant()), 503, 'VD_ERR_PROXY_UNAVAILABLE');
    expect(target.connections).toBe(0);
  });
});

describe('Origin', () => {
  it('by default allows the controller own origin and requests without Origin, refuses a foreign one', async () => {
    await startProxy();
    await expectWorking(open(grant()));
    await expectWorking(open(grant(), { origin: undefined }));
    const before = target.connections;
    await expectRefused(open(grant(), { origin: 'http://evil.example' }), 403, 'VD_ERR_ORIGIN_FORBIDDEN');
    await expectRefused(open(grant(), { origin: 'null' }), 403, 'VD_ERR_ORIGIN_FORBIDDEN');
    // Same host, other scheme: a different origin.
    await expectRefused(open(grant(), { origin: ownOrigin.replace('http:', 'https:') }), 403, 'VD_ERR_ORIGIN_FORBIDDEN');
    expect(target.connections).toBe(before);
  });

  it('with allowedOrigins, only those (exactly) are allowed', async () => {
    await startProxy({ allowedOrigins: ['https://desk.example.org'] });
    await expectWorking(open(grant(), { origin: 'https://desk.example.org' }));
    await expectRefused(open(grant()), 403, 'VD_ERR_ORIGIN_FORBIDDEN');
    await expectRefused(open(grant(), { origin: 'https://desk.example.org.evil.example' }), 403, 'VD_ERR_ORIGIN_FORBIDDEN');
    expect(target.connections).toBe(1);
  });
});

describe('client IP', () => {
  it('refuses a token bound to another client IP; ignores X-Forwarded-For from untrusted peers', async () => {
    await startProxy();
    await expectRefused(open(grant({ clientIp: '10.1.2.3' })), 403, 'TEST_TOKEN_WRONG_IP');
    await expectRefused(open(grant({ clientIp: '10.1.2.3' }), { headers: { 'X-Forwarded-For': '10.1.2.3' } }), 403, 'TEST_TOKEN_WRONG_IP');
    expect(seenIps).toEqual(['127.0.0.1', '127.0.0.1']);
    await expectWorking(open(grant({ clientIp: '127.0.0.1' })));
    expect(target.connections).toBe(1);
  });

  it('honours X-Forwarded-For (and -Proto/-Host for the own origin) from a trusted proxy', async () => {
    await startProxy({ trustProxy: ['127.0.0.1/32'] });
    const headers = { 'X-Forwarded-For': '10.1.2.3', 'X-Forwarded-Proto': 'https', 'X-Forwarded-Host': 'desk.example.org' };
    await expectWorking(open(grant({ clientIp: '10.1.2.3' }), { headers, origin: 'https://desk.example.org' }));
    expect(seenIps).toEqual(['10.1.2.3']);
    // The forwarded client is still held to its own binding.
    await expectRefused(open(grant({ clientIp: '10.9.9.9' }), { headers, origin: 'https://desk.example.org' }), 403, 'TEST_TOKEN_WRONG_IP');
    expect(target.connections).toBe(1);
  });
});

describe('liveness', () => {
  it('closes a connection with no bytes either way for idleTimeoutMs', async () => {
    await startProxy({ idleTimeoutMs: 300 });
    const c = await expectWorking(open(grant()));
    expect(await c.closedPromise).toEqual({ code: 1000, reason: 'idle timeout' });
    await expect.poll(() => target.connections - proxy.connections).toBe(1);
  });

  it('terminates a client that stops answering pings', async () => {
    await startProxy({ heartbeatMs: 100 });
    const c = await expectWorking(open(grant(), { autoPong: false }));
    // No close frame: the proxy drops the TCP connection (1006 on the client side).
    expect((await c.closedPromise).code).toBe(1006);
    expect(proxy.connections).toBe(0);
  });

  it('keeps a client that answers pings', async () => {
    await startProxy({ heartbeatMs: 100 });
    const c = await expectWorking(open(grant()));
    await new Promise((r) => setTimeout(r, 500));
    expect(c.closed).toBeNull();
    c.write(Buffer.from('pong'));
    expect((await c.read(4)).toString()).toBe('pong');
  });
});

describe('per-IP limits', () => {
  it('refuses connections beyond the per-IP cap with 429 until one closes', async () => {
    await startProxy({ maxConnectionsPerIp: 2 });
    const a = await expectWorking(open(grant()));
    await expectWorking(open(grant()));
    const excess = grant();
    const refused = await expectRefused(open(excess), 429, 'VD_ERR_TOO_MANY_CONNECTIONS');
    expect(refused.headers['retry-after']).toBeDefined();
    expect(target.connections).toBe(2);
    // The refused request did not use up its single-use token.
    expect(grants.get(excess)!.used).toBe(false);
    a.close();
    await a.closedPromise;
    await expect.poll(() => proxy.connections).toBe(1);
    await expectWorking(open(excess));
  });

  it('backs off an IP after repeated refused tokens with 429, but a valid token from it still gets in', async () => {
    await startProxy({ badTokenBackoff: { limit: 3, windowMs: 60_000 } });
    for (let i = 0; i < 3; i++) await expectRefused(open(`guess-${i}`), 401, 'TEST_TOKEN_UNKNOWN');
    const r = await expectRefused(open('guess-3'), 429, 'VD_ERR_TOO_MANY_BAD_TOKENS');
    expect(Number(r.headers['retry-after'])).toBeGreaterThan(0);
    expect(target.connections).toBe(0);
    const c = await open(grant());
    expect(isRefused(c)).toBe(false);
  });
});
