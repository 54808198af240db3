/**
 * Fuzzing every REST body, path parameter and query of the real controller process (with a valid API key, so the
 * input reaches the routes): POST /api/v1/sessions, the session and blade routes, the original route and the
 * viewer's reconnect endpoint. Properties: the process stays up and keeps answering /healthz; every error answer is a
 * documented one; a refused request creates no session row, registers no blade and starts no desktop.
 * Fixed seed; FUZZ_SCALE (npm run test:fuzz) multiplies the runs.
 *
 * Some generated requests are valid and change the rig (`POST /api/v1/blades/edge/drain`, a blade registered at
 * 127.0.0.1:22): each such change is undone before the next run, so every run meets the same controller. Without
 * that, a drain at one run made a later request for an unknown user a 503 (no blade to ask) that leaves an ended
 * `start-failed` row, and the property blamed the later request.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { alive, descendants } from '../helpers/agent-process.js';
import { api } from '../helpers/controller-checks.js';
import { startEdgeRig, type EdgeRig } from '../helpers/edge-rig.js';
import { expectDocumentedAnswer, fuzzParams, fuzzTimeout, StoreProbe } from '../helpers/fuzz.js';
import { parseAnswer } from '../helpers/raw-http.js';

let rig: EdgeRig;
let store: StoreProbe;

beforeAll(async () => {
  rig = await startEdgeRig();
  store = new StoreProbe(rig.controller.dataDir);
});

afterAll(async () => {
  store?.close();
  await rig?.close();
});

const anyText = fc.oneof(fc.string({ maxLength: 30 }), fc.string({ unit: 'binary', maxLength: 30 }),
  fc.constantFrom('root', 'nobody', 'a;id', '$(id)', '-c', '../x', '', ' ', 'edge', '127.0.0.1', '::1', '10.0.0.1:22',
    '127.0.0.1:22', '[::1]:1', 'localhost:0', '00000000-0000-4000-8000-000000000000', '%00', '__proto__', 'constructor'));
const anyJson = fc.oneof(anyText, fc.jsonValue({ maxDepth: 2 }));
const fields = fc.record({
  username: anyJson, clientIp: anyJson, name: anyJson, address: anyJson, session: anyJson, key: anyJson,
  __proto__: anyJson, extra: anyJson,
}, { requiredKeys: [] });
const body = fc.oneof(
  fields.map((o) => JSON.stringify(o)),
  fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
  fc.string({ unit: 'binary', maxLength: 60 }),
  fc.constantFrom('', '{', '{"username":', 'null', '[]', '{"username":"x"}'.repeat(2000), '{"a":'.repeat(500)),
);
const contentType = fc.constantFrom('application/json', 'application/json; charset=utf-8', 'text/plain', '',
  'application/x-www-form-urlencoded', 'application/json; charset=latin1', 'multipart/form-data; boundary=x');
const segment = anyText.map((t) => encodeURIComponent(t));
const query = fc.dictionary(fc.constantFrom('state', 'blade', 'limit', 'x', 'token', '__proto__'),
  fc.oneof(anyText, fc.integer().map(String)), { maxKeys: 4 })
  .map((q) => new URLSearchParams(q).toString());

const route = fc.oneof(
  fc.record({ method: fc.constant('POST'), path: fc.constant('/api/v1/sessions'), body }),
  fc.record({ method: fc.constant('GET'), path: query.map((q) => `/api/v1/sessions?${q}`), body: fc.constant(null) }),
  fc.record({ method: fc.constantFrom('GET', 'DELETE'), path: segment.map((s) => `/api/v1/sessions/${s}`), body: fc.constant(null) }),
  fc.record({ method: fc.constant('GET'), path: segment.map((s) => `/api/v1/blades/${s}`), body: fc.constant(null) }),
  fc.record({ method: fc.constant('POST'), path: fc.constant('/api/v1/blades'), body }),
  fc.record({ method: fc.constant('POST'),
    path: fc.tuple(segment, fc.constantFrom('cordon', 'uncordon', 'drain')).map(([s, a]) => `/api/v1/blades/${s}/${a}`), body: fc.constant(null) }),
  fc.record({ method: fc.constant('GET'), path: fc.tuple(segment, segment).map(([u, ip]) => `/vncdispatch/${u}/${ip}`), body: fc.constant(null) }),
  fc.record({ method: fc.constant('POST'), path: fc.constant('/viewer/reconnect'), body }),
);

type Route = { method: string; path: string; body: string | null };

/**
 * Puts the rig back as startEdgeRig made it after a request was accepted: its one blade `edge` ACTIVE, no other
 * blade, no live session. The store is read directly (cheap); the API is called only when something changed.
 */
async function restoreRig(): Promise<void> {
  for (const b of store.blades()) {
    if (b.name !== 'edge') {
      const r = await api(rig.controller, 'DELETE', `/api/v1/blades/${encodeURIComponent(b.name)}?force=true`);
      expect(r.status, `removing blade ${b.name} the fuzz registered: ${r.text}`).toBe(200);
    } else if (b.adminState !== 'ACTIVE') {
      const r = await api(rig.controller, 'POST', '/api/v1/blades/edge/uncordon');
      expect(r.status, `uncordoning edge: ${r.text}`).toBe(200);
    }
  }
  for (const id of store.liveSessionIds()) await api(rig.controller, 'DELETE', `/api/v1/sessions/${id}`);
}

/**
 * Sequences found at scale, replayed first on every run: the blade drained (or cordoned) by one run must not turn a
 * later request into a failure of that later request.
 */
const REGRESSIONS: Array<[Route, string]> = [
  [{ method: 'POST', path: '/api/v1/blades/edge/drain', body: null }, 'application/json'],
  [{ method: 'GET', path: '/vncdispatch/constructor/%3A%3A1', body: null }, 'application/json; charset=latin1'],
  [{ method: 'POST', path: '/api/v1/blades/edge/cordon', body: null }, 'application/json'],
  [{ method: 'POST', path: '/api/v1/sessions', body: '{"username":"constructor"}' }, 'application/json'],
  [{ method: 'POST', path: '/api/v1/blades', body: '{"name":"root","address":"127.0.0.1:22"}' }, 'application/json'],
  [{ method: 'GET', path: '/vncdispatch/edge/127.0.0.1', body: null }, 'application/json'],
];

describe('fuzzing REST bodies and queries', () => {
  it('every request gets a documented answer, and a refused one changes nothing', async () => {
    const sessionsBefore = store.sessionRows();
    const desktopsBefore = descendants(rig.agent!.pid).length;
    await fc.assert(fc.asyncProperty(route, contentType, async (r, type) => {
      const blades = store.bladeRows();
      const sessions = store.sessionRows();
      const headers: Record<string, string> = { authorization: rig.controller.headers.authorization! };
      if (r.body !== null && type) headers['content-type'] = type;
      const res = await fetch(`${rig.controller.url}${r.path}`, { method: r.method, headers, ...(r.body !== null && { body: r.body }) });
      const text = await res.text();
      const context = `${r.method} ${r.path} ${type} ${JSON.stringify(r.body?.slice(0, 200))}`;
      expectDocumentedAnswer({ ...parseAnswer(Buffer.alloc(0), false), status: res.status, body: text }, context, r.method);
      if (res.status >= 400) {
        expect(store.sessionRows(), `session row left by ${context}`).toBe(sessions);
        expect(store.bladeRows(), `blade registered by ${context}`).toBe(blades);
      } else {
        await restoreRig();
      }
      expect(await rig.healthy()).toBe(true);
    }), { ...fuzzParams(300), examples: REGRESSIONS });
    expect(alive(rig.controller.pid)).toBe(true);
    expect(store.sessionRows()).toBe(sessionsBefore);
    expect(descendants(rig.agent!.pid).length).toBe(desktopsBefore);
  }, fuzzTimeout(120_000));
});
