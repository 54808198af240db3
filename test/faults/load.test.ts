/**
 * Load, with real processes: concurrent dispatches over four agents (real Xvnc), and a controller with hundreds of
 * registered blades, most of them dead. What a user would notice is asserted (every user ends with exactly one
 * desktop, no healthy blade is called DOWN, dispatch still works beside the dead blades); the figures
 * (throughput, GetStatus p99 under load, controller CPU and memory) are printed for docs/RELIABILITY.md, never
 * asserted. Short (npm test): 10 users and 100 blades. `npm run test:faults` (VD_FAULTS=full): 200 vdload users
 * and 500 blades. Users vdtest91..vdtest100 (short).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { agentClient, call, endDesktop, startAgent, type AgentProcess } from '../helpers/agent-process.js';
import { makePki, type Pki } from '../helpers/certs.js';
import { api, waitForBladeStates } from '../helpers/controller-checks.js';
import { startController, type ControllerProcess } from '../helpers/controller-process.js';
import { freeLoopbackPort } from '../helpers/ports.js';
import { checkInvariants, rssBytes } from '../helpers/invariants.js';
import { postUntilServed } from '../helpers/portal-retry.js';
import { cpuSeconds, eventLoopLagMs, mainThreadSched } from '../helpers/process-figures.js';
import { ensureLoadUsers, testUser } from '../helpers/users.js';

const FULL = process.env.VD_FAULTS === 'full';
const SHORT_USERS = Array.from({ length: 10 }, (_, i) => testUser(91 + i));
let users: string[];

let pki: Pki;
const agents: AgentProcess[] = [];
const controllers: ControllerProcess[] = [];


const agentMetricsUrls: string[] = [];

/** The largest event-loop delay since the last scrape of `url` (prom-client resets it on each scrape), in ms. */
async function loopLagMaxMs(url: string, prefix: string): Promise<number> {
  return eventLoopLagMs(await (await fetch(url)).text(), prefix, 'max');
}

const percentile = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? NaN;
};

beforeAll(async () => {
  pki = makePki();
  users = FULL ? ensureLoadUsers(200) : SHORT_USERS;
  for (let i = 0; i < 4; i++) {
    const metricsPort = await freeLoopbackPort();
    agents.push(await startAgent({ pki, args: ['--max-sessions', '60', '--metrics-listen', `127.0.0.1:${metricsPort}`] }));
    agentMetricsUrls.push(`http://127.0.0.1:${metricsPort}/metrics`);
  }
}, 300_000);

afterEach(async () => {
  for (const c of controllers.splice(0)) await c.stop('SIGKILL').catch(() => {});
  // Every agent's leftovers at once, each agent's a few at a time: one by one, 200 desktops outlast any hook timeout.
  await Promise.all(agents.map(async (a) => {
    const client = agentClient(a.address, pki);
    const left = await call(client, client.listSessions, {}, 20_000).catch(() => ({ sessions: [] }));
    const mine = left.sessions.filter((s) => users.includes(s.username));
    await Promise.all(Array.from({ length: 4 }, async () => {
      for (let s = mine.pop(); s; s = mine.pop()) await endDesktop(client, s).catch(() => {});
    }));
    client.close();
  }));
}, FULL ? 600_000 : 120_000);

afterAll(async () => {
  for (const a of agents) await a.stop().catch(() => {});
});

describe('load', () => {
  it(`concurrent dispatches over 4 agents: every user gets one desktop, and no healthy blade is marked DOWN`, async () => {
    const live = agents.map((a, i) => ({ name: `l${i + 1}`, address: a.address }));
    // The controller gets its CPU as on a machine of its own (the agents raise themselves with --agent-nice). Its
    // group at nice -10 was not enough beside 200 desktops each in a group of its own: its main thread waited for a
    // CPU 14.3 s of a 33.3 s burst, its event loop was held up to 1.9 s, and all four blades went DOWN in the same
    // 11 ms (their GetStatus answers waiting behind the controller's own loop) in 2 of 3 runs.
    const c = await startController({ pki, blades: live, args: ['--reconcile-interval-ms', '2000'], ownCpuGroupNice: -20 });
    controllers.push(c);
    await waitForBladeStates(c, Object.fromEntries(live.map((b) => [b.name, 'UP'])));
    const baseline = rssBytes(c.pid)!;

    // GetStatus latency from outside, on every agent, all through the burst (the agent's side of "health reflects
    // reachability": it must keep answering while it starts desktops).
    const statusMs: number[] = [];
    let probing = true;
    const probes = agents.map(async (a) => {
      const client = agentClient(a.address, pki);
      while (probing) {
        const t0 = performance.now();
        await call(client, client.getStatus, {}, 10_000).then(() => statusMs.push(performance.now() - t0), () => statusMs.push(10_000));
        await new Promise((r) => setTimeout(r, 50));
      }
      client.close();
    });

    // Whether a blade that misses its health deadline was itself starved, or the controller was: each one's wait for
    // a CPU and its largest event-loop delay over the burst.
    const pids = [c.pid, ...agents.map((a) => a.pid)];
    await Promise.all([loopLagMaxMs(`${c.url}/metrics`, 'vncdispatch_controller'),
      ...agentMetricsUrls.map((u) => loopLagMaxMs(u, 'vncdispatch_agent'))]);
    const sched0 = pids.map(mainThreadSched);
    const t0 = performance.now();
    const postMs: number[] = [];
    const results = await Promise.all(users.map(async (username) => {
      const s0 = performance.now();
      const r = await api(c, 'POST', '/api/v1/sessions', { username });
      if (r.status === 201) postMs.push(performance.now() - s0);
      return r;
    }));
    const elapsed = (performance.now() - t0) / 1000;
    const lags = await Promise.all([loopLagMaxMs(`${c.url}/metrics`, 'vncdispatch_controller'),
      ...agentMetricsUrls.map((u) => loopLagMaxMs(u, 'vncdispatch_agent'))]);
    const waits = pids.map((pid, i) => {
      const now = mainThreadSched(pid);
      return `${i === 0 ? 'controller' : `agent l${i}`} ran ${(now.ran - sched0[i]!.ran).toFixed(0)} ms, waited for a CPU `
        + `${(now.waited - sched0[i]!.waited).toFixed(0)} ms, event-loop delay max ${lags[i]!.toFixed(0)} ms`;
    });
    console.log(`[figures] main threads over the burst of ${elapsed.toFixed(1)} s: ${waits.join('; ')}`);
    probing = false;
    await Promise.all(probes);
    const created = results.filter((r) => r.status === 201).length;
    const codes = results.filter((r) => r.status !== 201).reduce<Record<string, number>>((m, r) => {
      const k = `${r.status} ${r.body?.error?.code}`;
      return { ...m, [k]: (m[k] ?? 0) + 1 };
    }, {});
    console.log(`[figures] ${users.length} concurrent POSTs over 4 agents: ${created} × 201 in ${elapsed.toFixed(1)} s `
      + `(${(created / elapsed).toFixed(2)} desktops/s; POST → 201 p50 ${percentile(postMs, 50).toFixed(0)} ms, p99 `
      + `${percentile(postMs, 99).toFixed(0)} ms); others: ${JSON.stringify(codes)}; GetStatus p50 `
      + `${percentile(statusMs, 50).toFixed(0)} ms, p99 ${percentile(statusMs, 99).toFixed(0)} ms, max `
      + `${Math.max(...statusMs).toFixed(0)} ms over ${statusMs.length} calls`);
    const down = c.logs.filter((l) => l.includes('"msg":"blade DOWN"'));
    if (down.length > 0) console.log(`[figures] blades marked DOWN during the burst:\n${down.join('\n')}`);
    expect(down, 'healthy blades marked DOWN').toEqual([]);
    // Whatever the first answers were, retrying as a portal would (after each 503's Retry-After) gives every user
    // their desktop. On 2 cores the first 30 s serve about 45 users and the retries the rest in three to four minutes
    // (measured); what must never happen is a user whose retries can no longer succeed.
    const r0 = performance.now();
    const deadline = r0 + (FULL ? 720_000 : 90_000);
    const tally: Record<string, number> = {};
    let mostTries = 0;
    const retried = await Promise.all(users.map((username) => postUntilServed(c, username, deadline, (r, tries) => {
      const k = `${r.status} ${r.body?.error?.code ?? ''}`.trim();
      tally[k] = (tally[k] ?? 0) + 1;
      mostTries = Math.max(mostTries, tries);
    })));
    const served = retried.filter((r) => r.status === 200 || r.status === 201).length;
    console.log(`[figures] the retries (each after the 503's Retry-After): ${JSON.stringify(tally)}; ${served} of `
      + `${users.length} users served after ${((performance.now() - r0) / 1000).toFixed(1)} s, at most ${mostTries} tries; load `
      + `${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`);
    expect(retried.filter((r) => r.status !== 200 && r.status !== 201).map((r) => r.text)).toEqual([]);
    await checkInvariants({ controller: c, users, dataDir: c.dataDir });
    // Delete everything: every desktop stops.
    const all = (await api(c, 'GET', '/api/v1/sessions?state=live&limit=1000')).body.sessions as { id: string }[];
    await Promise.all(all.map((s) => api(c, 'DELETE', `/api/v1/sessions/${s.id}`)));
    await checkInvariants({ controller: c, users, dataDir: c.dataDir, rss: { pid: c.pid, baseline } });
  }, FULL ? 1_200_000 : 180_000);

  it(`with ${FULL ? 500 : 100} registered blades, most of them dead, the live ones serve and the controller stays light`, async () => {
    const count = FULL ? 500 : 100;
    const dir = mkdtempSync(join(tmpdir(), 'vd-blades-'));
    const file = join(dir, 'blades.json');
    const dead = [];
    for (let i = 0; i < count - agents.length; i++) dead.push({ name: `dead${i}`, address: `127.0.0.1:${await freeLoopbackPort()}` });
    const live = agents.map((a, i) => ({ name: `live${i + 1}`, address: a.address }));
    writeFileSync(file, JSON.stringify([...live, ...dead]));
    const c = await startController({ pki, args: ['--blades-file', file] });
    controllers.push(c);
    await waitForBladeStates(c, Object.fromEntries([...live.map((b) => [b.name, 'UP']), ...dead.slice(0, 5).map((b) => [b.name, 'DOWN'])]), 20_000);
    await expect.poll(async () => (await api(c, 'GET', '/api/v1/blades')).body.blades
      .filter((b: { state: string }) => b.state === 'DOWN').length, { timeout: 20_000 }).toBe(dead.length);

    const cpu0 = cpuSeconds(c.pid);
    const w0 = performance.now();
    await new Promise((r) => setTimeout(r, FULL ? 30_000 : 5_000));
    const cpu = (cpuSeconds(c.pid) - cpu0) / ((performance.now() - w0) / 1000);
    const rss = rssBytes(c.pid)!;
    const r = await api(c, 'POST', '/api/v1/sessions', { username: users[0] });
    expect(r.status).toBe(201);
    expect(live.map((b) => b.name)).toContain(r.body.blade);
    expect((await fetch(`${c.url}/readyz`)).status).toBe(200);
    console.log(`[figures] ${count} blades (${dead.length} dead): controller CPU ${(cpu * 100).toFixed(1)} % of one core, `
      + `RSS ${(rss / 2 ** 20).toFixed(0)} MiB`);
    await api(c, 'DELETE', `/api/v1/sessions/${r.body.id}`);
    await checkInvariants({ controller: c, users: [users[0]!], dataDir: c.dataDir });
    rmSync(dir, { recursive: true, force: true });
  }, FULL ? 300_000 : 90_000);
});
