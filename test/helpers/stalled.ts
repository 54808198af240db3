/**
 * Backpressure tests: a flow (bytes written, bytes delivered) has stalled once its counter stops moving. There is no
 * event for "nothing more will come", so the counter is watched until it has not changed for a while.
 */

/** Resolves once `value()` has not changed for `quietMs` (the flow has stalled), with that value. */
export async function stalled(value: () => number, quietMs = 600): Promise<number> {
  let last = value();
  let since = Date.now();
  for (;;) {
    await new Promise((r) => setTimeout(r, 50));
    const v = value();
    if (v !== last) {
      last = v;
      since = Date.now();
    } else if (Date.now() - since >= quietMs) return v;
  }
}
