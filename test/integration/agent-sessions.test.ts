/**
 * The agent starts real TigerVNC desktops as real users: the desktop, reached through the agent's relay, speaks RFB
 * and takes the password, processes run with exactly the user's identity, the password stays out of
 * argv/environment/logs, sessions are per user, and StopSession and a dying Xvnc end them; the agent runs above its
 * desktops' CPU priority. Users vdtest01..vdtest04, vdtest15, vdtest33..vdtest35, vdtest46, vdtest48 and vdtest118.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, lstatSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runtimeFiles, sessionRuntimeDir } from '../../agent/vnc/runtime-dir.js';
import { defaults } from '../../agent/config.js';
import { SPAWNER_ARGV0 } from '../../agent/vnc/spawner.js';
import type { Session } from '../../proto/gen/vncdispatch/agent/v1/agent.js';
import { obfuscateVncPassword } from '../../shared/vnc-des.js';
import {
  agentClient, alive, call, endDesktop, procIds, sessionPids, startAgent, waitFor, type AgentClient,
  type AgentProcess,
} from '../helpers/agent-process.js';
import { makePki, type Pki } from '../helpers/certs.js';
import { openRelay } from '../helpers/relay-client.js';
import { rfbConnect } from '../helpers/rfb-client.js';
import { idsOf, testUser } from '../helpers/users.js';

const U1 = testUser(1);
const U2 = testUser(2);
const U3 = testUser(3);
const OTHER = testUser(4);
const CONC = testUser(15);
// Tests run in any order, so a test that changes or ends a desktop has a user of its own.
const U_AGAIN = testUser(33);
const U_STOP = testUser(34);
const U_KILLED = testUser(35);
const U_SCRIPT_EXIT = testUser(48);
const U_ONE_SPAWNER = testUser(118);
const U_NICE = testUser(46);
const PW1 = 'Kq3!x9Zp';
const PW2 = 'z7Yw2#rT';

let pki: Pki;
let agent: AgentProcess;
let client: AgentClient;
const started: Session[] = [];

/** Opens the desktop of session `id` through the agent's relay, as the controller does. */
const viaRelay = (id: string) => () => openRelay({ address: agent.address, sessionId: id, pki });

async function start(username: string, password: string, extra: { geometry?: string; depth?: number } = {}) {
  const res = await call(client, client.startSession, { username, password, ...extra });
  if (res.session && !started.some((s) => s.id === res.session!.id)) started.push(res.session);
  return res;
}

/** The session script's pid: the process in its own session, owned by the user, that is not Xvnc. */
function scriptLeaders(uid: number, xvncPid: number): number[] {
  return execFileSync('ps', ['-o', 'pid=,sid=', '-u', String(uid)], { encoding: 'utf8' }).trim().split('\n')
    .map((l) => l.trim().split(/\s+/).map(Number) as [number, number])
    .filter(([pid, sid]) => pid === sid && pid !== xvncPid).map(([pid]) => pid);
}

beforeAll(async () => {
  pki = makePki();
  agent = await startAgent({ pki });
  client = agentClient(agent.address, pki);
});

afterAll(async () => {
  for (const s of started) await endDesktop(client, s);
  client?.close();
  await agent?.stop();
});

describe('a started session', () => {
  let s: Session;
  beforeAll(async () => {
    const res = await start(U1, PW1);
    expect(res.existing).toBe(false);
    s = res.session!;
  });

  it('returns a Session describing the desktop', () => {
    expect(s.username).toBe(U1);
    expect(s.uid).toBe(idsOf(U1).uid);
    expect(s.port).toBe(0); // no TCP port: only the relay reaches the desktop
    expect(s.geometry).toBe('1280x800');
    expect(s.depth).toBe(24);
    expect(alive(s.pid)).toBe(true);
    expect(s.startedAt).toBeInstanceOf(Date);
  });

  it('speaks RFB through the relay and accepts the password', async () => {
    const r = await rfbConnect({ socket: viaRelay(s.id), password: PW1 });
    expect(r).toMatchObject({ ok: true, width: 1280, height: 800, serverName: `${U1}'s desktop` });
    expect(r.securityTypes).toEqual([2]);
  });

  it('shows the default session: the blue root window the shipped script paints', async () => {
    // xsetroot runs a moment after the reply; poll the pixel rather than assume when.
    let pixel: { r: number; g: number; b: number } | undefined;
    await waitFor(async () => {
      pixel = (await rfbConnect({ socket: viaRelay(s.id), password: PW1, samplePixel: { x: 2, y: 2 } })).pixel;
      return pixel?.r === 0x34 && pixel.g === 0x65 && pixel.b === 0xa4;
    }, `the root window to turn #3465a4 (last seen ${JSON.stringify(pixel)})`);
  });

  it('refuses a wrong password', async () => {
    const r = await rfbConnect({ socket: viaRelay(s.id), password: 'wrong' });
    expect(r.ok).toBe(false);
    expect(r.reason).toBe('auth-failed');
  });

  it("runs Xvnc and the session script with the user's uid, primary gid and supplementary groups, never gid 0", async () => {
    const want = idsOf(U1);
    await waitFor(() => scriptLeaders(want.uid, s.pid).length > 0, 'the session script');
    const pids = [s.pid, ...scriptLeaders(want.uid, s.pid).flatMap((p) => sessionPids(p))];
    expect(pids.length).toBeGreaterThanOrEqual(2);
    for (const pid of pids) {
      const ids = procIds(pid);
      if (!ids) continue; // exited between listing and reading
      expect(ids.uid).toBe(want.uid);
      expect(ids.gid).toBe(want.gid);
      expect(ids.groups).toEqual(want.groups);
      expect(ids.groups).not.toContain(0);
    }
  });

  it('runs each process in a clean environment, Xvnc in its runtime directory, and the password nowhere in argv or environment', async () => {
    const dir = sessionRuntimeDir(agent.runtimeDir, s.id);
    const pids = [s.pid, ...scriptLeaders(idsOf(U1).uid, s.pid).flatMap((p) => sessionPids(p))];
    const obfuscated = obfuscateVncPassword(PW1);
    for (const pid of pids) {
      let environ: Buffer;
      let cmdline: Buffer;
      try {
        environ = readFileSync(`/proc/${pid}/environ`);
        cmdline = readFileSync(`/proc/${pid}/cmdline`);
      } catch {
        continue;
      }
      for (const buf of [environ, cmdline]) {
        expect(buf.includes(PW1)).toBe(false);
        expect(buf.includes(obfuscated)).toBe(false);
      }
      if (pid === s.pid) {
        const env = environ.toString().split('\0').filter(Boolean).map((kv) => kv.split('=')[0]).sort();
        expect(env).toEqual(['HOME', 'LOGNAME', 'PATH', 'SHELL', 'USER']);
        expect(execFileSync('readlink', [`/proc/${pid}/cwd`], { encoding: 'utf8' }).trim()).toBe(dir);
      }
    }
    for (const line of agent.logs) expect(line).not.toContain(PW1);
  });

  it("keeps the password file 0600, owned by the user, in vncpasswd -f format, in the session's own directory", () => {
    const { dir, passwd: path } = runtimeFiles(sessionRuntimeDir(agent.runtimeDir, s.id));
    const d = lstatSync(dir);
    expect(d.isDirectory()).toBe(true);
    expect(d.mode & 0o777).toBe(0o700);
    expect(d.uid).toBe(idsOf(U1).uid);
    expect(lstatSync(agent.runtimeDir).uid).toBe(0);
    const st = lstatSync(path);
    expect(st.isFile()).toBe(true);
    expect(st.mode & 0o777).toBe(0o600);
    expect(st.uid).toBe(idsOf(U1).uid);
    expect(st.gid).toBe(idsOf(U1).gid);
    expect(readFileSync(path)).toEqual(obfuscateVncPassword(PW1));
  });

  it("lets the user's own X clients open the display and refuses other local users", async () => {
    const run = (user: string, xauthority: string | undefined) => spawnSync('setpriv',
      ['--reuid', user, '--regid', user, '--init-groups', '--', 'xdpyinfo', '-display', `:${s.display}`],
      { env: { PATH: '/usr/bin:/bin', HOME: `/home/${user}`, ...(xauthority ? { XAUTHORITY: xauthority } : {}) },
        encoding: 'utf8', timeout: 10_000 });
    const { xauth } = runtimeFiles(sessionRuntimeDir(agent.runtimeDir, s.id));
    expect(run(U1, xauth).status).toBe(0);
    const intruder = run(OTHER, undefined);
    expect(intruder.status).not.toBe(0);
  });

  it('is returned again (existing) for a second StartSession, with the new password replacing the old one', async () => {
    const first = (await start(U_AGAIN, PW1)).session!;
    const again = await start(U_AGAIN, PW2);
    expect(again.existing).toBe(true);
    expect(again.session!.id).toBe(first.id);
    expect(again.session!.pid).toBe(first.pid);
    expect((await rfbConnect({ socket: viaRelay(first.id), password: PW2 })).ok).toBe(true);
    expect((await rfbConnect({ socket: viaRelay(first.id), password: PW1 })).reason).toBe('auth-failed');
  });
});

describe('several users', () => {
  it('get one session each, on different displays, all listed', async () => {
    const [a, b] = await Promise.all([start(U2, 'aaaa1111'), start(U3, 'bbbb2222', { geometry: '1024x768', depth: 16 })]);
    expect(a.session!.display).not.toBe(b.session!.display);
    expect(b.session!.geometry).toBe('1024x768');
    expect(b.session!.depth).toBe(16);
    const rb = await rfbConnect({ socket: viaRelay(b.session!.id), password: 'bbbb2222' });
    expect(rb).toMatchObject({ ok: true, width: 1024, height: 768 });
    // Each desktop takes only its own user's password.
    expect((await rfbConnect({ socket: viaRelay(a.session!.id), password: 'bbbb2222' })).ok).toBe(false);
    const listed = (await call(client, client.listSessions, {})).sessions.map((x) => x.username);
    expect(listed).toEqual(expect.arrayContaining([U2, U3]));
  });
});

describe('concurrent StartSession for one user', () => {
  it('starts exactly one desktop and returns it to every caller', async () => {
    const results = await Promise.all([1, 2, 3].map(() => start(CONC, 'conc1234')));
    expect(new Set(results.map((r) => r.session!.id)).size).toBe(1);
    expect(results.filter((r) => !r.existing)).toHaveLength(1);
    const xvncs = execFileSync('ps', ['-o', 'comm=', '-u', String(idsOf(CONC).uid)], { encoding: 'utf8' })
      .split('\n').filter((c) => c.startsWith('Xvnc') || c.startsWith('Xtigervnc'));
    expect(xvncs).toHaveLength(1);
    await call(client, client.stopSession, { id: results[0]!.session!.id });
  });
});

describe('stale X locks', () => {
  it('a lock file and socket left by a dead X server do not block a start', async () => {
    let n = 0;
    while (existsSync(`/tmp/.X${n}-lock`) || existsSync(`/tmp/.X11-unix/X${n}`)) n++;
    const lock = `/tmp/.X${n}-lock`;
    const socket = `/tmp/.X11-unix/X${n}`;
    // Root-owned, naming a pid that does not exist, and a socket nobody listens on (the server "crashed"): the
    // user's Xvnc can remove neither.
    writeFileSync(lock, '   4194302\n', { mode: 0o444, flag: 'wx' });
    execFileSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(socket)}, () => process.exit(0))`]);
    try {
      expect(existsSync(socket)).toBe(true);
      const s = (await start(OTHER, 'lock1234')).session!;
      expect(s.display).not.toBe(n);
      expect((await rfbConnect({ socket: viaRelay(s.id), password: 'lock1234' })).ok).toBe(true);
      await call(client, client.stopSession, { id: s.id });
    } finally {
      rmSync(lock, { force: true });
      rmSync(socket, { force: true });
    }
  });
});

describe('ending sessions', () => {
  it('StopSession ends Xvnc and the session script and removes its runtime directory', async () => {
    const s = (await start(U_STOP, 'cccc3333')).session!;
    const uid = idsOf(U_STOP).uid;
    await waitFor(() => scriptLeaders(uid, s.pid).length > 0, 'the session script');
    const script = scriptLeaders(uid, s.pid);
    const stopped = await call(client, client.stopSession, { id: s.id });
    expect(stopped.session!.id).toBe(s.id);
    expect(alive(s.pid)).toBe(false);
    for (const p of script) expect(sessionPids(p)).toEqual([]);
    expect(existsSync(sessionRuntimeDir(agent.runtimeDir, s.id))).toBe(false);
    expect((await call(client, client.listSessions, {})).sessions.map((x) => x.id)).not.toContain(s.id);
    expect((await rfbConnect({ socket: viaRelay(s.id), password: 'cccc3333' })).ok).toBe(false);
  });

  it('StopSession of an unknown session is NOT_FOUND', async () => {
    await expect(call(client, client.stopSession, { id: '00000000-0000-4000-8000-000000000000' }))
      .rejects.toMatchObject({ code: 5 });
  });

  it('a session whose Xvnc is killed vanishes from ListSessions, and the next StartSession replaces it', async () => {
    const s = (await start(U_KILLED, 'dddd4444')).session!;
    process.kill(s.pid, 'SIGKILL');
    await waitFor(async () => !(await call(client, client.listSessions, {})).sessions.some((x) => x.id === s.id),
      'the dead session to be reaped');
    await waitFor(() => !existsSync(sessionRuntimeDir(agent.runtimeDir, s.id)), 'the runtime directory to be removed');
    const fresh = await start(U_KILLED, 'eeee5555');
    expect(fresh.existing).toBe(false);
    expect(fresh.session!.id).not.toBe(s.id);
    expect((await rfbConnect({ socket: viaRelay(fresh.session!.id), password: 'eeee5555' })).ok).toBe(true);
  });

  it('a session whose session script exits is ended (like vncsession)', async () => {
    const s = (await start(U_SCRIPT_EXIT, 'ffff6666')).session!;
    const uid = idsOf(U_SCRIPT_EXIT).uid;
    await waitFor(() => scriptLeaders(uid, s.pid).length > 0, 'the session script');
    for (const p of scriptLeaders(uid, s.pid)) {
      for (const q of sessionPids(p)) {
        try {
          process.kill(q, 'SIGKILL');
        } catch {
          // Exited between the listing and the kill (the login shell hands over to the session script).
        }
      }
    }
    await waitFor(() => !alive(s.pid), 'Xvnc to be stopped');
    await waitFor(async () => !(await call(client, client.listSessions, {})).sessions.some((x) => x.id === s.id),
      'the session to leave ListSessions');
  });
});

/** The agent's spawner processes (what `ps` shows as vncdispatch-spawner, children of the agent). */
function spawnersOf(agentPid: number): number[] {
  // ps exits 1 when there are none.
  const children = spawnSync('ps', ['-o', 'pid=', '--ppid', String(agentPid)], { encoding: 'utf8' }).stdout
    .split('\n').map((l) => Number(l.trim())).filter((pid) => pid > 0);
  return children.filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0] === SPAWNER_ARGV0;
    } catch {
      return false; // exited while we looked
    }
  });
}

describe('spawner processes', () => {
  it('an agent runs three by default, and with --spawners 1 one, through which its desktops still start', async () => {
    await expect.poll(() => spawnersOf(agent.pid).length).toBe(3);
    const one = await startAgent({ pki, args: ['--spawners', '1'] });
    const oneClient = agentClient(one.address, pki);
    let session: Session | undefined;
    try {
      await expect.poll(() => spawnersOf(one.pid).length).toBe(1);
      const spawner = spawnersOf(one.pid)[0];
      session = (await call(oneClient, oneClient.startSession, { username: U_ONE_SPAWNER, password: 'eeee5555' })).session!;
      expect(alive(session.pid)).toBe(true);
      expect(spawnersOf(one.pid)).toEqual([spawner]);
    } finally {
      if (session) await endDesktop(oneClient, session);
      oneClient.close();
      await one.stop();
      rmSync(one.stateDir, { recursive: true, force: true });
      rmSync(one.runtimeDir, { recursive: true, force: true });
    }
  });
});

/** A process's nice value (field 19 of /proc/PID/stat: its main thread's). */
function niceOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
}

/** The nice value of the process's autogroup (its session's scheduling group), or undefined without autogroup. */
function autogroupNiceOf(pid: number): number | undefined {
  try {
    const m = / nice (-?\d+)/.exec(readFileSync(`/proc/${pid}/autogroup`, 'latin1'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined; // a kernel without CONFIG_SCHED_AUTOGROUP
  }
}

describe('CPU priority', () => {
  it('the agent runs above the desktops it starts, so a blade busy with desktops still answers', async () => {
    // The agent was started at the test runner's priority; it raised its own to --agent-nice (default -10), in its
    // own session's group too. What it starts runs at the priority it was started with.
    const started = niceOf(process.pid);
    const raised = Math.min(defaults.agentNice, started);
    expect(niceOf(agent.pid)).toBe(raised);
    const agentGroup = autogroupNiceOf(agent.pid);
    if (agentGroup !== undefined) expect(agentGroup, "the agent's autogroup").toBe(raised);
    for (const pid of spawnersOf(agent.pid)) expect(niceOf(pid), `spawner ${pid}`).toBe(started);
    const s = (await start(U_NICE, 'nN4!ce46')).session!;
    const [script] = scriptLeaders(s.uid, s.pid);
    expect(script, 'the session script').toBeDefined();
    for (const pid of [s.pid, script!]) {
      expect(niceOf(pid), `process ${pid}`).toBe(started);
      // Each desktop's session is a group of its own, at the default weight: below the agent's.
      const group = autogroupNiceOf(pid);
      if (group !== undefined) expect(group, `autogroup of ${pid}`).toBe(0);
    }
    await endDesktop(client, s);
  });
});
