/**
 * Starts Xvnc directly (not the ~3 s vncserver wrapper) and learns its display from -displayfd, which Xvnc writes
 * once it accepts X and VNC connections. Xvnc picks the first free display itself, skipping displays whose
 * /tmp/.X11-unix socket or /tmp/.XN-lock exists, so stale locks of dead servers never block a start.
 */
import { AgentError } from '../errors.js';
import { spawnAsUser, type SpawnUser } from './spawn-as-user.js';
import type { SpawnedProcess } from './spawner.js';

export interface XvncOptions {
  xvnc: string;
  /** Keep the GLX extension (see xvncArgs). */
  glx: boolean;
  geometry: string;
  depth: number;
  /** -rfbunixpath: the desktop's only RFB listener, in the session's runtime directory (see runtime-dir.ts). */
  socketPath: string;
  passwdFile: string;
  xauthFile: string;
  logFd: number;
  /** The session's runtime directory: Xvnc's working directory. */
  cwd: string;
  /** Aborted when the start's budget runs out or its caller goes away; its reason (an AgentError) is the error. */
  signal: AbortSignal;
}

export interface StartedXvnc {
  child: SpawnedProcess;
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
    // No TCP listener at all: the desktop is reached only through the agent's relay, over mutual TLS.
    '-rfbport', '-1',
    '-rfbunixpath', opts.socketPath,
    '-rfbunixmode', String(0o600),
    // Xvnc keys its blacklist by peer address, and every connection on a Unix socket has the same one, so five
    // viewers opening at once would lock the rest out. Only the user and root can reach the socket (0600 in a 0700
    // directory), and VNC authentication stays on as a second lock, so there is nobody for the blacklist to stop.
    '-UseBlacklist', '0',
    // GLX makes Xvnc load Mesa's llvmpipe driver (libLLVM) at start: measured on bookworm, ~100 ms of every start
    // and 71 MB against 19 MB of resident memory per desktop. Only indirect-rendering OpenGL clients use it;
    // browsers, toolkits and window managers draw without it. Operators with GL applications turn it back on.
    ...(opts.glx ? [] : ['-extension', 'GLX']),
  ];
}

/** Starts Xvnc as the user and resolves once it is ready, or rejects with VD_AGENT_XVNC_FAILED. */
export async function startXvnc(user: SpawnUser, opts: XvncOptions): Promise<StartedXvnc> {
  if (opts.signal.aborted) throw opts.signal.reason as Error;
  let child: SpawnedProcess;
  try {
    child = await spawnAsUser(user, xvncArgs(user, opts), { stdio: ['ignore', opts.logFd, opts.logFd, 'pipe'],
      cwd: opts.cwd });
  } catch (err) {
    throw new AgentError('VD_AGENT_XVNC_FAILED', `Xvnc failed to start for ${user.name}: ${(err as Error).message}`,
      { cause: err });
  }
  return new Promise((resolve, reject) => {
    let out = '';
    const fail = (why: string, cause?: unknown, err?: Error) => {
      cleanup();
      child.kill('SIGKILL');
      child.closePipe();
      reject(err ?? new AgentError('VD_AGENT_XVNC_FAILED', `Xvnc failed to start for ${user.name}: ${why}`, { cause }));
    };
    const onData = (chunk: Buffer) => {
      out += chunk.toString('latin1');
      const m = /^(\d+)\n/.exec(out);
      if (m) {
        cleanup();
        child.closePipe();
        resolve({ child, pid: child.pid!, display: Number(m[1]) });
      } else if (out.length > 16) {
        fail(`unexpected -displayfd output ${JSON.stringify(out)}`);
      }
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null) =>
      fail(`exited (${signal ?? `code ${code}`}) before it was ready; the agent's log has the last lines of its desktop log`);
    const onError = (err: Error) => fail(err.message, err);
    const onAbort = () => fail('abandoned', undefined, opts.signal.reason as Error);
    function cleanup() {
      opts.signal.removeEventListener('abort', onAbort);
      child.off('data', onData);
      child.off('exit', onExit);
      child.off('error', onError);
    }
    child.on('data', onData);
    child.on('exit', onExit);
    child.on('error', onError);
    if (child.exitCode !== null || child.signalCode !== null) onExit(child.exitCode, child.signalCode);
    else if (opts.signal.aborted) onAbort();
    else opts.signal.addEventListener('abort', onAbort, { once: true });
  });
}
