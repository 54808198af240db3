/**
 * The REST API as documented: every response the OpenAPI document lists is produced by a real request against the
 * controller (in-process, with a real agent and Xvnc as vdtest85/vdtest86) and its body validates against the
 * documented schema; every route enforces its role; every 401 carries WWW-Authenticate, every API answer
 * Cache-Control: no-store, and an https public URL adds HSTS.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import addFormats from 'ajv-formats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, waitFor, type AgentProcess } from '../helpers/agent-process.js';
import { makePki, type Pki } from '../helpers/certs.js';
import { buildController, type InProcessController } from '../helpers/controller-process.js';
import { testUser } from '../helpers/users.js';

const USER = testUser(85);
const OTHER = testUser(86);
const READ_KEY = 'conformance-read-key-0123456789';
const OPERATE_KEY = 'conformance-operate-key-012345678';
const UUID = '00000000-0000-4000-8000-000000000000';

/**
 * Documented answers this test cannot provoke on demand, each with the reason. Everything else documented must be
 * seen here.
 */
const NOT_PROVOKED: Record<string, string> = {
  'openSession 409': 'VD_ERR_SESSION_CONFLICT needs the session to end in the instant between its start and its token',
};

interface Answer {
  status: number;
  headers: Headers;
  text: string;
  json: unknown;
}

let pki: Pki;
let agent: AgentProcess;
let c: InProcessController;
let dir: string;
let doc: { paths: Record<string, Record<string, { operationId: string; responses: Record<string, { content?: Record<string, { schema: unknown }> }> }>>; components: { schemas: Record<string, unknown> } };
const seen = new Map<string, Answer[]>();
const ajv = new Ajv({ strict: false, allErrors: true });
addFormats.default(ajv);

function opFor(method: string, url: string): string | null {
  if (!(doc as typeof doc | undefined)) return null;
  const path = new URL(url, 'http://x').pathname;
  for (const [template, ops] of Object.entries(doc.paths)) {
    const re = new RegExp(`^${template.replace(/\{[^}]+\}/g, '[^/]+')}$`);
    if (re.test(path) && ops[method.toLowerCase()]) return ops[method.toLowerCase()]!.operationId;
  }
  return null;
}

async function req(method: string, path: string, opts: { key?: string | null; body?: unknown; raw?: string; type?: string; prefer?: string } = {}): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (opts.prefer) headers.prefer = opts.prefer;
  const key = opts.key === undefined ? c.apiKey : opts.key;
  if (key) headers.authorization = `Bearer ${key}`;
  if (opts.body !== undefined || opts.raw !== undefined) headers['content-type'] = opts.type ?? 'application/json';
  const res = await fetch(`${c.url}${path}`, {
    method, headers,
    ...(opts.body !== undefined && { body: JSON.stringify(opts.body) }),
    ...(opts.raw !== undefined && { body: opts.raw }),
  });
  const text = await res.text();
  let json: unknown = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = null;
  }
  const a = { status: res.status, headers: res.headers, text, json };
  const op = opFor(method, path);
  if (op) seen.set(`${op} ${a.status}`, [...(seen.get(`${op} ${a.status}`) ?? []), a]);
  return a;
}

/** Opens the event stream and resolves with its status, headers and first event; the stream is then closed. */
async function firstEvent(key: string | null = c.apiKey): Promise<{ res: Response; event?: string; data?: unknown; close: () => void }> {
  const ac = new AbortController();
  const res = await fetch(`${c.url}/api/v1/events`, { headers: key ? { authorization: `Bearer ${key}` } : {}, signal: ac.signal });
  const op = 'streamEvents';
  if (res.status !== 200) {
    const text = await res.text();
    seen.set(`${op} ${res.status}`, [{ status: res.status, headers: res.headers, text, json: JSON.parse(text) }]);
    return { res, close: () => ac.abort() };
  }
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  while (!buf.includes('\n\nid:') && !/event: snapshot\ndata: .*\n\n/.test(buf)) buf += (await reader.read()).value ?? '';
  const m = /event: (\S+)\ndata: (.*)\n\n/.exec(buf)!;
  seen.set(`${op} 200`, [{ status: 200, headers: res.headers, text: buf, json: null }]);
  return { res, event: m[1]!, data: JSON.parse(m[2]!), close: () => ac.abort() };
}

beforeAll(async () => {
  pki = makePki();
  agent = await startAgent({ pki });
  dir = mkdtempSync(join(tmpdir(), 'vd-conformance-'));
  const keys = join(dir, 'keys');
  writeFileSync(keys, `read ${READ_KEY}\noperate ${OPERATE_KEY}\n`);
  c = await buildController({ pki, blades: [{ name: 'blade-a', address: `127.0.0.1:${agent.port}` }], args: ['--api-keys-file', keys] });
  await waitFor(async () => (await req('GET', '/api/v1/blades/blade-a')).json !== null
    && ((await req('GET', '/api/v1/blades/blade-a')).json as { state: string }).state === 'UP', 'blade-a UP', 15_000);
  doc = (await req('GET', '/api/v1/openapi.json')).json as typeof doc;
  for (const [name, schema] of Object.entries(doc.components.schemas)) ajv.addSchema(schema as object, `#/components/schemas/${name}`);
}, 60_000);

afterAll(async () => {
  for (const s of ((await req('GET', '/api/v1/sessions')).json as { sessions: { id: string }[] } | null)?.sessions ?? []) {
    await req('DELETE', `/api/v1/sessions/${s.id}`);
  }
  await c?.stop();
  await agent?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
  if (c) rmSync(c.dataDir, { recursive: true, force: true });
}, 60_000);

/**
 * Provokes every documented answer once per file run, whichever test asks first: the coverage checks below need
 * all of them, and each test must pass alone and in any order.
 */
let provoking: Promise<void> | undefined;
const provokeAll = () => (provoking ??= provokeEveryAnswer());
let streamCap: Promise<void> | undefined;
const provokeStreamCap = () => (streamCap ??= fillStreamCap());

async function provokeEveryAnswer(): Promise<void> {
  // Health.
  await req('GET', '/healthz');
  await req('GET', '/readyz');
  await req('GET', '/metrics');
  await req('GET', '/api/v1/openapi.json');
  await req('GET', '/api/v1/openapi.json', { key: null });

  // Sessions.
  const created = await req('POST', '/api/v1/sessions', { body: { username: USER } });
  expect(created.status).toBe(201);
  const { id } = created.json as { id: string };
  const again = await req('POST', '/api/v1/sessions', { body: { username: USER } });
  expect(again.status).toBe(200);
  // The second grant's own reconnect key (the first grant's keeps working too).
  const { viewerUrl } = again.json as { viewerUrl: string };
  await req('POST', '/api/v1/sessions', { body: { username: 'a;id' } });
  await req('POST', '/api/v1/sessions', { key: null, body: { username: USER } });
  await req('POST', '/api/v1/sessions', { key: READ_KEY, body: { username: USER } });
  await req('POST', '/api/v1/sessions', { body: { username: 'root' } });
  await req('POST', '/api/v1/sessions', { raw: JSON.stringify({ username: 'x'.repeat(20_000) }) });
  await req('POST', '/api/v1/sessions', { raw: 'username=x', type: 'text/plain' });
  await req('POST', '/api/v1/sessions', { body: { username: 'nosuchuser-conf' } });
  // Answered before the blade refuses the account: 202, and the session then ends start-failed.
  const accepted = await req('POST', '/api/v1/sessions', { body: { username: 'nosuchuser-async' }, prefer: 'respond-async' });
  expect(accepted.status).toBe(202);
  await req('GET', '/api/v1/sessions?state=live');
  await req('GET', '/api/v1/sessions?state=nope');
  await req('GET', '/api/v1/sessions', { key: null });
  await req('GET', `/api/v1/sessions/${id}`);
  await req('GET', '/api/v1/sessions/not-a-uuid');
  await req('GET', `/api/v1/sessions/${id}`, { key: null });
  await req('GET', `/api/v1/sessions/${UUID}`);
  await req('DELETE', '/api/v1/sessions/not-a-uuid');
  await req('DELETE', `/api/v1/sessions/${id}`, { key: null });
  await req('DELETE', `/api/v1/sessions/${id}`, { key: READ_KEY });
  await req('DELETE', `/api/v1/sessions/${UUID}`);
  await req('GET', `/vncdispatch/${OTHER}/127.0.0.1`);
  await req('GET', '/vncdispatch/a;b/127.0.0.1');
  await req('GET', `/vncdispatch/${OTHER}/127.0.0.1`, { key: null });
  await req('GET', `/vncdispatch/${OTHER}/127.0.0.1`, { key: READ_KEY });
  await req('GET', '/vncdispatch/nosuchuser-conf/127.0.0.1');

  // The viewer's reconnect, with the key from the viewer URL.
  const fragment = new URLSearchParams(new URL(viewerUrl).hash.slice(1));
  expect((await req('POST', '/viewer/reconnect', { key: null, body: { session: id, key: fragment.get('key') } })).status).toBe(200);
  await req('POST', '/viewer/reconnect', { key: null, body: { session: id } });
  // A grant bound to another client IP: its key is refused from here.
  const bound = (await req('POST', '/api/v1/sessions', { body: { username: USER, clientIp: '203.0.113.9' } })).json as { viewerUrl: string };
  const boundKey = new URLSearchParams(new URL(bound.viewerUrl).hash.slice(1)).get('key');
  expect((await req('POST', '/viewer/reconnect', { key: null, body: { session: id, key: boundKey } })).status).toBe(403);
  await req('POST', '/viewer/reconnect', { key: null, body: { session: UUID, key: fragment.get('key') } });
  await req('POST', '/viewer/reconnect', { key: null, raw: 'x'.repeat(5000) });
  await req('POST', '/viewer/reconnect', { key: null, raw: 'x', type: 'text/plain' });

  // Blades: a live session on blade-a makes moving or removing it refused.
  await req('GET', '/api/v1/blades');
  await req('GET', '/api/v1/blades', { key: null });
  await req('GET', '/api/v1/blades/blade-a');
  await req('GET', '/api/v1/blades/a;b');
  await req('GET', '/api/v1/blades/blade-a', { key: null });
  await req('GET', '/api/v1/blades/nope');
  await req('POST', '/api/v1/blades', { body: { name: 'spare', address: '127.0.0.1:9' } });
  await req('POST', '/api/v1/blades', { body: { name: 'spare', address: '127.0.0.1:9' } });
  await req('POST', '/api/v1/blades', { body: { name: 'spare', address: 'nohost' } });
  await req('POST', '/api/v1/blades', { key: null, body: { name: 'spare', address: '127.0.0.1:9' } });
  await req('POST', '/api/v1/blades', { key: OPERATE_KEY, body: { name: 'spare2', address: '127.0.0.1:9' } });
  await req('POST', '/api/v1/blades', { body: { name: 'blade-a', address: '127.0.0.1:9' } });
  const busy = await req('DELETE', '/api/v1/blades/blade-a');
  expect((busy.json as { error: { code: string } }).error.code).toBe('VD_ERR_BLADE_BUSY');
  await req('DELETE', '/api/v1/blades/a;b');
  await req('DELETE', '/api/v1/blades/spare', { key: null });
  await req('DELETE', '/api/v1/blades/spare', { key: OPERATE_KEY });
  await req('DELETE', '/api/v1/blades/nope');
  expect((await req('DELETE', '/api/v1/blades/spare')).status).toBe(200);
  for (const action of ['cordon', 'uncordon', 'drain']) {
    await req('POST', `/api/v1/blades/a;b/${action}`);
    await req('POST', `/api/v1/blades/blade-a/${action}`, { key: null });
    await req('POST', `/api/v1/blades/blade-a/${action}`, { key: READ_KEY });
    await req('POST', `/api/v1/blades/nope/${action}`);
    await req('POST', `/api/v1/blades/blade-a/${action}`);
  }
  // Drained: no blade can take a new desktop, and the controller is not ready.
  await req('POST', '/api/v1/sessions', { body: { username: 'vdtest84' } });
  await req('GET', '/vncdispatch/vdtest84/127.0.0.1');
  await req('GET', '/readyz');
  await req('POST', '/api/v1/blades/blade-a/uncordon');

  // The event stream.
  const ev = await firstEvent();
  expect(ev.event).toBe('snapshot');
  const snap = ev.data as { blades: unknown[]; sessions: unknown[] };
  for (const b of snap.blades) expect(ajv.validate('#/components/schemas/Blade', b), ajv.errorsText()).toBe(true);
  for (const s of snap.sessions) expect(ajv.validate('#/components/schemas/Session', s), ajv.errorsText()).toBe(true);
  ev.close();
  (await firstEvent(null)).close();

  expect((await req('DELETE', `/api/v1/sessions/${id}`)).status).toBe(200);
  // The reconnect endpoint's per-address budget (30 a minute) runs out.
  for (let i = 0; i < 40 && !seen.has('viewerReconnect 429'); i++) await req('POST', '/viewer/reconnect', { key: null, body: {} });
  expect(seen.get('viewerReconnect 429')?.[0]?.headers.get('retry-after')).toMatch(/^\d+$/);
}

async function fillStreamCap(): Promise<void> {
  const streams = [];
  try {
    for (let i = 0; i < 100; i++) streams.push(await firstEvent());
    const refused = await firstEvent();
    expect(refused.res.status).toBe(429);
    expect(seen.get('streamEvents 429')![0]!.json).toMatchObject({ error: { code: 'VD_ERR_TOO_MANY_STREAMS' } });
    streams.pop()!.close();
    await waitFor(async () => {
      const again = await firstEvent();
      again.close();
      return again.res.status === 200;
    }, 'a slot to be free again', 5000);
  } finally {
    for (const s of streams) s.close();
  }
}

describe('every documented response, from real requests', () => {
  it('provokes each one and validates its body against the documented schema', async () => {
    await provokeAll();
  }, 120_000);

  it('429: the event stream has a cap per controller (VD_ERR_TOO_MANY_STREAMS) and frees a slot when a stream closes', async () => {
    await provokeStreamCap();
  }, 60_000);

  it('saw every documented response (and nothing undocumented), each JSON body valid against its schema', async () => {
    await provokeAll();
    await provokeStreamCap();
    // Every documented response was seen, and every JSON body matches its schema.
    const missing: string[] = [];
    for (const ops of Object.values(doc.paths)) {
      for (const op of Object.values(ops)) {
        for (const [status, response] of Object.entries(op.responses)) {
          const key = `${op.operationId} ${status}`;
          const answers = seen.get(key);
          if (!answers) {
            if (!NOT_PROVOKED[key]) missing.push(key);
            continue;
          }
          const schema = response.content?.['application/json']?.schema;
          if (!schema) continue;
          for (const a of answers) {
            expect(ajv.validate(schema, a.json), `${key}: ${ajv.errorsText()} in ${a.text.slice(0, 300)}`).toBe(true);
          }
        }
      }
    }
    expect(missing).toEqual([]);
    // ...and nothing was answered that is not documented.
    const undocumented = [...seen.keys()].filter((k) => {
      const [op, status] = k.split(' ');
      return !Object.values(doc.paths).some((ops) => Object.values(ops).some((o) => o.operationId === op && status! in o.responses));
    });
    expect(undocumented).toEqual([]);
  }, 180_000);

});

describe('headers', () => {
  it('every 401 carries WWW-Authenticate; every API answer says Cache-Control: no-store', async () => {
    await provokeAll();
    for (const [key, answers] of seen) {
      for (const a of answers) {
        if (a.status === 401) expect(a.headers.get('www-authenticate'), key).toMatch(/^Bearer realm="vncdispatch"/);
        const op = key.split(' ')[0]!;
        if (!['liveness', 'readiness', 'metrics'].includes(op)) expect(a.headers.get('cache-control'), key).toBe('no-store');
      }
    }
    expect([...seen.keys()].filter((k) => k.endsWith(' 401')).length).toBeGreaterThan(10);
  }, 120_000);

  it('no HSTS over a plain http public URL; HSTS on every answer when the public URL is https', async () => {
    expect((await req('GET', '/healthz')).headers.get('strict-transport-security')).toBeNull();
    const https = await buildController({ pki, args: ['--public-url', 'https://desktops.example.org'] });
    try {
      for (const path of ['/healthz', '/api/v1/blades', '/dashboard/', '/nope']) {
        const res = await fetch(`${https.url}${path}`);
        expect(res.headers.get('strict-transport-security'), path).toBe('max-age=31536000');
      }
      const doc2 = await (await fetch(`${https.url}/api/v1/openapi.json`, { headers: { authorization: `Bearer ${https.apiKey}` } })).json() as { servers: { url: string }[] };
      expect(doc2.servers[0]!.url).toBe('https://desktops.example.org');
    } finally {
      await https.stop();
      rmSync(https.dataDir, { recursive: true, force: true });
    }
  });
});

describe('roles', () => {
  it('a read key may look but not change anything; an operate key may not register or remove blades', async () => {
    const read = (m: string, p: string, body?: unknown) => req(m, p, { key: READ_KEY, ...(body !== undefined && { body }) });
    for (const path of ['/api/v1/sessions', '/api/v1/blades', '/api/v1/blades/blade-a', '/api/v1/openapi.json']) {
      expect((await read('GET', path)).status, path).toBe(200);
    }
    const refused: [string, string, unknown?][] = [
      ['POST', '/api/v1/sessions', { username: OTHER }],
      ['DELETE', `/api/v1/sessions/${UUID}`],
      ['POST', '/api/v1/blades/blade-a/cordon'],
      ['POST', '/api/v1/blades/blade-a/drain'],
      ['POST', '/api/v1/blades/blade-a/uncordon'],
      ['POST', '/api/v1/blades', { name: 'x1', address: '127.0.0.1:9' }],
      ['DELETE', '/api/v1/blades/blade-a'],
      ['GET', `/vncdispatch/${OTHER}/127.0.0.1`],
    ];
    for (const [m, p, body] of refused) {
      const a = await read(m, p, body);
      expect(a.status, `${m} ${p}`).toBe(403);
      expect((a.json as { error: { code: string; message: string } }).error).toMatchObject({ code: 'VD_ERR_FORBIDDEN' });
    }
    for (const [m, p, body] of refused.slice(5, 7)) {
      expect((await req(m, p, { key: OPERATE_KEY, ...(body !== undefined && { body }) })).status, `${m} ${p}`).toBe(403);
    }
    expect((await req('POST', '/api/v1/blades/blade-a/cordon', { key: OPERATE_KEY })).status).toBe(200);
    expect((await req('POST', '/api/v1/blades/blade-a/uncordon', { key: OPERATE_KEY })).status).toBe(200);
    // Nothing changed: no session for OTHER from a read key, blade-a still registered and ACTIVE.
    const blades = (await req('GET', '/api/v1/blades')).json as { blades: { name: string; adminState: string }[] };
    expect(blades.blades.map((b) => `${b.name}:${b.adminState}`)).toContain('blade-a:ACTIVE');
    expect(blades.blades.map((b) => b.name)).not.toContain('x1');
  });

  it('every documented route says which role it needs', () => {
    for (const [path, ops] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(ops) as [string, { description?: string; security?: unknown[] }][]) {
        if (op.security && op.security.length === 0) continue;
        expect(op.description ?? '', `${method} ${path}`).toMatch(/Needs an API key with role `(read|operate|admin)` or higher\./);
      }
    }
  });
});
