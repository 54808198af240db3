/**
 * How long a desktop start takes on this blade now: the median of the last few that succeeded, from the moment the
 * start got its slot to the moment it answered.
 *
 * Why: a start that gets its slot with less time left than a start takes will be abandoned part-way, its Xvnc killed
 * at the deadline. Under a burst that beyond a blade's means, every start reaches its slot late, most of them run out
 * of time after spawning, and the blade spends its CPU on desktops nobody receives (measured: 200 concurrent POSTs
 * over four 2-core blades brought up 0.24 desktops/s while users retried, against about 1/s in the first 30 s).
 * Refused at the slot instead, such a start costs nothing and frees the slot for a call with time to finish.
 */
export class StartDurations {
  private readonly recent: number[] = [];

  /** `window`: how many recent starts count; `minSamples`: below this many, no estimate (nothing is refused). */
  constructor(private readonly window = 16, private readonly minSamples = 4) {}

  add(ms: number): void {
    this.recent.push(ms);
    if (this.recent.length > this.window) this.recent.shift();
  }

  /** The median of the recent starts, in ms, or undefined while there are too few to tell. */
  typicalMs(): number | undefined {
    if (this.recent.length < this.minSamples) return undefined;
    const sorted = [...this.recent].sort((a, b) => a - b);
    return sorted[Math.floor(sorted.length / 2)];
  }
}
