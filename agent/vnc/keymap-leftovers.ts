/**
 * Compiled keymaps that an X server killed mid-start leaves in /tmp, and why the agent removes them.
 *
 * At start-up each X server has xkbcomp compile its keymap to /tmp/server-<display>.xkm (Debian's compiled-keymap
 * directory, /var/lib/xkb, is root's, so a server run as a user falls back to /tmp), loads it and deletes it, all
 * within milliseconds. An Xvnc killed in between (a start abandoned at its deadline, an agent killed) leaves the file
 * behind, owned by its user, in sticky /tmp. The next Xvnc on that display run by anyone else cannot overwrite it,
 * fails to compile its keymap and exits 1. As -displayfd picks the lowest free display, every later start on the blade
 * lands on that display and fails, whoever asks: in the 200-start load test the last eight users failed on all four
 * blades for minutes, each start "Xvnc exited (code 1) before it was ready".
 *
 * So the agent removes such files:
 * - right after a start of a user's is abandoned: the keymaps of that user's displays whose X socket nobody listens
 *   on any more (the killed server's; a start of theirs still running elsewhere on the host listens on its own, and
 *   keeps its keymap), together with those dead sockets;
 * - anyone's that has outlived every start (older than STALE_AFTER_MS), when the agent opens and then every
 *   STALE_AFTER_MS.
 */
import { lstat, readdir, unlink } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';

/** Where X servers run as a user write their compiled keymaps (Xorg's fallback; a literal in the server). */
export const KEYMAP_DIR = '/tmp';
/** Where X servers listen; root's and sticky (x11-socket-dir.ts). */
export const X_SOCKET_DIR = '/tmp/.X11-unix';
/** Older than this, a compiled keymap belongs to no start in flight (a start's deadline is seconds). */
export const STALE_AFTER_MS = 60_000;
/** How long a socket probe may take before the socket counts as alive (a busy server is slow, not dead). */
const PROBE_TIMEOUT_MS = 1000;

const KEYMAP_NAME = /^server-(\d+)\.xkm$/;
const SOCKET_NAME = /^X(\d+)$/;

/** Removes `path` if it is a regular file (never a symlink planted under its name) that passes `test`. */
async function removeFileIf(path: string, test: (st: { uid: number; mtimeMs: number }) => boolean): Promise<boolean> {
  try {
    const st = await lstat(path);
    if (!st.isFile() || !test(st)) return false;
    await unlink(path);
    return true;
  } catch {
    // Gone meanwhile (its server loaded it), or not ours to remove.
    return false;
  }
}

async function namesIn(dir: string, pattern: RegExp): Promise<string[]> {
  try {
    return (await readdir(dir)).filter((n) => pattern.test(n));
  } catch {
    return [];
  }
}

/** Removes every compiled keymap in `dir` last written before `writtenBefore` (epoch ms); returns the names removed. */
export async function removeStaleKeymaps(writtenBefore: number, dir = KEYMAP_DIR): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await namesIn(dir, KEYMAP_NAME)) {
    if (await removeFileIf(join(dir, name), (st) => st.mtimeMs < writtenBefore)) removed.push(name);
  }
  return removed;
}

/** True if something listens on the Unix socket at `path`; a refused or failed connection means nothing does. */
function listening(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    const done = (alive: boolean) => {
      clearTimeout(timer);
      s.destroy();
      resolve(alive);
    };
    const timer = setTimeout(() => done(true), PROBE_TIMEOUT_MS);
    s.once('connect', () => done(true));
    s.once('error', (err: NodeJS.ErrnoException) => done(err.code !== 'ECONNREFUSED' && err.code !== 'ENOENT'));
  });
}

/**
 * For each X socket of `uid` that nobody listens on (a server of theirs that was killed), removes the socket and that
 * display's keymap if `uid` owns it. Returns the keymap names removed. Never throws.
 */
export async function removeKeymapsOfDeadDisplays(uid: number, socketDir = X_SOCKET_DIR, keymapDir = KEYMAP_DIR):
  Promise<string[]> {
  const removed: string[] = [];
  for (const name of await namesIn(socketDir, SOCKET_NAME)) {
    const path = join(socketDir, name);
    try {
      const st = await lstat(path);
      if (!st.isSocket() || st.uid !== uid || (await listening(path))) continue;
      await unlink(path);
    } catch {
      continue;
    }
    const keymap = `server-${SOCKET_NAME.exec(name)![1]}.xkm`;
    if (await removeFileIf(join(keymapDir, keymap), (st) => st.uid === uid)) removed.push(keymap);
  }
  return removed;
}
