/** The proxy's per-IP connection cap (the bad-token back-off is tested in shared-fixed-window). */
import { describe, expect, it } from 'vitest';
import { ConnectionCounter } from '../../controller/proxy/ip-limits.js';

describe('ConnectionCounter', () => {
  it('caps each IP separately and frees slots on release', () => {
    const c = new ConnectionCounter(2);
    expect([c.acquire('a'), c.acquire('a'), c.acquire('a'), c.acquire('b')]).toEqual([true, true, false, true]);
    c.release('a');
    expect(c.acquire('a')).toBe(true);
  });
});
