import { createServer, connect, type Socket } from 'node:net';
import { once } from 'node:events';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { HealthMonitor, type HealthChange } from '../../controller/blades/health.js';

/** A probe the test controls: answers, fails fast (connection refused) or hangs (frozen host). */
function controllableProbe() {
  let mode: 'ok' | 'fail' | 'hang' = 'ok';
  return {
    set: (m: typeof mode) => (mode = m),
    probe: () => (mode === 'ok' ? Promise.resolve('status') : mode === 'fail'
      ? Promise.reject(new Error('connect ECONNREFUSED')) : new Promise<string>(() => {})),
  };
}

describe('HealthMonitor (fake timers)', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  function monitor(p: ReturnType<typeof controllableProbe>, intervalMs = 1000, downAfterMs = 2500) {
    const m = new HealthMonitor({ probe: p.probe, intervalMs, downAfterMs, now: () => Date.now() });
    const changes: (HealthChange & { at: number })[] = [];
    m.on('change', (c) => changes.push({ ...c, at: Date.now() }));
    return { m, changes };
  }

  it('goes UNKNOWN -> UP on the first answer', async () => {
    const p = controllableProbe();
    const { m, changes } = monitor(p);
    expect(m.state).toBe('UNKNOWN');
    m.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(m.state).toBe('UP');
    expect(changes.map((c) => c.to)).toEqual(['UP']);
    m.stop();
  });

  it('a blade that never answers is DOWN, not UP', async () => {
    const p = controllableProbe();
    p.set('fail');
    const { m } = monitor(p);
    m.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(m.state).toBe('DOWN');
    m.stop();
  });

  for (const failure of ['fail', 'hang'] as const) {
    it(`with default timings, a blade whose probes ${failure === 'fail' ? 'fail' : 'hang'} is DOWN within 3 s of dying, and UP again when it answers`, async () => {
      const p = controllableProbe();
      const { m, changes } = monitor(p);
      m.start();
      await vi.advanceTimersByTimeAsync(10_000);
      expect(m.state).toBe('UP');
      // The worst moment to die is just after an answer: the last success is as late as it can be.
      await vi.advanceTimersByTimeAsync(999);
      const diedAt = Date.now();
      p.set(failure);
      await vi.advanceTimersByTimeAsync(2_999);
      expect(m.state).toBe('DOWN');
      const down = changes.find((c) => c.to === 'DOWN')!;
      expect(down.at - diedAt).toBeLessThanOrEqual(3_000);
      expect(down.reason).toMatch(/no answer for 2500 ms/);
      p.set('ok');
      await vi.advanceTimersByTimeAsync(1_000);
      expect(m.state).toBe('UP');
      expect(changes.map((c) => c.to)).toEqual(['UP', 'DOWN', 'UP']);
      m.stop();
    });
  }

  it('one lost probe does not flap an UP blade', async () => {
    const p = controllableProbe();
    const { m, changes } = monitor(p);
    m.start();
    await vi.advanceTimersByTimeAsync(3_000);
    p.set('fail');
    await vi.advanceTimersByTimeAsync(1_000);
    p.set('ok');
    await vi.advanceTimersByTimeAsync(5_000);
    expect(changes.map((c) => c.to)).toEqual(['UP']);
    m.stop();
  });

  it('an explicit NOT_SERVING (definitive failure) is DOWN at once', async () => {
    const p = controllableProbe();
    const { m } = monitor(p);
    m.start();
    await vi.advanceTimersByTimeAsync(0);
    m.failure('health NOT_SERVING', true);
    expect(m.state).toBe('DOWN');
    m.stop();
  });

  it('does not pile up probes when they hang: one at a time, each abandoned after its timeout', async () => {
    let calls = 0;
    const m = new HealthMonitor({
      probe: () => { calls++; return new Promise(() => {}); }, intervalMs: 100, downAfterMs: 300, probeTimeoutMs: 1000,
    });
    m.start();
    await vi.advanceTimersByTimeAsync(5_000);
    expect(calls).toBeGreaterThanOrEqual(4);
    expect(calls).toBeLessThanOrEqual(6);
    expect(m.state).toBe('DOWN');
    m.stop();
  });

  it('a TTL the controller fires late (its own event loop held up) is no verdict: a blade that answers then stays UP, a silent one is DOWN on the next on-time check', async () => {
    const p = controllableProbe();
    const { m, changes } = monitor(p);
    m.start();
    await vi.advanceTimersByTimeAsync(0);
    p.set('fail');
    await vi.advanceTimersByTimeAsync(2_400);
    // The controller stalls for a second across the TTL's due time: the clock moves, no timer runs, and the blade's
    // answer waits to be read.
    vi.setSystemTime(Date.now() + 1_000);
    p.set('ok');
    await vi.advanceTimersByTimeAsync(100);
    expect(m.state).toBe('UP');
    // Silent from now on, with a controller on time: DOWN within --down-after-ms plus a probe interval.
    p.set('fail');
    await vi.advanceTimersByTimeAsync(3_500);
    expect(m.state).toBe('DOWN');
    expect(changes.map((c) => c.to)).toEqual(['UP', 'DOWN']);
    m.stop();
  });

  it('rejects timings that would flap', () => {
    expect(() => new HealthMonitor({ probe: async () => 1, intervalMs: 1000, downAfterMs: 1000 })).toThrow(TypeError);
  });
});

describe('HealthMonitor (real timers and a real socket)', () => {
  it('an answer that reached the socket while the loop was held up is heard before the TTL decides, even when the hold ends just before the TTL is due', async () => {
    // The blade is a TCP peer that answers each probe line when told to; the controller's held-up loop is a busy wait
    // in this process. Nothing is mocked: the answer sits in the kernel's socket buffer, as a real agent's would.
    let answer: (() => void) | null = null;
    const server = createServer((s) => s.on('data', () => { answer = () => s.write('ok\n'); }));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const client: Socket = connect((server.address() as { port: number }).port, '127.0.0.1');
    await once(client, 'connect');
    const probe = () => new Promise<string>((resolve) => {
      client.once('data', () => resolve('status'));
      client.write('status?\n');
    });
    const m = new HealthMonitor({ probe, intervalMs: 1000, downAfterMs: 2500 });
    const changes: string[] = [];
    m.on('change', (c) => changes.push(c.to));
    // The first probe is answered at once: UP, and the TTL is due 2.5 s later.
    m.start();
    await vi.waitUntil(() => answer !== null);
    answer!();
    await vi.waitUntil(() => m.state === 'UP');
    const due = m.lastSeen! + 2500;
    answer = null;
    // The next probe (1 s later) goes unanswered until 400 ms before the TTL is due; then the blade answers while the
    // loop is held up until 50 ms past the due time: late by less than a stall, so on time as far as the TTL knows.
    await vi.waitUntil(() => answer !== null, { timeout: 2000 });
    await new Promise((r) => setTimeout(r, Math.max(0, due - 400 - Date.now())));
    expect(Date.now(), 'the machine was too slow to set up the scenario').toBeLessThan(due - 100);
    answer!();
    while (Date.now() < due + 50) { /* the controller's loop, held up */ }
    await new Promise((r) => setTimeout(r, 300));
    expect(changes).toEqual(['UP']);
    expect(m.state).toBe('UP');
    m.stop();
    client.destroy();
    server.close();
  });
});
