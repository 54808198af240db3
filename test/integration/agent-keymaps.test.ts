/**
 * An Xvnc killed while it starts can leave its compiled keymap, /tmp/server-<display>.xkm, owned by its user in
 * sticky /tmp; the next Xvnc on that display run by anyone else then cannot write its own keymap and exits 1, and as
 * -displayfd picks the lowest free display, so does every later start on the blade. These tests plant such files (as
 * a killed start leaves them: same name, owner and content) and check that the agent removes them. Users vdtest129
 * (the one who wants a desktop) and vdtest130 (the owner of the leftovers).
 */
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { chownSync, existsSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { agentClient, call, endDesktop, pidsOfUid, startAgent, type AgentProcess } from '../helpers/agent-process.js';
import { makePki, type Pki } from '../helpers/certs.js';
import { idsOf, testUser } from '../helpers/users.js';

const U_WANTS = testUser(129);
const U_LEFT = testUser(130);
/** Displays a planted keymap may sit at: the lowest free one, the one the next Xvnc takes, is far below this. */
const DISPLAYS = 256;

let pki: Pki;
let dir: string;
const agents: AgentProcess[] = [];
const planted: string[] = [];

/** Writes a compiled keymap at each display in `displays` that has none, owned by `user`, last written `ageMs` ago. */
function plantKeymaps(user: string, displays: number[], ageMs: number): string[] {
  const { uid, gid } = idsOf(user);
  const out: string[] = [];
  const when = new Date(Date.now() - ageMs);
  for (const n of displays) {
    const path = `/tmp/server-${n}.xkm`;
    if (existsSync(path)) continue;
    writeFileSync(path, 'xkm\n', { mode: 0o644 });
    chownSync(path, uid, gid);
    utimesSync(path, when, when);
    out.push(path);
  }
  planted.push(...out);
  return out;
}

/** Display numbers above any a server here takes, with neither an X socket nor a keymap (earlier runs leave some). */
function unusedDisplays(count: number): number[] {
  const out: number[] = [];
  for (let n = 10 * DISPLAYS; out.length < count; n++) {
    if (!existsSync(`/tmp/.X11-unix/X${n}`) && !existsSync(`/tmp/server-${n}.xkm`)) out.push(n);
  }
  return out;
}

beforeAll(() => {
  pki = makePki();
  dir = mkdtempSync(join(tmpdir(), 'vd-keymaps-'));
});

afterEach(async () => {
  for (const a of agents.splice(0)) await a.stop().catch(() => {});
  for (const p of planted.splice(0)) rmSync(p, { force: true });
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('keymaps left in /tmp by an Xvnc killed while starting', () => {
  it('old ones are removed when the agent opens, so another user\'s desktop starts on their displays', async () => {
    const leftovers = plantKeymaps(U_LEFT, Array.from({ length: DISPLAYS }, (_, i) => i), 5 * 60_000);
    expect(leftovers.length).toBeGreaterThan(0);
    const agent = await startAgent({ pki });
    agents.push(agent);
    const client = agentClient(agent.address, pki);
    try {
      const res = await call(client, client.startSession, { username: U_WANTS, password: 'keym1234' });
      expect(res.session?.username).toBe(U_WANTS);
      expect(res.session?.display).toBeLessThan(DISPLAYS);
      expect(leftovers.filter((p) => existsSync(p))).toEqual([]);
      await endDesktop(client, res.session!);
    } finally {
      client.close();
    }
  });

  it('a recent one is left alone (it may belong to a start in flight), unless it is its owner\'s and its display died with their abandoned start', async () => {
    const [dead, live, others] = unusedDisplays(3) as [number, number, number];
    // The abandoned start's display: its X socket is left with nobody listening, as a killed server leaves it.
    const deadSocket = `/tmp/.X11-unix/X${dead}`;
    execFileSync('python3', ['-c', `import socket; socket.socket(socket.AF_UNIX).bind(${JSON.stringify(deadSocket)})`]);
    chownSync(deadSocket, idsOf(U_WANTS).uid, idsOf(U_WANTS).gid);
    planted.push(deadSocket);
    // Another start of the same user, still running (on another agent of this host): its server listens.
    const liveSocket = `/tmp/.X11-unix/X${live}`;
    const server = createServer().listen(liveSocket);
    await once(server, 'listening');
    chownSync(liveSocket, idsOf(U_WANTS).uid, idsOf(U_WANTS).gid);
    planted.push(liveSocket);
    const [deadKeymap, liveKeymap] = plantKeymaps(U_WANTS, [dead, live], 0);
    const othersKeymap = plantKeymaps(U_LEFT, [others], 0);
    // /bin/false stands for a session that fails: the start is abandoned after its Xvnc was spawned.
    const agent = await startAgent({ pki, args: ['--session-script', '/bin/false', '--start-settle-ms', '2000'] });
    agents.push(agent);
    const client = agentClient(agent.address, pki);
    try {
      const err = await call(client, client.startSession, { username: U_WANTS, password: 'keym1234' }).catch((e) => e);
      expect(err).toMatchObject({ code: status.UNAVAILABLE });
      expect(pidsOfUid(idsOf(U_WANTS).uid)).toEqual([]);
      expect([deadKeymap, deadSocket].filter((p) => existsSync(p!))).toEqual([]);
      expect([liveKeymap, liveSocket, ...othersKeymap].filter((p) => existsSync(p!))).toEqual([liveKeymap, liveSocket, ...othersKeymap]);
    } finally {
      client.close();
      server.close();
    }
  });
});
