/**
 * POST /viewer/reconnect through a real fastify on 127.0.0.1:0, a real SqliteStore and the real TokenService:
 * a live session's key buys a token the TokenService accepts; an ended session, an unknown key and another session's
 * key all get the same 410; malformed input gets a 4xx JSON error; one client cannot hammer it; no secret is logged.
 */
import { randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../controller/log.js';
import { SqliteStore } from '../../controller/store/sqlite-store.js';
import { hashSecret, newReconnectKey } from '../../controller/tokens/secrets.js';
import { TokenService } from '../../controller/tokens/token-service.js';
import { registerWeb } from '../../controller/web/index.js';

let app: FastifyInstance;
let store: SqliteStore;
let tokens: TokenService;
let base: string;
let logLines: string[];

async function start(config: { viewerReconnectPerMinute?: number } = {}): Promise<void> {
  store = new SqliteStore({ filename: ':memory:' });
  await store.init();
  tokens = new TokenService(store, { ttlMs: 60_000, singleUse: true });
  logLines = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logLines.push(chunk.toString('utf8'));
      cb();
    },
  });
  app = Fastify();
  await registerWeb(app, { store, tokens, log: createLogger({ logLevel: 'debug' }, sink), config });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  base = `http://127.0.0.1:${address.port}`;
}

/** A running session as the API leaves it: on a blade, with a reconnect key whose hash is stored. */
async function liveSession(username: string, clientIp: string | null = null): Promise<{ id: string; key: string }> {
  const id = randomUUID();
  const key = newReconnectKey();
  const now = new Date();
  await store.createSession({ id, username, clientIp, now });
  await store.updateSession(
    id,
    { state: 'running', blade: 'blade-a', agentSessionId: 'a1', display: 7, port: 5907, pid: 4242, password: 'Pw123456' },
    now,
  );
  await store.addReconnectKey({ hash: hashSecret(key), sessionId: id, clientIp, createdAt: now }, { keep: 32 });
  return { id, key };
}

function post(body: unknown, headers: Record<string, string> = { 'content-type': 'application/json' }): Promise<Response> {
  return fetch(`${base}/viewer/reconnect`, {
    method: 'POST',
    headers,
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

beforeEach(async () => {
  await start();
});

afterEach(async () => {
  await app?.close();
  await store?.close();
});

describe('POST /viewer/reconnect', () => {
  it('gives a live session a fresh token that opens a connection (the TokenService accepts it)', async () => {
    const s = await liveSession('vdtest36');
    const res = await post({ session: s.id, key: s.key });
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    const body = (await res.json()) as { token: string; expiresAt: string; websocketPath: string };
    expect(body.websocketPath).toBe(`/websockify?token=${body.token}`);
    expect(new Date(body.expiresAt).getTime()).toBeGreaterThan(Date.now());
    const consumed = await tokens.consume(body.token, null);
    expect(consumed.session.id).toBe(s.id);
    // Each call is a new token (single-use tokens cannot be shared between two connections).
    const again = (await (await post({ session: s.id, key: s.key })).json()) as { token: string };
    expect(again.token).not.toBe(body.token);
  });

  it('binds the new token to the client IP its grant named', async () => {
    const s = await liveSession('vdtest37', '127.0.0.1');
    const body = (await (await post({ session: s.id, key: s.key })).json()) as { token: string };
    await expect(tokens.consume(body.token, '198.51.100.1')).rejects.toMatchObject({ code: 'VD_ERR_TOKEN_IP_MISMATCH' });
    await expect(tokens.consume(body.token, '127.0.0.1')).resolves.toMatchObject({ session: { id: s.id } });
  });

  it('refuses a key bound to another client IP with 403 VD_ERR_RECONNECT_IP_MISMATCH', async () => {
    const s = await liveSession('vdtest37', '203.0.113.9');
    const res = await post({ session: s.id, key: s.key });
    expect(res.status).toBe(403);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('VD_ERR_RECONNECT_IP_MISMATCH');
    expect(logLines.join('')).not.toContain(s.key);
  });

  it('answers 410 VD_ERR_SESSION_ENDED once the session has ended', async () => {
    const s = await liveSession('vdtest38');
    await store.endSession(s.id, 'deleted', new Date());
    const res = await post({ session: s.id, key: s.key });
    expect(res.status).toBe(410);
    expect(await res.json()).toEqual({ error: { code: 'VD_ERR_SESSION_ENDED', message: 'This desktop session has ended.' } });
  });

  it('answers an unknown key and another session\'s key exactly like an ended session', async () => {
    const a = await liveSession('vdtest39');
    const b = await liveSession('vdtest40');
    const ended = await liveSession('vdtest36');
    await store.endSession(ended.id, 'deleted', new Date());
    const responses = await Promise.all([
      post({ session: a.id, key: newReconnectKey() }),
      post({ session: a.id, key: b.key }),
      post({ session: randomUUID(), key: a.key }),
      post({ session: ended.id, key: ended.key }),
    ]);
    const seen = await Promise.all(responses.map(async (r) => `${r.status} ${await r.text()}`));
    expect(new Set(seen).size).toBe(1);
    expect(seen[0]).toMatch(/^410 /);
    // Nothing was issued for the session whose key was misused.
    const live = await store.getSession(a.id);
    expect(live?.state).toBe('running');
  });

  const malformed: Array<[string, string, Record<string, string>?]> = [
    ['not JSON', '{"session":'],
    ['an array', '[]'],
    ['a missing key', JSON.stringify({ session: randomUUID() })],
    ['a missing session', JSON.stringify({ key: 'A'.repeat(43) })],
    ['an extra field', JSON.stringify({ session: randomUUID(), key: 'A'.repeat(43), admin: true })],
    ['a key of the wrong shape', JSON.stringify({ session: randomUUID(), key: 'short' })],
    ['a key with foreign characters', JSON.stringify({ session: randomUUID(), key: `${'A'.repeat(40)}<x>` })],
    ['a session id with SQL in it', JSON.stringify({ session: "x' OR '1'='1", key: 'A'.repeat(43) })],
    ['numbers instead of strings', JSON.stringify({ session: 1, key: 2 })],
  ];
  for (const [what, body] of malformed) {
    it(`refuses ${what} with 400 and a JSON error`, async () => {
      const res = await post(body);
      expect(res.status).toBe(400);
      const json = (await res.json()) as { error: { code: string; message: string } };
      expect(json.error.code).toBe('VD_ERR_BAD_REQUEST');
      expect(json.error.message.length).toBeGreaterThan(0);
    });
  }

  it('refuses an oversized body with 413 and a non-JSON body with 415', async () => {
    const big = await post(JSON.stringify({ session: 'a'.repeat(4000), key: 'A'.repeat(43) }));
    expect(big.status).toBe(413);
    expect(((await big.json()) as { error: { code: string } }).error.code).toBe('VD_ERR_PAYLOAD_TOO_LARGE');
    const text = await post('session=x&key=y', { 'content-type': 'application/x-www-form-urlencoded' });
    expect(text.status).toBe(415);
    expect(((await text.json()) as { error: { code: string } }).error.code).toBe('VD_ERR_UNSUPPORTED_MEDIA_TYPE');
  });

  it('never logs the reconnect key or the issued token', async () => {
    const s = await liveSession('vdtest39');
    const body = (await (await post({ session: s.id, key: s.key })).json()) as { token: string };
    await post({ session: s.id, key: newReconnectKey() });
    const log = logLines.join('');
    expect(log).toContain(s.id);
    expect(log).not.toContain(s.key);
    expect(log).not.toContain(body.token);
  });
});

describe('POST /viewer/reconnect rate limit', () => {
  it('answers 429 with Retry-After once a client exceeds its per-minute budget', async () => {
    await app.close();
    await store.close();
    await start({ viewerReconnectPerMinute: 3 });
    const s = await liveSession('vdtest40');
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) statuses.push((await post({ session: s.id, key: s.key })).status);
    const limited = await post({ session: s.id, key: s.key });
    expect(statuses).toEqual([200, 200, 200]);
    expect(limited.status).toBe(429);
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(((await limited.json()) as { error: { code: string } }).error.code).toBe('VD_ERR_RATE_LIMITED');
  });
});
