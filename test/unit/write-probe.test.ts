/**
 * GET /readyz's store-write check, shared (controller/api/write-probe.ts): a flood of unauthenticated /readyz costs
 * at most one durable write per TTL, and every caller still gets the store's real answer. The check is a counting
 * function and the clock a variable: the class holds no I/O of its own (the real write is exercised through /readyz
 * in test/faults/store-disk.test.ts).
 */
import { describe, expect, it } from 'vitest';
import { WriteProbe } from '../../controller/api/write-probe.js';

function probe(ttlMs: number, outcome: () => Error | null = () => null) {
  let now = 1_000_000;
  let writes = 0;
  const p = new WriteProbe(async () => {
    writes += 1;
    await new Promise((resolve) => setImmediate(resolve));
    const err = outcome();
    if (err) throw err;
  }, ttlMs, () => now);
  return { p, writes: () => writes, advance: (ms: number) => { now += ms; } };
}

describe('the /readyz write check', () => {
  it('makes one write for 200 callers at the same moment, and all of them hear it succeeded', async () => {
    const t = probe(1000);
    const results = await Promise.allSettled(Array.from({ length: 200 }, () => t.p.run()));
    expect(results.every((r) => r.status === 'fulfilled')).toBe(true);
    expect(t.writes()).toBe(1);
  });

  it('reuses an answer for the TTL and writes again after it', async () => {
    const t = probe(1000);
    await t.p.run();
    t.advance(999);
    await t.p.run();
    expect(t.writes()).toBe(1);
    t.advance(1);
    await t.p.run();
    expect(t.writes()).toBe(2);
  });

  it('gives every caller the store\'s error while it lasts, and sees the store recover after the TTL', async () => {
    let broken: Error | null = new Error('database or disk is full');
    const t = probe(500, () => broken);
    const results = await Promise.allSettled([t.p.run(), t.p.run(), t.p.run()]);
    expect(results.map((r) => (r.status === 'rejected' ? (r.reason as Error).message : 'ok')))
      .toEqual(Array(3).fill('database or disk is full'));
    expect(t.writes()).toBe(1);
    broken = null;
    await expect(t.p.run()).rejects.toThrow('database or disk is full');
    t.advance(500);
    await expect(t.p.run()).resolves.toBeUndefined();
    expect(t.writes()).toBe(2);
  });

  it('with a TTL of 0 writes on every call', async () => {
    const t = probe(0);
    for (let i = 0; i < 5; i++) await t.p.run();
    expect(t.writes()).toBe(5);
  });
});
