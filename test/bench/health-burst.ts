/**
 * `node dist/test/bench/health-burst.js` (after `npm run build`, as root): does a blade busy with 50 concurrent starts
 * stay UP in the controller's eyes? One real agent (--max-sessions 120: placement counts a start both as a starting
 * row and as in flight, so 100 would refuse the last ones), one real
 * controller with the tests' health timings (--health-interval-ms 500, --down-after-ms 2500) and start deadlines long
 * enough for 50 desktops on a loaded machine; 50 POSTs at once for users vdload201..vdload250 (created if missing).
 * Prints the answers, every `blade DOWN` the controller logged, and the controller's own event-loop delay: a stall
 * of the controller (not the agent) is what once made it call a busy blade DOWN (controller/blades/health.ts).
 * Every desktop is stopped afterwards.
 */
import { loadavg } from 'node:os';
import { agentClient, call, endDesktop, startAgent } from '../helpers/agent-process.js';
import { makePki } from '../helpers/certs.js';
import { api, waitForBladeStates } from '../helpers/controller-checks.js';
import { startController } from '../helpers/controller-process.js';
import { eventLoopLagMs } from '../helpers/process-figures.js';
import { ensureLoadUsers } from '../helpers/users.js';

const STARTS = 50;
const load = () => loadavg().map((x) => x.toFixed(1)).join(' ');

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('run as root: the benchmark starts desktops as test users');
  const users = ensureLoadUsers(STARTS, 201);
  const pki = makePki();
  const agent = await startAgent({ pki, args: ['--max-sessions', '120', '--start-timeout-ms', '90000'] });
  const c = await startController({ pki, blades: [{ name: 'b', address: agent.address }],
    args: ['--agent-start-timeout-ms', '120000', '--start-settle-ms', '130000'] });
  try {
    await waitForBladeStates(c, { b: 'UP' }, 20_000);
    console.log(`load average before: ${load()}`);
    const t0 = Date.now();
    const res = await Promise.all(users.map((username) => api(c, 'POST', '/api/v1/sessions', { username })));
    const answers = new Map<string, number>();
    for (const r of res) {
      const key = `${r.status}${r.body?.error?.code ? ` ${r.body.error.code}` : ''}`;
      answers.set(key, (answers.get(key) ?? 0) + 1);
    }
    const downs = c.logs.filter((l) => l.includes('"blade DOWN"'));
    console.log(`${STARTS} concurrent POSTs in ${Date.now() - t0} ms: ${JSON.stringify(Object.fromEntries(answers))}`);
    console.log(`blade DOWN transitions: ${downs.length}`);
    for (const d of downs) console.log(`  +${(JSON.parse(d) as { time: number }).time - t0} ms: ${d}`);
    const metrics = await (await fetch(`${c.url}/metrics`)).text();
    const lag = (stat: string) => eventLoopLagMs(metrics, 'vncdispatch_controller', stat);
    console.log(`controller event-loop delay: p99 ${lag('p99').toFixed(0)} ms, max ${lag('max').toFixed(0)} ms`);
    console.log(`load average after: ${load()}`);
  } finally {
    await c.stop('SIGKILL').catch(() => {});
    const client = agentClient(agent.address, pki);
    const left = await call(client, client.listSessions, {}, 10_000).catch(() => ({ sessions: [] }));
    for (const s of left.sessions) await endDesktop(client, s);
    client.close();
    await agent.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
