/**
 * The controller's REST API against a real agent (real Xvnc, mTLS) on loopback: authentication on every route,
 * the OpenAPI document, the original route, and bad input that must change nothing. Users vdtest16..vdtest19.
 */
import { cpus, hostname } from 'node:os';
import { readFileSync, rmSync } from 'node:fs';
import { Validator } from '@seriousme/openapi-schema-validator';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentClient, alive, call, descendants, startAgent, waitFor, type AgentProcess } from '../helpers/agent-process.js';
import { makePki, type Pki } from '../helpers/certs.js';
import { api, waitForBladeStates } from '../helpers/controller-checks.js';
import { buildController, type InProcessController } from '../helpers/controller-process.js';
import { testUser } from '../helpers/users.js';

let pki: Pki;
let agent: AgentProcess;
let c: InProcessController;

/** Xvnc processes started by our agent (others' tests run their own agents and desktops on this machine). */
function agentXvncs(): number[] {
  return descendants(agent.pid).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'Xvnc';
    } catch {
      return false;
    }
  });
}

beforeAll(async () => {
  pki = makePki();
  agent = await startAgent({ pki, args: ['--max-sessions', '10'] });
  c = await buildController({ pki, blades: [{ name: 'blade-a', address: `127.0.0.1:${agent.port}` }] });
  await waitForBladeStates(c, { 'blade-a': 'UP' });
});

afterAll(async () => {
  for (const s of (await api(c, 'GET', '/api/v1/sessions?state=live')).body?.sessions ?? []) {
    await api(c, 'DELETE', `/api/v1/sessions/${s.id}`);
  }
  await c?.stop();
  if (agent) {
    const client = agentClient(agent.address, pki);
    const left = await call(client, client.listSessions, {}).catch(() => ({ sessions: [] }));
    for (const s of left.sessions) await call(client, client.stopSession, { id: s.id }).catch(() => {});
    client.close();
    await agent.stop();
  }
});

/** Every authenticated route, with a path that would otherwise be valid. */
const UUID = '00000000-0000-4000-8000-000000000000';
const PROTECTED: [string, string, unknown?][] = [
  ['POST', '/api/v1/sessions', { username: 'vdtest16' }],
  ['GET', '/api/v1/sessions'],
  ['GET', `/api/v1/sessions/${UUID}`],
  ['DELETE', `/api/v1/sessions/${UUID}`],
  ['GET', '/api/v1/blades'],
  ['GET', '/api/v1/blades/blade-a'],
  ['POST', '/api/v1/blades', { name: 'x', address: '127.0.0.1:1' }],
  ['POST', '/api/v1/blades/blade-a/cordon'],
  ['POST', '/api/v1/blades/blade-a/uncordon'],
  ['POST', '/api/v1/blades/blade-a/drain'],
  ['GET', '/vncdispatch/vdtest16/127.0.0.1'],
  ['GET', '/api/v1/openapi.json'],
  ['GET', '/api/v1/events'],
  ['DELETE', '/api/v1/blades/blade-a'],
];

describe('authentication', () => {
  it.each(PROTECTED)('%s %s needs a valid API key', async (method, path, body) => {
    // What a refused call must leave as it was; other tests in this file may have made sessions before this one.
    const state = async (): Promise<{ sessions: string[]; blades: string[] }> => ({
      sessions: (await api(c, 'GET', '/api/v1/sessions?state=all&limit=1000')).body.sessions
        .map((s: { id: string; state: string }) => `${s.id}:${s.state}`).sort(),
      blades: (await api(c, 'GET', '/api/v1/blades')).body.blades
        .map((b: { name: string; address: string; adminState: string }) => `${b.name}@${b.address}:${b.adminState}`).sort(),
    });
    const before = await state();
    for (const authorization of [undefined, 'Bearer wrong-key-wrong-key-wrong', `Basic ${c.apiKey}`, `Bearer ${c.apiKey}x`, 'Bearer ']) {
      const headers: Record<string, string> = {};
      if (authorization !== undefined) headers.authorization = authorization;
      if (body !== undefined) headers['content-type'] = 'application/json';
      const res = await fetch(`${c.url}${path}`, { method, headers, ...(body !== undefined && { body: JSON.stringify(body) }) });
      expect(res.status).toBe(401);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('VD_ERR_UNAUTHORIZED');
    }
    // Nothing happened: no session made or ended, no blade added, removed or changed.
    expect(await state()).toEqual(before);
    expect(before.blades.filter((b: string) => b.startsWith('blade-a@'))).toHaveLength(1);
  });

  it('health, readiness and metrics need no key', async () => {
    expect((await fetch(`${c.url}/healthz`)).status).toBe(200);
    const ready = await fetch(`${c.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ ready: true, store: true, bladesUp: 1 });
    const metrics = await (await fetch(`${c.url}/metrics`)).text();
    expect(metrics).toMatch(/vncdispatch_blade_up\{blade="blade-a"\} 1/);
  });

  it('never logs the API key', () => {
    expect(c.logs.join('\n')).not.toContain(c.apiKey);
  });

  // A desktop's Xvnc is logged as xvncPid, so `pid` always means the process that wrote the line.
  it('names the service, host and process on every log line, controller and agent alike', () => {
    const lines = (logs: string[]) => logs.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    const controllerLines = lines(c.logs);
    const agentLines = lines(agent.logs);
    expect(controllerLines.length).toBeGreaterThan(0);
    expect(agentLines.length).toBeGreaterThan(0);
    for (const l of controllerLines) expect(l).toMatchObject({ service: 'vncdispatch-controller', hostname: hostname(), pid: process.pid });
    for (const l of agentLines) expect(l).toMatchObject({ service: 'vncdispatch-agent', hostname: hostname(), pid: agent.pid });
  });
});

describe('OpenAPI document', () => {
  it('is valid OpenAPI 3 and lists every route the API serves', async () => {
    const r = await api(c, 'GET', '/api/v1/openapi.json');
    expect(r.status).toBe(200);
    const validator = new Validator();
    const result = await validator.validate(r.body);
    expect(result.errors ?? []).toEqual([]);
    expect(result.valid).toBe(true);
    const documented = new Set(Object.entries(r.body.paths as Record<string, Record<string, unknown>>)
      .flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`)));
    const served = PROTECTED.map(([m, p]) => `${m} ${p
      .replace(UUID, '{id}').replace('/blades/blade-a', '/blades/{name}')
      .replace('/vncdispatch/vdtest16/127.0.0.1', '/vncdispatch/{username}/{remoteip}')}`);
    const open = ['GET /healthz', 'GET /readyz', 'GET /metrics', 'POST /viewer/reconnect'];
    for (const route of [...served, ...open]) expect(documented).toContain(route);
    // ...and every route fastify registered with a tag (the API) is documented, nothing more.
    expect([...documented].sort()).toEqual([...new Set([...served, ...open])].sort());
    expect(r.body.components.securitySchemes.apiKey).toMatchObject({ type: 'http', scheme: 'bearer' });
    expect(r.body.paths['/healthz'].get.security).toEqual([]);
  });
});

describe('sessions and the original route', () => {
  it('POST gives a session with a token and viewer URL, GET never shows the password or a token', async () => {
    const r = await api(c, 'POST', '/api/v1/sessions', { username: testUser(16), clientIp: '127.0.0.1' });
    expect(r.status).toBe(201);
    expect(r.body).toMatchObject({ username: 'vdtest16', blade: 'blade-a', state: 'running', clientIp: '127.0.0.1' });
    expect(r.body.token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(r.body.websocketPath).toBe(`/websockify?token=${r.body.token}`);
    expect(r.body.viewerUrl).toBe(`${c.url}/viewer/#session=${r.body.id}&token=${r.body.token}&key=${
      new URL(r.body.viewerUrl).hash.split('&key=')[1]}`);
    const stored = await c.store.getSession(r.body.id);
    expect(stored!.password).toMatch(/^[A-Za-z0-9]{8}$/);
    for (const path of [`/api/v1/sessions/${r.body.id}`, '/api/v1/sessions', '/api/v1/blades']) {
      const g = await api(c, 'GET', path);
      expect(g.text).not.toContain(stored!.password!);
      expect(g.text).not.toContain(r.body.token);
      expect(g.text).not.toMatch(/password/i);
    }
    expect(r.text).not.toContain(stored!.password!);
    expect(c.logs.join('\n')).not.toContain(stored!.password!);
    expect(c.logs.join('\n')).not.toContain(r.body.token);
    expect(alive(stored!.pid!)).toBe(true);
  });

  it('the original GET /vncdispatch/{username}/{remoteip} works, with its fields and without the password', async () => {
    const r = await api(c, 'GET', `/vncdispatch/${testUser(17)}/127.0.0.1`);
    expect(r.status).toBe(200);
    expect(Object.keys(r.body).sort()).toEqual(['blade', 'display', 'remoteip', 'token', 'username', 'vncpid']);
    expect(r.body).toMatchObject({ username: 'vdtest17', blade: 'blade-a', remoteip: '127.0.0.1' });
    expect(alive(r.body.vncpid)).toBe(true);
    const s = (await c.store.getLiveSessionByUser('vdtest17'))!;
    expect(r.body.display).toBe(s.display);
    expect(r.text).not.toContain(s.password!);
    // Calling it again returns the same desktop (as the original did), with a new token.
    const again = await api(c, 'GET', `/vncdispatch/${testUser(17)}/127.0.0.1`);
    expect(again.body.vncpid).toBe(r.body.vncpid);
    expect(again.body.token).not.toBe(r.body.token);
  });

  it('DELETE stops the desktop and revokes its tokens', async () => {
    const r = await api(c, 'POST', '/api/v1/sessions', { username: testUser(18) });
    const pid = (await c.store.getSession(r.body.id))!.pid!;
    expect(alive(pid)).toBe(true);
    const d = await api(c, 'DELETE', `/api/v1/sessions/${r.body.id}`);
    expect(d.status).toBe(200);
    expect(d.body).toMatchObject({ state: 'ended', endReason: 'deleted' });
    await waitFor(() => !alive(pid), 'the Xvnc of the deleted session to exit');
    await expect(c.controller.tokens.consume(r.body.token, null)).rejects.toMatchObject({ code: 'VD_ERR_TOKEN_REVOKED' });
    expect((await api(c, 'GET', `/api/v1/sessions/${r.body.id}`)).body.state).toBe('ended');
    expect((await api(c, 'GET', `/api/v1/sessions/${UUID}`)).status).toBe(404);
  });
});

describe('blades', () => {
  it("GET /api/v1/blades shows the agent's health as it reports it: state, capacity, load, memory, CPUs", async () => {
    const [b] = (await api(c, 'GET', '/api/v1/blades')).body.blades;
    const memTotalKb = Number(/MemTotal:\s+(\d+) kB/.exec(readFileSync('/proc/meminfo', 'utf8'))![1]);
    expect(b).toMatchObject({ name: 'blade-a', state: 'UP', capacity: 10, cpus: cpus().length,
      memory: { totalBytes: memTotalKb * 1024 } });
    expect(b.memory.availableBytes).toBeGreaterThan(0);
    expect(b.memory.availableBytes).toBeLessThanOrEqual(b.memory.totalBytes);
    expect(b.load.load1).toBeGreaterThanOrEqual(0);
    expect(Date.parse(b.lastSeen)).not.toBeNaN();
  });
});

describe('bad input changes nothing', () => {
  const big = 'a'.repeat(10_000);
  const cases: [string, unknown, string, RegExp][] = [
    ['shell metacharacters', { username: 'a;id' }, 'VD_ERR_BAD_REQUEST', /username/],
    ['command substitution', { username: '$(id)' }, 'VD_ERR_BAD_REQUEST', /username/],
    ['an option', { username: '-c' }, 'VD_ERR_BAD_REQUEST', /username/],
    ['a path', { username: '../x' }, 'VD_ERR_BAD_REQUEST', /username/],
    ['a 10 kB name', { username: big }, 'VD_ERR_BAD_REQUEST', /username/],
    ['no username', {}, 'VD_ERR_BAD_REQUEST', /username/],
    ['a wrong type', { username: ['vdtest19'] }, 'VD_ERR_BAD_REQUEST', /username/],
    ['an unknown field', { username: 'vdtest19', blade: '10.0.0.1:5900' }, 'VD_ERR_BAD_REQUEST', /additional/],
    ['a bad IP', { username: 'vdtest19', clientIp: '999.1.1.1' }, 'VD_ERR_BAD_REQUEST', /clientIp/],
    ['a host name as IP', { username: 'vdtest19', clientIp: 'example.com' }, 'VD_ERR_BAD_REQUEST', /clientIp/],
    ['an IPv6 zone', { username: 'vdtest19', clientIp: 'fe80::1%eth0' }, 'VD_ERR_BAD_REQUEST', /clientIp/],
    ['an unknown user', { username: 'vdnosuchuser' }, 'VD_ERR_UNKNOWN_USER', /vdnosuchuser/],
    ['root', { username: 'root' }, '', /root/],
  ];

  const allRows = async () => (await api(c, 'GET', '/api/v1/sessions?state=all&limit=1000')).body.sessions
    .map((s: { id: string; state: string }) => `${s.id}:${s.state}`).sort();

  it.each(cases)('%s', async (_what, body, code, message) => {
    const before = agentXvncs().length;
    const rowsBefore = await allRows();
    const r = await api(c, 'POST', '/api/v1/sessions', body);
    expect(r.status).toBeGreaterThanOrEqual(400);
    expect(r.status).toBeLessThan(500);
    expect(r.body.error.code).toMatch(code ? new RegExp(`^${code}$`) : /^VD_ERR_[A-Z_]+$/);
    expect(r.body.error.message).toMatch(message);
    expect(agentXvncs().length).toBe(before);
    const username = (body as { username?: unknown }).username;
    if (typeof username === 'string') expect(await c.store.getLiveSessionByUser(username)).toBeNull();
    // Not even an ended row: a refused request leaves the store as it was.
    expect(await allRows()).toEqual(rowsBefore);
  });

  it('oversized, malformed and non-JSON bodies get 4xx JSON errors', async () => {
    const post = (body: string, type = 'application/json') => fetch(`${c.url}/api/v1/sessions`, {
      method: 'POST', headers: { authorization: c.headers.authorization!, 'content-type': type }, body,
    });
    const checks: [Response, number, string][] = [
      [await post(JSON.stringify({ username: 'a'.repeat(100_000) })), 413, 'VD_ERR_PAYLOAD_TOO_LARGE'],
      [await post('{"username": "vdtest19"'), 400, 'VD_ERR_BAD_REQUEST'],
      [await post(''), 400, 'VD_ERR_BAD_REQUEST'],
      [await post('username=vdtest19', 'application/x-www-form-urlencoded'), 415, 'VD_ERR_UNSUPPORTED_MEDIA_TYPE'],
      [await post('{"__proto__": {"x": 1}, "username": "vdtest19"}'), 400, 'VD_ERR_BAD_REQUEST'],
    ];
    for (const [res, status, code] of checks) {
      expect(res.status).toBe(status);
      expect(res.headers.get('content-type')).toMatch(/application\/json/);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe(code);
    }
    expect(await c.store.getLiveSessionByUser('vdtest19')).toBeNull();
  });

  it('bad IPs and names on the original route and blade routes', async () => {
    for (const path of ['/vncdispatch/vdtest19/not-an-ip', '/vncdispatch/vdtest19/1.2.3.4.5', '/vncdispatch/a;id/127.0.0.1',
      '/vncdispatch/%24(id)/127.0.0.1']) {
      const r = await api(c, 'GET', path);
      expect(r.status).toBe(400);
      expect(r.body.error.code).toBe('VD_ERR_BAD_REQUEST');
    }
    for (const body of [{ name: 'x;y', address: '127.0.0.1:1' }, { name: 'x', address: '$(id):22' },
      { name: 'x', address: '127.0.0.1' }, { name: 'x', address: '127.0.0.1:99999' }]) {
      const r = await api(c, 'POST', '/api/v1/blades', body);
      expect(r.status).toBe(400);
      expect(r.body.error.code).toBe('VD_ERR_BAD_REQUEST');
    }
    expect((await api(c, 'POST', '/api/v1/blades/nosuch/cordon')).body.error.code).toBe('VD_ERR_NOT_FOUND');
    expect((await api(c, 'GET', '/api/v1/sessions/not-a-uuid')).status).toBe(400);
    expect((await api(c, 'GET', '/api/v1/nothing-here')).body.error.code).toBe('VD_ERR_NOT_FOUND');
    expect((await api(c, 'GET', '/api/v1/blades')).body.blades.map((b: { name: string }) => b.name)).toEqual(['blade-a']);
    expect(await c.store.getLiveSessionByUser('vdtest19')).toBeNull();
  });
});

describe('flags an operator sets', () => {
  // A controller of its own, without blades: what these flags change needs no desktop.
  let tuned: InProcessController;
  beforeAll(async () => {
    tuned = await buildController({ pki, args: ['--max-body-bytes', '1024', '--events-heartbeat-ms', '200'] });
  });
  afterAll(async () => {
    await tuned?.stop();
    if (tuned) rmSync(tuned.dataDir, { recursive: true, force: true });
  });

  it('--max-body-bytes: a 2 KiB body, fine by default, gets 413 VD_ERR_PAYLOAD_TOO_LARGE under a 1 KiB limit', async () => {
    const body = JSON.stringify({ username: 'a'.repeat(2048) });
    const post = (to: InProcessController) => fetch(`${to.url}/api/v1/sessions`, { method: 'POST', headers: to.headers, body });
    // Under the default limit the body is read and the username refused for what it is.
    const byDefault = await post(c);
    expect(byDefault.status).toBe(400);
    const limited = await post(tuned);
    expect(limited.status).toBe(413);
    expect(((await limited.json()) as { error: { code: string } }).error.code).toBe('VD_ERR_PAYLOAD_TOO_LARGE');
    expect((await api(tuned, 'GET', '/api/v1/sessions?state=all')).body.sessions).toEqual([]);
  });

  it('--events-heartbeat-ms: a quiet event stream carries keep-alive comments at the set interval', async () => {
    const ac = new AbortController();
    const res = await fetch(`${tuned.url}/api/v1/events`, { headers: { authorization: `Bearer ${tuned.apiKey}` }, signal: ac.signal });
    try {
      expect(res.status).toBe(200);
      const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
      let text = '';
      // Nothing changes on a controller without blades: after the snapshot, only heartbeats arrive. The default
      // (15 s) would not send one within the test's time.
      while ((text.match(/^: keep-alive\n\n/gm) ?? []).length < 2) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`the stream ended: ${text}`);
        text += value;
      }
      expect(text).toMatch(/^event: snapshot\n/m);
    } finally {
      ac.abort();
    }
  }, 5000);
});
