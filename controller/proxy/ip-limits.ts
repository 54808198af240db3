/**
 * Per-client-IP limits on the upgrade path (README, Security: threat 13): a cap on concurrent connections, and a back-off
 * after repeated refused tokens so guessing is slow. Both maps are pruned so that many distinct addresses cannot
 * grow memory without bound.
 */

/** Concurrent connections per IP, counted from admission (before authorize) to close. */
export class ConnectionCounter {
  private readonly counts = new Map<string, number>();

  constructor(private readonly max: number) {}

  /** Reserves a slot for `ip`; false if it already holds `max`. */
  acquire(ip: string): boolean {
    const n = this.counts.get(ip) ?? 0;
    if (n >= this.max) return false;
    this.counts.set(ip, n + 1);
    return true;
  }

  release(ip: string): void {
    const n = (this.counts.get(ip) ?? 0) - 1;
    if (n > 0) this.counts.set(ip, n);
    else this.counts.delete(ip);
  }
}

/** Fixed-window counter of refused tokens per IP; at `limit` the IP is refused with 429 until the window ends. */
export class BadTokenBackoff {
  private readonly windows = new Map<string, { count: number; resetAt: number }>();

  constructor(
    private readonly limit: number,
    private readonly windowMs: number,
    private readonly maxTracked = 100_000,
  ) {}

  /** Milliseconds until `ip` may try again, or 0 if it may now. */
  blockedFor(ip: string, now: number): number {
    const w = this.windows.get(ip);
    if (!w) return 0;
    if (now >= w.resetAt) {
      this.windows.delete(ip);
      return 0;
    }
    return w.count >= this.limit ? w.resetAt - now : 0;
  }

  /** Records a refused token from `ip`. */
  record(ip: string, now: number): void {
    const w = this.windows.get(ip);
    if (w && now < w.resetAt) {
      w.count++;
      return;
    }
    if (this.windows.size >= this.maxTracked) this.prune(now);
    // Still full after pruning: forget the oldest entry rather than grow (Map iterates in insertion order).
    if (this.windows.size >= this.maxTracked) this.windows.delete(this.windows.keys().next().value!);
    this.windows.set(ip, { count: 1, resetAt: now + this.windowMs });
  }

  /** Drops expired windows. */
  prune(now: number): void {
    for (const [ip, w] of this.windows) if (now >= w.resetAt) this.windows.delete(ip);
  }
}
