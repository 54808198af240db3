/**
 * Hostile or broken VNC servers (README, Security: threat 8): garbage, a server that stalls forever, a 2^32-1 reason
 * length, truncation, a refused authentication, a disconnect mid-handshake, a flood, half a ServerInit and a 2^32-1
 * desktop name. Each must end only its own
 * connection, with a log line naming the failure, while a good connection to a real Xvnc (vdtest32) keeps working.
 *
 * authorize() is a plain Map standing in for the controller's token store (test/helpers/map-proxy.ts).
 */
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ProxyTarget } from '../../controller/proxy/index.js';
import { startFakeVncServer, type FakeVncBehaviour, type FakeVncServer } from '../helpers/fake-vnc-server.js';
import { tcpDesktop } from '../helpers/tcp-desktop.js';
import { startMapProxy, type MapProxy } from '../helpers/map-proxy.js';
import { isRefused, openWebSocket, type RfbWsClient } from '../helpers/rfb-ws-client.js';
import { testUser } from '../helpers/users.js';
import { startXvnc, type XvncHandle } from '../helpers/xvnc.js';

const PASSWORD = randomBytes(6).toString('base64url').slice(0, 8);
let xvnc: XvncHandle;
let mp: MapProxy;
let base: string;
let good: RfbWsClient;
const fakes: FakeVncServer[] = [];
const targets = new Map<string, ProxyTarget>();
const logLines: Array<Record<string, unknown>> = [];

function tokenFor(port: number, password = PASSWORD): string {
  const token = randomBytes(16).toString('hex');
  targets.set(token, { sessionId: `s-${token.slice(0, 8)}`, username: 'vdtest32', blade: 'b', desktop: tcpDesktop('127.0.0.1', port), password, tokenHash: token });
  return token;
}

async function connect(token: string): Promise<RfbWsClient> {
  const c = await openWebSocket(`${base}/websockify?token=${token}`);
  if (isRefused(c)) throw new Error(`refused ${c.status}`);
  return c;
}

/** One small FramebufferUpdateRequest/Update round trip on the good connection. */
async function goodStillWorks(): Promise<void> {
  const update = await good.smallUpdate();
  expect(update.type).toBe(0);
  expect(update.encodings.every((e) => e === 0)).toBe(true);
}

beforeAll(async () => {
  xvnc = await startXvnc({ username: testUser(32), password: PASSWORD, rootColour: 'blue' });
  mp = await startMapProxy(targets, {
    log: pino(
      { level: 'info' },
      new Writable({
        write(chunk: Buffer, _e, cb) {
          for (const l of chunk.toString().split('\n').filter(Boolean)) logLines.push(JSON.parse(l) as Record<string, unknown>);
          cb();
        },
      }),
    ),
    handshakeTimeoutMs: 1500,
  });
  base = mp.base;
  good = await connect(tokenFor(xvnc.port));
  await good.handshakeNone();
});

afterAll(async () => {
  good?.ws.terminate();
  await mp?.close();
  for (const f of fakes) await f.close();
  await xvnc?.stop();
});

const cases: Array<[FakeVncBehaviour, string, RegExp]> = [
  ['garbage', 'VD_ERR_VNC_HANDSHAKE', /unsupported protocol version "HELLO WORLD."/],
  ['stall', 'VD_ERR_VNC_HANDSHAKE', /timed out/],
  ['huge-reason', 'VD_ERR_VNC_HANDSHAKE', /4294967295-byte failure reason/],
  ['truncated', 'VD_ERR_VNC_HANDSHAKE', /closed the connection during the RFB handshake/],
  ['auth-fail', 'VD_ERR_VNC_AUTH_FAILED', /refused VNC authentication: Authentication failure/],
  ['disconnect', 'VD_ERR_VNC_HANDSHAKE', /closed the connection during the RFB handshake/],
  // The proxy reads the handshake in small reads, so it judges the flood's first complete message (200 security types,
  // none known) before the handshake's byte bound is reached (that bound is tested in proxy-rfb-handshake.test.ts).
  ['flood', 'VD_ERR_VNC_HANDSHAKE', /no supported security type/],
  // Found by the RFB fuzzer at FUZZ_SCALE=100: the handshake timeout ended at the browser's ClientInit, so a desktop
  // that then sent half a ServerInit left the viewer waiting until the idle timeout (30 min).
  ['half-server-init', 'VD_ERR_VNC_HANDSHAKE', /timed out/],
  ['huge-name', 'VD_ERR_VNC_HANDSHAKE', /4294967295-byte name/],
];

describe('a hostile VNC server ends only its own connection', () => {
  it.each(cases)('%s', async (behaviour, code, message) => {
    const fake = await startFakeVncServer(behaviour);
    fakes.push(fake);
    const token = tokenFor(fake.port);
    const c = await connect(token);
    // The browser side of the handshake still runs (in parallel); the connection then ends with the error code.
    await expect(c.handshakeNone()).rejects.toThrow(/closed/);
    expect(c.closed).toEqual({ code: 1011, reason: code });
    const line = logLines.find((l) => l.sessionId === `s-${token.slice(0, 8)}` && l.reason !== undefined);
    expect(line).toMatchObject({ level: 40, err: { code } });
    expect(String(line!.msg)).toMatch(message);
    await goodStillWorks();
  });

  it('an unreachable desktop ends the connection with VD_ERR_VNC_CONNECT', async () => {
    const fake = await startFakeVncServer('stall');
    const port = fake.port;
    await fake.close(); // nothing listens there any more
    const c = await connect(tokenFor(port));
    await expect(c.handshakeNone()).rejects.toThrow(/closed/);
    expect(c.closed).toEqual({ code: 1011, reason: 'VD_ERR_VNC_CONNECT' });
    await goodStillWorks();
  });

  it('a garbage browser handshake ends only that connection', async () => {
    const c = await connect(tokenFor(xvnc.port));
    await c.read(12);
    c.write(Buffer.from('GET / HTTP/1.1\r\n'));
    const closed = await c.closedPromise;
    expect(closed).toEqual({ code: 1008, reason: 'VD_ERR_BROWSER_HANDSHAKE' });
    await goodStillWorks();
    expect(mp.proxy.connections).toBe(1);
  });
});
