/**
 * Starts Xvnc directly (not the ~3 s vncserver wrapper) and learns its display from -displayfd, which Xvnc writes
 * once it accepts X and VNC connections. Xvnc picks the first free display itself, skipping displays whose
 * /tmp/.X11-unix socket or /tmp/.XN-lock exists, so stale locks of dead servers never block a start.
 */
import type { ChildProcess } from 'node:child_process';
import type { Readable } from 'node:stream';
import { AgentError } from '../errors.js';
import { spawnAsUser, type SpawnUser } from './spawn-as-user.js';

export interface XvncOptions {
  xvnc: string;
  geometry: string;
  depth: number;
  /** -interface: the address the VNC port listens on; undefined = all. */
  vncListen?: string;
  /** -rfbport: the VNC port (chosen by VncPorts, not 5900 + display). */
  port: number;
  passwdFile: string;
  xauthFile: string;
  logFd: number;
  /** Give up on a start after this long. */
  readyTimeoutMs: number;
}

export interface StartedXvnc {
  child: ChildProcess;
  pid: number;
  display: number;
}

/** The Xvnc command line. The password is only in the file named by -rfbauth, never here. */
export function xvncArgs(user: SpawnUser, opts: XvncOptions): string[] {
  return [
    opts.xvnc,
    '-displayfd', '3',
    '-rfbauth', opts.passwdFile,
    '-SecurityTypes', 'VncAuth',
    '-auth', opts.xauthFile,
    '-geometry', opts.geometry,
    '-depth', String(opts.depth),
    '-desktop', `${user.name}'s desktop`,
    '-nolisten', 'tcp',
    '-rfbport', String(opts.port),
    ...(opts.vncListen !== undefined ? ['-interface', opts.vncListen] : []),
  ];
}

/** Starts Xvnc as the user and resolves once it is ready, or rejects with VD_AGENT_XVNC_FAILED. */
export function startXvnc(user: SpawnUser, opts: XvncOptions): Promise<StartedXvnc> {
  const child = spawnAsUser(user, xvncArgs(user, opts), { stdio: ['ignore', opts.logFd, opts.logFd, 'pipe'] });
  return new Promise((resolve, reject) => {
    let out = '';
    const displayPipe = child.stdio[3] as Readable;
    const fail = (why: string, cause?: unknown) => {
      cleanup();
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      reject(new AgentError('VD_AGENT_XVNC_FAILED', `Xvnc failed to start for ${user.name}: ${why}`, { cause }));
    };
    const onData = (chunk: Buffer) => {
      out += chunk.toString('latin1');
      const m = /^(\d+)\n/.exec(out);
      if (m) {
        cleanup();
        displayPipe.destroy();
        resolve({ child, pid: child.pid!, display: Number(m[1]) });
      } else if (out.length > 16) {
        fail(`unexpected -displayfd output ${JSON.stringify(out)}`);
      }
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null) =>
      fail(`exited (${signal ?? `code ${code}`}) before it was ready; see ~/.vnc/ log`);
    const onError = (err: Error) => fail(err.message, err);
    const timer = setTimeout(() => fail(`not ready after ${opts.readyTimeoutMs} ms`), opts.readyTimeoutMs);
    function cleanup() {
      clearTimeout(timer);
      displayPipe.off('data', onData);
      child.off('exit', onExit);
      child.off('error', onError);
    }
    displayPipe.on('data', onData);
    displayPipe.on('error', () => undefined);
    child.on('exit', onExit);
    child.on('error', onError);
  });
}
