/**
 * POST /api/v1/sessions with `Prefer: respond-async` (RFC 7240): the answer comes as soon as the session is reserved,
 * so a portal can send the browser to the viewer while the desktop starts; the proxy holds that viewer's connection
 * until the desktop runs. A real agent, real Xvnc and the in-process controller. Users vdtest119, vdtest120.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type AgentProcess } from '../helpers/agent-process.js';
import { makePki, type Pki } from '../helpers/certs.js';
import { api, waitForBladeStates } from '../helpers/controller-checks.js';
import { buildController, type InProcessController } from '../helpers/controller-process.js';
import { isRefused, openWebSocket } from '../helpers/rfb-ws-client.js';
import { testUser } from '../helpers/users.js';

const USER = testUser(119);
const WAITER = testUser(120);

let pki: Pki;
let agent: AgentProcess;
let c: InProcessController;

async function postAsync(body: object): Promise<{ status: number; body: Record<string, any>; applied: string | null }> {
  const res = await fetch(`${c.url}/api/v1/sessions`, {
    method: 'POST',
    headers: { authorization: c.headers.authorization!, 'content-type': 'application/json', prefer: 'respond-async, wait=5' },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json(), applied: res.headers.get('preference-applied') };
}

beforeAll(async () => {
  pki = makePki();
  agent = await startAgent({ pki });
  c = await buildController({ pki, blades: [{ name: 'blade-a', address: `127.0.0.1:${agent.port}` }] });
  await waitForBladeStates(c, { 'blade-a': 'UP' });
});

afterAll(async () => {
  for (const s of (await api(c, 'GET', '/api/v1/sessions')).body?.sessions ?? []) {
    await api(c, 'DELETE', `/api/v1/sessions/${s.id}`);
  }
  await c?.stop();
  await agent?.stop();
});

describe('Prefer: respond-async', () => {
  it('answers 202 with a token while the desktop starts, and that token reaches the desktop once it runs', async () => {
    const r = await postAsync({ username: USER });
    expect(r.status).toBe(202);
    expect(r.applied).toBe('respond-async');
    expect(r.body).toMatchObject({ username: USER, state: 'starting' });
    expect(typeof r.body.token).toBe('string');
    // Connecting at once, as a viewer loaded meanwhile would: the proxy holds the socket until the desktop runs.
    const client = await openWebSocket(`${c.url.replace('http:', 'ws:')}/websockify?token=${r.body.token}`, { origin: c.url });
    if (isRefused(client)) throw new Error(`refused: ${JSON.stringify(client)}`);
    try {
      const init = await client.handshakeNone();
      expect(init.name).toBe(`${USER}'s desktop`);
    } finally {
      client.close();
    }
    expect((await api(c, 'GET', `/api/v1/sessions/${r.body.id}`)).body.state).toBe('running');
    // The same user again, without the preference: the running desktop, as ever.
    const again = await api(c, 'POST', '/api/v1/sessions', { username: USER });
    expect(again.status).toBe(200);
    expect(again.body.id).toBe(r.body.id);
  });

  it('a request that waits, made while a background start runs, gets the desktop once it runs (200, not a 202 or 503)', async () => {
    const first = await postAsync({ username: WAITER });
    expect(first.status).toBe(202);
    const waited = await api(c, 'POST', '/api/v1/sessions', { username: WAITER });
    expect(waited.status).toBe(200);
    expect(waited.body).toMatchObject({ id: first.body.id, state: 'running' });
  });

  it('a start that fails after the answer ends the session as start-failed, and its token is refused', async () => {
    // No such account on the blade: the agent refuses it after the 202 was sent.
    const r = await postAsync({ username: 'vdnosuchuser' });
    expect(r.status).toBe(202);
    const client = await openWebSocket(`${c.url.replace('http:', 'ws:')}/websockify?token=${r.body.token}`, { origin: c.url });
    if (!isRefused(client)) {
      client.close();
      throw new Error('the token of a desktop that failed to start was accepted');
    }
    expect(client.status).toBe(401);
    // Which 401 depends on a race the viewer cannot see: a connection held while the start fails is told the
    // session ended; one that arrives after the session has ended finds its token revoked with it.
    expect(['VD_ERR_TOKEN_SESSION_ENDED', 'VD_ERR_TOKEN_REVOKED']).toContain(client.body.error?.code);
    const s = (await api(c, 'GET', `/api/v1/sessions/${r.body.id}`)).body;
    expect(s).toMatchObject({ state: 'ended', endReason: 'start-failed' });

    // The viewer's reconnect tells the holder of the session's own key why (the page says "could not be started");
    // any other key learns nothing beyond "ended".
    const key = new URLSearchParams(new URL(r.body.viewerUrl).hash.slice(1)).get('key');
    const reconnect = async (body: object) => {
      const res = await fetch(`${c.url}/viewer/reconnect`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      return { status: res.status, code: (await res.json() as { error?: { code?: string } }).error?.code };
    };
    expect(await reconnect({ session: r.body.id, key })).toEqual({ status: 410, code: 'VD_ERR_SESSION_START_FAILED' });
    expect(await reconnect({ session: r.body.id, key: `${key!.slice(0, -4)}AAAA` })).toEqual({ status: 410, code: 'VD_ERR_SESSION_ENDED' });
  });
});
