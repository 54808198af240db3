/**
 * The blades this controller dispatches to: registered from flags/file, from the store (so blades registered through
 * the API, possibly by another controller, are known after a restart) and through POST /api/v1/blades. Each has one
 * agent connection and one health monitor. The registry combines observed liveness with the operator's admin state
 * (from the store) into the state the API reports and placement uses.
 */
import { EventEmitter } from 'node:events';
import { AgentConnection, type AgentCredentials, type AgentSession, type GetStatusResponse } from '../agent-client/agent-client.js';
import { parseHostPort } from '../../shared/host-port.js';
import type { BladeSpec, Config } from '../config.js';
import { BladeExistsError, NotFoundError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { BladeAdminState, BladeRecord, Store } from '../store/store.js';
import { HealthMonitor, type HealthChange, type Liveness } from './health.js';
import { selectCandidates, type BladeState, type Candidate } from './selection.js';

/** What the API says about any failed probe of a blade (see the view below for why it says no more). */
export const BLADE_UNREACHABLE = 'the agent did not answer over mutual TLS; the controller log has the details';

/** Call results that come from the transport, not from the agent (grpc-errors.ts grpcStatusName). */
const NO_ANSWER = new Set(['UNAVAILABLE', 'DEADLINE_EXCEEDED', 'CANCELLED', 'UNKNOWN', 'INTERNAL', 'UNAUTHENTICATED', 'UNIMPLEMENTED']);

/** A desktop a blade runs that no live session owns (reported by reconciliation until it is stopped). */
export interface UnknownSession {
  id: string;
  username: string;
  display: number;
  pid: number;
  startedAt: string | null;
}

/** A blade as GET /api/v1/blades shows it. */
export interface BladeView {
  name: string;
  address: string;
  state: BladeState;
  liveness: Liveness;
  adminState: BladeAdminState;
  sessions: number;
  capacity: number;
  load: { load1: number; load5: number; load15: number } | null;
  memory: { totalBytes: number; availableBytes: number } | null;
  cpus: number | null;
  hostname: string | null;
  version: string | null;
  lastSeen: string | null;
  lastError: string | null;
  unknownSessions: UnknownSession[];
}

/** Runtime state of one blade. */
export class Blade {
  record: BladeRecord;
  readonly connection: AgentConnection;
  readonly health: HealthMonitor<GetStatusResponse>;
  status: GetStatusResponse | null = null;
  unknownSessions: UnknownSession[] = [];
  /** StartSession calls in flight from this controller (counted by placement before the store knows them). */
  pending = 0;
  #stopWatch: (() => void) | null = null;
  #rewatch: NodeJS.Timeout | null = null;
  #stopSessionWatch: (() => void) | null = null;
  #resessionWatch: NodeJS.Timeout | null = null;

  constructor(record: BladeRecord, connection: AgentConnection, health: HealthMonitor<GetStatusResponse>) {
    this.record = record;
    this.connection = connection;
    this.health = health;
  }

  get name(): string {
    return this.record.name;
  }

  /** The host part of the agent address: where this blade's VNC ports are reached. */
  get host(): string {
    return parseHostPort(this.record.address, `blade ${this.record.name} address`).host;
  }

  get state(): BladeState {
    const live = this.health.state;
    if (live !== 'UP') return live;
    return this.record.adminState === 'ACTIVE' ? 'UP' : this.record.adminState;
  }

  /** Watches grpc.health.v1 and restarts the watch after it ends (agent restarts end it). */
  watch(retryMs: number): void {
    this.#stopWatch = this.connection.watchHealth(
      (s) => (s === 'SERVING' ? this.health.success('health SERVING') : this.health.failure(`health ${s}`, true)),
      (err) => {
        this.#stopWatch = null;
        this.health.failure(err.message);
        this.#rewatch = setTimeout(() => this.watch(retryMs), retryMs);
        this.#rewatch.unref?.();
      },
    );
  }

  /**
   * Watches the agent's desktops (WatchSessions) and restarts the watch after it ends. `onWatching` runs each time the
   * agent accepted the watch: anything that ended while nobody watched is for reconciliation.
   */
  watchSessions(retryMs: number, handlers: { onWatching(): void; onEnded(agentSessionId: string, reason: string): void }): void {
    this.#stopSessionWatch = this.connection.watchSessions({
      ...handlers,
      onEnd: () => {
        this.#stopSessionWatch = null;
        this.#resessionWatch = setTimeout(() => this.watchSessions(retryMs, handlers), retryMs);
        this.#resessionWatch.unref?.();
      },
    });
  }

  close(): void {
    this.health.stop();
    if (this.#rewatch) clearTimeout(this.#rewatch);
    if (this.#resessionWatch) clearTimeout(this.#resessionWatch);
    this.#stopSessionWatch?.();
    this.#stopWatch?.();
    this.connection.close();
  }
}

export interface RegistryOptions {
  store: Store;
  config: Pick<Config, 'blades' | 'healthIntervalMs' | 'downAfterMs' | 'placement' | 'agentStartTimeoutMs' |
    'agentCallTimeoutMs' | 'agentKeepaliveMs' | 'agentKeepaliveTimeoutMs' | 'agentConnectTimeoutMs'>;
  credentials: AgentCredentials;
  log: Logger;
  metrics: Metrics;
}

export interface RegistryEvents {
  /** A blade came UP (first contact or back from DOWN): reconcile it. */
  up: [Blade];
  change: [Blade, HealthChange];
  /** The blade's agent reported that one of its desktops ended (by the agent's session id). */
  desktopEnded: [Blade, string, string];
  /** The blade's session watch (re)started: what ended while nobody watched needs reconciling. */
  watching: [Blade];
}

export class BladeRegistry extends EventEmitter<RegistryEvents> {
  readonly #blades = new Map<string, Blade>();
  readonly #o: RegistryOptions;
  readonly #log: Logger;

  constructor(options: RegistryOptions) {
    super();
    this.#o = options;
    this.#log = options.log.child({ module: 'blades' });
  }

  /** Writes the configured blades to the store, then loads every stored blade and starts watching it. */
  async init(): Promise<void> {
    const now = new Date();
    for (const b of this.#o.config.blades) await this.#o.store.upsertBlade(b, now);
    await this.refresh();
  }

  /** Picks up blades and admin states changed in the store (by the API here or by another controller). */
  async refresh(): Promise<void> {
    const stored = await this.#o.store.listBlades();
    // Removed through another controller sharing the store.
    const names = new Set(stored.map((r) => r.name));
    for (const blade of [...this.#blades.values()]) if (!names.has(blade.name)) this.#forget(blade);
    for (const rec of stored) {
      const blade = this.#blades.get(rec.name);
      if (!blade) this.#add(rec);
      else if (blade.record.address !== rec.address) this.#replace(rec);
      else blade.record = rec;
    }
  }

  #add(rec: BladeRecord): Blade {
    const { healthIntervalMs, downAfterMs } = this.#o.config;
    // Any answer from the agent, whatever the call and even an error status, proves it is reachable. Only the
    // transport's own failures say nothing about reachability. Starts in flight prove nothing: a blade cut off in the
    // middle of one is as silent as any other (health.ts).
    let health: HealthMonitor<GetStatusResponse> | null = null;
    const connection = new AgentConnection({
      name: rec.name,
      address: rec.address,
      credentials: this.#o.credentials,
      deadlines: { startSessionMs: this.#o.config.agentStartTimeoutMs, defaultMs: this.#o.config.agentCallTimeoutMs },
      keepalive: { timeMs: this.#o.config.agentKeepaliveMs, timeoutMs: this.#o.config.agentKeepaliveTimeoutMs },
      connectTimeoutMs: this.#o.config.agentConnectTimeoutMs,
      onCall: (method, result) => {
        this.#o.metrics.agentCalls.inc({ method, result });
        if (!NO_ANSWER.has(result)) health?.success(`${method} answered`);
      },
    });
    health = new HealthMonitor<GetStatusResponse>({
      // An agent call like the others (--agent-call-timeout-ms), cut to a probe interval past --down-after-ms: the
      // monitor's own timeout (which first reads any answer already here) decides, not grpc-js's deadline, which
      // would drop an answer that arrived while the loop was held up.
      probe: () => connection.getStatus({ timeoutMs: Math.min(this.#o.config.agentCallTimeoutMs, downAfterMs + healthIntervalMs) }),
      intervalMs: healthIntervalMs,
      downAfterMs,
    });
    const blade = new Blade(rec, connection, health);
    health.on('probe', (status) => {
      blade.status = status;
      this.#o.metrics.bladeLiveSessions.set({ blade: rec.name }, status.liveSessions);
    });
    health.on('change', (change) => {
      const level = change.to === 'DOWN' ? 'warn' : 'info';
      this.#log[level]({ blade: rec.name, address: rec.address, from: change.from, to: change.to, reason: change.reason },
        `blade ${change.to}`);
      this.#o.metrics.bladeUp.set({ blade: rec.name }, change.to === 'UP' ? 1 : 0);
      this.emit('change', blade, change);
      if (change.to === 'UP') this.emit('up', blade);
    });
    this.#blades.set(rec.name, blade);
    health.start();
    blade.watch(healthIntervalMs);
    // A desktop's end is pushed by its agent; retry the watch quickly, since a missed end keeps a dead desktop open.
    blade.watchSessions(Math.min(healthIntervalMs, 1000), {
      onWatching: () => this.emit('watching', blade),
      onEnded: (agentSessionId, reason) => this.emit('desktopEnded', blade, agentSessionId, reason),
    });
    return blade;
  }

  #replace(rec: BladeRecord): void {
    this.#blades.get(rec.name)?.close();
    this.#blades.delete(rec.name);
    this.#log.info({ blade: rec.name, address: rec.address }, 'blade address changed');
    this.#add(rec);
  }

  /**
   * Registers a blade (POST /api/v1/blades). Re-registering the same address is a no-op; moving a blade that has
   * live sessions to another address is refused, since the proxy reaches those desktops through it.
   */
  async register(spec: BladeSpec): Promise<{ blade: Blade; created: boolean }> {
    const existing = (await this.#o.store.getBlade(spec.name)) ?? null;
    if (existing && existing.address !== spec.address) {
      const live = (await this.#o.store.countLiveSessionsByBlade()).get(spec.name) ?? 0;
      if (live > 0) {
        throw new BladeExistsError(`blade ${spec.name} is registered at ${existing.address} and has ${live} live sessions`);
      }
    }
    const rec = await this.#o.store.upsertBlade(spec, new Date());
    const known = this.#blades.get(rec.name);
    if (!known) this.#add(rec);
    else if (known.record.address !== rec.address) this.#replace(rec);
    else known.record = rec;
    return { blade: this.#blades.get(rec.name)!, created: !existing };
  }

  /**
   * Forgets a blade: stops watching it and removes it from the store. The caller has ended its sessions (or
   * checked there are none). Returns false if no such blade was registered.
   */
  async remove(name: string): Promise<boolean> {
    const existed = await this.#o.store.deleteBlade(name);
    const blade = this.#blades.get(name);
    if (blade) this.#forget(blade);
    if (existed || blade) this.#log.info({ blade: name }, 'blade removed');
    return existed || blade !== undefined;
  }

  #forget(blade: Blade): void {
    blade.close();
    this.#blades.delete(blade.name);
    for (const g of [this.#o.metrics.bladeUp, this.#o.metrics.bladeLiveSessions, this.#o.metrics.unknownSessions]) {
      g.remove({ blade: blade.name });
    }
  }

  async setAdminState(name: string, state: BladeAdminState): Promise<Blade> {
    const rec = await this.#o.store.setBladeAdminState(name, state, new Date());
    if (!rec) throw new NotFoundError(`no blade named ${name}`);
    const blade = this.#blades.get(name) ?? this.#add(rec);
    blade.record = rec;
    this.#log.info({ blade: name, adminState: state }, 'blade admin state changed');
    return blade;
  }

  get(name: string): Blade | undefined {
    return this.#blades.get(name);
  }

  list(): Blade[] {
    return [...this.#blades.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  /**
   * Sessions per blade: the larger of what the store says (every controller's rows naming the blade, starts in flight
   * included: a start writes its row before it calls the blade) and what the agent runs plus this controller's starts
   * in flight (which the agent's last status may not count yet). Adding the in-flight starts to the store's count too
   * counted each of them twice, and a blade with room was refused.
   */
  #sessions(blade: Blade, storeCounts: Map<string, number>): number {
    return Math.max(storeCounts.get(blade.name) ?? 0, (blade.status?.liveSessions ?? 0) + blade.pending);
  }

  /** Blades to try for a new session, best first (see selection.ts). */
  async candidates(rrCounter: () => Promise<number>): Promise<Blade[]> {
    const counts = await this.#o.store.countLiveSessionsByBlade();
    const snapshot = this.list().map((blade) => ({
      blade,
      name: blade.name,
      state: blade.state,
      sessions: this.#sessions(blade, counts),
      capacity: blade.status?.capacity ?? 0,
      load1: blade.status?.load1 ?? 0,
    } satisfies Candidate & { blade: Blade }));
    const policy = this.#o.config.placement;
    const counter = policy === 'round-robin' && snapshot.some((c) => c.state === 'UP') ? await rrCounter() : 0;
    return selectCandidates(snapshot, policy, counter).map((c) => c.blade);
  }

  async views(): Promise<BladeView[]> {
    const counts = await this.#o.store.countLiveSessionsByBlade();
    return this.list().map((b) => this.view(b, counts));
  }

  view(b: Blade, counts: Map<string, number>): BladeView {
    const s = b.status;
    return {
      name: b.name,
      address: b.record.address,
      state: b.state,
      liveness: b.health.state,
      adminState: b.record.adminState,
      sessions: Math.max(counts.get(b.name) ?? 0, s?.liveSessions ?? 0),
      capacity: s?.capacity ?? 0,
      load: s ? { load1: s.load1, load5: s.load5, load15: s.load15 } : null,
      memory: s ? { totalBytes: s.memoryTotalBytes, availableBytes: s.memoryAvailableBytes } : null,
      cpus: s ? s.cpus : null,
      hostname: s?.hostname || null,
      version: s?.version || null,
      lastSeen: b.health.lastSeen ? new Date(b.health.lastSeen).toISOString() : null,
      // One generic category, never the transport's own words: "connection refused", "timed out" or "wrong version
      // number" would let any API-key holder map which hosts and ports answer, by registering them as blades.
      // The details go to the controller's log only.
      lastError: b.health.lastError === null ? null : BLADE_UNREACHABLE,
      unknownSessions: b.unknownSessions,
    };
  }

  /** Records what reconciliation found running on a blade without a store record. */
  setUnknownSessions(blade: Blade, sessions: AgentSession[]): void {
    blade.unknownSessions = sessions.map((s) => ({
      id: s.id,
      username: s.username,
      display: s.display,
      pid: s.pid,
      startedAt: s.startedAt ? s.startedAt.toISOString() : null,
    }));
    this.#o.metrics.unknownSessions.set({ blade: blade.name }, sessions.length);
  }

  close(): void {
    for (const b of this.#blades.values()) b.close();
    this.#blades.clear();
  }
}
