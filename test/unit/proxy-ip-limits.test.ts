/** Per-IP connection cap and bad-token back-off windows (time passed in explicitly, no clock). */
import { describe, expect, it } from 'vitest';
import { BadTokenBackoff, ConnectionCounter } from '../../controller/proxy/ip-limits.js';

describe('ConnectionCounter', () => {
  it('caps each IP separately and frees slots on release', () => {
    const c = new ConnectionCounter(2);
    expect([c.acquire('a'), c.acquire('a'), c.acquire('a'), c.acquire('b')]).toEqual([true, true, false, true]);
    c.release('a');
    expect(c.acquire('a')).toBe(true);
  });
});

describe('BadTokenBackoff', () => {
  it('blocks an IP at the limit until its window ends, then forgets it', () => {
    const b = new BadTokenBackoff(3, 1000);
    for (let i = 0; i < 2; i++) b.record('x', 100);
    expect(b.blockedFor('x', 100)).toBe(0);
    b.record('x', 200);
    expect(b.blockedFor('x', 300)).toBe(800);
    expect(b.blockedFor('y', 300)).toBe(0);
    expect(b.blockedFor('x', 1100)).toBe(0);
    b.record('x', 1200);
    expect(b.blockedFor('x', 1200)).toBe(0);
  });

  it('tracks a bounded number of addresses', () => {
    const b = new BadTokenBackoff(1, 60_000, 100);
    for (let i = 0; i < 1000; i++) b.record(`10.0.${i >> 8}.${i & 255}`, 0);
    expect(b.blockedFor('10.0.3.231', 1)).toBeGreaterThan(0);
    expect(b.blockedFor('10.0.0.0', 1)).toBe(0);
  });
});
