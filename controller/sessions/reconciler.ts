/**
 * Reconciliation: makes the store agree with what blades actually run, periodically and whenever a blade comes UP.
 *   - running in the store, absent on its blade -> the desktop died: end the record ('desktop-exited').
 *   - on the blade, known to the store as ended -> should be dead: stop it (e.g. DELETE while the blade was DOWN).
 *   - on the blade, unknown to the store -> report (log + GET /api/v1/blades), stop only with --stop-unknown-sessions.
 *   - `starting` for far too long (its controller died mid-start) -> end it so the user can get a new one.
 */
import type { AgentSession } from '../agent-client/agent-client.js';
import type { Blade, BladeRegistry } from '../blades/registry.js';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { SessionRecord, Store } from '../store/store.js';
import type { SessionService } from './session-service.js';

export interface ReconcilerOptions {
  store: Store;
  blades: BladeRegistry;
  sessions: SessionService;
  config: Pick<Config, 'reconcileIntervalMs' | 'stopUnknownSessions'>;
  log: Logger;
  /** A `starting` record older than this is abandoned. */
  staleStartingMs?: number;
}

export interface ReconcileReport {
  blade: string;
  ended: string[];
  stoppedEnded: string[];
  unknown: string[];
  stoppedUnknown: string[];
}

export class Reconciler {
  readonly #o: Required<ReconcilerOptions>;
  readonly #log: Logger;
  #timer: NodeJS.Timeout | null = null;
  /** One pass per blade at a time; a request during a pass runs once more after it. */
  readonly #running = new Map<string, Promise<ReconcileReport | null>>();

  constructor(options: ReconcilerOptions) {
    this.#o = { staleStartingMs: 120_000, ...options };
    this.#log = options.log.child({ module: 'reconcile' });
  }

  start(): void {
    this.#o.blades.on('up', (blade) => void this.reconcileBlade(blade));
    this.#timer = setInterval(() => void this.reconcileAll(), this.#o.config.reconcileIntervalMs);
    this.#timer.unref?.();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  async reconcileAll(): Promise<ReconcileReport[]> {
    await this.#endStaleStarting();
    await this.#o.blades.refresh().catch((err: unknown) => this.#log.warn({ err }, 'could not refresh blades'));
    const reports = await Promise.all(this.#o.blades.list().filter((b) => b.health.state === 'UP').map((b) => this.reconcileBlade(b)));
    return reports.filter((r): r is ReconcileReport => r !== null);
  }

  /** Reconciles one blade; resolves null if it could not be asked. */
  reconcileBlade(blade: Blade): Promise<ReconcileReport | null> {
    const running = this.#running.get(blade.name);
    if (running) return running.then(() => this.reconcileBlade(blade));
    const p = this.#pass(blade)
      .catch((err: unknown) => {
        this.#log.warn({ err, blade: blade.name }, 'reconciliation failed');
        return null;
      })
      .finally(() => this.#running.delete(blade.name));
    this.#running.set(blade.name, p);
    return p;
  }

  async #pass(blade: Blade): Promise<ReconcileReport> {
    const report: ReconcileReport = { blade: blade.name, ended: [], stoppedEnded: [], unknown: [], stoppedUnknown: [] };
    // Store first, then the agent: a session that turns running in between is then on the agent but not in this
    // store snapshot (checked again below before being called unknown), never the reverse, which would end a live one.
    const known = await this.#o.store.listSessions({ live: true, blade: blade.name });
    const onAgent = await blade.connection.listSessions();
    const agentIds = new Set(onAgent.map((s) => s.id));
    const knownIds = new Set(known.map((s) => s.agentSessionId));

    for (const s of known) {
      if (s.state === 'running' && s.agentSessionId && !agentIds.has(s.agentSessionId)) {
        await this.#o.sessions.markEnded(s, 'desktop-exited');
        report.ended.push(s.id);
      }
    }

    const unknown: AgentSession[] = [];
    for (const a of onAgent.filter((x) => !knownIds.has(x.id))) {
      const live = await this.#o.store.getLiveSessionByUser(a.username);
      // Being started right now (record still `starting`, or running since the snapshot): not unknown.
      if (live && (live.state === 'starting' || live.agentSessionId === a.id)) continue;
      if (await this.#wasEnded(blade.name, a.id)) {
        await this.#stop(blade, a, 'its session has ended');
        report.stoppedEnded.push(a.id);
        continue;
      }
      unknown.push(a);
      report.unknown.push(a.id);
    }
    for (const a of unknown) {
      this.#log.warn({ blade: blade.name, agentSessionId: a.id, username: a.username, display: a.display, pid: a.pid,
        willStop: this.#o.config.stopUnknownSessions }, 'blade runs a session the store does not know');
      if (this.#o.config.stopUnknownSessions) {
        await this.#stop(blade, a, 'unknown to the store (--stop-unknown-sessions)');
        report.stoppedUnknown.push(a.id);
      }
    }
    this.#o.blades.setUnknownSessions(blade, this.#o.config.stopUnknownSessions ? [] : unknown);
    if (report.ended.length || report.stoppedEnded.length || report.unknown.length) {
      this.#log.info({ ...report }, 'reconciled blade');
    }
    return report;
  }

  async #wasEnded(blade: string, agentSessionId: string): Promise<boolean> {
    const all = await this.#o.store.listSessions({ live: false, blade, limit: 1000 });
    return all.some((s: SessionRecord) => s.agentSessionId === agentSessionId && s.state === 'ended');
  }

  async #stop(blade: Blade, a: AgentSession, why: string): Promise<void> {
    try {
      await blade.connection.stopSession(a.id);
      this.#log.info({ blade: blade.name, agentSessionId: a.id, username: a.username }, `stopped a desktop: ${why}`);
    } catch (err) {
      this.#log.warn({ err, blade: blade.name, agentSessionId: a.id }, 'could not stop a desktop');
    }
  }

  async #endStaleStarting(): Promise<void> {
    const cutoff = Date.now() - this.#o.staleStartingMs;
    const live = await this.#o.store.listSessions({ live: true });
    for (const s of live) {
      if (s.state === 'starting' && s.createdAt.getTime() < cutoff) await this.#o.sessions.markEnded(s, 'start-abandoned');
    }
  }
}
