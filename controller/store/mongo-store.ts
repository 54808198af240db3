import {
  MongoClient,
  MongoError,
  MongoNetworkError,
  MongoNotConnectedError,
  MongoServerError,
  MongoServerSelectionError,
  MongoWriteConcernError,
  type Collection, type Db, type Filter, type MongoClientOptions } from 'mongodb';
import type {
  BladeAdminState,
  BladeRecord,
  ConsumeResult,
  NewSession,
  ReconnectKeyRecord,
  SessionPatch,
  SessionFilter,
  SessionRecord,
  Store,
  TokenRecord,
} from './store.js';
import { PATCHABLE_SESSION_FIELDS, assertBladeAdminState, assertPatchable, checkKeep } from './validate.js';

/** Token hashes per activeTokenHashes query. */
const ACTIVE_TOKEN_CHUNK = 5000;

export interface MongoStoreOptions {
  /** mongodb:// or mongodb+srv:// URL. */
  url: string;
  /** Database name; default 'vncdispatch'. */
  dbName?: string;
  /**
   * Expired tokens are deleted by MongoDB's TTL monitor this many seconds after they expire (pruneTokens still works
   * explicitly). The grace keeps recently expired tokens around so a rejection can say "expired", not "unknown".
   */
  tokenTtlGraceSeconds?: number;
  /** Extra driver options (TLS, pool size, ...). */
  clientOptions?: MongoClientOptions;
}

/** Stored session: the record plus `live: true` while starting/running, which the partial unique index keys on. */
interface SessionDoc extends SessionRecord {
  live?: true;
}
type TokenDoc = TokenRecord;
type ReconnectKeyDoc = ReconnectKeyRecord;
type BladeDoc = BladeRecord;
interface CounterDoc {
  _id: string;
  value: number;
}

const DUPLICATE_KEY = 11000;
const INDEX_OPTIONS_CONFLICT = 85;
/** Bounded retries for the rare races that surface as duplicate-key errors (concurrent upserts, a live session ending). */
const MAX_ATTEMPTS = 5;

const isDuplicateKey = (err: unknown): err is MongoServerError =>
  err instanceof MongoServerError && err.code === DUPLICATE_KEY;

/** Reads return plain records: no _id, no `live` marker. */
const SESSION_PROJECTION = { _id: 0, live: 0 } as const;
const PLAIN_PROJECTION = { _id: 0 } as const;

function toSession(doc: SessionDoc): SessionRecord {
  return {
    id: doc.id,
    username: doc.username,
    state: doc.state,
    blade: doc.blade ?? null,
    agentSessionId: doc.agentSessionId ?? null,
    display: doc.display ?? null,
    port: doc.port ?? null,
    pid: doc.pid ?? null,
    password: doc.password ?? null,
    clientIp: doc.clientIp ?? null,
    createdAt: doc.createdAt,
    updatedAt: doc.updatedAt,
    endedAt: doc.endedAt ?? null,
    endReason: doc.endReason ?? null,
  };
}

function toToken(doc: TokenDoc): TokenRecord {
  return {
    hash: doc.hash,
    sessionId: doc.sessionId,
    expiresAt: doc.expiresAt,
    clientIp: doc.clientIp ?? null,
    createdAt: doc.createdAt,
    usedAt: doc.usedAt ?? null,
    revokedAt: doc.revokedAt ?? null,
  };
}

function toBlade(doc: BladeDoc): BladeRecord {
  return {
    name: doc.name,
    address: doc.address,
    adminState: doc.adminState,
    createdAt: doc.createdAt,
    updatedAt: doc.updatedAt,
  };
}

/**
 * The MongoDB backend, for several controllers sharing one replica set. Every decision that must hold under
 * concurrency is a single atomic server-side operation guarded by a unique index: one live session per user is a
 * partial unique index on {username} over `live: true` documents; single-use tokens are a findOneAndUpdate whose
 * filter requires `usedAt: null`; counters are `$inc` upserts. Nothing reads a value and then writes it back.
 */
export class MongoStore implements Store {
  private readonly options: Required<Omit<MongoStoreOptions, 'clientOptions'>> & { clientOptions: MongoClientOptions };
  private readonly client: MongoClient;
  private db: Db | null = null;

  constructor(options: MongoStoreOptions) {
    this.options = { dbName: 'vncdispatch', tokenTtlGraceSeconds: 3600, clientOptions: {}, ...options };
    if (!/^mongodb(\+srv)?:\/\//.test(this.options.url)) throw new TypeError('MongoStore url must start with mongodb://');
    if (!Number.isInteger(this.options.tokenTtlGraceSeconds) || this.options.tokenTtlGraceSeconds < 0) {
      throw new TypeError('tokenTtlGraceSeconds must be a non-negative integer');
    }
    // Majority writes so a decision made through one controller survives a failover. Reads stay on the primary at
    // the default 'local' level: after a duplicate-key error the winner's document must be visible at once.
    this.client = new MongoClient(this.options.url, {
      writeConcern: { w: 'majority' },
      retryWrites: true,
      ...this.options.clientOptions,
    });
  }

  private get sessions(): Collection<SessionDoc> {
    return this.database.collection<SessionDoc>('sessions');
  }
  private get tokens(): Collection<TokenDoc> {
    return this.database.collection<TokenDoc>('tokens');
  }
  private get reconnectKeys(): Collection<ReconnectKeyDoc> {
    return this.database.collection<ReconnectKeyDoc>('reconnectKeys');
  }
  private get blades(): Collection<BladeDoc> {
    return this.database.collection<BladeDoc>('blades');
  }
  private get counters(): Collection<CounterDoc> {
    return this.database.collection<CounterDoc>('counters');
  }
  private get database(): Db {
    if (!this.db) throw new Error('MongoStore is not open: call init() first');
    return this.db;
  }

  async init(): Promise<void> {
    if (this.db) return;
    await this.client.connect();
    this.db = this.client.db(this.options.dbName);
    // createIndex is idempotent for identical specs, so every controller may run this at start. One at a time: parallel
    // createIndex calls that implicitly create the same collection can conflict on older servers.
    await this.sessions.createIndex({ id: 1 }, { unique: true, name: 'sessions_id' });
    await this.sessions.createIndex(
      { username: 1 },
      { unique: true, partialFilterExpression: { live: true }, name: 'sessions_live_username' },
    );
    await this.sessions.createIndex({ blade: 1 }, { partialFilterExpression: { live: true }, name: 'sessions_live_blade' });
    await this.sessions.createIndex({ createdAt: -1, id: -1 }, { name: 'sessions_created' });
    await this.tokens.createIndex({ hash: 1 }, { unique: true, name: 'tokens_hash' });
    await this.tokens.createIndex({ sessionId: 1 }, { name: 'tokens_session' });
    await this.ensureTokenTtlIndex();
    await this.reconnectKeys.createIndex({ hash: 1 }, { unique: true, name: 'reconnect_keys_hash' });
    await this.reconnectKeys.createIndex({ sessionId: 1 }, { name: 'reconnect_keys_session' });
    await this.migrateSessionReconnectKeys();
    await this.blades.createIndex({ name: 1 }, { unique: true, name: 'blades_name' });
  }

  /**
   * Databases written before reconnect keys had their own collection kept one key per session, on the session
   * document: move live sessions' keys over (bound as their session was), so open viewers keep reconnecting.
   * Idempotent; several controllers starting at once only repeat the same upserts.
   */
  private async migrateSessionReconnectKeys(): Promise<void> {
    const legacy = this.database.collection<{ id: string; clientIp?: string | null; updatedAt: Date; reconnectKeyHash?: string | null; live?: true }>('sessions');
    for await (const doc of legacy.find({ reconnectKeyHash: { $type: 'string' } }, { projection: { _id: 0, id: 1, clientIp: 1, updatedAt: 1, reconnectKeyHash: 1, live: 1 } })) {
      if (doc.live && doc.reconnectKeyHash) {
        await this.reconnectKeys.updateOne(
          { hash: doc.reconnectKeyHash },
          { $setOnInsert: { sessionId: doc.id, clientIp: doc.clientIp ?? null, createdAt: doc.updatedAt } },
          { upsert: true },
        );
      }
      await legacy.updateOne({ id: doc.id }, { $unset: { reconnectKeyHash: '' } });
    }
    await this.sessions.dropIndex('sessions_live_reconnect').catch(() => undefined);
  }

  /** The TTL index; if it exists with another grace period (configuration changed), collMod adjusts it in place. */
  private async ensureTokenTtlIndex(): Promise<void> {
    const expireAfterSeconds = this.options.tokenTtlGraceSeconds;
    try {
      await this.tokens.createIndex({ expiresAt: 1 }, { expireAfterSeconds, name: 'tokens_expires_ttl' });
    } catch (err) {
      if (!(err instanceof MongoServerError && err.code === INDEX_OPTIONS_CONFLICT)) throw err;
      await this.database.command({ collMod: 'tokens', index: { name: 'tokens_expires_ttl', expireAfterSeconds } });
    }
  }

  async close(): Promise<void> {
    this.db = null;
    await this.client.close();
  }

  async createSession(input: NewSession): Promise<{ created: boolean; session: SessionRecord }> {
    const doc: SessionDoc = {
      id: input.id,
      username: input.username,
      state: 'starting',
      live: true,
      blade: null,
      agentSessionId: null,
      display: null,
      port: null,
      pid: null,
      password: null,
      clientIp: input.clientIp,
      createdAt: input.now,
      updatedAt: input.now,
      endedAt: null,
      endReason: null,
    };
    for (let attempt = 1; ; attempt++) {
      try {
        // insertOne mutates its argument (adds _id): give it a copy so a retry inserts a fresh document.
        await this.sessions.insertOne({ ...doc });
        return { created: true, session: toSession(doc) };
      } catch (err) {
        if (!isDuplicateKey(err)) throw err;
        const live = await this.sessions.findOne({ username: input.username, live: true }, { projection: SESSION_PROJECTION });
        if (live) return { created: false, session: toSession(live) };
        // The duplicate was the session id itself, or the live session ended in between: retry (bounded).
        if (attempt >= MAX_ATTEMPTS || (await this.sessions.countDocuments({ id: input.id }, { limit: 1 })) > 0) throw err;
      }
    }
  }

  async updateSession(id: string, patch: SessionPatch, now: Date): Promise<SessionRecord | null> {
    assertPatchable(patch);
    const set: Partial<SessionDoc> = { updatedAt: now };
    for (const f of PATCHABLE_SESSION_FIELDS) {
      if (patch[f] !== undefined) (set as Record<string, unknown>)[f] = patch[f];
    }
    const doc = await this.sessions.findOneAndUpdate(
      { id, live: true },
      { $set: set },
      { returnDocument: 'after', projection: SESSION_PROJECTION },
    );
    return doc ? toSession(doc) : null;
  }

  async getSession(id: string): Promise<SessionRecord | null> {
    const doc = await this.sessions.findOne({ id }, { projection: SESSION_PROJECTION });
    return doc ? toSession(doc) : null;
  }

  async getLiveSessionByUser(username: string): Promise<SessionRecord | null> {
    const doc = await this.sessions.findOne({ username, live: true }, { projection: SESSION_PROJECTION });
    return doc ? toSession(doc) : null;
  }

  async listSessions(filter: SessionFilter = {}): Promise<SessionRecord[]> {
    const query: Filter<SessionDoc> = {};
    if (filter.live === true) query.live = true;
    else if (filter.live === false) query.state = 'ended';
    if (filter.blade !== undefined) query.blade = filter.blade;
    if (filter.username !== undefined) query.username = filter.username;
    let cursor = this.sessions.find(query, { projection: SESSION_PROJECTION }).sort({ createdAt: -1, id: -1 });
    if (filter.offset) cursor = cursor.skip(Math.max(0, filter.offset));
    if (filter.limit !== undefined) {
      if (filter.limit <= 0) return [];
      cursor = cursor.limit(filter.limit);
    }
    return (await cursor.toArray()).map(toSession);
  }

  async endSession(id: string, reason: string, now: Date): Promise<SessionRecord | null> {
    // Only the caller whose filter still matches `live: true` ends it, so a second call returns null.
    const doc = await this.sessions.findOneAndUpdate(
      { id, live: true },
      {
        // The password is only needed while the desktop runs; dropping it keeps no dead secrets at rest.
        $set: { state: 'ended', endedAt: now, endReason: reason, updatedAt: now, password: null },
        $unset: { live: '' },
      },
      { returnDocument: 'after', projection: SESSION_PROJECTION },
    );
    if (!doc) return null;
    // Not one transaction with the above (that would need a replica set for a single controller too); consumeToken
    // re-checks that the session is live, so a token that slips through this gap is still refused.
    await this.revokeTokens(id, now);
    return toSession(doc);
  }

  async discardSession(id: string): Promise<boolean> {
    const { deletedCount } = await this.sessions.deleteOne({ id, state: 'starting' });
    if (deletedCount === 0) return false;
    await this.tokens.deleteMany({ sessionId: id });
    await this.reconnectKeys.deleteMany({ sessionId: id });
    return true;
  }

  async addReconnectKey(key: ReconnectKeyRecord, options: { keep: number }): Promise<SessionRecord | null> {
    const keep = checkKeep(options.keep);
    const session = await this.sessions.findOne({ id: key.sessionId }, { projection: SESSION_PROJECTION });
    if (!session) return null;
    // Not one transaction with the read above (that would need a replica set for a single controller too): a key
    // added while its session ends is never honoured, because the reconnect endpoint requires a live session, and is
    // deleted with the session.
    await this.reconnectKeys.insertOne({ hash: key.hash, sessionId: key.sessionId, clientIp: key.clientIp, createdAt: key.createdAt });
    await this.retireReconnectKeys(key, keep);
    return toSession(session);
  }

  /**
   * Deletes the session's keys beyond its `keep` newest (by createdAt, then insertion order), never `key` itself.
   * Controllers granting at once each trim what they see, so for a moment a session may hold a few more than `keep`
   * (never more than `keep` plus the grants in flight); the next grant trims them. A grant deletes only keys older
   * than the `keep` newest it sees, so concurrent grants never retire each other's fresh keys below the cap.
   */
  private async retireReconnectKeys(key: ReconnectKeyRecord, keep: number): Promise<void> {
    const beyond = await this.reconnectKeys
      .find({ sessionId: key.sessionId }, { projection: { _id: 1, hash: 1 }, sort: { createdAt: -1, _id: -1 }, skip: keep })
      .toArray();
    const ids = beyond.filter((d) => d.hash !== key.hash).map((d) => d._id);
    if (ids.length > 0) await this.reconnectKeys.deleteMany({ _id: { $in: ids } });
  }

  async getReconnectKey(hash: string): Promise<{ key: ReconnectKeyRecord; session: SessionRecord } | null> {
    const key = await this.reconnectKeys.findOne({ hash }, { projection: PLAIN_PROJECTION });
    if (!key) return null;
    const session = await this.sessions.findOne({ id: key.sessionId }, { projection: SESSION_PROJECTION });
    if (!session) return null;
    return {
      key: { hash: key.hash, sessionId: key.sessionId, clientIp: key.clientIp ?? null, createdAt: key.createdAt },
      session: toSession(session),
    };
  }

  async countLiveSessionsByBlade(): Promise<Map<string, number>> {
    const rows = await this.sessions
      .aggregate<{ _id: string; n: number }>([
        { $match: { live: true, blade: { $type: 'string' } } },
        { $group: { _id: '$blade', n: { $sum: 1 } } },
      ])
      .toArray();
    return new Map(rows.map((r) => [r._id, r.n]));
  }

  async insertToken(token: TokenRecord): Promise<void> {
    await this.tokens.insertOne({ ...toToken(token) });
  }

  async consumeToken(hash: string, now: Date, options: { singleUse: boolean }): Promise<ConsumeResult> {
    const valid: Filter<TokenDoc> = { hash, revokedAt: null, expiresAt: { $gt: now } };
    const token = options.singleUse
      ? await this.tokens.findOneAndUpdate(
          { ...valid, usedAt: null },
          { $set: { usedAt: now } },
          { returnDocument: 'after', projection: PLAIN_PROJECTION },
        )
      : await this.tokens.findOne(valid, { projection: PLAIN_PROJECTION });
    if (!token) {
      // Refused: a follow-up read only classifies why (same order as SqliteStore); it decides nothing.
      const t = await this.tokens.findOne({ hash }, { projection: PLAIN_PROJECTION });
      if (!t) return { ok: false, reason: 'unknown' };
      if (t.revokedAt) return { ok: false, reason: 'revoked' };
      if (t.expiresAt.getTime() <= now.getTime()) return { ok: false, reason: 'expired' };
      return { ok: false, reason: 'used' };
    }
    const session = await this.sessions.findOne({ id: token.sessionId }, { projection: { _id: 0 } });
    if (!session || !session.live) {
      // A token issued while its session was ending escaped endSession's revocation: revoke it now.
      await this.tokens.updateOne({ hash, revokedAt: null }, { $set: { revokedAt: now } });
      return { ok: false, reason: 'session-ended' };
    }
    return { ok: true, token: toToken(token), session: toSession(session) };
  }

  async getToken(hash: string): Promise<TokenRecord | null> {
    const doc = await this.tokens.findOne({ hash }, { projection: PLAIN_PROJECTION });
    return doc ? toToken(doc) : null;
  }

  async activeTokenHashes(hashes: readonly string[]): Promise<Set<string>> {
    const active = new Set<string>();
    // $in lists stay well under the 16 MiB command limit in chunks of this size.
    for (let i = 0; i < hashes.length; i += ACTIVE_TOKEN_CHUNK) {
      const tokens = await this.tokens
        .find({ hash: { $in: hashes.slice(i, i + ACTIVE_TOKEN_CHUNK) }, revokedAt: null }, { projection: { _id: 0, hash: 1, sessionId: 1 } })
        .toArray();
      const sessionIds = [...new Set(tokens.map((t) => t.sessionId))];
      const running = new Set(
        (await this.sessions.find({ id: { $in: sessionIds }, state: 'running' }, { projection: { _id: 0, id: 1 } }).toArray())
          .map((d) => d.id),
      );
      for (const t of tokens) if (running.has(t.sessionId)) active.add(t.hash);
    }
    return active;
  }

  async revokeTokens(sessionId: string, now: Date): Promise<number> {
    const res = await this.tokens.updateMany({ sessionId, revokedAt: null }, { $set: { revokedAt: now } });
    return res.modifiedCount;
  }

  async pruneTokens(before: Date): Promise<number> {
    const res = await this.tokens.deleteMany({ expiresAt: { $lt: before } });
    return res.deletedCount;
  }

  async upsertBlade(input: { name: string; address: string }, now: Date): Promise<BladeRecord> {
    const doc = await retryDuplicateKey(() =>
      this.blades.findOneAndUpdate(
        { name: input.name },
        {
          $set: { address: input.address, updatedAt: now },
          // `name` comes from the filter's equality on insert.
          $setOnInsert: { adminState: 'ACTIVE', createdAt: now },
        },
        { upsert: true, returnDocument: 'after', projection: PLAIN_PROJECTION },
      ),
    );
    return toBlade(doc!);
  }

  async getBlade(name: string): Promise<BladeRecord | null> {
    const doc = await this.blades.findOne({ name }, { projection: PLAIN_PROJECTION });
    return doc ? toBlade(doc) : null;
  }

  async listBlades(): Promise<BladeRecord[]> {
    return (await this.blades.find({}, { projection: PLAIN_PROJECTION }).sort({ name: 1 }).toArray()).map(toBlade);
  }

  async setBladeAdminState(name: string, state: BladeAdminState, now: Date): Promise<BladeRecord | null> {
    assertBladeAdminState(state);
    const doc = await this.blades.findOneAndUpdate(
      { name },
      { $set: { adminState: state, updatedAt: now } },
      { returnDocument: 'after', projection: PLAIN_PROJECTION },
    );
    return doc ? toBlade(doc) : null;
  }

  async deleteBlade(name: string): Promise<boolean> {
    return (await this.blades.deleteOne({ name })).deletedCount > 0;
  }

  async nextCounter(name: string): Promise<number> {
    const doc = await retryDuplicateKey(() =>
      this.counters.findOneAndUpdate({ _id: name }, { $inc: { value: 1 } }, { upsert: true, returnDocument: 'after' }),
    );
    return doc!.value;
  }

  async pruneEndedSessions(before: Date): Promise<number> {
    const ended = await this.sessions.find({ state: 'ended', endedAt: { $lt: before } }, { projection: { _id: 0, id: 1 } })
      .map((d) => d.id).toArray();
    if (ended.length === 0) return 0;
    // Tokens first: a crash in between leaves sessions that the next pass prunes, never tokens without a session.
    await this.tokens.deleteMany({ sessionId: { $in: ended } });
    await this.reconnectKeys.deleteMany({ sessionId: { $in: ended } });
    const { deletedCount } = await this.sessions.deleteMany({ id: { $in: ended }, state: 'ended' });
    return deletedCount;
  }

  async checkWritable(): Promise<void> {
    // The same write concern as every decision (majority): fails when no primary can acknowledge it.
    await this.counters.updateOne({ _id: 'store-write-probe' }, { $set: { value: Date.now() } }, { upsert: true });
  }
}

/**
 * True for driver errors that mean "the deployment cannot serve this now" (no reachable primary, a lost connection,
 * a write concern not met), as opposed to a refused operation: they become StoreUnavailableError (see index.ts).
 */
export function isMongoUnavailable(err: unknown): boolean {
  return err instanceof MongoNetworkError || err instanceof MongoServerSelectionError
    || err instanceof MongoWriteConcernError || err instanceof MongoNotConnectedError
    || (err instanceof MongoError && (err.hasErrorLabel('RetryableWriteError') || err.hasErrorLabel('TransientTransactionError')));
}

/**
 * Two concurrent upserts of a missing document can both try to insert it; the loser gets a duplicate-key error
 * (the server retries some of these itself). Retrying is safe because the retried operation is itself atomic.
 */
async function retryDuplicateKey<T>(op: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await op();
    } catch (err) {
      if (!isDuplicateKey(err) || attempt >= MAX_ATTEMPTS) throw err;
    }
  }
}
