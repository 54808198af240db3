/**
 * The store never lies, on real filesystems in trouble, with a real controller process and a real agent:
 *   - a full disk (a filled tmpfs): every answer is true (a 200 was stored, a 503 changed nothing), no desktop starts
 *     for a session that could not be recorded, /readyz says the store cannot write;
 *   - a filesystem error (loop-mounted ext4, errors=remount-ro): 503 from then on, and after the controller is
 *     killed and the disk repaired, every session the API reported before the error is still there (the WAL was
 *     fsynced at each commit);
 *   - the database file deleted: reported at the next call instead of collecting writes that vanish at restart.
 * Each scenario ends with the invariant check (test/helpers/invariants.ts). Users vdtest91..vdtest95.
 * `npm run test:faults` (VD_FAULTS=full) repeats the full-disk toggles more often.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { SQLITE_FILE_NAME } from '../../controller/store/index.js';
import { agentClient, call, endDesktop, startAgent, type AgentProcess } from '../helpers/agent-process.js';
import { makePki, type Pki } from '../helpers/certs.js';
import { api, waitForBladeStates, xvncPidsOf } from '../helpers/controller-checks.js';
import { startController, type ControllerProcess } from '../helpers/controller-process.js';
import { mountLoopExt4, mountTmpfs } from '../helpers/fault-fs.js';
import { checkInvariants, rssBytes } from '../helpers/invariants.js';
import { idsOf, testUser } from '../helpers/users.js';

const FULL = process.env.VD_FAULTS === 'full';
const USERS = [91, 92, 93, 94, 95].map(testUser);
const uidsOf = (users: string[]) => new Set(users.map((u) => idsOf(u).uid));

let pki: Pki;
let agent: AgentProcess;
const cleanups: (() => Promise<void> | void)[] = [];
/** Flags that make reconciliation quick enough for a test to watch it converge. */
const QUICK = ['--reconcile-interval-ms', '1000', '--orphan-grace-ms', '1000'];

beforeAll(async () => {
  pki = makePki();
  agent = await startAgent({ pki });
});

afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await Promise.resolve(fn()).catch(() => {});
  const client = agentClient(agent.address, pki);
  const left = await call(client, client.listSessions, {}, 3000).catch(() => ({ sessions: [] }));
  for (const s of left.sessions) if (USERS.includes(s.username)) await endDesktop(client, s);
  client.close();
});

afterAll(async () => {
  await agent?.stop();
});

async function controllerOn(dataDir: string): Promise<ControllerProcess> {
  const c = await startController({ pki, dataDir, blades: [{ name: 'b1', address: agent.address }], args: QUICK, timeoutMs: 60_000 });
  cleanups.push(() => c.stop('SIGKILL'));
  await waitForBladeStates(c, { b1: 'UP' });
  return c;
}

describe('store faults', () => {
  it('on a full disk every answer is true: a 503 VD_ERR_STORE_UNAVAILABLE changed nothing and started no desktop', async () => {
    const fs = mountTmpfs(4 * 1024 * 1024);
    cleanups.push(() => fs.unmount());
    const c = await controllerOn(fs.dir);
    const baseline = rssBytes(c.pid)!;
    const first = await api(c, 'POST', '/api/v1/sessions', { username: USERS[0] });
    expect(first.status).toBe(201);

    fs.fill();
    // The WAL may still have room from earlier commits, so some writes can still succeed: toggle the cordon until
    // the store refuses, remembering what each answer claimed.
    let claimed = 'ACTIVE';
    let refused = 0;
    for (let i = 0; i < (FULL ? 400 : 60) && refused < 3; i++) {
      const want = claimed === 'ACTIVE' ? 'cordon' : 'uncordon';
      const r = await api(c, 'POST', `/api/v1/blades/b1/${want}`);
      if (r.status === 200) claimed = want === 'cordon' ? 'CORDONED' : 'ACTIVE';
      else {
        expect(r.status).toBe(503);
        expect(r.body.error.code).toBe('VD_ERR_STORE_UNAVAILABLE');
        refused++;
      }
    }
    expect(refused).toBeGreaterThan(0);

    const denied = await api(c, 'POST', '/api/v1/sessions', { username: USERS[1] });
    expect(denied.status).toBe(503);
    expect(denied.body.error.code).toBe('VD_ERR_STORE_UNAVAILABLE');
    expect(xvncPidsOf(uidsOf([USERS[1]!]))).toEqual([]);
    // /readyz shares one store write per --ready-check-ttl-ms (1 s): it says so within that.
    await expect.poll(async () => (await fetch(`${c.url}/readyz`)).status, { timeout: 5_000 }).toBe(503);
    expect(await (await fetch(`${c.url}/readyz`)).json()).toMatchObject({ ready: false, store: false });

    fs.free();
    await expect.poll(async () => (await fetch(`${c.url}/readyz`)).status, { timeout: 5_000 }).toBe(200);
    // What the API last said is what is stored.
    const b1 = (await api(c, 'GET', '/api/v1/blades/b1')).body;
    expect(b1.adminState).toBe(claimed);
    if (claimed !== 'ACTIVE') expect((await api(c, 'POST', '/api/v1/blades/b1/uncordon')).status).toBe(200);
    const again = await api(c, 'POST', '/api/v1/sessions', { username: USERS[1] });
    expect(again.status).toBe(201);
    await checkInvariants({ controller: c, users: USERS.slice(0, 2), dataDir: fs.dir, rss: { pid: c.pid, baseline } });
  });

  it('after a filesystem error (ext4 remounted read-only) the API answers 503, and nothing it reported is lost', async () => {
    const fs = mountLoopExt4(32);
    cleanups.push(() => fs.unmount());
    let c = await controllerOn(fs.dir);
    const made = [];
    for (const u of USERS.slice(0, 2)) {
      const r = await api(c, 'POST', '/api/v1/sessions', { username: u });
      expect(r.status).toBe(201);
      made.push(r.body.id as string);
    }
    expect((await api(c, 'POST', '/api/v1/blades/b1/drain')).status).toBe(200);
    expect((await api(c, 'POST', '/api/v1/blades/b1/uncordon')).status).toBe(200);

    fs.triggerError();
    const denied = await api(c, 'POST', '/api/v1/sessions', { username: USERS[2] });
    expect(denied.status).toBe(503);
    expect(denied.body.error.code).toBe('VD_ERR_STORE_UNAVAILABLE');
    expect(xvncPidsOf(uidsOf([USERS[2]!]))).toEqual([]);
    await expect.poll(async () => (await fetch(`${c.url}/readyz`)).status, { timeout: 5_000 }).toBe(503);

    // The controller dies with the filesystem in that state; the disk is repaired as a reboot would.
    await c.stop('SIGKILL');
    fs.remount();
    c = await controllerOn(fs.dir);
    const live = (await api(c, 'GET', '/api/v1/sessions?state=live')).body.sessions.map((s: { id: string }) => s.id);
    expect(live.sort()).toEqual([...made].sort());
    expect((await api(c, 'GET', '/api/v1/blades/b1')).body.adminState).toBe('ACTIVE');
    await checkInvariants({ controller: c, users: USERS.slice(0, 3), dataDir: fs.dir });
  });

  it('a deleted database file is reported (503 at once, /readyz within a second), and no desktop starts on it', async () => {
    const fs = mountTmpfs(16 * 1024 * 1024);
    cleanups.push(() => fs.unmount());
    const c = await controllerOn(fs.dir);
    const kept = await api(c, 'POST', '/api/v1/sessions', { username: USERS[3] });
    expect(kept.status).toBe(201);

    for (const suffix of ['', '-wal', '-shm']) rmSync(join(fs.dir, SQLITE_FILE_NAME + suffix), { force: true });
    const denied = await api(c, 'POST', '/api/v1/sessions', { username: USERS[4] });
    expect(denied.status).toBe(503);
    expect(denied.body.error.code).toBe('VD_ERR_STORE_UNAVAILABLE');
    expect(denied.body.error.message).toMatch(/gone|replaced/);
    expect(xvncPidsOf(uidsOf([USERS[4]!]))).toEqual([]);
    await expect.poll(async () => (await fetch(`${c.url}/readyz`)).status, { timeout: 5_000 }).toBe(503);
    expect((await (await fetch(`${c.url}/readyz`)).json()).reason).toMatch(/gone/);
    // Reads fail the same way: nothing pretends the sessions are still there.
    expect((await api(c, 'GET', '/api/v1/sessions')).status).toBe(503);
  });
});
