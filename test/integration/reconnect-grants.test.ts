/**
 * Viewer links as a portal hands them out, against a real controller process (dist/controller/main.js) with a real
 * agent and Xvnc behind it, over real HTTP and WebSockets on loopback. Each grant (POST /api/v1/sessions) carries its
 * own reconnect key: a second grant for the same user leaves the first viewer's link working, also after the
 * controller restarts on the same store, and a key obeys the client IP its grant named. A session keeps at most
 * --max-reconnect-keys keys: a portal granting in a loop retires the oldest, never the newest. Loopback has a whole
 * /8, so "another address" is a real source address (127.0.0.2), not a forged header.
 */
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type AgentProcess } from '../helpers/agent-process.js';
import { makePki, type Pki } from '../helpers/certs.js';
import { api, waitForBladeStates } from '../helpers/controller-checks.js';
import { startController, type ControllerProcess } from '../helpers/controller-process.js';
import { tearDownRig } from '../helpers/edge-rig.js';
import { StoreProbe } from '../helpers/fuzz.js';
import { isRefused, openWebSocket, type RfbWsClient } from '../helpers/rfb-ws-client.js';
import { testUser } from '../helpers/users.js';

const SECOND_GRANT_USER = testUser(101);
const BOUND_USER = testUser(102);
const OTHER_ADDRESS = '127.0.0.2';
const LOOPING_USER = testUser(110);
/** The controller's --max-reconnect-keys here: small, so a loop passes it quickly (the default is 32). */
const MAX_KEYS = 3;
/** The looping portal's viewers reconnect from their own address, so they do not share the others' rate limit. */
const LOOP_ADDRESS = '127.0.0.3';

let pki: Pki;
let agent: AgentProcess;
let controller: ControllerProcess;
let dataDir: string;

async function start(): Promise<void> {
  controller = await startController({ pki, dataDir, blades: [{ name: 'grants', address: `127.0.0.1:${agent.port}` }],
    args: ['--max-reconnect-keys', String(MAX_KEYS)] });
  dataDir = controller.dataDir;
  await waitForBladeStates(controller, { grants: 'UP' });
}

interface Link {
  sessionId: string;
  token: string;
  key: string;
}

/** What the portal does: POST /api/v1/sessions and hand the viewer URL's secrets to a browser. */
async function grant(username: string, clientIp?: string): Promise<Link> {
  const r = await api(controller, 'POST', '/api/v1/sessions', { username, ...(clientIp && { clientIp }) });
  expect([200, 201], r.text).toContain(r.status);
  const fragment = new URLSearchParams(new URL(r.body.viewerUrl as string).hash.slice(1));
  return { sessionId: r.body.id as string, token: r.body.token as string, key: fragment.get('key')! };
}

/** What the viewer page does when its connection drops: POST /viewer/reconnect, from `from`. */
function reconnect(link: Link, from = '127.0.0.1'): Promise<{ status: number; body: any }> {
  const body = JSON.stringify({ session: link.sessionId, key: link.key });
  const url = new URL('/viewer/reconnect', controller.url);
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', localAddress: from, headers: { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Opens the desktop with a token as the viewer does, from `from`, and completes the RFB handshake. */
async function view(token: string, from = '127.0.0.1'): Promise<RfbWsClient> {
  const ws = await openWebSocket(`${controller.url.replace('http', 'ws')}/websockify?token=${token}`, { localAddress: from });
  if (isRefused(ws)) throw new Error(`refused ${ws.status} ${ws.body.error?.code}`);
  await ws.handshakeNone();
  return ws;
}

/** One FramebufferUpdateRequest/Update round trip: the viewer's desktop still answers through the proxy. */
async function stillShowsTheDesktop(ws: RfbWsClient): Promise<void> {
  const update = await ws.smallUpdate();
  expect(update.type).toBe(0);
  expect(update.encodings.every((e) => e === 0)).toBe(true);
}

beforeAll(async () => {
  pki = makePki();
  agent = await startAgent({ pki, args: ['--max-sessions', '4'] });
  await start();
}, 90_000);

afterAll(() => tearDownRig({ pki, agent, controller, dataDir }), 60_000);

describe('a second grant for the same user', () => {
  it('does not end the first viewer: its desktop stays open and its link reconnects, also after a controller restart', async () => {
    const first = await grant(SECOND_GRANT_USER);
    const firstViewer = await view(first.token);
    const second = await grant(SECOND_GRANT_USER);
    expect(second.sessionId).toBe(first.sessionId);
    expect(second.key).not.toBe(first.key);

    // The first page's connection drops and it asks for a new token with its own key: it gets one, not "ended".
    const again = await reconnect(first);
    expect(again.status, JSON.stringify(again.body)).toBe(200);
    const reopened = await view(again.body.token as string);
    expect(firstViewer.closed).toBeNull();
    expect((await reconnect(second)).status).toBe(200);
    reopened.close();
    firstViewer.close();

    // Both keys live in the store, so a restarted controller (or another one sharing the store) honours both.
    await controller.stop();
    await start();
    for (const link of [first, second]) {
      const r = await reconnect(link);
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      (await view(r.body.token as string)).close();
    }

    // Ending the session ends every grant's link.
    expect((await api(controller, 'DELETE', `/api/v1/sessions/${first.sessionId}`)).status).toBe(200);
    for (const link of [first, second]) {
      expect(await reconnect(link)).toMatchObject({ status: 410, body: { error: { code: 'VD_ERR_SESSION_ENDED' } } });
    }
  }, 120_000);
});

describe('a reconnect key bound by its grant to a client IP', () => {
  it('is refused from another address with 403 VD_ERR_RECONNECT_IP_MISMATCH, and reconnects from its own', async () => {
    const bound = await grant(BOUND_USER, OTHER_ADDRESS);
    const refused = await reconnect(bound, '127.0.0.1');
    expect(refused).toMatchObject({ status: 403, body: { error: { code: 'VD_ERR_RECONNECT_IP_MISMATCH' } } });

    // From the address the grant named it buys a token bound there too: it opens the desktop from that address only.
    const ok = await reconnect(bound, OTHER_ADDRESS);
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    const elsewhere = await openWebSocket(`${controller.url.replace('http', 'ws')}/websockify?token=${ok.body.token}`,
      { localAddress: '127.0.0.1' });
    expect(isRefused(elsewhere) && elsewhere.body.error?.code).toBe('VD_ERR_TOKEN_IP_MISMATCH');
    (await view(ok.body.token as string, OTHER_ADDRESS)).close();

    // An unbound grant for the same user has its own key, which works from anywhere; the bound one stays bound.
    const unbound = await grant(BOUND_USER);
    expect((await reconnect(unbound, '127.0.0.1')).status).toBe(200);
    expect((await reconnect(bound, '127.0.0.1')).status).toBe(403);
  }, 120_000);
});

describe('a portal that grants the same desktop over and over', () => {
  it('does not grow the session\'s keys: the newest --max-reconnect-keys links reconnect, older ones are retired, and an open viewer keeps its desktop', async () => {
    const first = await grant(LOOPING_USER);
    const firstViewer = await view(first.token);
    const links = [first];
    for (let i = 0; i < 7; i++) links.push(await grant(LOOPING_USER));
    expect(new Set(links.map((l) => l.sessionId)).size).toBe(1);

    // However many grants, the store holds MAX_KEYS keys for the session.
    const probe = new StoreProbe(controller.dataDir);
    try {
      expect(probe.reconnectKeyRows(first.sessionId)).toBe(MAX_KEYS);
    } finally {
      probe.close();
    }

    // The newest links reconnect; a retired one gets what any unknown key gets, and the page stops.
    for (const link of links.slice(-MAX_KEYS)) {
      const r = await reconnect(link, LOOP_ADDRESS);
      expect(r.status, JSON.stringify(r.body)).toBe(200);
    }
    for (const link of links.slice(0, -MAX_KEYS)) {
      expect(await reconnect(link, LOOP_ADDRESS)).toMatchObject({ status: 410, body: { error: { code: 'VD_ERR_SESSION_ENDED' } } });
    }

    // Retiring a key ends no connection: the first viewer, whose key went first, still has its desktop.
    await stillShowsTheDesktop(firstViewer);
    expect(firstViewer.closed).toBeNull();
    firstViewer.close();
  }, 120_000);
});
