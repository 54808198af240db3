/**
 * Starts a program as a user: argv only (no shell), via `setpriv --init-groups` because Node's spawn({uid, gid})
 * would drop the user's supplementary groups. The child gets its own session (setsid via `detached`), so stopping
 * or restarting the agent leaves it running, and a clean environment.
 */
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';

export interface SpawnUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
}

/** PATH for desktops; the same as setpriv --reset-env and login(1) give ordinary users. */
export const USER_PATH = '/usr/local/bin:/usr/bin:/bin:/usr/games';

/** The environment of every process the agent starts: exactly these variables plus `extra`. */
export function userEnv(user: SpawnUser, extra: Record<string, string> = {}): Record<string, string> {
  return { HOME: user.home, USER: user.name, LOGNAME: user.name, SHELL: user.shell, PATH: USER_PATH, ...extra };
}

export interface SpawnAsUserOptions {
  env?: Record<string, string>;
  stdio: StdioOptions;
  /**
   * The working directory: the session's runtime directory, never the home. libuv waits in the agent until the child
   * has changed directory and exec'd, so a cwd on a hung NFS home would freeze the agent; the session launcher
   * changes to the home itself, in the user's process.
   */
  cwd: string;
}

/** Spawns `argv` as `user` in a new session. The caller handles 'error' and 'exit'. */
export function spawnAsUser(user: SpawnUser, argv: string[], opts: SpawnAsUserOptions): ChildProcess {
  // gid 0 is a policy decision made before this (--allow-root-group); uid 0 never gets a desktop.
  if (user.uid === 0) throw new Error('refusing to start a desktop process as root');
  const child = spawn('setpriv',
    ['--reuid', String(user.uid), '--regid', String(user.gid), '--init-groups', '--', ...argv],
    { cwd: opts.cwd, env: userEnv(user, opts.env), detached: true, stdio: opts.stdio });
  // The agent must be able to exit (or restart) while desktops keep running.
  child.unref();
  return child;
}
