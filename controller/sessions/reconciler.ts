/**
 * Reconciliation: makes the store and the blades agree, periodically (--reconcile-interval-ms), whenever a blade
 * comes UP, and shortly after it finds something to wait on. It converges by default:
 *   - running in the store, absent on its blade -> the desktop died: end the record ('desktop-exited').
 *   - `starting` for longer than --start-settle-ms (its controller died mid-call, or the blade never answered) ->
 *     ask the row's blade: a desktop for it runs -> the row becomes running (the row holds its password); none ->
 *     the row ends ('start-abandoned'). A row whose blade is unknown or not UP ends too; should its blade come back
 *     with the desktop, that desktop is then one no live session owns (next line).
 *   - on the blade, owned by no live session (its session ended, or the store never recorded it) -> an orphan: it
 *     is stopped once it has been seen orphaned for --orphan-grace-ms (the grace covers a start that finished a
 *     moment ago and is being recorded). Orphans are listed on the blade (GET /api/v1/blades) meanwhile.
 * With --reconcile-report-only nothing is stopped or ended: the same findings are logged, listed and counted.
 */
import type { AgentSession } from '../agent-client/agent-client.js';
import type { Blade, BladeRegistry } from '../blades/registry.js';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { Store } from '../store/store.js';
import type { SessionService } from './session-service.js';

export interface ReconcilerOptions {
  store: Store;
  blades: BladeRegistry;
  sessions: SessionService;
  config: Pick<Config, 'reconcileIntervalMs' | 'reconcileReportOnly' | 'orphanGraceMs' | 'startSettleMs'>;
  log: Logger;
  now?: () => number;
}

export interface ReconcileReport {
  blade: string;
  /** Records ended because their desktop is gone. */
  ended: string[];
  /** `starting` records settled as running (their desktop runs) or ended (it does not). */
  settledRunning: string[];
  settledEnded: string[];
  /** Agent ids of desktops no live session owns, still within their grace (or report-only). */
  orphans: string[];
  /** Agent ids of orphaned desktops stopped in this pass. */
  stopped: string[];
}

export class Reconciler {
  readonly #o: Required<ReconcilerOptions>;
  readonly #log: Logger;
  #timer: NodeJS.Timeout | null = null;
  /** One pass per blade at a time; a request during a pass runs once more after it. */
  readonly #running = new Map<string, Promise<ReconcileReport | null>>();
  /** When each orphan (blade/agent id) was first seen, for the grace period. */
  readonly #orphanSince = new Map<string, number>();
  /** Follow-up passes scheduled for the end of an orphan's grace, one per blade. */
  readonly #followUps = new Map<string, NodeJS.Timeout>();
  #stopped = false;

  constructor(options: ReconcilerOptions) {
    this.#o = { now: Date.now, ...options };
    this.#log = options.log.child({ module: 'reconcile' });
  }

  get reportOnly(): boolean {
    return this.#o.config.reconcileReportOnly;
  }

  start(): void {
    this.#stopped = false;
    this.#o.blades.on('up', (blade) => void this.reconcileBlade(blade));
    this.#timer = setInterval(() => void this.reconcileAll(), this.#o.config.reconcileIntervalMs);
    this.#timer.unref?.();
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    for (const t of this.#followUps.values()) clearTimeout(t);
    this.#followUps.clear();
  }

  async reconcileAll(): Promise<ReconcileReport[]> {
    await this.#o.blades.refresh().catch((err: unknown) => this.#log.warn({ err }, 'could not refresh blades'));
    await this.#settleUnaskable().catch((err: unknown) => this.#log.warn({ err }, 'could not settle starting sessions'));
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

  /** A `starting` row past its settle time whose blade cannot be asked (none recorded, unknown, not UP): end it. */
  async #settleUnaskable(): Promise<void> {
    const cutoff = this.#o.now() - this.#o.config.startSettleMs;
    for (const s of await this.#o.store.listSessions({ live: true })) {
      if (s.state !== 'starting' || s.createdAt.getTime() >= cutoff || this.#o.sessions.isStartingHere(s.id)) continue;
      const blade = s.blade ? this.#o.blades.get(s.blade) : undefined;
      if (blade && blade.health.state === 'UP') continue; // its blade's pass settles it from what the blade runs
      this.#log.warn({ sessionId: s.id, username: s.username, blade: s.blade, reportOnly: this.reportOnly },
        'a session has been starting too long and its blade cannot be asked: ending it');
      if (!this.reportOnly) await this.#o.sessions.markEnded(s, 'start-abandoned');
    }
  }

  async #pass(blade: Blade): Promise<ReconcileReport> {
    const report: ReconcileReport = { blade: blade.name, ended: [], settledRunning: [], settledEnded: [], orphans: [], stopped: [] };
    const reportOnly = this.reportOnly;
    // Store first, then the agent: a session that turns running in between is then on the agent but not in this
    // store snapshot (checked again below before being called an orphan), never the reverse, which would end a live one.
    const known = await this.#o.store.listSessions({ live: true, blade: blade.name });
    const onAgent = await blade.connection.listSessions();
    const agentIds = new Set(onAgent.map((a) => a.id));
    const owned = new Set<string>();
    const now = this.#o.now();

    for (const s of known) {
      if (s.state === 'running') {
        if (s.agentSessionId && agentIds.has(s.agentSessionId)) {
          owned.add(s.agentSessionId);
        } else if (!reportOnly && (await this.#o.sessions.markEnded(s, 'desktop-exited'))) {
          report.ended.push(s.id);
        }
        continue;
      }
      // `starting`: its desktop, if any, is the one under the session's id or the user's only desktop there.
      const desktop = onAgent.find((a) => a.id === s.id) ?? onAgent.find((a) => a.username === s.username);
      if (desktop) owned.add(desktop.id);
      if (this.#o.sessions.isStartingHere(s.id) || now - s.createdAt.getTime() < this.#o.config.startSettleMs) continue;
      if (reportOnly) {
        this.#log.warn({ sessionId: s.id, blade: blade.name, running: Boolean(desktop) }, 'would settle a starting session (report only)');
      } else if (desktop && s.password && (await this.#o.sessions.adopt(s, desktop))) {
        report.settledRunning.push(s.id);
      } else if (await this.#o.sessions.markEnded(s, 'start-abandoned')) {
        report.settledEnded.push(s.id);
        if (desktop) owned.delete(desktop.id); // no password on record: nobody could connect; stop it below
      }
    }

    const orphans: AgentSession[] = [];
    for (const a of onAgent) {
      if (owned.has(a.id)) continue;
      // Started or recorded since the snapshot: the user's live session now owns it (or is being started). Only on
      // the blade the session names: a start that gave up on this blade and moved to another keeps its session id
      // there, and the desktop this blade finished for it late is a second one.
      const live = await this.#o.store.getLiveSessionByUser(a.username);
      if (live && (live.blade === blade.name || live.blade === null)
        && (live.agentSessionId === a.id || live.id === a.id || live.state === 'starting')) continue;
      orphans.push(a);
    }

    const seen = new Set<string>();
    let nextDue = Infinity;
    for (const a of orphans) {
      const key = `${blade.name}/${a.id}`;
      seen.add(key);
      const since = this.#orphanSince.get(key) ?? now;
      this.#orphanSince.set(key, since);
      const due = since + this.#o.config.orphanGraceMs;
      if (reportOnly || due > now) {
        report.orphans.push(a.id);
        if (!reportOnly) nextDue = Math.min(nextDue, due);
        continue;
      }
      if (await this.#stop(blade, a)) {
        report.stopped.push(a.id);
        this.#orphanSince.delete(key);
      } else {
        report.orphans.push(a.id);
      }
    }
    for (const key of this.#orphanSince.keys()) {
      if (key.startsWith(`${blade.name}/`) && !seen.has(key)) this.#orphanSince.delete(key);
    }
    this.#o.blades.setUnknownSessions(blade, orphans.filter((a) => report.orphans.includes(a.id)));
    if (nextDue !== Infinity) this.#followUp(blade, nextDue - now);

    if (report.ended.length || report.settledRunning.length || report.settledEnded.length || report.orphans.length || report.stopped.length) {
      this.#log.info({ ...report, reportOnly }, 'reconciled blade');
    }
    return report;
  }

  /** Looks at a blade again when an orphan's grace ends, rather than a whole interval later. */
  #followUp(blade: Blade, delayMs: number): void {
    if (this.#stopped || this.#followUps.has(blade.name)) return;
    const t = setTimeout(() => {
      this.#followUps.delete(blade.name);
      if (!this.#stopped && blade.health.state === 'UP') void this.reconcileBlade(blade);
    }, Math.max(0, delayMs) + 50);
    t.unref?.();
    this.#followUps.set(blade.name, t);
  }

  async #stop(blade: Blade, a: AgentSession): Promise<boolean> {
    try {
      await blade.connection.stopSession(a.id);
      this.#log.warn({ blade: blade.name, agentSessionId: a.id, username: a.username, xvncPid: a.pid },
        'stopped a desktop that no live session owns');
      return true;
    } catch (err) {
      this.#log.warn({ err, blade: blade.name, agentSessionId: a.id }, 'could not stop a desktop that no live session owns');
      return false;
    }
  }
}
