/**
 * A fixed-window request counter per key (client IP), kept in memory. Enough to stop one client hammering the
 * reconnect endpoint (threat 13); a controller restart forgets the counts, which is harmless.
 */
export interface RateLimiterOptions {
  /** Requests allowed per key per window. */
  limit: number;
  windowMs: number;
  /** Upper bound on remembered keys, so a flood of distinct IPs cannot grow memory without bound. */
  maxKeys: number;
  now: () => number;
}

const DEFAULTS: RateLimiterOptions = { limit: 30, windowMs: 60_000, maxKeys: 10_000, now: Date.now };

export type RateDecision = { allowed: true } | { allowed: false; retryAfterMs: number };

export class RateLimiter {
  readonly #options: RateLimiterOptions;
  readonly #windows = new Map<string, { start: number; count: number }>();

  constructor(options: Partial<RateLimiterOptions> = {}) {
    this.#options = { ...DEFAULTS, ...options };
    const { limit, windowMs, maxKeys } = this.#options;
    if (!(limit >= 1) || !(windowMs >= 1) || !(maxKeys >= 1)) {
      throw new TypeError('RateLimiter: limit, windowMs and maxKeys must be >= 1');
    }
  }

  /** Counts one request for `key` and says whether it is within the limit. */
  hit(key: string): RateDecision {
    const { limit, windowMs, maxKeys, now } = this.#options;
    const t = now();
    let w = this.#windows.get(key);
    if (!w || t - w.start >= windowMs) {
      if (!w && this.#windows.size >= maxKeys) this.#evict(t);
      w = { start: t, count: 0 };
      this.#windows.set(key, w);
    }
    w.count += 1;
    if (w.count <= limit) return { allowed: true };
    return { allowed: false, retryAfterMs: w.start + windowMs - t };
  }

  /** Drops expired windows; if all are current, drops the oldest so the map stays bounded. */
  #evict(t: number): void {
    for (const [k, w] of this.#windows) if (t - w.start >= this.#options.windowMs) this.#windows.delete(k);
    if (this.#windows.size >= this.#options.maxKeys) {
      const oldest = this.#windows.keys().next();
      if (!oldest.done) this.#windows.delete(oldest.value);
    }
  }
}
