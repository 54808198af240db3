/**
 * Real Unix accounts for the tests (they run as root). Created once by test/helpers/global-setup.ts so that
 * parallel files never race on /etc/passwd locks. Every test user has primary group = own group and the
 * supplementary groups TEST_GROUPS, so tests can check the privilege drop keeps them.
 */
import { execFileSync } from 'node:child_process';

/** Supplementary groups every test user belongs to. `vdusers` doubles as the --allow-group in tests. */
export const TEST_GROUPS = ['vdusers', 'vdextra'] as const;
/** A user that exists but is not in `vdusers` (for --allow-group tests). */
export const OUTSIDER = 'vdoutsider';
/** How many ordinary test users exist: vdtest01 .. vdtest124. */
export const TEST_USER_COUNT = 144;

export function testUser(n: number): string {
  if (n < 1 || n > TEST_USER_COUNT) throw new RangeError(`test user ${n} out of range`);
  return `vdtest${String(n).padStart(2, '0')}`;
}

function exists(kind: 'passwd' | 'group', name: string): boolean {
  try {
    execFileSync('getent', [kind, name], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}

/** Creates the groups and users if missing. Idempotent. */
export function ensureTestUsers(): void {
  for (const g of TEST_GROUPS) if (!exists('group', g)) execFileSync('groupadd', [g]);
  for (let i = 1; i <= TEST_USER_COUNT; i++) {
    const name = testUser(i);
    if (!exists('passwd', name)) {
      execFileSync('useradd', ['-m', '-s', '/bin/bash', '-U', '-G', TEST_GROUPS.join(','), name]);
    }
  }
  if (!exists('passwd', OUTSIDER)) execFileSync('useradd', ['-m', '-s', '/bin/bash', '-U', OUTSIDER]);
}

export interface Ids {
  uid: number;
  gid: number;
  groups: number[];
}

/** uid, primary gid and all group ids of a user, from `id`. */
export function idsOf(username: string): Ids {
  const out = (flag: string) => execFileSync('id', [flag, username], { encoding: 'utf8' }).trim();
  return {
    uid: Number(out('-u')),
    gid: Number(out('-g')),
    groups: out('-G').split(/\s+/).map(Number).sort((a, b) => a - b),
  };
}

/** Load users for the long fault suite (`npm run test:faults`): vdload001 .. vdloadNNN. */
export function loadUser(n: number): string {
  return `vdload${String(n).padStart(3, '0')}`;
}

/**
 * Creates vdload{first}..vdload{first + count - 1} (default from vdload001) if missing (idempotent), like the test
 * users but only for the long fault suite and the benchmarks, which need more users than the hundred every suite
 * shares. Returns their names.
 */
export function ensureLoadUsers(count: number, first = 1): string[] {
  for (const g of TEST_GROUPS) if (!exists('group', g)) execFileSync('groupadd', [g]);
  const names = Array.from({ length: count }, (_, i) => loadUser(first + i));
  for (const name of names) {
    if (!exists('passwd', name)) execFileSync('useradd', ['-m', '-s', '/bin/bash', '-U', '-G', TEST_GROUPS.join(','), name]);
  }
  return names;
}
