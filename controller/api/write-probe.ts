/**
 * The store's write check behind GET /readyz, shared. /readyz is unauthenticated and the check is a real durable
 * write (an fsync, on the event loop for SQLite), so each caller must not cost one: callers at the same moment share
 * the write in flight, and an answer stays good for `ttlMs` after it was made. A load balancer polling every second
 * still sees a full or read-only disk within about `ttlMs`, and a flood of /readyz costs at most one write per
 * `ttlMs`.
 */
export class WriteProbe {
  private inFlight: Promise<void> | null = null;
  private last: { at: number; error: Error | null } | null = null;

  constructor(private readonly check: () => Promise<void>, private readonly ttlMs: number, private readonly now = Date.now) {}

  /** Resolves if the store could write, recently enough; rejects with the store's error otherwise. */
  async run(): Promise<void> {
    const last = this.last;
    if (last && this.now() - last.at < this.ttlMs) {
      if (last.error) throw last.error;
      return;
    }
    this.inFlight ??= this.check().then(
      () => this.settle(null),
      (err: unknown) => this.settle(err instanceof Error ? err : new Error(String(err))),
    );
    await this.inFlight;
    if (this.last?.error) throw this.last.error;
  }

  private settle(error: Error | null): void {
    this.last = { at: this.now(), error };
    this.inFlight = null;
  }
}
