/**
 * At most N desktop starts run at once; the rest wait their turn, first come first served.
 *
 * A start is mostly CPU (Xvnc loading, the session's first programs). Fifty at once on a small blade share the CPUs
 * evenly and all finish late together, every one past its caller's deadline, so none is answered in time. Run a few
 * at a time, each finishes in its own fraction of a second, and a start that waits too long gives up while it is
 * still queued, having spawned nothing, so its caller can try another blade.
 */
export class StartSlots {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly limit: number) {}

  /**
   * Resolves once a slot is this caller's, with whether it had to wait for it; rejects with `signal`'s reason if it
   * aborts first (taking no slot).
   */
  acquire(signal: AbortSignal): Promise<{ waited: boolean }> {
    if (signal.aborted) return Promise.reject(signal.reason as Error);
    if (this.running < this.limit) {
      this.running++;
      return Promise.resolve({ waited: false });
    }
    return new Promise((resolve, reject) => {
      const grant = () => {
        signal.removeEventListener('abort', onAbort);
        this.running++;
        resolve({ waited: true });
      };
      const onAbort = () => {
        const i = this.waiting.indexOf(grant);
        if (i >= 0) this.waiting.splice(i, 1);
        reject(signal.reason as Error);
      };
      this.waiting.push(grant);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  release(): void {
    this.running--;
    const next = this.waiting.shift();
    if (next) next();
  }
}
