/**
 * The agent's sessions: starts, stops, lists, re-adopts after a restart and reaps dead ones. One live session per
 * user, at most --max-sessions at once, desktops kept under the id the controller chose (its idempotency key).
 *
 * A start runs under one budget: the earliest of the caller's gRPC deadline, the request's own `deadline` and
 * --start-timeout-ms. When the budget runs out or the caller cancels, whatever the start spawned is torn down. Its
 * intent is on disk before anything is spawned and the desktop is on disk before the call answers, so a crash at any
 * point leaves nothing a restarted agent does not know about (adoption kills what a `starting` record spawned).
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { realpathSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { AgentConfig } from '../config.js';
import { AgentError } from '../errors.js';
import { loginEnvironment, loginShellArgv } from '../users/login-env.js';
import { checkHomeUsable, checkUserAllowed, lookupUser, type UnixUser } from '../users/lookup.js';
import { checkDepth, checkGeometry, checkPassword, checkSessionId, checkUsername } from '../users/validate.js';
import { killProcessesUsing, signalPids, signalProcess, signalSession, sessionMembers, stillMembers } from '../vnc/kill.js';
import { removeKeymapsOfDeadDisplays, removeStaleKeymaps, STALE_AFTER_MS } from '../vnc/keymap-leftovers.js';
import { obfuscateVncPassword } from '../../shared/vnc-des.js';
import { isSameProcess, readProcExeName, readProcStat, readProcUid } from '../vnc/proc.js';
import {
  createRuntimeDir, desktopSocketPath, readLogTail, removeRuntimeDir, replacePasswordFile, runtimeFiles, sessionRuntimeDir,
  type RuntimeFiles,
} from '../vnc/runtime-dir.js';
import { spawnAsUser, USER_PATH } from '../vnc/spawn-as-user.js';
import type { SpawnedProcess } from '../vnc/spawner.js';
import { startXvnc } from '../vnc/xvnc.js';
import type { SessionRecord } from './record.js';
import { StartDurations } from './start-durations.js';
import { StartSlots } from './start-slots.js';
import { StartTimer } from './start-timer.js';
import type { SessionStore } from './store.js';

export interface StartRequest {
  /** The controller's session id (idempotency key); empty or undefined lets the agent choose one. */
  sessionId?: string | undefined;
  username: string;
  password: string;
  geometry?: string | undefined;
  depth?: number | undefined;
  /** Epoch ms after which the caller no longer wants this desktop (the request's own deadline field). */
  notAfter?: number | undefined;
}

/** What the gRPC layer knows about the call. */
export interface CallContext {
  /** Aborted when the caller cancels or its connection goes away. */
  signal?: AbortSignal | undefined;
  /** Epoch ms of the call's gRPC deadline, or Infinity. */
  deadline?: number | undefined;
}

export interface StartResult {
  session: SessionRecord;
  existing: boolean;
}

export interface SessionManagerOptions {
  config: AgentConfig;
  store: SessionStore;
  log: Logger;
  hostname: string;
  /** Told when a desktop ends: `stopped` by StopSession (or a start abandoned), `reaped` after it exited on its own. */
  onEnded?: (how: 'stopped' | 'reaped') => void;
}

interface Live {
  record: SessionRecord;
  files: RuntimeFiles | undefined;
  stopping?: Promise<void>;
  /**
   * Started by this agent, whose spawner reports its processes' exits: poll() need not read /proc for it but on
   * its slow sweep. Adopted sessions (after a restart) have no such report.
   */
  watched?: boolean;
}

/** poll() checks watched sessions too on every this-many-th round, in case an exit report was ever lost. */
const SWEEP_EVERY_POLLS = 20;
/** While a desktop ends (25 ms rounds), every this-many-th round reads all of /proc for its session's processes. */
const FULL_SCAN_ROUNDS = 8;


/**
 * Executable names an adopted Xvnc may have in /proc/PID/exe: Debian's Xvnc is an alternatives symlink to
 * Xtigervnc, so the configured name is resolved through PATH and symlinks.
 */
function xvncExeNames(xvnc: string): Set<string> {
  const names = new Set(['Xvnc', 'Xtigervnc', basename(xvnc)]);
  const candidates = xvnc.includes('/') ? [xvnc] : USER_PATH.split(':').map((d) => join(d, xvnc));
  for (const c of candidates) {
    try {
      names.add(basename(realpathSync(c)));
      break;
    } catch {
      // Not in this directory.
    }
  }
  return names;
}

/** A start's budget: one signal whose reason is the AgentError to report. */
function startBudget(deadline: number, agentBudgetMs: number, caller: AbortSignal | undefined):
  { signal: AbortSignal; end: number; done: () => void } {
  const ac = new AbortController();
  const now = Date.now();
  const own = now + agentBudgetMs;
  const end = Math.min(deadline, own);
  const reason = end === own
    ? new AgentError('VD_AGENT_DEADLINE_EXCEEDED', `the desktop was not ready within ${agentBudgetMs} ms ` +
      '(--start-timeout-ms); nothing was left running')
    : new AgentError('VD_AGENT_DEADLINE_EXCEEDED', "the call's deadline passed before the desktop was ready; " +
      'nothing was left running');
  const timer = setTimeout(() => ac.abort(reason), Math.max(0, end - now));
  const onCancel = () => ac.abort(new AgentError('VD_AGENT_CANCELLED'));
  caller?.addEventListener('abort', onCancel, { once: true });
  if (caller?.aborted) onCancel();
  return { signal: ac.signal, end,
    done: () => { clearTimeout(timer); caller?.removeEventListener('abort', onCancel); } };
}

function throwIfStopped(signal: AbortSignal): void {
  if (signal.aborted) throw signal.reason as Error;
}

/** A desktop that ended, announced the moment the agent notices (before its processes are fully gone). */
export interface SessionEnded {
  id: string;
  username: string;
  reason: string;
  at: Date;
}

export interface SessionManagerEvents {
  ended: [SessionEnded];
}

export class SessionManager extends EventEmitter<SessionManagerEvents> {
  private readonly opts: SessionManagerOptions;
  private readonly log: Logger;
  private readonly sessions = new Map<string, Live>();
  private readonly userLocks = new Map<string, Promise<unknown>>();
  /** Ids of starts in flight, with their user: one id never names two users' desktops. */
  private readonly inFlight = new Map<string, string>();
  private pending = 0;
  /** At most --max-concurrent-starts launches at once (see start-slots.ts). */
  private readonly startSlots: StartSlots;
  /** How long starts take now, so a queued start whose turn comes too late is refused before it spawns anything. */
  private readonly startDurations = new StartDurations();
  private timer?: NodeJS.Timeout;
  private keymapTimer?: NodeJS.Timeout;
  private polling = false;
  private polls = 0;
  private closed = false;

  constructor(options: SessionManagerOptions) {
    super();
    this.opts = options;
    this.log = options.log.child({ module: 'sessions' });
    this.startSlots = new StartSlots(options.config.maxConcurrentStarts);
  }

  /** The Unix socket of a live desktop, for the relay; undefined when there is no such live session. */
  desktopSocket(id: string): string | undefined {
    const live = this.sessions.get(id);
    if (!live || live.stopping) return undefined;
    return desktopSocketPath(this.opts.config.runtimeDir, id);
  }

  /** Loads persisted sessions, keeps the ones still running and starts reaping. */
  async open(): Promise<void> {
    await this.adoptAll();
    this.timer = setInterval(() => void this.poll(), this.opts.config.reapIntervalMs);
    this.timer.unref();
    await this.removeStaleKeymaps();
    this.keymapTimer = setInterval(() => void this.removeStaleKeymaps(), STALE_AFTER_MS);
    this.keymapTimer.unref();
  }

  /** Keymaps left by X servers killed mid-start, which would fail every later start on their display. */
  private async removeStaleKeymaps(): Promise<void> {
    const removed = await removeStaleKeymaps(Date.now() - STALE_AFTER_MS);
    if (removed.length) this.log.warn({ removed }, 'removed keymaps left in /tmp by X servers killed while starting');
  }

  /** Stops reaping and refuses new starts; sessions keep running (the agent may be restarting). */
  close(): void {
    this.closed = true;
    clearInterval(this.timer);
    clearInterval(this.keymapTimer);
  }

  get capacity(): number {
    return this.opts.config.maxSessions;
  }

  /**
   * Live sessions, oldest first. Reads memory only: the reaper keeps it current. startedAt is ISO 8601 UTC, so plain
   * string order is time order (localeCompare would go through ICU for nothing).
   */
  list(): SessionRecord[] {
    return [...this.sessions.values()].filter((s) => !s.stopping).map((s) => s.record)
      .sort((a, b) => (a.startedAt < b.startedAt ? -1 : a.startedAt > b.startedAt ? 1 : 0));
  }

  /** How many sessions list() would give, without building and sorting it (GetStatus and metrics ask often). */
  liveCount(): number {
    let n = 0;
    for (const s of this.sessions.values()) if (!s.stopping) n++;
    return n;
  }

  /** The runtime directory of a live session (where its files and sockets are), or undefined. */
  runtimeDirOf(id: string): string | undefined {
    const live = this.sessions.get(id);
    return live && !live.stopping ? live.files?.dir : undefined;
  }

  /**
   * Starts a desktop for the user under `req.sessionId`, or returns the one already there: the session with that id,
   * or else the user's live one, either with its password replaced.
   */
  async start(req: StartRequest, ctx: CallContext = {}): Promise<StartResult> {
    const { config } = this.opts;
    // Everything that needs no lookup first: a bad name never reaches getent, the filesystem or a process.
    checkUsername(req.username);
    checkPassword(req.password);
    const geometry = req.geometry ?? config.geometry;
    checkGeometry(geometry);
    const depth = req.depth ?? config.depth;
    checkDepth(depth);
    const id = req.sessionId ? checkSessionId(req.sessionId) : randomUUID();
    if (this.closed) throw new AgentError('VD_AGENT_SHUTTING_DOWN');
    const deadline = Math.min(ctx.deadline ?? Infinity, req.notAfter ?? Infinity);
    if (deadline <= Date.now()) {
      throw new AgentError('VD_AGENT_DEADLINE_EXCEEDED', "the call's deadline had passed when it arrived; not started");
    }
    const owner = this.inFlight.get(id);
    if (owner !== undefined && owner !== req.username) {
      throw new AgentError('VD_AGENT_SESSION_ID_IN_USE', `session id ${id} is being started for another user`);
    }
    const budget = startBudget(deadline, config.startTimeoutMs, ctx.signal);
    this.inFlight.set(id, req.username);
    try {
      return await this.withUserLock(req.username, () =>
        this.startLocked(id, req, geometry, depth, budget.signal, budget.end));
    } finally {
      budget.done();
      if (owner === undefined) this.inFlight.delete(id);
    }
  }

  private async startLocked(id: string, req: StartRequest, geometry: string, depth: number, signal: AbortSignal,
    end: number): Promise<StartResult> {
    const { config } = this.opts;
    throwIfStopped(signal);
    const timer = new StartTimer();
    const byId = this.sessions.get(id);
    if (byId && !byId.stopping) {
      if (byId.record.username !== req.username) {
        throw new AgentError('VD_AGENT_SESSION_ID_IN_USE', `session id ${id} belongs to another user's desktop`);
      }
      return this.existing(byId, req.password);
    }
    // The slot covers the whole start, the user's lookups included: each lookup is a process (getent) and a walk of
    // the home, and with fifty starts queued those ran all at once ahead of the slot (1 to 3.5 s each on a 2-core
    // blade, instead of 0.1 s), so the few starts holding a slot crawled and most of the queue ran out of time.
    // A start waiting its turn has spawned nothing, and gives up that way when its budget runs out.
    // A full blade says so at once rather than after a wait in the queue; a user who may already have a desktop
    // here goes through, to be handed that desktop once the lookup confirms it.
    const mayHaveOne = [...this.sessions.values()].some((s) => s.record.username === req.username && !s.stopping);
    if (!mayHaveOne && this.sessions.size + this.pending >= config.maxSessions) throw this.full();
    this.pending++;
    try {
      const { waited } = await this.startSlots.acquire(signal);
      timer.mark('queue');
      try {
        const typical = waited ? this.startDurations.typicalMs() : undefined;
        const left = end - Date.now();
        if (typical !== undefined && left < typical) {
          throw new AgentError('VD_AGENT_DEADLINE_EXCEEDED', `only ${Math.max(0, Math.round(left))} ms were left ` +
            `before the call's deadline when its turn came, and a start takes ${Math.round(typical)} ms on this blade ` +
            'now; not started, nothing was spawned');
        }
        const began = performance.now();
        const result = await this.startWithSlot(id, req, geometry, depth, timer, signal);
        if (!result.existing) this.startDurations.add(performance.now() - began);
        return result;
      } finally {
        this.startSlots.release();
      }
    } finally {
      this.pending--;
    }
  }

  /** The rest of a start, once it holds a start slot: the user's lookups, then the launch. */
  private async startWithSlot(id: string, req: StartRequest, geometry: string, depth: number, timer: StartTimer,
    signal: AbortSignal): Promise<StartResult> {
    const { config } = this.opts;
    const lookup = { timeoutMs: Math.min(config.lookupTimeoutMs, config.startTimeoutMs), signal };
    let user: UnixUser;
    try {
      user = await lookupUser(req.username, lookup);
      timer.mark('lookup');
      checkUserAllowed(user, { minUid: config.minUid, allowGroup: config.allowGroup,
        allowRootGroup: config.allowRootGroup });
    } catch (err) {
      throwIfStopped(signal);
      throw err;
    }
    const live = [...this.sessions.values()].find((s) => s.record.username === user.name && !s.stopping);
    if (live) return this.existing(live, req.password);
    // This start's own reservation is in `pending`.
    if (this.sessions.size + this.pending > config.maxSessions) throw this.full();
    try {
      await checkHomeUsable(user, lookup);
      timer.mark('home');
    } catch (err) {
      throwIfStopped(signal);
      throw err;
    }
    return { session: await this.launch(id, user, req.password, geometry, depth, timer, signal), existing: false };
  }

  private full(): AgentError {
    const { maxSessions } = this.opts.config;
    return new AgentError('VD_AGENT_CAPACITY', `this blade already runs its maximum of ${maxSessions} sessions; try another blade`);
  }

  /** A live session returned again: TigerVNC re-reads the password file at each authentication. */
  private async existing(live: Live, password: string): Promise<StartResult> {
    const r = live.record;
    if (live.files) await replacePasswordFile(live.files, r, obfuscateVncPassword(password));
    this.log.info({ session: r.id, username: r.username }, 'returning existing session, password replaced');
    return { session: r, existing: true };
  }

  /** Ends a session's Xvnc and session script and removes its runtime directory. */
  async stop(id: string, reason = 'stopped by request'): Promise<SessionRecord> {
    checkSessionId(id);
    const live = this.sessions.get(id);
    if (!live) throw new AgentError('VD_AGENT_SESSION_NOT_FOUND', `no session ${id} on this blade`);
    await this.terminate(live, reason);
    return live.record;
  }

  private async withUserLock<T>(username: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.userLocks.get(username) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    this.userLocks.set(username, tail);
    void tail.then(() => {
      if (this.userLocks.get(username) === tail) this.userLocks.delete(username);
    });
    return next;
  }

  private async launch(id: string, user: UnixUser, password: string, geometry: string, depth: number,
    timer: StartTimer, signal: AbortSignal): Promise<SessionRecord> {
    const { config, store } = this.opts;
    const runtimeDir = sessionRuntimeDir(config.runtimeDir, id);
    const record: SessionRecord = {
      id, state: 'starting', username: user.name, uid: user.uid, gid: user.gid, home: user.home, shell: user.shell,
      runtimeDir, display: 0, pid: 0, pidStartTime: 0, scriptPid: 0, scriptStartTime: 0,
      startedAt: new Date().toISOString(), geometry, depth,
    };
    // The intent, durably, before anything is spawned or written.
    try {
      await store.save(record);
    } catch (err) {
      throw new AgentError('VD_AGENT_STATE_UNWRITABLE', `cannot record the session in ${config.stateDir} ` +
        `(${(err as NodeJS.ErrnoException).code ?? String(err)}); nothing was started`, { cause: err });
    }
    timer.mark('intent');
    let files: RuntimeFiles | undefined;
    let log: FileHandle | undefined;
    let xvncChild: SpawnedProcess | undefined;
    let scriptChild: SpawnedProcess | undefined;
    try {
      throwIfStopped(signal);
      ({ files, log } = await createRuntimeDir(config.runtimeDir, id, user, obfuscateVncPassword(password),
        config.lookupTimeoutMs));
      timer.mark('files');
      throwIfStopped(signal);
      // What a login would give the session: locale, pam_env files, XDG_RUNTIME_DIR, the user's login shell. Read
      // while Xvnc starts, as neither needs the other; the settled result is awaited below, so no rejection floats.
      const loginEnvRead = loginEnvironment(user, { readTimeoutMs: config.loginEnvTimeoutMs })
        .then((env) => ({ env }), (err: unknown) => ({ err }));
      const xvnc = await startXvnc(user, {
        xvnc: config.xvnc, glx: config.xvncGlx, geometry, depth, socketPath: desktopSocketPath(config.runtimeDir, id),
        passwdFile: files.passwd, xauthFile: files.xauth, logFd: log.fd, cwd: files.dir, signal,
      });
      xvncChild = xvnc.child;
      timer.mark('xvnc');
      const launcherArgs = config.sessionScript !== undefined
        ? ['use', config.sessionScript] : ['choose', config.fallbackSessionScript];
      const read = await loginEnvRead;
      if ('err' in read) throw read.err;
      const loginEnv = read.env;
      scriptChild = await spawnAsUser(user, loginShellArgv(user.shell, ['/bin/sh', config.sessionLauncher, ...launcherArgs]), {
        env: { ...loginEnv, DISPLAY: `:${xvnc.display}`, XAUTHORITY: files.xauth },
        stdio: ['ignore', log.fd, log.fd],
        cwd: files.dir,
      });
      scriptChild.on('error', (err) => this.log.error({ err, username: user.name }, 'session script error'));
      timer.mark('session');
      // A session that cannot run (a typo, a missing program) exits at once: a failed start, not a desktop.
      const exit = await exitWithin(scriptChild, config.startSettleMs);
      timer.mark('settle');
      if (exit !== null) {
        throw new AgentError('VD_AGENT_SESSION_SCRIPT_FAILED',
          `the session exited (${exit}) right after it started; the agent's log has the last lines of its desktop log`);
      }
      await log.close();
      log = undefined;
      const xvncStat = await readProcStat(xvnc.pid);
      if (!xvncStat || xvncStat.state === 'Z') {
        throw new AgentError('VD_AGENT_XVNC_FAILED', `Xvnc for ${user.name} exited right after starting`);
      }
      const scriptStat = scriptChild.pid !== undefined ? await readProcStat(scriptChild.pid) : undefined;
      Object.assign(record, {
        state: 'running', display: xvnc.display, pid: xvnc.pid, pidStartTime: xvncStat.startTime,
        scriptPid: scriptChild.pid ?? 0, scriptStartTime: scriptStat?.startTime ?? 0,
      });
      throwIfStopped(signal);
      // The desktop, durably, before the call answers; if that fails the desktop is stopped. Only now: a record that
      // says running is a desktop a restarted agent adopts, so it must not exist before the start has succeeded.
      try {
        await store.save(record);
      } catch (err) {
        throw new AgentError('VD_AGENT_STATE_UNWRITABLE', `cannot record the desktop in ${config.stateDir} ` +
          `(${(err as NodeJS.ErrnoException).code ?? String(err)}); it was stopped`, { cause: err });
      }
      timer.mark('record');
    } catch (err) {
      const desktopLog = log ? await readLogTail(log) : [];
      await log?.close().catch(() => undefined);
      await this.abandon(record, xvncChild, scriptChild, files, err, desktopLog);
      throw err;
    }
    const live: Live = { record, files, watched: true };
    this.sessions.set(record.id, live);
    // Exit events reap our own children at once; poll() covers adopted sessions. Without its spawner (an 'error'),
    // a session is polled like an adopted one.
    const unwatched = () => {
      live.watched = false;
      void this.poll();
    };
    xvncChild.once('exit', unwatched);
    scriptChild.once('exit', unwatched);
    xvncChild.once('error', unwatched);
    scriptChild.once('error', unwatched);
    this.log.info({ session: record.id, username: user.name, uid: user.uid, display: record.display,
      xvncPid: record.pid, scriptPid: record.scriptPid,
      ms: timer.phases() },
    'session started');
    return record;
  }

  /** Tears down a start that did not finish: its processes, its runtime directory, its intent record. */
  private async abandon(record: SessionRecord, xvnc: SpawnedProcess | undefined, script: SpawnedProcess | undefined,
    files: RuntimeFiles | undefined, why: unknown, desktopLog: string[] = []): Promise<void> {
    if (xvnc?.pid !== undefined && xvnc.exitCode === null && xvnc.signalCode === null) {
      xvnc.kill('SIGKILL');
      // Xvnc, still running, leads a process group of its own (spawned with setsid); its keymap compiler, if one is
      // running, is in it and would write its keymap after we clean up. (An Xvnc that exited by itself had waited
      // for its compiler; its group id may already be free, so it is not signalled.)
      try {
        process.kill(-xvnc.pid, 'SIGKILL');
      } catch {
        // The group is gone.
      }
    }
    if (script?.pid !== undefined) await signalSession(script.pid, record.uid, 'SIGKILL');
    if (xvnc?.pid !== undefined) {
      // Its X socket must be closed (the server gone) before it tells a dead display from a live one.
      await exitWithin(xvnc, 2000);
      await this.removeKeymapsOf(record);
    }
    if (files) {
      const problems = await removeRuntimeDir(files.dir, record, this.opts.config.lookupTimeoutMs);
      if (problems.length) this.log.warn({ session: record.id, problems }, 'could not remove runtime directory');
    }
    try {
      await this.opts.store.remove(record.id);
    } catch (err) {
      this.log.error({ err, session: record.id }, 'could not remove the record of an abandoned start');
    }
    const code = why instanceof AgentError ? why.code : 'VD_AGENT_INTERNAL';
    this.log.info({ session: record.id, username: record.username, code, spawned: xvnc?.pid !== undefined,
      ...(desktopLog.length > 0 && { desktopLog }) }, 'start abandoned; everything it spawned was stopped');
  }

  /**
   * A start of this user's was abandoned after its Xvnc was spawned: a keymap it left would fail the next start on
   * that display. Only displays whose X socket is dead are touched, so a start of theirs running elsewhere keeps its.
   */
  private async removeKeymapsOf(record: SessionRecord): Promise<void> {
    const removed = await removeKeymapsOfDeadDisplays(record.uid);
    if (removed.length) this.log.info({ session: record.id, username: record.username, removed }, 'removed keymaps of an abandoned start');
  }

  /**
   * Checks the sessions whose exits nobody reports (and, on a slow sweep, all): Xvnc gone means the session is gone;
   * session script gone means the session ends. Reading /proc twice per session every round cost an agent with 50
   * desktops 15 % of a core, and kept the libuv pool busy for every other file operation.
   */
  private async poll(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    const sweep = ++this.polls % SWEEP_EVERY_POLLS === 0;
    try {
      for (const live of [...this.sessions.values()]) {
        if (live.stopping || (live.watched && !sweep)) continue;
        const r = live.record;
        if (!(await isSameProcess(r.pid, r.pidStartTime))) {
          void this.terminate(live, 'Xvnc exited', 'reaped');
        } else if (!(await isSameProcess(r.scriptPid, r.scriptStartTime))) {
          void this.terminate(live, 'session script exited', 'reaped');
        }
      }
    } catch (err) {
      this.log.error({ err }, 'error while checking sessions');
    } finally {
      this.polling = false;
    }
  }

  private terminate(live: Live, reason: string, how: 'stopped' | 'reaped' = 'stopped'): Promise<void> {
    if (!live.stopping) {
      // Announced before the processes are gone: nobody should reach this desktop from now on.
      const { id, username } = live.record;
      this.emit('ended', { id, username, reason, at: new Date() });
    }
    live.stopping ??= this.doTerminate(live, reason, how)
      .catch((err: unknown) => this.log.error({ err, session: live.record.id }, 'error while ending session'))
      .finally(() => {
        this.sessions.delete(live.record.id);
      });
    return live.stopping;
  }

  private async doTerminate(live: Live, reason: string, how: 'stopped' | 'reaped'): Promise<void> {
    const r = live.record;
    const sid = r.scriptPid > 1 ? r.scriptPid : 0;
    // The session's processes as last found. Between full scans of /proc (every FULL_SCAN_ROUNDS rounds, and whenever
    // the known ones are all gone) only these are looked at: a full scan every 25 ms per ending desktop read every
    // process on the blade, heavy when many desktops end at once. A desktop is over only when a full scan says so,
    // so a process forked during the teardown is still found.
    let members: number[] = [];
    const scan = async () => {
      members = sid ? await sessionMembers(sid, r.uid) : [];
    };
    const alive = async (full: boolean) => {
      if (await isSameProcess(r.pid, r.pidStartTime)) return true;
      if (!full && members.length > 0) {
        members = await stillMembers(members, sid, r.uid);
        if (members.length > 0) return true;
      }
      await scan();
      return members.length > 0;
    };
    const signal = async (sig: NodeJS.Signals) => {
      await signalProcess(r.pid, r.pidStartTime, sig);
      members = sid ? await signalSession(sid, r.uid, sig) : [];
    };
    await signal('SIGTERM');
    const deadline = Date.now() + this.opts.config.stopGraceMs;
    for (let round = 1; (await alive(round % FULL_SCAN_ROUNDS === 0)) && Date.now() < deadline; round++) await sleep(25);
    if (await alive(true)) {
      this.log.warn({ session: r.id }, 'session did not end after SIGTERM; sending SIGKILL');
      await signal('SIGKILL');
      // What the session forked between the scan and the kill is found by the next full scan, and killed too.
      for (let round = 1; round <= 40 && (await alive(round % FULL_SCAN_ROUNDS === 0)); round++) {
        signalPids(members, 'SIGKILL');
        await sleep(25);
      }
    }
    await this.cleanupFiles(r, live.files);
    await this.opts.store.remove(r.id);
    this.log.info({ session: r.id, username: r.username, display: r.display, reason }, 'session ended');
    this.opts.onEnded?.(how);
  }

  private async cleanupFiles(r: SessionRecord, files: RuntimeFiles | undefined): Promise<void> {
    if (!files) return;
    try {
      const problems = await removeRuntimeDir(files.dir, r, this.opts.config.lookupTimeoutMs);
      if (problems.length) this.log.warn({ session: r.id, problems }, 'could not remove runtime directory');
    } catch (err) {
      this.log.warn({ err, session: r.id }, 'could not remove runtime directory');
    }
  }

  /**
   * Re-adopts persisted sessions whose Xvnc is provably the one the agent started; drops the rest. A `starting`
   * record is a start the agent died in: whatever it spawned is killed, so no desktop outlives its record.
   */
  private async adoptAll(): Promise<void> {
    const { store } = this.opts;
    const { records, bad } = await store.loadAll();
    for (const id of bad) {
      this.log.warn({ session: id }, 'dropping unreadable session record');
      await store.remove(id);
    }
    const xvncNames = xvncExeNames(this.opts.config.xvnc);
    for (const r of records) {
      const files = r.runtimeDir ? runtimeFiles(r.runtimeDir) : undefined;
      if (r.state === 'starting') {
        const killed = files ? await killProcessesUsing(files.dir, r.uid) : [];
        if (killed.length) await this.removeKeymapsOf(r);
        await this.cleanupFiles(r, files);
        await store.remove(r.id);
        this.log.warn({ session: r.id, username: r.username, killed }, 'dropped a start the agent did not finish');
        continue;
      }
      const exe = await readProcExeName(r.pid);
      const ours = (await isSameProcess(r.pid, r.pidStartTime)) && (await readProcUid(r.pid)) === r.uid &&
        exe !== undefined && xvncNames.has(exe);
      if (ours) {
        this.sessions.set(r.id, { record: r, files });
        this.log.info({ session: r.id, username: r.username, xvncPid: r.pid, display: r.display }, 'adopted session');
      } else {
        // Xvnc is gone (or its pid now belongs to another process): clean up what is left of the session.
        if (r.scriptPid > 1) await signalSession(r.scriptPid, r.uid, 'SIGTERM');
        await this.cleanupFiles(r, files);
        await store.remove(r.id);
        this.log.info({ session: r.id, username: r.username, xvncPid: r.pid }, 'dropped session whose Xvnc is gone');
      }
    }
  }
}

/** Resolves with how `child` exited if it exits within `ms`, else null (it is still running). */
function exitWithin(child: SpawnedProcess, ms: number): Promise<string | null> {
  const describe = (code: number | null, signal: NodeJS.Signals | null) => signal ?? `code ${code}`;
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(describe(child.exitCode, child.signalCode));
  if (child.pid === undefined) return Promise.resolve('not started');
  return new Promise((resolve) => {
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => {
      clearTimeout(timer);
      resolve(describe(code, signal));
    };
    const timer = setTimeout(() => {
      child.off('exit', onExit);
      resolve(null);
    }, ms);
    child.once('exit', onExit);
  });
}
