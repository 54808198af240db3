/**
 * The agent's doors: mTLS client certificates are required and checked; stock gRPC tooling (health, reflection)
 * works; and root writing into a user's home cannot be steered by symlinks the user planted.
 * Users vdtest05..vdtest07.
 */
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import {
  credentials, loadPackageDefinition, makeGenericClientConstructor, status, type CallOptions, type Client, type ClientDuplexStream,
} from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { service as healthService } from 'grpc-health-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentClient as AgentClientCtor, type Session } from '../../proto/gen/vncdispatch/agent/v1/agent.js';
import {
  agentClient, agentClientWithoutCert, call, descendants, endDesktop, startAgent, type AgentClient, type AgentProcess,
} from '../helpers/agent-process.js';
import { makePki, type Pki } from '../helpers/certs.js';
import { openRelay } from '../helpers/relay-client.js';
import { rfbConnect } from '../helpers/rfb-client.js';
import { testUser } from '../helpers/users.js';

const U_SHADOW = testUser(5);
const U_ROOTDIR = testUser(6);
const U_LOG = testUser(7);

let pki: Pki;
let agent: AgentProcess;
let client: AgentClient;
const started: Session[] = [];

function sha(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

function asUserShell(user: string, argv: string[]): void {
  execFileSync('setpriv', ['--reuid', user, '--regid', user, '--init-groups', '--', ...argv]);
}

/** Empties ~/.vnc as the user, so each test plants its own trap. */
function resetVncDir(user: string): string {
  const dir = `/home/${user}/.vnc`;
  rmSync(dir, { recursive: true, force: true });
  return dir;
}

beforeAll(async () => {
  pki = makePki();
  agent = await startAgent({ pki });
  client = agentClient(agent.address, pki);
});

afterAll(async () => {
  for (const s of started) await endDesktop(client, s);
  for (const u of [U_SHADOW, U_ROOTDIR, U_LOG]) resetVncDir(u);
  client?.close();
  await agent?.stop();
});

describe('mutual TLS', () => {
  it('refuses a client that presents no certificate, and starts nothing', async () => {
    const c = agentClientWithoutCert(agent.address, pki);
    const err = await call(c, c.startSession, { username: U_SHADOW, password: 'abcd1234' }, 5000).catch((e) => e);
    c.close();
    expect(err).toMatchObject({ code: status.UNAVAILABLE });
    expect(descendants(agent.pid)).toEqual([]);
  });

  it('refuses a client certificate signed by another CA', async () => {
    const c = agentClient(agent.address, pki, { cert: pki.rogueCert, key: pki.rogueKey });
    const err = await call(c, c.listSessions, {}, 5000).catch((e) => e);
    c.close();
    expect(err).toMatchObject({ code: status.UNAVAILABLE });
  });

  it('refuses a plaintext client', async () => {
    const plain = new AgentClientCtor(agent.address, credentials.createInsecure());
    const err = await call(plain, plain.getStatus, {}, 5000).catch((e) => e);
    plain.close();
    expect(err).toMatchObject({ code: status.UNAVAILABLE });
  });

  it('serves a client with a certificate from the configured CA', async () => {
    const res = await call(client, client.getStatus, {});
    expect(res.hostname).toBe(hostname());
    expect(res.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(res.cpus).toBeGreaterThan(0);
    expect(res.memoryTotalBytes).toBeGreaterThan(res.memoryAvailableBytes);
  });
});

describe('standard gRPC tooling', () => {
  it('reports SERVING on grpc.health.v1 for the server and the Agent service', async () => {
    const Health = makeGenericClientConstructor(healthService, 'grpc.health.v1.Health');
    const creds = credentials.createSsl(readFileSync(pki.caCert), readFileSync(pki.clientKey),
      readFileSync(pki.clientCert));
    const h = new Health(agent.address, creds, { 'grpc.ssl_target_name_override': 'localhost' }) as unknown as Client & {
      check(req: { service: string }, opts: Partial<CallOptions>, cb: (e: Error | null, r: { status: string }) => void): void;
    };
    const check = (svc: string) => new Promise<{ status: string }>((res, rej) =>
      h.check({ service: svc }, { deadline: Date.now() + 5000 }, (e: Error | null, r: { status: string }) =>
        (e ? rej(e) : res(r))));
    expect((await check('')).status).toBe('SERVING');
    expect((await check('vncdispatch.agent.v1.Agent')).status).toBe('SERVING');
    h.close();
  });

  it('answers server reflection with the Agent service', async () => {
    const require = createRequire(import.meta.url);
    const reflDir = join(dirname(require.resolve('@grpc/reflection/package.json')), 'build', 'proto');
    const def = loadSync('grpc/reflection/v1/reflection.proto', { includeDirs: [reflDir] });
    const pkg = loadPackageDefinition(def) as unknown as {
      grpc: { reflection: { v1: { ServerReflection: new (a: string, c: unknown, o?: object) => Client & {
        serverReflectionInfo(opts: Partial<CallOptions>): ClientDuplexStream<unknown, unknown>;
      } } } };
    };
    const creds = credentials.createSsl(readFileSync(pki.caCert), readFileSync(pki.clientKey),
      readFileSync(pki.clientCert));
    const r = new pkg.grpc.reflection.v1.ServerReflection(agent.address, creds,
      { 'grpc.ssl_target_name_override': 'localhost' });
    const stream = r.serverReflectionInfo({ deadline: Date.now() + 5000 });
    const reply = new Promise<{ listServicesResponse?: { service: { name: string }[] } }>((res, rej) => {
      stream.on('data', res);
      stream.on('error', rej);
    });
    stream.write({ listServices: '' });
    const names = (await reply).listServicesResponse!.service.map((s) => s.name);
    stream.end();
    r.close();
    expect(names).toContain('vncdispatch.agent.v1.Agent');
  });
});

describe('symlinks planted in the home directory', () => {
  // The agent no longer opens anything in homes; these traps stay armed to show that nothing outside the home is
  // ever touched and that the trap itself is left as the user made it.
  it('~/.vnc/passwd -> /etc/shadow: /etc/shadow is untouched, the link left as it was, and the session works', async () => {
    const dir = resetVncDir(U_SHADOW);
    asUserShell(U_SHADOW, ['mkdir', '-m', '700', dir]);
    asUserShell(U_SHADOW, ['ln', '-s', '/etc/shadow', `${dir}/passwd`]);
    const before = { sum: sha('/etc/shadow'), st: lstatSync('/etc/shadow') };
    const s = (await call(client, client.startSession, { username: U_SHADOW, password: 'abcd1234' })).session!;
    started.push(s);
    expect((await rfbConnect({ socket: () => openRelay({ address: agent.address, sessionId: s.id, pki }), password: 'abcd1234' })).ok).toBe(true);
    await call(client, client.stopSession, { id: s.id });
    expect(sha('/etc/shadow')).toBe(before.sum);
    const after = lstatSync('/etc/shadow');
    expect([after.mode, after.uid, after.gid, after.mtimeMs]).toEqual([before.st.mode, before.st.uid, before.st.gid,
      before.st.mtimeMs]);
    expect(lstatSync(`${dir}/passwd`).isSymbolicLink()).toBe(true);
  });

  it('~/.vnc -> /root: nothing is written in /root, and the desktop starts with the default session', async () => {
    const dir = resetVncDir(U_ROOTDIR);
    asUserShell(U_ROOTDIR, ['ln', '-s', '/root', dir]);
    const rootBefore = readdirSync('/root').sort();
    const s = (await call(client, client.startSession, { username: U_ROOTDIR, password: 'abcd1234' })).session!;
    started.push(s);
    expect((await rfbConnect({ socket: () => openRelay({ address: agent.address, sessionId: s.id, pki }), password: 'abcd1234' })).ok).toBe(true);
    await call(client, client.stopSession, { id: s.id });
    expect(readdirSync('/root').sort()).toEqual(rootBefore);
  });

  it('a symlinked old session log (~/.vnc/vncdispatch-HOST.log -> root-owned file) leaves its target untouched', async () => {
    const dir = resetVncDir(U_LOG);
    const target = `/root/vncdispatch-test-target-${process.pid}`;
    writeFileSync(target, 'root data\n', { mode: 0o644 });
    try {
      mkdirSync(dir, { mode: 0o700 });
      execFileSync('chown', [`${U_LOG}:${U_LOG}`, dir]);
      symlinkSync(target, `${dir}/vncdispatch-${hostname()}.log`);
      execFileSync('chown', ['-h', `${U_LOG}:${U_LOG}`, `${dir}/vncdispatch-${hostname()}.log`]);
      const s = (await call(client, client.startSession, { username: U_LOG, password: 'abcd1234' })).session!;
      started.push(s);
      await call(client, client.stopSession, { id: s.id });
      expect(readFileSync(target, 'utf8')).toBe('root data\n');
      expect(existsSync(`${dir}/passwd`)).toBe(false);
    } finally {
      rmSync(target, { force: true });
    }
  });
});
