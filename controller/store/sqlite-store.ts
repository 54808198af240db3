import { chmodSync, mkdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import Database from 'better-sqlite3';
import { StoreUnavailableError } from '../errors.js';
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

/** The database file inside the data directory. */
export const SQLITE_FILE_NAME = 'vncdispatch.db';

/** Bumped whenever the schema changes; init() migrates older files step by step. */
const SCHEMA_VERSION = 3;

export interface SqliteStoreOptions {
  /** Directory holding vncdispatch.db (created if missing). Ignored when `filename` is given. */
  dataDir?: string;
  /** Explicit database file, or ':memory:' for throwaway stores. */
  filename?: string;
  /** How long a write waits for another process holding the lock before failing with SQLITE_BUSY. */
  busyTimeoutMs?: number;
  /** FULL (default) fsyncs every commit; NORMAL only for measuring what FULL costs (--sqlite-synchronous). */
  synchronous?: 'FULL' | 'NORMAL';
}

/**
 * SQLite result codes that mean "the storage cannot do this now" (full or read-only disk, I/O error, a file that
 * vanished or is not a database, a lock held too long), as opposed to a refused statement (a constraint) or a bug.
 * The primary code is the prefix of the extended one (SQLITE_IOERR_FSYNC, SQLITE_READONLY_DBMOVED, ...).
 */
const UNAVAILABLE_CODES = ['SQLITE_FULL', 'SQLITE_IOERR', 'SQLITE_READONLY', 'SQLITE_CANTOPEN', 'SQLITE_CORRUPT',
  'SQLITE_NOTADB', 'SQLITE_BUSY', 'SQLITE_LOCKED', 'SQLITE_PROTOCOL', 'SQLITE_NOMEM', 'SQLITE_PERM'];

function isUnavailable(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && UNAVAILABLE_CODES.some((c) => code === c || code.startsWith(`${c}_`));
}

const MIGRATIONS: Record<number, string> = {
  1: `
    CREATE TABLE sessions (
      id                 TEXT PRIMARY KEY,
      username           TEXT NOT NULL,
      state              TEXT NOT NULL CHECK (state IN ('starting', 'running', 'ended')),
      blade              TEXT,
      agent_session_id   TEXT,
      display            INTEGER,
      port               INTEGER,
      pid                INTEGER,
      password           TEXT,
      client_ip          TEXT,
      reconnect_key_hash TEXT,
      created_at         INTEGER NOT NULL,
      updated_at         INTEGER NOT NULL,
      ended_at           INTEGER,
      end_reason         TEXT
    ) STRICT;
    -- The one-live-session-per-user rule lives in the database, not in application code.
    CREATE UNIQUE INDEX sessions_live_username ON sessions(username) WHERE state != 'ended';
    CREATE INDEX sessions_live_reconnect ON sessions(reconnect_key_hash) WHERE state != 'ended';
    CREATE INDEX sessions_live_blade ON sessions(blade) WHERE state != 'ended';
    CREATE INDEX sessions_created ON sessions(created_at DESC, id DESC);

    CREATE TABLE tokens (
      hash       TEXT PRIMARY KEY,
      session_id TEXT NOT NULL,
      expires_at INTEGER NOT NULL,
      client_ip  TEXT,
      created_at INTEGER NOT NULL,
      used_at    INTEGER,
      revoked_at INTEGER
    ) STRICT;
    CREATE INDEX tokens_session ON tokens(session_id);
    CREATE INDEX tokens_expires ON tokens(expires_at);

    CREATE TABLE blades (
      name        TEXT PRIMARY KEY,
      address     TEXT NOT NULL,
      admin_state TEXT NOT NULL CHECK (admin_state IN ('ACTIVE', 'CORDONED', 'DRAINING')),
      created_at  INTEGER NOT NULL,
      updated_at  INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE counters (
      name  TEXT PRIMARY KEY,
      value INTEGER NOT NULL
    ) STRICT;
  `,
  // Ended sessions are pruned after a retention period: find them without scanning the live ones.
  2: `CREATE INDEX sessions_ended ON sessions(ended_at) WHERE state = 'ended';`,
  // One reconnect key per grant instead of one per session (a second grant no longer cuts off the first viewer),
  // each with its grant's client-IP binding. Live sessions' keys move over, bound as their session was.
  3: `
    CREATE TABLE reconnect_keys (
      hash       TEXT PRIMARY KEY,
      session_id TEXT NOT NULL,
      client_ip  TEXT,
      created_at INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX reconnect_keys_session ON reconnect_keys(session_id);
    INSERT INTO reconnect_keys (hash, session_id, client_ip, created_at)
      SELECT reconnect_key_hash, id, client_ip, updated_at FROM sessions
      WHERE reconnect_key_hash IS NOT NULL AND state != 'ended';
    DROP INDEX sessions_live_reconnect;
    ALTER TABLE sessions DROP COLUMN reconnect_key_hash;
  `,
};

interface SessionRow {
  id: string;
  username: string;
  state: SessionRecord['state'];
  blade: string | null;
  agent_session_id: string | null;
  display: number | null;
  port: number | null;
  pid: number | null;
  password: string | null;
  client_ip: string | null;
  created_at: number;
  updated_at: number;
  ended_at: number | null;
  end_reason: string | null;
}

interface TokenRow {
  hash: string;
  session_id: string;
  expires_at: number;
  client_ip: string | null;
  created_at: number;
  used_at: number | null;
  revoked_at: number | null;
}

interface ReconnectKeyRow {
  hash: string;
  session_id: string;
  client_ip: string | null;
  created_at: number;
}

interface BladeRow {
  name: string;
  address: string;
  admin_state: BladeAdminState;
  created_at: number;
  updated_at: number;
}

const date = (ms: number): Date => new Date(ms);
const dateOrNull = (ms: number | null): Date | null => (ms === null ? null : new Date(ms));

function toSession(row: SessionRow): SessionRecord {
  return {
    id: row.id,
    username: row.username,
    state: row.state,
    blade: row.blade,
    agentSessionId: row.agent_session_id,
    display: row.display,
    port: row.port,
    pid: row.pid,
    password: row.password,
    clientIp: row.client_ip,
    createdAt: date(row.created_at),
    updatedAt: date(row.updated_at),
    endedAt: dateOrNull(row.ended_at),
    endReason: row.end_reason,
  };
}

function toToken(row: TokenRow): TokenRecord {
  return {
    hash: row.hash,
    sessionId: row.session_id,
    expiresAt: date(row.expires_at),
    clientIp: row.client_ip,
    createdAt: date(row.created_at),
    usedAt: dateOrNull(row.used_at),
    revokedAt: dateOrNull(row.revoked_at),
  };
}

function toBlade(row: BladeRow): BladeRecord {
  return {
    name: row.name,
    address: row.address,
    adminState: row.admin_state,
    createdAt: date(row.created_at),
    updatedAt: date(row.updated_at),
  };
}

/** Column for each patchable SessionRecord field. */
const PATCH_COLUMNS: Record<(typeof PATCHABLE_SESSION_FIELDS)[number], string> = {
  state: 'state',
  blade: 'blade',
  agentSessionId: 'agent_session_id',
  display: 'display',
  port: 'port',
  pid: 'pid',
  password: 'password',
  clientIp: 'client_ip',
};

type Statements = ReturnType<SqliteStore['prepare']>;

/**
 * The embedded default store: one SQLite file in the data directory, so a single controller needs no database server
 * and keeps its sessions across restarts. better-sqlite3 is synchronous, so every method runs to completion without
 * interleaving inside this process; writes that check-then-act run in IMMEDIATE transactions (and the partial unique
 * index backs the one-live-session rule) so they also stay atomic if another process opens the same file.
 */
export class SqliteStore implements Store {
  readonly filename: string;
  private readonly options: Required<Omit<SqliteStoreOptions, 'dataDir' | 'filename'>>;
  private db: Database.Database | null = null;
  private stmts: Statements | null = null;
  /** Device and inode of the file opened by init(): a deleted or replaced file no longer matches them. */
  private identity: { dev: number; ino: number } | null = null;

  constructor(options: SqliteStoreOptions) {
    const { dataDir, filename, ...rest } = options;
    this.options = { busyTimeoutMs: 5_000, synchronous: 'FULL', ...rest };
    if (filename !== undefined) this.filename = filename;
    else if (dataDir !== undefined) this.filename = join(dataDir, SQLITE_FILE_NAME);
    else throw new TypeError('SqliteStore needs dataDir or filename');
    if (!Number.isInteger(this.options.busyTimeoutMs) || this.options.busyTimeoutMs < 0) {
      throw new TypeError('busyTimeoutMs must be a non-negative integer');
    }
  }

  async init(): Promise<void> {
    if (this.db) return;
    if (this.filename !== ':memory:') mkdirSync(dirname(this.filename), { recursive: true, mode: 0o700 });
    const db = new Database(this.filename);
    try {
      // The file holds live sessions' VNC passwords: owner-only, whatever the umask (SQLite gives the -wal and -shm
      // files the main file's permissions).
      if (this.filename !== ':memory:') chmodSync(this.filename, 0o600);
      db.pragma(`busy_timeout = ${this.options.busyTimeoutMs}`);
      db.pragma('journal_mode = WAL');
      // FULL: every commit is fsynced to the WAL before it returns, so a decision the API reported (a session, a
      // token, a cordon) survives an OS crash or a filesystem that goes read-only, not only a process crash.
      // Measured with bench:dispatch (README, Store): it costs well under a millisecond per dispatch here.
      db.pragma(`synchronous = ${this.options.synchronous === 'NORMAL' ? 'NORMAL' : 'FULL'}`);
      this.migrate(db);
      if (this.filename !== ':memory:') {
        const st = statSync(this.filename);
        this.identity = { dev: st.dev, ino: st.ino };
      }
      this.db = db;
      this.stmts = this.prepare(db);
    } catch (err) {
      db.close();
      throw err;
    }
  }

  async close(): Promise<void> {
    this.stmts = null;
    this.identity = null;
    const db = this.db;
    this.db = null;
    db?.close();
  }

  private migrate(db: Database.Database): void {
    db.transaction(() => {
      const current = db.pragma('user_version', { simple: true }) as number;
      if (current > SCHEMA_VERSION) {
        throw new Error(`${this.filename} has schema version ${current}, newer than this controller's ${SCHEMA_VERSION}`);
      }
      for (let v = current + 1; v <= SCHEMA_VERSION; v++) {
        db.exec(MIGRATIONS[v]!);
        db.pragma(`user_version = ${v}`);
      }
    }).immediate();
  }

  /** Every statement is prepared once, here. */
  private prepare(db: Database.Database) {
    const patchSet = PATCHABLE_SESSION_FIELDS.map(
      (f) => `${PATCH_COLUMNS[f]} = CASE WHEN @has_${f} THEN @${f} ELSE ${PATCH_COLUMNS[f]} END`,
    ).join(', ');
    return {
      liveSessionByUser: db.prepare<[string], SessionRow>(
        `SELECT * FROM sessions WHERE username = ? AND state != 'ended'`,
      ),
      insertSession: db.prepare(
        `INSERT INTO sessions (id, username, state, client_ip, created_at, updated_at)
         VALUES (@id, @username, 'starting', @clientIp, @now, @now) RETURNING *`,
      ),
      updateSession: db.prepare(
        `UPDATE sessions SET ${patchSet}, updated_at = @now WHERE id = @id AND state != 'ended' RETURNING *`,
      ),
      getSession: db.prepare<[string], SessionRow>(`SELECT * FROM sessions WHERE id = ?`),
      listSessions: db.prepare(
        `SELECT * FROM sessions
         WHERE (@live IS NULL OR (@live = 1 AND state != 'ended') OR (@live = 0 AND state = 'ended'))
           AND (@blade IS NULL OR blade = @blade)
           AND (@username IS NULL OR username = @username)
         ORDER BY created_at DESC, id DESC LIMIT @limit OFFSET @offset`,
      ),
      // The password is only needed while the desktop runs; dropping it at the end keeps no dead secrets at rest.
      endSession: db.prepare(
        `UPDATE sessions SET state = 'ended', ended_at = @now, end_reason = @reason, updated_at = @now, password = NULL
         WHERE id = @id AND state != 'ended' RETURNING *`,
      ),
      discardSession: db.prepare<[string]>(`DELETE FROM sessions WHERE id = ? AND state = 'starting'`),
      pruneEndedTokens: db.prepare<[number]>(
        `DELETE FROM tokens WHERE session_id IN (SELECT id FROM sessions WHERE state = 'ended' AND ended_at < ?)`,
      ),
      pruneEndedSessions: db.prepare<[number]>(`DELETE FROM sessions WHERE state = 'ended' AND ended_at < ?`),
      writeProbe: db.prepare<[number]>(
        `INSERT INTO counters (name, value) VALUES ('store-write-probe', ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value`,
      ),
      deleteSessionTokens: db.prepare<[string]>(`DELETE FROM tokens WHERE session_id = ?`),
      insertReconnectKey: db.prepare(
        `INSERT INTO reconnect_keys (hash, session_id, client_ip, created_at) VALUES (@hash, @sessionId, @clientIp, @createdAt)`,
      ),
      getReconnectKey: db.prepare<[string], ReconnectKeyRow>(`SELECT * FROM reconnect_keys WHERE hash = ?`),
      // rowid breaks ties between keys made in the same millisecond: the later insert is the newer key.
      retireReconnectKeys: db.prepare(
        `DELETE FROM reconnect_keys WHERE session_id = @sessionId AND hash != @hash AND rowid NOT IN (
           SELECT rowid FROM reconnect_keys WHERE session_id = @sessionId ORDER BY created_at DESC, rowid DESC LIMIT @keep)`,
      ),
      deleteSessionReconnectKeys: db.prepare<[string]>(`DELETE FROM reconnect_keys WHERE session_id = ?`),
      pruneEndedReconnectKeys: db.prepare<[number]>(
        `DELETE FROM reconnect_keys WHERE session_id IN (SELECT id FROM sessions WHERE state = 'ended' AND ended_at < ?)`,
      ),
      countLiveByBlade: db.prepare<[], { blade: string; n: number }>(
        `SELECT blade, COUNT(*) AS n FROM sessions WHERE state != 'ended' AND blade IS NOT NULL GROUP BY blade`,
      ),
      insertToken: db.prepare(
        `INSERT INTO tokens (hash, session_id, expires_at, client_ip, created_at, used_at, revoked_at)
         VALUES (@hash, @sessionId, @expiresAt, @clientIp, @createdAt, @usedAt, @revokedAt)`,
      ),
      getToken: db.prepare<[string], TokenRow>(`SELECT * FROM tokens WHERE hash = ?`),
      // The hashes arrive as one JSON array parameter, so any number fits one prepared statement.
      activeTokenHashes: db.prepare<[string], { hash: string }>(
        `SELECT t.hash FROM tokens t JOIN sessions s ON s.id = t.session_id
         WHERE t.hash IN (SELECT value FROM json_each(?)) AND t.revoked_at IS NULL AND s.state = 'running'`,
      ),
      markTokenUsed: db.prepare<[number, string]>(`UPDATE tokens SET used_at = ? WHERE hash = ? AND used_at IS NULL`),
      revokeToken: db.prepare<[number, string]>(`UPDATE tokens SET revoked_at = ? WHERE hash = ? AND revoked_at IS NULL`),
      revokeTokens: db.prepare<[number, string]>(
        `UPDATE tokens SET revoked_at = ? WHERE session_id = ? AND revoked_at IS NULL`,
      ),
      pruneTokens: db.prepare<[number]>(`DELETE FROM tokens WHERE expires_at < ?`),
      upsertBlade: db.prepare<[{ name: string; address: string; now: number }], BladeRow>(
        `INSERT INTO blades (name, address, admin_state, created_at, updated_at)
         VALUES (@name, @address, 'ACTIVE', @now, @now)
         ON CONFLICT (name) DO UPDATE SET address = excluded.address, updated_at = excluded.updated_at RETURNING *`,
      ),
      getBlade: db.prepare<[string], BladeRow>(`SELECT * FROM blades WHERE name = ?`),
      listBlades: db.prepare<[], BladeRow>(`SELECT * FROM blades ORDER BY name`),
      deleteBlade: db.prepare<[string]>(`DELETE FROM blades WHERE name = ?`),
      setBladeAdminState: db.prepare<[string, number, string], BladeRow>(
        `UPDATE blades SET admin_state = ?, updated_at = ? WHERE name = ? RETURNING *`,
      ),
      nextCounter: db.prepare<[string], { value: number }>(
        `INSERT INTO counters (name, value) VALUES (?, 1) ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value`,
      ),
    };
  }

  private get s(): Statements {
    if (!this.stmts) throw new Error('SqliteStore is not open: call init() first');
    return this.stmts;
  }

  private get database(): Database.Database {
    if (!this.db) throw new Error('SqliteStore is not open: call init() first');
    return this.db;
  }

  /**
   * SQLite keeps writing to a file that was deleted (the open descriptor still points at it) or replaced, and all of
   * it is gone at the next start. A stat per call (microseconds, a local file) notices it at once.
   */
  private checkFile(): void {
    if (!this.identity) return;
    let st;
    try {
      st = statSync(this.filename);
    } catch (err) {
      throw new StoreUnavailableError(`the database file ${this.filename} is gone (${(err as NodeJS.ErrnoException).code ?? 'error'}); restart the controller once it is restored`);
    }
    if (st.dev !== this.identity.dev || st.ino !== this.identity.ino) {
      throw new StoreUnavailableError(`the database file ${this.filename} was replaced by another file; restart the controller`);
    }
  }

  /** Runs a read; a storage failure becomes StoreUnavailableError. */
  private read<T>(fn: () => T): T {
    this.checkFile();
    try {
      return fn();
    } catch (err) {
      if (isUnavailable(err)) throw new StoreUnavailableError(`the database cannot be read: ${(err as Error).message}`, { cause: err });
      throw err;
    }
  }

  /**
   * Runs a write as one IMMEDIATE transaction. Its COMMIT throws if the disk is full or read-only, so a change either
   * happened or the caller gets StoreUnavailableError, never a row SQLite rolled back (an autocommit
   * `UPDATE ... RETURNING` read with .get() hands back such a row on a full disk).
   */
  private write<T>(fn: () => T): T {
    this.checkFile();
    try {
      return this.database.transaction(fn).immediate();
    } catch (err) {
      if (isUnavailable(err)) throw new StoreUnavailableError(`the database cannot record changes: ${(err as Error).message}`, { cause: err });
      throw err;
    }
  }

  async createSession(input: NewSession): Promise<{ created: boolean; session: SessionRecord }> {
    return this.write(() => {
      const live = this.s.liveSessionByUser.get(input.username);
      if (live) return { created: false, session: toSession(live) };
      const row = this.s.insertSession.get({
        id: input.id,
        username: input.username,
        clientIp: input.clientIp,
        now: input.now.getTime(),
      }) as SessionRow;
      return { created: true, session: toSession(row) };
    });
  }

  async updateSession(id: string, patch: SessionPatch, now: Date): Promise<SessionRecord | null> {
    assertPatchable(patch);
    const params: Record<string, unknown> = { id, now: now.getTime() };
    for (const f of PATCHABLE_SESSION_FIELDS) {
      const has = patch[f] !== undefined;
      params[`has_${f}`] = has ? 1 : 0;
      params[f] = has ? patch[f] : null;
    }
    return this.write(() => {
      const row = this.s.updateSession.get(params) as SessionRow | undefined;
      return row ? toSession(row) : null;
    });
  }

  async getSession(id: string): Promise<SessionRecord | null> {
    const row = this.read(() => this.s.getSession.get(id));
    return row ? toSession(row) : null;
  }

  async getLiveSessionByUser(username: string): Promise<SessionRecord | null> {
    const row = this.read(() => this.s.liveSessionByUser.get(username));
    return row ? toSession(row) : null;
  }

  async listSessions(filter: SessionFilter = {}): Promise<SessionRecord[]> {
    const rows = this.read(() => this.s.listSessions.all({
      live: filter.live === undefined ? null : filter.live ? 1 : 0,
      blade: filter.blade ?? null,
      username: filter.username ?? null,
      offset: Math.max(0, filter.offset ?? 0),
      limit: filter.limit === undefined ? -1 : Math.max(0, filter.limit),
    }) as SessionRow[]);
    return rows.map(toSession);
  }

  async endSession(id: string, reason: string, now: Date): Promise<SessionRecord | null> {
    return this.write(() => {
      const row = this.s.endSession.get({ id, reason, now: now.getTime() }) as SessionRow | undefined;
      if (!row) return null;
      this.s.revokeTokens.run(now.getTime(), id);
      return toSession(row);
    });
  }

  async discardSession(id: string): Promise<boolean> {
    return this.write(() => {
      if (this.s.discardSession.run(id).changes === 0) return false;
      this.s.deleteSessionTokens.run(id);
      this.s.deleteSessionReconnectKeys.run(id);
      return true;
    });
  }

  async pruneEndedSessions(before: Date): Promise<number> {
    return this.write(() => {
      this.s.pruneEndedTokens.run(before.getTime());
      this.s.pruneEndedReconnectKeys.run(before.getTime());
      return this.s.pruneEndedSessions.run(before.getTime()).changes;
    });
  }

  async addReconnectKey(key: ReconnectKeyRecord, options: { keep: number }): Promise<SessionRecord | null> {
    const keep = checkKeep(options.keep);
    return this.write(() => {
      const session = this.s.getSession.get(key.sessionId);
      if (!session || session.state === 'ended') return null;
      this.s.insertReconnectKey.run({ hash: key.hash, sessionId: key.sessionId, clientIp: key.clientIp, createdAt: key.createdAt.getTime() });
      this.s.retireReconnectKeys.run({ sessionId: key.sessionId, hash: key.hash, keep });
      return toSession(session);
    });
  }

  async getReconnectKey(hash: string): Promise<{ key: ReconnectKeyRecord; session: SessionRecord } | null> {
    return this.read(() => {
      const key = this.s.getReconnectKey.get(hash);
      if (!key) return null;
      const session = this.s.getSession.get(key.session_id);
      if (!session) return null;
      return {
        key: { hash: key.hash, sessionId: key.session_id, clientIp: key.client_ip, createdAt: date(key.created_at) },
        session: toSession(session),
      };
    });
  }

  async countLiveSessionsByBlade(): Promise<Map<string, number>> {
    return new Map(this.read(() => this.s.countLiveByBlade.all()).map((r) => [r.blade, r.n]));
  }

  async insertToken(token: TokenRecord): Promise<void> {
    this.write(() => this.s.insertToken.run({
      hash: token.hash,
      sessionId: token.sessionId,
      expiresAt: token.expiresAt.getTime(),
      clientIp: token.clientIp,
      createdAt: token.createdAt.getTime(),
      usedAt: token.usedAt?.getTime() ?? null,
      revokedAt: token.revokedAt?.getTime() ?? null,
    }));
  }

  async consumeToken(hash: string, now: Date, options: { singleUse: boolean }): Promise<ConsumeResult> {
    const t = now.getTime();
    return this.write((): ConsumeResult => {
      const row = this.s.getToken.get(hash);
      // Same order of reasons as MongoStore's classification.
      if (!row) return { ok: false, reason: 'unknown' };
      if (row.revoked_at !== null) return { ok: false, reason: 'revoked' };
      if (row.expires_at <= t) return { ok: false, reason: 'expired' };
      if (options.singleUse) {
        if (row.used_at !== null) return { ok: false, reason: 'used' };
        this.s.markTokenUsed.run(t, hash);
        row.used_at = t;
      }
      const session = this.s.getSession.get(row.session_id);
      if (!session || session.state === 'ended') {
        // A token issued while its session was ending escaped endSession's revocation: revoke it now.
        this.s.revokeToken.run(t, hash);
        return { ok: false, reason: 'session-ended' };
      }
      return { ok: true, token: toToken(row), session: toSession(session) };
    });
  }

  async getToken(hash: string): Promise<TokenRecord | null> {
    const row = this.read(() => this.s.getToken.get(hash));
    return row ? toToken(row) : null;
  }

  async activeTokenHashes(hashes: readonly string[]): Promise<Set<string>> {
    if (hashes.length === 0) return new Set();
    return new Set(this.read(() => this.s.activeTokenHashes.all(JSON.stringify(hashes))).map((r) => r.hash));
  }

  async revokeTokens(sessionId: string, now: Date): Promise<number> {
    return this.write(() => this.s.revokeTokens.run(now.getTime(), sessionId).changes);
  }

  async pruneTokens(before: Date): Promise<number> {
    return this.write(() => this.s.pruneTokens.run(before.getTime()).changes);
  }

  async upsertBlade(input: { name: string; address: string }, now: Date): Promise<BladeRecord> {
    return toBlade(this.write(() => this.s.upsertBlade.get({ name: input.name, address: input.address, now: now.getTime() })!));
  }

  async getBlade(name: string): Promise<BladeRecord | null> {
    const row = this.read(() => this.s.getBlade.get(name));
    return row ? toBlade(row) : null;
  }

  async listBlades(): Promise<BladeRecord[]> {
    return this.read(() => this.s.listBlades.all()).map(toBlade);
  }

  async setBladeAdminState(name: string, state: BladeAdminState, now: Date): Promise<BladeRecord | null> {
    assertBladeAdminState(state);
    const row = this.write(() => this.s.setBladeAdminState.get(state, now.getTime(), name));
    return row ? toBlade(row) : null;
  }

  async deleteBlade(name: string): Promise<boolean> {
    return this.write(() => this.s.deleteBlade.run(name).changes > 0);
  }

  async nextCounter(name: string): Promise<number> {
    return this.write(() => this.s.nextCounter.get(name)!.value);
  }

  async checkWritable(): Promise<void> {
    // A real write with the same durability as any decision: it fails on a full or read-only disk and on a
    // deleted or replaced file, exactly where a session would.
    this.write(() => this.s.writeProbe.run(Date.now()));
  }
}
