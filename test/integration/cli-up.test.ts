/**
 * `vncdispatch up` as people run it: the built bin (dist/controller/cli.js) as a real process starting a real agent
 * and controller (mutual TLS, real Xvnc as vdtest116..vdtest118), each run in its own temp directory with ports the
 * kernel picks. What a person notices: JSON lines in a pipe, pretty lines on a terminal (a real pseudo-terminal made
 * by util-linux `script`, where Ctrl-C is a real ^C typed into it), and that stopping `up`, however it happens,
 * leaves no desktop, agent or controller of it running.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { stripVTControlCharacters } from 'node:util';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { repoRoot } from '../helpers/node-service.js';
import { testUser } from '../helpers/users.js';
import { createStore } from '../../controller/store/index.js';

const CLI = resolve(repoRoot(), 'dist', 'controller', 'cli.js');
const dirs: string[] = [];
const running: ChildProcess[] = [];

afterAll(() => {
  for (const p of running) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

interface Up {
  proc: ChildProcess;
  dir: string;
  /** Everything written to stdout so far. */
  out(): string;
  exit: Promise<number | null>;
}

/** Starts `vncdispatch up` on ports 0 in fresh directories; `tty` runs it under a pseudo-terminal. */
function startUp(extra: string[], tty = false): Up {
  const dir = mkdtempSync(join(tmpdir(), 'vd-up-'));
  const runtimeDir = mkdtempSync(join(tmpdir(), 'vd-up-run-'));
  dirs.push(dir, runtimeDir);
  const args = [CLI, 'up', '--dir', dir, '--runtime-dir', runtimeDir, '--port', '0', '--agent-port', '0', ...extra];
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', TERM: 'xterm' };
  const proc = tty
    ? spawn('script', ['-qefc', `exec ${[process.execPath, ...args].join(' ')}`, '/dev/null'], { env, stdio: ['pipe', 'pipe', 'pipe'] })
    : spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  running.push(proc);
  let out = '';
  let err = '';
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exit = new Promise<number | null>((r) => proc.once('close', (code) => r(code)));
  void exit.then(() => err && console.log(`up stderr:\n${err}`));
  return { proc, dir, out: () => out, exit };
}

/** Waits until up says it is up (in either format). */
async function untilUp(up: Up): Promise<void> {
  await vi.waitFor(() => {
    if (up.proc.exitCode !== null) throw new Error(`up exited ${up.proc.exitCode}:\n${up.out()}`);
    expect(up.out()).toContain('vncdispatch is up');
  }, { timeout: 60_000, interval: 100 });
}

/** The JSON log records of a piped run. */
function records(up: Up): Record<string, unknown>[] {
  return up.out().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** The pid of up's agent or controller, as up logs it. */
function childPid(up: Up, child: 'agent' | 'controller'): number {
  const pid = records(up).find((r) => r.service === 'vncdispatch-up' && r.child === child)?.childPid;
  if (typeof pid !== 'number' || pid <= 1) throw new Error(`up logged no pid for its ${child}`);
  return pid;
}

function childPids(up: Up): { agent: number; controller: number } {
  return { agent: childPid(up, 'agent'), controller: childPid(up, 'controller') };
}

function alive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 1) throw new Error(`not a pid: ${pid}`);
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Processes the user runs (their desktop: Xvnc, the session). */
function userProcesses(user: string): string {
  return spawnSync('pgrep', ['-a', '-u', user], { encoding: 'utf8' }).stdout.trim();
}

// Each test starts a whole system (two node services, sometimes a desktop) on a shared 2-core machine.
describe('vncdispatch up', { timeout: 90_000 }, () => {
  it('writes JSON lines, one object each, when its output is piped', async () => {
    const up = startUp([]);
    await untilUp(up);
    up.proc.kill('SIGINT');
    expect(await up.exit).toBe(0);
    const recs = records(up); // throws on any line that is not JSON
    const services = new Set(recs.map((r) => r.service));
    expect([...services].sort()).toEqual(['vncdispatch-agent', 'vncdispatch-controller', 'vncdispatch-up']);
    expect(recs.at(-1)).toMatchObject({ service: 'vncdispatch-up', msg: 'stopped' });
  });

  it('writes pretty lines on a terminal, and a Ctrl-C typed there stops it cleanly', async () => {
    const up = startUp([], true);
    await untilUp(up);
    up.proc.stdin!.write('\x03');
    expect(await up.exit).toBe(0);
    const lines = up.out().split(/\r?\n/).filter((l) => l.trim());
    expect(lines.some((l) => l.trimStart().startsWith('{'))).toBe(false);
    const plain = lines.map((l) => stripVTControlCharacters(l)); // pino-pretty colours the level on a terminal
    expect(plain.some((l) => /INFO.*\[agent\] listening/.test(l))).toBe(true);
    expect(plain.some((l) => /INFO.*\[controller\] listening/.test(l))).toBe(true);
    expect(plain.some((l) => /\[up\] stopped/.test(l))).toBe(true);
    expect(up.out()).toContain('curl -s -H "Authorization: Bearer');
  });

  it('ends the desktop it opened and leaves no process of its own behind after Ctrl-C', async () => {
    const user = testUser(116);
    const up = startUp(['--user', user]);
    await untilUp(up);
    const opened = records(up).find((r) => r.msg === 'desktop opened');
    expect(opened).toMatchObject({ user, sessionId: expect.any(String) });
    expect(userProcesses(user)).toMatch(/Xvnc/);
    const pids = childPids(up);
    expect(alive(pids.agent) && alive(pids.controller)).toBe(true);

    up.proc.kill('SIGINT');
    expect(await up.exit).toBe(0);
    expect(alive(pids.agent)).toBe(false);
    expect(alive(pids.controller)).toBe(false);
    await vi.waitFor(() => expect(userProcesses(user)).toBe(''), { timeout: 10_000 });
    const store = createStore({ dataDir: join(up.dir, 'controller') });
    await store.init();
    try {
      const session = await store.getSession(opened!.sessionId as string);
      expect(session).toMatchObject({ state: 'ended', endReason: 'deleted' });
    } finally {
      await store.close();
    }
  });

  it('exits non-zero, ends the desktop and stops the agent when its controller dies', async () => {
    const user = testUser(117);
    const up = startUp(['--user', user]);
    await untilUp(up);
    const pids = childPids(up);
    process.kill(pids.controller, 'SIGKILL');
    expect(await up.exit).toBe(1);
    expect(alive(pids.agent)).toBe(false);
    expect(records(up)).toContainEqual(expect.objectContaining({ service: 'vncdispatch-up', msg: expect.stringContaining('failed') }));
    // The controller is gone, so the desktop was stopped on the agent directly.
    await vi.waitFor(() => expect(userProcesses(user)).toBe(''), { timeout: 10_000 });
  });

  it('takes its agent and controller with it even when it is killed outright', async () => {
    const up = startUp([]);
    await untilUp(up);
    const pids = childPids(up);
    up.proc.kill('SIGKILL');
    await up.exit;
    await vi.waitFor(() => {
      expect(alive(pids.agent)).toBe(false);
      expect(alive(pids.controller)).toBe(false);
    }, { timeout: 20_000 });
  });

  it('fails start-up with a non-zero exit and no child left when the agent cannot listen', async () => {
    const blocker = startUp([]);
    await untilUp(blocker);
    const taken = (records(blocker).find((r) => r.service === 'vncdispatch-agent' && r.msg === 'listening')!.port) as number;
    const up = startUp(['--agent-port', String(taken)]);
    expect(await up.exit).toBe(1);
    expect(records(up).some((r) => r.service === 'vncdispatch-controller')).toBe(false);
    expect(alive(childPid(up, 'agent'))).toBe(false);
    blocker.proc.kill('SIGINT');
    expect(await blocker.exit).toBe(0);
  });

  it('refuses a bad --end-desktops-ms or --stop-grace-ms with the usage exit code, and starts nothing', async () => {
    for (const bad of [['--end-desktops-ms', '0'], ['--stop-grace-ms', 'soon']]) {
      const up = startUp(bad);
      expect(await up.exit).toBe(2);
      expect(up.out()).toBe('');
      expect(existsSync(join(up.dir, 'pki'))).toBe(false);
    }
  });
});
