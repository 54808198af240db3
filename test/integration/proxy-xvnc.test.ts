/**
 * The proxy against a real TigerVNC Xvnc running as test user vdtest31 with VNC authentication: a WebSocket client
 * (the `ws` package standing in for noVNC) gets security type None from the proxy, the proxy authenticates to Xvnc
 * with the session password, and real pixels come back. Also: oversized frames, closeSession, revalidate, and a
 * wrong session password.
 *
 * authorize()/revalidate() are backed by a plain Map in this file: it stands in for the controller's token store
 * (controller/tokens + store), whose real wiring into the proxy is covered by the controller's own tests.
 */
import { randomBytes, createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { VncDispatchError } from '../../controller/errors.js';
import { VncProxy, type ProxyTarget } from '../../controller/proxy/index.js';
import { isRefused, openWebSocket, type RfbWsClient } from '../helpers/rfb-ws-client.js';
import { tcpDesktop } from '../helpers/tcp-desktop.js';
import { testUser } from '../helpers/users.js';
import { startXvnc, type XvncHandle } from '../helpers/xvnc.js';

const PASSWORD = randomBytes(6).toString('base64url').slice(0, 8);

interface Grant {
  target: ProxyTarget;
  revoked: boolean;
}

let xvnc: XvncHandle;
let server: Server;
let proxy: VncProxy;
let base: string;
const logLines: string[] = [];
/** The token store's stand-in: token -> grant. */
const grants = new Map<string, Grant>();

function sha256(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

function grant(overrides: Partial<ProxyTarget> = {}): { token: string; grant: Grant } {
  const token = randomBytes(32).toString('base64url');
  const g: Grant = {
    target: {
      sessionId: `s-${randomBytes(4).toString('hex')}`,
      username: xvnc.username,
      blade: 'blade-test',
      desktop: tcpDesktop('127.0.0.1', xvnc.port),
      password: PASSWORD,
      tokenHash: sha256(token),
      ...overrides,
    },
    revoked: false,
  };
  grants.set(token, g);
  return { token, grant: g };
}

async function connect(token: string): Promise<RfbWsClient> {
  const ws = await openWebSocket(`${base}/websockify?token=${token}`, { origin: base.replace('ws:', 'http:') });
  if (isRefused(ws)) throw new Error(`refused: ${ws.status} ${JSON.stringify(ws.body)}`);
  return ws;
}

function logs(): Array<Record<string, unknown>> {
  return logLines.map((l) => JSON.parse(l) as Record<string, unknown>);
}

beforeAll(async () => {
  xvnc = await startXvnc({ username: testUser(31), password: PASSWORD, rootColour: 'red' });
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logLines.push(...chunk.toString().split('\n').filter(Boolean));
      cb();
    },
  });
  proxy = new VncProxy({
    log: pino({ level: 'debug' }, sink),
    async authorize(token) {
      const g = grants.get(token);
      if (!g || g.revoked) throw new VncDispatchError('VD_ERR_TOKEN_INVALID', 401, 'unknown token');
      return g.target;
    },
    async revalidate(targets) {
      const ok = new Set<string>();
      for (const g of grants.values()) if (!g.revoked && targets.some((t) => t.tokenHash === g.target.tokenHash)) ok.add(g.target.tokenHash);
      return ok;
    },
    revalidateIntervalMs: 200,
  });
  server = createServer((_req, res) => res.writeHead(404).end());
  server.on('upgrade', (req, socket, head) => proxy.handleUpgrade(req, socket, head));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `ws://127.0.0.1:${(server.address() as { port: number }).port}`;
});

afterAll(async () => {
  await proxy?.close();
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  await xvnc?.stop();
});

const clients: RfbWsClient[] = [];
afterEach(() => {
  for (const c of clients.splice(0)) c.ws.terminate();
});

describe('proxy to a real Xvnc', () => {
  it('completes RFB with security None for the browser and relays a framebuffer update with the red desktop', async () => {
    const { token, grant: g } = grant();
    const c = await connect(token);
    clients.push(c);
    expect(c.ws.protocol).toBe('binary');
    const init = await c.handshakeNone();
    expect(init.version).toBe('RFB 003.008\n');
    expect(init.securityTypes).toEqual([1]);
    expect([init.width, init.height]).toEqual([640, 480]);

    // FramebufferUpdateRequest, non-incremental, whole screen. No SetEncodings sent, so Xvnc answers in Raw.
    const req = Buffer.alloc(10);
    req.writeUInt8(3, 0);
    req.writeUInt16BE(640, 6);
    req.writeUInt16BE(480, 8);
    c.write(req);
    const head = await c.read(4);
    expect(head[0]).toBe(0); // FramebufferUpdate
    const rects = head.readUInt16BE(2);
    expect(rects).toBeGreaterThan(0);
    const rect = await c.read(12);
    const [w, h, encoding] = [rect.readUInt16BE(4), rect.readUInt16BE(6), rect.readInt32BE(8)];
    expect(encoding).toBe(0);
    const pixels = await c.read(w * h * (init.bpp / 8));
    // Default pixel format of Xvnc at depth 24: 32 bpp little-endian, red at shift 16. xsetroot -solid red.
    const mid = ((h >> 1) * w + (w >> 1)) * 4;
    expect(pixels.readUInt32LE(mid) & 0xffffff).toBe(0xff0000);

    c.close();
    await c.closedPromise;
    // This connection's line: the tests run in any order, and others' lines may come first.
    const mine = (l: Record<string, unknown>) => l.msg === 'desktop connection closed' && l.sessionId === g.target.sessionId;
    await expect.poll(() => logs().find(mine)).toBeTruthy();
    const closeLine = logs().find(mine)!;
    expect(closeLine).toMatchObject({ user: testUser(31), blade: 'blade-test', clientIp: '127.0.0.1', reason: 'browser-closed' });
    // Counted by the proxy: at least the pixels this client read (Xvnc may split the screen into several rectangles).
    expect(closeLine.bytesDown as number).toBeGreaterThanOrEqual(w * h * 4);
    expect(closeLine.bytesUp as number).toBeGreaterThan(0);
    expect(logs().some((l) => l.msg === 'desktop connection opened')).toBe(true);
    // The password and the raw token never reach the log.
    expect(logLines.join('\n')).not.toContain(PASSWORD);
    expect(logLines.join('\n')).not.toContain(token);
  });

  it('closes a browser frame larger than maxPayload with 1009 and drops the desktop connection', async () => {
    const { token, grant: g } = grant();
    const c = await connect(token);
    clients.push(c);
    await c.handshakeNone();
    c.write(Buffer.alloc(64 * 1024 + 1));
    const closed = await c.closedPromise;
    expect(closed.code).toBe(1009);
    await expect
      .poll(() => logs().find((l) => l.msg === 'desktop connection closed' && l.sessionId === g.target.sessionId)?.reason)
      .toBe('payload-too-large');
  });

  it('closeSession closes the live sockets of that session only', async () => {
    const a = grant();
    const b = grant();
    const ca = await connect(a.token);
    const cb = await connect(b.token);
    clients.push(ca, cb);
    await ca.handshakeNone();
    await cb.handshakeNone();
    expect(proxy.closeSession(a.grant.target.sessionId, 'deleted')).toBe(1);
    expect((await ca.closedPromise).code).toBe(1008);
    // The other session still relays: ask for an update and get one.
    const req = Buffer.alloc(10);
    req.writeUInt8(3, 0);
    req.writeUInt16BE(8, 6);
    req.writeUInt16BE(8, 8);
    cb.write(req);
    expect((await cb.read(4))[0]).toBe(0);
    expect(cb.closed).toBeNull();
  });

  it('closes a connection whose token revalidate() no longer allows', async () => {
    const { token, grant: g } = grant();
    const c = await connect(token);
    clients.push(c);
    await c.handshakeNone();
    g.revoked = true;
    const closed = await c.closedPromise;
    expect(closed.code).toBe(1008);
    await expect
      .poll(() => logs().find((l) => l.msg === 'desktop connection closed' && l.sessionId === g.target.sessionId)?.reason)
      .toBe('revoked');
  });

  it('ends the connection with a clear error when Xvnc refuses the session password', async () => {
    const { token, grant: g } = grant({ password: 'wrong-pw' });
    const c = await connect(token);
    clients.push(c);
    await expect(c.handshakeNone()).rejects.toThrow(/closed/);
    expect(c.closed).toMatchObject({ code: 1011, reason: 'VD_ERR_VNC_AUTH_FAILED' });
    const line = logs().find((l) => l.msg?.toString().startsWith('desktop connection closed') && l.sessionId === g.target.sessionId);
    expect(line).toMatchObject({ level: 40, reason: 'handshake-failed', err: { code: 'VD_ERR_VNC_AUTH_FAILED' } });
  });
});
