/**
 * `p`, or a rejection with `onTimeout()` if `p` has not settled within `ms`. The timer is cleared either way, so
 * nothing keeps the process alive or fires late. `p` keeps running: the caller decides what its late end means.
 *
 * `afterPendingIo`: the timeout counts only at the end of the loop turn in which it falls due (setImmediate runs after
 * the poll phase). Node runs due timers before it polls for I/O, so after the loop was held up a plain timeout fires
 * before an answer already waiting in a socket is read; a caller whose verdict must not blame the other side for its
 * own stall (a health probe) asks for this.
 */
export function withTimeout<T>(p: Promise<T>, ms: number, onTimeout: () => Error,
  options: { afterPendingIo?: boolean } = {}): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  let immediate: NodeJS.Immediate | undefined;
  const timedOut = new Promise<never>((_resolve, reject) => {
    const fire = () => reject(onTimeout());
    timer = setTimeout(options.afterPendingIo ? () => { immediate = setImmediate(fire); } : fire, ms);
  });
  return Promise.race([p, timedOut]).finally(() => {
    clearTimeout(timer);
    clearImmediate(immediate);
  });
}
