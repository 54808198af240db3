/**
 * `npm run bench:status`: how quickly a blade agent answers GetStatus (what the controller's health checks call)
 * while it starts 50 desktops at once, against the same agent idle in the same run. Real agent process, mTLS, real
 * Xvnc and session scripts. A probe calls GetStatus every 20 ms over one connection; the idle phase is the
 * reference, the burst phase lasts until every StartSession has answered. The agent's own event-loop delay (its
 * Prometheus nodejs_eventloop_lag_* series) is printed beside it, so a slow answer can be told from a blocked loop.
 * The agent gets a start budget long enough for all 50 to finish on a loaded machine: the figure is GetStatus during
 * the starts, not whether they fit the default budget. Users vdload201..vdload250 (created if missing). Every
 * desktop is stopped afterwards.
 */
import { cpus, loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { agentClient, call, endDesktop, startAgent, type AgentClient } from '../helpers/agent-process.js';
import { makePki } from '../helpers/certs.js';
import { ensureLoadUsers } from '../helpers/users.js';

const STARTS = 50;
const IDLE_MS = 4_000;
const PROBE_EVERY_MS = 20;

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}
const fmt = (ms: number) => `${ms.toFixed(1)} ms`;

/** Calls GetStatus every PROBE_EVERY_MS until `until` resolves; returns each call's latency. */
async function probe(client: AgentClient, until: Promise<unknown>): Promise<number[]> {
  let done = false;
  void until.finally(() => { done = true; });
  const out: number[] = [];
  while (!done) {
    const t0 = performance.now();
    await call(client, client.getStatus, {}, 30_000);
    out.push(performance.now() - t0);
    await new Promise((r) => setTimeout(r, PROBE_EVERY_MS));
  }
  return out;
}

function describe(xs: number[]): string {
  const s = [...xs].sort((a, b) => a - b);
  return `n=${s.length} p50 ${fmt(percentile(s, 50))}  p99 ${fmt(percentile(s, 99))}  max ${fmt(s[s.length - 1]!)}`;
}

/** The agent's event-loop lag series from its /metrics, in ms. */
async function loopLag(metricsUrl: string): Promise<string> {
  const text = await (await fetch(metricsUrl)).text();
  const get = (name: string) => Number(new RegExp(`^vncdispatch_agent_nodejs_eventloop_lag_${name}_seconds (\\S+)`, 'm')
    .exec(text)?.[1] ?? NaN) * 1000;
  return `event-loop delay in this phase: p99 ${fmt(get('p99'))}, max ${fmt(get('max'))}`;
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('run as root: the benchmark starts desktops as test users');
  const users = ensureLoadUsers(STARTS, 201);
  const load = () => loadavg().map((x) => x.toFixed(2)).join(' ');
  console.log(`load average before: ${load()} (${cpus().length} CPUs); other work on the machine inflates both phases`);
  const pki = makePki();
  const agent = await startAgent({ pki, args: ['--max-sessions', String(STARTS + 10),
    '--metrics-listen', '127.0.0.1:0', '--start-timeout-ms', '90000'] });
  const metricsLine = agent.logs.map((l) => /"metricsAddress":"([^"]+)"/.exec(l)?.[1]).find(Boolean);
  const metricsUrl = `http://${metricsLine}/metrics`;
  const client = agentClient(agent.address, pki);
  const starter = agentClient(agent.address, pki);
  const started: { id: string; pid: number }[] = [];
  try {
    await call(client, client.getStatus, {});
    await loopLag(metricsUrl); // each scrape resets the agent's histogram: the phases start here
    const idle = await probe(client, new Promise((r) => setTimeout(r, IDLE_MS)));
    console.log(`idle agent  GetStatus: ${describe(idle)}; ${await loopLag(metricsUrl)}`);

    const t0 = performance.now();
    const burst = Promise.allSettled(users.map(async (username, i) => {
      const r = await call(starter, starter.startSession, { username, password: `pw${String(i).padStart(6, '0')}` }, 120_000);
      started.push({ id: r.session!.id, pid: r.session!.pid });
    }));
    const busy = await probe(client, burst);
    const results = await burst;
    const wall = (performance.now() - t0) / 1000;
    const failed = results.filter((r) => r.status === 'rejected').map((r) => String((r).reason));
    console.log(`${STARTS} concurrent StartSession: ${started.length} desktops in ${wall.toFixed(1)} s` +
      (failed.length ? `; ${failed.length} failed: ${JSON.stringify(failed.slice(0, 3))}` : ''));
    console.log(`busy agent  GetStatus: ${describe(busy)}; ${await loopLag(metricsUrl)}`);
    const sIdle = [...idle].sort((a, b) => a - b);
    const sBusy = [...busy].sort((a, b) => a - b);
    const p99 = percentile(sBusy, 99);
    console.log(`ratio (busy p99 / idle p99): ${(p99 / percentile(sIdle, 99)).toFixed(1)}x` +
      `  [target: busy p99 <= 200 ms: ${p99 <= 200 ? 'met' : 'NOT met'}]`);
    console.log(`load average after: ${load()}`);
  } finally {
    await Promise.all(started.map((s) => endDesktop(starter, s)));
    client.close();
    starter.close();
    await agent.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
