/**
 * A fixed-window event counter per key (a client IP), kept in memory: the viewer's reconnect budget and the proxy's
 * back-off after refused tokens. A restart forgets the counts, which is harmless. At most `maxKeys` keys are
 * remembered, so a flood of distinct addresses cannot grow memory without bound.
 */
export interface FixedWindowOptions {
  /** Events allowed per key per window. */
  limit: number;
  windowMs: number;
  /** Upper bound on remembered keys. */
  maxKeys: number;
  now: () => number;
}

const DEFAULTS: FixedWindowOptions = { limit: 30, windowMs: 60_000, maxKeys: 10_000, now: Date.now };

export type RateDecision = { allowed: true } | { allowed: false; retryAfterMs: number };

export class FixedWindowLimiter {
  readonly #options: FixedWindowOptions;
  readonly #windows = new Map<string, { count: number; resetAt: number }>();

  constructor(options: Partial<FixedWindowOptions> = {}) {
    this.#options = { ...DEFAULTS, ...options };
    const { limit, windowMs, maxKeys } = this.#options;
    if (!(limit >= 1) || !(windowMs >= 1) || !(maxKeys >= 1)) {
      throw new TypeError('FixedWindowLimiter: limit, windowMs and maxKeys must be >= 1');
    }
  }

  /** Counts one event for `key` and says whether it is within the limit (a request budget). */
  hit(key: string, now = this.#options.now()): RateDecision {
    const w = this.#count(key, now);
    if (w.count <= this.#options.limit) return { allowed: true };
    return { allowed: false, retryAfterMs: w.resetAt - now };
  }

  /** Counts one event for `key` (a failure that leads to a back-off once there are `limit` of them). */
  record(key: string, now = this.#options.now()): void {
    this.#count(key, now);
  }

  /** Milliseconds until `key` may try again because it has reached the limit in its window, or 0 if it may now. */
  blockedFor(key: string, now = this.#options.now()): number {
    const w = this.#windows.get(key);
    if (!w) return 0;
    if (now >= w.resetAt) {
      this.#windows.delete(key);
      return 0;
    }
    return w.count >= this.#options.limit ? w.resetAt - now : 0;
  }

  /** Drops expired windows. */
  prune(now = this.#options.now()): void {
    for (const [key, w] of this.#windows) if (now >= w.resetAt) this.#windows.delete(key);
  }

  #count(key: string, now: number): { count: number; resetAt: number } {
    let w = this.#windows.get(key);
    if (!w || now >= w.resetAt) {
      if (!w && this.#windows.size >= this.#options.maxKeys) this.prune(now);
      // Still full after pruning: forget the oldest entry rather than grow (a Map iterates in insertion order).
      if (!w && this.#windows.size >= this.#options.maxKeys) this.#windows.delete(this.#windows.keys().next().value!);
      w = { count: 0, resetAt: now + this.#options.windowMs };
      this.#windows.set(key, w);
    }
    w.count += 1;
    return w;
  }
}
