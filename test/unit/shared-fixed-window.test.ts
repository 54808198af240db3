/** The fixed-window limiter behind the viewer's reconnect budget and the proxy's bad-token back-off. */
import { describe, expect, it } from 'vitest';
import { FixedWindowLimiter } from '../../shared/fixed-window.js';

describe('FixedWindowLimiter as a request budget (viewer reconnects per client IP)', () => {
  it('allows `limit` hits per window, refuses the rest with the time left, and starts afresh next window', () => {
    let now = 1_000_000;
    const limiter = new FixedWindowLimiter({ limit: 2, windowMs: 60_000, now: () => now });
    expect(limiter.hit('a')).toEqual({ allowed: true });
    expect(limiter.hit('a')).toEqual({ allowed: true });
    now += 15_000;
    expect(limiter.hit('a')).toEqual({ allowed: false, retryAfterMs: 45_000 });
    expect(limiter.hit('b')).toEqual({ allowed: true });
    now += 45_000;
    expect(limiter.hit('a')).toEqual({ allowed: true });
  });

  it('remembers at most maxKeys clients', () => {
    let now = 0;
    const limiter = new FixedWindowLimiter({ limit: 1, windowMs: 1_000, maxKeys: 3, now: () => now });
    for (const ip of ['1', '2', '3', '4']) limiter.hit(ip);
    // '1' was evicted to make room for '4', so it has a fresh budget; '4' has spent its own.
    expect(limiter.hit('1').allowed).toBe(true);
    expect(limiter.hit('4').allowed).toBe(false);
    now += 1_000;
    expect(limiter.hit('4').allowed).toBe(true);
  });

  it('rejects nonsense options', () => {
    expect(() => new FixedWindowLimiter({ limit: 0 })).toThrow(TypeError);
    expect(() => new FixedWindowLimiter({ windowMs: Number.NaN })).toThrow(TypeError);
  });
});

describe('FixedWindowLimiter as a back-off (refused tokens per client IP, time passed in explicitly)', () => {
  it('blocks an IP at the limit until its window ends, then forgets it', () => {
    const b = new FixedWindowLimiter({ limit: 3, windowMs: 1000 });
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
    const b = new FixedWindowLimiter({ limit: 1, windowMs: 60_000, maxKeys: 100 });
    for (let i = 0; i < 1000; i++) b.record(`10.0.${i >> 8}.${i & 255}`, 0);
    expect(b.blockedFor('10.0.3.231', 1)).toBeGreaterThan(0);
    expect(b.blockedFor('10.0.0.0', 1)).toBe(0);
  });
});
