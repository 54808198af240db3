/**
 * Desktops outlive the agent: stopping or crashing it leaves them running, and a restarted agent re-adopts them
 * (same pid) after checking each is the very process it started, not a recycled pid. Users vdtest08, vdtest09,
 * vdtest49, vdtest50, vdtest66..vdtest68.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Session } from '../../proto/gen/vncdispatch/agent/v1/agent.js';
import {
  agentClient, alive, call, endDesktop, startAgent, waitFor, type AgentClient, type AgentProcess,
} from '../helpers/agent-process.js';
import { makePki, type Pki } from '../helpers/certs.js';
import { openRelay } from '../helpers/relay-client.js';
import { rfbConnect } from '../helpers/rfb-client.js';
import { idsOf, testUser } from '../helpers/users.js';

const U8 = testUser(8);
const U9 = testUser(9);
const U_SURVIVOR = testUser(49);
const U_DIES = testUser(50);
const U_ADOPTED = testUser(66);
const U_RECYCLED = testUser(67);
const U_OTHER = testUser(68);

let pki: Pki;
let stateDir: string;
let runtimeDir: string;
let agent: AgentProcess | undefined;
let client: AgentClient | undefined;
const started: Session[] = [];

async function restart(signal: NodeJS.Signals = 'SIGTERM'): Promise<AgentClient> {
  client?.close();
  await agent?.stop(signal);
  agent = await startAgent({ pki, stateDir, runtimeDir });
  client = agentClient(agent.address, pki);
  return client;
}

async function listed(c: AgentClient): Promise<Session[]> {
  return (await call(c, c.listSessions, {})).sessions;
}

function startTime(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
}

/** A session record as the agent persists it, for pids the agent never started. */
function plantRecord(fields: { username: string; pid: number; pidStartTime: number }): string {
  const ids = idsOf(fields.username);
  const id = randomUUID();
  writeFileSync(join(stateDir, 'sessions', `${id}.json`), JSON.stringify({
    id, username: fields.username, uid: ids.uid, gid: ids.gid, home: `/home/${fields.username}`, shell: '/bin/bash',
    display: 99, pid: fields.pid, pidStartTime: fields.pidStartTime, scriptPid: 0, scriptStartTime: 0,
    startedAt: new Date().toISOString(), geometry: '1280x800', depth: 24,
  }));
  return id;
}

beforeAll(async () => {
  pki = makePki();
  stateDir = mkdtempSync(join(tmpdir(), 'vncdispatch-agent-restart-'));
  runtimeDir = mkdtempSync(join(tmpdir(), 'vncdispatch-agent-restart-run-'));
  await restart();
});

afterAll(async () => {
  for (const s of started) await endDesktop(client, s);
  client?.close();
  await agent?.stop();
});

/** The desktop of session `id`, through the (current) agent's relay. */
const viaRelay = (id: string) => () => openRelay({ address: agent!.address, sessionId: id, pki });

/** Starts a desktop for `username` on the current agent; afterAll ends it. */
async function startDesktop(username: string, password: string): Promise<Session> {
  const s = (await call(client!, client!.startSession, { username, password })).session!;
  started.push(s);
  return s;
}

// Each test starts the desktops it restarts the agent under, with users of its own, so it runs alone and in any order.
describe('restarting the agent', () => {
  it('SIGTERM stops the agent but not the desktops, and the new agent lists them with the same pids', async () => {
    const s8 = await startDesktop(U8, 'pass8888');
    const c = await restart('SIGTERM');
    expect(alive(s8.pid)).toBe(true);
    expect((await rfbConnect({ socket: viaRelay(s8.id), password: 'pass8888' })).ok).toBe(true);
    const sessions = await listed(c);
    expect(sessions.map((s) => [s.id, s.pid, s.display])).toEqual(expect.arrayContaining([[s8.id, s8.pid, s8.display]]));
    expect(agent!.logs.join('\n')).toContain('adopted session');
  });

  it('a crashed agent (SIGKILL) also leaves the desktops, and a re-adopted session is still idempotent', async () => {
    const s9 = await startDesktop(U9, 'pass9999');
    const c = await restart('SIGKILL');
    expect(alive(s9.pid)).toBe(true);
    const again = await call(c, c.startSession, { username: U9, password: 'newpass9' });
    expect(again.existing).toBe(true);
    expect(again.session!.pid).toBe(s9.pid);
    expect((await rfbConnect({ socket: viaRelay(s9.id), password: 'newpass9' })).ok).toBe(true);
  });

  it('a desktop that died while the agent was down is dropped on restart and its runtime directory removed', async () => {
    const survivor = await startDesktop(U_SURVIVOR, 'survive1');
    const dead = await startDesktop(U_DIES, 'diesdies');
    client!.close();
    await agent!.stop();
    client = undefined;
    process.kill(dead.pid, 'SIGKILL');
    await waitFor(() => !alive(dead.pid), 'Xvnc to die');
    const c = await restart();
    const ids = (await listed(c)).map((s) => s.id);
    expect(ids).toContain(survivor.id);
    expect(ids).not.toContain(dead.id);
    expect(existsSync(join(runtimeDir, dead.id))).toBe(false);
    expect(existsSync(join(stateDir, 'sessions', `${dead.id}.json`))).toBe(false);
  });

  it('an adopted session whose Xvnc is killed vanishes from ListSessions', async () => {
    const s = await startDesktop(U_ADOPTED, 'adopted1');
    const c = await restart();
    expect((await listed(c)).map((x) => x.id)).toContain(s.id);
    process.kill(s.pid, 'SIGKILL');
    await waitFor(async () => !(await listed(c)).some((x) => x.id === s.id), 'the adopted session to be reaped');
    await waitFor(() => !existsSync(join(runtimeDir, s.id)), 'its runtime directory to be removed');
  });
});

describe('re-adoption checks the process is the one the agent started', () => {
  it('drops records whose pid is alive but is not that Xvnc (recycled pid), and never signals those processes', async () => {
    // A process of the same user that is not Xvnc, with its real start time: only the executable check catches it.
    const sleeper = spawn('setpriv', ['--reuid', U_RECYCLED, '--regid', U_RECYCLED, '--init-groups', '--', 'sleep', '60'],
      { stdio: 'ignore' });
    try {
      await waitFor(() => readFileSync(`/proc/${sleeper.pid}/comm`, 'utf8').trim() === 'sleep', 'sleep to exec');
      const notXvnc = plantRecord({ username: U_RECYCLED, pid: sleeper.pid!, pidStartTime: startTime(sleeper.pid!) });
      // The right kind of process but a different start time: a pid reused by a later Xvnc.
      const other = await startDesktop(U_OTHER, 'abcd1234');
      const wrongStart = plantRecord({ username: U_RECYCLED, pid: other.pid, pidStartTime: startTime(other.pid) - 1 });
      const gone = plantRecord({ username: U_RECYCLED, pid: 2 ** 22 + 1, pidStartTime: 1 });
      const c = await restart();
      const ids = (await listed(c)).map((s) => s.id);
      expect(ids).toContain(other.id);
      for (const id of [notXvnc, wrongStart, gone]) {
        expect(ids).not.toContain(id);
        expect(existsSync(join(stateDir, 'sessions', `${id}.json`))).toBe(false);
      }
      expect(alive(sleeper.pid!)).toBe(true);
      expect(alive(other.pid)).toBe(true);
    } finally {
      sleeper.kill('SIGKILL');
    }
  });
});
