/**
 * Bad input gets the right gRPC status, a message a person understands, and spawns and writes nothing.
 * Users vdtest10..vdtest12 (and vdoutsider, root, daemon, which never get a desktop).
 */
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Session } from '../../proto/gen/vncdispatch/agent/v1/agent.js';
import {
  agentClient, call, descendants, endDesktop, pidsOfUid, startAgent, waitFor, type AgentClient, type AgentProcess,
} from '../helpers/agent-process.js';
import { makePki, type Pki } from '../helpers/certs.js';
import { openRelay } from '../helpers/relay-client.js';
import { rfbConnect } from '../helpers/rfb-client.js';
import { idsOf, OUTSIDER, testUser } from '../helpers/users.js';

const U = testUser(10);
const U2 = testUser(11);
const U3 = testUser(12);

let pki: Pki;
const agents: AgentProcess[] = [];
const started: { client: AgentClient; session: Session }[] = [];

async function agentWith(args: string[] = []): Promise<{ agent: AgentProcess; client: AgentClient }> {
  const agent = await startAgent({ pki, args });
  agents.push(agent);
  return { agent, client: agentClient(agent.address, pki) };
}

function sessionFiles(agent: AgentProcess): string[] {
  const dir = join(agent.stateDir, 'sessions');
  return existsSync(dir) ? readdirSync(dir) : [];
}

/** Modification time of a file, or 'absent': to show a refused request wrote nothing. */
function stamp(path: string): string {
  try {
    return String(statSync(path).mtimeMs);
  } catch {
    return 'absent';
  }
}

/** Runs `fn` with an executable session script holding `text`, in a directory every user can read; removes it after. */
async function withSessionScript(text: string, fn: (script: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'vd-session-script-'));
  try {
    chmodSync(dir, 0o755);
    const script = join(dir, 'session');
    writeFileSync(script, text, { mode: 0o755 });
    await fn(script);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

beforeAll(() => {
  pki = makePki();
});

afterAll(async () => {
  for (const { client, session } of started) await endDesktop(client, session);
  for (const a of agents) await a.stop();
});

describe('refused usernames', () => {
  let agent: AgentProcess;
  let client: AgentClient;
  beforeAll(async () => ({ agent, client } = await agentWith()));

  const cases: [string, string, status][] = [
    ['a shell separator', 'a;id', status.INVALID_ARGUMENT],
    ['a command substitution', '$(id)', status.INVALID_ARGUMENT],
    ['an option', '-c', status.INVALID_ARGUMENT],
    ['a path', '../x', status.INVALID_ARGUMENT],
    ['a 10 kB name', 'a'.repeat(10_240), status.INVALID_ARGUMENT],
    ['an empty name', '', status.INVALID_ARGUMENT],
    ['upper case and spaces', 'Bob Smith', status.INVALID_ARGUMENT],
    ['a newline', `${U}\nroot`, status.INVALID_ARGUMENT],
    ['an unknown user', 'vdnosuchuser', status.NOT_FOUND],
    ['root', 'root', status.PERMISSION_DENIED],
    ['a system account', 'daemon', status.PERMISSION_DENIED],
  ];

  it.each(cases)('%s is refused with the right status and nothing spawned or written', async (_what, username, code) => {
    const before = { root: stamp('/root/.vnc/passwd'), daemon: stamp('/usr/sbin/.vnc/passwd') };
    const err = await call(client, client.startSession, { username, password: 'abcd1234' }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code });
    const details = (err as { details: string }).details;
    expect(details.length).toBeLessThan(300);
    expect(details).toMatch(/username|user/);
    expect(descendants(agent.pid)).toEqual([]);
    expect(sessionFiles(agent)).toEqual([]);
    expect({ root: stamp('/root/.vnc/passwd'), daemon: stamp('/usr/sbin/.vnc/passwd') })
      .toEqual(before);
    expect((await call(client, client.listSessions, {})).sessions).toEqual([]);
  });

  it('refuses a bad password, geometry or depth for a real user without touching the account', async () => {
    const uid = idsOf(U).uid;
    const procsBefore = pidsOfUid(uid).length;
    const passwdBefore = stamp(`/home/${U}/.vnc/passwd`);
    const bad = [
      { username: U, password: '' },
      { username: U, password: 'ninechars' },
      { username: U, password: 'tab\there' },
      { username: U, password: 'abcd1234', geometry: '1x1' },
      { username: U, password: 'abcd1234', geometry: '1280x800;id' },
      { username: U, password: 'abcd1234', geometry: '99999x99999' },
      { username: U, password: 'abcd1234', depth: 8 },
    ];
    for (const req of bad) {
      await expect(call(client, client.startSession, req)).rejects.toMatchObject({ code: status.INVALID_ARGUMENT });
    }
    expect(pidsOfUid(uid).length).toBe(procsBefore);
    expect(stamp(`/home/${U}/.vnc/passwd`)).toBe(passwdBefore);
    expect(descendants(agent.pid)).toEqual([]);
  });

  it('never logs the password of a refused request', async () => {
    await call(client, client.startSession, { username: 'a;id', password: 'Pw!sEcr8' }).catch(() => undefined);
    await call(client, client.startSession, { username: 'vdnosuchuser', password: 'Pw!sEcr8' }).catch(() => undefined);
    expect(agent.logs.join('\n')).not.toContain('Pw!sEcr8');
  });
});

describe('policy flags', () => {
  it('--allow-group refuses a user outside the group and admits a member', async () => {
    const { agent, client } = await agentWith(['--allow-group', 'vdusers']);
    const err = await call(client, client.startSession, { username: OUTSIDER, password: 'abcd1234' }).catch((e) => e);
    expect(err).toMatchObject({ code: status.PERMISSION_DENIED });
    expect((err as { details: string }).details).toContain('vdusers');
    expect(descendants(agent.pid)).toEqual([]);
    const ok = await call(client, client.startSession, { username: U, password: 'abcd1234' });
    started.push({ client, session: ok.session! });
    const socket = () => openRelay({ address: agent.address, sessionId: ok.session!.id, pki });
    expect((await rfbConnect({ socket, password: 'abcd1234' })).ok).toBe(true);
  });

  it('--min-uid refuses accounts below it', async () => {
    const { client } = await agentWith(['--min-uid', String(idsOf(U2).uid + 1)]);
    await expect(call(client, client.startSession, { username: U2, password: 'abcd1234' }))
      .rejects.toMatchObject({ code: status.PERMISSION_DENIED });
  });

  it('--max-sessions gives RESOURCE_EXHAUSTED once full, but still returns a live session to its user', async () => {
    const { agent, client } = await agentWith(['--max-sessions', '1']);
    const first = await call(client, client.startSession, { username: U2, password: 'abcd1234' });
    started.push({ client, session: first.session! });
    const err = await call(client, client.startSession, { username: U3, password: 'abcd1234' }).catch((e) => e);
    expect(err).toMatchObject({ code: status.RESOURCE_EXHAUSTED });
    expect((err as { details: string }).details).toMatch(/maximum of 1 session/);
    expect(pidsOfUid(idsOf(U3).uid)).toEqual([]);
    const again = await call(client, client.startSession, { username: U2, password: 'abcd1234' });
    expect(again.existing).toBe(true);
    const statusRes = await call(client, client.getStatus, {});
    expect(statusRes).toMatchObject({ capacity: 1, liveSessions: 1 });
    expect(descendants(agent.pid).length).toBeGreaterThan(0);
  });

  it('an Xvnc that cannot start gives UNAVAILABLE and leaves no password file or session record', async () => {
    const { agent, client } = await agentWith(['--xvnc', '/bin/false']);
    const err = await call(client, client.startSession, { username: U3, password: 'abcd1234' }).catch((e) => e);
    expect(err).toMatchObject({ code: status.UNAVAILABLE });
    expect((err as { details: string }).details).toMatch(/Xvnc failed to start/);
    expect(readdirSync(agent.runtimeDir)).toEqual([]);
    expect(sessionFiles(agent)).toEqual([]);
    expect((await call(client, client.listSessions, {})).sessions).toEqual([]);
  });

  it('a failed start says why in the agent\'s log: the last lines its desktop wrote, though its runtime directory is gone', async () => {
    const text = '#!/bin/sh\necho "first line" >&2\necho "the reason this session gave up" >&2\nexit 3\n';
    await withSessionScript(text, async (script) => {
      const { agent, client } = await agentWith(['--session-script', script, '--start-settle-ms', '2000']);
      const err = await call(client, client.startSession, { username: U3, password: 'abcd1234' }).catch((e) => e);
      expect((err as { details: string }).details).toMatch(/exited \(code 3\) right after it started; the agent's log has the last lines/);
      expect(readdirSync(agent.runtimeDir)).toEqual([]);
      // The agent writes the line before it answers, but its stdout pipe and the gRPC answer reach this process in
      // either order: wait for the line to arrive.
      const abandoned = () => agent.logs.filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as { msg?: string; desktopLog?: string[] })
        .find((l) => l.msg === 'start abandoned; everything it spawned was stopped');
      await waitFor(() => abandoned() !== undefined, 'the agent\'s "start abandoned" line');
      const line = abandoned();
      expect(line?.desktopLog?.slice(-2)).toEqual(['first line', 'the reason this session gave up']);
    });
  });

  it('a desktop whose processes ignore SIGTERM and keep forking is still ended by StopSession, with nothing of it left', async () => {
    // A user's session can trap TERM; its background loop starts another long-lived process every 20 ms, so some are
    // born after the agent's first scan of the session, and one may be born between that scan and the SIGKILL.
    const text = "#!/bin/sh\ntrap '' TERM\n( while :; do sleep 1000 & sleep 0.02; done ) &\nexec sleep 1000\n";
    await withSessionScript(text, async (script) => {
      const { agent, client } = await agentWith(['--session-script', script, '--stop-grace-ms', '300']);
      const s = (await call(client, client.startSession, { username: U3, password: 'abcd1234' })).session!;
      await call(client, client.stopSession, { id: s.id });
      expect(pidsOfUid(idsOf(U3).uid)).toEqual([]);
      expect(agent.logs.some((l) => l.includes('session did not end after SIGTERM; sending SIGKILL'))).toBe(true);
      expect(readdirSync(agent.runtimeDir)).toEqual([]);
    });
  });

  it('a session that exits right after it starts is a failed start, not a desktop: no Xvnc is left running', async () => {
    // /bin/false stands for a session script with a typo: the launcher execs it and it exits at once.
    const { agent, client } = await agentWith(['--session-script', '/bin/false', '--start-settle-ms', '2000']);
    const err = await call(client, client.startSession, { username: U3, password: 'abcd1234' }).catch((e) => e);
    expect(err).toMatchObject({ code: status.UNAVAILABLE });
    expect((err as { details: string }).details).toMatch(/the session exited \(code 1\) right after it started/);
    expect(pidsOfUid(idsOf(U3).uid)).toEqual([]);
    expect(readdirSync(agent.runtimeDir)).toEqual([]);
    expect(sessionFiles(agent)).toEqual([]);
    expect((await call(client, client.listSessions, {})).sessions).toEqual([]);
  });
});
