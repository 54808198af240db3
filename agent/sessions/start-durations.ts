/**
 * How long a desktop start takes on this blade now: the median of the last few that succeeded within the last
 * minute, from the moment the start got its slot to the moment it answered.
 *
 * Why: a start that waited for its slot and gets it with less time left than a start takes would be abandoned
 * part-way, its Xvnc killed at the deadline. Under a burst beyond a blade's means every queued start reaches its slot
 * late, most of them ran out of time after spawning, and the blade spent its CPU on desktops nobody received
 * (measured: 200 concurrent POSTs over four 2-core blades brought up 0.24 desktops/s while users retried, against
 * about 1/s in the first 30 s). Refused at the slot instead, such a start costs nothing and frees the slot for a call
 * with time to finish. Only starts that waited are judged: one that finds a free slot runs whatever the history says,
 * so an estimate from a past burst can never refuse every start on an idle blade, and old samples expire.
 */
export class StartDurations {
  private readonly recent: { ms: number; at: number }[] = [];

  /**
   * `window`: how many recent starts count; `minSamples`: below this many, no estimate (nothing is refused);
   * `maxAgeMs`: older samples no longer count.
   */
  constructor(private readonly window = 16, private readonly minSamples = 4, private readonly maxAgeMs = 60_000) {}

  add(ms: number, now = Date.now()): void {
    this.recent.push({ ms, at: now });
    if (this.recent.length > this.window) this.recent.shift();
  }

  /** The median of the recent starts, in ms, or undefined while there are too few to tell. */
  typicalMs(now = Date.now()): number | undefined {
    const fresh = this.recent.filter((s) => now - s.at <= this.maxAgeMs).map((s) => s.ms);
    if (fresh.length < this.minSamples) return undefined;
    fresh.sort((a, b) => a - b);
    return fresh[Math.floor(fresh.length / 2)];
  }
}
