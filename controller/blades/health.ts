/**
 * Liveness of one blade as a small explicit state machine (after Nomad's heartbeat TTLs):
 *
 *   UNKNOWN --success--> UP        UNKNOWN --failure / TTL--> DOWN
 *   UP      --TTL expires (no success for downAfterMs) or explicit NOT_SERVING--> DOWN
 *   DOWN    --success--> UP
 *
 * An injected probe runs every `intervalMs` (never two at once); each success re-arms a TTL timer of `downAfterMs`.
 * A blade that stops answering is therefore DOWN at most `downAfterMs` after its last answer, whether its probes
 * fail fast (connection refused) or hang (a frozen host). Other sources (the grpc.health.v1 Watch stream, any
 * answer to any call) feed in through success()/failure().
 *
 * Work in flight to the blade (a StartSession) buys it no extra time: a blade busy starting desktops still answers
 * its probes (GetStatus during 50 concurrent starts: p99 27 ms, max 112 ms, `npm run bench:status`), far inside
 * `downAfterMs`, while a blade cut off mid-start answers nothing and must be DOWN as soon as any silent blade.
 *
 * What does need time is the controller's own stall: its event loop held up (2.4 s at most during a burst of 50
 * POSTs on 2 cores) runs expired timers before it reads the answers that arrived meanwhile, so a TTL that fires late
 * has not heard the blade. It gives the blade a fresh window (STALL_RECHECK_INTERVALS probe intervals, a new probe
 * goes out at once) instead of calling it DOWN; only a TTL that fires on time decides.
 *
 * A stall can also end just before a TTL's due time, the answer unread in the socket: Node runs due timers before it
 * polls for I/O, so the TTL, on time, would fire first. Every verdict (the TTL's, a probe's timeout) therefore waits
 * for the end of the loop turn (setImmediate runs after the poll phase), and a blade whose answer was already here is
 * heard first. In the 200-POST burst on 2 cores, three blades went DOWN within one millisecond that way while every
 * agent's loop stayed under 400 ms.
 */
import { EventEmitter } from 'node:events';
import { withTimeout } from '../../shared/timeout.js';

/** A TTL that fires more than this fraction of a probe interval late was held up by the controller, not the blade. */
const STALL_LATE_FRACTION = 0.25;
/** The window a blade gets after such a stall: a probe goes out at once, and its answer must be read in time. */
const STALL_RECHECK_INTERVALS = 2;

export type Liveness = 'UNKNOWN' | 'UP' | 'DOWN';

export interface HealthChange {
  from: Liveness;
  to: Liveness;
  reason: string;
}

export interface HealthMonitorOptions<T> {
  /** Asks the blade; resolves with what it said or rejects. Should carry its own deadline. */
  probe: () => Promise<T>;
  intervalMs: number;
  /** No success for this long makes an UP blade DOWN. */
  downAfterMs: number;
  /** A probe that has not settled after this long counts as failed (a hung probe must not block later ones). */
  probeTimeoutMs?: number;
  now?: () => number;
}

export interface HealthMonitorEvents<T> {
  change: [HealthChange];
  probe: [T];
}

/** One blade's liveness. Emits 'change' on every state transition and 'probe' with each successful probe result. */
export class HealthMonitor<T> extends EventEmitter<HealthMonitorEvents<T>> {
  #state: Liveness = 'UNKNOWN';
  #lastSeen: number | null = null;
  #lastError: string | null = null;
  #ttl: NodeJS.Timeout | null = null;
  #interval: NodeJS.Timeout | null = null;
  #inFlight = false;
  #running = false;
  readonly #o: Required<HealthMonitorOptions<T>>;

  constructor(options: HealthMonitorOptions<T>) {
    super();
    if (!(options.downAfterMs > options.intervalMs)) throw new TypeError('downAfterMs must exceed intervalMs');
    this.#o = { now: Date.now, probeTimeoutMs: options.downAfterMs, ...options };
  }

  get state(): Liveness {
    return this.#state;
  }
  /** Epoch ms of the last success, or null. */
  get lastSeen(): number | null {
    return this.#lastSeen;
  }
  get lastError(): string | null {
    return this.#lastError;
  }

  /** Starts probing now and every intervalMs. The TTL also starts now, so a blade that never answers becomes DOWN. */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#armTtl();
    this.#interval = setInterval(() => void this.#tick(), this.#o.intervalMs);
    this.#interval.unref?.();
    void this.#tick();
  }

  stop(): void {
    this.#running = false;
    if (this.#interval) clearInterval(this.#interval);
    if (this.#ttl) clearTimeout(this.#ttl);
    this.#interval = this.#ttl = null;
  }

  /** Runs one probe now (unless one is in flight). */
  async probeNow(): Promise<void> {
    await this.#tick();
  }

  async #tick(): Promise<void> {
    if (this.#inFlight || !this.#running) return;
    this.#inFlight = true;
    try {
      const result = await withTimeout(this.#o.probe(), this.#o.probeTimeoutMs,
        () => new Error(`probe timed out after ${this.#o.probeTimeoutMs} ms`), { afterPendingIo: true });
      if (!this.#running) return;
      this.success('probe answered');
      this.emit('probe', result);
    } catch (err) {
      if (this.#running) this.failure((err as Error)?.message ?? String(err));
    } finally {
      this.#inFlight = false;
    }
  }

  /** The blade answered: UP, and the TTL starts over. */
  success(reason = 'answered'): void {
    if (!this.#running) return;
    this.#lastSeen = this.#o.now();
    this.#lastError = null;
    this.#armTtl();
    this.#transition('UP', reason);
  }

  /**
   * The blade failed to answer. Not definitive by itself while UP (one lost probe is not an outage: the TTL decides);
   * an UNKNOWN blade goes DOWN at once, and `definitive` (e.g. health NOT_SERVING) makes any blade DOWN now.
   */
  failure(reason: string, definitive = false): void {
    if (!this.#running) return;
    this.#lastError = reason;
    if (definitive || this.#state === 'UNKNOWN') this.#transition('DOWN', reason);
  }

  #armTtl(delayMs = this.#o.downAfterMs): void {
    if (this.#ttl) clearTimeout(this.#ttl);
    const due = this.#o.now() + delayMs;
    const ttl = setTimeout(() => setImmediate(() => {
      // An answer read meanwhile re-armed the TTL (or the monitor stopped): no verdict.
      if (this.#ttl !== ttl || !this.#running) return;
      this.#ttl = null;
      const late = this.#o.now() - due;
      if (late > this.#o.intervalMs * STALL_LATE_FRACTION) {
        this.#armTtl(Math.min(this.#o.downAfterMs, this.#o.intervalMs * STALL_RECHECK_INTERVALS));
        void this.#tick();
        return;
      }
      this.#transition('DOWN', `no answer for ${this.#o.downAfterMs} ms${this.#lastError ? `: ${this.#lastError}` : ''}`);
    }), delayMs);
    ttl.unref?.();
    this.#ttl = ttl;
  }

  #transition(to: Liveness, reason: string): void {
    const from = this.#state;
    if (from === to) return;
    this.#state = to;
    this.emit('change', { from, to, reason });
  }
}
