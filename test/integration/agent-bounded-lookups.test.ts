/**
 * Whatever the agent still asks outside its own directories (NSS lookups, the home check) runs in a child process
 * with a time limit. A stand-in for a hung NFS home, without FUSE: a helper that blocks opening a FIFO nobody
 * writes to, exactly as a process blocks on a dead mount. The agent's event loop keeps running, the call fails in
 * time with an error naming the cause, and the stuck helper is killed.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runBounded, RunTimeoutError } from '../../agent/vnc/run-bounded.js';
import { alive } from '../helpers/agent-process.js';

let dir: string;
let fifo: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'vd-bounded-'));
  fifo = join(dir, 'hung');
  execFileSync('mkfifo', [fifo]);
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('a lookup that hangs', () => {
  it('is abandoned after its time limit while the event loop keeps running, and its process is killed', async () => {
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 10);
    const t0 = Date.now();
    const err = await runBounded(['cat', fifo], { timeoutMs: 300 }).catch((e: unknown) => e);
    clearInterval(ticker);
    expect(err).toBeInstanceOf(RunTimeoutError);
    expect((err as Error).message).toBe('cat did not finish within 300 ms');
    expect(Date.now() - t0).toBeLessThan(5_000);
    // The loop ran all along: a synchronous open of the FIFO would have held it for the whole wait.
    expect(ticks).toBeGreaterThan(5);
    const pids = execFileSync('sh', ['-c', `pgrep -f '^cat ${fifo}$' || true`], { encoding: 'utf8' }).trim();
    for (const p of pids.split('\n').filter(Boolean)) expect(alive(Number(p))).toBe(false);
  });

  it('is abandoned at once when its call is cancelled', async () => {
    const ac = new AbortController();
    const pending = runBounded(['cat', fifo], { timeoutMs: 60_000, signal: ac.signal }).catch((e: unknown) => e);
    setTimeout(() => ac.abort(), 50);
    expect(await pending).toBeInstanceOf(RunTimeoutError);
  });

  it('answers normally when the helper does', async () => {
    expect(await runBounded(['getent', 'passwd', 'root'], { timeoutMs: 5_000 })).toMatch(/^root:x:0:0:/);
  });
});
