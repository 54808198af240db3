/**
 * `vncdispatch up`: the whole system on one machine, for trying it out and for development. Runs as root (the
 * agent starts desktops as other users). Makes a CA and certificates, an API key, starts one agent and one
 * controller on loopback with mutual TLS between them, optionally opens a desktop for a user, and prints the URL.
 *
 * Ctrl-C (SIGINT), SIGTERM or SIGHUP end every desktop of this local system, then stop the controller and the agent,
 * and `up` exits 0. If a child dies or start-up fails, `up` does the same and exits 1. Its children never outlive it
 * (see up-child.ts).
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { AgentConnection, createAgentCredentials } from '../agent-client/agent-client.js';
import { CONTROLLER_NODE_FLAGS } from '../proxy/node-flags.js';
import { CliError, EXIT } from './client.js';
import { controllerAllocatorEnv } from '../allocator.js';
import { ensureCa, issueCert } from './pki.js';
import { UpChild } from './up-child.js';
import { createUpOutput, type UpOutput } from './up-output.js';

/** `up`'s flags and their defaults. */
const UP_OPTIONS = {
  dir: { type: 'string', default: '/var/lib/vncdispatch-local' },
  port: { type: 'string', default: '8080' },
  'agent-port': { type: 'string', default: '7443' },
  'runtime-dir': { type: 'string', default: '/run/vncdispatch' },
  user: { type: 'string' },
  'create-user': { type: 'boolean', default: false },
  'end-desktops-ms': { type: 'string', default: '20000' },
  'stop-grace-ms': { type: 'string', default: '10000' },
} as const;

export const UP_USAGE = `  vncdispatch up [--user NAME [--create-user]] [--port ${UP_OPTIONS.port.default}] [--agent-port ${UP_OPTIONS['agent-port'].default}]
                 [--dir ${UP_OPTIONS.dir.default}] [--runtime-dir ${UP_OPTIONS['runtime-dir'].default}]
                 [--end-desktops-ms ${UP_OPTIONS['end-desktops-ms'].default}] [--stop-grace-ms ${UP_OPTIONS['stop-grace-ms'].default}]
      run an agent and a controller on this machine (as root), with mutual TLS and an API key; port 0 picks one.
      On stopping, ending the desktops may take --end-desktops-ms in all; then each service gets --stop-grace-ms
      after SIGTERM before it is killed
`;

interface UpOptions {
  dir: string;
  port: number;
  agentPort: number;
  runtimeDir: string;
  user: string | undefined;
  createUser: boolean;
  /** How long ending the desktops may take in all before the services are stopped anyway. */
  endDesktopsMs: number;
  /** How long a service gets to exit after SIGTERM before it is killed. */
  stopGraceMs: number;
}

function parse(argv: string[]): UpOptions {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: UP_OPTIONS,
      strict: true,
    }));
  } catch (err) {
    throw new CliError((err as Error).message, EXIT.usage);
  }
  const port = Number(values.port);
  const agentPort = Number(values['agent-port']);
  for (const [flag, v] of [['--port', port], ['--agent-port', agentPort]] as const) {
    if (!Number.isInteger(v) || v < 0 || v > 65535) throw new CliError(`${flag} must be a TCP port (0 picks one)`, EXIT.usage);
  }
  const ms = (flag: 'end-desktops-ms' | 'stop-grace-ms'): number => {
    const v = values[flag];
    const n = /^\d+$/.test(v) ? Number(v) : NaN;
    if (!Number.isSafeInteger(n) || n < 100 || n > 600_000) {
      throw new CliError(`--${flag} must be an integer from 100 to 600000, got ${JSON.stringify(v)}`, EXIT.usage);
    }
    return n;
  };
  return { dir: values.dir, port, agentPort, runtimeDir: values['runtime-dir'], user: values.user, createUser: values['create-user'],
    endDesktopsMs: ms('end-desktops-ms'), stopGraceMs: ms('stop-grace-ms') };
}

function ensureUser(name: string, create: boolean): void {
  if (spawnSync('getent', ['passwd', name]).status === 0) return;
  if (!create) throw new CliError(`no such user ${name}: pass --create-user to create it`, EXIT.usage);
  const r = spawnSync('useradd', ['-m', '-s', '/bin/bash', '--', name], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`useradd ${name} failed`);
}

/** Why `up` is stopping: a signal (exit 0) or a failure (exit 1). */
type StopReason = { signal: NodeJS.Signals } | { err: Error };

/** Thrown out of a start-up step when a stop was asked for meanwhile; the reason is already recorded. */
class Stopping extends Error {}

/** Runs `vncdispatch up`. Resolves with the exit code once every child has exited. */
export async function up(argv: string[]): Promise<number> {
  const o = parse(argv);
  if (process.getuid?.() !== 0) throw new CliError('vncdispatch up must run as root: the agent starts desktops as users', EXIT.usage);
  if (o.user) ensureUser(o.user, o.createUser);
  const output = createUpOutput(process.stdout);
  const { log } = output;

  let reason: StopReason | null = null;
  let wake!: () => void;
  const interrupted = new Promise<void>((resolve) => (wake = resolve));
  const stop = (why: StopReason): void => {
    reason ??= why;
    wake();
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    if (reason) return;
    log.info({ signal }, 'stopping: ending the desktops, then the controller and the agent');
    stop({ signal });
  };
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
  for (const s of signals) process.on(s, onSignal);
  /** Awaits one start-up step, unless a stop is asked for first. */
  const step = async <T>(p: Promise<T>): Promise<T> => {
    const r = await Promise.race([p.then((value) => ({ value })), interrupted.then(() => null)]);
    if (r === null) throw new Stopping('stopping');
    return r.value;
  };

  const children: UpChild[] = [];
  const startChild = (name: string, script: string, args: string[], nodeFlags: readonly string[] = [],
    env: Readonly<Record<string, string>> = {}): UpChild => {
    const child = new UpChild(name, script, args, nodeFlags, output, o.stopGraceMs, env);
    children.push(child);
    void child.exited.then((how) => stop({ err: new Error(`the ${name} exited (${how})`) }));
    return child;
  };
  let controllerBase: string | null = null;
  let agent: AgentConnection | null = null;
  const keyFile = join(o.dir, 'api-key');
  try {
    const pki = join(o.dir, 'pki');
    mkdirSync(o.dir, { recursive: true, mode: 0o700 });
    const ca = ensureCa(pki);
    const agentCert = existsSync(join(pki, 'agent.crt'))
      ? { cert: join(pki, 'agent.crt'), key: join(pki, 'agent.key') }
      : issueCert(pki, 'agent', ['localhost', '127.0.0.1'], 'serverAuth');
    const controllerCert = existsSync(join(pki, 'controller.crt'))
      ? { cert: join(pki, 'controller.crt'), key: join(pki, 'controller.key') }
      : issueCert(pki, 'controller', [], 'clientAuth');
    if (!existsSync(keyFile)) writeFileSync(keyFile, `${randomBytes(32).toString('base64url')}\n`, { mode: 0o600 });
    const apiKey = readFileSync(keyFile, 'utf8').trim();

    const agentAddress = await step(startChild('agent', 'agent/main.js', [
      '--listen', `127.0.0.1:${o.agentPort}`, '--tls-cert', agentCert.cert, '--tls-key', agentCert.key, '--tls-ca', ca,
      '--state-dir', join(o.dir, 'agent'), '--runtime-dir', o.runtimeDir,
    ]).listening);
    agent = new AgentConnection({ name: 'local', address: agentAddress,
      credentials: createAgentCredentials({ cert: controllerCert.cert, key: controllerCert.key, ca }) });
    const controllerAddress = await step(startChild('controller', 'controller/main.js', [
      '--listen', `127.0.0.1:${o.port}`, '--blade', `local=${agentAddress}`,
      '--agent-tls-cert', controllerCert.cert, '--agent-tls-key', controllerCert.key, '--agent-tls-ca', ca,
      '--api-keys-file', keyFile, '--data-dir', join(o.dir, 'controller'),
    ], CONTROLLER_NODE_FLAGS, controllerAllocatorEnv()).listening);
    const base = `http://${controllerAddress}`;
    controllerBase = base;
    if (o.user) await step(openDesktop(base, apiKey, o.user, output));
    log.info({ controller: base, dashboard: `${base}/dashboard/`, agent: agentAddress, apiKeyFile: keyFile }, 'vncdispatch is up; Ctrl-C stops it');
    output.text(`\nOpen a desktop:\n  curl -s -H "Authorization: Bearer $(cat ${keyFile})" `
      + `-H 'content-type: application/json' -d '{"username":"USER"}' ${base}/api/v1/sessions\n\n`);
    await interrupted;
  } catch (err) {
    if (!(err instanceof Stopping)) stop({ err: err instanceof Error ? err : new Error(String(err)) });
  }

  const why = reason as StopReason | null;
  if (why && 'err' in why) log.error({ err: why.err }, 'vncdispatch up failed; stopping everything it started');
  if (controllerBase || agent) {
    await endDesktops(controllerBase, keyFile, agent, output, o.endDesktopsMs).catch((err: unknown) =>
      log.error({ err }, 'could not end every desktop'));
  }
  agent?.close();
  // The controller first: it stops using the agent before the agent goes.
  for (const child of [...children].reverse()) await child.stop();
  for (const s of signals) process.off(s, onSignal);
  log.info('stopped');
  return why && 'signal' in why ? EXIT.ok : EXIT.failure;
}

/** Opens the user's desktop; the blade is UP after its first health answer, so a 503 is retried briefly. */
async function openDesktop(base: string, apiKey: string, user: string, output: UpOutput): Promise<void> {
  const headers = { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' };
  for (let i = 0; i < 50; i++) {
    const res = await fetch(`${base}/api/v1/sessions`, { method: 'POST', headers, body: JSON.stringify({ username: user }) });
    const body = (await res.json()) as { id?: string; viewerUrl?: string; error?: { code: string; message: string } };
    if (res.ok && body.id) {
      output.log.info({ user, sessionId: body.id, viewerUrl: body.viewerUrl }, 'desktop opened');
      output.text(`\nDesktop for ${user}: open ${body.viewerUrl}\n`);
      return;
    }
    if (res.status !== 503) throw new Error(`could not open a desktop: ${body.error?.code}: ${body.error?.message}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error('could not open a desktop: no blade came up');
}

/**
 * Ends every desktop of this local system: through the controller first, so each session is recorded as ended, then
 * directly on the agent for whatever is left (the controller may be the child that died). A desktop outlives its
 * agent by design, so this is what keeps Ctrl-C from leaving Xvnc processes behind.
 */
async function endDesktops(base: string | null, keyFile: string, agent: AgentConnection | null, output: UpOutput,
  withinMs: number): Promise<void> {
  const signal = AbortSignal.timeout(withinMs);
  if (base) {
    const authorization = `Bearer ${readFileSync(keyFile, 'utf8').trim()}`;
    const listed = await fetch(`${base}/api/v1/sessions?state=live&limit=1000`, { headers: { authorization }, signal })
      .then(async (res) => (res.ok ? ((await res.json()) as { sessions: { id: string; username: string }[] }).sessions : []))
      .catch(() => []);
    await Promise.all(listed.map(async (s) => {
      const res = await fetch(`${base}/api/v1/sessions/${s.id}`, { method: 'DELETE', headers: { authorization }, signal }).catch(() => null);
      if (res?.ok) output.log.info({ sessionId: s.id, user: s.username }, 'desktop ended');
    }));
  }
  if (agent) {
    const left = await agent.listSessions({ signal }).catch(() => []);
    await Promise.all(left.map(async (s) => {
      await agent.stopSession(s.id, { signal, timeoutMs: withinMs }).then(
        () => output.log.info({ agentSessionId: s.id, user: s.username }, 'desktop stopped on the agent'),
        (err: unknown) => output.log.warn({ err, agentSessionId: s.id }, 'could not stop a desktop on the agent'));
    }));
  }
}
