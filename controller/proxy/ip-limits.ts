/**
 * The per-client-IP connection cap on the upgrade path (README, Security: threat 13); the back-off after repeated
 * refused tokens is a shared/fixed-window.ts limiter. An IP's entry goes when its last connection closes.
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
