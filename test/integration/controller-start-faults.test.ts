/**
 * What the controller does when a start goes wrong on the agent's side or in its own store: a user whose home is
 * unusable gets one clear 4xx (asked of one blade, not every blade, and never a 503), and a desktop the store fails
 * to record is stopped on its blade and logged, not left running unknown. Users vdtest56 and vdtest59.
 */
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { Store } from '../../controller/store/store.js';
import { pidsOfUid, startAgent, type AgentProcess } from '../helpers/agent-process.js';
import { makePki, type Pki } from '../helpers/certs.js';
import { api, waitForBladeStates } from '../helpers/controller-checks.js';
import { buildController, type InProcessController } from '../helpers/controller-process.js';
import { idsOf, testUser } from '../helpers/users.js';

const U_NOHOME = testUser(56);
const U_UNRECORDED = testUser(59);

let pki: Pki;
const agents: AgentProcess[] = [];
let c: InProcessController;
/** When set, the store's write that marks a session running fails, as on a full disk. */
let failRunningWrite = false;

/**
 * A stand-in for a store whose disk fills at the worst moment, after the desktop started: the real SQLite store,
 * except that the one write marking a session running throws SQLite's disk-full error when asked to.
 */
function flakyStore(store: Store): Store {
  return new Proxy(store, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver) as unknown;
      if (prop === 'updateSession') {
        return (id: string, patch: { state?: string }, now: Date) => {
          if (failRunningWrite && patch.state === 'running') {
            return Promise.reject(Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' }));
          }
          return target.updateSession(id, patch as never, now);
        };
      }
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

const agentLines = (code: string) => agents.map((a) => a.logs.filter((l) => l.includes(code)).length);

beforeAll(async () => {
  pki = makePki();
  // Two agents on one host: each has its own state and runtime directories, and desktops listen on no TCP port.
  for (let i = 0; i < 2; i++) agents.push(await startAgent({ pki }));
  c = await buildController({ pki, wrapStore: flakyStore, blades: agents.map((a, i) => ({ name: `b${i + 1}`,
    address: `127.0.0.1:${a.port}` })) });
  await waitForBladeStates(c, { b1: 'UP', b2: 'UP' });
});

afterAll(async () => {
  await c?.stop();
  for (const a of agents) await a.stop();
  for (const pid of pidsOfUid(idsOf(U_UNRECORDED).uid)) process.kill(pid, 'SIGKILL');
});

describe('a user whose home is unusable', () => {
  it('gets 422 VD_ERR_USER_HOME_UNUSABLE saying what to fix, after asking one blade, not 503 after asking all', async () => {
    const missing = `/nonexistent-vd-home-${process.pid}`;
    execFileSync('usermod', ['-d', missing, U_NOHOME]);
    try {
      const r = await api(c, 'POST', '/api/v1/sessions', { username: U_NOHOME });
      expect(r.status).toBe(422);
      expect(r.body.error.code).toBe('VD_ERR_USER_HOME_UNUSABLE');
      expect(r.body.error.message).toContain(`the home directory ${missing} of ${U_NOHOME} is missing`);
      expect(agentLines('VD_AGENT_HOME_UNUSABLE').reduce((a, b) => a + b, 0)).toBe(1);
      expect(await c.store.getLiveSessionByUser(U_NOHOME)).toBeNull();
    } finally {
      execFileSync('usermod', ['-d', `/home/${U_NOHOME}`, U_NOHOME]);
    }
  });
});

describe('a desktop the store cannot record', () => {
  it('is stopped on its blade and logged, and the caller gets an error instead of a desktop nobody knows', async () => {
    failRunningWrite = true;
    try {
      const r = await api(c, 'POST', '/api/v1/sessions', { username: U_UNRECORDED });
      expect(r.status).toBeGreaterThanOrEqual(500);
    } finally {
      failRunningWrite = false;
    }
    expect(c.logs.some((l) => l.includes('could not record a started desktop; stopping it'))).toBe(true);
    await vi.waitFor(() => {
      expect(pidsOfUid(idsOf(U_UNRECORDED).uid)).toEqual([]);
      expect(agentLines('stopped by request').reduce((a, b) => a + b, 0)).toBe(1);
    }, { timeout: 10_000 });
  });
});
