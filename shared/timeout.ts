/**
 * `p`, or a rejection with `onTimeout()` if `p` has not settled within `ms`. The timer is cleared either way, so
 * nothing keeps the process alive or fires late. `p` keeps running: the caller decides what its late end means.
 */
export function withTimeout<T>(p: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms);
  });
  return Promise.race([p, timedOut]).finally(() => clearTimeout(timer));
}
