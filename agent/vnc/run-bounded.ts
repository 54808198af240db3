/**
 * Runs a short helper program (getent, id, a check as the user) in a child process with a hard time limit, so that
 * nothing the agent asks about the outside world (NSS, a home on a hung NFS mount) can block its event loop or hold
 * a call past its budget. The child starts in `/` (libuv waits for exec in the parent, so a cwd on a hung mount would
 * block the agent itself); what it then touches only blocks the child. On timeout the child is killed and the promise
 * rejects at once, without waiting for an exit that a process stuck in the kernel may never make.
 */
import { spawnOffLoop } from './spawner.js';

/** The helper did not finish in time. */
export class RunTimeoutError extends Error {
  override name = 'RunTimeoutError';
}

/** The helper exited with a non-zero status (or a signal). */
export class RunExitError extends Error {
  override name = 'RunExitError';
  constructor(message: string, readonly exitCode: number | null, readonly stdout: string) {
    super(message);
  }
}

export interface RunOptions {
  timeoutMs: number;
  /** Bytes for the child's stdin (never argv: it may be a secret). */
  input?: Buffer | undefined;
  /** Most bytes of stdout kept. */
  maxOutput?: number | undefined;
  /** Aborting kills the child and rejects. */
  signal?: AbortSignal | undefined;
}

/** Runs `argv` as root with an empty environment; resolves with its stdout when it exits 0. */
export function runBounded(argv: string[], opts: RunOptions): Promise<string> {
  return new Promise((resolve, reject) => {
    let done = false;
    let kill = () => {};
    let timer: NodeJS.Timeout | undefined;
    const finish = (err: Error | undefined, out = '') => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      if (err) {
        kill();
        reject(err);
      } else {
        resolve(out);
      }
    };
    const onAbort = () => finish(new RunTimeoutError(`${argv[0]} was abandoned: the call was cancelled`));
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    if (opts.signal?.aborted) onAbort();
    spawnOffLoop({
      file: argv[0]!, args: argv.slice(1), cwd: '/', env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' }, detached: false,
      stdio: [opts.input ? 'pipe' : 'ignore', 'pipe', 'ignore'], input: opts.input, maxOutput: opts.maxOutput,
    }).then((child) => {
      kill = () => child.kill('SIGKILL');
      if (done) {
        kill();
        return;
      }
      // The limit is on the helper's own run; its wait for a spawner is bounded by the caller's signal.
      timer = setTimeout(() => finish(new RunTimeoutError(`${argv[0]} did not finish within ${opts.timeoutMs} ms`)),
        opts.timeoutMs);
      child.on('error', (err) => finish(err));
      child.on('close', (code, sig, out) => {
        if (code === 0) finish(undefined, out);
        else finish(new RunExitError(`${argv[0]} exited with ${sig ?? `status ${code}`}`, code, out));
      });
    }, (err: Error) => finish(err));
  });
}

export interface RunIdentity {
  uid: number;
  gid: number;
  /** With a name, the user's supplementary groups too (setpriv --init-groups); without, none. */
  name?: string | undefined;
}

/** Runs `argv` as the user (setpriv, argv only, no shell) under the same limits as runBounded. */
export function runAsUser(user: RunIdentity, argv: string[], opts: RunOptions): Promise<string> {
  const groups = user.name !== undefined ? ['--init-groups'] : ['--clear-groups'];
  return runBounded(['setpriv', '--reuid', String(user.uid), '--regid', String(user.gid), ...groups, '--', ...argv],
    opts);
}
