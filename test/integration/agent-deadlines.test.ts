/**
 * No desktop outlives the caller that asked for it: a StartSession past its deadline is refused, not run late; one
 * cancelled or expired while Xvnc starts leaves nothing behind; the agent's own start budget ends a slow start; a
 * repeated call with the same session id returns the same desktop; an agent killed mid-start kills what it spawned
 * when it comes back; a full state directory stops the desktop it could not record; and the health service says
 * NOT_SERVING as soon as the agent starts shutting down. Users vdtest58..vdtest60.
 *
 * Slow starts use a stand-in for an Xvnc that takes long to become ready: a wrapper that announces itself, waits,
 * then execs the real Xvnc (nothing else here can make Xvnc slow on demand).
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  credentials, makeGenericClientConstructor, Metadata, status, type Client, type ServiceError,
} from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import { service as healthService } from 'grpc-health-check';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { Session } from '../../proto/gen/vncdispatch/agent/v1/agent.js';
import {
  agentClient, alive, call, endDesktop, pidsOfUid, startAgent, type AgentClient, type AgentProcess,
} from '../helpers/agent-process.js';
import { makePki, type Pki } from '../helpers/certs.js';
import { openRelay } from '../helpers/relay-client.js';
import { rfbConnect } from '../helpers/rfb-client.js';
import { idsOf, testUser } from '../helpers/users.js';

const U_SLOW = testUser(58);
const U_ID = testUser(59);
const U_FULL = testUser(60);

let pki: Pki;
let dir: string;
const agents: AgentProcess[] = [];
const started: { client: AgentClient; session: Session }[] = [];
const mounts: string[] = [];

/** An Xvnc that touches `marker` when it is run, sleeps `seconds`, then is the real Xvnc. */
function slowXvnc(seconds: number): { path: string; marker: string } {
  const marker = join(dir, `ran-${randomUUID()}`);
  const path = join(dir, `slow-xvnc-${randomUUID()}.sh`);
  writeFileSync(path, `#!/bin/sh\ntouch ${marker}\nsleep ${seconds}\nexec /usr/bin/Xvnc "$@"\n`, { mode: 0o755 });
  return { path, marker };
}

async function agentWith(args: string[], stateDir?: string): Promise<{ agent: AgentProcess; client: AgentClient }> {
  const agent = await startAgent({ pki, args, ...(stateDir ? { stateDir } : {}) });
  agents.push(agent);
  return { agent, client: agentClient(agent.address, pki) };
}

/** The error a call was refused with (the call must fail). */
async function refused(p: Promise<unknown>): Promise<ServiceError> {
  return p.then(() => { throw new Error('the call succeeded'); }, (e: unknown) => e as ServiceError);
}

/** Nothing of `user` runs, and the agent keeps no record and no runtime directory: what a user would call "gone". */
async function nothingLeft(agent: AgentProcess, user: string): Promise<void> {
  const uid = idsOf(user).uid;
  await vi.waitFor(() => {
    expect(pidsOfUid(uid)).toEqual([]);
    expect(readdirSync(join(agent.stateDir, 'sessions')).filter((f) => f.endsWith('.json'))).toEqual([]);
    expect(readdirSync(agent.runtimeDir)).toEqual([]);
  }, { timeout: 15_000, interval: 100 });
}

beforeAll(() => {
  pki = makePki();
  dir = mkdtempSync(join(tmpdir(), 'vd-deadlines-'));
  chmodSync(dir, 0o777);
});

afterAll(async () => {
  for (const { client, session } of started) await endDesktop(client, session);
  for (const a of agents) await a.stop('SIGKILL').catch(() => undefined);
  for (const u of [U_SLOW, U_ID, U_FULL]) for (const pid of pidsOfUid(idsOf(u).uid)) process.kill(pid, 'SIGKILL');
  for (const m of mounts) execFileSync('umount', ['-l', m]);
  rmSync(dir, { recursive: true, force: true });
});

describe('deadlines', () => {
  it('a StartSession whose deadline has already passed is refused, and nothing is started', async () => {
    const { agent, client } = await agentWith([]);
    const err = await refused(call(client, client.startSession, { username: U_SLOW, password: 'late1234',
      deadline: new Date(Date.now() - 1000) }));
    expect(err).toMatchObject({ code: status.DEADLINE_EXCEEDED });
    expect(err.details).toMatch(/^VD_AGENT_DEADLINE_EXCEEDED: /);
    await nothingLeft(agent, U_SLOW);
  });

  it('a caller whose deadline passes while Xvnc is starting leaves no desktop behind', async () => {
    const slow = slowXvnc(3);
    const { agent, client } = await agentWith(['--xvnc', slow.path]);
    const err = await refused(call(client, client.startSession, { username: U_SLOW, password: 'gone1234' }, 1000));
    expect(err).toMatchObject({ code: status.DEADLINE_EXCEEDED });
    await nothingLeft(agent, U_SLOW);
    // And stays so once the slow start would have finished.
    await new Promise((r) => setTimeout(r, 3500));
    expect(pidsOfUid(idsOf(U_SLOW).uid)).toEqual([]);
  });

  it('a caller that cancels while Xvnc is starting leaves no desktop behind', async () => {
    const slow = slowXvnc(3);
    const { agent, client } = await agentWith(['--xvnc', slow.path]);
    const pending = new Promise<ServiceError | null>((resolve) => {
      const c = client.startSession({ username: U_SLOW, password: 'canc1234' }, new Metadata(),
        { deadline: Date.now() + 20_000 }, (e) => resolve(e));
      void vi.waitFor(() => expect(existsSync(slow.marker)).toBe(true), { timeout: 10_000 }).then(() => c.cancel());
    });
    expect(await pending).toMatchObject({ code: status.CANCELLED });
    await nothingLeft(agent, U_SLOW);
  });

  it('starts beyond --max-concurrent-starts wait their turn; one whose deadline passes in the queue spawns nothing', async () => {
    const slow = slowXvnc(3);
    const { agent, client } = await agentWith(['--xvnc', slow.path, '--max-concurrent-starts', '1']);
    const first = call(client, client.startSession, { username: U_SLOW, password: 'slot1234' }, 20_000);
    await vi.waitFor(() => expect(existsSync(slow.marker)).toBe(true), { timeout: 10_000 });
    // Queued behind the slow start, with time to wait for it: it runs once the slot is free.
    const patient = call(client, client.startSession, { username: U_FULL, password: 'turn1234' }, 20_000);
    // Queued too, but its caller gives up after a second: it never gets to spawn anything.
    const err = await refused(call(client, client.startSession, { username: U_ID, password: 'wait1234' }, 1000));
    expect(err).toMatchObject({ code: status.DEADLINE_EXCEEDED });
    const [a, b] = await Promise.all([first, patient]);
    try {
      expect([a.session!.username, b.session!.username]).toEqual([U_SLOW, U_FULL]);
      expect(pidsOfUid(idsOf(U_ID).uid)).toEqual([]);
      expect(readdirSync(join(agent.stateDir, 'sessions')).filter((f) => f.endsWith('.json')).sort())
        .toEqual([a.session!.id, b.session!.id].map((id) => `${id}.json`).sort());
      // The patient start's log line says where its time went: waiting for the slow one's slot. The line reaches
      // us on the agent's stdout, which may come after the call's answer: wait for it.
      const startedLine = () => agent.logs.flatMap((l) => {
        try {
          return [JSON.parse(l) as { msg?: string; username?: string; ms?: { queue?: number } }];
        } catch {
          return []; // a line on stderr
        }
      }).find((l) => l.msg === 'session started' && l.username === U_FULL);
      await vi.waitFor(() => expect(startedLine()).toBeDefined(), { timeout: 10_000 });
      expect(startedLine()?.ms?.queue).toBeGreaterThan(1000);
    } finally {
      await endDesktop(client, a.session!);
      await endDesktop(client, b.session!);
    }
  });

  it('a queued start whose turn comes with less time left than starts now take is refused before it spawns anything', async () => {
    // Starts that take over 2 s here: Xvnc is wrapped to sleep 2 s first, and touches a marker when run. One at a time.
    const slow = slowXvnc(2);
    const { agent, client } = await agentWith(['--xvnc', slow.path, '--max-concurrent-starts', '1']);
    for (let i = 0; i < 4; i++) {
      const r = await call(client, client.startSession, { username: U_ID, password: `took${i}234` }, 20_000);
      await endDesktop(client, r.session!);
    }
    rmSync(slow.marker);
    const first = call(client, client.startSession, { username: U_SLOW, password: 'slot1234' }, 20_000);
    await vi.waitFor(() => expect(existsSync(slow.marker)).toBe(true), { timeout: 10_000 });
    rmSync(slow.marker);
    // Queued behind it with 3.5 s to live: its turn comes with about 1.3 s left, less than the 2 s a start takes,
    // so it is not begun (begun, its Xvnc would be killed part-way).
    const err = await refused(call(client, client.startSession, { username: U_ID, password: 'late1234' }, 3500));
    const a = await first;
    try {
      expect(err).toMatchObject({ code: status.DEADLINE_EXCEEDED });
      // On a machine slow enough for the first start to outlast the whole 3.5 s, the call gives up in the queue
      // instead: spawning nothing either way.
      expect(err.details).toMatch(/^VD_AGENT_DEADLINE_EXCEEDED: (only \d+ ms were left .* a start takes \d+ ms on this blade now; not started|the call's deadline passed)/);
      expect(existsSync(slow.marker), 'Xvnc was run for the late start').toBe(false);
      expect(pidsOfUid(idsOf(U_ID).uid)).toEqual([]);
    } finally {
      await endDesktop(client, a.session!);
    }
    await nothingLeft(agent, U_ID);
    // A start that finds the slot free runs whatever the recent starts took.
    const ok = await call(client, client.startSession, { username: U_ID, password: 'time1234' }, 20_000);
    await endDesktop(client, ok.session!);
  });

  it("the agent's own --start-timeout-ms ends a start that takes too long, and says so", async () => {
    const slow = slowXvnc(5);
    // Both read limits a start includes must be below its budget (the agent refuses to start otherwise).
    const { agent, client } = await agentWith(['--xvnc', slow.path, '--start-timeout-ms', '1500',
      '--lookup-timeout-ms', '1000', '--login-env-timeout-ms', '1000']);
    const err = await refused(call(client, client.startSession, { username: U_SLOW, password: 'budg1234' }, 20_000));
    expect(err).toMatchObject({ code: status.DEADLINE_EXCEEDED });
    expect(err.details).toContain('--start-timeout-ms');
    await nothingLeft(agent, U_SLOW);
  });
});

describe('the session id is an idempotency key', () => {
  it('a repeated StartSession with the same id returns the same desktop, under that id, with the new password', async () => {
    const { agent, client } = await agentWith([]);
    const sessionId = randomUUID();
    const first = await call(client, client.startSession, { sessionId, username: U_ID, password: 'idem1111' });
    started.push({ client, session: first.session! });
    expect(first).toMatchObject({ existing: false, session: { id: sessionId } });
    const again = await call(client, client.startSession, { sessionId, username: U_ID, password: 'idem2222' });
    expect(again).toMatchObject({ existing: true, session: { id: sessionId, pid: first.session!.pid } });
    expect((await rfbConnect({ socket: () => openRelay({ address: agent.address, sessionId, pki }),
      password: 'idem2222' })).ok).toBe(true);
    const other = await refused(call(client, client.startSession, { sessionId, username: U_SLOW, password: 'idem3333' }));
    expect(other).toMatchObject({ code: status.ALREADY_EXISTS });
    expect(pidsOfUid(idsOf(U_SLOW).uid)).toEqual([]);
    await call(client, client.stopSession, { id: sessionId });
  });
});

describe('crashes and full disks', () => {
  it('an agent killed while a desktop starts kills that desktop when it comes back', async () => {
    const slow = slowXvnc(2);
    const stateDir = mkdtempSync(join(tmpdir(), 'vd-deadlines-state-'));
    const { agent, client } = await agentWith(['--xvnc', slow.path], stateDir);
    const pending = call(client, client.startSession, { username: U_SLOW, password: 'kill1234' }).catch(() => undefined);
    await vi.waitFor(() => expect(existsSync(slow.marker)).toBe(true), { timeout: 10_000 });
    await agent.stop('SIGKILL');
    await pending;
    const uid = idsOf(U_SLOW).uid;
    // The orphaned start goes on and becomes a real Xvnc, which nothing records as running.
    await vi.waitFor(() => expect(pidsOfUid(uid).length).toBeGreaterThan(0), { timeout: 10_000 });
    const orphans = pidsOfUid(uid);
    const back = await startAgent({ pki, stateDir, runtimeDir: agent.runtimeDir });
    agents.push(back);
    await vi.waitFor(() => expect(orphans.filter(alive)).toEqual([]), { timeout: 15_000, interval: 100 });
    await nothingLeft(back, U_SLOW);
    expect(back.logs.join('\n')).toContain('dropped a start the agent did not finish');
  });

  describe('a full state directory', () => {
    let stateDir: string;
    beforeAll(() => {
      stateDir = join(dir, 'full-state');
      mkdirSync(stateDir);
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k,mode=0700', 'vd-full-state', stateDir]);
      mounts.push(stateDir);
    });

    /** Fills the tmpfs so that exactly `pages` 4 KiB pages stay free. */
    function fillLeaving(pages: number): void {
      rmSync(join(stateDir, 'filler'), { force: true });
      const st = statfsSync(stateDir);
      const free = Number(st.bavail) * Number(st.bsize);
      writeFileSync(join(stateDir, 'filler'), Buffer.alloc(Math.max(0, free - pages * 4096)));
    }

    it('with no room for the intent: the start is refused before anything is spawned', async () => {
      const { agent, client } = await agentWith([], stateDir);
      fillLeaving(0);
      const err = await refused(call(client, client.startSession, { username: U_FULL, password: 'full1234' }));
      expect(err).toMatchObject({ code: status.UNAVAILABLE });
      expect(err.details).toMatch(/^VD_AGENT_STATE_UNWRITABLE: .*nothing was started/);
      await nothingLeft(agent, U_FULL);
      await agent.stop();
    });

    it('with room for the intent only: the desktop is stopped rather than left unrecorded', async () => {
      const { agent, client } = await agentWith([], stateDir);
      fillLeaving(1);
      const err = await refused(call(client, client.startSession, { username: U_FULL, password: 'full1234' }));
      expect(err).toMatchObject({ code: status.UNAVAILABLE });
      expect(err.details).toMatch(/^VD_AGENT_STATE_UNWRITABLE: .*it was stopped/);
      await nothingLeft(agent, U_FULL);
      rmSync(join(stateDir, 'filler'), { force: true });
      await agent.stop();
    });
  });
});

describe('shutting down', () => {
  it('health watchers hear NOT_SERVING as soon as the agent is told to stop', async () => {
    const { agent } = await agentWith(['--shutdown-grace-ms', '2000']);
    const Health = makeGenericClientConstructor(healthService, 'grpc.health.v1.Health');
    const creds = credentials.createSsl(readFileSync(pki.caCert), readFileSync(pki.clientKey), readFileSync(pki.clientCert));
    const h = new Health(agent.address, creds, { 'grpc.ssl_target_name_override': 'localhost' }) as Client &
      Record<string, (req: object) => NodeJS.EventEmitter & { cancel(): void }>;
    const seen: string[] = [];
    const stream = h.Watch!({ service: '' });
    stream.on('data', (m: { status: string }) => seen.push(String(m.status)));
    stream.on('error', () => undefined);
    await vi.waitFor(() => expect(seen).toEqual(['SERVING']));
    process.kill(agent.pid, 'SIGTERM');
    await vi.waitFor(() => expect(seen).toEqual(['SERVING', 'NOT_SERVING']), { timeout: 5_000 });
    stream.cancel();
    h.close();
  });
});

describe('health answers while desktops start', () => {
  it("GetStatus and ListSessions answer within the controller's DOWN threshold (2.5 s) while ten desktops are starting", async () => {
    const slow = slowXvnc(2);
    // Ten Xvnc starting at once on a busy 2-core machine may need more than the default 8 s budget.
    const { client } = await agentWith(['--xvnc', slow.path, '--start-timeout-ms', '25000',
      '--lookup-timeout-ms', '20000']);
    const users = Array.from({ length: 10 }, (_, i) => testUser(51 + i));
    const starts = users.map((username) => call(client, client.startSession, { username, password: 'load1234' }, 30_000)
      .then((r) => { started.push({ client, session: r.session! }); return r; }));
    await vi.waitFor(() => expect(existsSync(slow.marker)).toBe(true), { timeout: 10_000 });
    // A liveness bound, not a speed measurement (npm run bench:start measures): the controller marks a blade DOWN
    // when these do not answer.
    for (let i = 0; i < 20; i++) {
      const s = await call(client, client.getStatus, {}, 2500);
      expect(s.capacity).toBe(50);
      await call(client, client.listSessions, {}, 2500);
    }
    const results = await Promise.all(starts);
    expect(results.filter((r) => !r.existing)).toHaveLength(10);
    for (const r of results) await call(client, client.stopSession, { id: r.session!.id });
  });
});
