import { ensureTestUsers } from './users.js';

/** vitest globalSetup: creates the test accounts once, before any file runs. */
export default function setup(): void {
  if (process.getuid?.() !== 0) throw new Error('the test suites start Xvnc as other users and must run as root');
  ensureTestUsers();
}
