/**
 * Starts a program as a user: argv only (no shell), via `setpriv --init-groups` because Node's spawn({uid, gid})
 * would drop the user's supplementary groups. The child gets its own session (setsid via `detached`), so stopping
 * or restarting the agent leaves it running, and a clean environment. It is spawned on the spawner thread
 * (spawner.ts), so the agent's event loop never waits for the fork and exec.
 */
import { spawnOffLoop, type SpawnedProcess, type SpawnRequest } from './spawner.js';

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
  stdio: SpawnRequest['stdio'];
  /**
   * The working directory: the session's runtime directory, never the home. libuv waits in the agent until the child
   * has changed directory and exec'd, so a cwd on a hung NFS home would freeze the agent; the session launcher
   * changes to the home itself, in the user's process.
   */
  cwd: string;
}

/**
 * Spawns `argv` as `user` in a new session; resolves once it runs, rejects if it could not be spawned. The caller
 * handles 'error' and 'exit'. The child never keeps the agent alive: it must be able to exit (or restart) while
 * desktops keep running.
 */
export async function spawnAsUser(user: SpawnUser, argv: string[], opts: SpawnAsUserOptions): Promise<SpawnedProcess> {
  // gid 0 is a policy decision made before this (--allow-root-group); uid 0 never gets a desktop.
  if (user.uid === 0) throw new Error('refusing to start a desktop process as root');
  return spawnOffLoop({ file: 'setpriv',
    args: ['--reuid', String(user.uid), '--regid', String(user.gid), '--init-groups', '--', ...argv],
    cwd: opts.cwd, env: userEnv(user, opts.env), detached: true, stdio: opts.stdio });
}
