/**
 * Shared settings and checks for the fuzz suites (test/fuzz/): a fixed seed, run counts scaled by FUZZ_SCALE
 * (`npm run test:fuzz` sets 100), what "a documented answer" means, and a read-only look into the controller's
 * SQLite store so a property can say "nothing was written".
 */
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { expect } from 'vitest';
import { ERROR_CLASSES } from '../../controller/errors.js';
import { SQLITE_FILE_NAME } from '../../controller/store/sqlite-store.js';
import type { RawAnswer } from './raw-http.js';

export const FUZZ_SCALE = Math.max(1, Number(process.env.FUZZ_SCALE ?? '1') || 1);
/** One seed for every property, so a failure in CI replays exactly. */
export const FUZZ_SEED = 20261126;

/**
 * FUZZ_TIME_LIMIT_S, for a scaled run that must end by a deadline: each property stops after this long and passes
 * with the runs it did (a warning says so). Unset in CI and in `npm run test:fuzz`, which run every run.
 */
const TIME_LIMIT_MS = Math.max(0, Number(process.env.FUZZ_TIME_LIMIT_S ?? '0') || 0) * 1000;
if (TIME_LIMIT_MS > 0) console.warn(`FUZZ_TIME_LIMIT_S: each property stops after ${TIME_LIMIT_MS / 1000} s, whatever its run count`);

/** fast-check parameters for `runs` runs at scale 1. */
export function fuzzParams(runs: number) {
  return {
    seed: FUZZ_SEED, numRuns: runs * FUZZ_SCALE, endOnFailure: true,
    ...(TIME_LIMIT_MS > 0 && { interruptAfterTimeLimit: TIME_LIMIT_MS, markInterruptAsFailure: false }),
  } as const;
}

/** A vitest timeout that grows with the scale (a bound on a hung run, not a speed assertion). */
export function fuzzTimeout(msAtScale1: number): number {
  return msAtScale1 * FUZZ_SCALE;
}

const DOCUMENTED = new Map<string, number>(ERROR_CLASSES.map((c) => [c.code, c.statusCode]));

/** Close codes the proxy documents (README "WebSocket close codes"), plus 1006: the TCP connection dropped. */
export const DOCUMENTED_CLOSE_CODES = new Set([1000, 1001, 1002, 1003, 1006, 1007, 1008, 1009, 1011]);

/**
 * An error answer is a documented one: a 4xx/5xx whose JSON body carries a documented code with that very status
 * (a HEAD answer has no body to check). `ok` statuses are what the route may answer when the input happens to be
 * acceptable.
 */
export function expectDocumentedAnswer(answer: RawAnswer, context: string, method = 'GET'): void {
  if (answer.status === 0) throw new Error(`no answer at all to ${context}`);
  if (answer.status < 400) return;
  if (method === 'HEAD') return;
  let code: unknown;
  try {
    code = (JSON.parse(answer.body) as { error?: { code?: unknown } }).error?.code;
  } catch {
    throw new Error(`${answer.status} with a body that is not our JSON for ${context}: ${JSON.stringify(answer.body.slice(0, 200))}`);
  }
  expect(DOCUMENTED.get(String(code)), `undocumented answer ${answer.status} ${String(code)} to ${context}`).toBe(answer.status);
}

/** Read-only view of the controller's store (WAL lets it read while the controller writes). */
export class StoreProbe {
  private readonly db: Database.Database;

  constructor(dataDir: string) {
    this.db = new Database(join(dataDir, SQLITE_FILE_NAME), { readonly: true, fileMustExist: true });
  }

  sessionRows(): number {
    return (this.db.prepare('SELECT count(*) AS n FROM sessions').get() as { n: number }).n;
  }

  tokenRows(): number {
    return (this.db.prepare('SELECT count(*) AS n FROM tokens').get() as { n: number }).n;
  }

  /** Whether the token has been used (consumed by a connection). */
  tokenUsed(token: string): boolean {
    const hash = createHash('sha256').update(token).digest('hex');
    const row = this.db.prepare('SELECT used_at FROM tokens WHERE hash = ?').get(hash) as { used_at: number | null } | undefined;
    if (!row) throw new Error('token not in the store');
    return row.used_at !== null;
  }

  bladeRows(): number {
    return (this.db.prepare('SELECT count(*) AS n FROM blades').get() as { n: number }).n;
  }

  blades(): Array<{ name: string; adminState: string }> {
    return this.db.prepare('SELECT name, admin_state AS adminState FROM blades').all() as Array<{ name: string; adminState: string }>;
  }

  reconnectKeyRows(sessionId: string): number {
    return (this.db.prepare('SELECT count(*) AS n FROM reconnect_keys WHERE session_id = ?').get(sessionId) as { n: number }).n;
  }

  liveSessionIds(): string[] {
    return (this.db.prepare("SELECT id FROM sessions WHERE state != 'ended'").all() as Array<{ id: string }>).map((r) => r.id);
  }

  close(): void {
    this.db.close();
  }
}
