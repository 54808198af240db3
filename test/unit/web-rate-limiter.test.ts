import { describe, expect, it } from 'vitest';
import { RateLimiter } from '../../controller/web/rate-limiter.js';

describe('RateLimiter (viewer reconnect budget per client IP)', () => {
  it('allows `limit` hits per window, refuses the rest with the time left, and starts afresh next window', () => {
    let now = 1_000_000;
    const limiter = new RateLimiter({ limit: 2, windowMs: 60_000, now: () => now });
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
    const limiter = new RateLimiter({ limit: 1, windowMs: 1_000, maxKeys: 3, now: () => now });
    for (const ip of ['1', '2', '3', '4']) limiter.hit(ip);
    // '1' was evicted to make room for '4', so it has a fresh budget; '4' has spent its own.
    expect(limiter.hit('1').allowed).toBe(true);
    expect(limiter.hit('4').allowed).toBe(false);
    now += 1_000;
    expect(limiter.hit('4').allowed).toBe(true);
  });

  it('rejects nonsense options', () => {
    expect(() => new RateLimiter({ limit: 0 })).toThrow(TypeError);
    expect(() => new RateLimiter({ windowMs: Number.NaN })).toThrow(TypeError);
  });
});
