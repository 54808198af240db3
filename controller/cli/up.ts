/**
 * `vncdispatch up`: the whole system on one machine, for trying it out and for development. Runs as root (the
 * agent starts desktops as other users). Makes a CA and certificates, an API key, starts one agent and one
 * controller on loopback with mutual TLS between them, optionally opens a desktop for a user, and prints the URL.
 * Ctrl-C stops both (and ends the desktop it opened).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CONTROLLER_NODE_FLAGS } from '../proxy/node-flags.js';
import { ensureCa, issueCert } from './pki.js';

const dist = new URL('../../', import.meta.url).pathname; // dist/ (or the source root under a TS runner)

interface UpOptions {
  dir: string;
  port: number;
  agentPort: number;
  user: string | undefined;
  createUser: boolean;
}

function parse(argv: string[]): UpOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      dir: { type: 'string', default: '/var/lib/vncdispatch-local' },
      port: { type: 'string', default: '8080' },
      'agent-port': { type: 'string', default: '7443' },
      user: { type: 'string' },
      'create-user': { type: 'boolean', default: false },
    },
    strict: true,
  });
  const port = Number(values.port);
  const agentPort = Number(values['agent-port']);
  for (const [flag, v] of [['--port', port], ['--agent-port', agentPort]] as const) {
    if (!Number.isInteger(v) || v < 1 || v > 65535) throw new TypeError(`${flag} must be a TCP port`);
  }
  return { dir: values.dir, port, agentPort, user: values.user, createUser: values['create-user'] };
}

/** Starts a node program from dist/ and resolves with its address once it logs `listening`. */
function startChild(name: string, script: string, args: string[], nodeFlags: readonly string[] = []): Promise<{ child: ChildProcess; address: string }> {
  // Own process group: Ctrl-C reaches only `up`, which ends the desktop it opened before stopping the services.
  const child = spawn(process.execPath, [...nodeFlags, join(dist, script), ...args], { stdio: ['ignore', 'pipe', 'inherit'], detached: true });
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    let address: string | null = null;
    lines.on('line', (line) => {
      process.stdout.write(`[${name}] ${line}\n`);
      if (address) return;
      try {
        const rec = JSON.parse(line) as { msg?: string; address?: string };
        if (rec.msg === 'listening' && rec.address) {
          address = rec.address;
          resolve({ child, address });
        }
      } catch {
        // not JSON: passed through above
      }
    });
    child.once('exit', (code) => reject(new Error(`${name} exited with code ${code} before listening`)));
  });
}

function ensureUser(name: string, create: boolean): void {
  if (spawnSync('getent', ['passwd', name]).status === 0) return;
  if (!create) throw new Error(`no such user ${name}: pass --create-user to create it`);
  const r = spawnSync('useradd', ['-m', '-s', '/bin/bash', '--', name], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`useradd ${name} failed`);
}

/** Runs `vncdispatch up`. Resolves when both services have stopped. */
export async function up(argv: string[]): Promise<void> {
  const o = parse(argv);
  if (process.getuid?.() !== 0) throw new Error('vncdispatch up must run as root: the agent starts desktops as users');
  const pki = join(o.dir, 'pki');
  mkdirSync(o.dir, { recursive: true, mode: 0o700 });
  const ca = ensureCa(pki);
  const agentCert = existsSync(join(pki, 'agent.crt'))
    ? { cert: join(pki, 'agent.crt'), key: join(pki, 'agent.key') }
    : issueCert(pki, 'agent', ['localhost', '127.0.0.1'], 'serverAuth');
  const controllerCert = existsSync(join(pki, 'controller.crt'))
    ? { cert: join(pki, 'controller.crt'), key: join(pki, 'controller.key') }
    : issueCert(pki, 'controller', [], 'clientAuth');
  const keyFile = join(o.dir, 'api-key');
  if (!existsSync(keyFile)) writeFileSync(keyFile, `${randomBytes(32).toString('base64url')}\n`, { mode: 0o600 });
  const apiKey = readFileSync(keyFile, 'utf8').trim();

  const agent = await startChild('agent', 'agent/main.js', [
    '--listen', `127.0.0.1:${o.agentPort}`, '--tls-cert', agentCert.cert, '--tls-key', agentCert.key, '--tls-ca', ca,
    '--state-dir', join(o.dir, 'agent'),
  ]);
  const controller = await startChild('controller', 'controller/main.js', [
    '--listen', `127.0.0.1:${o.port}`, '--blade', `local=${agent.address}`,
    '--agent-tls-cert', controllerCert.cert, '--agent-tls-key', controllerCert.key, '--agent-tls-ca', ca,
    '--api-keys-file', keyFile, '--data-dir', join(o.dir, 'controller'),
  ], CONTROLLER_NODE_FLAGS).catch((err: unknown) => {
    agent.child.kill('SIGTERM');
    throw err;
  });
  const base = `http://${controller.address}`;
  const auth = { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' };
  let sessionId: string | null = null;
  if (o.user) {
    ensureUser(o.user, o.createUser);
    // The blade is UP after its first health answer; retry briefly instead of racing it.
    for (let i = 0; i < 50 && !sessionId; i++) {
      const res = await fetch(`${base}/api/v1/sessions`, { method: 'POST', headers: auth, body: JSON.stringify({ username: o.user }) });
      const body = (await res.json()) as { id?: string; viewerUrl?: string; error?: { code: string; message: string } };
      if (res.ok && body.id) {
        sessionId = body.id;
        process.stdout.write(`\nDesktop for ${o.user}: open ${body.viewerUrl}\n`);
      } else if (res.status !== 503) {
        throw new Error(`could not open a desktop: ${body.error?.code}: ${body.error?.message}`);
      } else {
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }
  process.stdout.write(`\nvncdispatch is up: controller ${base}, dashboard ${base}/dashboard/, agent ${agent.address}\n`
    + `API key in ${keyFile}. Open a desktop:\n  curl -s -H "Authorization: Bearer $(cat ${keyFile})" `
    + `-H 'content-type: application/json' -d '{"username":"USER"}' ${base}/api/v1/sessions\nCtrl-C stops.\n`);

  await new Promise<void>((resolve) => {
    const stop = async () => {
      if (sessionId) await fetch(`${base}/api/v1/sessions/${sessionId}`, { method: 'DELETE', headers: { authorization: auth.authorization } }).catch(() => {});
      controller.child.kill('SIGTERM');
      agent.child.kill('SIGTERM');
    };
    process.once('SIGINT', () => void stop());
    process.once('SIGTERM', () => void stop());
    let alive = 2;
    for (const c of [agent.child, controller.child]) c.once('exit', () => (--alive === 0 ? resolve() : undefined));
  });
}
