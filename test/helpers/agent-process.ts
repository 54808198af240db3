/**
 * Runs the built agent (dist/agent/main.js; run `npm run build` first) as a real process on 127.0.0.1 port 0 and
 * gives tests an mTLS client for it. Stopping the agent leaves the desktops it started running (they are in their
 * own sessions): tests that start sessions must stop them (StopSession, or kill by pid) in afterAll.
 */
import { lstatSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { credentials, Metadata, type CallOptions, type ServiceError } from '@grpc/grpc-js';
import { SPAWNER_ARGV0 } from '../../agent/vnc/spawner.js';
import { AgentClient } from '../../proto/gen/vncdispatch/agent/v1/agent.js';
import type { Pki } from './certs.js';
import { repoRoot, startNodeService } from './node-service.js';

export type { AgentClient };

export const AGENT_MAIN = resolve(repoRoot(), 'dist', 'agent', 'main.js');

export interface AgentProcess {
  address: string;
  port: number;
  pid: number;
  stateDir: string;
  /** The base of its per-session runtime directories (--runtime-dir). */
  runtimeDir: string;
  /** Every log line so far (pino JSON on stdout, plus anything on stderr). */
  logs: string[];
  /** Sends `signal` (default SIGTERM) and waits for the agent to exit; desktops keep running. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export interface StartAgentOptions {
  pki: Pki;
  /** Extra flags, appended after the defaults (--listen 127.0.0.1:0, TLS files, --state-dir, --runtime-dir). */
  args?: string[];
  /** Reuse a state directory (to test re-adoption); default a fresh temp dir. */
  stateDir?: string;
  /** Reuse a runtime directory base; default a fresh temp dir (root's, so the agent accepts it). */
  runtimeDir?: string;
  env?: NodeJS.ProcessEnv;
  /** How long to wait for the "listening" line. */
  timeoutMs?: number;
  /** A command that execs the agent in place, e.g. `['ip', 'netns', 'exec', NS]` to run it in a network namespace. */
  prefix?: readonly string[];
}

/**
 * The agent runs in a session of its own, as systemd starts it: its CPU priority then covers its autogroup, and it
 * does not raise the test runner's (agent/priority.ts). setsid(1) execs in place (the child is no group leader).
 */
const OWN_SESSION = ['setsid'];

/** Starts the agent and resolves once it logs `"msg":"listening"`. */
export async function startAgent(opts: StartAgentOptions): Promise<AgentProcess> {
  const stateDir = opts.stateDir ?? mkdtempSync(join(tmpdir(), 'vncdispatch-agent-state-'));
  const runtimeDir = opts.runtimeDir ?? mkdtempSync(join(tmpdir(), 'vncdispatch-agent-run-'));
  const service = await startNodeService('agent', AGENT_MAIN, [
    '--listen', '127.0.0.1:0', '--tls-cert', opts.pki.serverCert, '--tls-key', opts.pki.serverKey,
    '--tls-ca', opts.pki.caCert, '--state-dir', stateDir, '--runtime-dir', runtimeDir, ...(opts.args ?? []),
  ], { env: opts.env, timeoutMs: opts.timeoutMs, prefix: [...(opts.prefix ?? []), ...OWN_SESSION] });
  return { ...service, stateDir, runtimeDir };
}

/**
 * The test server certificate names localhost and 127.0.0.1; verifying it as "localhost" keeps Node from warning
 * about an IP address in TLS SNI (DEP0123). The certificate is still fully verified.
 */
const CLIENT_OPTIONS = { 'grpc.ssl_target_name_override': 'localhost' };

/**
 * An mTLS client for the agent. `cert` defaults to the PKI's client certificate; pass `{ cert: pki.rogueCert,
 * key: pki.rogueKey }` to present a certificate from an untrusted CA.
 */
export function agentClient(address: string, pki: Pki, cert?: { cert: string; key: string }): AgentClient {
  const c = cert ?? { cert: pki.clientCert, key: pki.clientKey };
  const creds = credentials.createSsl(readFileSync(pki.caCert), readFileSync(c.key), readFileSync(c.cert));
  return new AgentClient(address, creds, CLIENT_OPTIONS);
}

/** An agent client presenting no client certificate at all (must be refused). */
export function agentClientWithoutCert(address: string, pki: Pki): AgentClient {
  return new AgentClient(address, credentials.createSsl(readFileSync(pki.caCert)), CLIENT_OPTIONS);
}

type UnaryMethod<Req, Res> = (
  request: Req, metadata: Metadata, options: Partial<CallOptions>,
  callback: (error: ServiceError | null, response: Res) => void,
) => unknown;

/**
 * Promise wrapper for one unary call with a deadline, e.g.
 * `await call(client, client.startSession, { username, password })`.
 */
export function call<Req, Res>(client: AgentClient, method: UnaryMethod<Req, Res>, request: Req,
  timeoutMs = 20_000): Promise<Res> {
  return new Promise((res, rej) => {
    method.call(client, request, new Metadata(), { deadline: Date.now() + timeoutMs }, (err, out) =>
      (err ? rej(err) : res(out)));
  });
}

/**
 * The desktop log (Xvnc's and the session's output) of `uid`'s desktop on this agent: the agent keeps it in the
 * session's runtime directory, which belongs to the user. Empty if there is none.
 */
export function desktopLog(runtimeDir: string, uid: number): string {
  for (const name of readdirSync(runtimeDir)) {
    const dir = join(runtimeDir, name);
    try {
      if (lstatSync(dir).uid === uid) return readFileSync(join(dir, 'desktop.log'), 'utf8');
    } catch {
      // Removed while we looked.
    }
  }
  return '';
}

/** Uid, Gid and Groups lines of /proc/PID/status (real uid/gid first), or undefined if the process is gone. */
export function procIds(pid: number): { uid: number; gid: number; groups: number[] } | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const line = (k: string) => (new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(text)?.[1] ?? '').trim().split(/\s+/)
    .filter(Boolean).map(Number);
  return { uid: line('Uid')[0]!, gid: line('Gid')[0]!, groups: line('Groups').sort((a, b) => a - b) };
}

/** True if a process with this pid exists and is not a zombie. */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** Live processes whose session id (setsid) is `sid`: a desktop's session script and what it started. */
export function sessionPids(sid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'latin1');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(f[3]) === sid && f[0] !== 'Z') out.push(Number(name));
    } catch {
      // Exited while we looked.
    }
  }
  return out;
}

/** Pids of live processes owned by `uid`. */
export function pidsOfUid(uid: number): number[] {
  return readdirSync('/proc').filter((n) => /^\d+$/.test(n)).map(Number)
    .filter((pid) => procIds(pid)?.uid === uid && alive(pid));
}

function isSpawner(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0] === SPAWNER_ARGV0;
  } catch {
    return false;
  }
}

/**
 * Live descendants of `pid` (children, grandchildren...), from the PPid fields in /proc: what the process spawned.
 * An agent's own spawner processes are left out (what they spawn is not).
 */
export function descendants(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const m = /^PPid:\s*(\d+)/m.exec(readFileSync(`/proc/${name}/status`, 'utf8'));
      if (m && alive(Number(name))) parent.set(Number(name), Number(m[1]));
    } catch {
      // Exited while we looked.
    }
  }
  const out: number[] = [];
  for (const p of parent.keys()) {
    for (let q = parent.get(p); q !== undefined && q > 1; q = parent.get(q)) {
      if (q === pid) {
        if (!(parent.get(p) === pid && isSpawner(p))) out.push(p);
        break;
      }
    }
  }
  return out;
}

/** Kills a desktop left behind by a failed test: its Xvnc (its X clients then exit with the display). */
export function killDesktop(xvncPid: number): void {
  try {
    process.kill(xvncPid, 'SIGKILL');
  } catch {
    // Already gone.
  }
}

/** Test clean-up: ends a desktop through its agent (StopSession), or kills its Xvnc if the agent cannot. */
export async function endDesktop(client: AgentClient | undefined, session: { id: string; pid: number }): Promise<void> {
  try {
    if (!client) throw new Error('no agent client');
    await call(client, client.stopSession, { id: session.id });
  } catch {
    killDesktop(session.pid);
  }
}

/** Waits until `cond()` is true, polling; throws with `what` after `timeoutMs`. Not a timing assertion. */
export async function waitFor(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
