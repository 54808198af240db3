/**
 * Session records on disk: one JSON file per session in the state directory (root-only), written atomically.
 * Synchronous on purpose: see vnc/as-user.ts for why the agent keeps filesystem work off the thread pool.
 */
import { chmodSync, mkdirSync, readdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SessionRecord } from './record.js';

const ID = /^[0-9a-f-]{36}$/;

export class SessionStore {
  private readonly dir: string;

  constructor(stateDir: string) {
    this.dir = join(stateDir, 'sessions');
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    chmodSync(stateDir, 0o700);
  }

  save(record: SessionRecord): void {
    const path = join(this.dir, `${record.id}.json`);
    const tmp = `${path}.tmp`;
    writeFileSync(tmp, JSON.stringify(record) + '\n', { mode: 0o600 });
    renameSync(tmp, path);
  }

  remove(id: string): void {
    try {
      unlinkSync(join(this.dir, `${id}.json`));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }

  /** Every readable record; unreadable ones are returned as `bad` ids so the caller can log and drop them. */
  loadAll(): { records: SessionRecord[]; bad: string[] } {
    const records: SessionRecord[] = [];
    const bad: string[] = [];
    for (const name of readdirSync(this.dir)) {
      if (!name.endsWith('.json')) continue;
      const id = name.slice(0, -5);
      try {
        const r = JSON.parse(readFileSync(join(this.dir, name), 'utf8')) as SessionRecord;
        if (r.id !== id || !ID.test(id) || !Number.isInteger(r.pid) || !Number.isInteger(r.uid)) throw new Error('bad');
        records.push(r);
      } catch {
        bad.push(id);
      }
    }
    return { records, bad };
  }
}
