/**
 * Runs synchronous filesystem work with the effective uid, gid and groups of a user, so the kernel applies the
 * user's permissions: a symlink the user planted can only lead where the user could write anyway
 * (`~/.vnc -> /root` fails with EACCES), and root-squashed NFS homes work.
 *
 * Why synchronous only: seteuid changes the credentials of the whole process (glibc applies it to every thread).
 * While `fn` runs the event loop cannot run anything else, and the agent does no asynchronous filesystem work on
 * libuv's thread pool, so nothing else ever runs with the user's credentials.
 */
export interface Identity {
  name: string;
  uid: number;
  gid: number;
}

/** The POSIX credential calls Node has on Linux (the typings mark them optional, initgroups missing). */
interface PosixCredentials {
  getgroups(): number[];
  getegid(): number;
  initgroups(user: string, extraGroup: number): void;
  setegid(id: number): void;
  seteuid(id: number): void;
  setgroups(groups: number[]): void;
}
const posix = process as unknown as PosixCredentials;

/** Calls `fn` as `user` and always restores root's credentials. `fn` must not return a promise. */
export function asUser<T>(user: Identity, fn: () => T): T {
  const savedGroups = posix.getgroups();
  const savedEgid = posix.getegid();
  try {
    posix.initgroups(user.name, user.gid);
    posix.setegid(user.gid);
    posix.seteuid(user.uid);
    return fn();
  } finally {
    // Unconditionally, in this order: groups and gid can only be restored once euid is 0 again.
    posix.seteuid(0);
    posix.setegid(savedEgid);
    posix.setgroups(savedGroups);
  }
}
