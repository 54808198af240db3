/**
 * Looks a validated username up in the system databases (through NSS, so LDAP/SSSD accounts work) and decides
 * whether it may have a desktop. Callers must have passed the name through checkUsername first.
 *
 * Every look goes through a child process with a time limit (vnc/run-bounded.ts): a slow directory server or a
 * home on a hung NFS mount costs one refused call, never the agent's event loop.
 */
import { AgentError } from '../errors.js';
import { runAsUser, runBounded, RunExitError, RunTimeoutError } from '../vnc/run-bounded.js';

export interface UnixUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
  /** Every group id the user's processes get (primary first, then supplementary). */
  groups: number[];
  /** The same groups by name (where the group database has one). */
  groupNames: string[];
}

export interface UserPolicy {
  minUid: number;
  allowGroup?: string | undefined;
  allowRootGroup: boolean;
}

export interface LookupOptions {
  timeoutMs: number;
  signal?: AbortSignal | undefined;
}

/** The kernel's overflow uid (65534): `nobody` owns nothing and must never own a desktop. */
const NOBODY_UID = 65534;

function lookupFailed(what: string, err: unknown): AgentError {
  const why = err instanceof RunTimeoutError ? err.message : `failed (${(err as Error).message})`;
  return new AgentError('VD_AGENT_LOOKUP_FAILED', `${what}: ${why}; check NSS (LDAP/SSSD) on this blade`,
    { cause: err });
}

/** The passwd entry and groups of `username`, or VD_AGENT_USER_NOT_FOUND. */
export async function lookupUser(username: string, opts: LookupOptions): Promise<UnixUser> {
  // Both lookups need only the name, so they run at once: each is a process (NSS may be LDAP or SSSD), and a start
  // waits for the slower, not the sum. The groups' outcome is looked at only once the passwd entry is known good.
  const idRun = runBounded(['id', username], opts).then((out) => ({ out }), (err: unknown) => ({ err }));
  let line: string;
  try {
    line = (await runBounded(['getent', 'passwd', username], opts)).split('\n')[0] ?? '';
  } catch (err) {
    await idRun;
    // getent exits 2 when the key is not found.
    if (err instanceof RunExitError && err.exitCode === 2) {
      throw new AgentError('VD_AGENT_USER_NOT_FOUND', `user ${username} does not exist on this blade`);
    }
    throw lookupFailed(`looking up user ${username}`, err);
  }
  const f = line.split(':');
  if (f.length < 7 || f[0] !== username || !/^\d+$/.test(f[2]!) || !/^\d+$/.test(f[3]!)) {
    throw new AgentError('VD_AGENT_USER_NOT_FOUND', `user ${username} has no usable passwd entry on this blade`);
  }
  const idResult = await idRun;
  if ('err' in idResult) throw lookupFailed(`looking up the groups of ${username}`, idResult.err);
  const id = idResult.out;
  // uid=1051(vdtest51) gid=1053(vdtest51) groups=1053(vdtest51),1001(vdusers)
  const groupsField = /\bgroups=(\S*)/.exec(id)?.[1] ?? '';
  const groups: number[] = [];
  const groupNames: string[] = [];
  for (const g of groupsField.split(',').filter(Boolean)) {
    const m = /^(\d+)(?:\(([^)]*)\))?$/.exec(g);
    if (!m) continue;
    groups.push(Number(m[1]));
    if (m[2] !== undefined) groupNames.push(m[2]);
  }
  const gid = Number(f[3]);
  if (!groups.includes(gid)) groups.unshift(gid);
  return { name: username, uid: Number(f[2]), gid, home: f[5]!, shell: f[6] || '/bin/sh', groups, groupNames };
}

/**
 * Throws unless the user is an ordinary account the policy allows: VD_AGENT_USER_FORBIDDEN (root, nobody, a system
 * account, outside --allow-group) or VD_AGENT_USER_ROOT_GROUP (gid 0 among the groups, unless --allow-root-group).
 */
export function checkUserAllowed(user: UnixUser, policy: UserPolicy): void {
  if (user.uid === 0) throw new AgentError('VD_AGENT_USER_FORBIDDEN', `user ${user.name} is root`);
  if (user.name === 'nobody' || user.uid === NOBODY_UID) {
    throw new AgentError('VD_AGENT_USER_FORBIDDEN', `user ${user.name} is the unprivileged "nobody" account, not a login`);
  }
  if (user.uid < policy.minUid) {
    throw new AgentError('VD_AGENT_USER_FORBIDDEN', `user ${user.name} is a system account (uid ${user.uid} < ${policy.minUid})`);
  }
  if (user.groups.includes(0) && !policy.allowRootGroup) {
    throw new AgentError('VD_AGENT_USER_ROOT_GROUP', `user ${user.name} is in group root (gid 0), which would give ` +
      'the desktop root-group access; remove the user from that group, or start the agent with --allow-root-group');
  }
  if (policy.allowGroup !== undefined && !user.groupNames.includes(policy.allowGroup)) {
    throw new AgentError('VD_AGENT_USER_FORBIDDEN', `user ${user.name} is not in group ${policy.allowGroup}`);
  }
}

/**
 * Checks, as the user and within the time limit, that the home is a directory the user can enter: the session
 * starts there. Throws VD_AGENT_HOME_UNUSABLE with what an admin should fix.
 */
export async function checkHomeUsable(user: UnixUser, opts: LookupOptions): Promise<void> {
  if (!user.home.startsWith('/')) {
    throw new AgentError('VD_AGENT_HOME_UNUSABLE',
      `user ${user.name} has no absolute home directory (${JSON.stringify(user.home.slice(0, 80))}); set one in passwd`);
  }
  try {
    await runAsUser(user, ['test', '-d', user.home, '-a', '-x', user.home], opts);
  } catch (err) {
    if (err instanceof RunTimeoutError && opts.signal?.aborted) throw err;
    const message = err instanceof RunTimeoutError
      ? `the home directory ${user.home} of ${user.name} did not answer within ${opts.timeoutMs} ms; check its ` +
        'filesystem on this blade (a hung NFS or FUSE mount?)'
      : `the home directory ${user.home} of ${user.name} is missing or not a directory the user can enter; create ` +
        'it (owned by the user) or fix its permissions';
    throw new AgentError('VD_AGENT_HOME_UNUSABLE', message, { cause: err });
  }
}
