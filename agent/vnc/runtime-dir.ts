/**
 * Each desktop's files live in its own runtime directory, `<--runtime-dir>/<session id>/` (like systemd's
 * /run/user/UID), never in the user's home: the VNC password file, the X authority cookie and the desktop's log.
 *
 * The base is root's (0711: users may pass through to their own directory but not list it). A session's directory
 * is created by root, mode 0700, and filled while still root's, so nothing the user does can be in it yet; only then is
 * it handed to the user (Xvnc, running as the user, reads the files and may create its socket there). Later writes
 * by root into the user's directory create fresh files with O_EXCL | O_NOFOLLOW under random names and rename them
 * into place (rename replaces a planted symlink rather than following it), and removal unlinks names: the user
 * cannot move the directory itself, since its parent is root's. Nothing here touches a home, so a FIFO, a symlink, a
 * full quota or a hung NFS mount in a home cannot block or redirect the agent.
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { chmod, chown, lstat, mkdir, open, readdir, rename, rmdir, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { SESSION_ID_PATTERN } from '../../shared/names.js';
import { AgentError } from '../errors.js';
import { runAsUser } from './run-bounded.js';

/** The files in a session's runtime directory. */
export interface RuntimeFiles {
  dir: string;
  /** `vncpasswd -f` format, read by Xvnc's -rfbauth. */
  passwd: string;
  /** One MIT-MAGIC-COOKIE-1 entry, Xvnc's -auth and the session's XAUTHORITY. */
  xauth: string;
  /** Xvnc's and the session's stdout and stderr. */
  log: string;
}

export interface RuntimeOwner {
  uid: number;
  gid: number;
}

/**
 * The runtime directory of session `sessionId` under the agent's `--runtime-dir` base. Other parts of the agent (the
 * desktop's Unix socket, for one) put per-session files here: only the user and root can enter it.
 */
export function sessionRuntimeDir(base: string, sessionId: string): string {
  // Checked before it gets here; checked again because the id becomes a path: no separators, no dots.
  if (!SESSION_ID_PATTERN.test(sessionId)) throw new AgentError('VD_AGENT_INVALID_ID', 'session id must be a UUID');
  return join(base, sessionId);
}

/**
 * Where the desktop of session `sessionId` listens for RFB (Xvnc -rfbunixpath): its only listener, in a directory
 * only its user and root can enter. The relay connects here.
 */
export function desktopSocketPath(base: string, sessionId: string): string {
  return join(sessionRuntimeDir(base, sessionId), 'vnc.sock');
}

export function runtimeFiles(dir: string): RuntimeFiles {
  return { dir, passwd: join(dir, 'passwd'), xauth: join(dir, 'Xauthority'), log: join(dir, 'desktop.log') };
}

/**
 * Makes sure the base exists, is a real directory owned by root, writable by root only, and passable by users
 * (0711). Run once at start-up; throws an Error naming what is wrong (the agent then refuses to start).
 */
export async function ensureRuntimeBase(base: string): Promise<void> {
  let st;
  try {
    st = await lstat(base);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    await mkdir(base, { recursive: true, mode: 0o711 });
    await chmod(base, 0o711);
    st = await lstat(base);
  }
  if (!st.isDirectory()) throw new Error(`--runtime-dir ${base} is not a directory (a symlink or file is there)`);
  if (st.uid !== 0) throw new Error(`--runtime-dir ${base} must be owned by root (it is uid ${st.uid})`);
  if ((st.mode & 0o022) !== 0) throw new Error(`--runtime-dir ${base} must not be writable by group or others`);
  if ((st.mode & 0o7777) !== 0o711) await chmod(base, 0o711);
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

const CREATE_FLAGS = constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

async function createOwned(path: string, owner: RuntimeOwner, data: Buffer | undefined, extraFlags = constants.O_WRONLY):
  Promise<FileHandle> {
  const fh = await open(path, CREATE_FLAGS | extraFlags, 0o600);
  try {
    await fh.chmod(0o600);
    await fh.chown(owner.uid, owner.gid);
    if (data) await fh.writeFile(data);
    return fh;
  } catch (err) {
    await fh.close();
    throw err;
  }
}

/**
 * Creates the session's runtime directory with its password file, X cookie and an open log (returned: the caller
 * passes it to Xvnc and the session, then closes it), and hands the directory to the user. A directory left by an
 * earlier attempt with the same id is removed first.
 */
export async function createRuntimeDir(base: string, sessionId: string, owner: RuntimeOwner, obfuscated: Buffer,
  timeoutMs: number): Promise<{ files: RuntimeFiles; log: FileHandle }> {
  const files = runtimeFiles(sessionRuntimeDir(base, sessionId));
  try {
    await mkdir(files.dir, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw stateError(files.dir, err);
    await removeRuntimeDir(files.dir, owner, timeoutMs);
    await mkdir(files.dir, { mode: 0o700 }).catch((e: unknown) => { throw stateError(files.dir, e); });
  }
  let log: FileHandle | undefined;
  try {
    // Readable too: a failed start's last lines go to the agent's log from this handle (the file is gone by then).
    log = await createOwned(files.log, owner, undefined, constants.O_RDWR | constants.O_APPEND);
    (await createOwned(files.passwd, owner, obfuscated)).close().catch(() => undefined);
    (await createOwned(files.xauth, owner, xauthEntry(randomBytes(16)))).close().catch(() => undefined);
    await chown(files.dir, owner.uid, owner.gid);
    return { files, log };
  } catch (err) {
    await log?.close().catch(() => undefined);
    await removeRuntimeDir(files.dir, owner, timeoutMs).catch(() => undefined);
    throw stateError(files.dir, err);
  }
}

function stateError(path: string, err: unknown): AgentError {
  const code = (err as NodeJS.ErrnoException).code ?? String(err);
  return new AgentError('VD_AGENT_STATE_UNWRITABLE', `cannot write the session's runtime files in ${path} (${code}); ` +
    'check the space and permissions of --runtime-dir', { cause: err });
}

/**
 * Replaces the password file of a live session (TigerVNC re-reads it at each authentication). The directory is the
 * user's by now: a fresh root-created file under a random name, renamed over whatever `passwd` is.
 */
export async function replacePasswordFile(files: RuntimeFiles, owner: RuntimeOwner, obfuscated: Buffer): Promise<void> {
  const tmp = `${files.passwd}.${randomBytes(6).toString('hex')}`;
  try {
    await (await createOwned(tmp, owner, obfuscated)).close();
    await rename(tmp, files.passwd);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw stateError(files.dir, err);
  }
}

/**
 * Removes a session's runtime directory. Root unlinks the names it made; anything else the user put there is
 * removed by a process running as the user (so a planted symlink or directory swap can only reach what the user
 * could delete anyway), bounded by `timeoutMs`. Returns the problems it could not fix (the caller logs them).
 */
export async function removeRuntimeDir(dir: string, owner: RuntimeOwner, timeoutMs: number): Promise<string[]> {
  const files = runtimeFiles(dir);
  for (const p of [files.passwd, files.xauth, files.log]) await unlink(p).catch(() => undefined);
  try {
    await rmdir(dir);
    return [];
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return [];
    if (code !== 'ENOTEMPTY' && code !== 'EEXIST') return [`${dir}: ${code}`];
  }
  const left = (await readdir(dir).catch(() => [] as string[])).map((n) => join(dir, n));
  if (left.length > 0) {
    await runAsUser({ uid: owner.uid, gid: owner.gid }, ['rm', '-rf', '--one-file-system', '--', ...left],
      { timeoutMs }).catch(() => undefined);
  }
  try {
    await rmdir(dir);
    return [];
  } catch (err) {
    return [`${dir}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`];
  }
}

/** Most bytes and lines of a desktop log that a failed start copies into the agent's log. */
const LOG_TAIL_BYTES = 2048;
const LOG_TAIL_LINES = 8;

/**
 * The last lines of a desktop log, read through the agent's own handle (never the path, which the user can replace),
 * for the agent's log line about a failed start: why Xvnc or the session script gave up. Empty if unreadable.
 */
export async function readLogTail(log: FileHandle): Promise<string[]> {
  try {
    const { size } = await log.stat();
    const length = Math.min(size, LOG_TAIL_BYTES);
    const buf = Buffer.alloc(length);
    const { bytesRead } = await log.read(buf, 0, length, size - length);
    return buf.subarray(0, bytesRead).toString('utf8').split('\n').map((l) => l.trim()).filter((l) => l !== '')
      .slice(-LOG_TAIL_LINES);
  } catch {
    return [];
  }
}
