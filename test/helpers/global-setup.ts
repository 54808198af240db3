import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureTestUsers } from './users.js';

/**
 * vitest globalSetup: creates the test accounts once, before any file runs, and gives the run a temp directory of
 * its own. Every temp directory a test makes (PKIs with private keys, agent state, controller data, browser
 * profiles) goes under it through TMPDIR, which the test workers inherit, and the teardown removes it whole: a test
 * that fails half-way leaves nothing behind either. VD_KEEP_TEMP=1 keeps it for a post-mortem.
 */
export default function setup(): () => void {
  if (process.getuid?.() !== 0) throw new Error('the test suites start Xvnc as other users and must run as root');
  ensureTestUsers();
  const root = mkdtempSync(join(tmpdir(), 'vdt-'));
  // Desktops run as test users and must traverse to their per-session directories below it.
  chmodSync(root, 0o755);
  process.env.TMPDIR = root;
  return () => {
    if (process.env.VD_KEEP_TEMP === '1') console.log(`test temp files kept in ${root}`);
    else rmSync(root, { recursive: true, force: true });
  };
}
