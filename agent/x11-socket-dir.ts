/**
 * /tmp/.X11-unix must exist, be root-owned and sticky (1777) before Xvnc runs as a user: a user cannot create it,
 * and a user who owned it could replace other users' X sockets. systemd-tmpfiles normally sets it up ("D!
 * /tmp/.X11-unix 1777 root root"); the agent makes sure, because an Xvnc started by hand can create it user-owned.
 */
import { chmodSync, chownSync, lstatSync, mkdirSync } from 'node:fs';
import type { Logger } from 'pino';

export const X11_SOCKET_DIR = '/tmp/.X11-unix';

export function ensureX11SocketDir(log: Logger, dir = X11_SOCKET_DIR): void {
  let st;
  try {
    st = lstatSync(dir);
  } catch {
    mkdirSync(dir, { mode: 0o1777 });
    chmodSync(dir, 0o1777);
    log.info({ dir }, 'created X socket directory');
    return;
  }
  if (!st.isDirectory()) throw new Error(`${dir} is not a directory (a symlink or file was planted there)`);
  if (st.uid !== 0 || st.gid !== 0 || (st.mode & 0o7777) !== 0o1777) {
    chownSync(dir, 0, 0);
    chmodSync(dir, 0o1777);
    log.warn({ dir, uid: st.uid, mode: (st.mode & 0o7777).toString(8) }, 'fixed owner and mode of X socket directory');
  }
}
