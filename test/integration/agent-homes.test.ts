/**
 * Home directories cannot hurt the agent: it writes nothing in them and opens nothing there, so a FIFO, a wrong owner
 * or another blade sharing /home changes nothing for it; the user's own ~/.vnc/xstartup runs only when no one else
 * could have written it, and the desktop log says which session ran and why. Users without a usable home, `nobody`
 * and members of group root are refused with clear codes. Users vdtest51..vdtest57.
 */
import { execFileSync } from 'node:child_process';
import {
  chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync,
} from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { runtimeFiles, sessionRuntimeDir } from '../../agent/vnc/runtime-dir.js';
import type { Session } from '../../proto/gen/vncdispatch/agent/v1/agent.js';
import {
  agentClient, call, descendants, desktopLog, endDesktop, pidsOfUid, procIds, startAgent, type AgentClient,
  type AgentProcess,
} from '../helpers/agent-process.js';
import { makePki, type Pki } from '../helpers/certs.js';
import { openRelay } from '../helpers/relay-client.js';
import { rfbConnect } from '../helpers/rfb-client.js';
import { idsOf, testUser } from '../helpers/users.js';

const U_FIFO = testUser(51);
const U_BYSTANDER = testUser(52);
const U_FOREIGN = testUser(53);
const U_OWN = testUser(54);
const U_SHARED = testUser(55);
const U_NOHOME = testUser(56);
const U_ROOTGRP = testUser(57);

let pki: Pki;
/** A session script that touches nothing (the fallback's login shell would write ~/.bash_history). */
let quietScript: string;
let agent: AgentProcess;
let client: AgentClient;
const extraAgents: AgentProcess[] = [];
const started: { client: AgentClient; session: Session }[] = [];

const home = (u: string) => `/home/${u}`;
const vncDir = (u: string) => `${home(u)}/.vnc`;

function asUser(user: string, argv: string[]): void {
  execFileSync('setpriv', ['--reuid', user, '--regid', user, '--init-groups', '--', ...argv]);
}

/** A ~/.vnc/xstartup that announces itself in the desktop log, then lives as long as the desktop. */
function plantXstartup(user: string, owner = user): string {
  const dir = vncDir(user);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { mode: 0o700 });
  const script = `${dir}/xstartup`;
  writeFileSync(script, '#!/bin/sh\necho XSTARTUP-RAN\nexec sleep 600\n', { mode: 0o755 });
  const ids = idsOf(owner);
  chownSync(dir, ids.uid, ids.gid);
  chownSync(script, ids.uid, ids.gid);
  return script;
}

async function start(c: AgentClient, username: string, password = 'abcd1234', timeoutMs = 20_000) {
  const res = await call(c, c.startSession, { username, password }, timeoutMs);
  started.push({ client: c, session: res.session! });
  return res.session!;
}

/** Waits for the desktop log of `user` on `a` to say which session script it chose, and returns the log. */
async function chosen(a: AgentProcess, user: string): Promise<string> {
  const uid = idsOf(user).uid;
  return vi.waitFor(() => {
    const log = desktopLog(a.runtimeDir, uid);
    expect(log).toMatch(/vncdispatch: session script: /);
    return log;
  }, { timeout: 10_000, interval: 50 });
}

beforeAll(async () => {
  pki = makePki();
  const dir = mkdtempSync(join(tmpdir(), 'vd-homes-'));
  chmodSync(dir, 0o755);
  quietScript = join(dir, 'quiet-session.sh');
  writeFileSync(quietScript, '#!/bin/sh\nexec sleep 600\n', { mode: 0o755 });
  agent = await startAgent({ pki });
  client = agentClient(agent.address, pki);
});

afterAll(async () => {
  for (const { client: c, session } of started) await endDesktop(c, session);
  for (const u of [U_FIFO, U_FOREIGN, U_OWN, U_SHARED]) rmSync(vncDir(u), { recursive: true, force: true });
  client?.close();
  for (const a of extraAgents) await a.stop();
  await agent?.stop();
});

describe('the agent writes nothing in home directories', () => {
  it("a start and stop leave the user's home exactly as it was; the files live in a root-owned runtime directory", async () => {
    const a = await startAgent({ pki, args: ['--session-script', quietScript] });
    extraAgents.push(a);
    const c = agentClient(a.address, pki);
    rmSync(vncDir(U_SHARED), { recursive: true, force: true });
    const before = { list: readdirSync(home(U_SHARED)).sort(), mtime: statSync(home(U_SHARED)).mtimeMs };
    const s = await start(c, U_SHARED);
    const files = runtimeFiles(sessionRuntimeDir(a.runtimeDir, s.id));
    for (const f of [files.passwd, files.xauth, files.log]) {
      const st = lstatSync(f);
      expect([st.isFile(), st.uid, st.mode & 0o777]).toEqual([true, s.uid, 0o600]);
    }
    expect((await rfbConnect({ socket: () => openRelay({ address: a.address, sessionId: s.id, pki }), password: 'abcd1234' })).ok).toBe(true);
    await call(c, c.stopSession, { id: s.id });
    c.close();
    expect(existsSync(files.dir)).toBe(false);
    expect(existsSync(vncDir(U_SHARED))).toBe(false);
    expect({ list: readdirSync(home(U_SHARED)).sort(), mtime: statSync(home(U_SHARED)).mtimeMs }).toEqual(before);
  });

  it("a FIFO planted in ~/.vnc, at xstartup and at every file the agent once wrote there, freezes nothing: the user's desktop and another user's both start", async () => {
    const dir = vncDir(U_FIFO);
    rmSync(dir, { recursive: true, force: true });
    asUser(U_FIFO, ['mkdir', '-m', '700', dir]);
    for (const name of ['passwd', 'xstartup', `vncdispatch-${hostname()}.log`, `vncdispatch-${hostname()}.xauth`]) {
      asUser(U_FIFO, ['mkfifo', '-m', '700', `${dir}/${name}`]);
    }
    // Both at once: a blocked event loop would time out the bystander's call too.
    const [mine, theirs] = await Promise.all([start(client, U_FIFO, 'fifo1234'), start(client, U_BYSTANDER, 'byst1234')]);
    expect((await rfbConnect({ socket: () => openRelay({ address: agent.address, sessionId: mine.id, pki }), password: 'fifo1234' })).ok).toBe(true);
    expect((await rfbConnect({ socket: () => openRelay({ address: agent.address, sessionId: theirs.id, pki }), password: 'byst1234' })).ok).toBe(true);
    const log = await chosen(agent, U_FIFO);
    expect(log).toContain(`not using ~/.vnc/xstartup: the script ${dir}/xstartup is a fifo, not a regular`);
    expect(log).toMatch(/session script: .*fallback session/);
    for (const name of readdirSync(dir)) expect(lstatSync(`${dir}/${name}`).isFIFO()).toBe(true);
    expect((await call(client, client.getStatus, {}, 2000)).liveSessions).toBeGreaterThanOrEqual(2);
  });
});

describe("the user's ~/.vnc/xstartup", () => {
  it('runs when it and ~/.vnc are the user\'s and only the user can write them', async () => {
    plantXstartup(U_OWN);
    await start(client, U_OWN);
    const log = await chosen(agent, U_OWN);
    expect(log).toContain(`session script: ${vncDir(U_OWN)}/xstartup (yours`);
    await vi.waitFor(() => expect(desktopLog(agent.runtimeDir, idsOf(U_OWN).uid)).toContain('XSTARTUP-RAN'));
  });

  it('is not used when ~/.vnc belongs to another user (who could have planted it); the log says why', async () => {
    plantXstartup(U_FOREIGN, U_BYSTANDER);
    await start(client, U_FOREIGN);
    const log = await chosen(agent, U_FOREIGN);
    expect(log).toContain(`not using ~/.vnc/xstartup: the directory ${vncDir(U_FOREIGN)} belongs to uid ` +
      `${idsOf(U_BYSTANDER).uid}, not to you`);
    expect(log).not.toContain('XSTARTUP-RAN');
  });

  it('is not used when group or others may write it', async () => {
    const a = await startAgent({ pki });
    extraAgents.push(a);
    const c = agentClient(a.address, pki);
    const script = plantXstartup(U_OWN);
    chmodSync(script, 0o775);
    await start(c, U_OWN);
    const log = await chosen(a, U_OWN);
    expect(log).toContain(`not using ~/.vnc/xstartup: the script ${script} is writable by group or others (mode 775)`);
    expect(log).not.toContain('XSTARTUP-RAN');
    c.close();
  });

  it('is overridden by --session-script', async () => {
    const a = await startAgent({ pki, args: ['--session-script', quietScript] });
    extraAgents.push(a);
    const c = agentClient(a.address, pki);
    plantXstartup(U_FOREIGN);
    await start(c, U_FOREIGN);
    expect(await chosen(a, U_FOREIGN)).toContain(`session script: ${quietScript} (set by the operator with --session-script)`);
    c.close();
  });
});

describe('two blades sharing /home', () => {
  it("no longer overwrite each other's password file: each desktop keeps its own password", async () => {
    const other = await startAgent({ pki });
    extraAgents.push(other);
    const c2 = agentClient(other.address, pki);
    const first = await start(client, U_SHARED, 'first111');
    const second = await start(c2, U_SHARED, 'second22');
    expect((await rfbConnect({ socket: () => openRelay({ address: agent.address, sessionId: first.id, pki }), password: 'first111' })).ok).toBe(true);
    expect((await rfbConnect({ socket: () => openRelay({ address: other.address, sessionId: second.id, pki }), password: 'second22' })).ok).toBe(true);
    await call(c2, c2.stopSession, { id: second.id });
    c2.close();
  });
});

describe('users who may not have a desktop', () => {
  it('a user whose home is missing gets FAILED_PRECONDITION telling the admin what to fix, and nothing is spawned', async () => {
    const missing = `/nonexistent-vd-home-${process.pid}`;
    execFileSync('usermod', ['-d', missing, U_NOHOME]);
    try {
      const err = await call(client, client.startSession, { username: U_NOHOME, password: 'abcd1234' }).catch((e) => e);
      expect(err).toMatchObject({ code: status.FAILED_PRECONDITION });
      expect((err as { details: string }).details).toMatch(
        new RegExp(`VD_AGENT_HOME_UNUSABLE: the home directory ${missing} of ${U_NOHOME} is missing .* create it`));
      expect(pidsOfUid(idsOf(U_NOHOME).uid)).toEqual([]);
      expect(readdirSync(agent.runtimeDir).filter((d) => statSync(`${agent.runtimeDir}/${d}`).uid === idsOf(U_NOHOME).uid))
        .toEqual([]);
    } finally {
      execFileSync('usermod', ['-d', home(U_NOHOME), U_NOHOME]);
    }
  });

  it('nobody is refused with PERMISSION_DENIED even with --min-uid 1', async () => {
    const a = await startAgent({ pki, args: ['--min-uid', '1'] });
    extraAgents.push(a);
    const c = agentClient(a.address, pki);
    const err = await call(c, c.startSession, { username: 'nobody', password: 'abcd1234' }).catch((e) => e);
    expect(err).toMatchObject({ code: status.PERMISSION_DENIED });
    expect((err as { details: string }).details).toMatch(/VD_AGENT_USER_FORBIDDEN: user nobody is the unprivileged/);
    expect(descendants(a.pid)).toEqual([]);
    c.close();
  });

  describe('a member of group root (gid 0)', () => {
    beforeAll(() => execFileSync('usermod', ['-aG', 'root', U_ROOTGRP]));
    afterAll(() => execFileSync('gpasswd', ['-d', U_ROOTGRP, 'root'], { stdio: 'ignore' }));

    it('is refused by default with PERMISSION_DENIED naming the flag, and nothing is spawned', async () => {
      const err = await call(client, client.startSession, { username: U_ROOTGRP, password: 'abcd1234' }).catch((e) => e);
      expect(err).toMatchObject({ code: status.PERMISSION_DENIED });
      expect((err as { details: string }).details).toMatch(/VD_AGENT_USER_ROOT_GROUP: .*group root.*--allow-root-group/);
      expect(pidsOfUid(idsOf(U_ROOTGRP).uid)).toEqual([]);
    });

    it('gets a desktop, carrying gid 0 as the operator allowed, with --allow-root-group', async () => {
      const a = await startAgent({ pki, args: ['--allow-root-group'] });
      extraAgents.push(a);
      const c = agentClient(a.address, pki);
      const s = await start(c, U_ROOTGRP);
      expect(procIds(s.pid)?.groups).toContain(0);
      await call(c, c.stopSession, { id: s.id });
      c.close();
    });
  });
});
