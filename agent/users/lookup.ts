/**
 * Looks a validated username up in the system databases (through NSS, so LDAP/SSSD accounts work) and decides
 * whether it may have a desktop. Callers must have passed the name through checkUsername first.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { AgentError } from '../errors.js';

const run = promisify(execFile);

export interface UnixUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
}

export interface UserPolicy {
  minUid: number;
  allowGroup?: string;
}

async function getent(db: string, key: string): Promise<string | undefined> {
  try {
    const { stdout } = await run('getent', [db, key], { timeout: 5000, env: {} });
    return stdout;
  } catch (err) {
    // getent exits 2 when the key is not found.
    if ((err as { code?: unknown }).code === 2) return undefined;
    throw err;
  }
}

/** The passwd entry of `username`, or VD_AGENT_USER_NOT_FOUND. */
export async function lookupUser(username: string): Promise<UnixUser> {
  const line = (await getent('passwd', username))?.split('\n')[0];
  const f = line?.split(':');
  if (!f || f.length < 7 || f[0] !== username) {
    throw new AgentError('VD_AGENT_USER_NOT_FOUND', `user ${username} does not exist on this blade`);
  }
  return { name: username, uid: Number(f[2]), gid: Number(f[3]), home: f[5]!, shell: f[6] || '/bin/sh' };
}

/** Names of every group the user is in (primary and supplementary). */
export async function groupsOf(username: string): Promise<string[]> {
  const { stdout } = await run('id', ['-Gn', username], { timeout: 5000, env: {} });
  return stdout.trim().split(/\s+/);
}

/** Throws VD_AGENT_USER_FORBIDDEN unless the user is an ordinary account allowed by the policy. */
export async function checkUserAllowed(user: UnixUser, policy: UserPolicy): Promise<void> {
  if (user.uid === 0 || user.gid === 0) {
    throw new AgentError('VD_AGENT_USER_FORBIDDEN', `user ${user.name} is root or in group root`);
  }
  if (user.uid < policy.minUid) {
    throw new AgentError('VD_AGENT_USER_FORBIDDEN', `user ${user.name} is a system account (uid ${user.uid} < ${policy.minUid})`);
  }
  if (!user.home.startsWith('/')) {
    throw new AgentError('VD_AGENT_HOME_UNUSABLE', `user ${user.name} has no absolute home directory`);
  }
  if (policy.allowGroup !== undefined) {
    const groups = await groupsOf(user.name);
    if (!groups.includes(policy.allowGroup)) {
      throw new AgentError('VD_AGENT_USER_FORBIDDEN', `user ${user.name} is not in group ${policy.allowGroup}`);
    }
  }
}
