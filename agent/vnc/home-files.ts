/**
 * The files the agent keeps in a user's ~/.vnc: the VNC password file, the X authority cookie and the session log.
 * All are written as the user (see as-user.ts), created 0600 with O_NOFOLLOW, checked with fstat, and put in place
 * with rename, which replaces a planted symlink instead of writing through it.
 */
import { randomBytes } from 'node:crypto';
import {
  closeSync, constants, fchmodSync, fstatSync, mkdirSync, openSync, renameSync, statSync, unlinkSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { AgentError } from '../errors.js';
import { asUser, type Identity } from './as-user.js';

export interface HomeUser extends Identity {
  home: string;
}

/** Where the agent keeps one user's files on one blade. Hostname-qualified where homes may be shared (NFS). */
export interface HomePaths {
  dir: string;
  passwd: string;
  xauth: string;
  log: string;
}

export function homePaths(home: string, hostname: string): HomePaths {
  const dir = join(home, '.vnc');
  return {
    dir,
    passwd: join(dir, 'passwd'),
    xauth: join(dir, `vncdispatch-${hostname}.xauth`),
    log: join(dir, `vncdispatch-${hostname}.log`),
  };
}

function unusable(user: HomeUser, what: string, err: unknown): AgentError {
  const code = (err as NodeJS.ErrnoException).code ?? String(err);
  return new AgentError('VD_AGENT_HOME_UNUSABLE',
    `cannot ${what} as ${user.name} (${code}); check that ${user.home}/.vnc is a directory the user owns`,
    { cause: err });
}

function ensureDir(user: HomeUser, dir: string): void {
  try {
    mkdirSync(dir, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw unusable(user, `create ${dir}`, err);
  }
}

/** Writes `data` to `path` atomically as a fresh 0600 file owned by the running (effective) user. */
function writePrivateFile(user: HomeUser, path: string, data: Buffer): void {
  const tmp = `${path}.vncdispatch-${randomBytes(6).toString('hex')}`;
  let fd: number | undefined;
  try {
    fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    fchmodSync(fd, 0o600);
    const st = fstatSync(fd);
    if (!st.isFile() || st.uid !== user.uid || st.nlink !== 1) throw new Error(`unexpected file at ${tmp}`);
    writeSync(fd, data);
    closeSync(fd);
    fd = undefined;
    // rename never follows a symlink at `path`: a planted `passwd -> /etc/shadow` is replaced, its target untouched.
    renameSync(tmp, path);
  } catch (err) {
    if (fd !== undefined) closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      // tmp was never created, or is already gone.
    }
    throw err instanceof AgentError ? err : unusable(user, `write ${path}`, err);
  }
}

/** Writes the VNC password file (`vncpasswd -f` format) as the user. */
export function writePasswordFile(user: HomeUser, paths: HomePaths, obfuscated: Buffer): void {
  asUser(user, () => {
    ensureDir(user, paths.dir);
    writePrivateFile(user, paths.passwd, obfuscated);
  });
}

/**
 * An X authority file with one MIT-MAGIC-COOKIE-1 entry for any display (FamilyWild, empty display number), so Xvnc
 * (-auth) admits only the user's own clients: without it any local account could open the display.
 */
export function xauthEntry(cookie: Buffer): Buffer {
  const field = (b: Buffer) => Buffer.concat([Buffer.from([b.length >> 8, b.length & 0xff]), b]);
  return Buffer.concat([
    Buffer.from([0xff, 0xff]), // FamilyWild
    field(Buffer.alloc(0)), // address
    field(Buffer.alloc(0)), // display number: any
    field(Buffer.from('MIT-MAGIC-COOKIE-1')),
    field(cookie),
  ]);
}

/**
 * Files for a new session: a truncated log whose fd is returned (the caller closes it), the password file and the X
 * cookie. The log is opened first so that a refused log leaves no secret behind.
 */
export function prepareSessionFiles(user: HomeUser, paths: HomePaths, obfuscated: Buffer): { logFd: number } {
  return asUser(user, () => {
    ensureDir(user, paths.dir);
    let logFd: number;
    try {
      logFd = openSync(paths.log,
        constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_APPEND | constants.O_NOFOLLOW, 0o600);
    } catch (err) {
      throw unusable(user, `open ${paths.log}`, err);
    }
    try {
      writePrivateFile(user, paths.passwd, obfuscated);
      writePrivateFile(user, paths.xauth, xauthEntry(randomBytes(16)));
    } catch (err) {
      closeSync(logFd);
      for (const p of [paths.passwd, paths.xauth]) {
        try {
          unlinkSync(p);
        } catch {
          // Not written.
        }
      }
      throw err;
    }
    return { logFd };
  });
}

/** The user's own session script if ~/.vnc/xstartup is an executable file (checked as the user), else undefined. */
export function userXstartup(user: HomeUser, paths: HomePaths): string | undefined {
  const path = join(paths.dir, 'xstartup');
  return asUser(user, () => {
    try {
      const st = statSync(path);
      return st.isFile() && (st.mode & 0o111) !== 0 ? path : undefined;
    } catch {
      return undefined;
    }
  });
}

/** Removes the password and cookie files as the user; missing files are fine. Returns errors it could not fix. */
export function removeSessionFiles(user: HomeUser, paths: HomePaths): string[] {
  const problems: string[] = [];
  asUser(user, () => {
    for (const p of [paths.passwd, paths.xauth]) {
      try {
        unlinkSync(p);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'ENOENT') problems.push(`${p}: ${code}`);
      }
    }
  });
  return problems;
}
