/**
 * The agent's sessions: starts, stops, lists, re-adopts after a restart and reaps dead ones. One live session per
 * user (StartSession is idempotent), at most --max-sessions at once.
 */
import type { ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { closeSync, realpathSync } from 'node:fs';
import { basename, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { AgentConfig } from '../config.js';
import { AgentError } from '../errors.js';
import { loginEnvironment, loginShellArgv } from '../users/login-env.js';
import { checkUserAllowed, lookupUser, type UnixUser } from '../users/lookup.js';
import { checkDepth, checkGeometry, checkPassword, checkUsername } from '../users/validate.js';
import { homePaths, prepareSessionFiles, removeSessionFiles, userXstartup, writePasswordFile } from '../vnc/home-files.js';
import { signalProcess, signalSession, sessionMembers } from '../vnc/kill.js';
import { obfuscateVncPassword } from '../vnc/password.js';
import { isSameProcess, readProcExeName, readProcStat, readProcUid } from '../vnc/proc.js';
import { spawnAsUser, USER_PATH } from '../vnc/spawn-as-user.js';
import { VncPorts } from '../vnc/ports.js';
import { startXvnc, type StartedXvnc, type XvncOptions } from '../vnc/xvnc.js';
import type { SessionRecord } from './record.js';
import type { SessionStore } from './store.js';

export interface StartRequest {
  username: string;
  password: string;
  geometry?: string;
  depth?: number;
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
  /** How often to check that sessions are alive (adopted sessions are not our children: no exit events). */
  pollMs?: number;
  /** How long Xvnc may take to become ready. */
  readyTimeoutMs?: number;
}

interface Live {
  record: SessionRecord;
  stopping?: Promise<void>;
}

const ms = (x: number) => Math.round(x * 10) / 10;

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

export class SessionManager {
  private readonly opts: Required<SessionManagerOptions>;
  private readonly log: Logger;
  private readonly sessions = new Map<string, Live>();
  private readonly userLocks = new Map<string, Promise<unknown>>();
  private pending = 0;
  private timer?: NodeJS.Timeout;
  private readonly ports: VncPorts;

  constructor(options: SessionManagerOptions) {
    this.opts = { pollMs: 500, readyTimeoutMs: 15_000, ...options };
    this.log = options.log.child({ module: 'sessions' });
    this.ports = new VncPorts(options.config.vncPorts, options.config.vncListen);
  }

  /** Loads persisted sessions, keeps the ones still running and starts reaping. */
  open(): void {
    this.adoptAll();
    this.timer = setInterval(() => this.poll(), this.opts.pollMs);
    this.timer.unref();
  }

  /** Stops reaping; sessions keep running (the agent may be restarting). */
  close(): void {
    clearInterval(this.timer);
  }

  get capacity(): number {
    return this.opts.config.maxSessions;
  }

  /** Live sessions, oldest first. */
  list(): SessionRecord[] {
    this.poll();
    return [...this.sessions.values()].filter((s) => !s.stopping).map((s) => s.record)
      .sort((a, b) => a.startedAt.localeCompare(b.startedAt));
  }

  /** Starts a desktop for the user, or returns the live one with its password replaced. */
  async start(req: StartRequest): Promise<StartResult> {
    const { config } = this.opts;
    // Everything that needs no lookup first: a bad name never reaches getent, the filesystem or a process.
    checkUsername(req.username);
    checkPassword(req.password);
    const geometry = req.geometry ?? config.geometry;
    checkGeometry(geometry);
    const depth = req.depth ?? config.depth;
    checkDepth(depth);

    return this.withUserLock(req.username, async () => {
      const t0 = performance.now();
      const user = await lookupUser(req.username);
      await checkUserAllowed(user, { minUid: config.minUid, allowGroup: config.allowGroup });
      this.poll();
      const live = [...this.sessions.values()].find((s) => s.record.username === user.name && !s.stopping);
      if (live) {
        // TigerVNC re-reads the file at each authentication, so the caller's new password works at once.
        writePasswordFile(user, homePaths(user.home, this.opts.hostname), obfuscateVncPassword(req.password));
        this.log.info({ session: live.record.id, username: user.name }, 'returning existing session, password replaced');
        return { session: live.record, existing: true };
      }
      if (this.sessions.size + this.pending >= config.maxSessions) {
        throw new AgentError('VD_AGENT_CAPACITY',
          `this blade already runs its maximum of ${config.maxSessions} sessions; try another blade`);
      }
      this.pending++;
      try {
        return { session: await this.launch(user, req.password, geometry, depth, t0), existing: false };
      } finally {
        this.pending--;
      }
    });
  }

  /** Ends a session's Xvnc and session script and removes its password file. */
  async stop(id: string): Promise<SessionRecord> {
    if (!/^[0-9a-f-]{36}$/.test(id)) throw new AgentError('VD_AGENT_INVALID_ID', 'session id must be a UUID');
    const live = this.sessions.get(id);
    if (!live) throw new AgentError('VD_AGENT_SESSION_NOT_FOUND', `no session ${id} on this blade`);
    await this.terminate(live, 'stopped by request');
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

  private async launch(user: UnixUser, password: string, geometry: string, depth: number, t0: number):
    Promise<SessionRecord> {
    const { config, hostname } = this.opts;
    const paths = homePaths(user.home, hostname);
    const t1 = performance.now();
    const { logFd } = prepareSessionFiles(user, paths, obfuscateVncPassword(password));
    const t2 = performance.now();
    let t3 = t2;
    let xvncChild: ChildProcess | undefined;
    let scriptChild: ChildProcess;
    let display: number;
    let port: number;
    try {
      const xvnc = await this.startOnFreePort(user, {
        xvnc: config.xvnc, geometry, depth, vncListen: config.vncListen, passwdFile: paths.passwd,
        xauthFile: paths.xauth, logFd, readyTimeoutMs: this.opts.readyTimeoutMs,
      });
      xvncChild = xvnc.child;
      display = xvnc.display;
      port = xvnc.port;
      t3 = performance.now();
      const script = userXstartup(user, paths) ?? config.sessionScript;
      // What a login would give the session: locale, pam_env files, XDG_RUNTIME_DIR, the user's login shell.
      const loginEnv = await loginEnvironment(user);
      scriptChild = spawnAsUser(user, loginShellArgv(user.shell, [script]), {
        env: { ...loginEnv, DISPLAY: `:${display}`, XAUTHORITY: paths.xauth },
        stdio: ['ignore', logFd, logFd],
      });
      scriptChild.on('error', (err) => this.log.error({ err, username: user.name }, 'session script error'));
    } catch (err) {
      if (xvncChild?.pid) xvncChild.kill('SIGKILL');
      removeSessionFiles(user, paths);
      throw err;
    } finally {
      closeSync(logFd);
    }
    const xvncStat = readProcStat(xvncChild.pid!);
    const scriptStat = scriptChild.pid !== undefined ? readProcStat(scriptChild.pid) : undefined;
    if (!xvncStat) {
      signalSession(scriptChild.pid ?? -1, user.uid, 'SIGKILL');
      removeSessionFiles(user, paths);
      throw new AgentError('VD_AGENT_XVNC_FAILED', `Xvnc for ${user.name} exited right after starting`);
    }
    const record: SessionRecord = {
      id: randomUUID(),
      username: user.name,
      uid: user.uid,
      gid: user.gid,
      home: user.home,
      shell: user.shell,
      display,
      port,
      pid: xvncChild.pid!,
      pidStartTime: xvncStat.startTime,
      scriptPid: scriptChild.pid ?? 0,
      scriptStartTime: scriptStat?.startTime ?? 0,
      startedAt: new Date().toISOString(),
      geometry,
      depth,
    };
    this.opts.store.save(record);
    const live: Live = { record };
    this.sessions.set(record.id, live);
    // Exit events reap our own children at once; poll() covers adopted sessions.
    xvncChild.once('exit', () => this.poll());
    scriptChild.once('exit', () => this.poll());
    this.log.info({ session: record.id, username: user.name, uid: user.uid, display, port: record.port,
      pid: record.pid, scriptPid: record.scriptPid,
      ms: { lookup: ms(t1 - t0), files: ms(t2 - t1), xvnc: ms(t3 - t2), total: ms(performance.now() - t0) } },
    'session started');
    return record;
  }

  /**
   * Starts Xvnc on a port from VncPorts. The port was free when probed, but another program (or another agent on this
   * host) may take it before Xvnc binds it: if Xvnc then dies and the port is no longer free, the next port is tried
   * (three ports in all). A failure for any other reason is not retried.
   */
  private async startOnFreePort(user: UnixUser, opts: Omit<XvncOptions, 'port'>): Promise<StartedXvnc & { port: number }> {
    const held = new Set([...this.sessions.values()].map((l) => l.record.port));
    for (let attempt = 1; ; attempt++) {
      const port = await this.ports.reserve(held);
      try {
        return { ...(await startXvnc(user, { ...opts, port })), port };
      } catch (err) {
        const lostPort = err instanceof AgentError && err.code === 'VD_AGENT_XVNC_FAILED' && !(await this.ports.isFree(port));
        if (!lostPort || attempt >= 3) throw err;
        held.add(port);
        this.log.warn({ username: user.name, port }, 'VNC port taken while Xvnc started; trying the next one');
      } finally {
        this.ports.release(port); // Xvnc holds it now, or it is skipped
      }
    }
  }

  /** Checks every session: Xvnc gone means the session is gone; session script gone means the session ends. */
  private poll(): void {
    for (const live of this.sessions.values()) {
      if (live.stopping) continue;
      const r = live.record;
      if (!isSameProcess(r.pid, r.pidStartTime)) {
        void this.terminate(live, 'Xvnc exited');
      } else if (!isSameProcess(r.scriptPid, r.scriptStartTime)) {
        void this.terminate(live, 'session script exited');
      }
    }
  }

  private terminate(live: Live, reason: string): Promise<void> {
    live.stopping ??= this.doTerminate(live.record, reason)
      .catch((err) => this.log.error({ err, session: live.record.id }, 'error while ending session'))
      .finally(() => {
        this.sessions.delete(live.record.id);
      });
    return live.stopping;
  }

  private async doTerminate(r: SessionRecord, reason: string): Promise<void> {
    const alive = () => isSameProcess(r.pid, r.pidStartTime) || sessionMembers(r.scriptPid, r.uid).length > 0;
    const signal = (sig: NodeJS.Signals) => {
      signalProcess(r.pid, r.pidStartTime, sig);
      if (r.scriptPid > 1) signalSession(r.scriptPid, r.uid, sig);
    };
    signal('SIGTERM');
    const deadline = Date.now() + this.opts.config.stopGraceMs;
    while (alive() && Date.now() < deadline) await sleep(25);
    if (alive()) {
      this.log.warn({ session: r.id }, 'session did not end after SIGTERM; sending SIGKILL');
      signal('SIGKILL');
      for (let i = 0; i < 40 && alive(); i++) await sleep(25);
    }
    this.cleanupFiles(r);
    this.opts.store.remove(r.id);
    this.log.info({ session: r.id, username: r.username, display: r.display, reason }, 'session ended');
  }

  private cleanupFiles(r: SessionRecord): void {
    try {
      const problems = removeSessionFiles({ name: r.username, uid: r.uid, gid: r.gid, home: r.home },
        homePaths(r.home, this.opts.hostname));
      if (problems.length) this.log.warn({ session: r.id, problems }, 'could not remove session files');
    } catch (err) {
      this.log.warn({ err, session: r.id }, 'could not remove session files');
    }
  }

  /** Re-adopts persisted sessions whose Xvnc is provably the one the agent started; drops the rest. */
  private adoptAll(): void {
    const { records, bad } = this.opts.store.loadAll();
    for (const id of bad) {
      this.log.warn({ session: id }, 'dropping unreadable session record');
      this.opts.store.remove(id);
    }
    const xvncNames = xvncExeNames(this.opts.config.xvnc);
    for (const r of records) {
      const exe = readProcExeName(r.pid);
      const ours = isSameProcess(r.pid, r.pidStartTime) && readProcUid(r.pid) === r.uid &&
        exe !== undefined && xvncNames.has(exe);
      if (ours) {
        this.sessions.set(r.id, { record: r });
        this.log.info({ session: r.id, username: r.username, pid: r.pid, display: r.display }, 'adopted session');
      } else {
        // Xvnc is gone (or its pid now belongs to another process): clean up what is left of the session.
        if (r.scriptPid > 1) signalSession(r.scriptPid, r.uid, 'SIGTERM');
        this.cleanupFiles(r);
        this.opts.store.remove(r.id);
        this.log.info({ session: r.id, username: r.username, pid: r.pid }, 'dropped session whose Xvnc is gone');
      }
    }
  }
}
