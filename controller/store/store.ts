/**
 * The controller's persistent state: sessions, connection tokens, blades and counters.
 * Two backends implement it with identical behaviour (checked by one contract suite, test/integration/store-contract.test.ts):
 * SQLite through better-sqlite3 (the embedded default) and MongoDB through the official driver.
 * Every method that decides something under concurrency (one live session per user, single-use tokens, counters)
 * is atomic in the backend itself, so several controllers may share one MongoDB.
 *
 * The store never lies: every method either did what it says or rejects. When the storage itself fails (a full or
 * read-only disk, an I/O error, a deleted or replaced database file, an unreachable MongoDB) it rejects with
 * StoreUnavailableError (VD_ERR_STORE_UNAVAILABLE) and has changed nothing.
 */

/** Lifecycle of a session record. `starting`: reserved, the agent call is in flight. `running`: the blade runs it. */
export type SessionState = 'starting' | 'running' | 'ended';

/**
 * Why a session ended: `deleted` (DELETE, the CLI, the dashboard), `desktop-exited` (its agent reported the desktop
 * gone, or reconciliation found it gone), `start-failed` (no blade could start it), `start-abandoned` (a start left
 * `starting` by a controller that died, settled by reconciliation), `blade-removed` (its blade was removed by force).
 */
export const SESSION_END_REASONS = ['deleted', 'desktop-exited', 'start-failed', 'start-abandoned', 'blade-removed'] as const;
export type SessionEndReason = (typeof SESSION_END_REASONS)[number];

export interface SessionRecord {
  /** Controller-side id (UUID), used in the REST API and bound into tokens. */
  id: string;
  username: string;
  state: SessionState;
  /** Blade name; null while `starting` has not picked one yet. */
  blade: string | null;
  /** The agent's own session id on that blade. */
  agentSessionId: string | null;
  display: number | null;
  /** The VNC TCP port on the blade. */
  port: number | null;
  /** The Xvnc pid on the blade. */
  pid: number | null;
  /** The VNC password: only the proxy reads it. Never returned by the API, never logged. */
  password: string | null;
  /** Client IP given when the session was requested, if any. */
  clientIp: string | null;
  createdAt: Date;
  updatedAt: Date;
  endedAt: Date | null;
  /** Why it ended (a SessionEndReason; a string, since rows may come from another controller version). */
  endReason: string | null;
}

/** What listSessions matches: live or ended (default both), one blade, one user; a page of `limit` after `offset`. */
export interface SessionFilter {
  live?: boolean;
  blade?: string;
  username?: string;
  limit?: number;
  offset?: number;
}

export interface NewSession {
  id: string;
  username: string;
  clientIp: string | null;
  now: Date;
}

/** Fields that may change after creation; a field that is absent or undefined stays as it is. */
export type SessionPatch = {
  [K in 'state' | 'blade' | 'agentSessionId' | 'display' | 'port' | 'pid' | 'password' | 'clientIp']?:
    SessionRecord[K] | undefined;
};

export interface TokenRecord {
  /** SHA-256 of the token, hex. The token itself is never stored. */
  hash: string;
  sessionId: string;
  expiresAt: Date;
  /** When set, only this client IP may use the token. */
  clientIp: string | null;
  createdAt: Date;
  usedAt: Date | null;
  revokedAt: Date | null;
}

/**
 * A viewer's reconnect key: a session-lifetime secret the viewer page may exchange for a fresh connection token while
 * the session is live (controller/web/reconnect.ts). Every grant (POST /api/v1/sessions) issues its own, so a second
 * grant for the same user leaves the first viewer's key working; each carries its grant's client-IP binding.
 */
export interface ReconnectKeyRecord {
  /** SHA-256 of the key, hex. The key itself is never stored. */
  hash: string;
  sessionId: string;
  /** When set, the key is honoured only from this client IP, and the tokens it buys are bound to it. */
  clientIp: string | null;
  createdAt: Date;
}

/**
 * Why consumeToken refused a token, checked in this order. `session-ended`: the token was valid but its session is
 * no longer live (a token issued while the session was ending); the backend then revokes it.
 */
export type TokenRejection = 'unknown' | 'expired' | 'revoked' | 'used' | 'session-ended';

export type ConsumeResult =
  | { ok: true; token: TokenRecord; session: SessionRecord }
  | { ok: false; reason: TokenRejection };

/** Operator-set state of a blade. Liveness (UP/DOWN) is not stored: it is observed. */
export type BladeAdminState = 'ACTIVE' | 'CORDONED' | 'DRAINING';

export interface BladeRecord {
  name: string;
  /** HOST:PORT of the blade's agent. */
  address: string;
  adminState: BladeAdminState;
  createdAt: Date;
  updatedAt: Date;
}

export interface Store {
  /** Creates tables/indexes. Idempotent. */
  init(): Promise<void>;
  close(): Promise<void>;

  /**
   * Atomically reserves the one live (starting or running) session of a user: creates it in state `starting`, or,
   * if the user already has a live session, returns that one with `created: false`.
   */
  createSession(input: NewSession): Promise<{ created: boolean; session: SessionRecord }>;
  /** Applies a patch to a live session; returns null if it is unknown or ended. */
  updateSession(id: string, patch: SessionPatch, now: Date): Promise<SessionRecord | null>;
  getSession(id: string): Promise<SessionRecord | null>;
  getLiveSessionByUser(username: string): Promise<SessionRecord | null>;
  /** Newest first; `offset` skips that many matches (paging through history). */
  listSessions(filter?: SessionFilter): Promise<SessionRecord[]>;
  /** Marks a live session ended and revokes its tokens, atomically; returns null if it was unknown or already ended. */
  endSession(id: string, reason: string, now: Date): Promise<SessionRecord | null>;
  /**
   * Records a reconnect key for a live session and retires the session's older keys beyond `keep`: the session keeps
   * its `keep` newest keys by `createdAt` (ties: the later write), and always the key just added. Returns the session,
   * or null (and records nothing) if it is unknown or has ended. Keys are deleted with their session
   * (discardSession, pruneEndedSessions).
   */
  addReconnectKey(key: ReconnectKeyRecord, options: { keep: number }): Promise<SessionRecord | null>;
  /**
   * The reconnect key with this hash and its session, live or ended (the caller honours only a live one; an ended
   * one tells the key's holder how it ended); null for an unknown key. Keys go with their session (pruneEndedSessions).
   */
  getReconnectKey(hash: string): Promise<{ key: ReconnectKeyRecord; session: SessionRecord } | null>;
  /**
   * Deletes a session that never ran (still `starting`, e.g. the blades refused the user), with its tokens and
   * reconnect keys, so a refused request leaves no row behind. Returns false (and changes nothing) for any other session.
   */
  discardSession(id: string): Promise<boolean>;
  /**
   * Deletes sessions that ended before `before`, with their tokens and reconnect keys (the retention limit); returns
   * how many.
   */
  pruneEndedSessions(before: Date): Promise<number>;
  /** Live sessions per blade name (blades with none are absent). */
  countLiveSessionsByBlade(): Promise<Map<string, number>>;

  insertToken(token: TokenRecord): Promise<void>;
  /**
   * Atomically checks a token and, when `singleUse`, marks it used so a replay fails. A token is accepted only if
   * it exists, is not revoked, has not expired at `now`, is unused (when `singleUse`) and its session is live.
   */
  consumeToken(hash: string, now: Date, options: { singleUse: boolean }): Promise<ConsumeResult>;
  /** Looks a token up by hash without changing it (the proxy re-checks live connections with it). */
  getToken(hash: string): Promise<TokenRecord | null>;
  /**
   * Of `hashes`, those whose token is not revoked and whose session is running: one batched query, so the proxy can
   * re-check thousands of live connections twice a second without a round trip each.
   */
  activeTokenHashes(hashes: readonly string[]): Promise<Set<string>>;
  /** Revokes every unrevoked token of a session; returns how many. */
  revokeTokens(sessionId: string, now: Date): Promise<number>;
  /** Deletes tokens that expired before `before`; returns how many. */
  pruneTokens(before: Date): Promise<number>;

  /** Inserts a blade or updates its address; keeps its admin state. */
  upsertBlade(input: { name: string; address: string }, now: Date): Promise<BladeRecord>;
  getBlade(name: string): Promise<BladeRecord | null>;
  listBlades(): Promise<BladeRecord[]>;
  setBladeAdminState(name: string, state: BladeAdminState, now: Date): Promise<BladeRecord | null>;
  /** Forgets a blade; returns false if there was none. Its sessions' records stay (ended or not: the caller decides). */
  deleteBlade(name: string): Promise<boolean>;

  /** Atomically increments a named counter and returns the new value (1 for the first call). */
  nextCounter(name: string): Promise<number>;

  /** Makes one small durable write (readiness): resolves if the store can record a decision now, else rejects. */
  checkWritable(): Promise<void>;
}
