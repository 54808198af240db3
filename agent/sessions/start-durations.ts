/**
 * How long a desktop start takes on this blade now: the median of the last few that succeeded within the last
 * minute, from the moment the start got its slot to the moment it answered.
 *
 * Why: a start that waited for its slot and gets it with less time left than a start takes would be abandoned
 * part-way, its Xvnc killed at the deadline, the CPU it used spent on a desktop nobody receives. Refused at the slot
 * instead, it costs nothing, frees the slot for a call with time to finish, and its caller hears at once that this
 * blade is too slow for it now. (In the 200-POST load test the refusal did not raise the rate at which users got
 * desktops while they retried, 0.21-0.22 desktops/s against 0.21-0.24 before: wasted starts were not what limited
 * it there.) Only starts that waited are judged: one that finds a free slot runs whatever the history says, so an
 * estimate from a past burst can never refuse every start on an idle blade, and old samples expire.
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
