/**
 * Processes that die at the worst moment, for real (SIGKILL), with real agents, Xvnc and controller processes:
 *   - the controller killed during a burst of POSTs: rows left `starting` are settled from what their blade runs
 *     (or DELETEd, which stops their desktop whatever the row's state), and afterwards every user has exactly one
 *     desktop, none orphaned;
 *   - an agent killed at a sweep of moments during StartSession and restarted: whatever each POST answered, a retry
 *     gives the user one desktop and nothing runs that no session owns;
 *   - a blade frozen (SIGSTOP) under a user's desktop: the user gets 503 VD_ERR_BLADE_DOWN, not a dead token.
 * Each ends with the invariant check. Users vdtest96..vdtest100 (short); `npm run test:faults` (VD_FAULTS=full)
 * uses 50 vdload users for the burst and a finer sweep.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { agentClient, call, endDesktop, startAgent, type AgentProcess } from '../helpers/agent-process.js';
import { makePki, type Pki } from '../helpers/certs.js';
import { api, waitForBladeStates } from '../helpers/controller-checks.js';
import { startController, type ControllerProcess } from '../helpers/controller-process.js';
import { checkInvariants } from '../helpers/invariants.js';
import { postUntilServed } from '../helpers/portal-retry.js';
import { ensureLoadUsers, testUser } from '../helpers/users.js';

const FULL = process.env.VD_FAULTS === 'full';
const SHORT_USERS = [96, 97, 98, 99, 100].map(testUser);
let burstUsers: string[];

let pki: Pki;
const agents: AgentProcess[] = [];
const controllers: ControllerProcess[] = [];
/** Reconciliation quick enough to watch converge; the settle time is the smallest the flags allow. */
const QUICK = ['--reconcile-interval-ms', '1000', '--orphan-grace-ms', '1000', '--start-settle-ms', '11000'];

const blades = () => agents.map((a, i) => ({ name: `k${i + 1}`, address: a.address }));

async function controller(dataDir?: string): Promise<ControllerProcess> {
  const c = await startController({ pki, blades: blades(), args: QUICK, timeoutMs: 60_000, ...(dataDir && { dataDir }) });
  controllers.push(c);
  await waitForBladeStates(c, Object.fromEntries(blades().map((b) => [b.name, 'UP'])));
  return c;
}

async function endEverything(users: readonly string[]): Promise<void> {
  for (const c of controllers.splice(0)) await c.stop('SIGKILL').catch(() => {});
  for (const a of agents) {
    const client = agentClient(a.address, pki);
    const left = await call(client, client.listSessions, {}, 3000).catch(() => ({ sessions: [] }));
    for (const s of left.sessions) if (users.includes(s.username)) await endDesktop(client, s);
    client.close();
  }
}

beforeAll(async () => {
  pki = makePki();
  burstUsers = FULL ? ensureLoadUsers(50) : SHORT_USERS;
  for (let i = 0; i < 2; i++) agents.push(await startAgent({ pki, args: ['--max-sessions', '60'] }));
}, 180_000);

afterEach(async () => {
  await endEverything([...SHORT_USERS, ...burstUsers]);
});

afterAll(async () => {
  for (const a of agents) await a.stop().catch(() => {});
});

describe('crashes', () => {
  it('a controller killed during a burst of POSTs leaves no stuck row, no orphan and no second desktop', async () => {
    const first = await controller();
    const burst = burstUsers.map((username) => api(first, 'POST', '/api/v1/sessions', { username }).catch(() => null));
    // Kill it while the starts are in flight: after the first answer, most are still on their way.
    await Promise.race([...burst.map((p) => p.then(() => undefined)), new Promise((r) => setTimeout(r, 1_500))]);
    await first.stop('SIGKILL');
    controllers.splice(controllers.indexOf(first), 1);
    await Promise.all(burst);

    const second = await controller(first.dataDir);
    const live = (await api(second, 'GET', '/api/v1/sessions?state=live&limit=1000')).body.sessions as { id: string; state: string }[];
    // DELETE stops a desktop whatever the row's state: end half of whatever is still starting right away.
    const starting = live.filter((s) => s.state === 'starting');
    for (const s of starting.filter((_, i) => i % 2 === 0)) {
      expect((await api(second, 'DELETE', `/api/v1/sessions/${s.id}`)).status).toBe(200);
    }
    // The rest settle by asking their blade (no row stays starting past the settle time).
    await expect.poll(async () => (await api(second, 'GET', '/api/v1/sessions?state=live&limit=1000')).body.sessions
      .filter((s: { state: string }) => s.state === 'starting').length, { timeout: 25_000, interval: 500 }).toBe(0);
    // Every user can have their desktop now, retrying as a portal would (50 starts at once on two 2-core agents do
    // not all fit one start's deadline); nobody gets a second one.
    const deadline = performance.now() + (FULL ? 180_000 : 60_000);
    const again = await Promise.all(burstUsers.map((username) => postUntilServed(second, username, deadline)));
    expect(again.filter((r) => r.status !== 200 && r.status !== 201).map((r) => `${r.status} ${JSON.stringify(r.body)}`)).toEqual([]);
    await checkInvariants({ controller: second, users: burstUsers, dataDir: first.dataDir });
  }, FULL ? 300_000 : 90_000);

  it('an agent killed at any moment of StartSession and restarted: a retry gives one desktop and nothing is orphaned', async () => {
    const c = await controller();
    const user = SHORT_USERS[0]!;
    const points = FULL ? [0, 10, 20, 30, 40, 60, 80, 100, 150, 200, 300] : [0, 30, 80];
    for (const delayMs of points) {
      const victim = agents[0]!;
      // Only the victim can take it: the other blade is cordoned for this sweep.
      await api(c, 'POST', '/api/v1/blades/k2/cordon');
      const post = api(c, 'POST', '/api/v1/sessions', { username: user });
      await new Promise((r) => setTimeout(r, delayMs));
      await victim.stop('SIGKILL');
      const answer = await post;
      expect([201, 503], `POST answered ${answer.status} ${answer.text}`).toContain(answer.status);
      agents[0] = await startAgent({ pki, stateDir: victim.stateDir, args: ['--max-sessions', '60', '--listen', victim.address] });
      await api(c, 'POST', '/api/v1/blades/k2/uncordon');
      await waitForBladeStates(c, { k1: 'UP' }, 15_000);
      await expect.poll(async () => (await api(c, 'POST', '/api/v1/sessions', { username: user })).status,
        { timeout: 30_000, interval: 500 }).toBeLessThan(300);
      await checkInvariants({ controller: c, users: [user], dataDir: c.dataDir });
      const live = (await api(c, 'GET', '/api/v1/sessions?state=live')).body.sessions as { id: string }[];
      for (const s of live) await api(c, 'DELETE', `/api/v1/sessions/${s.id}`);
    }
  }, FULL ? 600_000 : 180_000);

  it('a user whose desktop is on a frozen blade gets 503 VD_ERR_BLADE_DOWN, and the desktop back when it thaws', async () => {
    const c = await controller();
    const user = SHORT_USERS[1]!;
    const first = await api(c, 'POST', '/api/v1/sessions', { username: user });
    expect(first.status).toBe(201);
    const agent = agents[blades().findIndex((b) => b.name === first.body.blade)]!;
    process.kill(agent.pid, 'SIGSTOP');
    try {
      await waitForBladeStates(c, { [first.body.blade]: 'DOWN' }, 15_000);
      const down = await api(c, 'POST', '/api/v1/sessions', { username: user });
      expect(down.status).toBe(503);
      expect(down.body.error.code).toBe('VD_ERR_BLADE_DOWN');
      expect(down.text).not.toContain('token');
    } finally {
      process.kill(agent.pid, 'SIGCONT');
    }
    await waitForBladeStates(c, { [first.body.blade]: 'UP' }, 15_000);
    const back = await api(c, 'POST', '/api/v1/sessions', { username: user });
    expect(back.status).toBe(200);
    expect(back.body.id).toBe(first.body.id);
    await checkInvariants({ controller: c, users: [user], dataDir: c.dataDir });
  }, 90_000);
});
