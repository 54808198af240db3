/**
 * `npm run bench:status`: how quickly a blade agent answers GetStatus (what the controller's health checks call)
 * while it starts 50 desktops at once, against the same agent idle in the same run. Real agent process, mTLS, real
 * Xvnc and session scripts. A probe calls GetStatus every 20 ms over one connection; the idle phase is the
 * reference, the burst phase lasts until every StartSession has answered. The agent's own event-loop delay (its
 * Prometheus nodejs_eventloop_lag_* series) is printed beside it, so a slow answer can be told from a blocked loop.
 * The agent gets a start budget long enough for all 50 to finish on a loaded machine: the figure is GetStatus during
 * the starts, not whether they fit the default budget. Users vdload201..vdload250 (created if missing). Every
 * desktop is stopped afterwards.
 *
 * Beside each phase it prints how long the agent's main thread ran and how long it waited for a CPU
 * (/proc/PID/task/PID/schedstat): a slow GetStatus with a thread that mostly waited is CPU starvation, one with a
 * thread that mostly ran is work on the event loop. Extra arguments go to the agent, so another configuration can be
 * measured by the same build, e.g. `node dist/test/bench/status.js --agent-nice 0`.
 *
 * The probe stands in for a controller, which runs on its own machine: here it shares the CPUs with the 50 desktops,
 * and its own wait for a CPU would be counted as the agent's. So the bench runs in a session of its own at the
 * agent's priority (agent/priority.ts, default --agent-nice), as the agent does (test/helpers/agent-process.ts), and
 * prints how long its own thread waited beside the agent's.
 *
 * Beside GetStatus it times HTTP/2 PINGs on a connection of their own: what the controller's gRPC keepalive waits for
 * (--agent-keepalive-timeout-ms) before it drops a connection as dead, and so what tells a busy blade from an
 * unreachable one in its health (controller/blades/registry.ts).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect as http2Connect, type ClientHttp2Session } from 'node:http2';
import { cpus, loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { defaults } from '../../agent/config.js';
import { leadsItsSession, raiseOwnPriority } from '../../agent/priority.js';
import { agentClient, call, endDesktop, startAgent, type AgentClient } from '../helpers/agent-process.js';
import { makePki } from '../helpers/certs.js';
import { eventLoopLagMs, mainThreadSched } from '../helpers/process-figures.js';
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

/** Sends an HTTP/2 PING every PROBE_EVERY_MS until `until` resolves; returns each PING's round trip. */
async function pingProbe(session: ClientHttp2Session, until: Promise<unknown>): Promise<number[]> {
  let done = false;
  void until.finally(() => { done = true; });
  const out: number[] = [];
  while (!done) {
    out.push(await new Promise<number>((resolve, reject) => {
      session.ping((err, ms) => (err ? reject(err) : resolve(ms)));
    }));
    await new Promise((r) => setTimeout(r, PROBE_EVERY_MS));
  }
  return out;
}

function describe(xs: number[]): string {
  const s = [...xs].sort((a, b) => a - b);
  return `n=${s.length} p50 ${fmt(percentile(s, 50))}  p99 ${fmt(percentile(s, 99))}  max ${fmt(s[s.length - 1]!)}`;
}

/** What the agent's main thread did between two schedstat readings over `wallMs`. */
function schedLine(a: { ran: number; waited: number }, b: { ran: number; waited: number }, wallMs: number): string {
  return `agent main thread ran ${fmt(b.ran - a.ran)}, waited for a CPU ${fmt(b.waited - a.waited)} of ${fmt(wallMs)}`;
}

/** The agent's event-loop lag series from its /metrics, in ms. */
async function loopLag(metricsUrl: string): Promise<string> {
  const text = await (await fetch(metricsUrl)).text();
  const get = (stat: string) => eventLoopLagMs(text, 'vncdispatch_agent', stat);
  return `event-loop delay in this phase: p99 ${fmt(get('p99'))}, max ${fmt(get('max'))}`;
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('run as root: the benchmark starts desktops as test users');
  if (!leadsItsSession()) {
    // Once, into a session of its own (setsid(1) execs in place: this process is no group leader).
    const r = spawnSync('setsid', [process.execPath, ...process.argv.slice(1)], { stdio: 'inherit' });
    process.exit(r.status ?? 1);
  }

  const users = ensureLoadUsers(STARTS, 201);
  const load = () => loadavg().map((x) => x.toFixed(2)).join(' ');
  console.log(`load average before: ${load()} (${cpus().length} CPUs); other work on the machine inflates both phases`);
  const pki = makePki();
  const extra = process.argv.slice(2);
  if (extra.length) console.log(`agent flags added: ${extra.join(' ')}`);
  const agent = await startAgent({ pki, args: ['--max-sessions', String(STARTS + 10),
    '--metrics-listen', '127.0.0.1:0', '--start-timeout-ms', '90000', ...extra] });
  // After the agent has started, so that the agent starts at the ordinary priority, as under systemd.
  const probePriority = raiseOwnPriority(defaults.agentNice);
  console.log(`probe (the controller's stand-in): nice ${probePriority.nice}, autogroup ${probePriority.group}`);
  const metricsLine = agent.logs.map((l) => /"metricsAddress":"([^"]+)"/.exec(l)?.[1]).find(Boolean);
  const metricsUrl = `http://${metricsLine}/metrics`;
  const client = agentClient(agent.address, pki);
  const starter = agentClient(agent.address, pki);
  const pinger = http2Connect(`https://${agent.address}`, { ca: readFileSync(pki.caCert), cert: readFileSync(pki.clientCert),
    key: readFileSync(pki.clientKey), servername: 'localhost' });
  pinger.on('error', (err) => console.error(`HTTP/2 PING connection: ${err.message}`));
  const started: { id: string; pid: number }[] = [];
  try {
    await call(client, client.getStatus, {});
    await loopLag(metricsUrl); // each scrape resets the agent's histogram: the phases start here
    const s0 = mainThreadSched(agent.pid);
    const p0 = mainThreadSched(process.pid);
    const w0 = performance.now();
    const idleDone = new Promise((r) => setTimeout(r, IDLE_MS));
    const [idle, idlePings] = await Promise.all([probe(client, idleDone), pingProbe(pinger, idleDone)]);
    const s1 = mainThreadSched(agent.pid);
    const p1 = mainThreadSched(process.pid);
    console.log(`idle agent  GetStatus: ${describe(idle)}; ${await loopLag(metricsUrl)}; ` +
      `${schedLine(s0, s1, performance.now() - w0)}; probe waited for a CPU ${fmt(p1.waited - p0.waited)}`);
    console.log(`idle agent  HTTP/2 PING: ${describe(idlePings)}`);

    const t0 = performance.now();
    const burst = Promise.allSettled(users.map(async (username, i) => {
      const r = await call(starter, starter.startSession, { username, password: `pw${String(i).padStart(6, '0')}` }, 120_000);
      started.push({ id: r.session!.id, pid: r.session!.pid });
    }));
    const [busy, busyPings] = await Promise.all([probe(client, burst), pingProbe(pinger, burst)]);
    const results = await burst;
    const s2 = mainThreadSched(agent.pid);
    const p2 = mainThreadSched(process.pid);
    const wall = (performance.now() - t0) / 1000;
    const failed = results.filter((r) => r.status === 'rejected').map((r) => String((r).reason));
    console.log(`${STARTS} concurrent StartSession: ${started.length} desktops in ${wall.toFixed(1)} s` +
      (failed.length ? `; ${failed.length} failed: ${JSON.stringify(failed.slice(0, 3))}` : ''));
    console.log(`busy agent  GetStatus: ${describe(busy)}; ${await loopLag(metricsUrl)}; ` +
      `${schedLine(s1, s2, wall * 1000)}; probe waited for a CPU ${fmt(p2.waited - p1.waited)}`);
    console.log(`busy agent  HTTP/2 PING: ${describe(busyPings)} (the controller drops a connection whose keepalive ` +
      'PING is unanswered for --agent-keepalive-timeout-ms)');
    const sIdle = [...idle].sort((a, b) => a - b);
    const sBusy = [...busy].sort((a, b) => a - b);
    const ratio = (p: number) => `${(percentile(sBusy, p) / percentile(sIdle, p)).toFixed(1)}x`;
    console.log(`ratio busy/idle: p50 ${ratio(50)}, p99 ${ratio(99)}`);
    const p99 = percentile(sBusy, 99);
    console.log(`target: GetStatus p99 <= 200 ms during ${STARTS} concurrent starts: ` +
      `${p99 <= 200 ? 'met' : 'NOT met'} (${fmt(p99)})`);
    console.log(`load average after: ${load()}`);
  } finally {
    await Promise.all(started.map((s) => endDesktop(starter, s)));
    client.close();
    starter.close();
    pinger.close();
    await agent.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
