/**
 * One behavioural contract for every Store backend (controller/store/store.ts). The embedded SQLite store runs on a
 * real file in a temp dir; MongoStore runs only when MONGODB_URL points at a real server (none can run on this
 * machine), each test in its own freshly created database that is dropped afterwards:
 *
 *   MONGODB_URL=mongodb://localhost:27017 npx vitest run test/integration/store-contract.test.ts
 *
 * Concurrency cases spread their calls over several store instances opened on the same storage, as several
 * controllers sharing one database would.
 */
import { randomUUID } from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MongoClient } from 'mongodb';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MongoStore } from '../../controller/store/mongo-store.js';
import { SQLITE_FILE_NAME, SqliteStore } from '../../controller/store/sqlite-store.js';
import type { SessionRecord, Store, TokenRecord } from '../../controller/store/store.js';

/** A storage location that can be opened many times (each open() is a new, initialized Store on the same data). */
export interface StoreHarness {
  open(): Promise<Store>;
  /** Closes nothing the test opened (the suite does that); removes the storage itself. */
  destroy(): Promise<void>;
}

const T0 = new Date('2030-01-01T00:00:00.000Z');
const at = (ms: number): Date => new Date(T0.getTime() + ms);
const hashOf = (n: number | string): string => `${String(n).padStart(8, '0')}${'ab'.repeat(28)}`;
/** A reconnect-key cap no case below reaches, except the one about the cap. */
const KEEP = { keep: 32 };

function tokenRecord(sessionId: string, overrides: Partial<TokenRecord> = {}): TokenRecord {
  return {
    hash: hashOf(randomUUID().replace(/-/g, '').slice(0, 8)),
    sessionId,
    expiresAt: at(60_000),
    clientIp: null,
    createdAt: T0,
    usedAt: null,
    revokedAt: null,
    ...overrides,
  };
}

/** Registers the contract suite for one backend. */
export function describeStoreContract(name: string, makeHarness: () => Promise<StoreHarness>): void {
  describe(`Store contract: ${name}`, () => {
    let harness: StoreHarness;
    let opened: Store[];
    let store: Store;

    const open = async (): Promise<Store> => {
      const s = await harness.open();
      opened.push(s);
      return s;
    };
    /** `n` extra instances on the same storage (plus the main one), for spreading concurrent calls. */
    const instances = async (n: number): Promise<Store[]> => [store, ...(await Promise.all(Array.from({ length: n }, open)))];

    const newSession = async (username: string, now = T0, s: Store = store): Promise<SessionRecord> => {
      const { created, session } = await s.createSession({ id: randomUUID(), username, clientIp: null, now });
      expect(created).toBe(true);
      return session;
    };

    beforeEach(async () => {
      opened = [];
      harness = await makeHarness();
      store = await open();
    });

    afterEach(async () => {
      await Promise.all(opened.map((s) => s.close()));
      await harness.destroy();
    });

    describe('sessions', () => {
      it('creates a session in state starting with nothing assigned yet', async () => {
        const id = randomUUID();
        const { created, session } = await store.createSession({ id, username: 'vdtest16', clientIp: '10.0.0.7', now: T0 });
        expect(created).toBe(true);
        expect(session).toEqual({
          id,
          username: 'vdtest16',
          state: 'starting',
          blade: null,
          agentSessionId: null,
          display: null,
          port: null,
          pid: null,
          password: null,
          clientIp: '10.0.0.7',
          createdAt: T0,
          updatedAt: T0,
          endedAt: null,
          endReason: null,
        });
        expect(await store.getSession(id)).toEqual(session);
        expect(await store.getLiveSessionByUser('vdtest16')).toEqual(session);
        expect(await store.getSession(randomUUID())).toBeNull();
        expect(await store.getLiveSessionByUser('vdtest17')).toBeNull();
      });

      it('keeps one live session per user under 50 concurrent createSession calls for 10 users', async () => {
        const stores = await instances(2);
        const users = Array.from({ length: 10 }, (_, i) => `vdtest${16 + i}`);
        const results = await Promise.all(
          Array.from({ length: 50 }, (_, i) =>
            stores[i % stores.length]!.createSession({ id: randomUUID(), username: users[i % 10]!, clientIp: null, now: at(i) }),
          ),
        );
        expect(results.filter((r) => r.created)).toHaveLength(10);
        for (const user of users) {
          const ids = new Set(results.filter((r) => r.session.username === user).map((r) => r.session.id));
          expect(ids.size, `${user} got more than one session`).toBe(1);
        }
        const live = await store.listSessions({ live: true });
        expect(live).toHaveLength(10);
        expect(new Set(live.map((s) => s.username))).toEqual(new Set(users));
      });

      it('returns the live session with created:false, and allows a new one once it has ended', async () => {
        const first = await newSession('vdtest16');
        const again = await store.createSession({ id: randomUUID(), username: 'vdtest16', clientIp: null, now: at(1) });
        expect(again).toEqual({ created: false, session: first });

        await store.updateSession(first.id, { state: 'running' }, at(2));
        const stillLive = await store.createSession({ id: randomUUID(), username: 'vdtest16', clientIp: null, now: at(3) });
        expect(stillLive.created).toBe(false);
        expect(stillLive.session.id).toBe(first.id);

        await store.endSession(first.id, 'deleted', at(4));
        const second = await newSession('vdtest16', at(5));
        expect(second.id).not.toBe(first.id);
        expect((await store.getLiveSessionByUser('vdtest16'))?.id).toBe(second.id);
        expect((await store.getSession(first.id))?.state).toBe('ended');
      });

      it('refuses to reuse a session id', async () => {
        const first = await newSession('vdtest16');
        await store.endSession(first.id, 'deleted', at(1));
        await expect(store.createSession({ id: first.id, username: 'vdtest17', clientIp: null, now: at(2) })).rejects.toThrow();
        expect(await store.getLiveSessionByUser('vdtest17')).toBeNull();
      });

      it('updateSession applies a patch to a live session, leaving unspecified fields alone', async () => {
        const s = await newSession('vdtest16');
        const updated = await store.updateSession(
          s.id,
          { state: 'running', blade: 'blade-a', agentSessionId: 'ag-1', display: 7, port: 5907, pid: 4242, password: 'Ab3dE6gH' },
          at(10),
        );
        expect(updated).toEqual({
          ...s,
          state: 'running',
          blade: 'blade-a',
          agentSessionId: 'ag-1',
          display: 7,
          port: 5907,
          pid: 4242,
          password: 'Ab3dE6gH',
          updatedAt: at(10),
        });
        const again = await store.updateSession(s.id, { clientIp: '192.0.2.4', pid: undefined }, at(11));
        expect(again).toEqual({ ...updated, clientIp: '192.0.2.4', updatedAt: at(11) });
        expect(await store.getSession(s.id)).toEqual(again);
      });

      it('updateSession returns null for unknown and ended sessions and changes nothing', async () => {
        expect(await store.updateSession(randomUUID(), { display: 1 }, T0)).toBeNull();
        const s = await newSession('vdtest16');
        const ended = await store.endSession(s.id, 'deleted', at(1));
        expect(await store.updateSession(s.id, { state: 'running', display: 3 }, at(2))).toBeNull();
        expect(await store.getSession(s.id)).toEqual(ended);
      });

      it('updateSession refuses to end a session or to touch fields outside the patch type', async () => {
        const s = await newSession('vdtest16');
        await expect(store.updateSession(s.id, { state: 'ended' }, at(1))).rejects.toThrow(TypeError);
        await expect(store.updateSession(s.id, { username: 'root' } as never, at(1))).rejects.toThrow(TypeError);
        expect(await store.getSession(s.id)).toEqual(s);
      });

      it('endSession ends the session, drops its password, revokes its tokens, and a second call returns null', async () => {
        const s = await newSession('vdtest16');
        await store.updateSession(s.id, { state: 'running', blade: 'blade-a', password: 'Ab3dE6gH' }, at(1));
        const tokens = [tokenRecord(s.id), tokenRecord(s.id), tokenRecord(s.id, { revokedAt: at(1) })];
        for (const t of tokens) await store.insertToken(t);
        const other = await newSession('vdtest17');
        const otherToken = tokenRecord(other.id);
        await store.insertToken(otherToken);

        const ended = await store.endSession(s.id, 'deleted', at(5));
        expect(ended).toMatchObject({ id: s.id, state: 'ended', endedAt: at(5), endReason: 'deleted', updatedAt: at(5) });
        expect(ended?.password).toBeNull();
        expect(ended?.blade).toBe('blade-a');
        expect(await store.getSession(s.id)).toEqual(ended);
        expect(await store.getLiveSessionByUser('vdtest16')).toBeNull();
        expect((await store.getToken(tokens[0]!.hash))?.revokedAt).toEqual(at(5));
        expect((await store.getToken(tokens[1]!.hash))?.revokedAt).toEqual(at(5));
        expect((await store.getToken(tokens[2]!.hash))?.revokedAt).toEqual(at(1));
        expect((await store.getToken(otherToken.hash))?.revokedAt).toBeNull();

        expect(await store.endSession(s.id, 'again', at(6))).toBeNull();
        expect((await store.getSession(s.id))?.endReason).toBe('deleted');
        expect(await store.endSession(randomUUID(), 'deleted', at(6))).toBeNull();
      });

      it('discardSession deletes only a session that never ran, with its tokens, and frees the user', async () => {
        const starting = await newSession('vdtest16');
        const token = tokenRecord(starting.id);
        await store.insertToken(token);
        const running = await newSession('vdtest17');
        await store.updateSession(running.id, { state: 'running', blade: 'blade-a' }, at(1));
        const ended = await newSession('vdtest18');
        await store.endSession(ended.id, 'deleted', at(1));

        expect(await store.discardSession(running.id)).toBe(false);
        expect(await store.discardSession(ended.id)).toBe(false);
        expect(await store.discardSession(randomUUID())).toBe(false);
        expect((await store.getSession(running.id))?.state).toBe('running');
        expect((await store.getSession(ended.id))?.state).toBe('ended');

        expect(await store.discardSession(starting.id)).toBe(true);
        expect(await store.getSession(starting.id)).toBeNull();
        expect(await store.getToken(token.hash)).toBeNull();
        expect((await store.listSessions()).map((x) => x.id)).not.toContain(starting.id);
        expect(await store.discardSession(starting.id)).toBe(false);
        await newSession('vdtest16');
      });

      it('pruneEndedSessions deletes only sessions that ended before the cut-off, with their tokens', async () => {
        const old = await newSession('vdtest91');
        const oldToken = tokenRecord(old.id);
        await store.insertToken(oldToken);
        await store.endSession(old.id, 'deleted', at(1));
        const recent = await newSession('vdtest92');
        await store.endSession(recent.id, 'deleted', at(10));
        const live = await newSession('vdtest93', at(0));
        const liveToken = tokenRecord(live.id);
        await store.insertToken(liveToken);

        expect(await store.pruneEndedSessions(at(5))).toBe(1);
        expect(await store.getSession(old.id)).toBeNull();
        expect(await store.getToken(oldToken.hash)).toBeNull();
        expect((await store.getSession(recent.id))?.state).toBe('ended');
        expect((await store.getSession(live.id))?.state).toBe('starting');
        expect(await store.getToken(liveToken.hash)).not.toBeNull();
        expect(await store.pruneEndedSessions(at(5))).toBe(0);
      });

      it('checkWritable resolves on healthy storage and changes nothing a caller can see', async () => {
        const before = await store.listSessions();
        await store.checkWritable();
        await store.checkWritable();
        expect(await store.listSessions()).toEqual(before);
        expect(await store.nextCounter('placement')).toBe(1);
      });

      it('ends a session exactly once under concurrent endSession calls', async () => {
        const stores = await instances(2);
        const s = await newSession('vdtest16');
        const results = await Promise.all(Array.from({ length: 10 }, (_, i) => stores[i % 3]!.endSession(s.id, `r${i}`, at(i))));
        expect(results.filter((r) => r !== null)).toHaveLength(1);
      });

      it('listSessions lists newest first and filters by liveness, blade and limit', async () => {
        const a = await newSession('vdtest16', at(1));
        const b = await newSession('vdtest17', at(2));
        const c = await newSession('vdtest18', at(3));
        const d = await newSession('vdtest19', at(4));
        await store.updateSession(a.id, { blade: 'blade-a' }, at(5));
        await store.updateSession(b.id, { blade: 'blade-b' }, at(5));
        await store.updateSession(c.id, { blade: 'blade-a' }, at(5));
        await store.endSession(c.id, 'deleted', at(6));

        const ids = (list: SessionRecord[]) => list.map((s) => s.id);
        expect(ids(await store.listSessions())).toEqual([d.id, c.id, b.id, a.id]);
        expect(ids(await store.listSessions({}))).toEqual([d.id, c.id, b.id, a.id]);
        expect(ids(await store.listSessions({ live: true }))).toEqual([d.id, b.id, a.id]);
        expect(ids(await store.listSessions({ live: false }))).toEqual([c.id]);
        expect(ids(await store.listSessions({ blade: 'blade-a' }))).toEqual([c.id, a.id]);
        expect(ids(await store.listSessions({ blade: 'blade-a', live: true }))).toEqual([a.id]);
        expect(ids(await store.listSessions({ blade: 'nowhere' }))).toEqual([]);
        expect(ids(await store.listSessions({ limit: 2 }))).toEqual([d.id, c.id]);
        expect(ids(await store.listSessions({ limit: 0 }))).toEqual([]);
      });

      it('countLiveSessionsByBlade counts only live sessions that have a blade', async () => {
        expect(await store.countLiveSessionsByBlade()).toEqual(new Map());
        const sessions = await Promise.all(['vdtest16', 'vdtest17', 'vdtest18', 'vdtest19', 'vdtest20'].map((u) => newSession(u)));
        const blades = ['blade-a', 'blade-a', 'blade-b', null, 'blade-b'];
        for (const [i, s] of sessions.entries()) await store.updateSession(s.id, { blade: blades[i] ?? null }, at(1));
        await store.endSession(sessions[4]!.id, 'deleted', at(2));
        expect(await store.countLiveSessionsByBlade()).toEqual(
          new Map([
            ['blade-a', 2],
            ['blade-b', 1],
          ]),
        );
      });

      it('finds a reconnect key with its binding and its session, and after the session ended, that it ended', async () => {
        const s = await newSession('vdtest16');
        expect(await store.getReconnectKey(hashOf(7))).toBeNull();
        const running = await store.updateSession(s.id, { state: 'running' }, at(1));
        const key = { hash: hashOf(7), sessionId: s.id, clientIp: '192.0.2.7', createdAt: at(1) };
        expect(await store.addReconnectKey(key, KEEP)).toEqual(running);
        expect(await store.getReconnectKey(hashOf(7))).toEqual({ key, session: running });
        expect(await store.getReconnectKey(hashOf(8))).toBeNull();
        const ended = await store.endSession(s.id, 'deleted', at(2));
        expect(await store.getReconnectKey(hashOf(7))).toEqual({ key, session: ended });
        expect((await store.getReconnectKey(hashOf(7)))?.session).toMatchObject({ state: 'ended', endReason: 'deleted' });
        // An ended or unknown session takes no new key.
        expect(await store.addReconnectKey({ ...key, hash: hashOf(9) }, KEEP)).toBeNull();
        expect(await store.addReconnectKey({ ...key, hash: hashOf(10), sessionId: randomUUID() }, KEEP)).toBeNull();
        expect(await store.getReconnectKey(hashOf(9))).toBeNull();
      });

      it('keeps every grant\'s reconnect key of a session, each with its own binding, for every store on the data', async () => {
        const [a, b] = await instances(1);
        const s = await newSession('vdtest16');
        await store.updateSession(s.id, { state: 'running' }, at(1));
        await a!.addReconnectKey({ hash: hashOf(21), sessionId: s.id, clientIp: '192.0.2.1', createdAt: at(1) }, KEEP);
        await b!.addReconnectKey({ hash: hashOf(22), sessionId: s.id, clientIp: null, createdAt: at(2) }, KEEP);
        for (const st of [a!, b!]) {
          expect((await st.getReconnectKey(hashOf(21)))?.key.clientIp).toBe('192.0.2.1');
          expect((await st.getReconnectKey(hashOf(22)))?.key.clientIp).toBeNull();
          expect((await st.getReconnectKey(hashOf(21)))?.session.id).toBe(s.id);
        }
        // A store opened later (a restarted controller) sees them too.
        const reopened = await open();
        expect((await reopened.getReconnectKey(hashOf(21)))?.session.id).toBe(s.id);
      });

      it('keeps a session\'s newest reconnect keys up to the cap and retires the oldest, whichever store grants', async () => {
        const [a, b] = await instances(1);
        const s = await newSession('vdtest16');
        await store.updateSession(s.id, { state: 'running' }, at(1));
        const other = await newSession('vdtest17');
        await store.updateSession(other.id, { state: 'running' }, at(1));
        await store.addReconnectKey({ hash: hashOf('other'), sessionId: other.id, clientIp: null, createdAt: T0 }, { keep: 3 });
        const live = async (n: number | string): Promise<boolean> => (await store.getReconnectKey(hashOf(n))) !== null;

        // Ten grants through two controllers, two of them in the same millisecond (the later write is the newer).
        const times = [1, 2, 3, 4, 5, 6, 7, 8, 8, 9];
        for (const [i, t] of times.entries()) {
          const st = i % 2 === 0 ? a! : b!;
          expect(await st.addReconnectKey({ hash: hashOf(40 + i), sessionId: s.id, clientIp: null, createdAt: at(t) }, { keep: 3 }))
            .not.toBeNull();
        }
        const kept = await Promise.all(times.map((_, i) => live(40 + i)));
        expect(kept).toEqual([false, false, false, false, false, false, false, true, true, true]);
        // Another session's keys are its own.
        expect(await live('other')).toBe(true);

        // A grant from a controller whose clock is behind still gets a working key; the next grant trims back to 3.
        await a!.addReconnectKey({ hash: hashOf(60), sessionId: s.id, clientIp: null, createdAt: T0 }, { keep: 3 });
        expect(await live(60)).toBe(true);
        await b!.addReconnectKey({ hash: hashOf(61), sessionId: s.id, clientIp: null, createdAt: at(10) }, { keep: 3 });
        expect(await Promise.all([47, 48, 49, 60, 61].map(live))).toEqual([false, true, true, false, true]);

        await expect(store.addReconnectKey({ hash: hashOf(62), sessionId: s.id, clientIp: null, createdAt: at(11) }, { keep: 0 }))
          .rejects.toThrow(TypeError);
      });

      it('deletes a session\'s reconnect keys with the session (discard and retention)', async () => {
        const starting = await newSession('vdtest16');
        await store.addReconnectKey({ hash: hashOf(31), sessionId: starting.id, clientIp: null, createdAt: T0 }, KEEP);
        expect(await store.discardSession(starting.id)).toBe(true);
        const again = await newSession('vdtest16', at(1));
        // The same hash cannot resurrect: the discarded session's key row is gone, so it can be reused.
        await store.addReconnectKey({ hash: hashOf(31), sessionId: again.id, clientIp: null, createdAt: at(1) }, KEEP);
        expect((await store.getReconnectKey(hashOf(31)))?.session.id).toBe(again.id);
        await store.endSession(again.id, 'deleted', at(2));
        expect(await store.pruneEndedSessions(at(5))).toBe(1);
        // Gone with its session: the hash can be recorded afresh for a new session.
        const third = await newSession('vdtest16', at(6));
        await store.addReconnectKey({ hash: hashOf(31), sessionId: third.id, clientIp: null, createdAt: at(6) }, KEEP);
        expect((await store.getReconnectKey(hashOf(31)))?.session.id).toBe(third.id);
      });
    });

    describe('tokens', () => {
      let session: SessionRecord;
      beforeEach(async () => {
        session = await newSession('vdtest16');
        await store.updateSession(session.id, { state: 'running', blade: 'blade-a', port: 5901 }, at(1));
      });

      it('getToken returns the stored record, unchanged by reading', async () => {
        const t = tokenRecord(session.id, { clientIp: '192.0.2.1' });
        await store.insertToken(t);
        expect(await store.getToken(t.hash)).toEqual(t);
        expect(await store.getToken(t.hash)).toEqual(t);
        expect(await store.getToken(hashOf('nothere'))).toBeNull();
      });

      it('activeTokenHashes keeps only unrevoked tokens of running sessions, in one call for many', async () => {
        const starting = await newSession('vdtest18');
        const running = [tokenRecord(session.id), tokenRecord(session.id, { usedAt: at(2) })];
        const revoked = tokenRecord(session.id, { revokedAt: at(2) });
        const ofStarting = tokenRecord(starting.id);
        for (const t of [...running, revoked, ofStarting]) await store.insertToken(t);
        const many = [...running, revoked, ofStarting].map((t) => t.hash)
          .concat(Array.from({ length: 2000 }, (_, i) => hashOf(`absent-${i}`)));
        expect(await store.activeTokenHashes(many)).toEqual(new Set(running.map((t) => t.hash)));
        expect(await store.activeTokenHashes([])).toEqual(new Set());
        await store.endSession(session.id, 'deleted', at(3));
        expect(await store.activeTokenHashes(many)).toEqual(new Set());
      });

      it('refuses a second token with the same hash', async () => {
        const t = tokenRecord(session.id);
        await store.insertToken(t);
        await expect(store.insertToken({ ...t, expiresAt: at(999_999) })).rejects.toThrow();
        expect(await store.getToken(t.hash)).toEqual(t);
      });

      it('consumeToken accepts a valid token once, returning it and its live session', async () => {
        const t = tokenRecord(session.id);
        await store.insertToken(t);
        const result = await store.consumeToken(t.hash, at(10), { singleUse: true });
        expect(result.ok).toBe(true);
        if (!result.ok) return;
        expect(result.token).toEqual({ ...t, usedAt: at(10) });
        expect(result.session).toMatchObject({ id: session.id, state: 'running', blade: 'blade-a', port: 5901 });
        expect(await store.consumeToken(t.hash, at(11), { singleUse: true })).toEqual({ ok: false, reason: 'used' });
        expect((await store.getToken(t.hash))?.usedAt).toEqual(at(10));
      });

      it('consumeToken says why it refuses: unknown, expired, revoked, used, session-ended', async () => {
        expect(await store.consumeToken(hashOf('nothere'), at(10), { singleUse: true })).toEqual({ ok: false, reason: 'unknown' });

        const expiring = tokenRecord(session.id, { expiresAt: at(100) });
        await store.insertToken(expiring);
        // Expiry is exclusive: at expiresAt the token is already dead.
        expect(await store.consumeToken(expiring.hash, at(100), { singleUse: true })).toEqual({ ok: false, reason: 'expired' });
        expect(await store.consumeToken(expiring.hash, at(100), { singleUse: false })).toEqual({ ok: false, reason: 'expired' });

        const revoked = tokenRecord(session.id);
        await store.insertToken(revoked);
        expect(await store.revokeTokens(session.id, at(20))).toBe(2);
        expect(await store.revokeTokens(session.id, at(21))).toBe(0);
        expect(await store.consumeToken(revoked.hash, at(30), { singleUse: true })).toEqual({ ok: false, reason: 'revoked' });
        // Revocation is reported before expiry.
        expect(await store.consumeToken(expiring.hash, at(200), { singleUse: true })).toEqual({ ok: false, reason: 'revoked' });

        const used = tokenRecord(session.id);
        await store.insertToken(used);
        expect((await store.consumeToken(used.hash, at(30), { singleUse: true })).ok).toBe(true);
        expect(await store.consumeToken(used.hash, at(31), { singleUse: true })).toEqual({ ok: false, reason: 'used' });

        // A token inserted after its session ended (issue racing with delete) is refused, and revoked for good.
        await store.endSession(session.id, 'deleted', at(40));
        const late = tokenRecord(session.id);
        await store.insertToken(late);
        expect(await store.consumeToken(late.hash, at(41), { singleUse: true })).toEqual({ ok: false, reason: 'session-ended' });
        expect(await store.consumeToken(late.hash, at(42), { singleUse: true })).toEqual({ ok: false, reason: 'revoked' });
        const orphan = tokenRecord(randomUUID());
        await store.insertToken(orphan);
        expect(await store.consumeToken(orphan.hash, at(43), { singleUse: false })).toEqual({ ok: false, reason: 'session-ended' });
      });

      it('endSession makes its tokens unusable', async () => {
        const t = tokenRecord(session.id);
        await store.insertToken(t);
        await store.endSession(session.id, 'deleted', at(5));
        expect(await store.consumeToken(t.hash, at(6), { singleUse: true })).toEqual({ ok: false, reason: 'revoked' });
        expect(await store.consumeToken(t.hash, at(6), { singleUse: false })).toEqual({ ok: false, reason: 'revoked' });
      });

      it('accepts a single-use token exactly once under 20 concurrent consumes', async () => {
        const stores = await instances(3);
        const t = tokenRecord(session.id);
        await store.insertToken(t);
        const results = await Promise.all(
          Array.from({ length: 20 }, (_, i) => stores[i % stores.length]!.consumeToken(t.hash, at(10), { singleUse: true })),
        );
        expect(results.filter((r) => r.ok)).toHaveLength(1);
        expect(results.filter((r) => !r.ok && r.reason === 'used')).toHaveLength(19);
      });

      it('reuse mode accepts a token repeatedly until it expires, without marking it used', async () => {
        const t = tokenRecord(session.id, { expiresAt: at(1000) });
        await store.insertToken(t);
        const results = await Promise.all(Array.from({ length: 5 }, (_, i) => store.consumeToken(t.hash, at(10 + i), { singleUse: false })));
        expect(results.every((r) => r.ok)).toBe(true);
        expect((await store.consumeToken(t.hash, at(999), { singleUse: false })).ok).toBe(true);
        expect(await store.consumeToken(t.hash, at(1000), { singleUse: false })).toEqual({ ok: false, reason: 'expired' });
        expect((await store.getToken(t.hash))?.usedAt).toBeNull();
      });

      it('pruneTokens deletes only tokens that expired before the cut-off', async () => {
        const old1 = tokenRecord(session.id, { expiresAt: at(100) });
        const old2 = tokenRecord(session.id, { expiresAt: at(200), revokedAt: at(150) });
        const edge = tokenRecord(session.id, { expiresAt: at(300) });
        const fresh = tokenRecord(session.id, { expiresAt: at(400) });
        for (const t of [old1, old2, edge, fresh]) await store.insertToken(t);
        expect(await store.pruneTokens(at(300))).toBe(2);
        expect(await store.getToken(old1.hash)).toBeNull();
        expect(await store.getToken(old2.hash)).toBeNull();
        expect(await store.getToken(edge.hash)).toEqual(edge);
        expect(await store.getToken(fresh.hash)).toEqual(fresh);
        expect(await store.pruneTokens(at(300))).toBe(0);
        expect(await store.consumeToken(old1.hash, at(301), { singleUse: true })).toEqual({ ok: false, reason: 'unknown' });
      });
    });

    describe('blades', () => {
      it('upsertBlade registers an ACTIVE blade, updates its address and keeps its admin state', async () => {
        const b = await store.upsertBlade({ name: 'blade-a', address: '127.0.0.1:7001' }, at(1));
        expect(b).toEqual({ name: 'blade-a', address: '127.0.0.1:7001', adminState: 'ACTIVE', createdAt: at(1), updatedAt: at(1) });
        expect(await store.setBladeAdminState('blade-a', 'CORDONED', at(2))).toEqual({ ...b, adminState: 'CORDONED', updatedAt: at(2) });
        const moved = await store.upsertBlade({ name: 'blade-a', address: '127.0.0.1:7002' }, at(3));
        expect(moved).toEqual({ name: 'blade-a', address: '127.0.0.1:7002', adminState: 'CORDONED', createdAt: at(1), updatedAt: at(3) });
        expect(await store.getBlade('blade-a')).toEqual(moved);
        expect(await store.setBladeAdminState('blade-a', 'DRAINING', at(4))).toMatchObject({ adminState: 'DRAINING' });
        expect(await store.setBladeAdminState('blade-a', 'ACTIVE', at(5))).toMatchObject({ adminState: 'ACTIVE' });
      });

      it('lists blades by name and answers null for unknown ones', async () => {
        await store.upsertBlade({ name: 'blade-c', address: '127.0.0.1:7003' }, T0);
        await store.upsertBlade({ name: 'blade-a', address: '127.0.0.1:7001' }, T0);
        await store.upsertBlade({ name: 'blade-b', address: '127.0.0.1:7002' }, T0);
        expect((await store.listBlades()).map((b) => b.name)).toEqual(['blade-a', 'blade-b', 'blade-c']);
        expect(await store.getBlade('blade-z')).toBeNull();
        expect(await store.setBladeAdminState('blade-z', 'CORDONED', T0)).toBeNull();
        expect(await store.listBlades()).toHaveLength(3);
      });

      it('refuses an unknown admin state', async () => {
        await store.upsertBlade({ name: 'blade-a', address: '127.0.0.1:7001' }, T0);
        await expect(store.setBladeAdminState('blade-a', 'UP' as never, at(1))).rejects.toThrow(TypeError);
        expect((await store.getBlade('blade-a'))?.adminState).toBe('ACTIVE');
      });

      it('registers a blade once under concurrent upserts', async () => {
        const stores = await instances(2);
        await Promise.all(
          Array.from({ length: 12 }, (_, i) => stores[i % 3]!.upsertBlade({ name: 'blade-a', address: `127.0.0.1:${7000 + i}` }, at(i))),
        );
        const blades = await store.listBlades();
        expect(blades).toHaveLength(1);
        expect(blades[0]?.adminState).toBe('ACTIVE');
      });
    });

    describe('counters', () => {
      it('starts at 1 and counts each name separately', async () => {
        expect(await store.nextCounter('round-robin')).toBe(1);
        expect(await store.nextCounter('round-robin')).toBe(2);
        expect(await store.nextCounter('other')).toBe(1);
        expect(await store.nextCounter('round-robin')).toBe(3);
      });

      it('hands out strictly increasing values with no duplicates under 100 concurrent calls', async () => {
        const stores = await instances(3);
        const values = await Promise.all(Array.from({ length: 100 }, (_, i) => stores[i % stores.length]!.nextCounter('rr')));
        expect([...values].sort((x, y) => x - y)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
        // Each caller sees a strictly increasing sequence.
        for (const s of stores) {
          const seen = values.filter((_, i) => stores[i % stores.length] === s);
          expect(seen).toEqual([...seen].sort((x, y) => x - y));
        }
        expect(await store.nextCounter('rr')).toBe(101);
      });
    });

    describe('restarts', () => {
      it('init() is idempotent', async () => {
        await store.init();
        await newSession('vdtest16');
        await store.init();
        expect(await store.listSessions()).toHaveLength(1);
      });

      it('closing and reopening keeps sessions, tokens, blades and counters, and the one-live-session rule', async () => {
        const s = await newSession('vdtest16');
        const running = await store.updateSession(s.id, { state: 'running', blade: 'blade-a', display: 4, password: 'Ab3dE6gH' }, at(1));
        const ended = await newSession('vdtest17');
        const endedRecord = await store.endSession(ended.id, 'desktop-exited', at(2));
        const t = tokenRecord(s.id);
        await store.insertToken(t);
        await store.upsertBlade({ name: 'blade-a', address: '127.0.0.1:7001' }, at(3));
        const blade = await store.setBladeAdminState('blade-a', 'DRAINING', at(4));
        await store.nextCounter('rr');
        await store.nextCounter('rr');

        await store.close();
        opened = opened.filter((x) => x !== store);
        const reopened = await open();

        expect(await reopened.getSession(s.id)).toEqual(running);
        expect(await reopened.getSession(ended.id)).toEqual(endedRecord);
        expect(await reopened.getToken(t.hash)).toEqual(t);
        expect(await reopened.getBlade('blade-a')).toEqual(blade);
        expect(await reopened.nextCounter('rr')).toBe(3);
        const again = await reopened.createSession({ id: randomUUID(), username: 'vdtest16', clientIp: null, now: at(5) });
        expect(again).toEqual({ created: false, session: running });
        expect((await reopened.consumeToken(t.hash, at(6), { singleUse: true })).ok).toBe(true);
        expect(await reopened.consumeToken(t.hash, at(7), { singleUse: true })).toEqual({ ok: false, reason: 'used' });
      });
    });
  });
}

// ---- SQLite: always runs, on a real file ----

describeStoreContract('SqliteStore', async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'vd-store-'));
  return {
    open: async () => {
      const s = new SqliteStore({ dataDir });
      await s.init();
      return s;
    },
    destroy: () => rm(dataDir, { recursive: true, force: true }),
  };
});

describe('SqliteStore file', () => {
  it(`keeps everything in <dataDir>/${SQLITE_FILE_NAME}, owner-only, creating the directory if needed`, async () => {
    const root = await mkdtemp(join(tmpdir(), 'vd-store-'));
    try {
      const dataDir = join(root, 'nested', 'data');
      const store = new SqliteStore({ dataDir });
      await store.init();
      await store.nextCounter('x');
      await store.close();
      expect(await readdir(dataDir)).toContain(SQLITE_FILE_NAME);
      // It holds live sessions' VNC passwords: only the controller's own user may read it.
      expect((await stat(join(dataDir, SQLITE_FILE_NAME))).mode & 0o777).toBe(0o600);
      expect((await stat(dataDir)).mode & 0o777).toBe(0o700);
      const reopened = new SqliteStore({ dataDir });
      await reopened.init();
      expect(await reopened.nextCounter('x')).toBe(2);
      await reopened.close();
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('an upgraded file keeps the live sessions\' reconnect keys (one per session before), bound as their session was', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'vd-store-'));
    try {
      const { default: Database } = await import('better-sqlite3');
      const db = new Database(join(dataDir, SQLITE_FILE_NAME));
      // Schema version 2 as earlier controllers wrote it (only the columns this check needs).
      db.exec(`CREATE TABLE sessions (id TEXT PRIMARY KEY, username TEXT NOT NULL, state TEXT NOT NULL, blade TEXT,
        agent_session_id TEXT, display INTEGER, port INTEGER, pid INTEGER, password TEXT, client_ip TEXT,
        reconnect_key_hash TEXT, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, ended_at INTEGER, end_reason TEXT) STRICT;
        CREATE UNIQUE INDEX sessions_live_username ON sessions(username) WHERE state != 'ended';
        CREATE INDEX sessions_live_reconnect ON sessions(reconnect_key_hash) WHERE state != 'ended';
        CREATE INDEX sessions_live_blade ON sessions(blade) WHERE state != 'ended';
        CREATE INDEX sessions_created ON sessions(created_at DESC, id DESC);
        CREATE INDEX sessions_ended ON sessions(ended_at) WHERE state = 'ended';
        CREATE TABLE tokens (hash TEXT PRIMARY KEY, session_id TEXT NOT NULL, expires_at INTEGER NOT NULL, client_ip TEXT,
          created_at INTEGER NOT NULL, used_at INTEGER, revoked_at INTEGER) STRICT;
        CREATE TABLE blades (name TEXT PRIMARY KEY, address TEXT NOT NULL, admin_state TEXT NOT NULL, created_at INTEGER NOT NULL,
          updated_at INTEGER NOT NULL) STRICT;
        CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT;`);
      const live = randomUUID();
      const ended = randomUUID();
      const insert = db.prepare(`INSERT INTO sessions (id, username, state, client_ip, reconnect_key_hash, created_at, updated_at)
        VALUES (?, ?, ?, ?, ?, 1, 2)`);
      insert.run(live, 'vdtest16', 'running', '192.0.2.5', hashOf(41));
      insert.run(ended, 'vdtest17', 'ended', null, hashOf(42));
      db.pragma('user_version = 2');
      db.close();
      const store = new SqliteStore({ dataDir });
      await store.init();
      try {
        expect(await store.getReconnectKey(hashOf(41))).toMatchObject({ key: { sessionId: live, clientIp: '192.0.2.5' }, session: { id: live } });
        expect(await store.getReconnectKey(hashOf(42))).toBeNull();
        expect(Object.keys((await store.getSession(live))!)).not.toContain('reconnectKeyHash');
      } finally {
        await store.close();
      }
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it('refuses to run on a file written by a newer schema', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'vd-store-'));
    try {
      const { default: Database } = await import('better-sqlite3');
      const db = new Database(join(dataDir, SQLITE_FILE_NAME));
      db.pragma('user_version = 999');
      db.close();
      const store = new SqliteStore({ dataDir });
      await expect(store.init()).rejects.toThrow(/newer/);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

// ---- SQLite across processes: two controllers pointed at one data dir must not break the rules either ----

/** Runs in each child process (through vite-node, which loads the TypeScript store as the tests do). */
const RACE_WORKER = `
import { SqliteStore } from ${JSON.stringify(fileURLToPath(new URL('../../controller/store/sqlite-store.js', import.meta.url)))};
const [dataDir, hashesJson] = process.argv.slice(2);
const hashes = JSON.parse(hashesJson);
const store = new SqliteStore({ dataDir });
await store.init();
console.log('ready');
// Wait for the parent's go. (Not readline: vite-node exits as soon as stdin ends, so the parent keeps it open.)
await new Promise((resolve) => process.stdin.once('data', resolve));
process.stdin.pause();
const out = { created: [], counters: [], consumed: [] };
for (let i = 0; i < 50; i++) {
  const now = new Date(Date.UTC(2030, 0, 1, 0, 0, 0, i));
  const r = await store.createSession({ id: crypto.randomUUID(), username: 'vdtest' + (16 + (i % 10)), clientIp: null, now });
  if (r.created) out.created.push(r.session.id);
  out.counters.push(await store.nextCounter('rr'));
  const c = await store.consumeToken(hashes[i % hashes.length], now, { singleUse: true });
  if (c.ok) out.consumed.push(c.token.hash);
}
await store.close();
console.log(JSON.stringify(out));
process.exit(0);
`;

describe('SqliteStore shared by several processes', () => {
  it('keeps one live session per user, unique counters and single-use tokens across 4 processes', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'vd-store-'));
    const children: ChildProcess[] = [];
    try {
      const store = new SqliteStore({ dataDir });
      await store.init();
      const { session } = await store.createSession({ id: randomUUID(), username: 'vdtest30', clientIp: null, now: T0 });
      const hashes = Array.from({ length: 10 }, (_, i) => hashOf(`tok${i}`));
      for (const hash of hashes) await store.insertToken({ ...tokenRecord(session.id), hash, expiresAt: at(3_600_000) });
      const script = join(dataDir, 'race-worker.ts');
      await writeFile(script, RACE_WORKER);

      const viteNode = fileURLToPath(new URL('../../node_modules/.bin/vite-node', import.meta.url));
      const outputs = await new Promise<string[]>((resolve, reject) => {
        const results: (string | undefined)[] = [];
        let ready = 0;
        let closed = 0;
        for (let p = 0; p < 4; p++) {
          const child = spawn(viteNode, [script, dataDir, JSON.stringify(hashes)], { stdio: ['pipe', 'pipe', 'inherit'] });
          children.push(child);
          let buffered = '';
          child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
            buffered += chunk;
            let nl: number;
            while ((nl = buffered.indexOf('\n')) >= 0) {
              const line = buffered.slice(0, nl);
              buffered = buffered.slice(nl + 1);
              // Start everyone at once, so the four processes really contend for the write lock.
              if (line === 'ready' && ++ready === 4) for (const c of children) c.stdin!.write('go\n');
              else if (line.startsWith('{')) results[p] = line;
            }
          });
          child.on('error', reject);
          child.on('close', (code) => {
            if (code !== 0 || results[p] === undefined) reject(new Error(`race worker ${p} exited with ${code} and no result`));
            else if (++closed === 4) resolve(results as string[]);
          });
        }
      });

      const parsed = outputs.map((o) => JSON.parse(o) as { created: string[]; counters: number[]; consumed: string[] });
      expect(parsed.flatMap((r) => r.created)).toHaveLength(10);
      const live = await store.listSessions({ live: true });
      expect(live.map((s) => s.username).sort()).toEqual([...Array.from({ length: 10 }, (_, i) => `vdtest${16 + i}`), 'vdtest30'].sort());
      expect(parsed.flatMap((r) => r.counters).sort((a, b) => a - b)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
      const consumed = parsed.flatMap((r) => r.consumed);
      expect(consumed.sort()).toEqual([...hashes].sort());
      await store.close();
    } finally {
      for (const c of children) if (c.exitCode === null) c.kill();
      await rm(dataDir, { recursive: true, force: true });
    }
    // 600 transactions contending for one file, each commit fsynced (synchronous=FULL): seconds on a busy disk.
  }, 120_000);
});

// ---- MongoDB: runs only against a real server ----

const MONGODB_URL = process.env.MONGODB_URL;
if (MONGODB_URL) {
  describeStoreContract('MongoStore', async () => {
    const dbName = `vd_contract_${process.pid}_${randomUUID().slice(0, 8)}`;
    return {
      open: async () => {
        const s = new MongoStore({ url: MONGODB_URL, dbName });
        await s.init();
        return s;
      },
      destroy: async () => {
        const client = new MongoClient(MONGODB_URL);
        try {
          await client.db(dbName).dropDatabase();
        } finally {
          await client.close();
        }
      },
    };
  });
} else {
  console.warn(
    'MongoDB contract tests SKIPPED: set MONGODB_URL=mongodb://... to run them ' +
      '(e.g. MONGODB_URL=mongodb://localhost:27017 npx vitest run test/integration/store-contract.test.ts)',
  );
  describe.skip('Store contract: MongoStore (SKIPPED: set MONGODB_URL=mongodb://... to run it)', () => {
    it('runs the same contract against a real MongoDB', () => {});
  });
}
