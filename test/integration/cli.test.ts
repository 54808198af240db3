/**
 * `vncdispatch` operator commands against a real controller process and a real agent (real Xvnc as vdtest87 and
 * vdtest88): every command's human output, its --json output and its exit code, and the errors people see.
 * The CLI runs as its built bin (dist/controller/cli.js) with the key in a file or the environment.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, waitFor, type AgentProcess } from '../helpers/agent-process.js';
import { makePki } from '../helpers/certs.js';
import { startController, type ControllerProcess } from '../helpers/controller-process.js';
import { repoRoot } from '../helpers/node-service.js';
import { freeLoopbackPort } from '../helpers/ports.js';
import { testUser } from '../helpers/users.js';

const CLI = resolve(repoRoot(), 'dist', 'controller', 'cli.js');
const READ_KEY = 'cli-test-read-only-key-0123456789';
const USER = testUser(87);
const USER2 = testUser(88);

let agent: AgentProcess;
let ctl: ControllerProcess;
let dir: string;
let keyFile: string;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function vd(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((res) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', VNCDISPATCH_URL: ctl.url, VNCDISPATCH_API_KEY_FILE: keyFile, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => res({ code, stdout, stderr }));
  });
}

async function json(args: string[]): Promise<any> {
  const r = await vd([...args, '--json']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout);
}

beforeAll(async () => {
  const pki = makePki();
  agent = await startAgent({ pki });
  dir = mkdtempSync(join(tmpdir(), 'vd-cli-'));
  keyFile = join(dir, 'admin-key');
  const keysFile = join(dir, 'keys');
  writeFileSync(keysFile, `read ${READ_KEY}\n`, { mode: 0o600 });
  ctl = await startController({ pki, blades: [{ name: 'cli-blade', address: `127.0.0.1:${agent.port}` }],
    args: ['--api-keys-file', keysFile] });
  writeFileSync(keyFile, `${ctl.apiKey}\n`, { mode: 0o600 });
  await waitFor(async () => (await json(['blades', 'list'])).blades[0]?.state === 'UP', 'the blade to be UP', 15_000);
}, 60_000);

afterAll(async () => {
  if (ctl) {
    for (const s of (await json(['sessions', 'list'])).sessions) await vd(['sessions', 'stop', s.id]);
    await ctl.stop();
    rmSync(ctl.dataDir, { recursive: true, force: true });
  }
  await agent?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 60_000);

describe('vncdispatch status', () => {
  it('says the controller is ready with its blades and free capacity (exit 0), as text and JSON', async () => {
    const r = await vd(['status']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^controller: +http:\/\/127\.0\.0\.1:\d+$/m);
    expect(r.stdout).toMatch(/^ready: +yes$/m);
    expect(r.stdout).toMatch(/^blades: +1 up of 1 /m);
    const j = await json(['status']);
    expect(j).toMatchObject({ ready: true, blades: { total: 1, up: 1 } });
    expect(j.capacity.total).toBeGreaterThan(0);
  });

  it('exits 6 when no blade is up, and says why', async () => {
    await vd(['blades', 'cordon', 'cli-blade']);
    try {
      const r = await vd(['status']);
      expect(r.code).toBe(6);
      expect(r.stdout).toMatch(/^ready: +no \(no blade is UP\)$/m);
    } finally {
      await vd(['blades', 'uncordon', 'cli-blade']);
    }
  });

  it('exits 6 with a clear message when the controller cannot be reached', async () => {
    const closed = `http://127.0.0.1:${await freeLoopbackPort()}`;
    const r = await vd(['status'], { VNCDISPATCH_URL: closed });
    expect(r.code).toBe(6);
    expect(r.stderr).toBe(`vncdispatch: cannot reach the controller at ${closed}: ECONNREFUSED\n`);
  });
});

describe('vncdispatch sessions', () => {
  it('start, list, show and stop a desktop, as tables and as JSON', async () => {
    const started = await vd(['sessions', 'start', USER]);
    expect(started.code, started.stderr).toBe(0);
    const id = /^started session ([0-9a-f-]{36}) for vdtest87 on cli-blade$/m.exec(started.stdout)?.[1];
    expect(id).toBeDefined();
    expect(started.stdout).toMatch(/^viewer: http:\/\/127\.0\.0\.1:\d+\/viewer\/#session=/m);

    const again = await json(['sessions', 'start', USER]);
    expect(again.id).toBe(id);
    expect(again.viewerUrl).toContain(`session=${id}`);

    const list = await vd(['sessions', 'list']);
    expect(list.code).toBe(0);
    expect(list.stdout.split('\n')[0]).toMatch(/^ID +USER +BLADE +STATE +AGE +VIEWERS +DOWN +UP +END-REASON$/);
    expect(list.stdout).toMatch(new RegExp(`^${id} +vdtest87 +cli-blade +running `, 'm'));
    expect((await json(['sessions', 'list', '--user', USER])).sessions.map((s: { id: string }) => s.id)).toEqual([id]);

    const show = await vd(['sessions', 'show', id!]);
    expect(show.code).toBe(0);
    expect(show.stdout).toMatch(/^user: +vdtest87$/m);
    expect(show.stdout).toMatch(/^state: +running$/m);
    expect((await json(['sessions', 'show', id!])).username).toBe(USER);

    const stop = await vd(['sessions', 'stop', id!]);
    expect(stop.code).toBe(0);
    expect(stop.stdout).toBe(`ended session ${id} of vdtest87\n`);
    const ended = await json(['sessions', 'list', '--state', 'ended', '--user', USER]);
    expect(ended.sessions[0]).toMatchObject({ id, state: 'ended', endReason: 'deleted' });
    expect((await json(['sessions', 'stop', id!])).state).toBe('ended');
  });

  it('exit codes: 3 for an unknown session, 5 for an unknown user, 2 for bad usage, 4 for a refused key or role', async () => {
    const missing = await vd(['sessions', 'show', '00000000-0000-4000-8000-000000000000']);
    expect(missing.code).toBe(3);
    expect(missing.stderr).toMatch(/^vncdispatch: VD_ERR_NOT_FOUND: /);
    const unknown = await vd(['sessions', 'start', 'nosuchuser-cli']);
    expect(unknown.code).toBe(5);
    expect(unknown.stderr).toMatch(/VD_ERR_UNKNOWN_USER/);
    const usage = await vd(['sessions', 'start']);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain('expected 1 argument, got 0');
    const badKey = await vd(['sessions', 'list'], { VNCDISPATCH_API_KEY_FILE: '', VNCDISPATCH_API_KEY: 'x'.repeat(24) });
    expect(badKey.code).toBe(4);
    expect(badKey.stderr).toMatch(/VD_ERR_UNAUTHORIZED/);
    const weak = await vd(['sessions', 'start', USER2], { VNCDISPATCH_API_KEY_FILE: '', VNCDISPATCH_API_KEY: READ_KEY });
    expect(weak.code).toBe(4);
    expect(weak.stderr).toMatch(/VD_ERR_FORBIDDEN: .*role "read"/);
    const noKey = await vd(['sessions', 'list'], { VNCDISPATCH_API_KEY_FILE: '' });
    expect(noKey.code).toBe(2);
    expect(noKey.stderr).toMatch(/no API key/);
    const unreadable = await vd(['sessions', 'list', '--api-key-file', join(dir, 'missing')]);
    expect(unreadable.code).toBe(2);
    expect(unreadable.stderr).toMatch(/cannot read the API key file/);
  });
});

describe('vncdispatch blades', () => {
  it('list shows state, sessions/capacity, load and version; --json is the API answer', async () => {
    const r = await vd(['blades', 'list']);
    expect(r.code).toBe(0);
    expect(r.stdout.split('\n')[0]).toMatch(/^NAME +STATE +SESSIONS +LOAD +MEMORY-FREE +LAST-SEEN +VERSION +ADDRESS +LAST-ERROR$/);
    expect(r.stdout).toMatch(/^cli-blade +UP +\d+\/\d+ +\d+\.\d\d /m);
    expect((await json(['blades', 'list'])).blades[0]).toMatchObject({ name: 'cli-blade', state: 'UP' });
  });

  it('cordon, drain and uncordon change the state (exit 0); an unknown blade exits 3', async () => {
    expect((await vd(['blades', 'cordon', 'cli-blade'])).stdout).toMatch(/^cordoned blade cli-blade: state CORDONED/);
    expect((await json(['blades', 'drain', 'cli-blade'])).adminState).toBe('DRAINING');
    const waited = await vd(['blades', 'drain', 'cli-blade', '--wait']);
    expect(waited.code).toBe(0);
    expect(waited.stdout).toMatch(/^draining blade cli-blade: state DRAINING, 0 sessions$/m);
    expect((await json(['blades', 'uncordon', 'cli-blade'])).state).toBe('UP');
    const missing = await vd(['blades', 'cordon', 'no-such-blade']);
    expect(missing.code).toBe(3);
    expect(missing.stderr).toMatch(/VD_ERR_NOT_FOUND/);
  });

  it('add registers a blade (exit 0), a clash exits 5, bad input exits 5; remove takes it away', async () => {
    const add = await vd(['blades', 'add', 'cli-spare', '127.0.0.1:9']);
    expect(add.code).toBe(0);
    expect(add.stdout).toBe('registered blade cli-spare at 127.0.0.1:9\n');
    expect((await json(['blades', 'add', 'cli-spare', '127.0.0.1:9'])).name).toBe('cli-spare');
    const bad = await vd(['blades', 'add', 'cli-bad', 'nohost']);
    expect(bad.code).toBe(5);
    expect(bad.stderr).toMatch(/VD_ERR_BAD_REQUEST: .*HOST:PORT/);
    const weak = await vd(['blades', 'add', 'cli-weak', '127.0.0.1:9'], { VNCDISPATCH_API_KEY_FILE: '', VNCDISPATCH_API_KEY: READ_KEY });
    expect(weak.code).toBe(4);

    const removed = await vd(['blades', 'remove', 'cli-spare']);
    expect(removed.code, removed.stderr).toBe(0);
    expect(removed.stdout).toBe('removed blade cli-spare\n');
    expect((await vd(['blades', 'remove', 'cli-spare'])).code).toBe(3);
  });

  it('remove refuses a blade with live sessions unless --force, which ends them', async () => {
    const { id } = await json(['sessions', 'start', USER2]);
    const refused = await vd(['blades', 'remove', 'cli-blade']);
    expect(refused.code).toBe(5);
    expect(refused.stderr).toMatch(/live session/);
    expect((await json(['sessions', 'show', id])).state).toBe('running');
    const forced = await vd(['blades', 'remove', 'cli-blade', '--force']);
    expect(forced.code, forced.stderr).toBe(0);
    expect((await json(['sessions', 'show', id])).state).toBe('ended');
    // Put it back for the other tests.
    expect((await vd(['blades', 'add', 'cli-blade', `127.0.0.1:${agent.port}`])).code).toBe(0);
    await waitFor(async () => (await json(['blades', 'list'])).blades.find((b: { name: string }) => b.name === 'cli-blade')?.state === 'UP',
      'cli-blade to be UP again', 15_000);
  });
});

describe('vncdispatch usage', () => {
  it('an unknown command prints the usage and exits 2', async () => {
    const r = await vd(['frobnicate']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('vncdispatch sessions start USER');
    const sub = await vd(['blades', 'explode', 'x']);
    expect(sub.code).toBe(2);
    expect(sub.stderr).toContain('unknown command: blades explode');

    // Names an object would find on Object.prototype are unknown commands too, not a crash.
    for (const name of ['constructor', 'toString', '__proto__', 'hasOwnProperty']) {
      const proto = await vd([name]);
      expect(proto.code, `${name}: ${proto.stderr}`).toBe(2);
      expect(proto.stderr).toContain('vncdispatch sessions start USER');
    }
  });
});
