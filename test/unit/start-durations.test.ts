import { describe, expect, it } from 'vitest';
import { StartDurations } from '../../agent/sessions/start-durations.js';

describe('StartDurations', () => {
  it('gives no estimate until it has seen enough starts, then the median of the recent ones', () => {
    const d = new StartDurations(4, 3);
    d.add(100);
    d.add(300);
    expect(d.typicalMs()).toBeUndefined();
    d.add(200);
    expect(d.typicalMs()).toBe(200);
    // Only the last four count: the early fast starts age out.
    for (const ms of [900, 1000, 1100, 1200]) d.add(ms);
    expect(d.typicalMs()).toBe(1100);
  });

  it('forgets starts older than its age limit, so a past burst stops counting', () => {
    const d = new StartDurations(16, 2, 60_000);
    d.add(9000, 0);
    d.add(9500, 1000);
    expect(d.typicalMs(30_000)).toBe(9500);
    expect(d.typicalMs(61_500)).toBeUndefined();
  });
});
