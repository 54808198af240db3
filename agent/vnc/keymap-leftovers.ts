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
 * So the agent removes such files: a user's own right after a start of theirs is abandoned (a user's starts on a
 * blade run one at a time, so none of theirs is in flight), and anyone's that has outlived every start (older than
 * STALE_AFTER_MS) when the agent opens and then every STALE_AFTER_MS.
 */
import { lstat, readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';

/** Where X servers run as a user write their compiled keymaps (Xorg's fallback; a literal in the server). */
export const KEYMAP_DIR = '/tmp';
/** Older than this, a compiled keymap belongs to no start in flight (a start's deadline is seconds). */
export const STALE_AFTER_MS = 60_000;

const KEYMAP_NAME = /^server-\d+\.xkm$/;

interface KeymapFilter {
  /** Only files owned by this uid. */
  uid?: number;
  /** Only files last written before this time (epoch ms). */
  writtenBefore?: number;
}

/**
 * Removes the compiled keymaps in `dir` that match `filter` (regular files only: a symlink planted under such a name
 * is left alone), and returns the names removed. Never throws: a file that vanished or cannot be removed is skipped.
 */
export async function removeKeymaps(filter: KeymapFilter, dir = KEYMAP_DIR): Promise<string[]> {
  let names: string[];
  try {
    names = (await readdir(dir)).filter((n) => KEYMAP_NAME.test(n));
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const path = join(dir, name);
    try {
      const st = await lstat(path);
      if (!st.isFile()) continue;
      if (filter.uid !== undefined && st.uid !== filter.uid) continue;
      if (filter.writtenBefore !== undefined && st.mtimeMs >= filter.writtenBefore) continue;
      await unlink(path);
      removed.push(name);
    } catch {
      // Gone meanwhile (its server loaded it), or not ours to remove.
    }
  }
  return removed;
}
