/**
 * Session orchestration: reserve the user's one live session in the store (atomic), pick blades, start the desktop
 * with a fresh password (trying the next blade on failure, bounded), record where it runs, and hand out a connection
 * token and a viewer reconnect key. Also ending sessions (agent, store, proxy sockets).
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Blade, BladeRegistry } from '../blades/registry.js';
import type { Config } from '../config.js';
import {
  AgentRejectedError,
  AgentUnavailableError,
  BadRequestError,
  BladeDownError,
  NoBladeAvailableError,
  NotFoundError,
  SessionConflictError,
  SessionStartingError,
  UnknownUserError,
  UserHomeUnusableError,
  UserNotAllowedError,
  VncDispatchError,
} from '../errors.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { SessionEndReason, SessionFilter, SessionRecord, Store } from '../store/store.js';
import { hashSecret, newReconnectKey, newVncPassword, normalizeIp, type TokenService } from '../tokens/index.js';
import { SingleFlight } from './single-flight.js';
import { withTimeout } from '../../shared/timeout.js';

/**
 * How a new desktop is started. Ignored when the user already has one (it keeps its size; the viewer fits it to the
 * window), and when concurrent requests for one user start one desktop, the one that starts it decides.
 */
export interface DesktopOptions {
  /** WIDTHxHEIGHT, already checked against the agent's bounds. */
  geometry?: string;
}

/** What POST /api/v1/sessions returns (before the route shapes it). */
export interface SessionGrant {
  created: boolean;
  session: SessionRecord;
  token: string;
  tokenExpiresAt: Date;
  reconnectKey: string;
}

export interface SessionServiceOptions {
  store: Store;
  blades: BladeRegistry;
  tokens: Pick<TokenService, 'issue'>;
  /** startWaitMs: how long a request waits for a session another request (or controller) is starting. */
  config: Pick<Config, 'startAttempts' | 'startWaitMs' | 'startPollMs' | 'startAnswerMs' | 'maxReconnectKeys'>;
  log: Logger;
  metrics: Metrics;
}

/** How long a desktop end reported by an agent is remembered, for a start that has not recorded it yet. */
const RECENT_END_MS = 60_000;

/**
 * Agent codes about the user (the same on every blade), where trying another blade cannot help: answered at once with
 * a 4xx, never retried blade after blade nor turned into a 503. A home that is missing or hangs is the user's
 * account's problem (shared homes are the same everywhere), not a blade failure.
 */
const USER_ERRORS = new Set(['VD_AGENT_USER_NOT_FOUND', 'VD_AGENT_USER_FORBIDDEN', 'VD_AGENT_USER_ROOT_GROUP',
  'VD_AGENT_INVALID_USERNAME', 'VD_AGENT_HOME_UNUSABLE']);

function isUserError(err: unknown): err is AgentRejectedError {
  return err instanceof AgentRejectedError && err.agentCode !== null && USER_ERRORS.has(err.agentCode);
}

/** The REST error for an agent's refusal about the user. */
function userError(err: AgentRejectedError, username: string): VncDispatchError {
  // The agent's message is for people and names only the username, which the caller sent: safe to pass on.
  const detail = err.message.replace(/^blade [^:]+: StartSession: /, '');
  switch (err.agentCode) {
    case 'VD_AGENT_USER_NOT_FOUND':
      return new UnknownUserError(`no such user ${JSON.stringify(username)}: ${detail}`, { cause: err });
    case 'VD_AGENT_USER_FORBIDDEN':
    case 'VD_AGENT_USER_ROOT_GROUP':
      return new UserNotAllowedError(`user ${JSON.stringify(username)} may not have a desktop: ${detail}`, { cause: err });
    case 'VD_AGENT_HOME_UNUSABLE':
      return new UserHomeUnusableError(`user ${JSON.stringify(username)} cannot have a desktop: ${detail}`, { cause: err });
    default:
      return new BadRequestError(`the blade refused user ${JSON.stringify(username)}: ${detail}`, { cause: err });
  }
}

export interface SessionEvents {
  /**
   * A session's record ended here (its tokens are revoked): its viewers' sockets are to close at once and live views
   * to update. Emitted before its desktop is stopped. Listeners must not throw.
   */
  ended: [sessionId: string, reason: SessionEndReason];
}

export class SessionService extends EventEmitter<SessionEvents> {
  readonly #o: SessionServiceOptions;
  readonly #log: Logger;
  readonly #flights = new SingleFlight<{ created: boolean; session: SessionRecord }>();
  /** Desktops their agents reported ended, by `blade/agentSessionId`, with when (pruned after RECENT_END_MS). */
  readonly #recentEnds = new Map<string, number>();
  /** Starts answered before they finished (POST with `Prefer: respond-async`), by session id. */
  readonly #background = new Map<string, Promise<SessionRecord>>();
  /** Sessions whose StartSession this controller has in flight (reconciliation leaves them alone). */
  readonly #starting = new Set<string>();

  constructor(options: SessionServiceOptions) {
    super();
    this.#o = options;
    this.#log = options.log.child({ module: 'sessions' });
  }

  /**
   * Gives the user a desktop: the live one if there is one (`created: false`), else a new one. Either way with a
   * fresh connection token and a reconnect key of its own, both bound to `clientIp` when given.
   */
  async open(username: string, clientIp: string | null, desktop: DesktopOptions = {}, wait = true): Promise<SessionGrant> {
    const t0 = performance.now();
    let result = 'error';
    try {
      const started = (async () => {
        const { value, leader } = await this.#flights.run(username, () => this.#ensure(username, clientIp, desktop, wait));
        // A caller who waits never gets a desktop that is still starting, whoever led the flight.
        const running = wait && value.session.state !== 'running' ? await this.whenRunning(value.session) : value.session;
        return { created: value.created && leader, existed: !value.created, session: running };
      })();
      const { created, existed, session } = wait ? await this.#withinAnswerTime(started, username) : await started;
      if (existed && session.state === 'running') this.#assertReachable(session);
      const { token, expiresAt } = await this.#o.tokens.issue(session.id, clientIp);
      // Each grant gets its own key, bound like its token: a later grant (another tab, another device) adds a key
      // and leaves this one working, up to --max-reconnect-keys per session. Beyond that the oldest key is retired
      // rather than this grant refused: the link just handed out must work (a portal cannot tell which old tabs are
      // closed), and a grant loop must not grow the session's keys without bound.
      const reconnectKey = newReconnectKey();
      const patched = await this.#o.store.addReconnectKey({ hash: hashSecret(reconnectKey), sessionId: session.id,
        clientIp: clientIp === null ? null : normalizeIp(clientIp), createdAt: new Date() }, { keep: this.#o.config.maxReconnectKeys });
      if (!patched) throw new SessionConflictError(`session ${session.id} ended while it was being opened`);
      result = created ? (wait ? 'created' : 'accepted') : 'existing';
      return { created, session: patched, token, tokenExpiresAt: expiresAt, reconnectKey };
    } catch (err) {
      if (err instanceof VncDispatchError) result = err.code;
      throw err;
    } finally {
      this.#o.metrics.sessionStartSeconds.observe({ result }, (performance.now() - t0) / 1000);
    }
  }

  /**
   * A waiting caller gets its answer within --start-answer-ms: when its blades are busy (a burst of starts queues on
   * them), 503 VD_ERR_SESSION_STARTING instead of a connection closed unanswered by --http-idle-timeout-ms. The start
   * goes on (its failure is recorded by #startFailed), and the retry waits for it or finds the desktop running.
   */
  #withinAnswerTime<T>(started: Promise<T>, username: string): Promise<T> {
    return withTimeout(started, this.#o.config.startAnswerMs, () => new SessionStartingError(
      `the desktop for ${username} is still starting (the blades are busy); retry shortly`));
  }

  /**
   * The user's live session, reserving and starting one if needed. With `wait` false a new desktop starts in the
   * background and the session is returned `starting`: the caller's viewer loads while the desktop starts, and the
   * proxy holds its connection until the desktop runs (whenRunning).
   */
  async #ensure(username: string, clientIp: string | null, desktop: DesktopOptions, wait: boolean):
    Promise<{ created: boolean; session: SessionRecord }> {
    const { store } = this.#o;
    const { created, session } = await store.createSession({ id: randomUUID(), username, clientIp, now: new Date() });
    if (!created) {
      if (!wait && session.state === 'starting') return { created: false, session };
      const running = session.state === 'running' ? session : await this.whenRunning(session);
      return { created: false, session: running };
    }
    const started = this.#start(session, desktop).catch((err: unknown) => this.#startFailed(session, err, wait));
    if (wait) return { created: true, session: await started };
    // Nobody awaits a background start's failure but whenRunning(); it is logged and recorded by #startFailed.
    started.catch(() => undefined);
    this.#background.set(session.id, started);
    void started.finally(() => this.#background.delete(session.id)).catch(() => undefined);
    return { created: true, session };
  }

  /**
   * Cleans up after a start that failed on every blade, then rethrows. A 4xx (the blades refused the user) is bad
   * input and leaves no row while its caller waits for the answer; a background start's caller has had its answer,
   * so the row ends `start-failed` instead and the viewer and GET /api/v1/sessions/{id} can tell. A 5xx start stays
   * on record either way.
   */
  async #startFailed(session: SessionRecord, err: unknown, callerWaits: boolean): Promise<never> {
    const { store } = this.#o;
    const rejected = err instanceof VncDispatchError && err.statusCode < 500;
    const reason = rejected ? 'user-rejected' : 'start-failed';
    const cleanup = rejected && callerWaits ? store.discardSession(session.id) : store.endSession(session.id, 'start-failed', new Date());
    await cleanup.catch((e: unknown) =>
      this.#log.error({ err: e, sessionId: session.id }, 'could not clean up a session that failed to start'));
    this.#o.metrics.sessionsEnded.inc({ reason });
    if (!callerWaits) this.#log.warn({ err, sessionId: session.id, username: session.username }, 'a background start failed');
    throw err;
  }

  /**
   * The session once its desktop runs: a start of this controller's is awaited, another controller's is watched in
   * the store for up to --start-wait-ms. Rejects with the start's own error, VD_ERR_SESSION_CONFLICT when it ended
   * meanwhile, or VD_ERR_SESSION_STARTING when it is still starting.
   */
  async whenRunning(session: SessionRecord): Promise<SessionRecord> {
    if (session.state === 'running') return session;
    const local = this.#background.get(session.id);
    if (local) return local;
    if (session.state === 'ended') {
      throw new SessionConflictError(`the session being started for ${session.username} failed to start; retry`);
    }
    return this.#waitRunning(session);
  }

  /**
   * A token for a desktop on a DOWN blade would be a dead link: say so with its own code instead. The session is
   * kept: the blade may come back with the desktop (reconciliation then ends it if it did not).
   */
  #assertReachable(session: SessionRecord): void {
    const blade = session.blade ? this.#o.blades.get(session.blade) : undefined;
    if (blade?.health.state === 'DOWN') {
      throw new BladeDownError(`the desktop of ${session.username} is on blade ${blade.name}, which does not answer; retry shortly`);
    }
  }

  /** True while this controller's StartSession for the session is in flight. */
  isStartingHere(sessionId: string): boolean {
    return this.#starting.has(sessionId);
  }

  /** Another request (maybe on another controller) is starting this user's session: wait for it. */
  async #waitRunning(session: SessionRecord): Promise<SessionRecord> {
    const { startWaitMs, startPollMs } = this.#o.config;
    const deadline = Date.now() + startWaitMs;
    while (Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, startPollMs));
      const now = await this.#o.store.getSession(session.id);
      if (!now || now.state === 'ended') {
        throw new SessionConflictError(`the session being started for ${session.username} failed to start; retry`);
      }
      if (now.state === 'running') return now;
    }
    throw new SessionStartingError(`the session for ${session.username} is still starting; retry shortly`);
  }

  /** Tries blades in placement order until one starts the desktop. */
  async #start(session: SessionRecord, desktop: DesktopOptions): Promise<SessionRecord> {
    await this.#o.blades.refresh();
    const candidates = (await this.#o.blades.candidates(() => this.#o.store.nextCounter('placement')))
      .slice(0, this.#o.config.startAttempts);
    if (candidates.length === 0) throw new NoBladeAvailableError();
    const failures: string[] = [];
    for (const blade of candidates) {
      try {
        return await this.#startOn(blade, session, desktop);
      } catch (err) {
        if (isUserError(err)) {
          this.#o.metrics.sessionStarts.inc({ blade: blade.name, result: 'rejected' });
          throw userError(err, session.username);
        }
        if (!(err instanceof AgentUnavailableError || err instanceof AgentRejectedError)) throw err;
        // UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED (full), ...: another blade may serve.
        this.#o.metrics.sessionStarts.inc({ blade: blade.name, result: 'unavailable' });
        this.#log.warn({ err, blade: blade.name, sessionId: session.id, username: session.username },
          'blade could not start the session; trying the next one');
        failures.push(err.message);
      }
    }
    throw new NoBladeAvailableError(`no blade could start the desktop (${failures.join('; ')})`);
  }

  async #startOn(blade: Blade, session: SessionRecord, desktop: DesktopOptions): Promise<SessionRecord> {
    const password = newVncPassword();
    // Intent first, durably: the row names the blade (and holds the password) before anything can start there, so
    // if this controller dies mid-call, reconciliation knows which blade to ask and can settle the row from what the
    // blade runs. A store that cannot record this fails here, before any desktop exists.
    const intent = await this.#o.store.updateSession(session.id, { blade: blade.name, password }, new Date());
    if (!intent) throw new SessionConflictError(`session ${session.id} was deleted while it was starting`);
    blade.pending++;
    this.#starting.add(session.id);
    let res;
    try {
      // The session's id is the agent's idempotency key: a retry on this blade returns the same desktop.
      res = await blade.connection.startSession({ sessionId: session.id, username: session.username, password,
        ...desktop });
    } catch (err) {
      if (err instanceof AgentUnavailableError) {
        // No answer in time: the agent tears down a start whose caller went away, but if the answer was merely lost
        // on the way back the desktop runs. Stop it by its id, so moving to the next blade leaves nothing behind.
        void blade.connection.stopSession(session.id).catch(() => undefined);
      }
      throw err;
    } finally {
      blade.pending--;
      this.#starting.delete(session.id);
    }
    const s = res.session;
    if (!s) throw new AgentUnavailableError(`blade ${blade.name}: StartSession answered without a session`);
    this.#o.metrics.sessionStarts.inc({ blade: blade.name, result: res.existing ? 'existing' : 'ok' });
    let patched;
    try {
      patched = await this.#o.store.updateSession(session.id, {
        state: 'running',
        blade: blade.name,
        agentSessionId: s.id,
        display: s.display,
        port: s.port,
        pid: s.pid,
        password,
      }, new Date());
    } catch (err) {
      // A desktop the store cannot record would run unknown: stop it, and say so.
      this.#log.error({ err, sessionId: session.id, username: session.username, blade: blade.name,
        agentSessionId: s.id }, 'could not record a started desktop; stopping it');
      await this.#stopUnrecorded(blade, s.id, session.id);
      throw err;
    }
    if (!patched) {
      // Deleted while starting: the desktop must not outlive its record.
      await this.#stopUnrecorded(blade, s.id, session.id);
      throw new SessionConflictError(`session ${session.id} was deleted while it was starting`);
    }
    if (this.#recentEnds.has(`${blade.name}/${s.id}`)) {
      // Its agent reported the end before the record said running: nobody may be sent to a dead desktop, and
      // another blade may do better.
      throw new AgentUnavailableError(`blade ${blade.name}: the desktop ended as soon as it started`);
    }
    this.#log.info({ sessionId: session.id, username: session.username, blade: blade.name, display: s.display,
      xvncPid: s.pid, agentExisting: res.existing }, 'session running');
    return patched;
  }

  /** Stops a desktop the store does not (or no longer) record; logs when even that fails. */
  async #stopUnrecorded(blade: Blade, agentSessionId: string, sessionId: string): Promise<void> {
    try {
      await blade.connection.stopSession(agentSessionId);
    } catch (err) {
      if (err instanceof AgentRejectedError && err.agentCode === 'VD_AGENT_SESSION_NOT_FOUND') return;
      this.#log.error({ err, sessionId, blade: blade.name, agentSessionId },
        'could not stop an unrecorded desktop; reconciliation will find it on the blade');
    }
  }

  async get(id: string): Promise<SessionRecord> {
    const s = await this.#o.store.getSession(id);
    if (!s) throw new NotFoundError(`no session ${id}`);
    return s;
  }

  list(filter: SessionFilter): Promise<SessionRecord[]> {
    return this.#o.store.listSessions(filter);
  }

  /**
   * Ends a session: ends the record (revoking its tokens), closes its live connections and stops the desktop on its
   * blade (already gone is fine). If the blade cannot be reached the record still ends, so nobody can connect; the
   * desktop is stopped by reconciliation once the blade answers again (it is then an ended session the blade runs).
   */
  async end(id: string, reason: SessionEndReason = 'deleted'): Promise<SessionRecord> {
    const s = await this.get(id);
    // The record first: its tokens are revoked and its sockets closed at once, so a viewer that notices the drop
    // cannot get a fresh token and reconnect while the desktop is still stopping.
    const ended = s.state === 'ended' ? null : await this.#o.store.endSession(id, reason, new Date());
    if (ended) this.emit('ended', id, reason);
    // Whatever the row's state (starting, running, or already ended while its blade was away), the desktop stops.
    await this.stopDesktop(s);
    if (ended) {
      this.#o.metrics.sessionsEnded.inc({ reason });
      this.#log.info({ sessionId: id, username: s.username, blade: s.blade, reason }, 'session ended');
    }
    return ended ?? (await this.get(id));
  }

  /**
   * A blade's agent reported that one of its desktops ended (WatchSessions): end the record, which revokes its tokens,
   * and close its viewers' sockets, so they are told at once that the session has ended.
   */
  async desktopEnded(bladeName: string, agentSessionId: string, reason: string): Promise<void> {
    const now = Date.now();
    this.#recentEnds.set(`${bladeName}/${agentSessionId}`, now);
    for (const [k, t] of this.#recentEnds) if (now - t > RECENT_END_MS) this.#recentEnds.delete(k);
    const live = await this.#o.store.listSessions({ live: true, blade: bladeName });
    const s = live.find((x) => x.agentSessionId === agentSessionId);
    if (!s) return;
    this.#log.info({ sessionId: s.id, blade: bladeName, agentReason: reason }, 'the blade reported the desktop ended');
    await this.markEnded(s, 'desktop-exited');
  }

  /**
   * Stops a session's desktop on its blade, if it has one: by the agent's id once known; for a row that was still
   * starting, by asking the blade what it runs for this session. A start still in flight here stops its own desktop
   * when it finds the row ended. Already gone is fine; an unreachable blade is left to reconciliation.
   */
  async stopDesktop(s: SessionRecord): Promise<void> {
    const blade = s.blade ? this.#o.blades.get(s.blade) : undefined;
    if (!blade) return;
    try {
      let ids = s.agentSessionId ? [s.agentSessionId] : [];
      if (ids.length === 0) {
        const live = await this.#o.store.getLiveSessionByUser(s.username);
        ids = (await blade.connection.listSessions())
          .filter((a) => a.id === s.id || (a.username === s.username && !live))
          .map((a) => a.id);
      }
      for (const agentId of ids) {
        await blade.connection.stopSession(agentId).catch((err: unknown) => {
          if (!(err instanceof AgentRejectedError && err.agentCode === 'VD_AGENT_SESSION_NOT_FOUND')) throw err;
        });
      }
    } catch (err) {
      this.#log.warn({ err, sessionId: s.id, blade: s.blade },
        'could not stop the desktop; reconciliation stops it when the blade answers again');
    }
  }

  /** Ends a record whose desktop is gone (reconciliation): no agent call. Returns false if it had already ended. */
  async markEnded(s: SessionRecord, reason: SessionEndReason): Promise<boolean> {
    const ended = await this.#o.store.endSession(s.id, reason, new Date());
    if (!ended) return false;
    this.emit('ended', s.id, reason);
    this.#o.metrics.sessionsEnded.inc({ reason });
    this.#log.info({ sessionId: s.id, username: s.username, blade: s.blade, reason }, 'session ended');
    return true;
  }

  /**
   * Completes a row left `starting` by a controller that died mid-call, from what its blade runs: the desktop
   * exists, with the password the row recorded as its intent. Returns null if the row is no longer starting.
   */
  async adopt(s: SessionRecord, a: { id: string; display: number; port: number; pid: number }): Promise<SessionRecord | null> {
    const patched = await this.#o.store.updateSession(s.id, {
      state: 'running', agentSessionId: a.id, display: a.display, port: a.port, pid: a.pid,
    }, new Date());
    if (patched) this.#log.info({ sessionId: s.id, username: s.username, blade: s.blade, agentSessionId: a.id }, 'settled a starting session: its desktop runs');
    return patched;
  }
}
