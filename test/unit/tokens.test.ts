/**
 * Connection tokens (README, Security: threat 3): 256-bit random bearer secrets, stored only as hashes, short-lived, bound
 * to one session and optionally one client IP. Runs on a real SqliteStore file.
 */
import { randomUUID } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VncDispatchError } from '../../controller/errors.js';
import { SqliteStore } from '../../controller/store/sqlite-store.js';
import type { SessionRecord } from '../../controller/store/store.js';
import { normalizeIp, sameIp } from '../../controller/tokens/client-ip.js';
import { hashSecret, isWellFormedSecret, newReconnectKey, newToken } from '../../controller/tokens/secrets.js';
import { TokenService } from '../../controller/tokens/token-service.js';

async function expectCode(promise: Promise<unknown>, code: string, status: number): Promise<void> {
  const err = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err, `expected ${code}`).toBeInstanceOf(VncDispatchError);
  expect((err as VncDispatchError).code).toBe(code);
  expect((err as VncDispatchError).statusCode).toBe(status);
}

describe('token format', () => {
  it('is 43 base64url characters carrying 32 random bytes', () => {
    for (const make of [newToken, newReconnectKey]) {
      const t = make();
      expect(t).toMatch(/^[A-Za-z0-9_-]{43}$/);
      expect(Buffer.from(t, 'base64url')).toHaveLength(32);
      expect(isWellFormedSecret(t)).toBe(true);
    }
  });

  it('looks uniformly random: 2000 tokens are distinct and every bit position is set about half the time', () => {
    const tokens = Array.from({ length: 2000 }, newToken);
    expect(new Set(tokens).size).toBe(tokens.length);
    const ones = new Array<number>(256).fill(0);
    for (const t of tokens) {
      const bytes = Buffer.from(t, 'base64url');
      for (let bit = 0; bit < 256; bit++) ones[bit]! += (bytes[bit >> 3]! >> (bit & 7)) & 1;
    }
    // Binomial(2000, 0.5): sd ≈ 22, so 800..1200 is ±9 sd; a stuck or biased bit lands far outside.
    for (const n of ones) {
      expect(n).toBeGreaterThan(800);
      expect(n).toBeLessThan(1200);
    }
  });

  it('hashes with SHA-256 hex', () => {
    expect(hashSecret('abc')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  });
});

describe('TokenService', () => {
  let dataDir: string;
  let store: SqliteStore;
  let session: SessionRecord;
  let now: Date;
  const clock = () => now;

  const startSession = async (username: string): Promise<SessionRecord> => {
    const { session: s } = await store.createSession({ id: randomUUID(), username, clientIp: null, now });
    return (await store.updateSession(s.id, { state: 'running', blade: 'blade-a', port: 5901 }, now))!;
  };

  beforeEach(async () => {
    now = new Date('2030-01-01T00:00:00.000Z');
    dataDir = await mkdtemp(join(tmpdir(), 'vd-tokens-'));
    store = new SqliteStore({ dataDir });
    await store.init();
    session = await startSession('vdtest21');
  });

  afterEach(async () => {
    await store.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('issues a token that opens its session once and is refused on replay', async () => {
    const tokens = new TokenService(store, {}, clock);
    const { token, expiresAt } = await tokens.issue(session.id, null);
    expect(expiresAt).toEqual(new Date(now.getTime() + 60_000));
    const consumed = await tokens.consume(token, '203.0.113.9');
    expect(consumed.session).toMatchObject({ id: session.id, blade: 'blade-a', port: 5901 });
    expect(consumed.token.hash).toBe(hashSecret(token));
    await expectCode(tokens.consume(token, '203.0.113.9'), 'VD_ERR_TOKEN_USED', 401);
  });

  it('never stores the raw token: the database files hold only its SHA-256', async () => {
    const tokens = new TokenService(store, {}, clock);
    const issued = await Promise.all(Array.from({ length: 5 }, () => tokens.issue(session.id, '198.51.100.4')));
    const check = async (): Promise<void> => {
      const files = await readdir(dataDir);
      const bytes = Buffer.concat(await Promise.all(files.map((f) => readFile(join(dataDir, f)))));
      for (const { token } of issued) {
        expect(bytes.includes(token)).toBe(false);
        expect(bytes.includes(Buffer.from(token, 'base64url'))).toBe(false);
        // The search itself works: the hash is found where the token is not.
        expect(bytes.includes(hashSecret(token))).toBe(true);
      }
    };
    await check(); // while open: the rows are still in the write-ahead log
    await store.close();
    await check(); // after the checkpoint into the main file
    await store.init();
  });

  it('refuses an expired token, and accepts it until the last millisecond', async () => {
    const tokens = new TokenService(store, { ttlMs: 5_000 }, clock);
    const a = await tokens.issue(session.id, null);
    const b = await tokens.issue(session.id, null);
    now = new Date(now.getTime() + 4_999);
    await expect(tokens.consume(a.token, null)).resolves.toMatchObject({ session: { id: session.id } });
    now = new Date(now.getTime() + 1);
    await expectCode(tokens.consume(b.token, null), 'VD_ERR_TOKEN_EXPIRED', 401);
  });

  it('in reuse mode accepts a token repeatedly until it expires', async () => {
    const tokens = new TokenService(store, { singleUse: false, ttlMs: 1_000 }, clock);
    const { token } = await tokens.issue(session.id, null);
    for (let i = 0; i < 3; i++) await expect(tokens.consume(token, null)).resolves.toBeTruthy();
    now = new Date(now.getTime() + 1_000);
    await expectCode(tokens.consume(token, null), 'VD_ERR_TOKEN_EXPIRED', 401);
  });

  it('refuses tokens of an ended session, and unknown tokens', async () => {
    const tokens = new TokenService(store, {}, clock);
    const { token } = await tokens.issue(session.id, null);
    await store.endSession(session.id, 'deleted', now);
    await expectCode(tokens.consume(token, null), 'VD_ERR_TOKEN_REVOKED', 401);
    await expectCode(tokens.consume(newToken(), null), 'VD_ERR_TOKEN_UNKNOWN', 401);
  });

  it('refuses a token issued for the session while it was being ended', async () => {
    const tokens = new TokenService(store, {}, clock);
    await store.endSession(session.id, 'deleted', now);
    const { token } = await tokens.issue(session.id, null);
    await expectCode(tokens.consume(token, null), 'VD_ERR_TOKEN_SESSION_ENDED', 401);
    await expectCode(tokens.consume(token, null), 'VD_ERR_TOKEN_REVOKED', 401);
  });

  it('revokeAll makes outstanding tokens unusable', async () => {
    const tokens = new TokenService(store, {}, clock);
    const a = await tokens.issue(session.id, null);
    const b = await tokens.issue(session.id, null);
    expect(await tokens.revokeAll(session.id)).toBe(2);
    await expectCode(tokens.consume(a.token, null), 'VD_ERR_TOKEN_REVOKED', 401);
    await expectCode(tokens.consume(b.token, null), 'VD_ERR_TOKEN_REVOKED', 401);
  });

  it('prune deletes tokens long expired and keeps recent ones', async () => {
    const tokens = new TokenService(store, { ttlMs: 1_000 }, clock);
    const old = await tokens.issue(session.id, null);
    now = new Date(now.getTime() + 10_000);
    const recent = await tokens.issue(session.id, null);
    now = new Date(now.getTime() + 5_000);
    expect(await tokens.prune(5_000)).toBe(1);
    await expectCode(tokens.consume(old.token, null), 'VD_ERR_TOKEN_UNKNOWN', 401);
    await expectCode(tokens.consume(recent.token, null), 'VD_ERR_TOKEN_EXPIRED', 401);
  });

  describe('client IP binding', () => {
    it('accepts the bound client in either IPv4 or IPv4-mapped IPv6 form', async () => {
      const tokens = new TokenService(store, { singleUse: false }, clock);
      const v4 = await tokens.issue(session.id, '192.0.2.10');
      await expect(tokens.consume(v4.token, '192.0.2.10')).resolves.toBeTruthy();
      await expect(tokens.consume(v4.token, '::ffff:192.0.2.10')).resolves.toBeTruthy();
      await expect(tokens.consume(v4.token, '::FFFF:c000:020a')).resolves.toBeTruthy();
      const mapped = await tokens.issue(session.id, '::ffff:192.0.2.10');
      await expect(tokens.consume(mapped.token, '192.0.2.10')).resolves.toBeTruthy();
      const v6 = await tokens.issue(session.id, '2001:DB8:0:0:0:0:0:1');
      await expect(tokens.consume(v6.token, '2001:db8::1')).resolves.toBeTruthy();
    });

    it('refuses another client with 403 and leaves the token usable by its owner', async () => {
      const tokens = new TokenService(store, {}, clock);
      const { token } = await tokens.issue(session.id, '192.0.2.10');
      await expectCode(tokens.consume(token, '192.0.2.11'), 'VD_ERR_TOKEN_IP_MISMATCH', 403);
      await expectCode(tokens.consume(token, '::ffff:192.0.2.11'), 'VD_ERR_TOKEN_IP_MISMATCH', 403);
      await expectCode(tokens.consume(token, '2001:db8::1'), 'VD_ERR_TOKEN_IP_MISMATCH', 403);
      await expectCode(tokens.consume(token, null), 'VD_ERR_TOKEN_IP_MISMATCH', 403);
      await expectCode(tokens.consume(token, 'not-an-ip'), 'VD_ERR_TOKEN_IP_MISMATCH', 403);
      await expect(tokens.consume(token, '192.0.2.10')).resolves.toMatchObject({ session: { id: session.id } });
    });

    it('leaves a token issued without an IP usable from anywhere', async () => {
      const tokens = new TokenService(store, { singleUse: false }, clock);
      const { token } = await tokens.issue(session.id, null);
      await expect(tokens.consume(token, '192.0.2.10')).resolves.toBeTruthy();
      await expect(tokens.consume(token, '::1')).resolves.toBeTruthy();
      await expect(tokens.consume(token, null)).resolves.toBeTruthy();
    });

    it('refuses to issue a token for something that is not an IP address', async () => {
      const tokens = new TokenService(store, {}, clock);
      for (const bad of ['', 'localhost', '1.2.3.4; id', '300.1.1.1', '1.2.3.4/24']) {
        await expectCode(tokens.issue(session.id, bad), 'VD_ERR_BAD_REQUEST', 400);
      }
      expect(await store.revokeTokens(session.id, now)).toBe(0);
    });
  });

  it('rejects malformed tokens without touching the store', async () => {
    const calls: string[] = [];
    const spy = new Proxy(store, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver) as unknown;
        if (typeof value !== 'function') return value;
        return (...args: unknown[]) => {
          calls.push(String(prop));
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
    const tokens = new TokenService(spy, {}, clock);
    const good = newToken();
    const malformed: unknown[] = [
      '',
      'abc',
      good.slice(1),
      `${good}A`,
      `${good.slice(0, 42)}+`,
      `${good.slice(0, 42)}/`,
      `${good.slice(0, 42)}=`,
      `${good.slice(0, 41)}%20`,
      `${good.slice(0, 42)}\n`,
      `${good.slice(0, 42)}é`,
      'A'.repeat(10_000),
      undefined,
      null,
      42,
      [good],
      { token: good },
    ];
    for (const token of malformed) await expectCode(tokens.consume(token, null), 'VD_ERR_TOKEN_MALFORMED', 401);
    expect(calls).toEqual([]);
  });

  it('refuses bad options', () => {
    expect(() => new TokenService(store, { ttlMs: 0 })).toThrow(TypeError);
    expect(() => new TokenService(store, { ttlMs: 1.5 })).toThrow(TypeError);
    expect(() => new TokenService(store, { singleUse: 'yes' as never })).toThrow(TypeError);
  });
});

describe('normalizeIp', () => {
  it('maps equivalent spellings of one address to one form', () => {
    expect(normalizeIp('1.2.3.4')).toBe('1.2.3.4');
    expect(normalizeIp('::ffff:1.2.3.4')).toBe('1.2.3.4');
    expect(normalizeIp('::FFFF:102:304')).toBe('1.2.3.4');
    expect(normalizeIp('0:0:0:0:0:ffff:0102:0304')).toBe('1.2.3.4');
    expect(normalizeIp('2001:0DB8:0000:0000:0000:0000:0000:0001')).toBe('2001:db8::1');
    expect(normalizeIp('::1')).toBe('::1');
    // Not IPv4-mapped: other prefixes stay IPv6.
    expect(normalizeIp('::1.2.3.4')).toBe('::102:304');
    expect(normalizeIp('64:ff9b::1.2.3.4')).toBe('64:ff9b::102:304');
  });

  it('returns null for anything that is not an IP address', () => {
    for (const bad of ['', 'localhost', '1.2.3', '1.2.3.4.5', '::ffff:1.2.3.4x', '[::1]', '1.2.3.4:80']) {
      expect(normalizeIp(bad)).toBeNull();
    }
    expect(sameIp('x', 'x')).toBe(false);
    expect(sameIp('::ffff:10.0.0.1', '10.0.0.1')).toBe(true);
  });
});
