/**
 * The fleet as the dashboard sees it, pushed as changes: every blade's view and every live session with its viewer
 * connections. While anyone listens, it recomputes the picture every `intervalMs` and whenever something here pokes
 * it (a REST change, a session ending), compares it item by item with the last one and emits only what changed.
 *
 * Polling the store (not only listening to this process) is deliberate: sessions opened or ended through another
 * controller sharing the store, and desktops that end on their own, show up too, within one interval.
 */
import { EventEmitter } from 'node:events';
import { sessionView, type SessionView } from '../api/session-view.js';
import type { BladeRegistry, BladeView } from '../blades/registry.js';
import type { Logger } from '../log.js';
import type { SessionConnectionStats } from '../proxy/index.js';
import type { Store } from '../store/store.js';

export type FleetEvent =
  | { type: 'blade'; data: BladeView }
  | { type: 'blade-removed'; data: { name: string } }
  | { type: 'session'; data: SessionView }
  | { type: 'session-ended'; data: SessionView };

export interface FleetSnapshot {
  blades: BladeView[];
  sessions: SessionView[];
}

export interface FleetWatchOptions {
  store: Store;
  blades: Pick<BladeRegistry, 'views'>;
  connections: () => Map<string, SessionConnectionStats>;
  log: Logger;
  /** How often the picture is recomputed while someone listens. */
  intervalMs: number;
  /** Most live sessions one picture holds. */
  maxSessions?: number;
}

/** A poke waits this long so that a burst of changes (a POST's several store writes) costs one recomputation. */
const POKE_DEBOUNCE_MS = 20;

export class FleetWatch {
  readonly #o: Required<FleetWatchOptions>;
  readonly #log: Logger;
  readonly #events = new EventEmitter<{ event: [FleetEvent] }>();
  #blades = new Map<string, string>();
  #sessions = new Map<string, string>();
  #last: FleetSnapshot | null = null;
  #timer: NodeJS.Timeout | null = null;
  #poke: NodeJS.Timeout | null = null;
  #running: Promise<FleetSnapshot> | null = null;
  #again = false;
  #closed = false;

  constructor(options: FleetWatchOptions) {
    this.#o = { maxSessions: 10_000, ...options };
    this.#log = options.log.child({ module: 'events' });
    this.#events.setMaxListeners(0);
  }

  get listeners(): number {
    return this.#events.listenerCount('event');
  }

  /**
   * Adds a listener and resolves with the current picture (everything after it arrives as events). Call the
   * returned function to stop listening.
   */
  async subscribe(listener: (event: FleetEvent) => void): Promise<{ snapshot: FleetSnapshot; unsubscribe: () => void }> {
    this.#events.on('event', listener);
    let unsubscribed = false;
    const unsubscribe = (): void => {
      if (unsubscribed) return;
      unsubscribed = true;
      this.#events.off('event', listener);
      if (this.listeners === 0) this.#stop();
    };
    try {
      this.#start();
      const snapshot = this.#last ?? (await this.refresh());
      return { snapshot, unsubscribe };
    } catch (err) {
      unsubscribe();
      throw err;
    }
  }

  /** Something changed here: recompute soon (only while someone listens). */
  poke(): void {
    if (this.listeners === 0 || this.#poke || this.#closed) return;
    this.#poke = setTimeout(() => {
      this.#poke = null;
      void this.refresh().catch(() => {});
    }, POKE_DEBOUNCE_MS);
    this.#poke.unref();
  }

  /** Recomputes the picture and emits what changed; concurrent calls share one run (and queue one more). */
  refresh(): Promise<FleetSnapshot> {
    if (this.#running) {
      this.#again = true;
      return this.#running;
    }
    this.#running = this.#compute()
      .catch((err: unknown) => {
        this.#log.warn({ err }, 'could not compute the fleet picture');
        throw err;
      })
      .finally(() => {
        this.#running = null;
        if (this.#again) {
          this.#again = false;
          void this.refresh().catch(() => {});
        }
      });
    return this.#running;
  }

  close(): void {
    this.#closed = true;
    this.#stop();
    this.#events.removeAllListeners();
  }

  #start(): void {
    if (this.#timer || this.#closed) return;
    this.#timer = setInterval(() => void this.refresh().catch(() => {}), this.#o.intervalMs);
    this.#timer.unref();
  }

  #stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    if (this.#poke) clearTimeout(this.#poke);
    this.#timer = null;
    this.#poke = null;
    // Nobody listens: the next subscriber starts from a fresh picture.
    this.#last = null;
    this.#blades.clear();
    this.#sessions.clear();
  }

  async #compute(): Promise<FleetSnapshot> {
    const [blades, live] = await Promise.all([
      this.#o.blades.views(),
      this.#o.store.listSessions({ live: true, limit: this.#o.maxSessions }),
    ]);
    const stats = this.#o.connections();
    const sessions = live.map((s) => sessionView(s, stats.get(s.id)));
    const first = this.#last === null;
    const emit = (event: FleetEvent): void => {
      if (!first) this.#events.emit('event', event);
    };

    const bladeNow = new Map(blades.map((b) => [b.name, JSON.stringify(b)]));
    for (const b of blades) if (this.#blades.get(b.name) !== bladeNow.get(b.name)) emit({ type: 'blade', data: b });
    for (const name of this.#blades.keys()) if (!bladeNow.has(name)) emit({ type: 'blade-removed', data: { name } });

    const sessionNow = new Map(sessions.map((s) => [s.id, JSON.stringify(s)]));
    for (const s of sessions) if (this.#sessions.get(s.id) !== sessionNow.get(s.id)) emit({ type: 'session', data: s });
    for (const id of this.#sessions.keys()) {
      if (sessionNow.has(id) || first) continue;
      const ended = await this.#o.store.getSession(id);
      // A session that left the live list has ended (or was discarded: a start that never ran).
      emit({ type: 'session-ended', data: ended ? sessionView(ended) : { ...(JSON.parse(this.#sessions.get(id)!) as SessionView), state: 'ended' } });
    }
    this.#blades = bladeNow;
    this.#sessions = sessionNow;
    // Listeners may have left while this ran; then the picture is not kept.
    const snapshot = { blades, sessions };
    this.#last = this.listeners > 0 ? snapshot : null;
    if (this.listeners === 0) {
      this.#blades.clear();
      this.#sessions.clear();
    }
    return snapshot;
  }
}
