/**
 * In-process single-flight by key: concurrent callers with the same key share one run of `fn`. The store's atomic
 * reservation already guarantees one session per user across controllers; this keeps one controller from sending a
 * burst of identical requests through the store and its polling path.
 */
export class SingleFlight<T> {
  readonly #inFlight = new Map<string, Promise<T>>();

  /** Runs `fn` unless a run for `key` is in flight; `leader` tells whether this caller's `fn` ran. */
  async run(key: string, fn: () => Promise<T>): Promise<{ value: T; leader: boolean }> {
    const running = this.#inFlight.get(key);
    if (running) return { value: await running, leader: false };
    const p = fn().finally(() => this.#inFlight.delete(key));
    this.#inFlight.set(key, p);
    return { value: await p, leader: true };
  }

  get size(): number {
    return this.#inFlight.size;
  }
}
